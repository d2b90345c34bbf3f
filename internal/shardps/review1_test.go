package shardps

import (
	"context"
	"log/slog"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

// A shard that keeps refusing an SSUBSCRIBE (NOPERM: an ACL user without
// the channel, as Redis 7 makes new users by default; CLUSTERDOWN with
// cluster-allow-pubsubshard-when-down no) made the manager reload the
// slot map and resubscribe at once, every round trip: about 1,600 CLUSTER
// SLOTS and SSUBSCRIBEs a second, for as long as the refusal lasted.
// Reloads after a refusal back off like the others (50 ms doubling to
// 1 s); once the shard accepts, the channel is subscribed and confirmed.
func TestRefusedSubscribeBacksOff(t *testing.T) {
	c := redistest.StartCluster(t, 2, 0)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	var logs redistest.LogBuffer
	ps := New(Options{Cluster: cc, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(func() { _ = ps.Close() })
	h := &harness{t: t, ps: ps, cc: cc}
	ch := channelsPerShard(2, 1)[1][0]
	owner := redis.NewClient(&redis.Options{Addr: c.Masters[1].Addr})
	t.Cleanup(func() { _ = owner.Close() })
	ctx := context.Background()
	if err := owner.Do(ctx, "ACL", "SETUSER", "default", "resetchannels").Err(); err != nil {
		t.Fatal(err)
	}

	ps.Subscribe(ch)
	ps.Barrier("b", ch)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "NOPERM") {
		if time.Now().After(deadline) {
			t.Fatalf("no NOPERM refusal logged:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := clusterSlotsCalls(t, c)
	time.Sleep(time.Second) // the window measured: ~1,600 calls without back-off
	n := clusterSlotsCalls(t, c) - before
	t.Logf("%d CLUSTER SLOTS in 1 s of refused SSUBSCRIBEs", n)
	if n > 20 {
		t.Errorf("%d CLUSTER SLOTS in 1 s of refused SSUBSCRIBEs, want at most 20 (back-off)", n)
	}

	if err := owner.Do(ctx, "ACL", "SETUSER", "default", "allchannels").Err(); err != nil {
		t.Fatal(err)
	}
	if v := h.next(); !reflect.DeepEqual(v, Barrier{Name: "b", Channels: []string{ch}}) {
		t.Fatalf("got %#v, want Barrier b listing %s", v, ch)
	}
}

var slotsCallsRE = regexp.MustCompile(`cmdstat_cluster\|slots:calls=(\d+)`)

// clusterSlotsCalls sums the CLUSTER SLOTS calls the masters served.
func clusterSlotsCalls(t *testing.T, c *redistest.Cluster) int {
	t.Helper()
	n := 0
	for _, m := range c.Masters {
		cl := redis.NewClient(&redis.Options{Addr: m.Addr})
		info, err := cl.Info(context.Background(), "commandstats").Result()
		_ = cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		if sm := slotsCallsRE.FindStringSubmatch(info); sm != nil {
			k, _ := strconv.Atoi(sm[1])
			n += k
		}
	}
	return n
}
