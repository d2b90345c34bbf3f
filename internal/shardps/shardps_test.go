package shardps

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// channelsPerShard returns n channel names in the slots of each of the
// shards masters of a cluster StartCluster made (equal slot ranges).
func channelsPerShard(masters, n int) [][]string {
	out := make([][]string, masters)
	for i := 0; ; i++ {
		ch := fmt.Sprintf("gateway:ch:room-%d", i)
		sh := slot.Of(ch) * masters / slot.Count
		if len(out[sh]) < n {
			out[sh] = append(out[sh], ch)
		}
		full := true
		for _, g := range out {
			full = full && len(g) == n
		}
		if full {
			return out
		}
	}
}

type harness struct {
	t  *testing.T
	ps *PubSub
	cc *redis.ClusterClient
}

func newHarness(t *testing.T, c *redistest.Cluster) *harness {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	ps := New(Options{Cluster: cc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { _ = ps.Close() })
	return &harness{t: t, ps: ps, cc: cc}
}

// next returns the next output event, failing after 10 s.
func (h *harness) next() any {
	h.t.Helper()
	select {
	case v, ok := <-h.ps.Channel():
		if !ok {
			h.t.Fatal("output channel closed")
		}
		return v
	case <-time.After(10 * time.Second):
		h.t.Fatal("no event within 10 s")
		return nil
	}
}

// barrier asks for a barrier and waits for it, failing on any message
// before it (none is published meanwhile).
func (h *harness) barrier(name string) {
	h.t.Helper()
	h.ps.Barrier(name)
	for {
		switch v := h.next().(type) {
		case Barrier:
			if v.Name == name {
				return
			}
		case Reconnected:
		default:
			h.t.Fatalf("before barrier %s: %#v", name, v)
		}
	}
}

// publishAll SPUBLISHes tag to each channel and checks that exactly the
// want ones arrive, once each, with the exact payload; other events
// (Reconnected, Barrier) are returned.
func (h *harness) publishAll(chans []string, want map[string]bool, tag string) (others []any) {
	h.t.Helper()
	ctx := context.Background()
	n := 0
	for _, ch := range chans {
		if err := h.cc.SPublish(ctx, ch, tag+":"+ch).Err(); err != nil {
			h.t.Fatalf("SPUBLISH %s: %v", ch, err)
		}
		if want[ch] {
			n++
		}
	}
	got := make(map[string]bool)
	for len(got) < n {
		switch v := h.next().(type) {
		case *redis.Message:
			if !want[v.Channel] || got[v.Channel] || v.Payload != tag+":"+v.Channel {
				h.t.Fatalf("unexpected message %q on %s (duplicate: %v)", v.Payload, v.Channel, got[v.Channel])
			}
			got[v.Channel] = true
		default:
			others = append(others, v)
		}
	}
	h.barrier(tag + "-end") // nothing more arrived
	return others
}

func TestSubscribeAcrossShardsAndFailover(t *testing.T) {
	c := redistest.StartCluster(t, 3, 1)
	h := newHarness(t, c)
	groups := channelsPerShard(3, 20)
	var all []string
	want := make(map[string]bool)
	for _, g := range groups {
		all = append(all, g...)
		for _, ch := range g {
			want[ch] = true
		}
	}
	h.ps.Subscribe(all...)
	h.barrier("b1")
	h.publishAll(all, want, "one")

	// Unsubscribe half of each shard's channels.
	for _, g := range groups {
		for _, ch := range g[:10] {
			delete(want, ch)
		}
		h.ps.Unsubscribe(g[:10]...)
	}
	h.barrier("b2")
	h.publishAll(all, want, "two")

	// kill -9 of master 1: its channels come back on the promoted replica.
	c.Masters[1].Stop()
	c.WaitHealthy(t)
	var reconnected []string
	deadline := time.Now().Add(15 * time.Second)
	for len(reconnected) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no Reconnected after the failover")
		}
		select {
		case v := <-h.ps.Channel():
			if r, ok := v.(Reconnected); ok {
				reconnected = append(reconnected, r.Shard)
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	if reconnected[0] != c.Replicas[1][0].Addr {
		t.Errorf("Reconnected from %s, want the promoted replica %s", reconnected[0], c.Replicas[1][0].Addr)
	}
	h.barrier("b3")
	h.publishAll(all, want, "three")
}

func TestSlotMigrationResubscribes(t *testing.T) {
	c := redistest.StartCluster(t, 2, 0)
	h := newHarness(t, c)
	groups := channelsPerShard(2, 3)
	ch := groups[0][0]
	h.ps.Subscribe(ch, groups[1][0])
	h.barrier("b1")
	want := map[string]bool{ch: true, groups[1][0]: true}
	h.publishAll([]string{ch, groups[1][0]}, want, "before")

	// Move ch's (empty) slot from master 0 to master 1, as resharding does.
	src, dst := c.Masters[0], c.Masters[1]
	c.MoveSlot(t, slot.Of(ch), src, dst)
	c.WaitHealthy(t)
	if v, ok := h.next().(Reconnected); !ok || v.Shard != dst.Addr {
		t.Fatalf("after the migration: %#v, want Reconnected from %s", v, dst.Addr)
	}
	h.barrier("b2")
	h.publishAll([]string{ch, groups[1][0]}, want, "after")
}

func TestCloseStopsEverything(t *testing.T) {
	c := redistest.StartCluster(t, 1, 0)
	h := newHarness(t, c)
	h.ps.Subscribe("a", "b")
	h.barrier("b1")
	if err := h.ps.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.ps.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	for range h.ps.Channel() {
	}
	h.ps.Subscribe("c") // after Close: no effect, no block
}

// A PubSub whose cluster client is closed ends by itself, Err telling why:
// without the client it cannot find a shard again (redismode.Listen then
// returns its ErrClosed).
func TestEndsWhenClientClosed(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	_ = cc.Close()
	ps := New(Options{Cluster: cc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer ps.Close()
	ps.Subscribe("x")
	for v := range ps.Channel() {
		t.Fatalf("got %#v from a PubSub without a client", v)
	}
	if err := ps.Err(); err != ErrClientClosed {
		t.Fatalf("Err() = %v, want ErrClientClosed", err)
	}
}
