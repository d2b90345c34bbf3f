package wsify

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/session"
)

func TestBroadcastBytes(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{}, nil)
	a := dial(t, n.addr, "")
	a.join(" hello ") // trimmed
	cases := []struct{ content, want string }{
		{`{"b":1,"a":[1.0,1e2,"<&>"],"c":{"z":null,"y":true}}`, `{"a":[1,100,"\u003c\u0026\u003e"],"b":1,"c":{"y":true,"z":null}}`},
		{`"hi \"quoted\""`, `"hi \"quoted\""`},
		{`  12345678901234567891 `, `12345678901234567000`},
		{`[ ]`, `[]`},
		{`"é\u00e9"`, `"éé"`},
	}
	for _, c := range cases {
		a.broadcast("hello", c.content)
		a.expect(c.want)
	}
	a.send(`{"command":"broadcast","args":{"channel":"hello"}}`) // missing content
	a.expect(`null`)
	a.send(`{"command":"broadcast","args":{"channel":"\thello\n","content":1}}`)
	a.expect(`1`)
	// Binary frames are accepted too; what goes out is a text frame.
	a.sendBinary([]byte(`{"command":"broadcast","args":{"channel":"hello","content":"bin"}}`))
	a.expect(`"bin"`)
}

func TestMembersJoinLeave(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{}, nil)
	a, b := dial(t, n.addr, ""), dial(t, n.addr, "")
	a.join("room")
	a.join("room") // idempotent: one delivery per publish
	a.sync("room")
	b.send(`{"command":"leave","args":{"channel":"room"}}`) // not joined: no-op
	b.send(`{"command":"leave","args":{"channel":""}}`)
	b.send(`{"command":"join","args":{"channel":"  "}}`) // empty: ignored
	b.broadcast("room", `{"from":"b"}`)                  // sender not joined: allowed
	b.sync("b-sync")
	a.expect(`{"from":"b"}`)
	a.quiet(100 * time.Millisecond)
	b.quiet(50 * time.Millisecond)

	// The sender receives its own broadcast once it has joined.
	b.join("room")
	b.sync("b-sync")
	b.broadcast("room", `2`)
	a.expect(`2`)
	b.expect(`2`)

	// After leave, nothing more reaches a.
	a.send(`{"command":"leave","args":{"channel":" room "}}`)
	a.sync("a-marker")
	b.broadcast("room", `3`)
	b.expect(`3`)
	a.broadcast("a-marker", `"m"`)
	a.expect(`"m"`)
}

func TestIgnoredMessagesAreNotReplayed(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{}, nil)
	a := dial(t, n.addr, "")
	a.join("hello")
	a.broadcast("hello", `{"n":1}`)
	for _, bad := range []string{
		`{bad json`, `[1,2]`, `"str"`, `null`, `42`,
		`{"command":5,"args":{"channel":"hello"}}`,
		`{"command":"broadcast","args":"hello"}`,
		`{"command":"broadcast","args":[1]}`,
		`{"command":"broadcast","args":{"channel":"hello","content":1e400}}`,
		`{"command":"nope","args":{"channel":"hello"}}`,
		`{"args":{"channel":"hello","content":"no command"}}`, // no command: nothing from before
		`{"command":"broadcast","args":{"channel":5,"content":"non-string channel"}}`,
	} {
		a.send(bad)
	}
	a.sendBinary([]byte("{\"command\":\"broadcast\",\"args\":{\"channel\":\"hello\",\"content\":\"\xff\"}}"))
	a.broadcast("hello", `"marker"`)
	a.expect(`{"n":1}`, `"marker"`)
	a.quiet(100 * time.Millisecond)
}

func TestOrderTwoChannels(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{}, nil)
	a, b, c := dial(t, n.addr, ""), dial(t, n.addr, ""), dial(t, n.addr, "")
	a.join("one")
	a.join("two")
	a.sync("a-only")
	b.join("one")
	b.sync("b-only")
	const total = 200
	for i := range total {
		c.broadcast([]string{"one", "two"}[i%2], fmt.Sprint(i))
	}
	for i := range total {
		a.expect(fmt.Sprint(i))
	}
	for i := 0; i < total; i += 2 {
		b.expect(fmt.Sprint(i))
	}
	b.quiet(50 * time.Millisecond)
}

