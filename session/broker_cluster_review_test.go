package session

import (
	"context"
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
	hb := &fakeBrokerHandler{}
	a := startClusterBroker(t, c, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'A'}}, &fakeBrokerHandler{})
	b := startClusterBroker(t, c, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'B'}}, hb)
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
