package test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// sentinelFailoverWait bounds the promotion of the replica after the
// master is killed (down-after 500 ms, then the sentinel's election and
// SLAVEOF NO ONE; about 2-4 s here) and, again, the nodes' recovery.
const sentinelFailoverWait = 15 * time.Second

// TestSentinelFailover: two nodes on a master with one replica and one
// Sentinel (--redis-sentinel), master and replica with requirepass (the
// replica and the Sentinel authenticate with masterauth and auth-pass, the
// nodes with GATEWAY_REDIS_PASSWORD). Fan-out crosses the nodes; the
// master is killed (kill -9); once the Sentinel has promoted the replica, a
// publish on A reaches B again and a key revoked on A closes its session
// on B with 3004, with no restart of either node: the nodes authenticate to
// the promoted replica as they did to the master.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	start := time.Now()
	const password = "failover-s3cret"
	master := redistest.StartLocal(t, redistest.WithAuth(redistest.Auth{Password: password}))
	replica := master.StartReplica(t)
	sn := redistest.StartSentinel(t, "m", master)
	if got := sn.MasterAddr("m"); got != master.Addr {
		t.Fatalf("sentinel names master %q, want %q", got, master.Addr)
	}
	onSentinel := func(c *node.Config) { c.RedisSentinel, c.RedisPassword = "m@"+sn.Addr, password }
	a, b := startNode(t, onSentinel), startNode(t, onSentinel)
	t.Logf("master %s, replica %s, sentinel %s, nodes up after %v", master.Addr, replica.Addr, sn.Addr, time.Since(start))

	subB := connect(t, b, "bob")
	subscribe(t, subB, "room")
	pub := connect(t, a, "alice")
	send(t, pub, packet.AppendPublish(nil, "room", []byte("before")))
	e2eExpectMessage(t, subB, "room", []byte("before"))
	key, claims := e2eIssue(t, a, "victim")
	victim := e2eConnectKey(t, b, key)

	master.Stop() // SIGKILL
	killed := time.Now()
	for sn.MasterAddr("m") != replica.Addr {
		if time.Since(killed) > sentinelFailoverWait {
			t.Fatalf("sentinel did not promote %s within %v (names %q)", replica.Addr, sentinelFailoverWait, sn.MasterAddr("m"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("replica promoted %v after the kill", time.Since(killed))

	// Publish markers until one comes through; those sent during the
	// switch may be lost.
	ctx, cancel := context.WithTimeout(context.Background(), sentinelFailoverWait)
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
	{ // the first message after the failover must be one of the markers
		typ, msg, err := subB.Read(ctx)
		if err != nil {
			t.Fatalf("no publish of A reached B within %v of the failover: %v", sentinelFailoverWait, err)
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
	t.Logf("fan-out back %v after the kill", time.Since(killed))

	m := e2eAdminJSON(t, a, "/api/revoke", fmt.Sprintf(`{"id": %q}`, claims.ID), http.StatusOK)
	e2eWantFields(t, m, map[string]any{"revoked": true, "id": claims.ID.String()})
	expectClose(t, victim, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	e2eRefused(t, b, key, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	t.Logf("revocation crossed %v after the kill; whole test %v", time.Since(killed), time.Since(start))
}
