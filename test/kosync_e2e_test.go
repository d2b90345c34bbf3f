package test

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// End-to-end tests of the KOsync WebSocket API and the HTTP endpoints it
// depends on (kosync/REFERENCE.md, Part B and Part C), against real nodes.
// Helpers are prefixed ks to stay clear of the other files of the package.

// ---- helpers ----

// ksMD5 is the KOReader key of a password: lowercase hex MD5.
func ksMD5(password string) string {
	sum := md5.Sum([]byte(password))
	return hex.EncodeToString(sum[:])
}

// ksBase is the plain-HTTP base URL of n's main listener.
func ksBase(n *node.Node) string { return "http://" + n.Addr().String() }

// ksHTTP never follows redirects (GET /api/ws answers 303).
var ksHTTP = &http.Client{
	Timeout:       waitFor,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// ksResp is an HTTP answer.
type ksResp struct {
	status int
	body   []byte
	header http.Header
}

// ksDo makes an HTTP request as KOReader does: Accept header, and the auth
// headers when user is not empty. extra adds headers ("Name: value").
func ksDo(t testing.TB, method, url, user, key, body string, extra ...string) ksResp {
	t.Helper()
	headers := []string{"Accept: application/vnd.koreader.v1+json"}
	if user != "" {
		headers = append(headers, "x-auth-user: "+user, "x-auth-key: "+key)
	}
	return kwDo(t, method, url, body, append(headers, extra...)...)
}

// ksWantJSON checks a JSON answer: status, Content-Type application/json and
// a body JSON-equal to want.
func ksWantJSON(t testing.TB, what string, r ksResp, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d %s, want %d %s", what, r.status, r.body, status, want)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s: Content-Type %q, want application/json (body %s)", what, ct, r.body)
	}
	if !ksJSONEqual(r.body, []byte(want)) {
		t.Fatalf("%s: body %s, want %s", what, r.body, want)
	}
}

// ksJSONEqual compares two JSON texts as values (key order ignored).
func ksJSONEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// ksJSON marshals v (test-built values only).
func ksJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// ksKeys returns the keys of a JSON object in the order they appear.
func ksKeys(t testing.TB, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%s is not a JSON object", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
	}
	return keys
}

// ksRegister creates user with password and returns the KOReader key.
func ksRegister(t testing.TB, base, user, password string) string {
	t.Helper()
	key := ksMD5(password)
	r := ksDo(t, http.MethodPost, base+"/users/create", "", "", ksJSON(map[string]string{"username": user, "password": key}))
	ksWantJSON(t, "POST /users/create "+user, r, http.StatusCreated, ksJSON(map[string]string{"username": user}))
	return key
}

// ksJWT fetches a JWT with the KOReader headers: 200 text/plain, the raw
// token without quotes or newline.
func ksJWT(t testing.TB, base, user, key string) string {
	t.Helper()
	r := ksDo(t, http.MethodGet, base+"/api/auth.jwt", user, key, "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /api/auth.jwt as %s: %d %s", user, r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /api/auth.jwt: Content-Type %q, want text/plain", ct)
	}
	tok := string(r.body)
	if tok == "" || strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") != "" {
		t.Fatalf("GET /api/auth.jwt body %q: want a bare token of URL-safe characters", tok)
	}
	return tok
}

// ksPush is a KOReader PUT /syncs/progress; it checks 200
// {"document","timestamp"} and returns the timestamp.
func ksPush(t testing.TB, base, user, key string, body map[string]any) int64 {
	t.Helper()
	r := ksDo(t, http.MethodPut, base+"/syncs/progress", user, key, ksJSON(body))
	if r.status != http.StatusOK {
		t.Fatalf("PUT /syncs/progress %v: %d %s", body, r.status, r.body)
	}
	var ans map[string]any
	if err := json.Unmarshal(r.body, &ans); err != nil || len(ans) != 2 || ans["document"] != body["document"] {
		t.Fatalf("PUT /syncs/progress answered %s, want {\"document\":%q,\"timestamp\":t}", r.body, body["document"])
	}
	ts, ok := ans["timestamp"].(float64)
	if !ok || ts != float64(int64(ts)) {
		t.Fatalf("PUT /syncs/progress timestamp %v: want integer Unix seconds", ans["timestamp"])
	}
	return int64(ts)
}

