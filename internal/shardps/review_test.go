package shardps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// nopConn stands for a shard's connection in tests that drive the manager
// by hand: writes are accepted and dropped.
type nopConn struct{ net.Conn }

func (nopConn) Write(b []byte) (int, error)      { return len(b), nil }
func (nopConn) Close() error                     { return nil }
func (nopConn) SetWriteDeadline(time.Time) error { return nil }

// testManager returns a manager whose goroutine is not started, so a test
// feeds it events itself; its reloads go to a cluster address that refuses
// (their results are never read).
func testManager(t *testing.T) *manager {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := &PubSub{
		cc: cc, opt: cc.Options(), rlog: ratelog.New(log, slog.LevelWarn, 0),
		out: make(chan any, 16), ops: make(chan op, 1), evs: make(chan event, 64), stop: make(chan struct{}),
	}
	t.Cleanup(func() {
		stopManager(p)
		p.wg.Wait()
		_ = cc.Close()
	})
	return &manager{PubSub: p, shards: make(map[string]*shard), where: make(map[string]*shard), unplaced: make(map[string]bool)}
}

// A channel placed on a shard while a barrier is already in flight there
// (its slot migrated to that shard) must not be declared live by the
// reply to that older barrier command: that reply precedes the
// SSUBSCRIBE's.
func TestBarrierNotAnsweredBeforeLaterSubscribe(t *testing.T) {
	m := testManager(t)
	const a, b = "a:1", "b:1"
	var x string
	for i := 0; ; i++ {
		if x = "room-" + string(rune('a'+i)); slot.Of(x) < slot.Count/2 {
			break
		}
	}
	for s := range m.topo {
		m.topo[s] = a
		if s >= slot.Count/2 {
			m.topo[s] = b
		}
	}
	m.haveTopo = true
	shA := &shard{addr: a, chans: map[string]struct{}{x: {}}, slot: 0, conn: nopConn{}}
	shB := &shard{addr: b, chans: map[string]struct{}{}, slot: slot.Count / 2, conn: nopConn{}}
	m.shards[a], m.shards[b], m.where[x] = shA, shB, shA

	// x's slot leaves a: Redis unsubscribes it unasked.
	m.handleReply(shA, reply{kind: "sunsubscribe", channel: x})
	m.handleOp(op{kind: opBarrier, name: "b1"})
	b1OnA, b1OnB := slot.InSlot("b1", shA.slot), slot.InSlot("b1", shB.slot)
	// The reload says x's slot is b's now: x is subscribed on b, after
	// b1's first SUNSUBSCRIBE there.
	moved := m.topo
	moved[slot.Of(x)] = b
	m.handleEvent(event{kind: evSlots, slots: &moved})
	if m.where[x] != shB {
		t.Fatalf("x not placed on b")
	}
	m.handleReply(shA, reply{kind: "sunsubscribe", channel: b1OnA})
	m.handleReply(shB, reply{kind: "sunsubscribe", channel: b1OnB})
	if len(m.out) != 0 {
		t.Fatalf("barrier delivered before x's SSUBSCRIBE on b was confirmed: %v", <-m.out)
	}
	m.handleReply(shB, reply{kind: "ssubscribe", channel: x})
	m.handleReply(shB, reply{kind: "sunsubscribe", channel: slot.InSlot("b1", shB.slot)})
	want := []any{Reconnected{Shard: b}, Barrier{Name: "b1"}}
	if len(m.out) != len(want) {
		t.Fatalf("%d events after x's confirmation, want %v", len(m.out), want)
	}
	for _, w := range want {
		if v := <-m.out; !reflect.DeepEqual(v, w) {
			t.Fatalf("got %#v, want %#v", v, w)
		}
	}
}

