package test

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSecretsNeverLogged drives every place a credential travels (native
// auth, KOsync and Hypothesis tokens in URLs and headers, a wsify token in
// the query and its broadcasting key, admin revocations) with debug
// logging on, in both log formats, and checks that no key, JWT or password
// appears in the node's log, while the connection lifecycle lines about
// those very connections are there.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	const broadcastKey, wsifyToken = "broadcast-key-5e0c4b1d", "wsify-query-token-9a7f33e2"
	logs, jsonLogs := &lockedBuffer{}, &lockedBuffer{}
	n := startNode(t, func(c *node.Config) {
		opts := &slog.HandlerOptions{Level: slog.LevelDebug}
		c.Logger = slog.New(slog.NewMultiHandler(slog.NewTextHandler(logs, opts), slog.NewJSONHandler(jsonLogs, opts)))
		c.WsifyListen = "127.0.0.1:0"
		c.Wsify.BroadcastingKey = broadcastKey
	})
	raw, _, err := n.Secrets.Issue("alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyText := token.EncodeText(raw)
	secrets := []string{keyText, testSecret, broadcastKey, wsifyToken}

	// Native: a good key, then a tampered one.
	c := dial(t, n)
	send(t, c, packet.AppendAuth(nil, packet.Version, raw))
	readOne(t, c)
	bad := append([]byte(nil), raw...)
	bad[len(bad)-1] ^= 1
	c2 := dial(t, n)
	send(t, c2, packet.AppendAuth(nil, packet.Version, bad))
	expectClose(t, c2, 3001, "invalid access key")

	// KOsync: a user, a JWT, a socket with it and one with garbage.
	const user, pass = "redact", "5f4dcc3b5aa765d61d8327deb882cf99"
	secrets = append(secrets, pass)
	req, _ := http.NewRequest("POST", "http://"+n.Addr().String()+"/users/create", strings.NewReader(`{"username":"`+user+`","password":"`+pass+`"}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("create user: %v %v", resp, err)
	}
	jwt, err := n.Kosync.IssueJWT(user)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, jwt)
	for _, tok := range []string{jwt, jwt + "x"} {
		ws, _, err := websocket.Dial(testCtx(t), "ws://"+n.Addr().String()+"/api/ws/"+tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _, _ = ws.Read(testCtx(t))
		_ = ws.CloseNow()
	}

	// Hypothesis: the key in the query string, a tampered one as a Bearer.
	h := dialText(t, "ws://"+n.Addr().String()+"/ws?access_token="+keyText)
	writeText(t, h, `{"type":"whoami","id":1}`)
	readText(t, h)
	tamperedText := token.EncodeText(bad)
	secrets = append(secrets, tamperedText)
	h2, _, err := websocket.Dial(testCtx(t), "ws://"+n.Addr().String()+"/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tamperedText}}})
	if err != nil {
		t.Fatal(err)
	}
	writeText(t, h2, `{"type":"whoami","id":1}`)
	readText(t, h2)
	_ = h2.Close(websocket.StatusNormalClosure, "")

	// wsify: a token in the query (the authorizer's business, never the
	// log's), the broadcasting key in a POST.
	w := dialText(t, "ws://"+n.WsifyAddr().String()+"/ws?token="+wsifyToken)
	_ = w.Close(websocket.StatusNormalClosure, "done")
	if code, body := post(t, "http://"+n.WsifyAddr().String()+"/broadcast?key="+broadcastKey, "application/json",
		`{"channel":"c","content":1}`); code != 201 {
		t.Fatalf("broadcast: %d %s", code, body)
	}

	// Admin: revoke by key (logged as an id at most).
	if code, body := post(t, adminURL(n)+"/api/revoke", "application/json", `{"key":"`+keyText+`"}`); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	expectClose(t, c, 3004, "access key revoked")

	time.Sleep(100 * time.Millisecond) // let the last log lines land
	out, jsonOut := logs.String(), jsonLogs.String()
	// Not vacuous: the lines about these very connections are there.
	for _, want := range []string{
		`msg="connection opened" conn=`, `msg=authenticated conn=`, `protocol=native remote=127.0.0.1 subject=alice`,
		`protocol=hypothesis remote=127.0.0.1 subject=alice`, `protocol=kosync remote=127.0.0.1 subject=redact`,
		`protocol=wsify remote=127.0.0.1 subject=wsify:`, `msg="connection closed" conn=`,
		`code=3001 reason="invalid access key" by=server`, `code=3004 reason="access key revoked" by=server`,
		`msg="authentication failed" protocol=hypothesis remote=127.0.0.1 reason=invalid conn=`,
		`msg="revocation applied" kind=id id=`, `msg="session closed: access key revoked" subject=alice`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no log line with %q", want)
		}
	}
	if !strings.Contains(jsonOut, `"msg":"authenticated"`) {
		t.Error("no JSON lifecycle line: the JSON check would be vacuous")
	}
	for _, s := range secrets {
		if strings.Contains(out, s) || strings.Contains(jsonOut, s) {
			t.Errorf("a credential appears in the log: %q", s)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("log:\n%s", out)
	}
}