func TestConnectAuthorizer(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	verdict := 200
	az := newAuthorizer(t, func(r *http.Request, body map[string]any) int {
		mu.Lock()
		v := verdict
		mu.Unlock()
		if v == 0 {
			return hang(r)
		}
		return v
	})
	n := startNode(t, Options{AuthorizerURL: az.srv.URL, AuthorizerTimeout: 300 * time.Millisecond}, nil)

	resp, _ := rawUpgrade(t, n.addr, "/ws?token=abc&room=1&room=2")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("allowed connect: %d", resp.StatusCode)
	}
	cs := az.bodiesOf("connect")
	if len(cs) != 1 {
		t.Fatalf("connect calls: %d", len(cs))
	}
	args := cs[0]["args"].(map[string]any)
	headers := args["headers"].(map[string]any)
	for name, want := range map[string]string{
		"Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Upgrade": "websocket",
		"Connection": "Upgrade", "Sec-Websocket-Version": "13",
	} {
		v, ok := headers[name].([]any)
		if !ok || len(v) != 1 || v[0] != want {
			t.Errorf("headers[%q] = %#v, want [%q]", name, headers[name], want)
		}
	}
	if _, ok := headers["Host"]; ok {
		t.Error("Host is in headers; Go moves it to r.Host")
	}
	if fmt.Sprint(args["query"]) != "map[room:[1 2] token:[abc]]" {
		t.Errorf("query %#v", args["query"])
	}
	conn := cs[0]["conn"].(map[string]any)
	if id, _ := conn["id"].(string); !strings.HasPrefix(id, "c-") || len(id) != 18 || len(conn) != 1 {
		t.Errorf("conn %#v", conn)
	}

	// Through a real client too, with the empty query as {}.
	dial(t, n.addr, "")
	cs = az.bodiesOf("connect")
	if q := cs[len(cs)-1]["args"].(map[string]any)["query"]; fmt.Sprint(q) != "map[]" {
		t.Errorf("empty query: %#v", q)
	}
	auth := cs[len(cs)-1]["args"].(map[string]any)["headers"].(map[string]any)["Authorization"]
	if fmt.Sprint(auth) != "[Bearer x]" {
		t.Errorf("Authorization %#v", auth)
	}
	before := counterValue(t, n.p, "gateway_webhook_requests_total", map[string]string{"result": "allow"})

	for _, v := range []int{403, 401, 302, 500, 503, 0} {
		mu.Lock()
		verdict = v
		mu.Unlock()
		resp, body := rawUpgrade(t, n.addr, "/ws?token=abc")
		if resp.StatusCode != http.StatusForbidden || len(body) != 0 {
			t.Errorf("authorizer %d: got %d %q, want 403 with an empty body", v, resp.StatusCode, body)
		}
	}
	for result, want := range map[string]float64{"allow": before, "deny": 3, "error": 2, "timeout": 1} {
		if got := counterValue(t, n.p, "gateway_webhook_requests_total", map[string]string{"result": result}); got != want {
			t.Errorf("webhook_requests_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	if got := counterValue(t, n.p, "gateway_webhook_duration_seconds", nil); got != before+6 {
		t.Errorf("webhook_duration_seconds count %v, want %v", got, before+6)
	}
}

func TestMessageAuthorizer(t *testing.T) {
	t.Parallel()
	az := newAuthorizer(t, func(r *http.Request, body map[string]any) int {
		switch ch := channelArg(body); {
		case command(body) == "join" && ch == "secret":
			return 403
		case ch == "down":
			return 500
		case ch == "hang":
			return hang(r)
		}
		return 200
	})
	n := startNode(t, Options{AuthorizerURL: az.srv.URL, AuthorizerTimeout: 300 * time.Millisecond}, nil)

	// 403 drops silently and the connection stays.
	a, b := dial(t, n.addr, "token=abc"), dial(t, n.addr, "")
	a.join("secret")
	a.sync("open")
	b.broadcast("secret", `"not for a"`) // broadcasts to it are allowed
	b.broadcast("open", `"for a"`)
	a.expect(`"for a"`)
	a.quiet(50 * time.Millisecond)

	// The payloads: the message's own command and args, the connection's
	// identity.
	a.send(`{"command":"whatever","args":{"channel":" room-1 ","n":[1,2.50,{"b":1,"a":2}]},"extra":true}`)
	a.send(`{"command":"join"}`)
	a.send(`{"bad json`)
	a.sync("open")
	connID := az.bodiesOf("connect")[0]["conn"].(map[string]any)["id"]
	var msgs []string
	for _, raw := range az.calls() {
		if strings.Contains(string(raw), `"command":"connect"`) {
			continue
		}
		msgs = append(msgs, string(raw))
	}
	// a's calls come first (b had nothing to call about before a's sync
	// ended; b's broadcasts came after a's join was allowed): find a's.
	var mine []string
	for _, m := range msgs {
		if strings.Contains(m, fmt.Sprintf(`"conn":{"id":%q,"query":{"token":["abc"]}}`, connID)) {
			mine = append(mine, m)
		}
	}
	wantTail := []string{
		`{"command":"whatever","args":{"channel":" room-1 ","n":[1,2.50,{"b":1,"a":2}]},"conn":{"id":"` + connID.(string) + `","query":{"token":["abc"]}}}`,
		`{"command":"join","args":null,"conn":{"id":"` + connID.(string) + `","query":{"token":["abc"]}}}`,
	}
	if len(mine) < 4 {
		t.Fatalf("a's calls: %q", mine)
	}
	got := mine[len(mine)-4 : len(mine)-2] // then the sync's join and broadcast
	for i := range wantTail {
		if got[i] != wantTail[i] {
			t.Errorf("payload %d:\n got %s\nwant %s", i, got[i], wantTail[i])
		}
	}
	for _, m := range msgs {
		if strings.Contains(m, "bad json") {
			t.Error("a malformed frame was posted")
		}
	}

	// 500 closes with 1011.
	a.join("down")
	a.expectClose(websocket.StatusInternalError, "authorizer unavailable")
	// A hang times out: 1011 too.
	c := dial(t, n.addr, "")
	c.join("hang")
	c.expectClose(websocket.StatusInternalError, "authorizer unavailable")
	// Others are unaffected.
	b.sync("open")
}

func TestNoConnIdentity(t *testing.T) {
	t.Parallel()
	az := newAuthorizer(t, nil)
	n := startNode(t, Options{AuthorizerURL: az.srv.URL, DisableConnIdentity: true}, nil)
	a := dial(t, n.addr, "token=abc")
	a.sync("x")
	calls := az.calls()
	if len(calls) != 3 {
		t.Fatalf("calls %q", calls)
	}
	for _, c := range calls {
		if strings.Contains(string(c), `"conn"`) {
			t.Errorf("conn key sent: %s", c)
		}
	}
	if string(calls[1]) != `{"command":"join","args":{"channel":"x"}}` {
		t.Errorf("join payload %s", calls[1])
	}
}

func TestMessageAuthorizerOrderAndIsolation(t *testing.T) {
	t.Parallel()
	az := newAuthorizer(t, func(r *http.Request, body map[string]any) int {
		switch channelArg(body) {
		case "slow":
			time.Sleep(50 * time.Millisecond)
		case "hang":
			return hang(r)
		}
		return 200
	})
	n := startNode(t, Options{AuthorizerURL: az.srv.URL, AuthorizerTimeout: 3 * time.Second}, nil)
	small := startNode(t, Options{AuthorizerURL: az.srv.URL, AuthorizerTimeout: 3 * time.Second, MaxBacklog: 4}, nil)

	// A slow authorizer keeps each connection's order.
	a := dial(t, n.addr, "")
	a.join("slow")
	for i := range 10 {
		a.broadcast("slow", fmt.Sprint(i))
	}
	for i := range 10 {
		a.expect(fmt.Sprint(i))
	}

	// A hanging call of one connection does not delay another.
	h, b := dial(t, n.addr, ""), dial(t, n.addr, "")
	h.join("hang")
	h.broadcast("fast", `"queued behind the hang"`)
	b.join("fast")
	start := time.Now()
	b.broadcast("fast", `"b"`)
	b.expect(`"b"`)
	if d := time.Since(start); d > time.Second {
		t.Errorf("b's broadcast took %v while h's call hung", d)
	}

	// Past MaxBacklog unprocessed messages: 1008.
	f := dial(t, small.addr, "")
	f.join("hang") // in flight
	for range 3 {  // 4 unprocessed: the limit
		f.broadcast("fast", `"x"`)
	}
	f.broadcast("fast", `"one too many"`)
	f.expectClose(websocket.StatusPolicyViolation, "")
	b.quiet(50 * time.Millisecond)
}

func TestBroadcastEndpoint(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{BroadcastingKey: "s3cret"}, nil)
	a := dial(t, n.addr, "")
	a.sync("hello")
	base := "http://" + n.addr + "/broadcast"
	const js = "application/json"
	rows := []struct {
		name, url, ctype, body string
		status                 int
		deliver                string
	}{
		{"no key", base, js, `{"channel":"hello","content":1}`, 403, ""},
		{"bad key", base + "?key=s3creT", js, `{"channel":"hello","content":1}`, 403, ""},
		{"bad key before bad type", base + "?key=x", "text/plain", `nope`, 403, ""},
		{"text/plain", base + "?key=s3cret", "text/plain", `{"channel":"hello","content":1}`, 415, ""},
		{"no type", base + "?key=s3cret", "", `{"channel":"hello","content":1}`, 415, ""},
		{"json-ish", base + "?key=s3cret", "application/jsonx", `{"channel":"hello","content":1}`, 415, ""},
		{"bad type before bad body", base + "?key=s3cret", "text/html", `nope`, 415, ""},
		{"bad json", base + "?key=s3cret", js, `{"channel":`, 400, ""},
		{"non-object", base + "?key=s3cret", js, `["hello"]`, 400, ""},
		{"null", base + "?key=s3cret", js, `null`, 400, ""},
		{"non-string channel", base + "?key=s3cret", js, `{"channel":5,"content":1}`, 400, ""},
		{"no channel", base + "?key=s3cret", js, `{"content":1}`, 400, ""},
		{"empty channel", base + "?key=s3cret", js, `{"channel":"  ","content":1}`, 400, ""},
		{"ok", base + "?key=s3cret", js, `{"channel":"hello","content":{"b":2,"a":"<x>"},"extra":1}`, 201, `{"a":"\u003cx\u003e","b":2}`},
		{"charset", base + "?key=s3cret", "Application/JSON; charset=utf-8", `{"channel":" hello ","content":"cs"}`, 201, `"cs"`},
		{"README form", base + "?key=s3cret", js, `{"channel":"hello","args":{"content":"Hello World! from the server"}}`, 201, `"Hello World! from the server"`},
		{"top-level wins", base + "?key=s3cret", js, `{"channel":"hello","content":"top","args":{"content":"args"}}`, 201, `"top"`},
		{"top-level null wins", base + "?key=s3cret", js, `{"channel":"hello","content":null,"args":{"content":"args"}}`, 201, `null`},
		{"no content", base + "?key=s3cret", js, `{"channel":"hello"}`, 201, `null`},
		{"nobody there", base + "?key=s3cret", js, `{"channel":"empty","content":1}`, 201, ""},
	}
	for _, r := range rows {
		status, body, _ := httpDo(t, "POST", r.url, r.ctype, r.body)
		if status != r.status || len(body) != 0 {
			t.Errorf("%s: %d %q, want %d with an empty body", r.name, status, body, r.status)
		}
		if r.deliver != "" {
			a.expect(r.deliver)
		}
	}
	a.quiet(50 * time.Millisecond)

	status, body, h := httpDo(t, "GET", base+"?key=s3cret", "", "")
	if status != 405 || string(body) != "{\"message\":\"Method Not Allowed\"}\n" || h.Get("Content-Type") != "application/json" {
		t.Errorf("GET /broadcast: %d %q %v", status, body, h)
	}
}

