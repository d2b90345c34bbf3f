package redismode

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// TestListenFollowsSlotMove: on a cluster, a Listen whose channel's slot
// moves to another master (Redis ends the sharded subscription) subscribes
// again there and receives what is published next.
func TestListenFollowsSlotMove(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 2, 0)
	c := cl.NewClusterClient(t)
	ctx := context.Background()
	const channel = "gateway:control"
	state := startListen(t, c, channel)
	waitFor(t, "the subscription", func() bool { n, _ := state(); return n == 1 })
	if n, err := NumSub(ctx, c, channel); err != nil || n != 1 {
		t.Fatalf("NumSub = %d, %v; want 1", n, err)
	}
	if err := Publish(ctx, c, channel, "before").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first message", func() bool { _, g := state(); return len(g) == 1 })

	s := slot.Of(channel)
	from := cl.Owner(s)
	to := cl.Masters[0]
	if from == to {
		to = cl.Masters[1]
	}
	cl.MoveSlot(t, s, from, to)
	waitFor(t, "the subscription on the new owner", func() bool { n, _ := state(); return n == 2 })
	if err := Publish(ctx, c, channel, "after").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message after the move", func() bool { _, g := state(); return len(g) == 2 })
	if _, g := state(); g[0] != "before" || g[1] != "after" {
		t.Fatalf("received %q", g)
	}
}

// startListen runs Listen on channel until the test ends; state returns
// how many times it subscribed and what it received so far.
func startListen(t *testing.T, c redis.UniversalClient, channel string) (state func() (int, []string)) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	subs, got := 0, []string{}
	done := make(chan error, 1)
	go func() {
		done <- Listen(ctx, c, channel, func() { mu.Lock(); subs++; mu.Unlock() },
			func(p string) { mu.Lock(); got = append(got, p); mu.Unlock() })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	})
	return func() (int, []string) { mu.Lock(); defer mu.Unlock(); return subs, append([]string(nil), got...) }
}

// waitFor polls cond every 10 ms for up to 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestListenFollowsFailover: the master of the channel's slot is killed;
// once its replica is promoted, Listen is subscribed there (go-redis
// reconnects) and receives what is published next.
func TestListenFollowsFailover(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3, 1)
	c := cl.NewClusterClient(t)
	ctx := context.Background()
	const channel = "gateway:revocations"
	state := startListen(t, c, channel)
	waitFor(t, "the subscription", func() bool { n, _ := state(); return n == 1 })
	start := time.Now()
	owner := cl.Owner(slot.Of(channel))
	owner.Stop()
	waitFor(t, "a replica promoted", func() bool { o := cl.Owner(slot.Of(channel)); return o != nil && o != owner })
	waitFor(t, "the subscription on the promoted replica", func() bool { n, _ := state(); return n == 2 })
	t.Logf("resubscribed %v after the kill", time.Since(start).Round(time.Millisecond))
	if err := Publish(ctx, c, channel, "after").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message after the failover", func() bool { _, g := state(); return len(g) == 1 })
}

// TestListenClosedClusterClient: Listen on a closed cluster client returns
// ErrClosed (shardps finds the client closed) instead of waiting forever.
func TestListenClosedClusterClient(t *testing.T) {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	_ = c.Close()
	err := Listen(context.Background(), c, "gateway:control", func() { t.Error("subscribed") }, func(string) { t.Error("message") })
	if err != ErrClosed {
		t.Fatalf("Listen = %v, want ErrClosed", err)
	}
}

// TestListenWarnsThroughSetLogger: on a cluster, the warnings of Listen's
// subscription (here: its shard's connection lost) go to the logger given
// to SetLogger, as the node's other Redis lines do; they went to
// slog.Default(), which ignores the node's --log-format and --log-level.
func TestListenWarnsThroughSetLogger(t *testing.T) {
	t.Parallel()
	var logs redistest.LogBuffer
	SetLogger(slog.New(slog.NewJSONHandler(&logs, nil)))
	cl := redistest.StartCluster(t, 2, 0)
	c := cl.NewClusterClient(t)
	const channel = "gateway:revoked"
	state := startListen(t, c, channel)
	waitFor(t, "the subscription", func() bool { n, _ := state(); return n == 1 })
	owner := cl.Owner(slot.Of(channel))
	owner.Stop()
	want := `"msg":"sharded pub/sub: connection lost; resubscribing","shard":"` + owner.Addr + `"`
	waitFor(t, "the warning in the logger given", func() bool { return strings.Contains(logs.String(), want) })
}
