package hypothesis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// env is a real gateway (two loops) with the protocol, and its admin
// listener taking events.
type env struct {
	t        *testing.T
	hub      *session.Hub
	srv      *gateway.Server
	admin    *gateway.Admin
	p        *Protocol
	secrets  *token.Secrets
	revoker  *token.Revoker
	wsURL    string
	httpURL  string
	adminURL string
}

const testJWT = "jwt-for-bob"

func newEnv(t *testing.T) *env {
	t.Helper()
	discard := slog.New(slog.DiscardHandler)
	secrets, err := token.NewSecrets([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := token.OpenFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	revoker := token.NewRevoker(store, token.NewRevoked(), nil, discard)
	ctx, cancel := context.WithCancel(context.Background())
	if err := revoker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{
		Secrets: secrets, Revoked: revoker.Set(), Logger: discard, MaxFilterRows: 5,
		VerifyJWT: func(tok string) (string, token.Claims, error) {
			if tok != testJWT {
				return "", token.Claims{}, errors.New("bad jwt")
			}
			return "bob", token.Claims{Subject: "kosync:bob", IssuedAt: time.Now()}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	hub := session.NewHub(nil)
	srv := gateway.New(gateway.Options{Listen: "127.0.0.1:0", EventLoops: 2, Logger: discard}, hub)
	srv.Handle(p.Route())
	p.RegisterHTTP(srv)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	admin := gateway.NewAdmin(srv, gateway.AdminOptions{Listen: "127.0.0.1:0", Secrets: secrets, Revoker: revoker, Logger: discard})
	admin.Handle("POST", EventsPath, p.EventHandler(hub))
	if err := admin.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = admin.Close(sctx)
		_ = srv.Shutdown(sctx)
		cancel()
		revoker.Wait()
		_ = store.Close()
	})
	return &env{t: t, hub: hub, srv: srv, admin: admin, p: p, secrets: secrets, revoker: revoker,
		wsURL: "ws://" + srv.Addr().String() + Path, httpURL: "http://" + srv.Addr().String(),
		adminURL: "http://" + admin.Addr().String() + EventsPath}
}

// key issues an access key for subject.
func (e *env) key(subject string) (string, token.Claims) {
	raw, c, err := e.secrets.Issue(subject, time.Hour, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return token.EncodeText(raw), c
}

type client struct {
	t *testing.T
	c *websocket.Conn
}

func (e *env) dial(query string, header http.Header) *client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.wsURL+query, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	e.t.Cleanup(func() { _ = c.CloseNow() })
	return &client{e.t, c}
}

func (c *client) sendType(typ websocket.MessageType, msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Write(ctx, typ, []byte(msg)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) send(msg string) { c.t.Helper(); c.sendType(websocket.MessageText, msg) }

// read returns the next message, failing after 5 s.
func (c *client) read() string {
	c.t.Helper()
	s, err := c.readErr()
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

func (c *client) readErr() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := c.c.Read(ctx)
	if err != nil {
		return "", err
	}
	if typ != websocket.MessageText {
		c.t.Errorf("server sent a %v frame", typ)
	}
	return string(b), nil
}

// sync proves everything before it was handled: a ping with a fresh id
// must be answered next.
func (c *client) sync() {
	c.t.Helper()
	c.send(`{"type":"ping","id":424242}`)
	if got := c.read(); got != `{"type":"pong","ok":true,"reply_to":424242}` {
		c.t.Fatalf("expected the sync pong, got %s", got)
	}
}

// filter sets a filter of the given clauses plus the sentinel row.
func (c *client) filter(clauses ...string) {
	c.t.Helper()
	clauses = append(clauses, `{"field":"/id","operator":"equals","value":"`+sentinelID+`"}`)
	c.send(`{"filter":{"match_policy":"include_any","clauses":[` + strings.Join(clauses, ",") +
		`],"actions":{"create":true,"update":true,"delete":true}}}`)
	c.sync()
}

func (c *client) expectClose(code websocket.StatusCode, reason string) {
	c.t.Helper()
	for {
		_, err := c.readErr()
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("expected close %d, got %v", code, err)
		}
		if ce.Code != code || (reason != "" && ce.Reason != reason) {
			c.t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
		}
		return
	}
}

// notification reads the next message as an annotation-notification.
type notification struct {
	Type    string            `json:"type"`
	Options map[string]string `json:"options"`
	Payload []map[string]any  `json:"payload"`
}

func (c *client) next() notification {
	c.t.Helper()
	raw := c.read()
	var n notification
	if err := json.Unmarshal([]byte(raw), &n); err != nil || n.Type != "annotation-notification" || len(n.Payload) != 1 {
		c.t.Fatalf("not a notification: %s", raw)
	}
	return n
}

// expect reads the notification of annotation id.
func (c *client) expect(id string) notification {
	c.t.Helper()
	n := c.next()
	if got := n.Payload[0]["id"]; got != id {
		c.t.Fatalf("got the notification of %v, want %s", got, id)
	}
	return n
}

const sentinelID = "sentinel-annotation-0000"

// expectNothing proves a client got no notification: a world-readable
// sentinel event posted now must be the next thing it reads (events reach
// a loop in the order they were posted).
func (e *env) expectNothing(clients ...*client) {
	e.t.Helper()
	e.post("create", annotation(sentinelID), nil)
	for _, c := range clients {
		c.expect(sentinelID)
	}
}

// annotation is a public annotation on http://example.com/page.
func annotation(id string, mods ...func(a map[string]any)) map[string]any {
	a := map[string]any{
		"id": id, "created": "2026-05-01T12:00:00.000000+00:00", "user": "acct:alice@localhost",
		"uri": "https://example.com/page", "text": "Nice <b>&</b> caf\u00e9", "tags": []string{"t1"},
		"group": "__world__", "moderation_status": "APPROVED",
		"permissions": map[string]any{"read": []string{"group:__world__"}, "admin": []string{"acct:alice@localhost"}},
		"target":      []any{map[string]any{"source": "https://example.com/page"}},
		"flagged":     false, "hidden": false,
	}
	for _, m := range mods {
		m(a)
	}
	return a
}

// post sends an event and requires 202.
func (e *env) post(action string, a map[string]any, extra map[string]any) {
	e.t.Helper()
	body := map[string]any{"action": action, "annotation": a, "src_client_id": nil}
	for k, v := range extra {
		body[k] = v
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body)
	status, resp := e.postRaw(b.String())
	if status != http.StatusAccepted || resp != `{"ok":true}` {
		e.t.Fatalf("POST event: %d %s", status, resp)
	}
}

func (e *env) postRaw(body string) (int, string) {
	e.t.Helper()
	resp, err := http.Post(e.adminURL, "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}
