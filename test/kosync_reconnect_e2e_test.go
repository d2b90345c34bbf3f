package test

import (
	"errors"
	"testing"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/internal/redistest"
)

// TestKosyncRedisReconnectClosesSubscribers: a KOsync socket that stays
// open through a Redis reconnect of its node may have missed announces made
// on other nodes meanwhile. The node closes it with 1012 and a reason
// naming documents.all, so the client reconnects and refetches
// (kosync/README.md); a socket that never subscribed missed nothing and
// stays open.
func TestKosyncRedisReconnectClosesSubscribers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	key := ksRegister(t, ksBase(a), "alice", "alice-pw")
	tok := ksJWT(t, ksBase(a), "alice", key)
	subscribed := ksDial(t, b.Addr().String(), tok)
	ksSubscribe(t, subscribed)
	idle := ksDial(t, b.Addr().String(), tok)

	srv.Restart(t)

	_, msg, err := subscribed.Read(testCtx(t))
	if err == nil {
		t.Fatalf("subscribed socket on B after the Redis restart: got message %s, want close 1012", msg)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("subscribed socket on B ended without a close frame (want 1012): %v", err)
	}
	const wantReason = "announces may have been missed; reconnect and call documents.all"
	if ce.Code != 1012 || ce.Reason != wantReason {
		t.Fatalf("subscribed socket on B closed with %d %q, want 1012 %q", ce.Code, ce.Reason, wantReason)
	}
	// The unsubscribed socket still answers (an RPC that needs no store).
	ksSend(t, idle, `{"type":"rpc","payload":{"method":"nope"}}`)
	ksWant(t, idle, "unknown method on the unsubscribed socket after the restart", ksRPCErr("nope", "Unknown RPC method: 'nope'"))
}
