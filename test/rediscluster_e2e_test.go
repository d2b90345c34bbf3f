package test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/client"
	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Gateway processes on a Redis Cluster (--redis-cluster, issue 15): three
// masters with one replica each, two nodes, every use of Redis spread over
// the shards. Fan-out, revocation, KOsync announces and history cross the
// nodes on channels of every shard; then one master is killed (kill -9)
// during a fan-out. Helpers start with "rc".

// rcPrefix is the --redis-prefix of these tests (the default): the Redis
// channel of hub channel C is rcPrefix+"ch:"+C, sharded by its slot.
const rcPrefix = "gateway:"

// rcRedisChannel is the Redis channel that carries hub channel ch.
func rcRedisChannel(ch string) string { return rcPrefix + "ch:" + ch }

// rcShardOf returns the shard of cl (i for Masters[i] and its replicas:
// a loaded machine may have failed a master over already) that serves the
// Redis channel (or key) name now.
func rcShardOf(t testing.TB, cl *redistest.Cluster, name string) int {
	t.Helper()
	owner := cl.Owner(slot.Of(name))
	for i, m := range cl.Masters {
		if owner != nil && (m == owner || slices.Contains(cl.Replicas[i], owner)) {
			return i
		}
	}
	t.Fatalf("slot %d of %q is served by no node of the cluster", slot.Of(name), name)
	return -1
}

// rcByShard returns, for each master of cl, perShard hub channels
// fmt.Sprintf(format, i) (i = 0, 1, ...) whose Redis channels it owns.
func rcByShard(t testing.TB, cl *redistest.Cluster, perShard int, format string) [][]string {
	t.Helper()
	out := make([][]string, len(cl.Masters))
	for i, full := 0, 0; full < len(out); i++ {
		ch := fmt.Sprintf(format, i)
		s := rcShardOf(t, cl, rcRedisChannel(ch))
		if len(out[s]) < perShard {
			if out[s] = append(out[s], ch); len(out[s]) == perShard {
				full++
			}
		}
	}
	return out
}

