package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Revocation durability (issue 10, items 5 and 16): a revoked key or KOsync
// JWT never authenticates whatever is down, and a Redis that comes back
// without its data is noticed and given back the revocations. Helpers are
// prefixed dur.

// durNode starts a node with cfg's data dir and Redis, logging to logs
// (may be nil); stop shuts it down (once; the test's end does it too).
func durNode(t testing.TB, dataDir, redisURL string, logs io.Writer) (n *node.Node, stop func()) {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	n, err := node.Start(node.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dataDir, RedisURL: redisURL,
		Secret: testSecret, EventLoops: 2,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = n.Shutdown(ctx)
		})
	}
	t.Cleanup(stop)
	return n, stop
}

// durDeadRedis returns a Redis URL where nothing listens.
func durDeadRedis(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "redis://" + l.Addr().String()
}

// durNodeRedisDown returns a node restarted while its Redis is down, on the
// data dir of an earlier run that saw Redis (so it holds a saved revoked
// set, here an empty one).
func durNodeRedisDown(t testing.TB) *node.Node {
	t.Helper()
	srv := redistest.Start(t)
	dir := t.TempDir()
	_, stop := durNode(t, dir, srv.URL, nil)
	stop()
	srv.Stop()
	n, _ := durNode(t, dir, srv.URL, nil)
	return n
}

// durRevoke revokes through n's admin API, expecting 200.
func durRevoke(t testing.TB, n *node.Node, path, body string) {
	t.Helper()
	e2eAdminJSON(t, n, path, body, http.StatusOK)
}

