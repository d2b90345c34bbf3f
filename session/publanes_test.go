package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// freeze stops the redis-server at addr (SIGSTOP) until the returned
// function, also run at the test's end, resumes it (SIGCONT). A stopped
// server keeps its sockets: the kernel takes connections and commands, and
// the server runs them when it resumes.
func freeze(t *testing.T, addr string) (resume func()) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`process_id:(\d+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("no process_id in INFO server of %s", addr)
	}
	pid, _ := strconv.Atoi(m[1])
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}

// commandCalls returns how many times the Redis at addr has run cmd.
func commandCalls(t *testing.T, addr, cmd string) int {
	return infoCount(t, addr, "commandstats", `cmdstat_`+cmd+`:calls=(\d+)`)
}

// errorCount returns how many error replies starting with prefix the Redis
// at addr has given (INFO errorstats).
func errorCount(t *testing.T, addr, prefix string) int {
	return infoCount(t, addr, "errorstats", `errorstat_`+prefix+`:count=(\d+)`)
}

// infoCount returns the number that pattern's group matches in the INFO
// section of the Redis at addr, 0 if it is not there.
func infoCount(t *testing.T, addr, section, pattern string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(pattern).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRedisBrokerPublishTimeoutNotResent: a PUBLISH whose reply times out
// (Redis stopped longer than the read timeout) still runs when Redis
// resumes, so it must not be sent again: it is counted failed, its caller
// is told, and subscribers see it once. The client has go-redis's default
// retries, and its dialer resumes Redis when go-redis dials again (as it
// does to retry a pipeline whose connection timed out), so a retry would
// reach a Redis that runs both copies.
func TestRedisBrokerPublishTimeoutNotResent(t *testing.T) {
	t.Parallel()
	srv := redistest.StartLocal(t)
	pfx := testPrefix(t)
	var resume atomic.Pointer[func()]
	client := redis.NewClient(&redis.Options{
		Addr:        srv.Addr,
		ReadTimeout: 200 * time.Millisecond,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if r := resume.Swap(nil); r != nil {
				(*r)()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	})
	t.Cleanup(func() { _ = client.Close() })
	a := startBroker(t, "", RedisBrokerOptions{Prefix: pfx, Client: client}, &fakeBrokerHandler{})
	ctx := context.Background()
	if err := a.PublishConfirmed(ctx, "warm", []byte("up")); err != nil {
		t.Fatal(err)
	}

	watcher := newRedisClient(t, srv.Addr)
	sub := watcher.Subscribe(ctx, pfx+"ch:room")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscribe reply
		t.Fatal(err)
	}

	r := freeze(t, srv.Addr)
	resume.Store(&r)
	err := a.PublishConfirmed(ctx, "room", []byte("once"))
	if !errors.Is(err, ErrBrokerDown) {
		t.Errorf("publish to a stopped Redis: %v, want ErrBrokerDown", err)
	}
	if resume.Swap(nil) == nil {
		t.Error("go-redis dialed again while the publish was under way: a retry")
	}
	r()
	if err := watcher.Publish(ctx, pfx+"ch:room", "end").Err(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Payload == "end" {
			break
		}
		if !strings.HasSuffix(m.Payload, "once") {
			t.Fatalf("unexpected message %q", m.Payload)
		}
		got++
	}
	calls := commandCalls(t, srv.Addr, "publish")
	st := a.Stats()
	t.Logf("after the timeout: Redis ran %d PUBLISH (1 warm-up, 1 end), subscriber got %d; %+v", calls, got, st)
	if got != 1 || calls != 3 {
		t.Fatalf("the timed-out publish ran %d times, subscriber got %d: want once (sent once, run on resume)", calls-2, got)
	}
	if st.Published != 1 || st.PublishErrors != 1 {
		t.Fatalf("Published %d, PublishErrors %d; want 1 (warm-up) and 1 (the timed-out one)", st.Published, st.PublishErrors)
	}
}

// TestRedisBrokerClusterStoppedShard: with one master stopped (SIGSTOP, no
// replica to take over) the publishes to channels on the other shards are
// delivered, in order, while it stays stopped; the stopped shard's are
// delayed, not lost, and follow in order once it resumes. The client's
// read timeout is longer than the test, so a publisher that waited for
// every shard of a batch would deliver nothing until the resume.
func TestRedisBrokerClusterStoppedShard(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, 0)
	pfx := testPrefix(t)
	ha, hb := &fakeBrokerHandler{}, &fakeBrokerHandler{}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ReadTimeout: time.Minute})
	t.Cleanup(func() { _ = cc.Close() })
	a := startBroker(t, "", RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'A'}, Client: cc}, ha)
	b := startClusterBroker(t, c, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'B'}}, hb)
	groups := clusterChannels(pfx, 3, 2)
	all := slices.Concat(groups...)
	for _, ch := range all {
		b.Subscribe(ch)
	}
	waitFor(t, 10*time.Second, "Live of every channel on B", func() bool {
		for _, ch := range all {
			if hb.liveCount(ch) != 1 {
				return false
			}
		}
		return true
	})
	// Warm up: every shard's lane exists and every channel is known.
	for _, ch := range all {
		if err := a.PublishConfirmed(context.Background(), ch, []byte(ch+"/warm")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the warm-up on B", func() bool { return hb.deliveredCount() == len(all) })

	// small: a broker with queues of 4, for the drops of a full lane.
	small := clusterChannels(pfx+"small:", 3, 1)
	sb := startBroker(t, "", RedisBrokerOptions{Prefix: pfx + "small:", QueueSize: 4, Client: cc}, &fakeBrokerHandler{})
	for _, g := range small {
		if err := sb.PublishConfirmed(context.Background(), g[0], []byte("warm")); err != nil {
			t.Fatal(err)
		}
	}

	resume := freeze(t, c.Masters[1].Addr)
	stopped := fillStoppedLane(t, sb, small)
	const n = 20
	publish := func(channels []string) {
		t.Helper()
		for i := range n {
			for _, ch := range channels {
				if err := a.Publish(ch, fmt.Appendf(nil, "%s/%d", ch, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	publish(groups[1]) // first, so a batch for them is in flight and stuck
	healthy := slices.Concat(groups[0], groups[2])
	publish(healthy)
	waitFor(t, 15*time.Second, "the healthy shards' publishes on B while master 1 is stopped", func() bool {
		return hb.deliveredCount() == len(all)+n*len(healthy)
	})
	st := a.Stats()
	if want := uint64(len(all) + n*len(healthy)); st.Published != want || st.PublishErrors != 0 || st.Dropped != 0 {
		t.Fatalf("while stopped: %+v, want Published %d (warm-up and healthy shards) and no loss", st, want)
	}
	resume()
	waitFor(t, 20*time.Second, "the stopped shard's publishes on B after it resumed", func() bool {
		return hb.deliveredCount() == len(all)*(n+1)
	})
	for _, ch := range all {
		got := hb.payloads(ch)
		for i := range n {
			if want := fmt.Sprintf("%s/%d", ch, i); string(got[i+1]) != want {
				t.Fatalf("%s: delivery %d is %q, want %q", ch, i+1, got[i+1], want)
			}
		}
	}
	if st := a.Stats(); st.Published != uint64(len(all)*(n+1)) || st.PublishErrors != 0 {
		t.Fatalf("after the resume: %+v, want every publish sent", st)
	}
	stopped.check(t)
}

// TestRedisBrokerClusterMovedFollowed: publish commands are NoRetry, yet a
// publisher whose slot map is stale after a slot moved still publishes:
// go-redis follows the MOVED reply (a redirect, not a retry), and the
// channel's publishes arrive in order on the new owner.
func TestRedisBrokerClusterMovedFollowed(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 2, 0)
	pfx := testPrefix(t)
	a, b, hb := startClusterPair(t, c, RedisBrokerOptions{Prefix: pfx})
	ch := clusterChannels(pfx, 2, 1)[0][0]
	b.Subscribe(ch)
	waitFor(t, 10*time.Second, "Live on B", func() bool { return hb.liveCount(ch) == 1 })
	ctx := context.Background()
	if err := a.PublishConfirmed(ctx, ch, []byte("before")); err != nil {
		t.Fatal(err)
	}

	src, dst := c.Masters[0], c.Masters[1]
	c.MoveSlot(t, slot.Of(pfx+"ch:"+ch), src, dst)
	waitFor(t, 10*time.Second, "B subscribed on the new owner", func() bool { return hb.reconnectCount() == 1 })
	movedBefore := errorCount(t, src.Addr, "MOVED")
	const n = 10
	for i := range n {
		if err := a.PublishConfirmed(ctx, ch, fmt.Appendf(nil, "after/%d", i)); err != nil {
			t.Fatalf("publish %d after the move: %v", i, err)
		}
	}
	waitFor(t, 10*time.Second, "the publishes on B", func() bool { return len(hb.payloads(ch)) == n+1 })
	for i, p := range hb.payloads(ch)[1:] {
		if want := fmt.Sprintf("after/%d", i); string(p) != want {
			t.Fatalf("delivery %d is %q, want %q", i+1, p, want)
		}
	}
	if moved := errorCount(t, src.Addr, "MOVED") - movedBefore; moved == 0 {
		t.Fatal("the old owner answered no MOVED: the publisher's slot map was not stale, nothing was redirected")
	}
	if st := a.Stats(); st.Published != n+1 || st.PublishErrors != 0 {
		t.Fatalf("%+v, want %d published and no error", st, n+1)
	}
}

// stoppedLane is the outcome of fillStoppedLane: k PublishConfirmed calls
// on a stopped shard's channel, of which busy were answered so far.
type stoppedLane struct {
	sb   *RedisBroker
	k    int
	busy int
	errs chan error
}

// fillStoppedLane, with master 1 stopped, makes k PublishConfirmed calls on
// sb (queues of 4) for a channel of master 1, more than a batch and the
// queues can hold: some are answered ErrBrokerBusy at once (dropped by a
// stalled lane, or refused by the full queue), while a channel of master 0
// still publishes.
func fillStoppedLane(t *testing.T, sb *RedisBroker, small [][]string) *stoppedLane {
	t.Helper()
	const k = redisPublishBatch + 88
	ctx := context.Background()
	h := &stoppedLane{sb: sb, k: k, errs: make(chan error, k)}
	for i := range k {
		go func() { h.errs <- sb.PublishConfirmed(ctx, small[1][0], fmt.Appendf(nil, "%d", i)) }()
	}
	if err := <-h.errs; !errors.Is(err, ErrBrokerBusy) || errors.Is(err, ErrBrokerDown) {
		t.Fatalf("a publish to the stopped shard answered %v before it resumed, want ErrBrokerBusy", err)
	}
	h.busy++
	// The dispatcher may have waited once for the stopped shard's full
	// lane, up to redisLaneStall; the small queue may have filled meanwhile.
	for range 5 {
		waitFor(t, 5*time.Second, "a healthy shard's publish accepted", func() bool {
			err := sb.PublishConfirmed(ctx, small[0][0], []byte("live"))
			if err != nil && !errors.Is(err, ErrBrokerBusy) {
				t.Fatalf("publish to a healthy shard while the stopped shard's lane is full: %v", err)
			}
			return err == nil
		})
	}
	if st := sb.Stats(); st.Published != 3+5 || st.PublishErrors != 0 {
		t.Fatalf("%+v: want 8 published (warm-up, healthy) and no error", st)
	}
	return h
}

// check, once the shard resumed, waits for the rest of the calls: each
// was either dropped (ErrBrokerBusy) or delayed and sent, none failed.
func (h *stoppedLane) check(t *testing.T) {
	t.Helper()
	sent := 0
	for range h.k - 1 {
		switch err := <-h.errs; {
		case err == nil:
			sent++
		case errors.Is(err, ErrBrokerBusy) && !errors.Is(err, ErrBrokerDown):
			h.busy++
		default:
			t.Fatalf("a publish to the stopped shard: %v, want sent after the resume or ErrBrokerBusy", err)
		}
	}
	st := h.sb.Stats()
	t.Logf("small queues: %d of %d publishes to the stopped shard held and sent after it resumed, %d dropped; %+v", sent, h.k, h.busy, st)
	if sent == 0 || st.Published != uint64(3+5+sent) || st.PublishErrors != 0 || st.Dropped < uint64(h.busy) {
		t.Fatalf("%+v: want %d published, no error, at least %d dropped", st, 3+5+sent, h.busy)
	}
}

// BenchmarkClusterDispatchRoute measures the dispatcher's routing of one
// publish on a real 3-master cluster: Redis name (cached), slot, pending
// count and owner lane from go-redis's slot map. It must not allocate.
func BenchmarkClusterDispatchRoute(b *testing.B) {
	c := redistest.StartCluster(b, 3, 0)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	br := NewRedisBroker(RedisBrokerOptions{Client: cc, Logger: testLogger(b)})
	defer br.Close()
	br.cluster = cc
	d := newDispatcher(br)
	chans := make([]string, 64)
	for i := range chans {
		chans[i] = fmt.Sprintf("room-%d", i)
	}
	route := func(i int) {
		it := pubItem{channel: chans[i%len(chans)]}
		it.name = d.names.get(br, it.channel)
		d.route(&it)
		d.pending[it.slot].Add(-1) // answered at once
	}
	for i := range chans { // the slot map, the names and the lanes
		route(i)
	}
	if len(d.lanes) != 3 {
		b.Fatalf("%d lanes for 64 channels on 3 masters, want 3", len(d.lanes))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		route(i)
	}
	b.StopTimer()
	d.closeLanes()
	br.wg.Wait()
}

// BenchmarkClusterRetireCheck measures the dispatcher's periodic lane
// check (every redisLaneCheck) on a real 3-master cluster with 64 channels
// routed and every lane a master's: nothing is retired.
func BenchmarkClusterRetireCheck(b *testing.B) {
	c := redistest.StartCluster(b, 3, 0)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	br := NewRedisBroker(RedisBrokerOptions{Client: cc, Logger: testLogger(b)})
	defer br.Close()
	br.cluster = cc
	d := newDispatcher(br)
	for i := range 64 {
		it := pubItem{channel: fmt.Sprintf("room-%d", i)}
		it.name = d.names.get(br, it.channel)
		d.route(&it)
		d.pending[it.slot].Add(-1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.retireLanes()
	}
	b.StopTimer()
	if len(d.lanes) != 3 {
		b.Fatalf("%d lanes left, want the 3 masters'", len(d.lanes))
	}
	d.closeLanes()
	br.wg.Wait()
}

// BenchmarkClusterBrokerPublish is BenchmarkRedisBrokerPublish on a real
// 3-master cluster, over channels of every shard: Publish, the dispatcher
// and a lane per shard, until Redis has taken every publish.
func BenchmarkClusterBrokerPublish(bm *testing.B) {
	c := redistest.StartCluster(bm, 3, 0)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	b := startBroker(bm, "", RedisBrokerOptions{Client: cc, Logger: testLogger(bm)}, &fakeBrokerHandler{})
	chans := slices.Concat(clusterChannels(DefaultRedisPrefix, 3, 4)...)
	payload := bytes.Repeat([]byte("x"), 128)
	bm.ReportAllocs()
	bm.SetBytes(int64(len(payload)))
	var accepted, refused uint64
	bm.ResetTimer()
	for i := range bm.N {
		for b.Publish(chans[i%len(chans)], payload) != nil {
			refused++
			runtime.Gosched()
		}
		accepted++
	}
	// Include the time to get everything accepted to Redis (or dropped by
	// a full lane: Dropped beyond the refusals).
	for {
		st := b.Stats()
		if laneDrops := st.Dropped - refused; st.Published+st.PublishErrors+laneDrops >= accepted {
			if st.PublishErrors != 0 {
				bm.Fatalf("stats %+v", st)
			}
			bm.ReportMetric(float64(laneDrops)/float64(bm.N), "lanedrops/op")
			break
		}
		runtime.Gosched()
	}
}

// laneAddrs returns the addresses of the broker's lanes, in no order.
func laneAddrs(b *RedisBroker) []string {
	b.lanes.mu.Lock()
	defer b.lanes.mu.Unlock()
	var out []string
	for _, l := range b.lanes.all {
		out = append(out, l.addr)
	}
	return out
}

// TestRedisBrokerClusterFailoverLaneRetired: a broker that publishes on
// one shard only (raw channels, which Publish refuses while Redis is
// down) has one lane; when that shard's master is killed the lane fails
// and Redis counts as down. Once the replica has taken over, the old
// master's lane is retired (its address owns no slot, nothing is pending
// on it), Redis is no longer down, and the channel publishes again, in
// order, on a lane of the new master. A lane kept for the dead address
// left the broker down for good: its PINGs go to the dead address, and no
// raw publish got through to start the new master's lane.
func TestRedisBrokerClusterFailoverLaneRetired(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, 1)
	pfx := testPrefix(t)
	raw := func(string) bool { return true }
	a, b, hb := startClusterPair(t, c, RedisBrokerOptions{Prefix: pfx, Raw: raw})
	ch := clusterChannels(pfx, 3, 1)[1][0]
	b.Subscribe(ch)
	waitFor(t, 10*time.Second, "Live on B", func() bool { return hb.liveCount(ch) == 1 })
	ctx := context.Background()
	if err := a.PublishConfirmed(ctx, ch, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	victim, standby := c.Masters[1], c.Replicas[1][0]
	if got := laneAddrs(a); !slices.Equal(got, []string{victim.Addr}) {
		t.Fatalf("lanes %q, want the one of master 1 %s", got, victim.Addr)
	}

	victim.Stop()
	waitFor(t, 10*time.Second, "A down after the kill", func() bool {
		_ = a.PublishConfirmed(ctx, ch, []byte("lost"))
		return a.Down()
	})
	c.WaitHealthy(t)
	waitFor(t, 4*redisLaneCheck, "a raw publish accepted after the failover", func() bool {
		return a.PublishConfirmed(ctx, ch, []byte("back")) == nil
	})
	if got := laneAddrs(a); !slices.Equal(got, []string{standby.Addr}) {
		t.Fatalf("lanes %q after the failover, want only the new master's %s", got, standby.Addr)
	}
	waitFor(t, 10*time.Second, "B subscribed on the new master", func() bool { return hb.reconnectCount() >= 1 })
	const n = 20
	for i := range n {
		if err := a.PublishConfirmed(ctx, ch, fmt.Appendf(nil, "after/%d", i)); err != nil {
			t.Fatalf("publish %d after the failover: %v", i, err)
		}
	}
	var after []string
	waitFor(t, 10*time.Second, "the publishes after the failover on B", func() bool {
		after = after[:0]
		for _, p := range hb.payloads(ch) {
			if bytes.HasPrefix(p, []byte("after/")) {
				after = append(after, string(p))
			}
		}
		return len(after) == n
	})
	for i, p := range after {
		if want := fmt.Sprintf("after/%d", i); p != want {
			t.Fatalf("delivery %d after the failover is %q, want %q", i, p, want)
		}
	}
	if st := a.Stats(); st.Down || st.QueueLen != 0 {
		t.Fatalf("%+v: want up, nothing queued", st)
	}
}
