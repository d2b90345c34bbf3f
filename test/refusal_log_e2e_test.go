package test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// TestRefusalsLogged: every protocol's failed authentications and
// refusals leave an info line with protocol, remote, subject (when known)
// and reason; a flood of one kind is collapsed; no credential appears.
func TestRefusalsLogged(t *testing.T) {
	t.Parallel()
	const adminToken, broadcastKey = "admin-token-0f3c9a", "broadcast-key-77d1e2"
	authorizer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var call struct {
			Command string `json:"command"`
			Args    struct {
				Query map[string][]string `json:"query"`
			} `json:"args"`
		}
		_ = json.NewDecoder(r.Body).Decode(&call)
		if call.Command == "connect" && call.Args.Query["deny"] != nil {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	t.Cleanup(authorizer.Close)
	logs := &lockedBuffer{}
	n := startNode(t, func(c *node.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		c.WsifyListen = "127.0.0.1:0"
		c.Wsify.AuthorizerURL = authorizer.URL
		c.Wsify.BroadcastingKey = broadcastKey
		c.AdminToken = adminToken
	})
	addr := n.Addr().String()
	good, _, err := n.Secrets.Issue("alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := n.Secrets.Issue("old-device", time.Minute, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	revoked, _, err := n.Secrets.Issue("lost-phone", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-1] ^= 1
	secrets := []string{token.EncodeText(good), token.EncodeText(expired), token.EncodeText(revoked),
		token.EncodeText(tampered), adminToken, broadcastKey, testSecret}

	// Admin: a wrong token, then the right one revokes lost-phone's key.
	req, _ := http.NewRequest("POST", adminURL(n)+"/api/revoke", strings.NewReader(`{"key":"`+token.EncodeText(revoked)+`"}`))
	req.Header.Set("Authorization", "Bearer wrong-"+adminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("admin with a wrong token: %v %v", resp, err)
	}
	req, _ = http.NewRequest("POST", adminURL(n)+"/api/revoke", strings.NewReader(`{"key":"`+token.EncodeText(revoked)+`"}`))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin revoke: %v %v", resp, err)
	}

	// Native: a flood of tampered keys, an expired and a revoked one, a
	// malformed auth message.
	for range 30 {
		c := dial(t, n)
		send(t, c, packet.AppendAuth(nil, packet.Version, tampered))
		expectClose(t, c, 3001, "invalid access key")
	}
	c := dial(t, n)
	send(t, c, packet.AppendAuth(nil, packet.Version, expired))
	expectClose(t, c, 3001, "access key expired")
	c = dial(t, n)
	send(t, c, packet.AppendAuth(nil, packet.Version, revoked))
	expectClose(t, c, 3001, "access key revoked")
	c = dial(t, n)
	send(t, c, []byte{0x01})
	expectClose(t, c, 3001, "malformed")

	// Hypothesis: a bad token gives an anonymous socket, and a log line.
	h := dialText(t, "ws://"+addr+"/ws?access_token="+token.EncodeText(tampered))
	writeText(t, h, `{"type":"whoami","id":1}`)
	readText(t, h)

	// KOsync: a bad JWT on the socket and as a Bearer, a wrong key.
	const user, pass = "carol", "0b4e7a0e5fe84ad35fb5f95b9ceeac79"
	secrets = append(secrets, pass)
	ksRegister(t, "http://"+addr, user, "carol's password")
	secrets = append(secrets, ksMD5("carol's password"))
	ws, _, err := websocket.Dial(testCtx(t), "ws://"+addr+"/api/ws/not.a.jwt", nil)
	if err != nil {
		t.Fatal(err)
	}
	ksWantBadToken(t, ws, "bad JWT")
	if r := ksDo(t, "GET", "http://"+addr+"/api/documents.all", "", "", "", "Authorization: Bearer not.a.jwt"); r.status != 401 {
		t.Fatalf("bad bearer: %d", r.status)
	}
	if r := ksDo(t, "GET", "http://"+addr+"/users/auth", user, pass, ""); r.status != 401 {
		t.Fatalf("wrong key: %d", r.status)
	}

	// wsify: the authorizer denies a connect; a wrong broadcasting key.
	if _, resp, err := websocket.Dial(testCtx(t), "ws://"+n.WsifyAddr().String()+"/ws?deny=1", nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("denied connect: %v %v", resp, err)
	}
	if code, _ := post(t, "http://"+n.WsifyAddr().String()+"/broadcast?key=wrong", "application/json", `{"channel":"c","content":1}`); code != 403 {
		t.Fatalf("wrong broadcasting key: %d", code)
	}

	time.Sleep(100 * time.Millisecond) // let the last lines land
	out := logs.String()
	for _, want := range []string{
		`level=INFO msg="authentication failed" protocol=admin remote=127.0.0.1 reason=wrong_token`,
		`level=INFO msg="authentication failed" protocol=native remote=127.0.0.1 reason=invalid`,
		`level=INFO msg="authentication failed" protocol=native remote=127.0.0.1 subject=old-device reason=expired`,
		`level=INFO msg="authentication failed" protocol=native remote=127.0.0.1 subject=lost-phone reason=revoked`,
		`level=INFO msg="authentication failed" protocol=native remote=127.0.0.1 reason=malformed`,
		`level=INFO msg="authentication failed" protocol=hypothesis remote=127.0.0.1 reason=invalid`,
		`level=INFO msg="authentication failed" protocol=kosync remote=127.0.0.1 reason=bad_jwt`,
		`level=INFO msg="authentication failed" protocol=kosync remote=127.0.0.1 subject=carol reason=wrong_key`,
		`level=INFO msg="request refused" protocol=wsify remote=127.0.0.1 subject=wsify:c-`,
		`reason=denied_connect command=connect status=403`,
		`level=INFO msg="authentication failed" protocol=wsify remote=127.0.0.1 reason=bad_broadcasting_key`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no log line with %q", want)
		}
	}
	// 30 tampered keys: one line (two if the test outlived the 10 s
	// interval: the first and the summary with repeated=).
	if got := strings.Count(out, "protocol=native remote=127.0.0.1 reason=invalid"); got < 1 || got > 2 {
		t.Errorf("%d lines for 30 invalid native keys, want them collapsed", got)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("a credential appears in the log: %q", s)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("log:\n%s", out)
	}
}