// ksDialOpts upgrades to /api/ws/<tok> with opts; it returns the connection
// without reading anything.
func ksDialOpts(t testing.TB, addr, tok string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(testCtx(t), "ws://"+addr+"/api/ws/"+tok, opts)
	if err != nil {
		t.Fatalf("dial /api/ws/{token}: %v", err)
	}
	c.SetReadLimit(1 << 22)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// ksDial upgrades with a valid token and checks the hello.
func ksDial(t testing.TB, addr, tok string) *websocket.Conn {
	t.Helper()
	c := ksDialOpts(t, addr, tok, nil)
	ksCheckHello(t, ksRead(t, c))
	return c
}

// ksCheckHello checks the hello (B.4): payload with exactly server_name
// "KOsync", a string server_version and the message verbatim.
func ksCheckHello(t testing.TB, msg []byte) {
	t.Helper()
	if k := ksKeys(t, msg); len(k) != 2 {
		t.Fatalf("hello %s: keys %v, want exactly type and payload", msg, k)
	}
	var f struct {
		Type    string                     `json:"type"`
		Payload map[string]json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(msg, &f); err != nil || f.Type != "rpc" {
		t.Fatalf("hello %s: want type rpc and an object payload (%v)", msg, err)
	}
	keys := make([]string, 0, len(f.Payload))
	for k := range f.Payload {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, []string{"message", "server_name", "server_version"}) {
		t.Fatalf("hello %s: payload keys %v, want exactly server_name, server_version, message", msg, keys)
	}
	var name, version, text string
	if json.Unmarshal(f.Payload["server_name"], &name) != nil || name != "KOsync" {
		t.Fatalf("hello %s: server_name must be \"KOsync\"", msg)
	}
	if json.Unmarshal(f.Payload["server_version"], &version) != nil || version == "" {
		t.Fatalf("hello %s: server_version must be a non-empty string", msg)
	}
	if json.Unmarshal(f.Payload["message"], &text) != nil || text != "KOsync WebSocket API. Hello!" {
		t.Fatalf("hello %s: message must be \"KOsync WebSocket API. Hello!\"", msg)
	}
}

// ksRead reads one message, which must be a text frame.
func ksRead(t testing.TB, c *websocket.Conn) []byte {
	t.Helper()
	typ, msg, err := c.Read(testCtx(t))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a %v message %q, want text", typ, msg)
	}
	return msg
}

// ksSend writes one text message.
func ksSend(t testing.TB, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(testCtx(t), websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %s: %v", msg, err)
	}
}

// ksWant reads one message and checks it is JSON-equal to want.
func ksWant(t testing.TB, c *websocket.Conn, what, want string) []byte {
	t.Helper()
	got := ksRead(t, c)
	if !ksJSONEqual(got, []byte(want)) {
		t.Fatalf("%s: got %s\nwant %s", what, got, want)
	}
	return got
}

// ksRPCErr is the frame of an RPC error reply.
func ksRPCErr(forRPC, text string) string {
	return ksJSON(map[string]any{"type": "rpc", "payload": map[string]any{"for_rpc": forRPC, "result": nil, "error": text}})
}

// ksRPCOK is the frame of an RPC success reply; result is JSON text.
func ksRPCOK(forRPC, result string) string {
	return `{"type":"rpc","payload":{"for_rpc":` + ksJSON(forRPC) + `,"result":` + result + `,"error":""}}`
}

// ksAnnounce is the frame announcing a document (JSON text).
func ksAnnounce(doc string) string {
	return `{"type":"pubsub","payload":{"for_topic":"user.documents","data":` + doc + `}}`
}

const (
	ksSubscribeMsg  = `{"type":"pubsub","payload":{"topic":"user.documents"}}`
	ksSubscribedMsg = `{"type":"pubsub","payload":{"for_topic":"user.documents","data":"subscribed"}}`
	ksAllMsg        = `{"type":"rpc","payload":{"method":"documents.all"}}`
	ksBadToken      = `{"type":"rpc","payload":{"for_rpc":"connect","result":null,"error":"Your access token is invalid. Make sure it is supplied like this: /api/ws/{token}"}}`
)

// ksDocKeys is the key order of a document in the API shape (B.8).
var ksDocKeys = []string{"id", "progress", "percentage", "device", "device_id", "document", "timestamp", "pretty_name", "history"}

// ksDoc is a document in the API shape, as JSON text; history is JSON text
// ("null", "[]", ...).
func ksDoc(id, progress string, pct float64, device, deviceID string, ts int64, pretty, history string) string {
	return fmt.Sprintf(`{"id":%s,"progress":%s,"percentage":%s,"device":%s,"device_id":%s,"document":%s,"timestamp":%d,"pretty_name":%s,"history":%s}`,
		ksJSON(id), ksJSON(progress), ksJSON(pct), ksJSON(device), ksJSON(deviceID), ksJSON(id), ts, ksJSON(pretty), history)
}

// ksHist is one history entry as JSON text.
func ksHist(id, progress string, pct float64, device, deviceID string, ts int64, pretty string) string {
	return ksJSON(map[string]any{"progress": progress, "percentage": pct, "device": device, "device_id": deviceID,
		"document": id, "timestamp": ts, "pretty_name": pretty})
}

// p0 returns the raw payload of a frame.
func ksRawPayload(t testing.TB, msg []byte) json.RawMessage {
	t.Helper()
	var f struct {
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(msg, &f); err != nil {
		t.Fatalf("frame %s: %v", msg, err)
	}
	return f.Payload
}

// ksPayload splits a frame into its type and payload object.
func ksPayload(t testing.TB, msg []byte) (string, map[string]json.RawMessage) {
	t.Helper()
	var f struct {
		Type    string                     `json:"type"`
		Payload map[string]json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(msg, &f); err != nil {
		t.Fatalf("frame %s: %v", msg, err)
	}
	return f.Type, f.Payload
}

// ksWantAnnounce reads an announce, checks it equals want (the document as
// JSON text) and that data has the API key order.
func ksWantAnnounce(t testing.TB, c *websocket.Conn, what, wantDoc string) {
	t.Helper()
	msg := ksWant(t, c, what, ksAnnounce(wantDoc))
	_, p := ksPayload(t, msg)
	if k := ksKeys(t, p["data"]); !reflect.DeepEqual(k, ksDocKeys) {
		t.Fatalf("%s: announced document keys %v, want in order %v", what, k, ksDocKeys)
	}
}

// ksRPC sends a request and returns the raw reply, checking it is an RPC
// reply for forRPC without error, and returns the result.
func ksRPC(t testing.TB, c *websocket.Conn, forRPC, req string) json.RawMessage {
	t.Helper()
	ksSend(t, c, req)
	return ksResult(t, c, forRPC)
}

// ksResult reads an RPC success reply for forRPC and returns its result.
func ksResult(t testing.TB, c *websocket.Conn, forRPC string) json.RawMessage {
	t.Helper()
	msg := ksRead(t, c)
	typ, p := ksPayload(t, msg)
	var f, e string
	if typ != "rpc" || len(p) != 3 || json.Unmarshal(p["for_rpc"], &f) != nil || f != forRPC ||
		json.Unmarshal(p["error"], &e) != nil || e != "" || p["result"] == nil {
		t.Fatalf("got %s, want the %s reply {for_rpc, result, error:\"\"}", msg, forRPC)
	}
	return p["result"]
}

// ksAll runs documents.all and returns the result; it must be a JSON array.
func ksAll(t testing.TB, c *websocket.Conn) json.RawMessage {
	t.Helper()
	res := ksRPC(t, c, "documents.all", ksAllMsg)
	if !bytes.HasPrefix(bytes.TrimSpace(res), []byte("[")) {
		t.Fatalf("documents.all result %s, want an array", res)
	}
	return res
}

// ksUpdateMsg is a documents.update request for doc (JSON text).
func ksUpdateMsg(doc string) string {
	return `{"type":"rpc","payload":{"method":"documents.update","arguments":{"document":` + doc + `}}}`
}

// ksUpdate runs documents.update and returns the result document, checking
// its key order and that history is null.
func ksUpdate(t testing.TB, c *websocket.Conn, doc string) map[string]any {
	t.Helper()
	res := ksRPC(t, c, "documents.update", ksUpdateMsg(doc))
	if k := ksKeys(t, res); !reflect.DeepEqual(k, ksDocKeys) {
		t.Fatalf("documents.update result %s: keys %v, want in order %v", res, k, ksDocKeys)
	}
	var m map[string]any
	_ = json.Unmarshal(res, &m)
	if h, ok := m["history"]; !ok || h != nil {
		t.Fatalf("documents.update result %s: history must be null", res)
	}
	return m
}

// ksUpdateSub runs documents.update on a subscribed socket: the reply
// (checked as ksUpdate does) and then the announce of the same document
// (B.6: reply first; C.6: the reply equals the announce). A wrong order is
// reported (Errorf) and the test goes on.
func ksUpdateSub(t testing.TB, c *websocket.Conn, doc string) map[string]any {
	t.Helper()
	ksSend(t, c, ksUpdateMsg(doc))
	first, second := ksRead(t, c), ksRead(t, c)
	if typ, _ := ksPayload(t, first); typ == "pubsub" {
		t.Errorf("BUG: documents.update %s: the announce came before the reply (B.6: reply first, then the announce)", doc)
		first, second = second, first
	}
	typ, p := ksPayload(t, first)
	var f, e string
	if typ != "rpc" || len(p) != 3 || json.Unmarshal(p["for_rpc"], &f) != nil || f != "documents.update" ||
		json.Unmarshal(p["error"], &e) != nil || e != "" {
		t.Fatalf("documents.update %s: got %s, want its reply", doc, first)
	}
	res := p["result"]
	if k := ksKeys(t, res); !reflect.DeepEqual(k, ksDocKeys) {
		t.Fatalf("documents.update result %s: keys %v, want in order %v", res, k, ksDocKeys)
	}
	if !ksJSONEqual(second, []byte(ksAnnounce(string(res)))) {
		t.Fatalf("documents.update %s: announce %s, want the reply's document %s", doc, second, res)
	}
	_, ap := ksPayload(t, second)
	if k := ksKeys(t, ap["data"]); !reflect.DeepEqual(k, ksDocKeys) {
		t.Fatalf("announce %s: keys %v, want in order %v", second, k, ksDocKeys)
	}
	var m map[string]any
	_ = json.Unmarshal(res, &m)
	if h, ok := m["history"]; !ok || h != nil {
		t.Fatalf("documents.update result %s: history must be null", res)
	}
	return m
}

// ksSubscribe subscribes to user.documents and checks the exact answer.
func ksSubscribe(t testing.TB, c *websocket.Conn) {
	t.Helper()
	ksSend(t, c, ksSubscribeMsg)
	ksWant(t, c, "subscribe", ksSubscribedMsg)
}

// ksWantBadToken expects the B.4 error frame, then close 3001.
func ksWantBadToken(t testing.TB, c *websocket.Conn, what string) {
	t.Helper()
	ksWant(t, c, what, ksBadToken)
	ksWantClose(t, c, what, websocket.StatusCode(packet.CloseUnauthorized))
}

// ksWantClose reads until the connection ends and checks the close code;
// no other message may come first.
func ksWantClose(t testing.TB, c *websocket.Conn, what string, code websocket.StatusCode) {
	t.Helper()
	_, msg, err := c.Read(testCtx(t))
	if err == nil {
		t.Fatalf("%s: got message %s, want close %d", what, msg, code)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: connection ended without a close frame (want %d): %v", what, code, err)
	}
	if ce.Code != code {
		t.Fatalf("%s: closed with %d %q, want %d", what, ce.Code, ce.Reason, code)
	}
}

// ksAround checks ts is the server's clock in Unix seconds around the
// moment between before and after (same machine; one second of slack).
func ksAround(t testing.TB, what string, ts int64, before, after time.Time) {
	t.Helper()
	if ts < before.Unix()-1 || ts > after.Unix()+1 {
		t.Fatalf("%s: timestamp %d, want the server clock in Unix seconds (%d..%d)", what, ts, before.Unix(), after.Unix())
	}
}

// ksFlip changes the character of s at i to another base64url character.
func ksFlip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// ksNum returns m[k] as an int64 (JSON number).
func ksNum(t testing.TB, m map[string]any, k string) int64 {
	t.Helper()
	f, ok := m[k].(float64)
	if !ok || f != float64(int64(f)) {
		t.Fatalf("%v: %s is not an integer", m, k)
	}
	return int64(f)
}

// ---- tests ----

// TestKosyncHello: a valid token gets the hello as its first message (B.4),
// a text frame whose payload has exactly server_name, server_version,
// message: no for_rpc, result or error. The token from /api/auth.jwt works as
// a Bearer token on GET /api/documents.all ([] for a new user).
func TestKosyncHello(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base := ksBase(n)
	key := ksRegister(t, base, "alice", "secret")
	tok := ksJWT(t, base, "alice", key)
	c := ksDialOpts(t, n.Addr().String(), tok, nil)
	msg := ksRead(t, c)
	ksCheckHello(t, msg)
	_, p := ksPayload(t, msg)
	for _, k := range []string{"for_rpc", "result", "error"} {
		if _, ok := p[k]; ok {
			t.Fatalf("hello %s has %q", msg, k)
		}
	}
	// Key order as the reference shows it (B.4) and as every other frame
	// of the gateway has it: type first; server_name, server_version,
	// message. Not a semantic difference, hence Errorf.
	if k := ksKeys(t, msg); !reflect.DeepEqual(k, []string{"type", "payload"}) {
		t.Errorf("hello %s: top-level key order %v, want [type payload] as in reference B.4", msg, k)
	}
	if k := ksKeys(t, ksRawPayload(t, msg)); !reflect.DeepEqual(k, []string{"server_name", "server_version", "message"}) {
		t.Errorf("hello %s: payload key order %v, want [server_name server_version message] as in reference B.4", msg, k)
	}
	// Nothing else follows the hello on its own: the next message is the
	// reply to our request.
	if res := ksAll(t, c); string(bytes.TrimSpace(res)) != "[]" {
		t.Fatalf("documents.all of a new user = %s, want []", res)
	}
	// The token works as a Bearer token too.
	r := ksDo(t, http.MethodGet, base+"/api/documents.all", "", "", "", "Authorization: Bearer "+tok)
	ksWantJSON(t, "GET /api/documents.all (Bearer)", r, http.StatusOK, `[]`)
	// A token issued by the service itself is as good.
	issued, err := n.Kosync.IssueJWT("alice")
	if err != nil {
		t.Fatal(err)
	}
	ksDial(t, n.Addr().String(), issued)
}

// TestKosyncAnnounce: subscribing answers exactly "subscribed"; a KOReader
// push by alice is announced, whole document in API shape (key order,
// history null, the push's timestamp), to both of alice's subscribed
// sockets, not to her unsubscribed one, and not to bob's. PUT
// /api/documents.update (Bearer, 204) is announced too.
func TestKosyncAnnounce(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	aKey := ksRegister(t, base, "alice", "alice-pw")
	bKey := ksRegister(t, base, "bob", "bob-pw")
	aTok, bTok := ksJWT(t, base, "alice", aKey), ksJWT(t, base, "bob", bKey)

	a1, a2, a3 := ksDial(t, addr, aTok), ksDial(t, addr, aTok), ksDial(t, addr, aTok)
	b1 := ksDial(t, addr, bTok)
	ksSubscribe(t, a1)
	ksSubscribe(t, a2)
	ksSubscribe(t, b1)
	// Subscribing again is idempotent: "subscribed" again, one subscription
	// (checked below: a2 gets each announce once).
	ksSubscribe(t, a2)

	ts := ksPush(t, base, "alice", aKey, map[string]any{
		"document": "doc1", "progress": "/body/DocFragment[3]", "percentage": 0.32, "device": "my kpw", "device_id": "DEV1",
		"metadata": map[string]any{"title": "ignored"},
	})
	want := ksDoc("doc1", "/body/DocFragment[3]", 0.32, "my kpw", "DEV1", ts, "", "null")
	ksWantAnnounce(t, a1, "alice's first socket", want)
	ksWantAnnounce(t, a2, "alice's second socket", want)

	// Bob's push is the marker: bob's next message is his own announce,
	// not alice's.
	bts := ksPush(t, base, "bob", bKey, map[string]any{
		"document": "doc1", "progress": "7", "percentage": 0.5, "device": "bob's kobo",
	})
	ksWantAnnounce(t, b1, "bob's socket (alice's push must not reach it)", ksDoc("doc1", "7", 0.5, "bob's kobo", "", bts, "", "null"))

	// The unsubscribed socket got nothing: its next message is the reply.
	res := ksAll(t, a3)
	if !ksJSONEqual(res, []byte(`[`+ksDoc("doc1", "/body/DocFragment[3]", 0.32, "my kpw", "DEV1", ts, "", "[]")+`]`)) {
		t.Fatalf("alice's documents.all = %s", res)
	}

	// A push without device_id keeps the stored one (A.3); announce in
	// API shape again.
	ts2 := ksPush(t, base, "alice", aKey, map[string]any{
		"document": "doc1", "progress": "12", "percentage": "0.4", "device": "my kpw",
	})
	want2 := ksDoc("doc1", "12", 0.4, "my kpw", "DEV1", ts2, "", "null")
	ksWantAnnounce(t, a1, "second push, first socket", want2)
	ksWantAnnounce(t, a2, "second push, second socket", want2)

	// PUT /api/documents.update with the Bearer token: 204, announced.
	r := ksDo(t, http.MethodPut, base+"/api/documents.update", "", "",
		`{"document":"doc1","pretty_name":"A Book"}`, "Authorization: Bearer "+aTok, "Content-Type: application/json")
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("PUT /api/documents.update: %d %q, want 204 with an empty body", r.status, r.body)
	}
	want3 := ksDoc("doc1", "12", 0.4, "my kpw", "DEV1", ts2, "A Book", "null")
	ksWantAnnounce(t, a1, "rename, first socket", want3)
	ksWantAnnounce(t, a2, "rename, second socket (one subscription only)", want3)

	// Still nothing for bob and the unsubscribed socket.
	if res := ksAll(t, b1); !ksJSONEqual(res, []byte(`[`+ksDoc("doc1", "7", 0.5, "bob's kobo", "", bts, "", "[]")+`]`)) {
		t.Fatalf("bob's documents.all = %s", res)
	}
	ksAll(t, a3)
	// And no duplicate announce queued on a2.
	ksAll(t, a2)
}

// TestKosyncRPC: documents.all and documents.update (B.6, B.8): [] for a new
// user; update returns the stored document with history null and the
// server's timestamp, then the announce follows the reply; owner_id is
// ignored; pretty_name survives KOReader pushes; history is oldest first;
// documents.all is newest first; KOReader's GET returns only stored keys.
func TestKosyncRPC(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	aKey := ksRegister(t, base, "alice", "alice-pw")
	bKey := ksRegister(t, base, "bob", "bob-pw")
	c := ksDial(t, addr, ksJWT(t, base, "alice", aKey))
	bob := ksDial(t, addr, ksJWT(t, base, "bob", bKey))

	if res := ksAll(t, c); string(bytes.TrimSpace(res)) != "[]" {
		t.Fatalf("documents.all of a new user = %s, want []", res)
	}
	ksSubscribe(t, c)

	before := time.Now()
	got := ksUpdateSub(t, c, `{"document":"d1","progress":"p","percentage":0.5,"device":"web","pretty_name":"Book","owner_id":"bob","timestamp":12345,"history":[]}`)
	after := time.Now()
	ts := ksNum(t, got, "timestamp")
	ksAround(t, "documents.update", ts, before, after)
	want := ksDoc("d1", "p", 0.5, "web", "", ts, "Book", "null")
	if !ksJSONEqual([]byte(ksJSON(got)), []byte(want)) {
		t.Fatalf("documents.update result %v, want %s", ksJSON(got), want)
	}

	// owner_id never wrote into bob's documents.
	if res := ksAll(t, bob); string(bytes.TrimSpace(res)) != "[]" {
		t.Fatalf("bob's documents.all = %s, want [] (owner_id must be ignored)", res)
	}
	ksWantJSON(t, "bob GET /syncs/progress/d1", ksDo(t, http.MethodGet, base+"/syncs/progress/d1", "bob", bKey, ""), http.StatusOK, `{}`)

	// A KOReader push keeps the pretty_name; the previous state goes to
	// the history.
	ts2 := ksPush(t, base, "alice", aKey, map[string]any{"document": "d1", "progress": "q", "percentage": 0.6, "device": "kpw"})
	ksWantAnnounce(t, c, "announce of the push", ksDoc("d1", "q", 0.6, "kpw", "", ts2, "Book", "null"))
	// KOReader's GET: only the stored keys (no device_id: never stored; no
	// pretty_name, no history).
	ksWantJSON(t, "GET /syncs/progress/d1", ksDo(t, http.MethodGet, base+"/syncs/progress/d1", "alice", aKey, ""), http.StatusOK,
		ksJSON(map[string]any{"document": "d1", "percentage": 0.6, "progress": "q", "device": "kpw", "timestamp": ts2}))

	// A rename alone: no history entry, timestamp unchanged. Given by "id".
	got = ksUpdateSub(t, c, `{"id":"d1","pretty_name":"Better Book"}`)
	want = ksDoc("d1", "q", 0.6, "kpw", "", ts2, "Better Book", "null")
	if !ksJSONEqual([]byte(ksJSON(got)), []byte(want)) {
		t.Fatalf("rename result %v, want %s", ksJSON(got), want)
	}
	// An empty pretty_name keeps the stored one; only present fields are
	// written (device stays).
	got = ksUpdateSub(t, c, `{"document":"d1","id":"d1","progress":"r","pretty_name":""}`)
	ts3 := ksNum(t, got, "timestamp")
	want = ksDoc("d1", "r", 0.6, "kpw", "", ts3, "Better Book", "null")
	if !ksJSONEqual([]byte(ksJSON(got)), []byte(want)) {
		t.Fatalf("partial update result %v, want %s", ksJSON(got), want)
	}

	// History: oldest first, seven keys each.
	res := ksAll(t, c)
	hist := "[" + ksHist("d1", "p", 0.5, "web", "", ts, "Book") + "," + ksHist("d1", "q", 0.6, "kpw", "", ts2, "Better Book") + "]"
	wantAll := "[" + ksDoc("d1", "r", 0.6, "kpw", "", ts3, "Better Book", hist) + "]"
	if !ksJSONEqual(res, []byte(wantAll)) {
		t.Fatalf("documents.all = %s\nwant %s", res, wantAll)
	}
	var docs []json.RawMessage
	_ = json.Unmarshal(res, &docs)
	if k := ksKeys(t, docs[0]); !reflect.DeepEqual(k, ksDocKeys) {
		t.Fatalf("documents.all document keys %v, want in order %v", k, ksDocKeys)
	}

	// Newest first, not by id: "zz" written in a later second than "aa".
	ksUpdateSub(t, c, `{"document":"aa","progress":"1","percentage":0.1,"device":"web"}`)
	time.Sleep(time.Until(time.Unix(time.Now().Unix()+1, 50e6)))
	ksUpdateSub(t, c, `{"document":"zz","progress":"1","percentage":0.1,"device":"web"}`)
	var list []map[string]any
	if err := json.Unmarshal(ksAll(t, c), &list); err != nil || len(list) != 3 {
		t.Fatalf("documents.all: %v %v", list, err)
	}
	ids := []any{list[0]["id"], list[1]["id"], list[2]["id"]}
	// zz is a second newer than aa; aa is not older than d1 and wins a tie
	// by id.
	if !reflect.DeepEqual(ids, []any{"zz", "aa", "d1"}) || ksNum(t, list[0], "timestamp") <= ksNum(t, list[1], "timestamp") {
		t.Fatalf("documents.all order %v (timestamps %v %v %v), want newest first", ids,
			list[0]["timestamp"], list[1]["timestamp"], list[2]["timestamp"])
	}
	// A name-only record: KOReader's GET answers {}.
	ksUpdateSub(t, c, `{"document":"nameonly","pretty_name":"Just a name"}`)
	ksWantJSON(t, "GET of a name-only record", ksDo(t, http.MethodGet, base+"/syncs/progress/nameonly", "alice", aKey, ""), http.StatusOK, `{}`)
}

// TestKosyncErrors: every error row of B.6 gets its exact reply and the
// connection stays usable (a documents.all after each gets its reply); an
// unknown topic creates no subscription; binary frames are accepted.
func TestKosyncErrors(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	key := ksRegister(t, base, "alice", "alice-pw")
	c := ksDial(t, addr, ksJWT(t, base, "alice", key))

	const (
		noObject   = "Invalid message: expected a JSON object"
		badType    = "Invalid message: 'type' must be a string"
		badPayload = "Invalid message: 'payload' must be an object"
		badMethod  = "Invalid RPC call: 'method' must be a string"
		badArgs    = "Invalid RPC call: 'arguments' must be an object"
		noDocArg   = "RPC call is missing the argument 'document'"
		docNotObj  = "Invalid argument 'document': expected an object"
		badID      = "Invalid argument 'document': missing or conflicting document id"
		badTopic   = "Invalid PubSub request: 'topic' must be a string"
		du         = "documents.update"
	)
	upd := func(args string) string {
		return `{"type":"rpc","payload":{"method":"documents.update","arguments":` + args + `}}`
	}
	wrongType := func(f string) string { return "Invalid argument 'document': field '" + f + "' has the wrong type" }
	// A percentage string that is not a number is refused (A.3 types);
	// the exact text is not fixed by the reference, only its prefix.
	ksSend(t, c, upd(`{"document":{"document":"d1","percentage":"half"}}`))
	{
		_, p := ksPayload(t, ksRead(t, c))
		var f, e string
		_ = json.Unmarshal(p["for_rpc"], &f)
		_ = json.Unmarshal(p["error"], &e)
		if f != du || string(p["result"]) != "null" || !strings.HasPrefix(e, "Invalid argument 'document': ") {
			t.Fatalf("percentage \"half\": got for_rpc %q result %s error %q, want a documents.update error", f, p["result"], e)
		}
	}
	ksAll(t, c)
	for _, row := range []struct{ name, msg, forRPC, err string }{
		{"not JSON", `not json`, "", noObject},
		{"truncated JSON", `{"type":"rpc"`, "", noObject},
		{"JSON array", `[{"type":"rpc"}]`, "", noObject},
		{"JSON string", `"rpc"`, "", noObject},
		{"JSON null", `null`, "", noObject},
		{"type missing", `{"payload":{"method":"documents.all"}}`, "", badType},
		{"type 5", `{"type":5,"payload":{"method":"documents.all"}}`, "", badType},
		{"type null", `{"type":null,"payload":{"method":"documents.all"}}`, "", badType},
		{"type foo", `{"type":"foo","payload":{}}`, "", "Unknown message type: 'foo'"},
		{"rpc payload string", `{"type":"rpc","payload":"documents.all"}`, "", badPayload},
		{"rpc payload array", `{"type":"rpc","payload":[]}`, "", badPayload},
		{"rpc payload null", `{"type":"rpc","payload":null}`, "", badPayload},
		// C.2: no payload must not reuse the previous message's payload
		// (the documents.all sent after the previous row).
		{"rpc payload missing", `{"type":"rpc"}`, "", badPayload},
		{"method missing", `{"type":"rpc","payload":{"arguments":{}}}`, "", badMethod},
		{"method 7", `{"type":"rpc","payload":{"method":7}}`, "", badMethod},
		{"method null", `{"type":"rpc","payload":{"method":null}}`, "", badMethod},
		{"arguments array", `{"type":"rpc","payload":{"method":"documents.all","arguments":[1]}}`, "documents.all", badArgs},
		{"arguments string", `{"type":"rpc","payload":{"method":"documents.update","arguments":"x"}}`, du, badArgs},
		{"unknown method", `{"type":"rpc","payload":{"method":"documents.delete","arguments":{}}}`, "documents.delete", "Unknown RPC method: 'documents.delete'"},
		{"update without arguments", `{"type":"rpc","payload":{"method":"documents.update"}}`, du, noDocArg},
		{"update without document", upd(`{"doc":{"document":"d1"}}`), du, noDocArg},
		{"document string", upd(`{"document":"d1"}`), du, docNotObj},
		{"document array", upd(`{"document":[{"document":"d1"}]}`), du, docNotObj},
		{"document null", upd(`{"document":null}`), du, docNotObj},
		{"document without id", upd(`{"document":{"progress":"p","percentage":0.5}}`), du, badID},
		{"document id empty", upd(`{"document":{"document":"","progress":"p"}}`), du, badID},
		{"document id with colon", upd(`{"document":{"document":"a:b","progress":"p"}}`), du, badID},
		{"document id not a string", upd(`{"document":{"document":5,"progress":"p"}}`), du, badID},
		{"id only, empty", upd(`{"document":{"id":"","progress":"p"}}`), du, badID},
		{"conflicting id and document", upd(`{"document":{"document":"d1","id":"d2","progress":"p"}}`), du, badID},
		{"percentage bool", upd(`{"document":{"document":"d1","percentage":true}}`), du, wrongType("percentage")},
		{"progress bool", upd(`{"document":{"document":"d1","progress":true}}`), du, wrongType("progress")},
		{"device number", upd(`{"document":{"document":"d1","device":5}}`), du, wrongType("device")},
		{"device_id object", upd(`{"document":{"document":"d1","device_id":{}}}`), du, wrongType("device_id")},
		{"pretty_name number", upd(`{"document":{"document":"d1","pretty_name":5}}`), du, wrongType("pretty_name")},
		{"pubsub topic missing", `{"type":"pubsub","payload":{}}`, "pubsub", badTopic},
		{"pubsub topic number", `{"type":"pubsub","payload":{"topic":5}}`, "pubsub", badTopic},
		{"pubsub topic null", `{"type":"pubsub","payload":{"topic":null}}`, "pubsub", badTopic},
		{"pubsub payload string", `{"type":"pubsub","payload":"user.documents"}`, "pubsub", badTopic},
		{"pubsub payload missing", `{"type":"pubsub"}`, "pubsub", badTopic},
		{"unknown topic", `{"type":"pubsub","payload":{"topic":"user.books"}}`, "pubsub", "Unknown PubSub topic: 'user.books'"},
	} {
		ksSend(t, c, row.msg)
		if got := ksRead(t, c); !ksJSONEqual(got, []byte(ksRPCErr(row.forRPC, row.err))) {
			t.Errorf("%s: %s\n  got  %s\n  want %s", row.name, row.msg, got, ksRPCErr(row.forRPC, row.err))
		}
		// Still usable, and nothing else was sent (no "subscribed" after
		// the unknown topic): the next message is this reply.
		ksAll(t, c)
	}
	// None of the rejected updates wrote anything.
	if res := ksAll(t, c); string(bytes.TrimSpace(res)) != "[]" {
		t.Fatalf("documents.all after rejected updates = %s, want []", res)
	}
	// The unknown topic made no subscription: a push is not announced.
	ts := ksPush(t, base, "alice", key, map[string]any{"document": "d9", "progress": "1", "percentage": 0.1, "device": "kpw"})
	res := ksAll(t, c)
	if !ksJSONEqual(res, []byte("["+ksDoc("d9", "1", 0.1, "kpw", "", ts, "", "[]")+"]")) {
		t.Fatalf("documents.all = %s", res)
	}
	// Binary frames are accepted as well.
	if err := c.Write(testCtx(t), websocket.MessageBinary, []byte(ksAllMsg)); err != nil {
		t.Fatal(err)
	}
	ksResult(t, c, "documents.all")
	// A valid update with "id" equal to "document" is fine.
	ksUpdate(t, c, `{"document":"d9","id":"d9","device":"web"}`)

	// Requests are answered in order: three updates, an unknown method in
	// between, then documents.all, sent back to back.
	for _, m := range []string{
		ksUpdateMsg(`{"document":"ord","progress":"1","percentage":0.1,"device":"web"}`),
		ksUpdateMsg(`{"document":"ord","progress":"2","percentage":0.2}`),
		`{"type":"rpc","payload":{"method":"nope"}}`,
		ksUpdateMsg(`{"document":"ord","progress":"3","percentage":0.3}`),
		ksAllMsg,
	} {
		ksSend(t, c, m)
	}
	var stamps []int64
	for i, p := range []string{"1", "2", "", "3"} {
		if p == "" {
			ksWant(t, c, "in-order error reply", ksRPCErr("nope", "Unknown RPC method: 'nope'"))
			continue
		}
		var d map[string]any
		if err := json.Unmarshal(ksResult(t, c, "documents.update"), &d); err != nil || d["progress"] != p {
			t.Fatalf("reply %d: %v (%v), want the update to progress %s", i, d, err, p)
		}
		stamps = append(stamps, ksNum(t, d, "timestamp"))
	}
	var all []map[string]any
	if err := json.Unmarshal(ksResult(t, c, "documents.all"), &all); err != nil {
		t.Fatal(err)
	}
	var ord map[string]any
	for _, d := range all {
		if d["id"] == "ord" {
			ord = d
		}
	}
	wantOrd := ksDoc("ord", "3", 0.3, "web", "", stamps[2], "", "["+
		ksHist("ord", "1", 0.1, "web", "", stamps[0], "")+","+ksHist("ord", "2", 0.2, "web", "", stamps[1], "")+"]")
	if !ksJSONEqual([]byte(ksJSON(ord)), []byte(wantOrd)) {
		t.Fatalf("documents.all shows %v\nwant %s", ksJSON(ord), wantOrd)
	}

	// A message over the size limit (default 64 KiB) closes with 1009.
	big := ksUpdateMsg(`{"document":"big","progress":"` + strings.Repeat("x", 70<<10) + `"}`)
	ksSend(t, c, big)
	ksWantClose(t, c, "message over 64 KiB", websocket.StatusMessageTooBig)
}

// TestKosyncDisconnect: disconnect answers "goodbye." then a close frame 1000.
func TestKosyncDisconnect(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base := ksBase(n)
	key := ksRegister(t, base, "alice", "alice-pw")
	c := ksDial(t, n.Addr().String(), ksJWT(t, base, "alice", key))
	ksSend(t, c, `{"type":"rpc","payload":{"method":"disconnect"}}`)
	ksWant(t, c, "disconnect", ksRPCOK("disconnect", `"goodbye."`))
	ksWantClose(t, c, "after goodbye", websocket.StatusNormalClosure)
}

// TestKosyncBadToken: a garbage, forged, foreign, revoked or missing token gets
// exactly the B.4 frame and then close 3001, after a successful upgrade.
func TestKosyncBadToken(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	key := ksRegister(t, base, "alice", "alice-pw")
	good := ksJWT(t, base, "alice", key)

	for _, tok := range []string{
		"garbage",
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJrb3N5bmM6YWxpY2UifQ.", // alg none
		ksFlip(good, len(good)-20),                            // bad signature
		ksFlip(good, strings.IndexByte(good, '.')+3),          // bad claims
		good + "x",
	} {
		ksWantBadToken(t, ksDialOpts(t, addr, tok, nil), "token "+tok)
	}
	// No token at all.
	ksWantBadToken(t, ksDialOpts(t, addr, "", nil), "/api/ws/ without a token")

	// A token from another secret.
	other := startNode(t, func(c *node.Config) { c.Secret = "another-secret-0123456789-0123456789-0123456789" })
	okey := ksRegister(t, ksBase(other), "alice", "alice-pw")
	ksWantBadToken(t, ksDialOpts(t, addr, ksJWT(t, ksBase(other), "alice", okey), nil), "token of another secret")

	// Revoked: the subject kosync:alice, revoked now.
	ksDial(t, addr, good) // works before
	live := ksDial(t, addr, good)
	ctx := testCtx(t)
	if err := n.Revoker.RevokeSubject(ctx, "kosync:alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	ksWantClose(t, live, "live socket of a revoked subject", websocket.StatusCode(packet.CloseRevoked))
	ksWantBadToken(t, ksDialOpts(t, addr, good, nil), "revoked token")
}

// TestKosyncExpiredToken: tokens are signed with HS256 under
// HMAC-SHA256(secret, "kosync-jwt-v1") (kosync/jwt.go); the test signs its
// own to get an expired one, since the 30 s exp leeway would make a node
// with a 1 s JWTTTL wait over 30 s. A correctly signed token with a future
// exp works (the control); expired beyond the leeway, without exp, or with
// another algorithm under the same key, it gets the B.4 frame and 3001.
func TestKosyncExpiredToken(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	ksRegister(t, base, "alice", "alice-pw")
	key := n.Secrets.Derive("kosync-jwt-v1")[0]
	now := time.Now()
	sign := func(m jwt.SigningMethod, claims jwt.MapClaims) string {
		t.Helper()
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(iat, exp time.Time) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "kosync:alice", "username": "alice", "jti": fmt.Sprintf("%016x", now.UnixNano()), "iat": iat.Unix()}
		if !exp.IsZero() {
			c["exp"] = exp.Unix()
		}
		return c
	}
	ksAll(t, ksDial(t, addr, sign(jwt.SigningMethodHS256, claims(now.Add(-time.Minute), now.Add(time.Hour)))))
	for _, tc := range []struct{ what, tok string }{
		{"expired 2 min ago", sign(jwt.SigningMethodHS256, claims(now.Add(-time.Hour), now.Add(-2*time.Minute)))},
		{"no exp", sign(jwt.SigningMethodHS256, claims(now.Add(-time.Minute), time.Time{}))},
		{"HS512", sign(jwt.SigningMethodHS512, claims(now.Add(-time.Minute), now.Add(time.Hour)))},
	} {
		ksWantBadToken(t, ksDialOpts(t, addr, tc.tok, nil), tc.what)
	}
}

// TestKosyncRevocationCloses: DELETE /users/me and PUT /users/password close
// the user's open sockets with 3004 and revoke the JWTs issued before; other
// users' sockets stay; a JWT fetched after the password change works.
func TestKosyncRevocationCloses(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	aKey := ksRegister(t, base, "alice", "alice-pw")
	bKey := ksRegister(t, base, "bob", "bob-pw")
	cKey := ksRegister(t, base, "carol", "carol-pw")
	aTok, bTok, cTok := ksJWT(t, base, "alice", aKey), ksJWT(t, base, "bob", bKey), ksJWT(t, base, "carol", cKey)
	a1, a2 := ksDial(t, addr, aTok), ksDial(t, addr, aTok)
	ksSubscribe(t, a2)
	b1 := ksDial(t, addr, bTok)
	c1 := ksDial(t, addr, cTok)

	// Account deletion.
	ksWantJSON(t, "DELETE /users/me", ksDo(t, http.MethodDelete, base+"/users/me", "alice", aKey, ""), http.StatusOK, `{"deleted":true}`)
	ksWantClose(t, a1, "alice's socket after DELETE /users/me", websocket.StatusCode(packet.CloseRevoked))
	ksWantClose(t, a2, "alice's subscribed socket after DELETE /users/me", websocket.StatusCode(packet.CloseRevoked))
	ksWantBadToken(t, ksDialOpts(t, addr, aTok, nil), "alice's token after deletion")
	ksAll(t, b1)
	ksAll(t, c1)
	ksWantJSON(t, "GET /users/auth of the deleted user", ksDo(t, http.MethodGet, base+"/users/auth", "alice", aKey, ""),
		http.StatusUnauthorized, `{"code":2001,"message":"Unauthorized"}`)

	// Password change.
	newKey := ksMD5("bob-new-pw")
	ksWantJSON(t, "PUT /users/password", ksDo(t, http.MethodPut, base+"/users/password", "bob", bKey, ksJSON(map[string]string{"password": newKey})),
		http.StatusOK, `{"updated":true}`)
	ksWantClose(t, b1, "bob's socket after PUT /users/password", websocket.StatusCode(packet.CloseRevoked))
	ksWantBadToken(t, ksDialOpts(t, addr, bTok, nil), "bob's token issued before the password change")
	if r := ksDo(t, http.MethodGet, base+"/api/auth.jwt", "bob", bKey, ""); r.status != http.StatusUnauthorized {
		t.Fatalf("GET /api/auth.jwt with bob's old key: %d %s, want 401", r.status, r.body)
	}
	fresh := ksJWT(t, base, "bob", newKey)
	b2 := ksDial(t, addr, fresh)
	ksAll(t, b2)
	ksAll(t, c1)
}

// TestKosyncSubprotocols: the first known subprotocol the client lists is
// selected; only unknown ones upgrade without any (B.4).
func TestKosyncSubprotocols(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	key := ksRegister(t, base, "alice", "alice-pw")
	tok := ksJWT(t, base, "alice", key)
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"foo", "kosync.pubsub", "kosync.rpc"}, "kosync.pubsub"},
		{[]string{"kosync.rpc", "kosync.pubsub"}, "kosync.rpc"},
		{[]string{"foo"}, ""},
		{nil, ""},
	} {
		c := ksDialOpts(t, addr, tok, &websocket.DialOptions{Subprotocols: tc.offer})
		if got := c.Subprotocol(); got != tc.want {
			t.Fatalf("offered %q: selected %q, want %q", tc.offer, got, tc.want)
		}
		ksCheckHello(t, ksRead(t, c))
		ksAll(t, c)
	}
	// A bad token with a subprotocol: upgraded, then the B.4 frame.
	c := ksDialOpts(t, addr, "bad", &websocket.DialOptions{Subprotocols: []string{"kosync.rpc"}})
	if c.Subprotocol() != "kosync.rpc" {
		t.Fatalf("bad token: selected %q, want kosync.rpc", c.Subprotocol())
	}
	ksWantBadToken(t, c, "bad token with a subprotocol")
}

