package hypothesis

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/session"
)

func TestPlainGETIsBadHandshake(t *testing.T) {
	e := newEnv(t)
	resp, err := http.Get(e.httpURL + "/ws?access_token=x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || string(body) != badHandshake ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if badHandshake != `{"ok": false, "error": "bad_handshake", "reason": "Handshake failed. Are you a WebSocket client?"}` {
		t.Fatal("body changed")
	}
}

// TestMessages runs every message form of §3-§4 on one socket: each row's
// reply, or no reply (proved by the sync pong coming next).
func TestMessages(t *testing.T) {
	e := newEnv(t)
	c := e.dial("", nil)
	const err = `{"type":"error","error":{"type":"`
	for _, tc := range []struct{ send, want string }{
		// ping and ids
		{`{"type":"ping","id":123}`, `{"type":"pong","ok":true,"reply_to":123}`},
		{`{"id":123,"type":"ping"}`, `{"type":"pong","ok":true,"reply_to":123}`},
		{`{"type":"ping","id":1.50}`, `{"type":"pong","ok":true,"reply_to":1.50}`},
		{`{"type":"ping","id":-7}`, `{"type":"pong","ok":true,"reply_to":-7}`},
		{`{"type":"ping","id":1e3}`, `{"type":"pong","ok":true,"reply_to":1e3}`},
		{`{"type":"ping","id":123456789012345678901234567890}`, `{"type":"pong","ok":true,"reply_to":123456789012345678901234567890}`},
		{`{"type":"ping","id":1,"ok":false,"reply_to":9}`, `{"type":"pong","ok":true,"reply_to":1}`},
		{`{"type":"ping"}`, ``},
		{`{"type":"ping","id":"1"}`, ``},
		{`{"type":"ping","id":true}`, ``},
		{`{"type":"ping","id":null}`, ``},
		{`{"type":"ping","id":[1]}`, ``},
		{`{"type":"ping","id":{"a":1}}`, ``},
		// whoami
		{`{"type":"whoami","id":1}`, `{"type":"whoyouare","userid":null,"ok":true,"reply_to":1}`},
		{`{"type":"whoami"}`, ``},
		// client_id
		{`{"type":"client_id","id":5}`, err + `invalid_data","description":"\"value\" is missing"},"ok":false,"reply_to":5}`},
		{`{"messageType":"client_id","id":5}`, err + `invalid_data","description":"\"value\" is missing"},"ok":false,"reply_to":5}`},
		{`{"type":"client_id"}`, ``},
		{`{"type":"client_id","value":"abc","id":5}`, ``},
		{`{"messageType":"client_id","value":"0123456789abcdef0123456789abcdef"}`, ``},
		{`{"type":"client_id","value":null,"id":5}`, ``},
		// filter
		{`{"type":"filter","id":7}`, err + `invalid_data","description":"\"filter\" is missing"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"wibble":"giraffe"}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"filter":{"wibble":"giraffe"},"id":7}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"filter":{"wibble":"giraffe"}}`, ``},
		{`{"messageType":"client_id","filter":{"wibble":"giraffe"},"id":7}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":[]}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_all","clauses":[],"actions":{}}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":{},"actions":{}}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[]}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[5],"actions":null}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"field":"/uri"}],"actions":1}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"value":"x"}],"actions":1}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"field":["/uri"],"value":"x"}],"actions":1}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"field":"/uri","value":5}],"actions":1}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"field":"/id","value":[["a"]]}],"actions":1}}`, err + `invalid_data","description":"failed to parse filter"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"field":"/id","value":["a","b","c","d","e","f"]}],"actions":1}}`, err + `invalid_data","description":"filter too large: more than 5 values"},"ok":false,"reply_to":7}`},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"field":"/id","value":["a","a","a","a","a","a"]}],"actions":1}}`, ``},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[{"field":"/user","value":"acct:x@y"},{"field":"/id","value":5}],"actions":1,"extra":true}}`, ``},
		{`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[],"actions":{}}}`, ``},
		// unknown and missing types
		{`{"type":"donkeys","id":9}`, err + `invalid_type","description":"invalid message type: \"donkeys\""},"ok":false,"reply_to":9}`},
		{`{"type":"donkeys"}`, ``},
		{`{"id":9}`, err + `invalid_type","description":"invalid message type: null"},"ok":false,"reply_to":9}`},
		{`{"type":null,"id":9}`, err + `invalid_type","description":"invalid message type: null"},"ok":false,"reply_to":9}`},
		{`{"messageType":"other","id":9}`, err + `invalid_type","description":"invalid message type: null"},"ok":false,"reply_to":9}`},
		{`{"type":"","id":9}`, err + `invalid_type","description":"invalid message type: \"\""},"ok":false,"reply_to":9}`},
		{`{"type":"PING","id":9}`, err + `invalid_type","description":"invalid message type: \"PING\""},"ok":false,"reply_to":9}`},
		{`{"type":5,"id":9}`, err + `invalid_type","description":"invalid message type: 5"},"ok":false,"reply_to":9}`},
		{`{"type":-0,"id":9}`, err + `invalid_type","description":"invalid message type: 0"},"ok":false,"reply_to":9}`},
		{`{"type":1e2,"id":9}`, err + `invalid_type","description":"invalid message type: 100.0"},"ok":false,"reply_to":9}`},
		{`{"type":1.5E-7,"id":9}`, err + `invalid_type","description":"invalid message type: 1.5e-07"},"ok":false,"reply_to":9}`},
		{`{"type":1e400,"id":9}`, err + `invalid_type","description":"invalid message type: Infinity"},"ok":false,"reply_to":9}`},
		{`{"type":true,"id":9}`, err + `invalid_type","description":"invalid message type: true"},"ok":false,"reply_to":9}`},
		{`{"type":false,"id":9}`, err + `invalid_type","description":"invalid message type: false"},"ok":false,"reply_to":9}`},
		{`{"type":"caf\u00e9 <&> \ud83d\ude00 \/ \n","id":9}`, err + `invalid_type","description":"invalid message type: \"caf\\u00e9 <&> \\ud83d\\ude00 / \\n\""},"ok":false,"reply_to":9}`},
		{"{\"type\":\"é😀\\u0041\x7f\",\"id\":9}", err + `invalid_type","description":"invalid message type: \"\\u00e9\\ud83d\\ude00A\\u007f\""},"ok":false,"reply_to":9}`},
		{`{"type":"\ud800","id":9}`, err + `invalid_type","description":"invalid message type: \"\\ud800\""},"ok":false,"reply_to":9}`},
		{`{"type":["ping"],"id":9}`, ``},
		{`{"type":{"a":1},"id":9}`, ``},
		{`{"type":"whoami","messageType":"client_id","filter":{},"id":4}`, `{"type":"whoyouare","userid":null,"ok":true,"reply_to":4}`},
		// non-object JSON is ignored
		{`[1,2]`, ``},
		{`"x"`, ``},
		{`42`, ``},
		{`null`, ``},
		{` {"type":"ping","id":2} `, `{"type":"pong","ok":true,"reply_to":2}`},
	} {
		c.send(tc.send)
		if tc.want != "" {
			if got := c.read(); got != tc.want {
				t.Errorf("%s\n got %s\nwant %s", tc.send, got, tc.want)
			}
		}
		c.sync() // nothing else came
	}
	// A binary frame is parsed as JSON too.
	c.sendType(websocket.MessageBinary, `{"type":"ping","id":3}`)
	if got := c.read(); got != `{"type":"pong","ok":true,"reply_to":3}` {
		t.Errorf("binary ping: %s", got)
	}
}

