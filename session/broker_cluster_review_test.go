package session

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// shardNumSub returns PUBSUB SHARDNUMSUB of name on its slot's owner.
func shardNumSub(t *testing.T, c *redistest.Cluster, name string) int64 {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.Owner(slot.Of(name)).Addr})
	defer rc.Close()
	m, err := rc.PubSubShardNumSub(context.Background(), name).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m[name]
}

// TestRedisBrokerClusterSubscribeUnsubscribeSubscribe is
// TestRedisBrokerSubscribeUnsubscribeSubscribe on a cluster, the two
// channels on different shards: no Live after an Unsubscribe, a Live for
// the last Subscribe, exactly one subscription in Redis, and no
// Reconnected from the flips; then, with one master dead, channels on the
// other shard still go Live.
func TestRedisBrokerClusterSubscribeUnsubscribeSubscribe(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 2, 0)
	pfx := testPrefix(t)
	a, b, hb := startClusterPair(t, c, RedisBrokerOptions{Prefix: pfx})
	groups := clusterChannels(pfx, 2, 1)
	gone, r := groups[0][0], groups[1][0]

	b.Subscribe(gone)
	b.Unsubscribe(gone)
	hb.mark("unsubscribed gone")
	b.Subscribe(r)
	b.Unsubscribe(r)
	hb.mark("unsubscribed r")
	b.Subscribe(r)
	waitFor(t, 5*time.Second, "Live(r) for the last Subscribe", func() bool {
		return slices.Contains(hb.eventsAfter("unsubscribed r"), "live:"+r)
	})
	if ev := hb.eventsAfter("unsubscribed gone"); slices.Contains(ev, "live:"+gone) {
		t.Fatalf("Live(gone) after Unsubscribe(gone): %q", ev)
	}
	if n := shardNumSub(t, c, pfx+"ch:"+r); n != 1 {
		t.Fatalf("SHARDNUMSUB r = %d, want 1", n)
	}
	if n := shardNumSub(t, c, pfx+"ch:"+gone); n != 0 {
		t.Fatalf("SHARDNUMSUB gone = %d, want 0", n)
	}
	a.Publish(r, []byte("x"))
	waitFor(t, 5*time.Second, "delivery", func() bool { return len(hb.payloads(r)) == 1 })

	for range 50 {
		b.Unsubscribe(r)
		b.Subscribe(r)
		b.Subscribe(gone)
		b.Unsubscribe(gone)
		runtime.Gosched()
	}
	b.Unsubscribe(r)
	hb.mark("flipped r")
	b.Subscribe(r)
	waitFor(t, 5*time.Second, "Live(r) after flips", func() bool {
		return slices.Contains(hb.eventsAfter("flipped r"), "live:"+r)
	})
	a.Publish(r, []byte("y"))
	waitFor(t, 5*time.Second, "delivery after flips", func() bool { return len(hb.payloads(r)) == 2 })
	if n := shardNumSub(t, c, pfx+"ch:"+r); n != 1 {
		t.Fatalf("SHARDNUMSUB r = %d, want 1", n)
	}
	if n := shardNumSub(t, c, pfx+"ch:"+gone); n != 0 {
		t.Fatalf("SHARDNUMSUB gone = %d, want 0", n)
	}
	if n := hb.reconnectCount(); n != 0 {
		t.Fatalf("spurious Reconnected: %d", n)
	}

	// Master 1 dies for good (no replica): a channel subscribed on shard 0
	// still goes Live and gets its publishes, even after one subscribed
	// on the dead shard, which stays waiting.
	more := clusterChannels(pfx, 2, 2)
	onLive, onDead := more[0][1], more[1][1]
	c.Masters[1].Stop()
	b.Subscribe(onDead)
	hb.mark("master 1 down")
	b.Subscribe(onLive)
	waitFor(t, 5*time.Second, "Live on the live shard while the other is down", func() bool {
		return slices.Contains(hb.eventsAfter("master 1 down"), "live:"+onLive)
	})
	a.Publish(onLive, []byte("z"))
	waitFor(t, 5*time.Second, "delivery on the live shard", func() bool { return len(hb.payloads(onLive)) == 1 })
	if hb.liveCount(onDead) != 0 {
		t.Fatalf("Live(%s) on the dead shard", onDead)
	}
}

// On a cluster a round's channels are confirmed shard by shard, in any
// order: a channel whose shard is down stays at the head of the awaiting
// queue while later rounds are confirmed behind it. The queue must not
// keep those confirmed entries (it grew with every Subscribe until the
// shard came back), and the stuck channel still goes Live when its shard
// answers.
func TestRedisBrokerAwaitingOutOfOrder(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = cc.Close() })
	b := NewRedisBroker(RedisBrokerOptions{Client: cc}) // not started: the test is its reader
	h := &fakeBrokerHandler{}
	b.h = h
	const rounds = 5000
	for r := uint64(1); r <= rounds; r++ {
		ch := fmt.Sprintf("room-%d", r)
		s := &redisSub{}
		b.subs[ch] = s
		b.awaiting = append(b.awaiting, awaitLive{channel: ch, name: b.redisName(ch), sub: s, round: r})
	}
	for r := uint64(2); r <= rounds; r++ {
		b.barrier(r, []string{b.redisName(fmt.Sprintf("room-%d", r))})
	}
	if n := len(b.awaiting); n > 2048 {
		t.Fatalf("%d awaiting entries kept for 1 channel still waiting", n)
	}
	if h.liveCount("room-1") != 0 || h.liveCount("room-2") != 1 || h.liveCount(fmt.Sprintf("room-%d", rounds)) != 1 {
		t.Fatal("wrong channels live")
	}
	b.barrier(1, []string{b.redisName("room-1")})
	if h.liveCount("room-1") != 1 || len(b.awaiting) != 0 {
		t.Fatalf("room-1 live %d times, %d entries left; want 1 and 0", h.liveCount("room-1"), len(b.awaiting))
	}
}