// TestKosyncCluster: two nodes on one Redis share users, documents, JWTs and
// announces (B.7: every node).
func TestKosyncCluster(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	baseA, baseB := ksBase(a), ksBase(b)
	key := ksRegister(t, baseA, "alice", "alice-pw")
	// The same name cannot be registered again on B.
	ksWantJSON(t, "POST /users/create on B for a name taken on A",
		ksDo(t, http.MethodPost, baseB+"/users/create", "", "", ksJSON(map[string]string{"username": "alice", "password": key})),
		http.StatusPaymentRequired, `{"code":2002,"message":"Username is already registered."}`)
	ksWantJSON(t, "GET /users/auth on B", ksDo(t, http.MethodGet, baseB+"/users/auth", "alice", key, ""), http.StatusOK, `{"authorized":"OK"}`)

	tokA := ksJWT(t, baseA, "alice", key)
	onB := ksDial(t, b.Addr().String(), tokA) // a JWT of A works on B
	ksSubscribe(t, onB)
	onA := ksDial(t, a.Addr().String(), ksJWT(t, baseB, "alice", key))
	ksSubscribe(t, onA)

	ts := ksPush(t, baseA, "alice", key, map[string]any{"document": "d1", "progress": "5", "percentage": 0.05, "device": "kpw", "device_id": "X"})
	want := ksDoc("d1", "5", 0.05, "kpw", "X", ts, "", "null")
	ksWantAnnounce(t, onB, "announce on B of a push on A", want)
	ksWantAnnounce(t, onA, "announce on A of a push on A", want)

	// An RPC update on B: the reply, then the announce on both nodes; the
	// KOReader GET on A sees it.
	got := ksUpdateSub(t, onB, `{"document":"d1","progress":"6","pretty_name":"Shared"}`)
	ts2 := ksNum(t, got, "timestamp")
	want2 := ksDoc("d1", "6", 0.05, "kpw", "X", ts2, "Shared", "null")
	ksWantAnnounce(t, onA, "announce on A of an update on B", want2)
	ksWantJSON(t, "GET /syncs/progress/d1 on A", ksDo(t, http.MethodGet, baseA+"/syncs/progress/d1", "alice", key, ""), http.StatusOK,
		ksJSON(map[string]any{"document": "d1", "percentage": 0.05, "progress": "6", "device": "kpw", "device_id": "X", "timestamp": ts2}))
	res := ksAll(t, onA)
	wantAll := "[" + ksDoc("d1", "6", 0.05, "kpw", "X", ts2, "Shared", "["+ksHist("d1", "5", 0.05, "kpw", "X", ts, "")+"]") + "]"
	if !ksJSONEqual(res, []byte(wantAll)) {
		t.Fatalf("documents.all on A = %s\nwant %s", res, wantAll)
	}

	// A password change on B closes the socket on A with 3004.
	ksWantJSON(t, "PUT /users/password on B",
		ksDo(t, http.MethodPut, baseB+"/users/password", "alice", key, ksJSON(map[string]string{"password": ksMD5("new")})),
		http.StatusOK, `{"updated":true}`)
	ksWantClose(t, onA, "socket on A after a password change on B", websocket.StatusCode(packet.CloseRevoked))
	ksWantClose(t, onB, "socket on B after a password change on B", websocket.StatusCode(packet.CloseRevoked))
	ksWantJSON(t, "GET /users/auth on A with the old key", ksDo(t, http.MethodGet, baseA+"/users/auth", "alice", key, ""),
		http.StatusUnauthorized, `{"code":2001,"message":"Unauthorized"}`)
}

