package hypothesis

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/token"
)

// Path is the Real Time API's WebSocket endpoint on the main listener.
const Path = "/ws"

// EventsPath is the admin endpoint taking annotation events.
const EventsPath = "/api/hypothesis/events"

// Channel is the hub channel carrying events to every loop of every node
// ('#' channels are reserved for protocols).
const Channel = "#hypothesis"

// Defaults of Options.
const (
	DefaultAuthority = "localhost"
	// DefaultMaxFilterRows caps one socket's filter rows. Higher than the
	// channel protocols' 128 because a Hypothesis client lists every
	// equivalent URI of a page, each version expanded; a filter costs
	// O(rows) to set and to drop, never more.
	DefaultMaxFilterRows = 1000
	DefaultMaxEventSize  = 1 << 20
)

// Keepalive (§1): a Ping every 30 s; 60 s of silence closes with 1001.
const (
	pingEvery = 30 * time.Second
	idleLimit = 60 * time.Second
)

// Options configure the protocol. Every zero value means its default.
type Options struct {
	// Secrets verify gateway access keys; required.
	Secrets *token.Secrets
	// Revoked is the node's revoked set; required. A revoked key or JWT
	// gives an anonymous socket.
	Revoked *token.Revoked
	// VerifyJWT verifies a gateway JWT (the node passes kosync's
	// Service.VerifyJWT); zero (nil) means JWTs are not accepted. The user
	// it returns is the subject of the userid.
	VerifyJWT func(tok string) (user string, claims token.Claims, err error)
	// Authority is the userid's domain: "acct:<subject>@<Authority>"; zero
	// means DefaultAuthority ("localhost").
	Authority string
	// MaxFilterRows bounds the rows of one filter (values of all clauses,
	// after /uri version expansion): a socket's subscriptions. A larger
	// filter is refused with the invalid_data error "filter too large:
	// more than N values" and the old filter stays. Zero means
	// DefaultMaxFilterRows (1000).
	MaxFilterRows int
	// MaxEventSize bounds the body of an event POST; zero means
	// DefaultMaxEventSize (1 MiB).
	MaxEventSize int
	// Logger: zero means slog.Default().
	Logger *slog.Logger
}

// Protocol is the Hypothesis Real Time API on the gateway's loops.
type Protocol struct {
	opts   Options
	log    *slog.Logger
	events *prometheus.CounterVec
	// refusals logs rejected tokens (info, collapsed per reason).
	refusals *ratelog.Logger
	// warns logs undecodable hub events (collapsed: an outside publisher
	// may send them at any rate, and they reach every loop).
	warns *ratelog.Logger
	// counted holds the children of events, by action, resolved once.
	counted map[string]prometheus.Counter
	// stateKey is this protocol's key in Loop.Local.
	stateKey *Protocol
}

// New checks o and returns the protocol.
func New(o Options) (*Protocol, error) {
	if o.Secrets == nil {
		return nil, errors.New("hypothesis: Options.Secrets is required")
	}
	if o.Revoked == nil {
		return nil, errors.New("hypothesis: Options.Revoked is required")
	}
	if o.Authority == "" {
		o.Authority = DefaultAuthority
	}
	if o.MaxFilterRows <= 0 {
		o.MaxFilterRows = DefaultMaxFilterRows
	}
	if o.MaxEventSize <= 0 {
		o.MaxEventSize = DefaultMaxEventSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	p := &Protocol{opts: o, log: o.Logger, refusals: ratelog.New(o.Logger, slog.LevelInfo, 0),
		warns: ratelog.New(o.Logger, slog.LevelWarn, 0)}
	p.stateKey = p
	p.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_hypothesis_events_total",
		Help: "Hypothesis annotation events accepted on the admin endpoint, by action.",
	}, []string{"action"})
	p.counted = make(map[string]prometheus.Counter, 3)
	for _, a := range []string{"create", "update", "delete"} {
		p.counted[a] = p.events.WithLabelValues(a)
	}
	return p, nil
}

// Collectors returns the protocol's Prometheus series, for the node's
// registry.
func (p *Protocol) Collectors() []prometheus.Collector { return []prometheus.Collector{p.events} }

