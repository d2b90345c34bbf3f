package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/client"
	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// History and recovery (PROTOCOL.md §5.1) through failures: a node killed
// with kill -9 while its clients move to another, a Redis pub/sub
// connection dropped with the data intact, gateway processes restarted
// under the Go client and `gateway client --recover`. Helpers start with
// "hr".

// hrSecret signs the keys of every process of these tests.
const hrSecret = "GATEWAY_SECRET=history-recovery-e2e-secret-0123456789-0123456789"

// hrCluster is gateway processes on one Redis (or one Redis Cluster) with
// one key prefix and history on channels "h:".
type hrCluster struct {
	env    []string
	redis  string   // redis:// URL
	seeds  []string // else the seed nodes of a Redis Cluster (--redis-cluster)
	prefix string
	keys   string // data dir of `gateway key issue`
}

func hrNewCluster(t *testing.T, srv *redistest.Server) *hrCluster {
	return &hrCluster{
		env:    e2eEnv(hrSecret),
		redis:  srv.URL,
		prefix: "hr" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":", // REDIS_URL may be shared
		keys:   t.TempDir(),
	}
}

// hrAddrs is where one process listens: fixed across its restarts.
type hrAddrs struct{ listen, admin, wsify, dir string }

func hrNewAddrs(t *testing.T) hrAddrs {
	free := e2eFreeAddrs(t, 3)
	return hrAddrs{free[0], free[1], free[2], t.TempDir()}
}

// serve starts `gateway serve` at a, on Redis when c.redis is set, on a
// Redis Cluster when c.seeds are, else alone.
func (c *hrCluster) serve(t *testing.T, a hrAddrs) *e2eProc {
	t.Helper()
	args := []string{"--data-dir", a.dir, "--history-size", "1000", "--history-ttl", "1m", "--history-channels", "h:"}
	switch {
	case c.redis != "":
		args = append(args, "--redis", c.redis, "--redis-prefix", c.prefix)
	case len(c.seeds) > 0:
		args = append(args, "--redis-cluster", strings.Join(c.seeds, ","), "--redis-prefix", c.prefix)
	}
	p, err := e2eServeAt(t, c.env, a.listen, a.admin, a.wsify, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (c *hrCluster) key(t *testing.T, subject string) string {
	return e2eKeyIssue(t, c.env, "--subject", subject, "--data-dir", c.keys)
}

// kill9 kills p with SIGKILL and waits for its end.
func hrKill9(t *testing.T, p *e2eProc) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(waitFor):
		t.Fatal("gateway still running after SIGKILL")
	}
}