// A connection with no subscription left gets "+PONG" to its PING, not
// the pub/sub array: the reader must take both.
func TestPingReplyWithoutSubscriptions(t *testing.T) {
	s := redistest.Start(t)
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(appendCommand(appendCommand(nil, "SUNSUBSCRIBE", "x"), "PING")); err != nil {
		t.Fatal(err)
	}
	rr := newReplyReader(conn)
	for _, want := range []reply{{kind: "sunsubscribe", channel: "x"}, {kind: "pong"}} {
		rep, err := rr.read()
		if err != nil || rep != want {
			t.Fatalf("got %#v, %v; want %#v", rep, err, want)
		}
	}
}

// distinctSlotChannels returns n channel names in n different slots.
func distinctSlotChannels(n int) []string {
	var out []string
	seen := make(map[int]bool)
	for i := 0; len(out) < n; i++ {
		ch := "room-" + string(rune('a'+i))
		if s := slot.Of(ch); !seen[s] {
			seen[s] = true
			out = append(out, ch)
		}
	}
	return out
}

// When a slot leaves a shard, Redis unsubscribes its channels unasked,
// and an SUNSUBSCRIBE of ours for one of them that Redis reads after that
// is answered MOVED. The unsolicited reply is then taken for ours, and the
// MOVED must not be taken for the next command's reply: that made the
// connection (every channel on the shard) drop.
func TestUnsolicitedSunsubscribeThenMoved(t *testing.T) {
	m := testManager(t)
	chans := distinctSlotChannels(2)
	x, z := chans[0], chans[1]
	const a = "a:1"
	for s := range m.topo {
		m.topo[s] = a
	}
	m.haveTopo = true
	conn := nopConn{}
	shA := &shard{addr: a, chans: map[string]struct{}{x: {}}, slot: 0, conn: conn}
	m.shards[a], m.where[x] = shA, shA

	m.handleOp(op{kind: opUnsubscribe, names: []string{x}}) // x's slot is leaving meanwhile
	m.handleOp(op{kind: opSubscribe, names: []string{z}})
	m.handleReply(shA, reply{kind: "sunsubscribe", channel: x}) // Redis's, unasked
	m.handleReply(shA, reply{err: fmt.Sprintf("MOVED %d b:1", slot.Of(x))})
	m.handleReply(shA, reply{kind: "ssubscribe", channel: z})
	if shA.conn != conn || m.where[z] != shA || len(shA.sent) != 0 || len(m.out) != 0 {
		t.Fatalf("conn kept: %v, z on a: %v, sent %d, events %d", shA.conn == conn, m.where[z] == shA, len(shA.sent), len(m.out))
	}
}

// A broken stream announcing a huge bulk string and then ending must not
// make the reader allocate the announced length up front.
func TestHugeBulkLengthNotAllocatedUpFront(t *testing.T) {
	stream := "*3\r\n$8\r\nsmessage\r\n$1\r\nx\r\n$" + fmt.Sprint(maxBulk) + "\r\nshort"
	rr := newReplyReader(strings.NewReader(stream))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := rr.read(); err == nil {
		t.Fatal("a truncated payload was read")
	}
	runtime.ReadMemStats(&after)
	// TotalAlloc counts every goroutine's: the bound is loose, far below
	// the announced length.
	if n := after.TotalAlloc - before.TotalAlloc; n > maxBulk/8 {
		t.Fatalf("reading a truncated payload allocated %d bytes", n)
	}
}

// A payload longer than bulkChunk is read whole and exact.
func TestLongPayload(t *testing.T) {
	payload := strings.Repeat("0123456789", 3*bulkChunk/10+7)
	stream := "*3\r\n$8\r\nsmessage\r\n$1\r\nx\r\n$" + fmt.Sprint(len(payload)) + "\r\n" + payload + "\r\n"
	rep, err := newReplyReader(strings.NewReader(stream)).read()
	if err != nil || rep.kind != "smessage" || rep.channel != "x" || rep.payload != payload {
		t.Fatalf("got %q on %q (%d bytes), %v", rep.kind, rep.channel, len(rep.payload), err)
	}
}

