package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/token"
)

// protoNode starts a node with every protocol, wsify on a port of its own,
// sharing srv's Redis when srv is not nil.
func protoNode(t *testing.T, srv *redistest.Server) *node.Node {
	return startNode(t, func(c *node.Config) {
		c.WsifyListen = "127.0.0.1:0"
		if srv != nil {
			c.RedisURL = srv.URL
		}
	})
}

func dialText(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(testCtx(t), url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func writeText(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(testCtx(t), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	typ, msg, err := c.Read(testCtx(t))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a %v message, want text", typ)
	}
	return string(msg)
}

func post(t *testing.T, url, contentType, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hypothesisReady sends the official client's opening messages and waits
// for the whoami answer, so the filter is in place.
func hypothesisReady(t *testing.T, c *websocket.Conn, uri string) {
	t.Helper()
	writeText(t, c, `{"messageType":"client_id","value":"0123456789abcdef0123456789abcdef"}`)
	writeText(t, c, `{"filter":{"match_policy":"include_any","clauses":[{"field":"/uri","operator":"one_of","value":["`+uri+`"],"case_sensitive":false}],"actions":{}}}`)
	writeText(t, c, `{"type":"whoami","id":1}`)
	if got := readText(t, c); !strings.Contains(got, `"whoyouare"`) {
		t.Fatalf("whoami answered %s", got)
	}
}

// TestHypothesisAndWsifyAcrossNodes: a Hypothesis event posted to node A's
// admin API and a wsify broadcast made on node A reach sockets on node B
// through the shared Redis, with the exact frames.
func TestHypothesisAndWsifyAcrossNodes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := protoNode(t, srv), protoNode(t, srv)

	hyp := dialText(t, "ws://"+b.Addr().String()+"/ws")
	hypothesisReady(t, hyp, "https://example.com/page")
	annotation := `{"id":"Zx3k9aQqEe-3sR8y9mAb1g","uri":"http://EXAMPLE.com/page/","user":"acct:alice@localhost","group":"__world__","permissions":{"read":["group:__world__"]},"text":"Nice"}`

	member := dialText(t, "ws://"+b.WsifyAddr().String()+"/ws")
	writeText(t, member, `{"command":"join","args":{"channel":"room"}}`)
	// wsify sends no join acknowledgement: join, then retry a marker until the
	// subscription has crossed Redis.
	deadline := time.Now().Add(waitFor)
	for i := 0; ; i++ {
		code, _ := post(t, "http://"+a.WsifyAddr().String()+"/broadcast", "application/json", `{"channel":"room","content":{"marker":true}}`)
		if code != http.StatusCreated {
			t.Fatalf("broadcast answered %d", code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, msg, err := member.Read(ctx)
		cancel()
		if err == nil {
			if string(msg) != `{"marker":true}` {
				t.Fatalf("member got %s", msg)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no wsify broadcast crossed the nodes")
		}
		member = dialText(t, "ws://"+b.WsifyAddr().String()+"/ws") // the timed-out read closed it
		writeText(t, member, `{"command":"join","args":{"channel":"room"}}`)
	}
	sender := dialText(t, "ws://"+a.WsifyAddr().String()+"/ws")
	writeText(t, sender, `{"command":"broadcast","args":{"channel":"room","content":{"b":2,"a":"<1>"}}}`)
	if got := readText(t, member); got != `{"a":"\u003c1\u003e","b":2}` {
		t.Fatalf("wsify member on B got %s", got)
	}

	code, body := post(t, adminURL(a)+"/api/hypothesis/events", "application/json",
		`{"action":"create","annotation":`+annotation+`,"src_client_id":null}`)
	if code != http.StatusAccepted {
		t.Fatalf("event answered %d %s", code, body)
	}
	got := readText(t, hyp)
	var frame struct {
		Type    string            `json:"type"`
		Options map[string]string `json:"options"`
		Payload []json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal([]byte(got), &frame); err != nil || frame.Type != "annotation-notification" ||
		frame.Options["action"] != "create" || len(frame.Payload) != 1 || !jsonEqual(frame.Payload[0], annotation) {
		t.Fatalf("hypothesis socket on B got %s", got)
	}
}

func jsonEqual(a json.RawMessage, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && reflect.DeepEqual(x, y)
}

// TestHypothesisRevokedSocketCloses3004: an authenticated Hypothesis socket
// is closed with 3004 when its key is revoked, and its token then only gives
// an anonymous socket.
func TestHypothesisRevokedSocketCloses3004(t *testing.T) {
	t.Parallel()
	n := protoNode(t, nil)
	raw, claims, err := n.Secrets.Issue("carol", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + n.Addr().String() + "/ws?access_token=" + token.EncodeText(raw)
	c := dialText(t, url)
	writeText(t, c, `{"type":"whoami","id":7}`)
	if got := readText(t, c); !strings.Contains(got, `"acct:carol@localhost"`) || !strings.Contains(got, `"reply_to": 7`) && !strings.Contains(got, `"reply_to":7`) {
		t.Fatalf("whoami: %s", got)
	}
	if err := n.Revoker.RevokeKey(context.Background(), claims); err != nil {
		t.Fatal(err)
	}
	expectClose(t, c, 3004, "access key revoked")
	c = dialText(t, url)
	writeText(t, c, `{"type":"whoami","id":8}`)
	if got := readText(t, c); !strings.Contains(got, `"userid":null`) && !strings.Contains(got, `"userid": null`) {
		t.Fatalf("a revoked token must give an anonymous socket: %s", got)
	}
}

// wsifyMember dials a `gateway wsify` process on listen until it answers
// (failing if exited, when not nil, reports the process gone), joins
// "news" and waits for its own broadcast there: once it is back, the join
// ran. With Redis the broadcast comes back through Redis and is lost if it
// got there before the node's SUBSCRIBE (as with wsify itself), so it
// tries again on a new connection, with a new marker, skipping the
// markers of earlier tries (they come before the last one, if at all).
func wsifyMember(t *testing.T, listen string, exited chan error) *websocket.Conn {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for try := 0; ; try++ {
		var member *websocket.Conn
		for ; ; time.Sleep(50 * time.Millisecond) {
			select {
			case err := <-exited: // a nil channel never answers
				exited <- err
				t.Fatalf("gateway wsify exited: %v", err)
			default:
			}
			c, _, err := websocket.Dial(testCtx(t), "ws://"+listen+"/ws", nil)
			if err == nil {
				member = c
				t.Cleanup(func() { _ = c.CloseNow() })
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gateway wsify not listening: %v", err)
			}
		}
		mark := fmt.Sprintf(`"self-%d"`, try)
		writeText(t, member, `{"command":"join","args":{"channel":"news"}}`)
		writeText(t, member, `{"command":"broadcast","args":{"channel":"news","content":`+mark+`}}`)
		for {
			ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
			_, msg, err := member.Read(ctx) // a timed-out Read closes the connection
			cancel()
			if err != nil {
				break
			}
			if string(msg) == mark {
				return member
			}
			if !strings.HasPrefix(string(msg), `"self-`) {
				t.Fatalf("member got %s", msg)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the member's own broadcast never came back")
		}
	}
}

// TestWsifyDropInProcess runs `gateway wsify` with wsify's own flag names:
// a member receives a broadcast and /broadcast checks its key.
func TestWsifyDropInProcess(t *testing.T) {
	t.Parallel()
	free := e2eFreeAddrs(t, 2)
	listen, admin := free[0], free[1]
	cmd := exec.Command(e2eGatewayBinary(t), "wsify", "-listen-addr", listen, "-broadcasting-key", "k1",
		"-broker-driver", "memory", "-admin-listen", admin, "-data-dir", t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("stderr:\n%s", stderr.String())
		}
	})
	member := wsifyMember(t, listen, nil)
	if code, _ := post(t, "http://"+listen+"/broadcast?key=wrong", "application/json", `{"channel":"news","content":1}`); code != http.StatusForbidden {
		t.Fatalf("wrong key answered %d, want 403", code)
	}
	if code, body := post(t, "http://"+listen+"/broadcast?key=k1", "application/json", `{"channel":"news","content":"hi"}`); code != http.StatusCreated || body != "" {
		t.Fatalf("broadcast answered %d %q, want 201 with an empty body", code, body)
	}
	if got := readText(t, member); got != `"hi"` {
		t.Fatalf("member got %s", got)
	}
	if bad := exec.Command(e2eGatewayBinary(t), "wsify", "-broker-driver", "kafka"); bad.Run() == nil {
		t.Fatal("an unknown broker driver must be a startup error")
	}
}
