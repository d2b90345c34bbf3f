package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// ---- helpers of the cluster, admin and process tests (prefixed e2e to
// stay clear of other files of the package) ----

// e2eRedisNode starts a node on the shared Redis of srv.
func e2eRedisNode(t testing.TB, srv *redistest.Server, mods ...func(*node.Config)) *node.Node {
	t.Helper()
	return startNode(t, append([]func(*node.Config){func(c *node.Config) { c.RedisURL = srv.URL }}, mods...)...)
}

// e2eIssue issues a key for subject on n's secrets and returns it with its
// claims.
func e2eIssue(t testing.TB, n *node.Node, subject string) ([]byte, token.Claims) {
	t.Helper()
	raw, claims, err := n.Secrets.Issue(subject, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return raw, claims
}

// e2eAuth sends the auth message with key on a dialed connection.
func e2eAuth(t testing.TB, c *websocket.Conn, key []byte) {
	t.Helper()
	send(t, c, packet.AppendAuth(nil, packet.Version, key))
}

// e2eConnectKey dials n and authenticates with key, expecting the Pong.
func e2eConnectKey(t testing.TB, n *node.Node, key []byte) *websocket.Conn {
	t.Helper()
	c := dial(t, n)
	e2eAuth(t, c, key)
	if p := readOne(t, c); p.ID != packet.PacketPong {
		t.Fatalf("after auth got %s, want Pong", describe(p))
	}
	return c
}

// e2eRefused dials n, authenticates with key and expects the close.
func e2eRefused(t testing.TB, n *node.Node, key []byte, code websocket.StatusCode, reason string) {
	t.Helper()
	c := dial(t, n)
	e2eAuth(t, c, key)
	expectClose(t, c, code, reason)
}

// e2eExpectMessage reads one packet and checks it is Message(channel, payload).
func e2eExpectMessage(t testing.TB, c *websocket.Conn, channel string, payload []byte) {
	t.Helper()
	p := readOne(t, c)
	if p.ID != packet.PacketMessage || string(p.Channel) != channel || !bytes.Equal(p.Payload, payload) {
		t.Fatalf("got %s, want Message(%q, %q)", describe(p), channel, payload)
	}
}

// e2ePing sends a Ping and expects the Pong as the very next packet: the
// connection is open and nothing else was queued for it.
func e2ePing(t testing.TB, c *websocket.Conn) {
	t.Helper()
	send(t, c, packet.AppendPing(nil))
	if p := readOne(t, c); p.ID != packet.PacketPong {
		t.Fatalf("after ping got %s, want Pong", describe(p))
	}
}

var e2eHTTP = &http.Client{Timeout: waitFor}

// e2eDo makes an HTTP request and returns the status, the body and the
// Content-Type.
func e2eDo(t testing.TB, method, url, contentType string, body []byte) (int, []byte, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e2eHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, b, resp.Header.Get("Content-Type")
}

// e2eAdminJSON posts a JSON body to n's admin API, checks the status and
// returns the decoded JSON answer.
func e2eAdminJSON(t testing.TB, n *node.Node, path, body string, wantStatus int) map[string]any {
	t.Helper()
	status, b, ct := e2eDo(t, http.MethodPost, adminURL(n)+path, "application/json", []byte(body))
	if status != wantStatus {
		t.Fatalf("POST %s %s: status %d %s, want %d", path, body, status, b, wantStatus)
	}
	return e2eDecodeJSON(t, b, ct)
}

func e2eDecodeJSON(t testing.TB, b []byte, ct string) map[string]any {
	t.Helper()
	if ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json (body %s)", ct, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer %q is not a JSON object: %v", b, err)
	}
	return m
}

// e2eWantFields checks that m holds exactly the fields of want.
func e2eWantFields(t testing.TB, m map[string]any, want map[string]any) {
	t.Helper()
	if len(m) != len(want) {
		t.Fatalf("answer %v, want exactly the fields %v", m, want)
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Fatalf("answer %v: field %q = %v, want %v", m, k, got, v)
		}
	}
}