// hrPublish publishes payload on channel through the admin API of the
// process at base and returns the position it answers.
func hrPublish(t testing.TB, base, channel, payload string) history.Position {
	t.Helper()
	pos, err := hrTryPublish(base, channel, payload)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// hrTryPublish is hrPublish for any goroutine: a failed request or an
// answer other than 200 with a position is its error.
func hrTryPublish(base, channel, payload string) (history.Position, error) {
	status, body, err := e2eDoQuiet(http.MethodPost, base+"/api/publish?channel="+channel, []byte(payload))
	if err != nil {
		return history.Position{}, err
	}
	if status != http.StatusOK {
		return history.Position{}, fmt.Errorf("admin publish on %s: %d %s", base, status, body)
	}
	var m struct {
		Epoch  string `json:"epoch"`
		Offset int64  `json:"offset"`
	}
	e, err := int64(0), json.Unmarshal(body, &m)
	if err == nil {
		e, err = strconv.ParseInt(m.Epoch, 10, 64)
	}
	if err != nil || e == 0 {
		return history.Position{}, fmt.Errorf("admin publish on %s answered %s: no epoch", base, body)
	}
	return history.Position{Epoch: e, Offset: m.Offset}, nil
}

// hrRecorder records what a recovering subscription of the Go client
// reports: every publication's offset and payload, every OnSubscribed.
type hrRecorder struct {
	mu       sync.Mutex
	offsets  []int64
	payloads []string
	subbed   []client.SubscribedEvent
}

func (r *hrRecorder) handler(p client.Publication) {
	r.mu.Lock()
	r.offsets = append(r.offsets, p.Offset)
	r.payloads = append(r.payloads, string(p.Payload))
	r.mu.Unlock()
}

func (r *hrRecorder) onSubscribed(ev client.SubscribedEvent) {
	r.mu.Lock()
	r.subbed = append(r.subbed, ev)
	r.mu.Unlock()
}

// waitFor polls cond under the recorder's lock.
func (r *hrRecorder) waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			defer r.mu.Unlock()
			n := len(r.offsets)
			t.Fatalf("waiting for %s: %d publications (last %v), subscribed %+v", what, n, r.offsets[max(0, n-5):], r.subbed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// contiguous checks that the recorder holds offsets 1..n exactly once, in
// order, each with payload equal to its offset.
func (r *hrRecorder) contiguous(t testing.TB, who string, n int64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, o := range r.offsets {
		if o != int64(i+1) || r.payloads[i] != strconv.FormatInt(o, 10) {
			t.Fatalf("%s: publication %d has offset %d payload %q, want offset %d (the %d before: %v)", who, i, o, r.payloads[i], i+1, min(i, 5), r.offsets[max(0, i-5):i])
		}
	}
	if int64(len(r.offsets)) != n {
		t.Fatalf("%s: %d publications, want %d", who, len(r.offsets), n)
	}
}

func (r *hrRecorder) last() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastLocked()
}

// lastLocked is last for a caller that holds r.mu (a waitFor condition).
func (r *hrRecorder) lastLocked() int64 {
	if len(r.offsets) == 0 {
		return 0
	}
	return r.offsets[len(r.offsets)-1]
}

func hrDial(t testing.TB, url, key string) *client.Client {
	t.Helper()
	return gcDial(t, url, key, newRecorder())
}

// TestHistoryKill9Node: readers subscribed with recovery on node A while
// a publisher publishes through node B; A is killed with kill -9; each
// reader, from the last position it saw, subscribes on B and ends with
// every offset exactly once, in order, recovered.
func TestHistoryKill9Node(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := hrNewCluster(t, srv)
	a := c.serve(t, hrNewAddrs(t))
	b := c.serve(t, hrNewAddrs(t))
	key, pubKey := c.key(t, "reader"), c.key(t, "publisher")
	const ch, total, readers = "h:kill", 400, 3
	ctx := testCtx(t)

	recs := make([]*hrRecorder, readers)
	conns := make([]*client.Client, readers)
	var epoch int64
	for i := range readers {
		recs[i] = &hrRecorder{}
		conns[i] = hrDial(t, a.ws, key)
		s, err := conns[i].Subscribe(ctx, ch, recs[i].handler, client.WithRecovery(), client.OnSubscribed(recs[i].onSubscribed))
		if err != nil {
			t.Fatal(err)
		}
		e, o := s.Position()
		if o != 0 || e == 0 || (epoch != 0 && e != epoch) {
			t.Fatalf("reader %d subscribed at %d/%d, epoch %d before", i, e, o, epoch)
		}
		epoch = e
	}

	pub := hrDial(t, b.ws, pubKey)
	published := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			if err := pub.Publish(ctx, ch, []byte(strconv.Itoa(i))); err != nil {
				published <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			if i%20 == 0 {
				time.Sleep(5 * time.Millisecond) // spread the publishes over the kill and the moves
			}
		}
		published <- nil
	}()
	for i, r := range recs {
		r.waitFor(t, fmt.Sprintf("reader %d: 50 publications on node A", i), waitFor, func() bool { return len(r.offsets) >= 50 })
	}
	hrKill9(t, a)

	for i, r := range recs {
		// Everything the reader's handler was given, then its position.
		_ = conns[i].Close()
		_ = conns[i].Wait()
		last := r.last()
		moved := hrDial(t, b.ws, key)
		if _, err := moved.Subscribe(ctx, ch, r.handler, client.From(epoch, last), client.OnSubscribed(r.onSubscribed)); err != nil {
			t.Fatalf("reader %d on node B from %d: %v", i, last, err)
		}
		// OnSubscribed runs on the dispatcher, maybe after Subscribe returned.
		r.waitFor(t, fmt.Sprintf("reader %d: OnSubscribed on node B", i), waitFor, func() bool { return len(r.subbed) == 2 })
		ev := r.subbed[1]
		if !ev.Recovered || ev.Epoch != epoch || ev.Offset < last {
			t.Fatalf("reader %d on node B from %d/%d: %+v", i, epoch, last, r.subbed)
		}
		t.Logf("reader %d: left node A at offset %d, recovered on node B up to %d", i, last, ev.Offset)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		r.waitFor(t, fmt.Sprintf("reader %d: all %d publications", i, total), waitFor, func() bool { return len(r.offsets) > 0 && r.offsets[len(r.offsets)-1] >= total })
		r.contiguous(t, fmt.Sprintf("reader %d", i), total)
	}
}