// Name implements gateway.Protocol.
func (p *Protocol) Name() string { return "hypothesis" }

// Route returns the gateway route of /ws on the main listener. An upgrade
// refused by --allowed-origins (when the route is marked Browser) gets h's
// 403 forbidden JSON.
func (p *Protocol) Route() gateway.Route {
	return gateway.Route{Path: Path, Protocol: p, Text: true, Forbidden: response403}
}

// forbidden is h's answer to a refused origin (§1).
const forbidden = `{"ok": false, "error": "forbidden", "reason": "You are not allowed here. Are you connecting from an allowed origin?"}`

// response403 is the whole HTTP answer carrying forbidden, written as is
// by the loop; it closes the connection.
var response403 = []byte(fmt.Sprintf("HTTP/1.1 403 Forbidden\r\n"+
	"Connection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
	len(forbidden), forbidden))

// badHandshake is h's answer to a plain request on /ws.
const badHandshake = `{"ok": false, "error": "bad_handshake", "reason": "Handshake failed. Are you a WebSocket client?"}`

// RegisterHTTP answers plain (not upgrading) requests on /ws with h's 400
// bad_handshake JSON.
func (p *Protocol) RegisterHTTP(srv interface{ HandleHTTP(string, http.Handler) }) {
	srv.HandleHTTP(Path, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(badHandshake))
	}))
}

// Accept implements gateway.Protocol. It never refuses: a missing or bad
// token gives an anonymous socket (§2). It runs on the loop and does no
// I/O.
func (p *Protocol) Accept(r *gateway.Request) (gateway.Handler, error) {
	s := &socket{p: p}
	if tok, ok := p.token(r); ok {
		var reason, subject string
		s.userid, s.claims, reason, subject = p.authenticate(tok)
		s.authenticated = reason == ""
		if !s.authenticated {
			p.refusals.Refused("authentication failed", "hypothesis", reason, r.Remote.Addr(), subject, r.ID.LogAttr())
		}
	}
	return s, nil
}

// token finds the token: the access_token query parameter (its last
// occurrence, as WebOb reads it) if present, even empty; else the
// Authorization header's "Bearer " value.
func (p *Protocol) token(r *gateway.Request) (string, bool) {
	if _, query, ok := bytes.Cut(r.URI, []byte("?")); ok {
		found, tok := false, ""
		for part := range strings.SplitSeq(string(query), "&") {
			name, value, _ := strings.Cut(part, "=")
			if unquotePlus(name) == "access_token" {
				found, tok = true, unquotePlus(value)
			}
		}
		if found {
			return tok, tok != ""
		}
	}
	rest, ok := bytes.CutPrefix(r.Authorization, []byte("Bearer "))
	if !ok {
		return "", false
	}
	tok := strings.TrimSpace(string(rest))
	return tok, tok != ""
}

// authenticate maps a token to a userid: a gateway access key first, then
// (if configured) a gateway JWT. Anything else, or a revoked credential,
// is anonymous: reason says why ("invalid", "expired", "revoked"; "" when
// authenticated), with the subject of a signed key (for the log).
func (p *Protocol) authenticate(tok string) (userid string, claims token.Claims, reason, subject string) {
	reason = "invalid"
	if raw, err := token.DecodeText(tok); err == nil {
		c, err := p.opts.Secrets.Verify(raw, time.Now())
		switch {
		case errors.Is(err, token.ErrExpired):
			reason, subject = "expired", c.Subject
		case err == nil && p.opts.Revoked.Check(c):
			return "", token.Claims{}, "revoked", c.Subject
		case err == nil:
			return p.userid(c.Subject), c, "", ""
		}
	}
	if p.opts.VerifyJWT != nil {
		if user, c, err := p.opts.VerifyJWT(tok); err == nil && user != "" {
			if p.opts.Revoked.Check(c) {
				return "", token.Claims{}, "revoked", c.Subject
			}
			return p.userid(user), c, "", ""
		}
	}
	return "", token.Claims{}, reason, subject
}

func (p *Protocol) userid(subject string) string {
	return "acct:" + subject + "@" + p.opts.Authority
}