func TestOpenBroadcastEndpoint(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{}, nil)
	a := dial(t, n.addr, "")
	a.sync("hello")
	if status, _, _ := httpDo(t, "POST", "http://"+n.addr+"/broadcast", "application/json", `{"channel":"hello","content":1}`); status != 201 {
		t.Fatalf("no key configured: %d", status)
	}
	a.expect(`1`)
	if status, _, _ := httpDo(t, "POST", "http://"+n.addr+"/broadcast?key=x", "application/json", `{"channel":"hello","content":1}`); status != 403 {
		t.Fatalf("a key where none is configured: %d", status)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{}, nil)
	base := "http://" + n.addr
	for _, r := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/", `{"message":"Not Found"}` + "\n", 404},
		{"GET", "/nope", `{"message":"Not Found"}` + "\n", 404},
		{"POST", "/ws/", `{"message":"Not Found"}` + "\n", 404},
		{"POST", "/ws", `{"message":"Method Not Allowed"}` + "\n", 405},
		{"PUT", "/broadcast", `{"message":"Method Not Allowed"}` + "\n", 405},
	} {
		status, body, h := httpDo(t, r.method, base+r.path, "", "")
		if status != r.status || string(body) != r.body || h.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q %q", r.method, r.path, status, body, h.Get("Content-Type"))
		}
	}
	// CORS preflight, as Echo's middleware answers it.
	req, _ := http.NewRequest("OPTIONS", base+"/broadcast", nil)
	req.Header.Set("Origin", "https://example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestJoinCap: a connection holds at most MaxChannels channels; joining
// one already held or leaving one keeps it open, one more closes it with
// 1008.
func TestJoinCap(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{MaxChannels: 3}, nil)
	a := dial(t, n.addr, "")
	a.join("one")
	a.join("two")
	a.join("two") // held: no new place
	a.send(`{"command":"leave","args":{"channel":"two"}}`)
	a.join("three")
	a.sync("four") // the third channel: the cap, still open
	a.join("five")
	a.expectClose(websocket.StatusPolicyViolation, "too many channels joined: more than 3")
}

