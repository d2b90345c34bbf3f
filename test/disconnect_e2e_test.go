package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Issue 12 items 7 and 8: the admin API refuses reserved channels, and
// disconnects connections (by subject on every node, by connection id on
// the node that holds it) without revoking anything.

// dcWantRaw posts body to n's admin path and checks the status and the
// exact answer.
func dcWantRaw(t *testing.T, n *node.Node, path, contentType, body string, status int, want string) {
	t.Helper()
	got, b, ct := e2eDo(t, http.MethodPost, adminURL(n)+path, contentType, []byte(body))
	if got != status || string(b) != want+"\n" || ct != "application/json" {
		t.Fatalf("POST %s %s: %d %q (%s), want %d %q", path, body, got, b, ct, status, want)
	}
}

func TestAdminPublishRefusesReservedChannels(t *testing.T) {
	t.Parallel()
	n := protoNode(t, nil)
	const refused = `{"error":"channels starting with '#' are reserved for the gateway's protocols; of those only #wsify:NAME may be published here"}`
	for _, ch := range []string{"#kosync:alice", "#hypothesis", "#", "#wsify:", "#other"} {
		dcWantRaw(t, n, "/api/publish?channel="+url.QueryEscape(ch), "application/octet-stream", "raw", http.StatusBadRequest, refused)
	}
	// A KOsync socket of alice subscribed to her announces gets nothing
	// from the refused publish: its next frame answers its own request.
	key := ksRegister(t, ksBase(n), "alice", "pw")
	c := ksDial(t, n.Addr().String(), ksJWT(t, ksBase(n), "alice", key))
	ksSubscribe(t, c)
	dcWantRaw(t, n, "/api/publish?channel="+url.QueryEscape("#kosync:alice"), "application/octet-stream", "not json", http.StatusBadRequest, refused)
	ksSend(t, c, ksAllMsg)
	ksWant(t, c, "documents.all after a refused publish", ksRPCOK("documents.all", "[]"))
	// #wsify:<name> stays a documented internal API: the raw body reaches
	// the members verbatim.
	w := bpJoined(t, n, "news", func(m string) { bpAdminPublish(t, n, "#wsify:news", []byte(m)) })
	bpAdminPublish(t, n, "#wsify:news", []byte(`{"raw":1}`))
	if got := readText(t, w); got != `{"raw":1}` {
		t.Fatalf("wsify member got %q", got)
	}
}

// dcAuthorizer is a wsify authorizer that allows everything and hands
// over the connection ids of connect calls.
func dcAuthorizer(t *testing.T) (string, <-chan string) {
	ids := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Command string `json:"command"`
			Conn    struct {
				ID string `json:"id"`
			} `json:"conn"`
		}
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &body) == nil && body.Command == "connect" {
			ids <- body.Conn.ID
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ids
}

// dcNode starts a node of every protocol on srv's Redis, wsify with the
// authorizer at authURL.
func dcNode(t *testing.T, srv *redistest.Server, authURL string) *node.Node {
	return startNode(t, func(c *node.Config) {
		c.WsifyListen = "127.0.0.1:0"
		c.RedisURL = srv.URL
		c.Wsify.AuthorizerURL = authURL
	})
}