// TestRevocationFailClosedRedisDown (item 5): revoke with Redis up, stop
// the node, kill Redis, start the node again: the revoked key (by id, by a
// revocation another node made, by subject) and a revoked KOsync JWT are
// refused, good ones work, and local traffic goes on. A node with no saved
// set refuses every key with 1013 until Redis answers.
func TestRevocationFailClosedRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	dir := t.TempDir()
	a, stopA := durNode(t, dir, srv.URL, nil)
	other, stopOther := durNode(t, t.TempDir(), srv.URL, nil)

	byKey, _ := e2eIssue(t, a, "victim")
	byIDKey, byIDClaims := e2eIssue(t, a, "victim2")
	bySubject, _ := e2eIssue(t, a, "carol")
	good, _ := e2eIssue(t, a, "alice")
	revokedJWT, err := a.Kosync.IssueJWT("mallory")
	if err != nil {
		t.Fatal(err)
	}
	goodJWT, err := a.Kosync.IssueJWT("bob")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the subject revocations cover keys issued before them

	durRevoke(t, a, "/api/revoke", fmt.Sprintf(`{"key": %q}`, token.EncodeText(byKey)))
	durRevoke(t, a, "/api/revoke/subject", `{"subject":"kosync:mallory"}`)
	// These two reach A only through the Redis feed.
	durRevoke(t, other, "/api/revoke", fmt.Sprintf(`{"id": %q}`, byIDClaims.ID))
	durRevoke(t, other, "/api/revoke/subject", `{"subject":"carol"}`)
	e2eRefused(t, a, byIDKey, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	e2eRefused(t, a, bySubject, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")

	stopA()
	stopOther()
	srv.Stop()

	n, _ := durNode(t, dir, srv.URL, nil)
	faultWaitReadyz(t, adminURL(n), faultDegraded)
	for _, k := range [][]byte{byKey, byIDKey, bySubject} {
		e2eRefused(t, n, k, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	}
	ksWantBadToken(t, ksDialOpts(t, n.Addr().String(), revokedJWT, nil), "revoked JWT with Redis down")
	ksDial(t, n.Addr().String(), goodJWT)
	// Good keys work, and the node's own clients publish to each other.
	sub := e2eConnectKey(t, n, good)
	send(t, sub, packet.AppendSubscribe(nil, "room"))
	e2ePing(t, sub)
	pub := connect(t, n, "dave")
	send(t, pub, packet.AppendPublish(nil, "room", []byte("local")))
	e2eExpectMessage(t, sub, "room", []byte("local"))
	// A revocation cannot be made durable while Redis is down.
	status, body := faultPost(t, adminURL(n)+"/api/revoke", fmt.Sprintf(`{"key":%q}`, token.EncodeText(good)))
	if status != http.StatusServiceUnavailable {
		t.Fatalf("revoke with Redis down: %d %q, want 503", status, body)
	}

	// No saved set: every key is refused, with "try again later".
	fresh, _ := durNode(t, t.TempDir(), srv.URL, nil)
	e2eRefused(t, fresh, good, websocket.StatusCode(packet.CloseTryAgainLater), "revocations not loaded yet; try again later")
	e2eRefused(t, fresh, byKey, websocket.StatusCode(packet.CloseTryAgainLater), "try again later")
	ksWantBadToken(t, ksDialOpts(t, fresh.Addr().String(), goodJWT, nil), "JWT on a node without a revoked set")
	if v := faultMetric(t, adminURL(fresh), `gateway_auth_failures_total{method="access_key",reason="unavailable"}`); v != 2 {
		t.Errorf("auth failures for reason unavailable = %v, want 2", v)
	}

	// Redis comes back (empty): the fresh node learns the set, from the
	// write-back of the node that kept it.
	srv.Restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := dial(t, fresh)
		e2eAuth(t, c, good)
		typ, msg, err := c.Read(testCtx(t))
		_ = c.CloseNow()
		if err == nil && typ == websocket.MessageBinary && len(decodeAll(t, msg)) == 1 && decodeAll(t, msg)[0].ID == packet.PacketPong {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node without a saved set still refuses a good key 20 s after Redis returned: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, k := range [][]byte{byKey, byIDKey, bySubject} {
		durEventuallyRefused(t, fresh, k)
	}
}

// durEventuallyRefused retries until n refuses key as revoked (a write-back
// announced by another node takes a moment to arrive).
func durEventuallyRefused(t testing.TB, n *node.Node, key []byte) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := dial(t, n)
		e2eAuth(t, c, key)
		_, _, err := c.Read(testCtx(t))
		if err == nil {
			_ = c.CloseNow()
			if time.Now().After(deadline) {
				t.Fatal("a revoked key still authenticates 20 s after Redis returned")
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusCode(packet.CloseUnauthorized) || ce.Reason != "access key revoked" {
			t.Fatalf("revoked key: %v, want 3001 access key revoked", err)
		}
		return
	}
}

// TestRevocationRedisRestartedEmpty (item 16): Redis is killed and a new,
// empty one starts on the same port. The node logs an error, /readyz says
// degraded (redis_data_lost), gateway_redis_data_lost_total moves, the
// node's revocations are back in Redis, and a second node started on that
// Redis (with an empty data dir) refuses the revoked key.
func TestRevocationRedisRestartedEmpty(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	logs := &e2eLockedBuffer{}
	a, _ := durNode(t, t.TempDir(), srv.URL, logs)
	key, claims := e2eIssue(t, a, "victim")
	good, _ := e2eIssue(t, a, "alice")
	durRevoke(t, a, "/api/revoke", fmt.Sprintf(`{"key": %q}`, token.EncodeText(key)))
	if v := faultMetric(t, adminURL(a), "gateway_redis_data_lost_total"); v != 0 {
		t.Fatalf("gateway_redis_data_lost_total = %v before any loss", v)
	}
	faultWaitReadyz(t, adminURL(a), faultReady)

	srv.Restart(t) // kill, then a new empty redis-server on the same port

	faultWaitReadyz(t, adminURL(a), `{"status":"degraded","down":["redis_data_lost"]}`)
	if v := faultMetric(t, adminURL(a), "gateway_redis_data_lost_total"); v != 1 {
		t.Errorf("gateway_redis_data_lost_total = %v, want 1", v)
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "Redis came back without its data") {
		t.Errorf("no error log about the lost Redis data; logs:\n%s", out)
	}
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	idKey := "gateway:revoked:id:" + claims.ID.String()
	exp, err := rc.Get(context.Background(), idKey).Int64()
	if err != nil || exp != claims.Expires.UnixMilli() {
		t.Fatalf("GET %s = %d, %v; want the key's expiry %d written back", idKey, exp, err, claims.Expires.UnixMilli())
	}
	if ttl := rc.PTTL(context.Background(), idKey).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("written-back record's TTL = %v, want the key's remaining life", ttl)
	}

	b, _ := durNode(t, t.TempDir(), srv.URL, nil)
	e2eRefused(t, b, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	e2eRefused(t, a, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	e2ePing(t, e2eConnectKey(t, b, good))
	// The second node saw only the new Redis: nothing lost from its view.
	faultWaitReadyz(t, adminURL(b), faultReady)
	if v := faultMetric(t, adminURL(b), "gateway_redis_data_lost_total"); v != 0 {
		t.Errorf("second node: gateway_redis_data_lost_total = %v, want 0", v)
	}
}