func TestInvalidJSONCloses(t *testing.T) {
	e := newEnv(t)
	for _, msg := range []string{`{nope`, `{"type":"ping","id":1}x`, ``, `NaN`} {
		c := e.dial("", nil)
		c.send(msg)
		c.expectClose(1000, "invalid message format")
	}
	c := e.dial("", nil)
	c.sendType(websocket.MessageBinary, "{\"type\":\"\xff\"}")
	c.expectClose(1000, "invalid message format")
}

func whoami(c *client) string {
	c.t.Helper()
	c.send(`{"type":"whoami","id":1}`)
	return c.read()
}

func TestWhoami(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.key("alice")
	revoked, rc := e.key("mallory")
	if err := e.revoker.RevokeKey(context.Background(), rc); err != nil {
		t.Fatal(err)
	}
	bearer := func(v string) http.Header { return http.Header{"Authorization": []string{v}} }
	const (
		anon    = `{"type":"whoyouare","userid":null,"ok":true,"reply_to":1}`
		asAlice = `{"type":"whoyouare","userid":"acct:alice@localhost","ok":true,"reply_to":1}`
		asBob   = `{"type":"whoyouare","userid":"acct:bob@localhost","ok":true,"reply_to":1}`
	)
	for _, tc := range []struct {
		name, query string
		header      http.Header
		want        string
	}{
		{"anonymous", "", nil, anon},
		{"query key", "?access_token=" + alice, nil, asAlice},
		{"query key, last occurrence", "?access_token=bad&access_token=" + alice + "&debug=1", nil, asAlice},
		{"bearer key", "", bearer("Bearer " + alice), asAlice},
		{"bearer key with spaces", "", bearer("Bearer   " + alice + "  "), asAlice},
		{"bearer lower case", "", bearer("bearer " + alice), anon},
		{"empty bearer", "", bearer("Bearer "), anon},
		{"query wins even empty", "?access_token=", bearer("Bearer " + alice), anon},
		{"query wins with a bad token", "?access_token=garbage", bearer("Bearer " + alice), anon},
		{"garbage", "?access_token=garbage", nil, anon},
		{"revoked key", "?access_token=" + revoked, nil, anon},
		{"revoked key by bearer", "", bearer("Bearer " + revoked), anon},
		{"jwt", "?access_token=" + testJWT, nil, asBob},
		{"jwt bearer", "", bearer("Bearer " + testJWT), asBob},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(tc.query, tc.header)
			c.t = t
			if got := whoami(c); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFilterMatching(t *testing.T) {
	e := newEnv(t)
	byURI := e.dial("", nil)
	byURI.filter(`{"field":"/uri","operator":"one_of","value":["https://EXAMPLE.com/page/?utm_source=x#top","urn:x-pdf:abc"],"case_sensitive":false}`)
	byID := e.dial("", nil)
	byID.filter(`{"field":"/id","operator":"equals","value":"Zx3k9aQqEe-3sR8y9mAb1g"}`)
	byGroup := e.dial("", nil)
	byGroup.filter(`{"field":"/group","operator":"equals","value":"__world__","case_sensitive":true}`)
	byRef := e.dial("", nil)
	byRef.filter(`{"field":"/references","operator":"one_of","value":"root-annotation-000000"}`,
		`{"field":"/id","operator":"equals","value":"root-annotation-000000"}`)
	all := []*client{byURI, byID, byGroup, byRef}

	// /uri with normalisation: the annotation is on http://example.com/page.
	e.post("create", annotation("a-uri-0000000000000000", func(a map[string]any) {
		a["uri"], a["group"] = "http://example.com/page", "other"
		a["permissions"] = map[string]any{"read": []string{"group:__world__"}}
	}), nil)
	byURI.expect("a-uri-0000000000000000")
	e.expectNothing(all...)

	// An equivalent URI supplied with the event.
	e.post("update", annotation("a-pdf-0000000000000000", func(a map[string]any) {
		a["uri"], a["group"] = "https://elsewhere.org/x.pdf", "other"
	}), map[string]any{"equivalent_uris": []string{"urn:x-pdf:abc"}})
	if n := byURI.expect("a-pdf-0000000000000000"); n.Options["action"] != "update" {
		t.Errorf("action %v", n.Options)
	}
	e.expectNothing(byURI, byID, byGroup, byRef)

	// /id, /group, /references; one event matching two rows arrives once.
	e.post("create", annotation("Zx3k9aQqEe-3sR8y9mAb1g"), nil)
	byURI.expect("Zx3k9aQqEe-3sR8y9mAb1g") // same uri
	byID.expect("Zx3k9aQqEe-3sR8y9mAb1g")
	byGroup.expect("Zx3k9aQqEe-3sR8y9mAb1g")
	e.expectNothing(all...)

	e.post("create", annotation("reply-annotation-00000", func(a map[string]any) {
		a["uri"] = "https://other.example/"
		a["references"] = []string{"root-annotation-000000"}
	}), nil)
	byGroup.expect("reply-annotation-00000")
	byRef.expect("reply-annotation-00000")
	e.expectNothing(all...)

	// Replacing a filter drops the old rows.
	byID.filter(`{"field":"/id","value":"another-annotation-0000"}`)
	e.post("create", annotation("Zx3k9aQqEe-3sR8y9mAb1g"), nil)
	byURI.expect("Zx3k9aQqEe-3sR8y9mAb1g")
	byGroup.expect("Zx3k9aQqEe-3sR8y9mAb1g")
	e.expectNothing(all...)

	// A failed filter keeps the old one.
	byURI.send(`{"type":"filter","id":1,"filter":{"match_policy":"include_any","clauses":[{"field":"/uri","value":1}],"actions":{}}}`)
	byURI.read()
	e.post("create", annotation("a-uri-1111111111111111"), nil)
	byURI.expect("a-uri-1111111111111111")
	byGroup.expect("a-uri-1111111111111111")
	e.expectNothing(all...)
}

func TestNoFilterGetsNothing(t *testing.T) {
	e := newEnv(t)
	none := e.dial("", nil)
	empty := e.dial("", nil)
	empty.send(`{"filter":{"match_policy":"include_any","clauses":[],"actions":{}}}`)
	empty.sync()
	none.sync()
	e.post("create", annotation("a-uri-0000000000000000"), nil)
	// Now give both the sentinel row only: what came before it would show.
	none.filter()
	empty.filter()
	e.expectNothing(none, empty)
}

func TestVisibility(t *testing.T) {
	e := newEnv(t)
	aliceKey, _ := e.key("alice")
	bobKey, _ := e.key("bob")
	carolKey, _ := e.key("carol")
	anon := e.dial("", nil)
	alice := e.dial("?access_token="+aliceKey, nil)
	bob := e.dial("?access_token="+bobKey, nil)
	carol := e.dial("?access_token="+carolKey, nil)
	all := []*client{anon, alice, bob, carol}
	for _, c := range all {
		c.filter(`{"field":"/uri","value":"https://example.com/page"}`)
	}
	// World-readable: everyone, anonymous included.
	e.post("create", annotation("world-0000000000000000"), nil)
	for _, c := range all {
		c.expect("world-0000000000000000")
	}
	// Private: only the author.
	e.post("create", annotation("private-00000000000000", func(a map[string]any) {
		a["permissions"] = map[string]any{"read": []string{"acct:alice@localhost"}}
		a["moderation_status"] = nil
	}), nil)
	alice.expect("private-00000000000000")
	e.expectNothing(all...)
	// Group-readable: the members supplied with the event.
	e.post("create", annotation("group-0000000000000000", func(a map[string]any) {
		a["group"] = "g1"
		a["permissions"] = map[string]any{"read": []string{"group:g1"}}
	}), map[string]any{"group_members": []string{"acct:alice@localhost", "acct:bob@localhost"}})
	alice.expect("group-0000000000000000")
	bob.expect("group-0000000000000000")
	e.expectNothing(all...)
	// Hidden (shared, not APPROVED): the author and the moderators only.
	e.post("update", annotation("hidden-000000000000000", func(a map[string]any) {
		a["group"] = "g1"
		a["permissions"] = map[string]any{"read": []string{"group:g1"}}
		a["moderation_status"] = "DENIED"
	}), map[string]any{"group_members": []string{"acct:alice@localhost", "acct:bob@localhost", "acct:carol@localhost"},
		"moderators": []string{"acct:carol@localhost"}})
	alice.expect("hidden-000000000000000")
	carol.expect("hidden-000000000000000")
	e.expectNothing(all...)
	// Hidden in the world group too.
	e.post("update", annotation("hidden-world-000000000", func(a map[string]any) { a["moderation_status"] = "PENDING" }), nil)
	alice.expect("hidden-world-000000000")
	e.expectNothing(all...)
	// NIPSA: among authenticated sockets only the author; anonymous sockets
	// are judged by visibility, as in h.
	e.post("create", annotation("nipsa-0000000000000000"), map[string]any{"nipsa": true})
	anon.expect("nipsa-0000000000000000")
	alice.expect("nipsa-0000000000000000")
	e.expectNothing(all...)
}

func TestEchoSuppression(t *testing.T) {
	e := newEnv(t)
	same := e.dial("", nil)
	other := e.dial("", nil)
	unset := e.dial("", nil)
	same.send(`{"messageType":"client_id","value":"aaaa"}`)
	other.send(`{"type":"client_id","value":"bbbb"}`)
	for _, c := range []*client{same, other, unset} {
		c.filter(`{"field":"/group","value":"__world__"}`)
	}
	e.post("create", annotation("echo-00000000000000000"), map[string]any{"src_client_id": "aaaa"})
	other.expect("echo-00000000000000000")
	unset.expect("echo-00000000000000000")
	e.expectNothing(same, other, unset)
	// No src_client_id: everyone, also the sockets without a client id.
	e.post("create", annotation("noecho-000000000000000"), nil)
	for _, c := range []*client{same, other, unset} {
		c.expect("noecho-000000000000000")
	}
	// A client id cleared by a non-string value.
	same.send(`{"type":"client_id","value":5}`)
	e.post("create", annotation("echo-11111111111111111"), map[string]any{"src_client_id": "aaaa"})
	same.expect("echo-11111111111111111")
}

func TestDeleteAndFrame(t *testing.T) {
	e := newEnv(t)
	c := e.dial("", nil)
	c.filter(`{"field":"/uri","value":"https://example.com/page"}`)
	e.post("delete", annotation("deleted-00000000000000"), nil)
	if got := c.read(); got != `{"type":"annotation-notification","options":{"action":"delete"},"payload":[{"id":"deleted-00000000000000"}]}` {
		t.Fatalf("delete frame: %s", got)
	}
	e.post("create", annotation("created-00000000000000"), nil)
	got := c.read()
	if !strings.HasPrefix(got, `{"type":"annotation-notification","options":{"action":"create"},"payload":[{`) ||
		!strings.Contains(got, `"text":"Nice <b>&</b> café"`) {
		t.Fatalf("create frame: %s", got)
	}
}

func TestTwoLoops(t *testing.T) {
	e := newEnv(t)
	k1, _ := e.key("one")
	k2, _ := e.key("two")
	c1 := e.dial("?access_token="+k1, nil)
	c2 := e.dial("?access_token="+k2, nil)
	c1.filter(`{"field":"/id","value":"both-00000000000000000"}`)
	c2.filter(`{"field":"/id","value":"both-00000000000000000"}`)
	// One session per shard: the two sockets are on different loops.
	counts := make(chan int, 2)
	e.hub.EachShard(func(sh *session.Shard) { counts <- sh.Len() })
	if a, b := <-counts, <-counts; a != 1 || b != 1 {
		t.Fatalf("sessions per shard: %d, %d", a, b)
	}
	e.post("create", annotation("both-00000000000000000"), nil)
	c1.expect("both-00000000000000000")
	c2.expect("both-00000000000000000")
}

func TestRevocationCloses3004(t *testing.T) {
	e := newEnv(t)
	key, claims := e.key("alice")
	c := e.dial("?access_token="+key, nil)
	anon := e.dial("", nil)
	c.sync()
	anon.sync()
	if err := e.revoker.RevokeKey(context.Background(), claims); err != nil {
		t.Fatal(err)
	}
	set := e.revoker.Set()
	e.hub.EachShard(func(sh *session.Shard) {
		sh.Each(func(s *session.Session) {
			if set.Check(s.Claims) {
				s.Sink.Close(3004, "access key revoked")
			}
		})
	})
	c.expectClose(3004, "access key revoked")
	anon.sync() // untouched
	// Reconnecting with the revoked key gives an anonymous socket.
	if got := whoami(e.dial("?access_token="+key, nil)); got != `{"type":"whoyouare","userid":null,"ok":true,"reply_to":1}` {
		t.Fatalf("revoked reconnect: %s", got)
	}
}

func TestVersions(t *testing.T) {
	e := newEnv(t)
	v2 := e.dial("", nil)
	v2.filter(`{"field":"/uri","value":"https://example.com/page:v2"}`)
	plain := e.dial("", nil)
	plain.filter(`{"field":"/uri","value":"https://example.com/page:v0"}`)
	e.post("create", annotation("versioned-000000000000", func(a map[string]any) { a["version"] = 2 }), nil)
	v2.expect("versioned-000000000000")
	e.expectNothing(v2, plain)
	e.post("create", annotation("unversioned-0000000000"), nil)
	plain.expect("unversioned-0000000000")
	e.expectNothing(v2, plain)
}

func TestEventValidation(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{
		``,
		`[]`,
		`{"action":"destroy","annotation":{"id":"x"}}`,
		`{"annotation":{"id":"x"}}`,
		`{"action":"create"}`,
		`{"action":"create","annotation":[]}`,
		`{"action":"create","annotation":"x"}`,
		`{"action":"create","annotation":{}}`,
		`{"action":"create","annotation":{"id":5}}`,
		`{"action":"create","annotation":{"id":""}}`,
		`{"action":"create","annotation":{"id":"x","uri":5}}`,
		`{"action":"create","annotation":{"id":"x","group":[]}}`,
		`{"action":"create","annotation":{"id":"x","references":"y"}}`,
		`{"action":"create","annotation":{"id":"x","permissions":{"read":"group:__world__"}}}`,
		`{"action":"create","annotation":{"id":"x","version":"1"}}`,
		`{"action":"create","annotation":{"id":"x"},"src_client_id":5}`,
		`{"action":"create","annotation":{"id":"x"},"nipsa":"yes"}`,
		`{"action":"create","annotation":{"id":"x"},"wibble":1}`,
		`{"action":"create","annotation":{"id":"x"}} {}`,
	} {
		status, resp := e.postRaw(body)
		if status != 400 || !strings.HasPrefix(resp, `{"error":`) {
			t.Errorf("%s: %d %s", body, status, resp)
		}
	}
	if status, resp := e.postRaw(`{"action":"delete","annotation":{"id":"x"},"src_client_id":null}`); status != 202 || resp != `{"ok":true}` {
		t.Errorf("minimal delete: %d %s", status, resp)
	}
}