// hrPubSubOutage kills every pub/sub connection of srv (CLIENT KILL TYPE
// pubsub: one per node) and keeps them from reconnecting, by lowering
// maxclients to what is left, while during runs; then it lets them back
// and returns once they are.
// The data in Redis stays intact. Node connections of the pool that
// exist stay usable, so publishes through the admin API go on.
func hrPubSubOutage(t *testing.T, srv *redistest.Server, during func()) {
	t.Helper()
	ctx := testCtx(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1, MaxRetries: -1})
	defer rc.Close()
	all, err := rc.Do(ctx, "CLIENT", "LIST").Text()
	if err != nil {
		t.Fatal(err)
	}
	pubsub, err := rc.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatal(err)
	}
	nAll, nPubsub := strings.Count(all, "\n"), strings.Count(pubsub, "\n")
	if nPubsub < 2 {
		t.Fatalf("%d pub/sub connections, want one per node at least:\n%s", nPubsub, pubsub)
	}
	old, err := rc.ConfigGet(ctx, "maxclients").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigSet(ctx, "maxclients", strconv.Itoa(nAll-nPubsub)).Err(); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := rc.ConfigSet(context.WithoutCancel(ctx), "maxclients", old["maxclients"]).Err(); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	killed, err := rc.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Int()
	if err != nil || killed != nPubsub {
		t.Fatalf("CLIENT KILL TYPE pubsub: %d killed, %v; want %d", killed, err, nPubsub)
	}
	during()
	time.Sleep(300 * time.Millisecond) // several refused reconnects
	if again, _ := rc.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text(); again != "" {
		t.Fatalf("a pub/sub connection came back while maxclients was %d:\n%s", nAll-nPubsub, again)
	}
	restore()
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		l, _ := rc.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if strings.Count(l, "\n") == nPubsub {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pub/sub connections back, want %d:\n%s", strings.Count(l, "\n"), nPubsub, l)
		}
	}
}

// hrPubSubNodes is two nodes on a redis-server of the test's own, for
// hrPubSubOutage, with a SubscribeFrom subscriber on each that has
// received offset 1; it returns the epoch and both nodes' gap counts.
func hrPubSubNodes(t *testing.T, size int, ch string) (srv *redistest.Server, a, b *node.Node, sa, sb *websocket.Conn, epoch int64, gapsA, gapsB float64) {
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("kills every pub/sub connection of the Redis server and lowers its maxclients: needs a redis-server of its own (REDIS_URL is set)")
	}
	srv, a, b = hcNodes(t, size)
	sa = connect(t, a, "alice")
	_, sf := hcSubscribeFrom(t, sa, ch, history.Position{})
	sb = connect(t, b, "bob")
	hcSubscribeFrom(t, sb, ch, history.Position{})
	if p := hiAdminPublish(t, b, ch, "1"); p != (history.Position{Epoch: sf.Epoch, Offset: 1}) {
		t.Fatalf("first publish at %+v, subscribed at %s", p, describe(sf))
	}
	hiExpect(t, sa, publication(ch, 1, "1"))
	hiExpect(t, sb, publication(ch, 1, "1"))
	gapsA, gapsB = neMetric(t, a, "gateway_recovery_gaps_total"), neMetric(t, b, "gateway_recovery_gaps_total")
	// Several idle connections in each node's pool: during the outage no
	// new connection is let in, and two commands of a node may overlap.
	var wg sync.WaitGroup
	for _, n := range []*node.Node{a, b} {
		for range 6 {
			wg.Go(func() {
				if resp, err := http.Get(adminURL(n) + "/api/history?channel=" + ch); err == nil {
					resp.Body.Close()
				}
			})
		}
	}
	wg.Wait()
	return srv, a, b, sa, sb, sf.Epoch, gapsA, gapsB
}

