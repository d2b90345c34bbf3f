package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// e2eGetJSON GETs path on n's admin listener and checks status and the
// exact JSON object.
func e2eGetJSON(t testing.TB, n *node.Node, path string, wantStatus int, want map[string]any) {
	t.Helper()
	status, b, ct := e2eDo(t, http.MethodGet, adminURL(n)+path, "", nil)
	if status != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", path, status, b, wantStatus)
	}
	e2eWantFields(t, e2eDecodeJSON(t, b, ct), want)
}

// e2eWantError checks an error answer: the status and a JSON object with
// exactly one non-empty "error" string containing want.
func e2eWantError(t testing.TB, what string, status int, b []byte, ct string, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("%s: status %d %s, want %d", what, status, b, wantStatus)
	}
	m := e2eDecodeJSON(t, b, ct)
	msg, ok := m["error"].(string)
	if len(m) != 1 || !ok || msg == "" || !strings.Contains(msg, want) {
		t.Fatalf("%s: answer %s, want {\"error\": \"...%s...\"}", what, b, want)
	}
}

// TestAdminHealth: /healthz and /readyz of a running node.
func TestAdminHealth(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	e2eGetJSON(t, n, "/healthz", http.StatusOK, map[string]any{"status": "ok"})
	e2eGetJSON(t, n, "/readyz", http.StatusOK, map[string]any{"status": "ready"})
	status, b, _ := e2eDo(t, http.MethodGet, adminURL(n)+"/healthz", "", nil)
	if status != http.StatusOK || string(b) != "{\"status\":\"ok\"}\n" {
		t.Fatalf("healthz body %q", b)
	}
}

// TestAdminReadyzDraining: once Shutdown starts, /readyz answers 503
// draining while sessions are still being closed; the client gets 1001.
func TestAdminReadyzDraining(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	c := connect(t, n, "alice") // not reading: its close handshake waits for us
	e2eGetJSON(t, n, "/readyz", http.StatusOK, map[string]any{"status": "ready"})

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		done <- n.Shutdown(ctx)
	}()
	deadline := time.Now().Add(waitFor)
	for {
		status, b, ct := e2eDo(t, http.MethodGet, adminURL(n)+"/readyz", "", nil)
		if status == http.StatusServiceUnavailable {
			e2eWantFields(t, e2eDecodeJSON(t, b, ct), map[string]any{"status": "draining"})
			break
		}
		if status != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("readyz during shutdown: %d %s, want 503 draining", status, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Still draining on a second look, and healthz is still alive.
	e2eGetJSON(t, n, "/readyz", http.StatusServiceUnavailable, map[string]any{"status": "draining"})
	e2eGetJSON(t, n, "/healthz", http.StatusOK, map[string]any{"status": "ok"})
	expectClose(t, c, websocket.StatusGoingAway, "server shutting down")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// e2eScrape returns the metric lines of n's /metrics as sample -> value.
func e2eScrape(t testing.TB, n *node.Node) (map[string]string, []string) {
	t.Helper()
	status, b, ct := e2eDo(t, http.MethodGet, adminURL(n)+"/metrics", "", nil)
	if status != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: %d %q", status, ct)
	}
	samples := map[string]string{}
	var types []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			types = append(types, rest)
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		samples[line[:i]] = line[i+1:]
	}
	return samples, types
}

// TestAdminMetrics: the Prometheus text shows connections, handshakes,
// auth failures and sessions with the right values.
func TestAdminMetrics(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	const clients = 3
	for i := range clients {
		connect(t, n, fmt.Sprintf("user%d", i))
	}
	// A key of another secret: invalid.
	other, err := token.NewSecrets([]byte("another-secret-0123456789-0123456789-0123"))
	if err != nil {
		t.Fatal(err)
	}
	bad, _, err := other.Issue("mallory", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e2eRefused(t, n, bad, websocket.StatusCode(packet.CloseUnauthorized), "invalid access key")

	want := map[string]string{
		`gateway_connections{protocol="native"}`:                            fmt.Sprint(clients),
		`gateway_handshakes_total{protocol="native",result="ok"}`:           fmt.Sprint(clients + 1),
		`gateway_auth_failures_total{method="access_key",reason="invalid"}`: "1",
		`gateway_auth_failures_total{method="access_key",reason="revoked"}`: "0",
		`gateway_auth_successes_total{method="access_key"}`:                 fmt.Sprint(clients),
		`gateway_sessions`: fmt.Sprint(clients),
	}
	// The refused connection leaves the gauges when its TCP connection
	// ends, just after its close frame: poll (values, not timing).
	var samples map[string]string
	var types []string
	deadline := time.Now().Add(waitFor)
	for {
		samples, types = e2eScrape(t, n)
		ok := true
		for k, v := range want {
			if samples[k] != v {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			for k, v := range want {
				if samples[k] != v {
					t.Errorf("%s = %q, want %q", k, samples[k], v)
				}
			}
			t.FailNow()
		}
		time.Sleep(20 * time.Millisecond)
	}
	counters := 0
	for _, ty := range types {
		name, kind, _ := strings.Cut(ty, " ")
		if kind == "counter" {
			counters++
			if !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s is not named *_total", name)
			}
		}
		if strings.HasPrefix(name, "gateway_") && kind != "counter" && strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %s named like a counter", name, kind)
		}
	}
	if counters < 5 {
		t.Errorf("only %d counters in /metrics", counters)
	}
}