// The broker asks a round's barrier again every 500 ms while it is
// unanswered: while a shard is down that must not pile up pending
// barriers, and the one delivered once the shard is back is enough.
func TestRepeatedBarrierWhileShardDown(t *testing.T) {
	m := testManager(t)
	const a = "a:1"
	for s := range m.topo {
		m.topo[s] = a
	}
	m.haveTopo = true
	shA := &shard{addr: a, chans: map[string]struct{}{"x": {}}, slot: 0} // down: no connection
	m.shards[a], m.where["x"] = shA, shA
	for range 1000 {
		m.handleOp(op{kind: opBarrier, name: "sync:7"})
	}
	if len(m.barriers) != 1 {
		t.Fatalf("%d barriers pending for one name", len(m.barriers))
	}
	shA.conn = nopConn{}
	m.askShard(shA)
	m.handleReply(shA, reply{kind: "sunsubscribe", channel: slot.InSlot("sync:7", 0)})
	if len(m.out) != 1 {
		t.Fatalf("%d events once the shard answered, want Barrier sync:7", len(m.out))
	}
	if v := <-m.out; !reflect.DeepEqual(v, Barrier{Name: "sync:7"}) {
		t.Fatalf("got %#v", v)
	}
}

// A server that accepts and closes at once (maxclients reached, a proxy
// whose backend is down) must be redialed with a growing back-off, not
// in a tight loop: a connection that never answered is no success.
func TestRedialBacksOffWhenConnectionsBreakAtOnce(t *testing.T) {
	m := testManager(t)
	const a = "a:1"
	for s := range m.topo {
		m.topo[s] = a
	}
	m.haveTopo = true
	sh := &shard{addr: a, chans: map[string]struct{}{"x": {}}, slot: 0, dialing: true}
	m.shards[a], m.where["x"] = sh, sh
	var delays []time.Duration
	for range 3 {
		client, server := net.Pipe()
		_ = server.Close() // accepted, then closed
		m.handleEvent(event{kind: evConnected, sh: sh, gen: sh.gen, conn: client})
		ev := <-m.evs // the reader's
		for ev.kind != evBroken {
			ev = <-m.evs // a reload's
		}
		delays = append(delays, sh.retry)
		m.handleEvent(ev)
		sh.dialing = true // the dial it started is not awaited here
	}
	if delays[2] == 0 {
		t.Fatalf("redial delays %v: no back-off after connections that broke unanswered", delays)
	}
}

// Credentials from ClusterOptions.CredentialsProviderContext (as go-redis
// uses them) authenticate the subscription connections too.
func TestAuthWithCredentialsProviderContext(t *testing.T) {
	m := testManager(t)
	m.opt.CredentialsProviderContext = func(context.Context) (string, string, error) { return "user", "secret", nil }
	client, server := net.Pipe()
	got := make(chan string, 1)
	go func() {
		defer server.Close()
		buf := make([]byte, 256)
		n, _ := server.Read(buf)
		got <- string(buf[:n])
		_, _ = server.Write([]byte("+OK\r\n"))
	}()
	err := m.auth(context.Background(), client)
	_ = client.Close() // the server's read ends even if nothing was sent
	if err != nil {
		t.Fatal(err)
	}
	if want := string(appendCommand(nil, "AUTH", "user", "secret")); <-got != want {
		t.Fatalf("sent no AUTH user secret")
	}
}