// TestKosyncClusterSubscribedIsLive: "subscribed" on a node of a cluster
// means the node's Redis subscription to the user's announces is live, as
// Subscribed does for the native protocol: a publish made after the client
// read "subscribed" must reach it (B.7: every subscribed socket on every
// node). The publish is a raw PUBLISH on gateway:ch:#kosync:<user> (the hub
// channel of kosync/doc.go under the broker's documented prefix), whose
// answer counts the Redis subscribers: 0 means the announce was lost. The
// race needs the node's first subscriber of the user, so each round closes
// the socket and waits until the node has left the Redis channel.
func TestKosyncClusterSubscribedIsLive(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := e2eRedisNode(t, srv)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	base := ksBase(b)
	tok := ksJWT(t, base, "alice", ksRegister(t, base, "alice", "alice-pw"))
	const channel = "gateway:ch:#kosync:alice"
	frame := ksAnnounce(ksDoc("x", "1", 0.5, "kpw", "", 1, "", "null"))
	const rounds = 100
	lost := 0
	for i := range rounds {
		c := ksDial(t, b.Addr().String(), tok)
		ksSubscribe(t, c)
		n, err := rc.Publish(testCtx(t), channel, frame).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			lost++
		} else {
			ksWant(t, c, fmt.Sprintf("round %d: raw announce", i), frame)
		}
		_ = c.CloseNow()
		// Wait (bounded) until the node has left the channel.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			m, err := rc.PubSubNumSub(testCtx(t), channel).Result()
			if err != nil {
				t.Fatal(err)
			}
			if m[channel] == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: node still subscribed to %s 5 s after its only socket closed", i, channel)
			}
		}
	}
	if lost > 0 {
		t.Errorf("BUG: in %d of %d rounds a publish made after \"subscribed\" reached no Redis subscriber: the announce was lost (kosync/ws.go pubsub sends \"subscribed\" before the broker confirms the Redis SUBSCRIBE)", lost, rounds)
	}
}

