package wsify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/ratelog"
)

// verdict is an authorizer's answer.
type verdict uint8

const (
	allow       verdict = iota // 200
	deny                       // any other status below 500
	unavailable                // 5xx or a transport error
	timedOut                   // the call's timeout passed
	canceled                   // the caller gave up: the client left first
)

// identity is what a connection is known by in authorizer payloads (§6).
// It is immutable once made.
type identity struct {
	id string
	// conn is the "conn" value of message calls, {"id":…,"query":…}, or
	// nil when the key is disabled or there is no authorizer.
	conn json.RawMessage
}

// connectPayload is the body of the connect call (§3).
type connectPayload struct {
	Command string          `json:"command"`
	Args    connectArgs     `json:"args"`
	Conn    json.RawMessage `json:"conn,omitempty"`
}

type connectArgs struct {
	Headers http.Header `json:"headers"`
	Query   url.Values  `json:"query"`
}

// messagePayload is the body of a message call (§5): the message's own
// command and args, nothing from earlier messages.
type messagePayload struct {
	Command string          `json:"command"`
	Args    json.RawMessage `json:"args"` // nil: null
	Conn    json.RawMessage `json:"conn,omitempty"`
}

// connIDOnly is the "conn" value of the connect call.
type connIDOnly struct {
	ID string `json:"id"`
}

// connFull is the "conn" value of message calls.
type connFull struct {
	ID    string     `json:"id"`
	Query url.Values `json:"query"`
}

// AuthorizeHead implements gateway.HeadAuthorizer: the connect call (§3).
// It runs off the loop with a copy of the request head. A 200 upgrades;
// anything else, a transport error or a timeout refuses with 403 and an
// empty body. Without an authorizer it returns at once (and Route does not
// even offer it to the gateway). The gateway cancels ctx when the client
// leaves first: the call ends then, not at the timeout, and is neither
// logged nor counted as the authorizer's failure.
func (p *Protocol) AuthorizeHead(ctx context.Context, head []byte, remote netip.AddrPort) (any, error) {
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		return nil, &gateway.HTTPError{Status: http.StatusBadRequest}
	}
	id := &identity{id: newConnID()}
	if p.authURL == "" {
		return id, nil
	}
	query := r.URL.Query() // never nil: an empty query is {}
	body := connectPayload{Command: "connect", Args: connectArgs{Headers: r.Header, Query: query}}
	if p.identity {
		body.Conn, _ = json.Marshal(connIDOnly{id.id})
		id.conn, _ = json.Marshal(connFull{id.id, query})
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, &gateway.HTTPError{Status: http.StatusForbidden}
	}
	v, status, err := p.call(ctx, b)
	if v != allow {
		gid, _ := gateway.ConnIDFrom(ctx)
		p.logVerdict("connect", id.id, gid, remote.Addr(), v, status, err)
		return nil, &gateway.HTTPError{Status: http.StatusForbidden}
	}
	return id, nil
}

// messageBody builds a message call's body.
func (p *Protocol) messageBody(id *identity, m *message) []byte {
	b, err := json.Marshal(messagePayload{Command: m.command, Args: m.args, Conn: id.conn})
	if err != nil { // cannot happen: args is valid JSON
		b = []byte(`{"command":"","args":null}`)
	}
	return b
}

// call POSTs body to the authorizer and classifies the answer. It blocks
// for up to the timeout: never call it on a loop. The response body is
// ignored (read up to 64 KiB so the connection can be reused). Canceling
// parent ends the call at once (verdict canceled).
func (p *Protocol) call(parent context.Context, body []byte) (verdict, int, error) {
	ctx, cancel := context.WithTimeout(parent, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.authURL, bytes.NewReader(body))
	if err != nil {
		p.metrics.verdict(unavailable, 0)
		return unavailable, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := p.client.Do(req)
	var v verdict
	status := 0
	switch {
	case err != nil && errors.Is(parent.Err(), context.Canceled):
		v = canceled
	case err != nil:
		v = unavailable
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			v = timedOut
		}
	default:
		status = resp.StatusCode
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		switch {
		case status == http.StatusOK:
			v = allow
		case status >= 500:
			v = unavailable
		default:
			v = deny
		}
	}
	p.metrics.verdict(v, time.Since(start))
	return v, status, err
}

// logVerdict logs a refusal: at info (collapsed per call) for a deny, as
// a warning (at most one a second) when the authorizer is down. Neither
// the query nor the headers are logged: they carry tokens.
//
// wsifyID is wsify's own connection id (the subject is "wsify:<id>"),
// gid the gateway's (the conn field).
func (p *Protocol) logVerdict(what, wsifyID string, gid gateway.ConnID, remote netip.Addr, v verdict, status int, err error) {
	switch v {
	case deny:
		reason := "denied_connect"
		if what != "connect" {
			reason = "denied_message"
		}
		p.refusals.Refused("request refused", "wsify", reason, remote, "wsify:"+wsifyID,
			slog.String("command", ratelog.Truncate(what, 32)), slog.Int("status", status), gid.LogAttr())
	case unavailable, timedOut:
		attrs := []slog.Attr{remoteAttr(remote), slog.String("subject", "wsify:"+wsifyID), gid.LogAttr(),
			slog.String("call", ratelog.Truncate(what, 32)), slog.Int("status", status), slog.Bool("timeout", v == timedOut)}
		if err != nil {
			attrs = append(attrs, slog.String("err", redactURLError(err)))
		}
		p.warns.Log("authorizer", "wsify: authorizer unavailable", attrs...)
	}
}

// redactURLError drops the URL from a *url.Error: the authorizer URL may
// carry a secret in its query.
func redactURLError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// remoteAttr is the "remote" log field: the peer's IP, no port.
func remoteAttr(a netip.Addr) slog.Attr { return slog.String("remote", a.Unmap().String()) }