// rcRedis is a plain client of one node of the cluster, closed at the end.
func rcRedis(t testing.TB, s *redistest.Server) *redis.Client {
	rc := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// rcPubSubConns returns the number of pub/sub connections (CLIENT LIST
// TYPE pubsub) of each shard of cl, on whichever of its nodes.
func rcPubSubConns(t testing.TB, cl *redistest.Cluster) []int {
	t.Helper()
	out := make([]int, len(cl.Masters))
	for s, m := range cl.Masters {
		for _, n := range append([]*redistest.Server{m}, cl.Replicas[s]...) {
			list, err := rcRedis(t, n).Do(testCtx(t), "CLIENT", "LIST", "TYPE", "pubsub").Text()
			if err != nil {
				t.Fatal(err)
			}
			out[s] += strings.Count(list, "\n")
		}
	}
	return out
}

// rcWantSharded checks that the master serving each channel of byShard
// counts nodes sharded subscribers of its Redis channel (PUBSUB
// SHARDNUMSUB: SSUBSCRIBE, not SUBSCRIBE), and that subscribing them
// added at most one pub/sub connection per node to each shard (before:
// rcPubSubConns before the subscriptions), not one per channel.
func rcWantSharded(t testing.TB, cl *redistest.Cluster, byShard [][]string, nodes int, before []int) {
	t.Helper()
	ctx := testCtx(t)
	after := rcPubSubConns(t, cl)
	for s, chans := range byShard {
		for _, ch := range chans {
			n, err := rcRedis(t, cl.Owner(slot.Of(rcRedisChannel(ch)))).PubSubShardNumSub(ctx, rcRedisChannel(ch)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := n[rcRedisChannel(ch)]; got != int64(nodes) {
				t.Errorf("shard %d: PUBSUB SHARDNUMSUB %s = %d, want %d (one per node)", s, rcRedisChannel(ch), got, nodes)
			}
		}
		if after[s]-before[s] > nodes {
			t.Errorf("shard %d: %d pub/sub connections before %d channels of its were subscribed on %d nodes, %d after: want at most one more per node", s, before[s], len(chans), nodes, after[s])
		}
	}
}

// TestRedisCluster runs two gateway processes on a 3-master cluster with
// one replica each: the cross-node scenarios in parallel, then the
// failover of one master, on the same cluster and processes.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	cl := redistest.StartCluster(t, 3, 1)
	c := &hrCluster{env: e2eEnv(hrSecret), seeds: cl.Addrs(), prefix: rcPrefix, keys: t.TempDir()}
	a, b := c.serve(t, hrNewAddrs(t)), c.serve(t, hrNewAddrs(t))
	t.Logf("cluster %v and two nodes up in %v", cl.Addrs(), time.Since(start))
	t.Run("AcrossNodes", func(t *testing.T) {
		t.Run("Fanout", func(t *testing.T) { t.Parallel(); rcFanout(t, cl, c, a, b) })
		t.Run("Revocation", func(t *testing.T) { t.Parallel(); rcRevocation(t, c, a, b) })
		t.Run("Kosync", func(t *testing.T) { t.Parallel(); rcKosync(t, cl, a, b) })
		t.Run("History", func(t *testing.T) { t.Parallel(); rcHistory(t, cl, c, a, b) })
	})
	t.Run("Failover", func(t *testing.T) { rcFailover(t, cl, c, a, b) })
	t.Logf("whole test %v", time.Since(start))
}

// rcPayload is the exact payload publisher pub sends as its i-th publish
// on ch: readable, then i%7 times three bytes including 00 and ff.
func rcPayload(pub, ch string, i int) []byte {
	return append(fmt.Appendf(nil, "%s|%s|%d|", pub, ch, i), bytes.Repeat([]byte{byte(i), 0x00, 0xff}, i%7)...)
}

// rcFanout: a subscriber on each node, on 4 channels of each shard; a
// publisher on each node publishes 25 times on every channel. Each
// subscriber receives every publish exactly once, with its exact payload,
// in each publisher's order per channel, and nothing else; both nodes
// hold sharded subscriptions on the shard of each channel.
func rcFanout(t *testing.T, cl *redistest.Cluster, c *hrCluster, a, b *e2eProc) {
	byShard := rcByShard(t, cl, 4, "fan:%d")
	all := slices.Concat(byShard...)
	key := c.key(t, "fan")
	subs := []*websocket.Conn{e2eConnectURL(t, a.ws, key), e2eConnectURL(t, b.ws, key)}
	before := rcPubSubConns(t, cl)
	for _, s := range subs {
		for _, ch := range all {
			subscribe(t, s, ch)
		}
	}
	rcWantSharded(t, cl, byShard, len(subs), before)
	pubs := map[string]*websocket.Conn{"A": e2eConnectURL(t, a.ws, key), "B": e2eConnectURL(t, b.ws, key)}
	const rounds = 25
	for i := range rounds {
		for name, p := range pubs {
			var msg []byte
			for _, ch := range all {
				msg = packet.AppendPublish(msg, ch, rcPayload(name, ch, i))
			}
			send(t, p, msg)
		}
	}
	want := rounds * len(all) * len(pubs)
	for si, s := range subs {
		next := map[string]int{} // publisher|channel -> next index
		for got := 0; got < want; {
			for _, p := range readMessage(t, s) {
				pub, _, _ := strings.Cut(string(p.Payload), "|")
				i := next[pub+"|"+string(p.Channel)]
				if p.ID != packet.PacketMessage || !bytes.Equal(p.Payload, rcPayload(pub, string(p.Channel), i)) {
					t.Fatalf("subscriber %d, after %d of %d messages: got %s, want publish %d of %s on that channel", si, got, want, describe(p), i, pub)
				}
				next[pub+"|"+string(p.Channel)]++
				got++
			}
		}
		e2ePing(t, s) // nothing more queued: no duplicate
	}
}

// rcRevocation: keys revoked on node A (`gateway key revoke`, `key
// revoke-subject`) close their sessions on node B with 3004 and are
// refused on both nodes; a bystander stays connected.
func rcRevocation(t *testing.T, c *hrCluster, a, b *e2eProc) {
	victim, bob, bystander := c.key(t, "rc-victim"), c.key(t, "rc-bob"), c.key(t, "rc-bystander")
	onB, bobOnB := e2eConnectURL(t, b.ws, victim), e2eConnectURL(t, b.ws, bob)
	other := e2eConnectURL(t, b.ws, bystander)
	for _, cmd := range [][]string{{"key", "revoke", "--admin", a.admin, victim}, {"key", "revoke-subject", "--admin", a.admin, "rc-bob"}} {
		stdout, stderr, code := e2eRun(t, c.env, cmd...)
		if code != 0 || !strings.Contains(stdout, `"revoked":true`) {
			t.Fatalf("%v: exit %d: %q %s", cmd, code, stdout, stderr)
		}
	}
	expectClose(t, onB, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	expectClose(t, bobOnB, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	for _, p := range []*e2eProc{a, b} {
		for _, k := range []string{victim, bob} {
			s := e2eDialURL(t, p.ws)
			raw, _ := token.DecodeText(k)
			e2eAuth(t, s, raw)
			expectClose(t, s, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
		}
	}
	e2ePing(t, other)
}

// rcKosync: for users whose KOsync announce channels lie on each shard, a
// progress push (PUT /syncs/progress) on node A is announced to the
// user's subscribed KOsync socket on node B, and a GET on B answers it.
func rcKosync(t *testing.T, cl *redistest.Cluster, a, b *e2eProc) {
	addrA, addrB := ksProcAddr(a), ksProcAddr(b)
	for s, chans := range rcByShard(t, cl, 1, "#kosync:rc-reader%d") {
		user := strings.TrimPrefix(chans[0], "#kosync:")
		key := ksRegister(t, "http://"+addrA, user, user+"-pw")
		onB := ksDial(t, addrB, ksJWT(t, "http://"+addrB, user, key))
		ksSubscribe(t, onB)
		doc := fmt.Sprintf("doc-%d", s)
		ts := ksPush(t, "http://"+addrA, user, key, map[string]any{"document": doc, "progress": "5", "percentage": 0.05, "device": "kpw", "device_id": "X"})
		ksWantAnnounce(t, onB, fmt.Sprintf("announce on B of %s's push on A (shard %d)", user, s), ksDoc(doc, "5", 0.05, "kpw", "X", ts, "", "null"))
		ksWantJSON(t, "GET /syncs/progress on B", ksDo(t, http.MethodGet, "http://"+addrB+"/syncs/progress/"+doc, user, key, ""), http.StatusOK,
			ksJSON(map[string]any{"document": doc, "progress": "5", "percentage": 0.05, "device": "kpw", "device_id": "X", "timestamp": ts}))
	}
}

// rcHistory: on a history channel of each shard, a Go client subscribed
// with recovery on node A receives 3 publications made on node B, leaves;
// 5 more are published on B; the client, connecting to B from its last
// position, recovers exactly the 5 (recovered) and then receives live a
// publication made on A.
func rcHistory(t *testing.T, cl *redistest.Cluster, c *hrCluster, a, b *e2eProc) {
	key := c.key(t, "rc-reader")
	ctx := testCtx(t)
	for _, chans := range rcByShard(t, cl, 1, "h:rec:%d") {
		ch := chans[0]
		r := &hrRecorder{}
		onA := hrDial(t, a.ws, key)
		s, err := onA.Subscribe(ctx, ch, r.handler, client.WithRecovery(), client.OnSubscribed(r.onSubscribed))
		if err != nil {
			t.Fatal(err)
		}
		epoch, off := s.Position()
		if epoch == 0 || off != 0 {
			t.Fatalf("%s: subscribed on A at %d/%d, want a new channel's epoch and offset 0", ch, epoch, off)
		}
		for i := 1; i <= 3; i++ {
			if p := hrPublish(t, b.admin, ch, strconv.Itoa(i)); p != (history.Position{Epoch: epoch, Offset: int64(i)}) {
				t.Fatalf("%s: publish %d on B at %+v, subscribed on A in epoch %d", ch, i, p, epoch)
			}
		}
		r.waitFor(t, ch+": 3 publications on A", waitFor, func() bool { return len(r.offsets) == 3 })
		_ = onA.Close()
		_ = onA.Wait()
		for i := 4; i <= 8; i++ {
			hrPublish(t, b.admin, ch, strconv.Itoa(i))
		}
		onB := hrDial(t, b.ws, key)
		if _, err := onB.Subscribe(ctx, ch, r.handler, client.From(epoch, 3), client.OnSubscribed(r.onSubscribed)); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, ch+": subscribed on B", waitFor, func() bool { return len(r.subbed) == 2 })
		if want := (client.SubscribedEvent{Channel: ch, Epoch: epoch, Offset: 8, Recovered: true}); r.subbed[1] != want {
			t.Fatalf("%s: on B from %d/3: %+v, want %+v", ch, epoch, r.subbed[1], want)
		}
		r.contiguous(t, ch+" after the recovery", 8)
		hrPublish(t, a.admin, ch, "9")
		r.waitFor(t, ch+": the publication of A on B", waitFor, func() bool { return len(r.offsets) == 9 })
		r.contiguous(t, ch+" at the end", 9)
	}
}

// rcVictim is the shard whose master rcFailover kills.
const rcVictim = 1

// rcSeqs records, in a goroutine, the Messages "<channel>/<n>" a native
// subscriber receives: the n of each channel in arrival order. Pongs are
// skipped; anything else, or a payload of another form, is its error.
type rcSeqs struct {
	mu   sync.Mutex
	seqs map[string][]int
	err  error
}

func rcReadSeqs(c *websocket.Conn) *rcSeqs {
	r := &rcSeqs{seqs: map[string][]int{}}
	go func() {
		for {
			_, msg, err := c.Read(context.Background())
			if err == nil {
				err = r.record(msg)
			}
			if err != nil {
				r.mu.Lock()
				r.err = err
				r.mu.Unlock()
				return
			}
		}
	}()
	return r
}

func (r *rcSeqs) record(msg []byte) error {
	d := packet.NewClientDecoder(msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var p packet.ServerPacket
		ok, err := d.Next(&p)
		if err != nil || !ok {
			return err
		}
		if p.ID == packet.PacketPong {
			continue
		}
		ch, n, found := strings.Cut(string(p.Payload), "/")
		i, err := strconv.Atoi(n)
		if p.ID != packet.PacketMessage || !found || err != nil || ch != string(p.Channel) {
			return fmt.Errorf("unexpected %s", describe(p))
		}
		r.seqs[ch] = append(r.seqs[ch], i)
	}
}

// waitFor polls cond under r's lock; the reader's error fails at once.
func (r *rcSeqs) waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		ok, err := cond(), r.err
		r.mu.Unlock()
		if err != nil {
			t.Fatalf("waiting for %s: subscriber: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// last is the last n received on ch, -1 before any.
func (r *rcSeqs) last(ch string) int {
	if s := r.seqs[ch]; len(s) > 0 {
		return s[len(s)-1]
	}
	return -1
}

// rcRounds publishes, through c, round n = 0, 1, ... of "<ch>/<n>" on
// every channel of chans, one WebSocket message per round, every 10 ms,
// until stop is called; it returns the number of rounds sent.
type rcRounds struct {
	sent atomic.Int64
	stop func() (int, error)
}

func rcPublishRounds(c *websocket.Conn, chans []string) *rcRounds {
	r := &rcRounds{}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			var msg []byte
			for _, ch := range chans {
				msg = packet.AppendPublish(msg, ch, fmt.Appendf(nil, "%s/%d", ch, n))
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			err := c.Write(ctx, websocket.MessageBinary, msg)
			cancel()
			if err != nil {
				done <- err
				return
			}
			r.sent.Store(int64(n + 1))
			select {
			case <-stop:
				done <- nil
				return
			case <-tick.C:
			}
		}
	}()
	r.stop = func() (int, error) {
		close(stop)
		err := <-done
		return int(r.sent.Load()), err
	}
	return r
}

// rcHistPub publishes "<ch>#<n>", n = 0, 1, ..., on a history channel
// through an admin API every 20 ms until stop, keeping what each publish
// was answered.
type rcHistPub struct {
	ch       string
	mu       sync.Mutex
	answered []history.Position // the 200 answers, in order
	payload  map[int64]string   // offset -> payload of the 200 answers
	refused  map[string]error   // payload -> why it was refused (maybe applied all the same)
	stop     func()
}

func rcStartHistPub(base, ch string) *rcHistPub {
	h := &rcHistPub{ch: ch, payload: map[int64]string{}, refused: map[string]error{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; ctx.Err() == nil; n++ {
			payload := fmt.Sprintf("%s#%d", ch, n)
			pos, err := hrTryPublish(base, ch, payload)
			h.mu.Lock()
			if err != nil {
				h.refused[payload] = err
			} else {
				h.answered = append(h.answered, pos)
				h.payload[pos.Offset] = payload
			}
			h.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	h.stop = func() { cancel(); <-done }
	return h
}

// top is the last offset answered, 0 before any.
func (h *rcHistPub) top() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.answered) == 0 {
		return 0
	}
	return h.answered[len(h.answered)-1].Offset
}

// check, once h stopped, holds the promises of PROTOCOL.md §5.1 for a
// channel subscribed in epoch: the answered positions are offsets 1, 2, ...
// of epoch, none given twice; the recorder r, subscribed with recovery,
// has every offset up to the top exactly once, in order, with the payload
// answered for it (or, for an offset never answered, one whose publish
// was refused: applied although its answer was lost), and was told
// exactly events SubscribedFrom (those the test asked for: no unprompted
// one).
func (h *rcHistPub) check(t testing.TB, r *hrRecorder, epoch int64, events int) {
	t.Helper()
	for i, p := range h.answered {
		if p.Epoch != epoch || (i > 0 && p.Offset <= h.answered[i-1].Offset) {
			t.Errorf("%s: answer %d at %+v after %v: an offset given twice or out of order in epoch %d", h.ch, i, p, h.answered[max(0, i-3):i], epoch)
			return
		}
	}
	top := h.top()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.subbed) != events {
		t.Errorf("%s: told %+v, want only the %d SubscribedFrom asked for", h.ch, r.subbed, events)
	}
	if int64(len(r.offsets)) != top {
		t.Errorf("%s: %d publications received, want %d (offsets 1..%d); last %v", h.ch, len(r.offsets), top, top, r.offsets[max(0, len(r.offsets)-5):])
	}
	for i, o := range r.offsets {
		want, ok := h.payload[o]
		if _, refused := h.refused[r.payloads[i]]; o != int64(i+1) || (ok && r.payloads[i] != want) || (!ok && !refused) {
			t.Errorf("%s: publication %d is offset %d %q, want offset %d %q", h.ch, i, o, r.payloads[i], i+1, want)
			return
		}
		if !ok {
			t.Logf("%s: offset %d %q was applied although its publish was answered %v", h.ch, o, r.payloads[i], h.refused[r.payloads[i]])
		}
	}
}

// rcGap returns the n missing from got, a strictly increasing subset of
// 0..total-1, as a range [lo, hi) that must be its only gap.
func rcGap(t testing.TB, ch string, got []int, total int) (lo, hi int) {
	t.Helper()
	next := 0
	for _, n := range got {
		switch {
		case n < next:
			t.Fatalf("%s: %d after %d: a publish twice or out of order", ch, n, next-1)
		case n > next && hi > 0:
			t.Fatalf("%s: missing %d..%d and %d..%d: more than one gap", ch, lo, hi-1, next, n-1)
		case n > next:
			lo, hi = next, n
		}
		next = n + 1
	}
	if next != total {
		t.Fatalf("%s: last publish received %d, want %d", ch, next-1, total-1)
	}
	return lo, hi
}

// rcFlowRounds is how many rounds after the kill the other shards must
// deliver while the victim's slot has no master: a publisher held up by
// the dead shard delivers none until the promotion, so a few prove the
// point while leaving most of the failover (seconds) as margin on a
// loaded machine.
const rcFlowRounds = 20

// rcFailover: node B's native subscriber on 2 channels of each shard and
// Go clients with recovery on a history channel of each shard, while node
// A publishes on all of them; the master of shard rcVictim is killed
// (kill -9). While its replica is not yet promoted the other shards'
// channels keep flowing, without loss; once it is, delivery resumes on the
// victim's channels with no gateway restart, exactly once and in order
// after at most one gap per channel. B counts its reconnect to the shard
// (gateway_redis_pubsub_reconnects_total): the only count a node can keep
// of publishes it never received; A's gateway_redis_errors_total{op=
// "publish"} counts only those Redis refused, so the loss itself is
// logged, not asserted against it. On the history channels nothing is
// lost (PROTOCOL.md §5.1): the live clients end with every offset in
// order, without an unprompted SubscribedFrom, and a client that left at
// the kill recovers on B all it missed.
func rcFailover(t *testing.T, cl *redistest.Cluster, c *hrCluster, a, b *e2eProc) {
	plain := rcByShard(t, cl, 2, "ff:%d")
	hist := rcByShard(t, cl, 1, "h:ff:%d")
	key := c.key(t, "rc-failover")
	ctx := testCtx(t)

	sub := e2eConnectURL(t, b.ws, key)
	for _, ch := range slices.Concat(plain...) {
		subscribe(t, sub, ch)
	}
	defer nePinger(sub, time.Second)()
	seqs := rcReadSeqs(sub)
	recs := make([]*hrRecorder, len(hist))
	epochs := make([]int64, len(hist))
	for s, chans := range hist {
		recs[s] = &hrRecorder{}
		hs, err := hrDial(t, b.ws, key).Subscribe(ctx, chans[0], recs[s].handler, client.WithRecovery(), client.OnSubscribed(recs[s].onSubscribed))
		if err != nil {
			t.Fatal(err)
		}
		epochs[s], _ = hs.Position()
	}
	leaver, left := hrDial(t, a.ws, key), &hrRecorder{}
	if _, err := leaver.Subscribe(ctx, hist[rcVictim][0], left.handler, client.WithRecovery(), client.OnSubscribed(left.onSubscribed)); err != nil {
		t.Fatal(err)
	}

	errsA := faultMetric(t, a.admin, `gateway_redis_errors_total{op="publish"}`)
	reconnB := faultMetric(t, b.admin, "gateway_redis_pubsub_reconnects_total")
	gapsB := faultMetric(t, b.admin, "gateway_recovery_gaps_total")
	rounds := rcPublishRounds(e2eConnectURL(t, a.ws, key), slices.Concat(plain...))
	pubs := make([]*rcHistPub, len(hist))
	for s, chans := range hist {
		pubs[s] = rcStartHistPub(a.admin, chans[0])
	}
	seqs.waitFor(t, "5 rounds on every channel", waitFor, func() bool {
		return !slices.ContainsFunc(slices.Concat(plain...), func(ch string) bool { return seqs.last(ch) < 4 })
	})
	for s, r := range recs {
		r.waitFor(t, hist[s][0]+": 3 publications", waitFor, func() bool { return len(r.offsets) >= 3 })
	}

	victimSlot := slot.Of(rcRedisChannel(plain[rcVictim][0]))
	killRound := int(rounds.sent.Load())
	victim := cl.Owner(victimSlot)
	if victim == nil {
		t.Fatalf("slot %d served by no node before the kill", victimSlot)
	}
	standby := cl.Replicas[rcVictim][0] // the other node of the shard
	if victim == standby {
		standby = cl.Masters[rcVictim]
	}
	victim.Stop()
	killed, afterKill := time.Now(), int(rounds.sent.Load()) // rounds from afterKill on were sent to a dead master
	_ = leaver.Close()
	_ = leaver.Wait()
	var others []string
	for s, chans := range plain {
		if s != rcVictim {
			others = append(others, chans...)
		}
	}
	// The broker publishes each shard's channels on a lane of their own,
	// so the other shards keep flowing while the victim's slot has no
	// master: a dead shard delays only its own channels. Rounds go out at
	// most every 10 ms, so rcFlowRounds more take 0.2 s or more, well
	// inside the failover (about twice cluster-node-timeout); a publisher
	// that waited for the dead shard (go-redis's retries of its commands
	// hold a whole pipeline) fell behind within that second.
	seqs.waitFor(t, "the other shards' channels after the kill", waitFor, func() bool {
		return !slices.ContainsFunc(others, func(ch string) bool { return seqs.last(ch) < afterKill+rcFlowRounds })
	})
	if o := cl.Owner(victimSlot); o != nil {
		t.Fatalf("the other shards' channels got %d rounds after the kill only %v after it, once slot %d was served by %s again: they were held up by the dead shard", rcFlowRounds, time.Since(killed), victimSlot, o.Addr)
	}
	t.Logf("other shards: %d rounds after the kill delivered %v after it, victim shard still down", rcFlowRounds, time.Since(killed))

	cl.WaitHealthy(t)
	if o := cl.Owner(victimSlot); o != standby {
		t.Fatalf("slot %d served by %v after the failover, want the replica %s", victimSlot, o, standby.Addr)
	}
	healthyRound, promoted := int(rounds.sent.Load()), time.Since(killed)
	seqs.waitFor(t, "the victim shard's channels after the failover", 20*time.Second, func() bool {
		return !slices.ContainsFunc(plain[rcVictim], func(ch string) bool { return seqs.last(ch) < healthyRound })
	})
	t.Logf("replica promoted %v after the kill; victim channels flowing again %v after it", promoted, time.Since(killed))
	victimTop := pubs[rcVictim].top()
	recs[rcVictim].waitFor(t, "a publication on the victim's history channel after the failover", 20*time.Second, func() bool {
		return pubs[rcVictim].top() > victimTop+2 && recs[rcVictim].lastLocked() > victimTop+2
	})

	total, err := rounds.stop()
	if err != nil {
		t.Fatalf("publisher on A: %v", err)
	}
	for _, p := range pubs {
		p.stop()
	}
	seqs.waitFor(t, "the last round on every channel", waitFor, func() bool {
		return !slices.ContainsFunc(slices.Concat(plain...), func(ch string) bool { return seqs.last(ch) < total-1 })
	})
	lost := 0
	for s, chans := range plain {
		for _, ch := range chans {
			seqs.mu.Lock()
			got := slices.Clone(seqs.seqs[ch])
			seqs.mu.Unlock()
			lo, hi := rcGap(t, ch, got, total)
			switch {
			case s != rcVictim && hi > 0:
				t.Errorf("%s (shard %d, not killed): lost publishes %d..%d", ch, s, lo, hi-1)
			case hi > 0 && lo < killRound-50:
				t.Errorf("%s: lost publishes %d..%d, from long before the kill (round %d)", ch, lo, hi-1, killRound)
			}
			lost += hi - lo
			if hi > 0 {
				t.Logf("%s (shard %d): lost publishes %d..%d of 0..%d (kill at round %d, cluster healthy at %d)", ch, s, lo, hi-1, total-1, killRound, healthyRound)
			}
		}
	}
	for s, p := range pubs {
		recs[s].waitFor(t, p.ch+": every answered publication", waitFor, func() bool { return recs[s].lastLocked() >= p.top() })
		p.check(t, recs[s], epochs[s], 1)
		if s != rcVictim && len(p.refused) > 0 {
			t.Errorf("%s (shard %d, not killed): %d publishes refused, e.g. %v", p.ch, s, len(p.refused), p.refused)
		}
		t.Logf("%s (shard %d): %d publications answered, %d refused", p.ch, s, len(p.answered), len(p.refused))
	}

	// The client that left at the kill recovers on B what it missed.
	back := hrDial(t, b.ws, key)
	if _, err := back.Subscribe(ctx, hist[rcVictim][0], left.handler, client.From(epochs[rcVictim], left.last()), client.OnSubscribed(left.onSubscribed)); err != nil {
		t.Fatal(err)
	}
	left.waitFor(t, "the leaver's SubscribedFrom on B", waitFor, func() bool { return len(left.subbed) == 2 })
	if want := (client.SubscribedEvent{Channel: hist[rcVictim][0], Epoch: epochs[rcVictim], Offset: pubs[rcVictim].top(), Recovered: true}); left.subbed[1] != want {
		t.Errorf("the leaver, back on B: %+v, want %+v", left.subbed[1], want)
	}
	pubs[rcVictim].check(t, left, epochs[rcVictim], 2)

	dErrs := faultMetric(t, a.admin, `gateway_redis_errors_total{op="publish"}`) - errsA
	dReconn := faultMetric(t, b.admin, "gateway_redis_pubsub_reconnects_total") - reconnB
	dGaps := faultMetric(t, b.admin, "gateway_recovery_gaps_total") - gapsB
	t.Logf("lost %d plain publishes on the victim shard; A counted %v publish errors; B counted %v pub/sub reconnects and %v recovery gaps", lost, dErrs, dReconn, dGaps)
	if dReconn < 1 {
		t.Errorf("B's gateway_redis_pubsub_reconnects_total went up by %v, want at least 1 (its link to the killed shard)", dReconn)
	}
}