// TestKosyncWSRedirect: GET /api/ws answers 303 to ws://<host>/api/ws/<jwt>,
// the same URI as a text/plain body, without Connection/Upgrade headers; the
// Location dials. Unauthenticated → 401. The public URL and trusted proxies
// pick wss and the host (B.3).
func TestKosyncWSRedirect(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	key := ksRegister(t, base, "alice", "alice-pw")

	check := func(what string, r ksResp, prefix string) string {
		t.Helper()
		if r.status != http.StatusSeeOther {
			t.Fatalf("%s: status %d %s, want 303", what, r.status, r.body)
		}
		loc := r.header.Get("Location")
		if !strings.HasPrefix(loc, prefix) || len(loc) == len(prefix) || strings.ContainsAny(loc[len(prefix):], "/?# ") {
			t.Fatalf("%s: Location %q, want %s<jwt>", what, loc, prefix)
		}
		if string(r.body) != loc || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("%s: body %q (%s), want the Location as text/plain", what, r.body, r.header.Get("Content-Type"))
		}
		if r.header.Get("Upgrade") != "" || strings.Contains(strings.ToLower(r.header.Get("Connection")), "upgrade") {
			t.Fatalf("%s: 303 carries Connection %q / Upgrade %q", what, r.header.Get("Connection"), r.header.Get("Upgrade"))
		}
		return loc
	}
	loc := check("GET /api/ws", ksDo(t, http.MethodGet, base+"/api/ws", "alice", key, ""), "ws://"+addr+"/api/ws/")
	c, _, err := websocket.Dial(testCtx(t), loc, nil)
	if err != nil {
		t.Fatalf("dial the Location %s: %v", loc, err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	ksCheckHello(t, ksRead(t, c))
	ksAll(t, c)
	// Forwarded headers from an untrusted peer are ignored.
	check("GET /api/ws with untrusted X-Forwarded-*", ksDo(t, http.MethodGet, base+"/api/ws", "alice", key, "",
		"X-Forwarded-Proto: https", "X-Forwarded-Host: evil.example"), "ws://"+addr+"/api/ws/")

	// Unauthenticated: 401, no redirect.
	for _, r := range []ksResp{
		ksDo(t, http.MethodGet, base+"/api/ws", "", "", ""),
		ksDo(t, http.MethodGet, base+"/api/ws", "alice", ksMD5("wrong"), ""),
	} {
		if r.status != http.StatusUnauthorized || string(r.body) != "Unauthorized" || r.header.Get("Location") != "" {
			t.Fatalf("unauthenticated GET /api/ws: %d %q Location %q, want 401 Unauthorized", r.status, r.body, r.header.Get("Location"))
		}
	}

	// The public URL decides scheme and host.
	pub := startNode(t, func(c *node.Config) { c.Kosync.PublicURL = "https://sync.example.com" })
	pkey := ksRegister(t, ksBase(pub), "alice", "alice-pw")
	ploc := check("GET /api/ws with a public URL", ksDo(t, http.MethodGet, ksBase(pub)+"/api/ws", "alice", pkey, ""), "wss://sync.example.com/api/ws/")
	// Its token is valid on that node.
	ksDial(t, pub.Addr().String(), ploc[len("wss://sync.example.com/api/ws/"):])

	// A trusted proxy's X-Forwarded-Proto https and X-Forwarded-Host.
	prox := startNode(t, func(c *node.Config) { c.Kosync.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	xkey := ksRegister(t, ksBase(prox), "alice", "alice-pw")
	check("GET /api/ws through a trusted proxy", ksDo(t, http.MethodGet, ksBase(prox)+"/api/ws", "alice", xkey, "",
		"X-Forwarded-Proto: https", "X-Forwarded-Host: books.example.org"), "wss://books.example.org/api/ws/")
}