// TestJoinChannelNameCap: a join of a name of MaxChannelName bytes is
// held; one byte more closes with 1008.
func TestJoinChannelNameCap(t *testing.T) {
	t.Parallel()
	n := startNode(t, Options{}, nil)
	a := dial(t, n.addr, "")
	long := strings.Repeat("n", MaxChannelName)
	a.join(long)
	a.broadcast(long, `"at the cap"`)
	a.expect(`"at the cap"`)
	a.join(long + "n")
	a.expectClose(websocket.StatusPolicyViolation, "channel name longer than 1024 bytes")
}

// TestSubprotocolEcho: a lone offered subprotocol is echoed, as wsify's
// x/net/websocket server does (browsers fail the connection otherwise);
// with several offered none is selected (documented in doc.go).
func TestSubprotocolEcho(t *testing.T) {
	t.Parallel()
	az := newAuthorizer(t, func(*http.Request, map[string]any) int { return 200 })
	for _, n := range []*node{
		startNode(t, Options{}, nil),
		startNode(t, Options{AuthorizerURL: az.srv.URL}, nil),
	} {
		rows := []struct{ offer, want string }{
			{"Sec-WebSocket-Protocol: chat\r\n", "chat"},
			{"Sec-WebSocket-Protocol:  chat \r\n", "chat"},
			{"Sec-WebSocket-Protocol: chat, superchat\r\n", ""},
			{"", ""},
		}
		for _, r := range rows {
			resp, body := rawUpgradeWith(t, n.addr, "/ws", r.offer)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("%q: status %d %q", r.offer, resp.StatusCode, body)
			}
			got, present := resp.Header["Sec-Websocket-Protocol"]
			if r.want == "" && present {
				t.Errorf("%q: Sec-WebSocket-Protocol %q, want none", r.offer, got)
			}
			if r.want != "" && (len(got) != 1 || got[0] != r.want) {
				t.Errorf("%q: Sec-WebSocket-Protocol %q, want exactly %q", r.offer, got, r.want)
			}
		}

		// An independent client that checks the answer, as browsers do.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, "ws://"+n.addr+"/ws", &websocket.DialOptions{Subprotocols: []string{"chat"}})
		cancel()
		if err != nil {
			t.Fatalf("dial offering chat: %v", err)
		}
		if c.Subprotocol() != "chat" {
			t.Errorf("coder/websocket sees subprotocol %q, want chat", c.Subprotocol())
		}
		_ = c.CloseNow()
	}
}