// While one shard is down (a master killed: for the cluster's node timeout
// until its replica is promoted, or for good without one), a Barrier lists
// the channels it named on the other shards at once, even those of a
// barrier asked after one that waits for the dead shard; a channel of the
// dead shard is listed once it is unsubscribed.
func TestBarrierOnLiveShardWhileAnotherIsDown(t *testing.T) {
	c := redistest.StartCluster(t, 2, 0)
	h := newHarness(t, c)
	groups := channelsPerShard(2, 2)
	live, dead := groups[0], groups[1]
	h.ps.Subscribe(live[0], dead[0])
	h.barrier("b1")
	c.Masters[1].Stop()
	h.ps.Subscribe(dead[1])
	h.ps.Barrier("on-dead", dead[1])
	h.ps.Subscribe(live[1])
	asked := time.Now()
	h.ps.Barrier("mixed", dead[1], live[1])
	if v := h.next(); !reflect.DeepEqual(v, Barrier{Name: "mixed", Channels: []string{live[1]}}) {
		t.Fatalf("got %#v, want Barrier mixed for %s alone (%s's shard is down)", v, live[1], dead[1])
	}
	t.Logf("live shard's channel confirmed %v after the Barrier call, the other master down", time.Since(asked))
	if err := h.cc.SPublish(context.Background(), live[1], "x").Err(); err != nil {
		t.Fatal(err)
	}
	if v, ok := h.next().(*redis.Message); !ok || v.Channel != live[1] || v.Payload != "x" {
		t.Fatalf("got %#v, want the message on %s", v, live[1])
	}
	h.ps.Unsubscribe(dead[1])
	for _, name := range []string{"on-dead", "mixed"} {
		if v := h.next(); !reflect.DeepEqual(v, Barrier{Name: name, Channels: []string{dead[1]}}) {
			t.Fatalf("after Unsubscribe(%s): %#v, want Barrier %s listing it", dead[1], v, name)
		}
	}
}

// A shard's resubscription after a gap in which one slot's SSUBSCRIBE is
// refused (the slot moved meanwhile) still reports Reconnected for the
// channels resubscribed there, even when the refused one is then
// unsubscribed before it finds its new owner.
func TestReconnectedWhenOneResubscribeIsRefused(t *testing.T) {
	m := testManager(t)
	chans := distinctSlotChannels(2)
	p, q := chans[0], chans[1]
	const a = "a:1"
	for s := range m.topo {
		m.topo[s] = a
	}
	m.haveTopo = true
	sh := &shard{addr: a, chans: map[string]struct{}{p: {}, q: {}}, slot: 0, lost: true, dialing: true}
	m.shards[a], m.where[p], m.where[q] = sh, sh, sh
	client, server := net.Pipe()
	defer server.Close()
	m.handleEvent(event{kind: evConnected, sh: sh, gen: sh.gen, conn: client}) // resubscribes p and q
	// Redis answers in the order sent; the order of the slots' commands is
	// the map's. Put p's first: the refusal then ends the resubscription.
	slices.SortFunc(sh.sent, func(x, y command) int {
		if x.chans[0] == p {
			return -1
		}
		if y.chans[0] == p {
			return 1
		}
		return 0
	})
	for _, c := range slices.Clone(sh.sent) {
		if c.chans[0] == p {
			m.handleReply(sh, reply{kind: "ssubscribe", channel: p})
		} else {
			m.handleReply(sh, reply{err: fmt.Sprintf("MOVED %d b:1", slot.Of(q))})
		}
	}
	m.handleOp(op{kind: opUnsubscribe, names: []string{q}})
	if len(m.out) != 1 {
		t.Fatalf("%d events, want Reconnected from %s", len(m.out), a)
	}
	if v := <-m.out; v != (Reconnected{Shard: a}) {
		t.Fatalf("got %#v", v)
	}
}