// e2eAdminPublish publishes body on channel through n's admin API.
func e2eAdminPublish(t testing.TB, n *node.Node, channel string, body []byte) {
	t.Helper()
	status, b, ct := e2eDo(t, http.MethodPost, adminURL(n)+"/api/publish?channel="+channel, "application/octet-stream", body)
	if status != http.StatusOK {
		t.Fatalf("admin publish: %d %s", status, b)
	}
	e2eWantFields(t, e2eDecodeJSON(t, b, ct), map[string]any{"channel": channel, "bytes": float64(len(body))})
}

// ---- cluster tests ----

// TestClusterFanout: a publish by a client of A reaches a subscriber of B
// (through Redis) and one of A (locally), all 200 in order and exactly
// once; the publisher, echo off, gets none.
func TestClusterFanout(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)

	subB := connect(t, b, "bob")
	subscribe(t, subB, "room") // Subscribed means the Redis subscription is live
	subA := connect(t, a, "carol")
	subscribe(t, subA, "room")
	pub := connect(t, a, "alice")
	subscribe(t, pub, "room")

	const n = 200
	payload := func(i int) []byte { return fmt.Appendf(nil, "seq-%03d\x00\xff\x00G", i) }
	// No wait, no retry: the first publish right after Subscribed must arrive.
	for i := range n {
		send(t, pub, packet.AppendPublish(nil, "room", payload(i)))
	}
	for i := range n {
		e2eExpectMessage(t, subB, "room", payload(i))
	}
	for i := range n {
		e2eExpectMessage(t, subA, "room", payload(i))
	}
	// A marker published by another client after all of them: the
	// publisher's next packet must be that marker, not one of its own.
	send(t, subA, packet.AppendPublish(nil, "room", []byte("end")))
	e2eExpectMessage(t, pub, "room", []byte("end"))
	e2eExpectMessage(t, subB, "room", []byte("end"))
	// No duplicates: nothing else is queued on B's subscriber.
	e2ePing(t, subB)
}

// TestClusterAdminPublish: the admin API of A publishes to the subscribers
// of both nodes, raw body as is, also on server: channels clients may not
// publish on.
func TestClusterAdminPublish(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	subA, subB := connect(t, a, "alice"), connect(t, b, "bob")
	for _, ch := range []string{"news", "server:alerts"} {
		subscribe(t, subA, ch)
		subscribe(t, subB, ch)
	}
	body := []byte("hello \x00 world {\"x\":1}\n")
	e2eAdminPublish(t, a, "news", body)
	e2eExpectMessage(t, subA, "news", body)
	e2eExpectMessage(t, subB, "news", body)
	e2eAdminPublish(t, a, "server:alerts", []byte("up"))
	e2eExpectMessage(t, subA, "server:alerts", []byte("up"))
	e2eExpectMessage(t, subB, "server:alerts", []byte("up"))
	// An empty body is a publish too.
	e2eAdminPublish(t, b, "news", nil)
	e2eExpectMessage(t, subA, "news", []byte{})
	e2eExpectMessage(t, subB, "news", []byte{})
}

// TestClusterOutsidePublish: a raw PUBLISH on gateway:ch:<channel> by an
// outside Redis client reaches the subscribers of both nodes unchanged.
func TestClusterOutsidePublish(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	subA, subB := connect(t, a, "alice"), connect(t, b, "bob")
	subscribe(t, subA, "room")
	subscribe(t, subB, "room")

	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	got, err := rc.Publish(testCtx(t), "gateway:ch:room", "raw").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got != 2 { // one subscription per node
		t.Fatalf("PUBLISH reached %d Redis subscribers, want 2", got)
	}
	e2eExpectMessage(t, subA, "room", []byte("raw"))
	e2eExpectMessage(t, subB, "room", []byte("raw"))
	// Another prefix is another channel: nothing for room.
	if err := rc.Publish(testCtx(t), "other:ch:room", "no").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(testCtx(t), "gateway:ch:room", "raw2").Err(); err != nil {
		t.Fatal(err)
	}
	e2eExpectMessage(t, subA, "room", []byte("raw2"))
	e2eExpectMessage(t, subB, "room", []byte("raw2"))
}

