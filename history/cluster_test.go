package history

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// TestRedisStoreCluster runs the store tests on one 3-master Redis
// Cluster, then appends and publishes on channels spread over all three
// masters: each channel's keys live on the master of its pub/sub channel,
// and a sharded subscriber (SSUBSCRIBE) receives what the script
// SPUBLISHed.
func TestRedisStoreCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	c := cl.NewClusterClient(t)
	seq := 0
	open := func(size int, o Options) *RedisStore {
		seq++
		o.Size, o.TTL, o.MetaTTL = size, cmp.Or(o.TTL, 300*time.Millisecond), time.Hour
		return NewRedisStore(c, fmt.Sprintf("t%d:", seq), o)
	}
	under := func(s *RedisStore) storeUnderTest {
		return storeUnderTest{s, func() { time.Sleep(s.opts.TTL + 100*time.Millisecond) }}
	}
	for _, tc := range []struct {
		name string
		size int
		fn   func(*testing.T, storeUnderTest)
	}{
		{"Recovery", 3, testRecovery},
		{"EpochBeforeFirstPublish", 10, testEpochBeforeFirstPublish},
		{"ConcurrentAppends", 1000, testConcurrentAppends},
		{"Read", 3, testRead},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, under(open(tc.size, Options{}))) })
	}
	t.Run("RecoverWithinBound", func(t *testing.T) { testRecoverWithinBound(t, open(200, Options{})) })

	t.Run("AppendPublishOverAllShards", func(t *testing.T) {
		s := open(10, Options{TTL: time.Minute})
		testPublishOverAllShards(t, cl, c, s, func(ch string) string { return s.pfx + "ch:" + ch })
	})
	t.Run("RedisChannelMapping", func(t *testing.T) {
		name := func(ch string) string { return "raw{" + ch + "}" } // braces: the tag is the slot's
		testPublishOverAllShards(t, cl, c, open(10, Options{TTL: time.Minute, RedisChannel: name}), name)
	})
}

// testPublishOverAllShards appends to 24 channels with AppendPublish and
// QueueAppendPublish (a cluster pipeline) and checks where the keys live
// and what a sharded subscriber of each pub/sub channel receives.
func testPublishOverAllShards(t *testing.T, cl *redistest.Cluster, c *redis.ClusterClient, s *RedisStore, name func(string) string) {
	ctx := context.Background()
	masters := map[*redistest.Server]bool{}
	subs := map[string]*redis.PubSub{}
	for i := range 24 {
		ch := fmt.Sprintf("room%d", i)
		ps := c.SSubscribe(ctx, name(ch))
		t.Cleanup(func() { _ = ps.Close() })
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		subs[ch] = ps
	}
	want := func(pos Position, payload string) string {
		b := []byte("H")
		b = binary.BigEndian.AppendUint64(b, uint64(pos.Epoch))
		b = binary.BigEndian.AppendUint64(b, uint64(pos.Offset))
		return string(append(b, payload...))
	}
	pipe := c.Pipeline()
	queued := map[string]*redis.Cmd{}
	for ch := range subs {
		pos, err := s.AppendPublish(ctx, ch, []byte("one"), name(ch), []byte("H"))
		if err != nil || pos.Offset != 1 {
			t.Fatalf("AppendPublish(%s): %+v, %v", ch, pos, err)
		}
		if m, err := subs[ch].ReceiveMessage(ctx); err != nil || m.Payload != want(pos, "one") {
			t.Fatalf("%s: received %q, %v; want %q", ch, m.Payload, err, want(pos, "one"))
		}
		queued[ch] = s.QueueAppendPublish(ctx, pipe, ch, []byte("two"), name(ch), []byte("H"))
		k := s.keys(ch)
		owner := cl.Owner(slot.Of(name(ch)))
		if cl.Holder(t, k[0]) != owner || cl.Holder(t, k[1]) != owner {
			t.Fatalf("%s: keys %q on %v and %v, want the pub/sub channel's master %v", ch, k, cl.Holder(t, k[0]), cl.Holder(t, k[1]), owner)
		}
		masters[owner] = true
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for ch, cmd := range queued {
		pos, err := ReadPosition(cmd)
		if err != nil || pos.Offset != 2 {
			t.Fatalf("QueueAppendPublish(%s): %+v, %v", ch, pos, err)
		}
		if m, err := subs[ch].ReceiveMessage(ctx); err != nil || m.Payload != want(pos, "two") {
			t.Fatalf("%s: received %q, %v; want %q", ch, m.Payload, err, want(pos, "two"))
		}
		if _, pubs, err := s.Read(ctx, ch, 0); err != nil || len(pubs) != 2 || string(pubs[1].Payload) != "two" {
			t.Fatalf("Read(%s): %+v, %v", ch, pubs, err)
		}
	}
	if len(masters) != 3 {
		t.Fatalf("channels on %d masters, want 3", len(masters))
	}
}