// hrOutagePublishes publishes 2..last on ch while the pub/sub connections
// are away: through the admin APIs of both nodes, and the last one from
// a client of node A (appended by A's broker batch: the test waits until
// the history has it).
func hrOutagePublishes(t *testing.T, a, b *node.Node, ch string, last int) {
	for i := 2; i < last; i++ {
		n := []*node.Node{a, b}[i%2]
		if p := hiAdminPublish(t, n, ch, strconv.Itoa(i)); p.Offset != int64(i) {
			t.Fatalf("publish %d at %+v", i, p)
		}
	}
	nePublishSync(t, connect(t, a, "carol"), ch, []byte(strconv.Itoa(last)))
	waitUntil(t, "the client's publish in the history", func() bool {
		_, body, _ := e2eDo(t, "GET", adminURL(b)+"/api/history?channel="+ch+"&limit=1", "", nil)
		return strings.Contains(string(body), fmt.Sprintf(`"offset":%d,"publications"`, last))
	})
}

// TestHistoryPubSubDropped: the Redis pub/sub connections of both nodes
// are killed and kept away while publications are appended through both
// nodes, with Redis's data intact; once they reconnect, the live
// SubscribeFrom subscribers of both nodes get the missed publications at
// once, contiguous, without any later publication to show the gap and
// without SubscribedFrom (the history had them all), and nothing twice.
// Each node's gateway_recovery_gaps_total counts the one gap it mended.
func TestHistoryPubSubDropped(t *testing.T) {
	t.Parallel()
	const ch = "h:drop"
	srv, a, b, sa, sb, epoch, gapsA, gapsB := hrPubSubNodes(t, 100, ch)
	var late *websocket.Conn
	hrPubSubOutage(t, srv, func() {
		hrOutagePublishes(t, a, b, ch, 6)
		// A session that subscribes on node A during the outage, from 3,
		// is replayed what Redis has (its data connection is up) and is
		// then live with the others.
		late = connect(t, a, "erin")
		replay, sf := hcSubscribeFrom(t, late, ch, history.Position{Epoch: epoch, Offset: 3})
		if strings.Join(replay, ",") != "4,5,6" || sf.Recovered != 1 || sf.Offset != 6 {
			t.Fatalf("SubscribeFrom during the outage: %v %s", replay, describe(sf))
		}
		hiAdminPublish(t, b, ch, "7")
	})
	// Filled at once on reconnect: no publication follows to show the gap.
	var want []string
	for i := 2; i <= 7; i++ {
		want = append(want, publication(ch, int64(i), strconv.Itoa(i)))
	}
	hiExpect(t, sa, want...)
	hiExpect(t, sb, want...)
	hiExpect(t, late, publication(ch, 7, "7"))
	// Nothing twice: the next publication comes next.
	hiAdminPublish(t, a, ch, "8")
	for _, s := range []*websocket.Conn{sa, sb, late} {
		hiExpect(t, s, publication(ch, 8, "8"))
	}
	if g := neMetric(t, a, "gateway_recovery_gaps_total") - gapsA; g != 2 {
		t.Errorf("node A: gateway_recovery_gaps_total went up by %v, want 2 (the gap its reconnect found for each subscriber)", g)
	}
	if g := neMetric(t, b, "gateway_recovery_gaps_total") - gapsB; g != 1 {
		t.Errorf("node B: gateway_recovery_gaps_total went up by %v, want 1", g)
	}
	c := connect(t, b, "dave")
	if replay, sf := hcSubscribeFrom(t, c, ch, history.Position{Epoch: epoch}); len(replay) != 8 || sf.Recovered != 1 {
		t.Fatalf("replay from 0: %v %s", replay, describe(sf))
	}
	for _, s := range []*websocket.Conn{sa, sb, late} {
		send(t, s, packet.AppendPing(nil))
		if p := readOne(t, s); p.ID != packet.PacketPong {
			t.Fatalf("after the publications: %s, want only the Pong", describe(p))
		}
	}
}