// dcWaitNodes waits until want nodes listen on the control channel, so a
// disconnect reaches each of them.
func dcWaitNodes(t *testing.T, srv *redistest.Server, want int64) {
	t.Helper()
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	deadline := time.Now().Add(waitFor)
	for {
		got, err := rc.PubSubNumSub(testCtx(t), "gateway:control").Result()
		if err == nil && got["gateway:control"] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("control channel subscribers: %v %v, want %d", got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dcWsify dials a wsify socket and returns it with its wsify id.
func dcWsify(t *testing.T, n *node.Node, ids <-chan string) (*websocket.Conn, string) {
	t.Helper()
	c := dialText(t, "ws://"+n.WsifyAddr().String()+"/ws")
	select {
	case id := <-ids:
		return c, id
	case <-time.After(waitFor):
		t.Fatal("the authorizer saw no connect call")
		return nil, ""
	}
}

func TestDisconnectBySubjectAcrossNodes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	authURL, ids := dcAuthorizer(t)
	a, b := dcNode(t, srv, authURL), dcNode(t, srv, authURL)
	dcWaitNodes(t, srv, 2)

	// alice's KOsync sockets have the subject kosync:alice; a native key
	// issued for that subject too, used also as a Hypothesis token.
	const subject = "kosync:alice"
	pw := ksRegister(t, ksBase(a), "alice", "pw")
	jwt := ksJWT(t, ksBase(a), "alice", pw)
	ksA := ksDial(t, a.Addr().String(), jwt)
	ksB := ksDial(t, b.Addr().String(), jwt)
	key, _ := e2eIssue(t, a, subject)
	natA, natB := e2eConnectKey(t, a, key), e2eConnectKey(t, b, key)
	bystander := connect(t, b, "bob")
	hyp := dialText(t, "ws://"+b.Addr().String()+"/ws?access_token="+token.EncodeText(key))
	writeText(t, hyp, `{"type":"whoami","id":7}`)
	if got := readText(t, hyp); !strings.Contains(got, `"acct:kosync:alice@localhost"`) {
		t.Fatalf("hypothesis whoami: %s", got)
	}
	wsB, wsID := dcWsify(t, b, ids)
	wsKeep, _ := dcWsify(t, b, ids)

	got := e2eAdminJSON(t, a, "/api/disconnect", `{"subject":"`+subject+`"}`, http.StatusOK)
	e2eWantFields(t, got, map[string]any{"closed": float64(2), "forwarded": true, "other_nodes": float64(1)})
	for _, c := range []*websocket.Conn{natA, natB, ksA, ksB, hyp} {
		expectClose(t, c, websocket.StatusCode(packet.CloseDisconnected), gateway.DefaultDisconnectReason)
	}
	e2ePing(t, bystander)

	// A wsify socket by its subject, from the other node, with a code and
	// reason of the operator's choosing.
	got = e2eAdminJSON(t, a, "/api/disconnect", `{"subject":"wsify:`+wsID+`","code":4321,"reason":"maintenance; back soon"}`, http.StatusOK)
	e2eWantFields(t, got, map[string]any{"closed": float64(0), "forwarded": true, "other_nodes": float64(1)})
	expectClose(t, wsB, 4321, "maintenance; back soon")

	// Nothing was revoked: the same key and the same JWT connect again,
	// on both nodes.
	e2ePing(t, e2eConnectKey(t, a, key))
	e2ePing(t, e2eConnectKey(t, b, key))
	ksDial(t, b.Addr().String(), jwt)
	// The other wsify socket is untouched: it still joins and receives.
	writeText(t, wsKeep, `{"command":"join","args":{"channel":"still"}}`)
	// wsify acknowledges no join: publish until the socket reads one (a
	// read that timed out would close it, so one read waits for all).
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			_, _, _ = e2eDoQuiet(http.MethodPost, adminURL(b)+"/api/publish?channel="+url.QueryEscape("#wsify:still"), []byte(`"here"`))
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	msg := readText(t, wsKeep)
	if msg != `"here"` {
		t.Fatalf("the other wsify socket read %q", msg)
	}

	samples, _ := e2eScrape(t, a)
	if v := samples[`gateway_operator_disconnects_total{origin="local"}`]; v != "2" {
		t.Fatalf(`node A gateway_operator_disconnects_total{origin="local"} = %q, want 2`, v)
	}
	samples, _ = e2eScrape(t, b)
	if v := samples[`gateway_operator_disconnects_total{origin="cluster"}`]; v != "4" {
		t.Fatalf(`node B gateway_operator_disconnects_total{origin="cluster"} = %q, want 4`, v)
	}
	if v := samples[`gateway_disconnects_total{code="3006",initiator="server",protocol="native"}`]; v != "1" {
		t.Fatalf(`node B disconnects of native with 3006 = %q, want 1`, v)
	}
}

func TestDisconnectByConnID(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	dcWaitNodes(t, srv, 2)

	// Connection ids are the server's tag and the accept order: three
	// connections made one after another on a fresh node are 1, 2 and 3.
	key, _ := e2eIssue(t, a, "carol")
	var onB []*websocket.Conn
	for range 3 {
		onB = append(onB, e2eConnectKey(t, b, key))
	}
	id := func(n *node.Node, seq uint64) string { return gateway.ConnID{Node: n.Server.Tag(), Seq: seq}.String() }

	// On the node that holds it: closed here, not forwarded.
	got := e2eAdminJSON(t, b, "/api/disconnect", `{"conn":"`+id(b, 2)+`"}`, http.StatusOK)
	e2eWantFields(t, got, map[string]any{"closed": float64(1), "forwarded": false, "other_nodes": float64(0)})
	expectClose(t, onB[1], websocket.StatusCode(packet.CloseDisconnected), gateway.DefaultDisconnectReason)
	e2ePing(t, onB[0])
	e2ePing(t, onB[2])

	// From another node: forwarded, and only B closes it.
	got = e2eAdminJSON(t, a, "/api/disconnect", `{"conn":"`+id(b, 3)+`","reason":"one"}`, http.StatusOK)
	e2eWantFields(t, got, map[string]any{"closed": float64(0), "forwarded": true, "other_nodes": float64(1)})
	expectClose(t, onB[2], websocket.StatusCode(packet.CloseDisconnected), "one")
	e2ePing(t, onB[0])

	// An id already gone, or of no node: nothing closes.
	got = e2eAdminJSON(t, b, "/api/disconnect", `{"conn":"`+id(b, 2)+`"}`, http.StatusOK)
	e2eWantFields(t, got, map[string]any{"closed": float64(0), "forwarded": false, "other_nodes": float64(0)})
	e2ePing(t, onB[0])
}

func TestDisconnectStandalone(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	c := connect(t, n, "dave")
	got := e2eAdminJSON(t, n, "/api/disconnect", `{"subject":"dave"}`, http.StatusOK)
	e2eWantFields(t, got, map[string]any{"closed": float64(1), "forwarded": false, "other_nodes": float64(0)})
	expectClose(t, c, websocket.StatusCode(packet.CloseDisconnected), gateway.DefaultDisconnectReason)
	e2ePing(t, connect(t, n, "dave"))
}

func TestDisconnectBadRequests(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	c := connect(t, n, "erin")
	reason124 := strings.Repeat("é", 62) // 124 bytes
	for _, tc := range []struct{ body, want string }{
		{`{`, `{"error":"body must be a JSON object: unexpected EOF"}`},
		{`[]`, `{"error":"body must be a JSON object: json: cannot unmarshal array into Go value of type struct { Subject *string \"json:\\\"subject\\\"\"; Conn *string \"json:\\\"conn\\\"\"; Code *int \"json:\\\"code\\\"\"; Reason *string \"json:\\\"reason\\\"\" }"}`},
		{`{}`, `{"error":"give exactly one of \"subject\" or \"conn\""}`},
		{`{"subject":"erin","conn":"0000000a-1"}`, `{"error":"give exactly one of \"subject\" or \"conn\""}`},
		{`{"subject":"erin","what":1}`, `{"error":"body must be a JSON object: json: unknown field \"what\""}`},
		{`{"subject":""}`, `{"error":"token: empty subject"}`},
		{`{"conn":"nope"}`, `{"error":"connection id \"nope\": want 8 hex digits, '-', a sequence number"}`},
		{`{"conn":"0000000a-0"}`, `{"error":"connection id \"0000000a-0\": bad sequence number"}`},
		{`{"subject":"erin","code":2999}`, `{"error":"code must be 3000 to 4999 (the application close codes of RFC 6455)"}`},
		{`{"subject":"erin","code":5000}`, `{"error":"code must be 3000 to 4999 (the application close codes of RFC 6455)"}`},
		{`{"subject":"erin","code":1000}`, `{"error":"code must be 3000 to 4999 (the application close codes of RFC 6455)"}`},
		{`{"subject":"erin","code":"3006"}`, `{"error":"body must be a JSON object: json: cannot unmarshal string into Go struct field .code of type int"}`},
		{`{"subject":"erin","reason":"` + reason124 + `"}`, `{"error":"reason must be UTF-8 of at most 123 bytes"}`},
	} {
		dcWantRaw(t, n, "/api/disconnect", "application/json", tc.body, http.StatusBadRequest, tc.want)
	}
	e2ePing(t, c) // none of them closed anything
	// The limits themselves are fine: 4999 and 123 bytes.
	got := e2eAdminJSON(t, n, "/api/disconnect", fmt.Sprintf(`{"subject":"erin","code":4999,"reason":%q}`, reason124[:122]+"x"), http.StatusOK)
	e2eWantFields(t, got, map[string]any{"closed": float64(1), "forwarded": false, "other_nodes": float64(0)})
	expectClose(t, c, 4999, reason124[:122]+"x")
}

// e2eDoQuiet makes a request from a goroutine that is not the test's.
func e2eDoQuiet(method, url string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	resp, err := e2eHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