// TestClusterRevokeKey: revoking a whole key on A closes its session on B
// with 3004; the key is then refused on both nodes with 3001; other
// sessions stay.
func TestClusterRevokeKey(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	key, claims := e2eIssue(t, a, "alice")
	victim := e2eConnectKey(t, b, key)
	other := connect(t, b, "alice") // same subject, another key

	m := e2eAdminJSON(t, a, "/api/revoke", fmt.Sprintf(`{"key": %q}`, token.EncodeText(key)), http.StatusOK)
	e2eWantFields(t, m, map[string]any{"revoked": true, "id": claims.ID.String(), "subject": "alice"})

	expectClose(t, victim, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	e2eRefused(t, a, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	e2eRefused(t, b, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	e2ePing(t, other)
}

// TestClusterRevokeID: revoking by key id on A closes the session on B and
// refuses the key on both nodes.
func TestClusterRevokeID(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	key, claims := e2eIssue(t, b, "alice")
	victim := e2eConnectKey(t, b, key)
	onA := e2eConnectKey(t, a, key)

	m := e2eAdminJSON(t, a, "/api/revoke", fmt.Sprintf(`{"id": %q}`, strings.ToUpper(claims.ID.String())), http.StatusOK)
	e2eWantFields(t, m, map[string]any{"revoked": true, "id": claims.ID.String()})

	expectClose(t, victim, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	expectClose(t, onA, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	e2eRefused(t, b, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	e2eRefused(t, a, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
}

// TestClusterRevokeSubject: revoking a subject on A closes all of its
// sessions on both nodes; other subjects stay; a key issued afterwards
// works while an older one is refused.
func TestClusterRevokeSubject(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	old, _ := e2eIssue(t, a, "bob")
	bobA, bobB1, bobB2 := connect(t, a, "bob"), connect(t, b, "bob"), e2eConnectKey(t, b, old)
	alice := connect(t, b, "alice")
	bobby := connect(t, b, "bobby") // a prefix of another subject is not bob

	before := time.Now().UnixMilli()
	m := e2eAdminJSON(t, a, "/api/revoke/subject", `{"subject":"bob"}`, http.StatusOK)
	at, ok := m["issued_before"].(float64)
	if !ok || int64(at) < before || int64(at) > time.Now().UnixMilli() {
		t.Fatalf("issued_before %v: want the revocation time (unix ms, between %d and now)", m["issued_before"], before)
	}
	e2eWantFields(t, m, map[string]any{"revoked": true, "subject": "bob", "issued_before": at})

	for _, c := range []*websocket.Conn{bobA, bobB1, bobB2} {
		expectClose(t, c, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	}
	e2ePing(t, alice)
	e2ePing(t, bobby)
	e2eRefused(t, b, old, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	e2eRefused(t, a, old, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")

	time.Sleep(5 * time.Millisecond) // keys have millisecond issue times
	fresh, _ := e2eIssue(t, a, "bob")
	e2ePing(t, e2eConnectKey(t, a, fresh))
	e2ePing(t, e2eConnectKey(t, b, fresh))
}

// TestClusterRevocationsPersistRedis: a node started after revocations
// made through another node refuses the keys (loaded from Redis).
func TestClusterRevocationsPersistRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := e2eRedisNode(t, srv)
	k1, _ := e2eIssue(t, a, "alice")
	k2, c2 := e2eIssue(t, a, "alice")
	k3, _ := e2eIssue(t, a, "carol")
	keep, _ := e2eIssue(t, a, "alice")
	e2eAdminJSON(t, a, "/api/revoke", fmt.Sprintf(`{"key": %q}`, token.EncodeText(k1)), http.StatusOK)
	e2eAdminJSON(t, a, "/api/revoke", fmt.Sprintf(`{"id": %q}`, c2.ID), http.StatusOK)
	e2eAdminJSON(t, a, "/api/revoke/subject", `{"subject":"carol"}`, http.StatusOK)

	c := e2eRedisNode(t, srv)
	for _, k := range [][]byte{k1, k2, k3} {
		e2eRefused(t, c, k, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	}
	e2ePing(t, e2eConnectKey(t, c, keep))
}

// TestRevocationsPersistDataDir: without Redis, revocations survive a
// restart of the node on the same data dir.
func TestRevocationsPersistDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	inDir := func(c *node.Config) { c.DataDir = dir }
	n1 := startNode(t, inDir)
	k1, c1 := e2eIssue(t, n1, "alice")
	k2, c2 := e2eIssue(t, n1, "alice")
	k3, _ := e2eIssue(t, n1, "carol")
	keep, _ := e2eIssue(t, n1, "alice")
	live := e2eConnectKey(t, n1, k1)
	m := e2eAdminJSON(t, n1, "/api/revoke", fmt.Sprintf(`{"key": %q}`, token.EncodeText(k1)), http.StatusOK)
	e2eWantFields(t, m, map[string]any{"revoked": true, "id": c1.ID.String(), "subject": "alice"})
	expectClose(t, live, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	e2eAdminJSON(t, n1, "/api/revoke", fmt.Sprintf(`{"id": %q}`, c2.ID), http.StatusOK)
	e2eAdminJSON(t, n1, "/api/revoke/subject", `{"subject":"carol"}`, http.StatusOK)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	n2 := startNode(t, inDir)
	for _, k := range [][]byte{k1, k2, k3} {
		e2eRefused(t, n2, k, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	}
	e2ePing(t, e2eConnectKey(t, n2, keep))
}

// TestClusterRedisRestart: after Redis restarts (losing its data), the
// nodes resubscribe by themselves: publishes on A reach B again, and a
// revocation made after the restart still closes a session on B.
func TestClusterRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	subB := connect(t, b, "bob")
	subscribe(t, subB, "room")
	pub := connect(t, a, "alice")
	key, claims := e2eIssue(t, a, "victim")
	victim := e2eConnectKey(t, b, key)

	srv.Restart(t)

	// Publish markers until one comes through; earlier ones may be lost.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			if pub.Write(ctx, websocket.MessageBinary, packet.AppendPublish(nil, "room", fmt.Appendf(nil, "marker-%d", i))) != nil {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	{ // the first message after the restart must be one of the markers
		typ, msg, err := subB.Read(ctx)
		if err != nil {
			t.Fatalf("no publish of A reached B within 15 s of the Redis restart: %v", err)
		}
		if typ != websocket.MessageBinary {
			t.Fatalf("got a %v message", typ)
		}
		ps := decodeAll(t, msg)
		if len(ps) != 1 || ps[0].ID != packet.PacketMessage || string(ps[0].Channel) != "room" ||
			!bytes.HasPrefix(ps[0].Payload, []byte("marker-")) {
			t.Fatalf("got %d packets, first %s, want one marker Message", len(ps), describe(ps[0]))
		}
	}
	cancel()

	m := e2eAdminJSON(t, a, "/api/revoke", fmt.Sprintf(`{"id": %q}`, claims.ID), http.StatusOK)
	e2eWantFields(t, m, map[string]any{"revoked": true, "id": claims.ID.String()})
	expectClose(t, victim, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	e2eRefused(t, b, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
}

// TestRedisDownNodeServesLocally: a node whose Redis is not running starts
// anyway and its own clients still publish to each other; the next packet
// the subscriber reads is the Message, not a Subscribed.
// The node has a saved revoked set (without one it refuses every key until
// Redis answers: TestRevocationFailClosedRedisDown).
func TestRedisDownNodeServesLocally(t *testing.T) {
	t.Parallel()
	n := durNodeRedisDown(t)

	sub := connect(t, n, "bob")
	// No Subscribed while Redis cannot confirm (PROTOCOL.md §5), but local
	// publishes are delivered from the Subscribe on.
	send(t, sub, packet.AppendSubscribe(nil, "room"))
	e2ePing(t, sub) // the Subscribe has run once its Pong is back
	pub := connect(t, n, "alice")
	send(t, pub, packet.AppendPublish(nil, "room", []byte("local")))
	e2eExpectMessage(t, sub, "room", []byte("local"))
	e2ePing(t, pub)
}