// TestHistoryPubSubDroppedTooLong: as TestHistoryPubSubDropped, but more
// publications are missed than the history keeps (size 3): the
// subscribers are told at once, unprompted, SubscribedFrom(epoch, top,
// recovered 0), nothing is replayed, and the next publication follows the
// top.
func TestHistoryPubSubDroppedTooLong(t *testing.T) {
	t.Parallel()
	const ch = "h:long"
	srv, a, b, sa, sb, epoch, gapsA, gapsB := hrPubSubNodes(t, 3, ch)
	hrPubSubOutage(t, srv, func() { hrOutagePublishes(t, a, b, ch, 6) })
	for _, s := range []*websocket.Conn{sa, sb} {
		hiExpect(t, s, subscribedFrom(ch, history.Position{Epoch: epoch, Offset: 6}, 0))
	}
	hiAdminPublish(t, b, ch, "7")
	hiExpect(t, sa, publication(ch, 7, "7"))
	hiExpect(t, sb, publication(ch, 7, "7"))
	if g := neMetric(t, a, "gateway_recovery_gaps_total") - gapsA; g != 1 {
		t.Errorf("node A: gateway_recovery_gaps_total went up by %v, want 1", g)
	}
	if g := neMetric(t, b, "gateway_recovery_gaps_total") - gapsB; g != 1 {
		t.Errorf("node B: gateway_recovery_gaps_total went up by %v, want 1", g)
	}
}

// TestGoClientRecoveryAlone: a gateway process with history and no Redis,
// killed with kill -9 and restarted on the same addresses, has another
// epoch: the Go client's resubscription reports Recovered false with the
// new epoch, and goes on with its offsets.
func TestGoClientRecoveryAlone(t *testing.T) {
	t.Parallel()
	c := &hrCluster{env: e2eEnv(hrSecret), keys: t.TempDir()}
	addrs := hrNewAddrs(t)
	p := c.serve(t, addrs)
	r := &hrRecorder{}
	cl := hrDial(t, p.ws, c.key(t, "alone"))
	ctx := testCtx(t)
	const ch = "h:alone"
	if _, err := cl.Subscribe(ctx, ch, r.handler, client.WithRecovery(), client.OnSubscribed(r.onSubscribed)); err != nil {
		t.Fatal(err)
	}
	old := hrPublish(t, p.admin, ch, "1")
	hrPublish(t, p.admin, ch, "2")
	r.waitFor(t, "two publications", waitFor, func() bool { return len(r.offsets) == 2 })
	hrKill9(t, p)
	p = c.serve(t, addrs)
	r.waitFor(t, "the resubscription", waitFor, func() bool { return len(r.subbed) == 2 })
	ev := r.subbed[1]
	if !ev.Resubscribed || ev.Recovered || ev.Epoch == old.Epoch || ev.Epoch == 0 || ev.Offset != 0 {
		t.Fatalf("after the restart: %+v, want resubscribed, not recovered, another epoch than %d, offset 0", ev, old.Epoch)
	}
	if np := hrPublish(t, p.admin, ch, "1"); np != (history.Position{Epoch: ev.Epoch, Offset: 1}) {
		t.Fatalf("first publish after the restart at %+v, the client was told %+v", np, ev)
	}
	r.waitFor(t, "the publication after the restart", waitFor, func() bool { return len(r.offsets) == 3 })
	if got := fmt.Sprint(r.offsets, r.payloads); got != "[1 2 1] [1 2 1]" {
		t.Fatalf("publications %s", got)
	}
}