// TestJoinBurstOnConnect: with an authorizer and the default limits, a
// client that sends 130 joins at once (every channel it may hold, and two
// repeats) while the authorizer is slow is not closed, and every join takes
// effect (issue 11 item 3: the old backlog of 64 closed it with 1008).
func TestJoinBurstOnConnect(t *testing.T) {
	t.Parallel()
	az := newAuthorizer(t, func(*http.Request, map[string]any) int {
		time.Sleep(2 * time.Millisecond)
		return 200
	})
	n := startNode(t, Options{AuthorizerURL: az.srv.URL}, nil)
	if want := BacklogPerChannel * DefaultMaxChannels; n.p.maxBacklog != want || want < DefaultMaxChannels+2 {
		t.Fatalf("default backlog %d, want %d (more than the channel cap)", n.p.maxBacklog, want)
	}
	a := dial(t, n.addr, "")
	for i := range DefaultMaxChannels {
		a.join(fmt.Sprint("c", i))
	}
	a.join("c0")
	a.join("c1")
	// Authorized after every join: once it is back, all joins ran.
	a.broadcast("c0", `"synced"`)
	a.expect(`"synced"`)
	for i := range DefaultMaxChannels {
		url := "http://" + n.addr + "/broadcast"
		if code, _, _ := httpDo(t, "POST", url, "application/json", fmt.Sprintf(`{"channel":"c%d","content":%d}`, i, i)); code != http.StatusCreated {
			t.Fatalf("broadcast to c%d: %d", i, code)
		}
		a.expect(fmt.Sprint(i)) // one copy each: the repeated joins were no-ops
	}
	a.quiet(50 * time.Millisecond)

	// The default follows the channel cap.
	wide, err := New(Options{Hub: session.NewHub(nil), MaxChannels: 300, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if wide.maxBacklog != 600 {
		t.Errorf("backlog with 300 channels: %d, want 600", wide.maxBacklog)
	}
}
