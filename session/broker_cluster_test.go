package session

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// clusterChannels returns n hub channels per shard of a cluster of masters
// masters (StartCluster's equal slot ranges), for the broker's Redis names
// under pfx.
func clusterChannels(pfx string, masters, n int) [][]string {
	out := make([][]string, masters)
	for i, left := 0, masters*n; left > 0; i++ {
		ch := fmt.Sprintf("room-%d", i)
		sh := slot.Of(pfx+"ch:"+ch) * masters / slot.Count
		if len(out[sh]) < n {
			out[sh] = append(out[sh], ch)
			left--
		}
	}
	return out
}

func startClusterBroker(t *testing.T, c *redistest.Cluster, o RedisBrokerOptions, h BrokerHandler) *RedisBroker {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	o.Client = cc
	return startBroker(t, "", o, h)
}

// startClusterPair starts broker A (publishing) and broker B (whose
// handler it returns) on c with o, each with its NodeID.
func startClusterPair(t *testing.T, c *redistest.Cluster, o RedisBrokerOptions) (a, b *RedisBroker, hb *fakeBrokerHandler) {
	t.Helper()
	hb = &fakeBrokerHandler{}
	o.NodeID = [8]byte{'A'}
	a = startClusterBroker(t, c, o, &fakeBrokerHandler{})
	o.NodeID = [8]byte{'B'}
	b = startClusterBroker(t, c, o, hb)
	return a, b, hb
}

// TestRedisBrokerCluster runs the broker on a real 3-master cluster with a
// replica each: sharded fan-out between two nodes over every shard, then a
// kill -9 of a master under load.
func TestRedisBrokerCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, 1)
	pfx := testPrefix(t)
	ha, hb := &fakeBrokerHandler{}, &fakeBrokerHandler{}
	a := startClusterBroker(t, c, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'A'}}, ha)
	b := startClusterBroker(t, c, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'B'}}, hb)
	groups := clusterChannels(pfx, 3, 8)
	all := slices.Concat(groups...)
	for _, ch := range all {
		a.Subscribe(ch) // A must skip its own publishes
		b.Subscribe(ch)
	}
	waitFor(t, 10*time.Second, "Live of every channel on A and B", func() bool {
		for _, ch := range all {
			if ha.liveCount(ch) != 1 || hb.liveCount(ch) != 1 {
				return false
			}
		}
		return true
	})

	const n = 50
	for i := range n {
		for _, ch := range all {
			if err := a.Publish(ch, fmt.Appendf(nil, "%s/%d", ch, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, 10*time.Second, "every publish on B", func() bool { return hb.deliveredCount() == n*len(all) })
	for _, ch := range all {
		got := hb.payloads(ch)
		for i := range n {
			if want := fmt.Sprintf("%s/%d", ch, i); string(got[i]) != want {
				t.Fatalf("%s: delivery %d is %q, want %q", ch, i, got[i], want)
			}
		}
	}
	for i, m := range c.Masters {
		if calls := commandCalls(t, m.Addr, "spublish"); calls < n*len(groups[i]) {
			t.Errorf("master %d ran %d SPUBLISH, want its %d channels' %d each", i, calls, len(groups[i]), n)
		}
	}
	if ha.deliveredCount() != 0 || ha.reconnectCount()+hb.reconnectCount() != 0 {
		t.Fatalf("A delivered %d of its own; reconnects %d/%d", ha.deliveredCount(), ha.reconnectCount(), hb.reconnectCount())
	}

	// kill -9 of master 1 while A publishes: the other shards keep
	// flowing, B reports the reconnect, and once the replica is promoted
	// its channels flow again, with no restart of either broker.
	dead, alive := groups[1][0], groups[0][0]
	deadBefore, aliveBefore := len(hb.payloads(dead)), len(hb.payloads(alive))
	c.Masters[1].Stop()
	accepted := uint64(n * len(all))
	for i := 0; hb.reconnectCount() == 0 || len(hb.payloads(dead)) == deadBefore; i++ {
		if i == 1500 { // 15 s: an election stalled on a loaded box
			c.TakeOverFailedMasters(t)
		}
		if i > 2500 { // 25 s
			t.Fatalf("no recovery: reconnects %d, deliveries on %s since the kill %d", hb.reconnectCount(), dead, len(hb.payloads(dead))-deadBefore)
		}
		for _, ch := range []string{dead, alive} {
			if a.Publish(ch, []byte("during")) == nil {
				accepted++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(hb.payloads(alive)) - aliveBefore; got == 0 {
		t.Fatalf("%s on a live shard got nothing during the failover", alive)
	}
	// Every accepted publish is accounted for: sent, or counted lost.
	waitFor(t, 20*time.Second, "A's publishes accounted for", func() bool {
		st := a.Stats()
		return st.Published+st.PublishErrors == accepted
	})
	t.Logf("failover: A %+v; B delivered %d of the dead shard's channel, reconnects %d", a.Stats(), len(hb.payloads(dead))-deadBefore, hb.reconnectCount())
	if hb.reconnectCount() != 1 || b.Stats().Reconnects != 1 {
		t.Errorf("B reported %d reconnects (stats %d), want 1: the gap on the failed shard", hb.reconnectCount(), b.Stats().Reconnects)
	}
}