// TestGoClientRecoveryRedis: node A with Redis is killed with kill -9;
// node B publishes while it is away; A is restarted on the same
// addresses, keeps the epoch, and the Go client, reconnecting by itself,
// recovers what it missed and reports Recovered true.
func TestGoClientRecoveryRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := hrNewCluster(t, srv)
	addrs := hrNewAddrs(t)
	a := c.serve(t, addrs)
	b := c.serve(t, hrNewAddrs(t))
	r := &hrRecorder{}
	cl := hrDial(t, a.ws, c.key(t, "alice"))
	ctx := testCtx(t)
	const ch = "h:redis"
	s, err := cl.Subscribe(ctx, ch, r.handler, client.WithRecovery(), client.OnSubscribed(r.onSubscribed))
	if err != nil {
		t.Fatal(err)
	}
	first := hrPublish(t, a.admin, ch, "1")
	if e, _ := s.Position(); first.Offset != 1 || first.Epoch != e {
		t.Fatalf("first publish at %+v, subscribed in epoch %d", first, e)
	}
	r.waitFor(t, "the first publication", waitFor, func() bool { return len(r.offsets) == 1 })
	hrKill9(t, a)
	for i := 2; i <= 4; i++ {
		hrPublish(t, b.admin, ch, strconv.Itoa(i))
	}
	c.serve(t, addrs)
	r.waitFor(t, "the resubscription", waitFor, func() bool { return len(r.subbed) == 2 })
	ev := r.subbed[1]
	if want := (client.SubscribedEvent{Channel: ch, Resubscribed: true, Epoch: first.Epoch, Offset: 4, Recovered: true}); ev != want {
		t.Fatalf("after the restart: %+v, want %+v", ev, want)
	}
	// The replay came before SubscribedFrom: the handler has them.
	r.contiguous(t, "after the restart", 4)
	hrPublish(t, b.admin, ch, "5")
	r.waitFor(t, "the publication after the restart", waitFor, func() bool { return len(r.offsets) == 5 })
	r.contiguous(t, "at the end", 5)
}

// TestCLIClientRecover: `gateway client --recover` prints positions;
// after its gateway (on Redis) is killed and restarted while another
// node publishes, it reconnects, replays the missed publications and
// says it recovered.
func TestCLIClientRecover(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := hrNewCluster(t, srv)
	addrs := hrNewAddrs(t)
	a := c.serve(t, addrs)
	b := c.serve(t, hrNewAddrs(t))
	const ch = "h:cli"
	e := hrPublish(t, a.admin, ch, "zero").Epoch
	cl := e2eStartClient(t, c.env, "--url", a.ws, "--key", c.key(t, "cli"), "--recover", "--sub", ch)
	cl.waitLine(t, fmt.Sprintf("subscribed %s epoch %d offset 1 recovered 1", ch, e))
	hrPublish(t, b.admin, ch, "one")
	cl.waitLine(t, "message "+ch+" offset 2 one")
	hrKill9(t, a)
	e2eWaitFor(t, "the drop on the client's stderr", func() bool {
		return strings.Contains(cl.stderr.String(), "connection lost without a close frame (1006)")
	})
	hrPublish(t, b.admin, ch, "two")
	hrPublish(t, b.admin, ch, "three")
	c.serve(t, addrs)
	cl.waitLine(t, "message "+ch+" offset 3 two")
	cl.waitLine(t, "message "+ch+" offset 4 three")
	cl.waitLine(t, fmt.Sprintf("subscribed %s epoch %d offset 4 recovered 1", ch, e))
	hrPublish(t, b.admin, ch, "four")
	cl.waitLine(t, "message "+ch+" offset 5 four")
	if err := cl.quit(t); err != nil {
		t.Errorf("client exited with %v after quit; stderr %s", err, cl.stderr.String())
	}
	if got := strings.Join(cl.seen, "\n"); got != strings.Join([]string{
		fmt.Sprintf("subscribed %s epoch %d offset 1 recovered 1", ch, e),
		"message h:cli offset 2 one",
		"message h:cli offset 3 two",
		"message h:cli offset 4 three",
		fmt.Sprintf("subscribed %s epoch %d offset 4 recovered 1", ch, e),
		"message h:cli offset 5 four",
	}, "\n") {
		t.Fatalf("stdout:\n%s", got)
	}
}
