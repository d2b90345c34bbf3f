package test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Admin token tests: with --admin-token the admin API and the profiler want
// "Authorization: Bearer <token>"; probes and the scraper stay open.
// Helpers are prefixed tok.

const tokAdminToken = "s3cret"

// tokDo makes a request to the admin listener with an optional
// Authorization header value.
func tokDo(t testing.TB, method, url, auth, body string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e2eHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// tokWant401 checks the 401 JSON answer of a request without the token.
func tokWant401(t testing.TB, what string, status int, b []byte, h http.Header) {
	t.Helper()
	e2eWantError(t, what, status, b, h.Get("Content-Type"), http.StatusUnauthorized, "admin token required")
	if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("%s: WWW-Authenticate %q, want Bearer", what, h.Get("WWW-Authenticate"))
	}
}

// TestAdminTokenRequired: a node with AdminToken answers the API 401 JSON
// without the token or with a wrong one, 200 with it; /metrics, /healthz
// and /readyz need none; the profiler needs it.
func TestAdminTokenRequired(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.AdminToken = tokAdminToken })
	base := adminURL(n)
	sub := connect(t, n, "bob")
	subscribe(t, sub, "news")
	publish := base + "/api/publish?channel=news"

	for _, auth := range []string{"", "Bearer wrong", "Bearer " + tokAdminToken + "x", "Bearer", "Basic czNjcmV0", tokAdminToken} {
		status, b, h := tokDo(t, http.MethodPost, publish, auth, "nope")
		tokWant401(t, "publish with Authorization "+auth, status, b, h)
	}
	e2ePing(t, sub) // nothing was published

	status, b, h := tokDo(t, http.MethodPost, publish, "Bearer "+tokAdminToken, "yes")
	if status != http.StatusOK {
		t.Fatalf("publish with the token: %d %s", status, b)
	}
	e2eWantFields(t, e2eDecodeJSON(t, b, h.Get("Content-Type")), map[string]any{"channel": "news", "bytes": float64(3)})
	e2eExpectMessage(t, sub, "news", []byte("yes"))

	// The revoke endpoints too.
	key, claims := e2eIssue(t, n, "victim")
	victim := e2eConnectKey(t, n, key)
	body := `{"id":"` + claims.ID.String() + `"}`
	status, b, h = tokDo(t, http.MethodPost, base+"/api/revoke", "", body)
	tokWant401(t, "revoke without token", status, b, h)
	status, b, h = tokDo(t, http.MethodPost, base+"/api/revoke/subject", "Bearer nope", `{"subject":"victim"}`)
	tokWant401(t, "revoke/subject with a wrong token", status, b, h)
	e2ePing(t, victim)
	status, b, _ = tokDo(t, http.MethodPost, base+"/api/revoke", "Bearer "+tokAdminToken, body)
	if status != http.StatusOK || !strings.Contains(string(b), `"revoked":true`) {
		t.Fatalf("revoke with the token: %d %s", status, b)
	}
	expectClose(t, victim, websocket.StatusCode(packet.CloseRevoked), "access key revoked")

	// Open: probes and the scraper.
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		if status, b, _ := tokDo(t, http.MethodGet, base+path, "", ""); status != http.StatusOK {
			t.Fatalf("GET %s without token: %d %s, want 200", path, status, b)
		}
	}
	// The profiler is not.
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/symbol"} {
		status, b, h := tokDo(t, http.MethodGet, base+path, "", "")
		tokWant401(t, "GET "+path+" without token", status, b, h)
	}
	if status, b, _ := tokDo(t, http.MethodGet, base+"/debug/pprof/", "Bearer "+tokAdminToken, ""); status != http.StatusOK {
		t.Fatalf("GET /debug/pprof/ with the token: %d %.200s", status, b)
	}
}

// TestAdminTokenNonLoopbackBind: an admin listener on 0.0.0.0 without a
// token is refused at start with a message naming --admin-token; with one
// it starts.
func TestAdminTokenNonLoopbackBind(t *testing.T) {
	t.Parallel()
	cfg := node.Config{Listen: "127.0.0.1:0", AdminListen: "0.0.0.0:0", DataDir: t.TempDir(),
		Secret: testSecret, EventLoops: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	n, err := node.Start(cfg)
	if err == nil {
		_ = n.Shutdown(testCtx(t))
		t.Fatal("node.Start with --admin-listen 0.0.0.0:0 and no token succeeded")
	}
	if !strings.Contains(err.Error(), "--admin-token") {
		t.Fatalf("error %q does not name --admin-token", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		if addr == "[::1]:0" && !tokHasIPv6Loopback() {
			continue
		}
		n := startNode(t, func(c *node.Config) { c.AdminListen = addr })
		e2eGetJSON(t, n, "/healthz", http.StatusOK, map[string]any{"status": "ok"})
	}
	n = startNode(t, func(c *node.Config) { c.AdminListen = "0.0.0.0:0"; c.AdminToken = tokAdminToken })
	if status, b, _ := tokDo(t, http.MethodGet, adminURL(n)+"/readyz", "", ""); status != http.StatusOK {
		t.Fatalf("readyz of a node on 0.0.0.0 with a token: %d %s", status, b)
	}
}

func tokHasIPv6Loopback() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// TestAdminTokenProcessKeyRevoke: `gateway key revoke --admin-token`
// against `serve --admin-token`: without the token (or a wrong one) an error
// exit naming the 401; with it the key is revoked and its session closed
// with 3004.
func TestAdminTokenProcessKeyRevoke(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	text := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	p := e2eServe(t, env, "--data-dir", dir, "--admin-token", tokAdminToken)
	alice := e2eConnectURL(t, p.ws, text)

	for _, args := range [][]string{
		{"key", "revoke", "--admin", p.admin, text},
		{"key", "revoke", "--admin", p.admin, "--admin-token", "wrong", text},
		{"key", "revoke-subject", "--admin", p.admin, "alice"},
	} {
		stdout, stderr, code := e2eRun(t, env, args...)
		if code == 0 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "admin token required") {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want an error exit with the 401", args, code, stdout, stderr)
		}
	}
	e2ePing(t, alice)

	stdout, stderr, code := e2eRun(t, env, "key", "revoke", "--admin", p.admin, "--admin-token", tokAdminToken, text)
	if code != 0 {
		t.Fatalf("key revoke with the token: exit %d: %s", code, stderr)
	}
	var ans map[string]any
	if err := json.Unmarshal([]byte(stdout), &ans); err != nil || ans["revoked"] != true || ans["subject"] != "alice" {
		t.Fatalf("key revoke printed %q (%v), want JSON with \"revoked\":true", stdout, err)
	}
	expectClose(t, alice, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	raw, _ := token.DecodeText(text)
	c := e2eDialURL(t, p.ws)
	e2eAuth(t, c, raw)
	expectClose(t, c, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
}