// TestAdminPublishErrors: the publish endpoint's refusals.
func TestAdminPublishErrors(t *testing.T) {
	t.Parallel()
	const maxSize = 1024
	n := startNode(t, func(c *node.Config) { c.MaxMessageSize = maxSize })
	base := adminURL(n)
	sub := connect(t, n, "alice")
	subscribe(t, sub, "room")

	status, b, ct := e2eDo(t, http.MethodPost, base+"/api/publish", "", []byte("x"))
	e2eWantError(t, "publish without channel", status, b, ct, http.StatusBadRequest, "channel")
	status, b, ct = e2eDo(t, http.MethodPost, base+"/api/publish?channel=", "", []byte("x"))
	e2eWantError(t, "publish with an empty channel", status, b, ct, http.StatusBadRequest, "channel")
	status, b, ct = e2eDo(t, http.MethodPost, base+"/api/publish?channel="+strings.Repeat("c", 256), "", []byte("x"))
	e2eWantError(t, "publish on a 256-byte channel", status, b, ct, http.StatusBadRequest, "channel")
	status, b, ct = e2eDo(t, http.MethodPost, base+"/api/publish?channel=room", "", bytes.Repeat([]byte("x"), maxSize+1))
	e2eWantError(t, "publish over the max message size", status, b, ct, http.StatusRequestEntityTooLarge, "")

	// Nothing of the refused publishes was delivered; exactly max is fine.
	e2eAdminPublish(t, n, "room", bytes.Repeat([]byte("y"), maxSize))
	e2eExpectMessage(t, sub, "room", bytes.Repeat([]byte("y"), maxSize))

	// A known path with the wrong method is 405, not 404.
	for _, p := range []string{"/api/publish?channel=room", "/api/revoke"} {
		status, b, _ = e2eDo(t, http.MethodGet, base+p, "", nil)
		if status != http.StatusMethodNotAllowed {
			t.Errorf("BUG: GET %s: %d %s, want 405 (the catch-all \"/\" pattern swallows method mismatches)", p, status, b)
		}
	}
	for _, p := range []string{"/api/nothing", "/nothing", "/api/publish/x"} {
		status, b, ct = e2eDo(t, http.MethodPost, base+p, "", nil)
		e2eWantError(t, "POST "+p, status, b, ct, http.StatusNotFound, "no such endpoint")
	}
	status, b, ct = e2eDo(t, http.MethodGet, base+"/api/nothing", "", nil)
	e2eWantError(t, "GET /api/nothing", status, b, ct, http.StatusNotFound, "no such endpoint")
	e2ePing(t, sub) // no stray message
}

// TestAdminRevokeErrors: malformed revocation requests are refused with
// 400 and revoke nothing.
func TestAdminRevokeErrors(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	key, claims := e2eIssue(t, n, "alice")
	live := e2eConnectKey(t, n, key)
	text := token.EncodeText(key)

	other, err := token.NewSecrets([]byte("another-secret-0123456789-0123456789-0123"))
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := other.Issue("alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ path, body, want string }{
		{"/api/revoke", `{"key":`, "JSON"},
		{"/api/revoke", `not json`, "JSON"},
		{"/api/revoke", ``, "JSON"},
		{"/api/revoke", `["x"]`, "JSON"},
		{"/api/revoke", `{}`, "exactly one"},
		{"/api/revoke", fmt.Sprintf(`{"key":%q,"id":%q}`, text, claims.ID), "exactly one"},
		{"/api/revoke", fmt.Sprintf(`{"key":%q}`, token.EncodeText(foreign)), "not a key of this server"},
		{"/api/revoke", `{"key":"!!!not base64!!!"}`, "base64"},
		{"/api/revoke", fmt.Sprintf(`{"key":%q,"subject":"alice"}`, text), "unknown field"},
		{"/api/revoke", fmt.Sprintf(`{"id":%q}`, claims.ID.String()[:15]), "16 hex"},
		{"/api/revoke", `{"id":"zzzzzzzzzzzzzzzz"}`, "16 hex"},
		{"/api/revoke/subject", `{"subject":""}`, ""},
		{"/api/revoke/subject", `{}`, ""},
		{"/api/revoke/subject", `{"subject":"alice","x":1}`, "unknown field"},
		{"/api/revoke/subject", strings.Repeat(" ", 20<<10) + `{"subject":"alice"}`, ""},
	}
	for _, c := range cases {
		status, b, ct := e2eDo(t, http.MethodPost, adminURL(n)+c.path, "application/json", []byte(c.body))
		body := c.body
		if len(body) > 60 {
			body = body[:60] + "..."
		}
		e2eWantError(t, fmt.Sprintf("POST %s %s", c.path, body), status, b, ct, http.StatusBadRequest, c.want)
	}
	// Nothing was revoked.
	e2ePing(t, live)
	e2ePing(t, e2eConnectKey(t, n, key))
}