// Close returns while the output channel is full and the readers, the
// manager (a Barrier) and Redis all have more to deliver.
func TestCloseWithOutputFull(t *testing.T) {
	c := redistest.StartCluster(t, 2, 0)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	ps := New(Options{Cluster: cc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Buffer: 1})
	groups := channelsPerShard(2, 1)
	chans := []string{groups[0][0], groups[1][0]}
	ps.Subscribe(chans...)
	ps.Barrier("b1")
	if v := <-ps.Channel(); !reflect.DeepEqual(v, Barrier{Name: "b1"}) {
		t.Fatalf("got %#v, want Barrier b1", v)
	}
	for i := range 100 {
		for _, ch := range chans {
			if err := cc.SPublish(context.Background(), ch, fmt.Sprint(i)).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ps.Barrier("b2")
	// Wait until the buffer is full and both readers hold one more.
	for len(ps.Channel()) == 0 {
		runtime.Gosched()
	}
	done := make(chan struct{})
	go func() {
		_ = ps.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked with the output channel full")
	}
	n := 0
	for range ps.Channel() {
		n++
	}
	if n > 1 {
		t.Fatalf("%d events after Close, want at most the buffered one", n)
	}
}

// stopManager closes p.stop unless a test did.
func stopManager(p *PubSub) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
}

// smessage is the RESP2 form of a message on ch.
func smessage(ch, payload string) string {
	return fmt.Sprintf("*3\r\n$8\r\nsmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(ch), ch, len(payload), payload)
}

// Once a connection is dropped, its reader delivers nothing more, not even
// the messages it had read before: they would follow what the next
// connection delivers (Reconnected, newer messages). Here the reader holds
// ten messages it cannot hand over (nobody receives yet) when the manager
// drops the connection.
func TestNoDeliveryFromDroppedConnection(t *testing.T) {
	m := testManager(t)
	m.out = make(chan any) // the reader blocks on its first message
	const a = "127.0.0.1:1"
	for s := range m.topo {
		m.topo[s] = a
	}
	m.haveTopo = true
	m.reloading = true // no reload goroutine: the reader is the only one
	sh := &shard{addr: a, chans: map[string]struct{}{"x": {}}, slot: 0, dialing: true}
	m.shards[a], m.where["x"] = sh, sh
	client, server := net.Pipe()
	defer server.Close()
	m.handleEvent(event{kind: evConnected, sh: sh, gen: sh.gen, conn: client})
	var stream strings.Builder
	for i := range 10 {
		stream.WriteString(smessage("x", fmt.Sprint(i)))
	}
	if _, err := server.Write([]byte(stream.String())); err != nil { // read whole into the reader's buffer
		t.Fatal(err)
	}
	sh.dialing = true // drop's redial is not wanted here
	dropped := make(chan struct{})
	go func() {
		m.drop(sh)
		close(dropped)
	}()
	got := 0
	for done := false; !done; {
		select { // the drop first, when both are ready
		case <-dropped:
			done = true
			continue
		default:
		}
		select {
		case <-m.out:
			got++ // handed over before the drop returned
		case <-dropped:
			done = true
		}
	}
	exited := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(exited)
	}()
	select {
	case v := <-m.out:
		t.Fatalf("after the drop (%d delivered before it), the dropped connection delivered %#v", got, v)
	case <-exited:
	}
}

// Close ends a new connection's AUTH at once; it waited for the AUTH's
// own time bound (5 s) before.
func TestCloseCancelsAuth(t *testing.T) {
	m := testManager(t)
	m.opt.Password = "secret"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := m.connect(ln.Addr().String())
		if conn != nil {
			_ = conn.Close()
		}
		done <- err
	}()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	want := appendCommand(nil, "AUTH", "secret")
	if _, err := io.ReadFull(srv, make([]byte, len(want))); err != nil { // AUTH sent, never answered
		t.Fatal(err)
	}
	stopManager(m.PubSub)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("connect after Close: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connect still blocked 10 s after Close")
	}
}

// An ASK is a one-off redirect while a slot migrates: it must not change
// the slot map (the slot is still the source's until the migration ends),
// and the refused channel is subscribed again after a reload.
func TestAskKeepsSlotMap(t *testing.T) {
	m := testManager(t)
	const a, x = "a:1", "room-a"
	for s := range m.topo {
		m.topo[s] = a
	}
	m.haveTopo = true
	m.reloading = true
	sh := &shard{addr: a, chans: map[string]struct{}{}, slot: 0, conn: nopConn{}}
	m.shards[a] = sh
	m.handleOp(op{kind: opSubscribe, names: []string{x}})
	m.handleReply(sh, reply{err: fmt.Sprintf("ASK %d b:1", slot.Of(x))})
	if m.topo[slot.Of(x)] != a {
		t.Fatalf("slot %d's owner is %q after an ASK, want %q", slot.Of(x), m.topo[slot.Of(x)], a)
	}
	if _, ok := m.unplaced[x]; !ok || !m.reloadAgain {
		t.Fatalf("x unplaced: %v, reload asked: %v; want both", ok, m.reloadAgain)
	}
}

