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
// auth, KOsync and Hypothesis tokens in URLs, admin revocations, a failing
// revocation store) with debug logging on, and checks that no key, JWT or
// password appears in the node's log.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	n := startNode(t, func(c *node.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.WsifyListen = "127.0.0.1:0"
	})
	raw, _, err := n.Secrets.Issue("alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyText := token.EncodeText(raw)
	secrets := []string{keyText, testSecret}

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

	// Hypothesis: the key in the query string.
	h := dialText(t, "ws://"+n.Addr().String()+"/ws?access_token="+keyText)
	writeText(t, h, `{"type":"whoami","id":1}`)
	readText(t, h)

	// Admin: revoke by key (logged as an id at most).
	if code, body := post(t, adminURL(n)+"/api/revoke", "application/json", `{"key":"`+keyText+`"}`); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	expectClose(t, c, 3004, "access key revoked")

	time.Sleep(100 * time.Millisecond) // let the last log lines land
	out := logs.String()
	if out == "" {
		t.Fatal("no log lines at all: the check would be vacuous")
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Fatalf("a credential appears in the log:\n%s", out)
		}
	}
}