// A CLUSTERDOWN is logged with the shard that answered it, each shard on
// its own line: a second shard's within the log interval was counted under
// the first one's line (the "refused" kind), naming the wrong shard.
func TestClusterDownLoggedPerShard(t *testing.T) {
	m := testManager(t)
	var logs redistest.LogBuffer
	m.rlog = ratelog.New(slog.New(slog.NewTextHandler(&logs, nil)), slog.LevelWarn, 0)
	chans := channelsPerShard(2, 1)
	for s := range m.topo {
		m.topo[s] = "a:1"
		if s >= slot.Count/2 {
			m.topo[s] = "b:1"
		}
	}
	m.haveTopo = true
	m.reloading = true
	shA := &shard{addr: "a:1", chans: map[string]struct{}{}, slot: 0, conn: nopConn{}}
	shB := &shard{addr: "b:1", chans: map[string]struct{}{}, slot: slot.Count / 2, conn: nopConn{}}
	m.shards["a:1"], m.shards["b:1"] = shA, shB
	m.handleOp(op{kind: opSubscribe, names: []string{chans[0][0], chans[1][0]}})
	m.handleReply(shA, reply{err: "CLUSTERDOWN The cluster is down"})
	m.handleReply(shB, reply{err: "CLUSTERDOWN The cluster is down"})
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want one per shard:\n%s", len(lines), logs.String())
	}
	for i, addr := range []string{"a:1", "b:1"} {
		for _, want := range []string{"reports the cluster down", "shard=" + addr, fmt.Sprintf("slot=%d", slot.Of(chans[i][0]))} {
			if !strings.Contains(lines[i], want) {
				t.Errorf("line %d %q lacks %q", i, lines[i], want)
			}
		}
	}
}

// A barrier command refused because the slot it named left the shard
// (MOVED) is asked again after the reload, in a slot the shard still owns:
// the channels it confirms must not wait for ever.
func TestRefusedBarrierAskedAgain(t *testing.T) {
	m := testManager(t)
	const a, b = "a:1", "b:1"
	x := distinctSlotChannels(1)[0]
	for s := range m.topo {
		m.topo[s] = a
	}
	m.haveTopo = true
	m.reloading = true
	sh := &shard{addr: a, chans: map[string]struct{}{x: {}}, slot: m.ownedSlot(a), conn: nopConn{}}
	m.shards[a], m.where[x] = sh, sh
	m.handleOp(op{kind: opBarrier, name: "r1", names: []string{x}})
	if len(sh.sent) != 1 || sh.sent[0].barrier == 0 {
		t.Fatalf("no barrier command sent: %+v", sh.sent)
	}
	moved := sh.slot
	if moved == slot.Of(x) {
		t.Fatal("test needs the barrier's slot apart from x's")
	}
	m.handleReply(sh, reply{err: fmt.Sprintf("MOVED %d %s", moved, b)})
	topo := m.topo
	topo[moved] = b
	m.handleEvent(event{kind: evSlots, slots: &topo})
	if len(sh.sent) != 1 || sh.sent[0].barrier == 0 {
		t.Fatalf("barrier not asked again after the reload: %+v", sh.sent)
	}
	m.handleReply(sh, reply{kind: "sunsubscribe", channel: sh.sent[0].chans[0]})
	if v := <-m.out; !reflect.DeepEqual(v, Barrier{Name: "r1", Channels: []string{x}}) {
		t.Fatalf("got %#v, want Barrier r1 listing %s", v, x)
	}
}
