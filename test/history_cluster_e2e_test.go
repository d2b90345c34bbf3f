package test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// History across nodes: kept in Redis (PROTOCOL.md §5.1). Helpers start
// with "hc".

func hcNodes(t *testing.T, size int) (*redistest.Server, *node.Node, *node.Node) {
	srv := redistest.Start(t)
	hist := func(c *node.Config) {
		c.History = history.Options{Size: size, TTL: time.Minute, Channels: []string{"h:"}}
		c.RedisPrefix = "hc" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":" // REDIS_URL may be shared
	}
	var prefix string
	a := e2eRedisNode(t, srv, hist, func(c *node.Config) { prefix = c.RedisPrefix })
	b := e2eRedisNode(t, srv, hist, func(c *node.Config) { c.RedisPrefix = prefix })
	return srv, a, b
}

// hcSubscribeFrom sends SubscribeFrom and returns the replay's payloads
// and the SubscribedFrom that ends it.
func hcSubscribeFrom(t testing.TB, c *websocket.Conn, channel string, since history.Position) ([]string, packet.ServerPacket) {
	t.Helper()
	send(t, c, packet.AppendSubscribeFrom(nil, channel, since.Epoch, since.Offset))
	var replay []string
	next := since.Offset + 1
	for {
		for _, p := range readMessage(t, c) {
			switch p.ID {
			case packet.PacketPublication:
				if p.Offset != next {
					t.Fatalf("replay: %s, want offset %d", describe(p), next)
				}
				next++
				replay = append(replay, string(p.Payload))
			case packet.PacketSubscribedFrom:
				return replay, p
			default:
				t.Fatalf("during the replay: %s", describe(p))
			}
		}
	}
}

// TestHistoryAcrossNodes: offsets are the cluster's: a client recovers on
// the other node what was published on either, every publication reaches
// SubscribeFrom subscribers on both nodes once and in order (its own
// node's included), and the admin API of either node reads the same
// history.
func TestHistoryAcrossNodes(t *testing.T) {
	t.Parallel()
	_, a, b := hcNodes(t, 100)
	const ch = "h:x"
	sa := connect(t, a, "alice")
	replay, sf := hcSubscribeFrom(t, sa, ch, history.Position{})
	if len(replay) != 0 || sf.Recovered != 1 || sf.Offset != 0 || sf.Epoch == 0 {
		t.Fatalf("first subscribe: %v %s", replay, describe(sf))
	}
	e := sf.Epoch
	sb := connect(t, b, "bob")
	if _, sfb := hcSubscribeFrom(t, sb, ch, history.Position{}); sfb.Epoch != e {
		t.Fatalf("node b: %s, epoch %d on node a", describe(sfb), e)
	}
	pub := connect(t, b, "carol")
	both := func(offset int64, payload string) {
		for _, c := range []*websocket.Conn{sa, sb} {
			hiExpect(t, c, publication(ch, offset, payload))
		}
	}
	if p1 := hiAdminPublish(t, a, ch, "1"); p1 != (history.Position{Epoch: e, Offset: 1}) {
		t.Fatalf("first publish at %+v", p1)
	}
	both(1, "1")
	nePublishSync(t, pub, ch, []byte("2"))
	both(2, "2")
	if p3 := hiAdminPublish(t, b, ch, "3"); p3.Offset != 3 {
		t.Fatalf("third publish at %+v", p3)
	}
	both(3, "3")
	// alice leaves at 3 and comes back on the other node. (A client's
	// publish is appended when the broker's batch reaches Redis: bob sees
	// 4 before the admin publishes 5, so the offsets are the test's.)
	sa.CloseNow()
	nePublishSync(t, pub, ch, []byte("4"))
	hiExpect(t, sb, publication(ch, 4, "4"))
	hiAdminPublish(t, a, ch, "5")
	sa = connect(t, b, "alice")
	replay, sf = hcSubscribeFrom(t, sa, ch, history.Position{Epoch: e, Offset: 3})
	if strings.Join(replay, ",") != "4,5" || sf.Recovered != 1 || sf.Offset != 5 || sf.Epoch != e {
		t.Fatalf("recovery on the other node: %v %s", replay, describe(sf))
	}
	hiAdminPublish(t, b, ch, "6")
	hiExpect(t, sa, publication(ch, 6, "6"))
	for _, n := range []*node.Node{a, b} {
		_, body, _ := e2eDo(t, "GET", adminURL(n)+"/api/history?channel="+ch+"&limit=1", "", nil)
		if want := `{"channel":"h:x","epoch":"` + strconv.FormatInt(e, 10) + `","offset":6,"publications":[{"offset":6,"payload":"Ng=="}]}` + "\n"; string(body) != want {
			t.Fatalf("history: %s\nwant %s", body, want)
		}
	}
}

// TestHistoryAcrossNodesNoGapWhileFlooding: a reader hops between the
// nodes from its last position while a publisher floods; it ends with
// every offset once, in order.
func TestHistoryAcrossNodesNoGapWhileFlooding(t *testing.T) {
	t.Parallel()
	const total = 2000
	_, a, b := hcNodes(t, total)
	const ch = "h:flood"
	c := connect(t, a, "reader")
	_, sf := hcSubscribeFrom(t, c, ch, history.Position{})
	c.CloseNow()
	epoch, last := sf.Epoch, int64(0)
	pub := connect(t, a, "publisher")
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= total; i++ {
			send(t, pub, packet.AppendPublish(nil, ch, []byte(strconv.Itoa(i))))
			if i%50 == 0 {
				e2ePing(t, pub) // keep the publisher's pace near Redis's
			}
		}
	})
	got := 0
	for round := 0; last < total; round++ {
		n := []*node.Node{a, b}[round%2]
		c := connect(t, n, "reader")
		replay, sf := hcSubscribeFrom(t, c, ch, history.Position{Epoch: epoch, Offset: last})
		if sf.Recovered != 1 || sf.Epoch != epoch || sf.Offset != last+int64(len(replay)) {
			t.Fatalf("round %d: %s after %d with %d replayed", round, describe(sf), last, len(replay))
		}
		got += len(replay)
		last = sf.Offset
		for read := 0; read < 300 && last < total; {
			for _, p := range readMessage(t, c) {
				if p.ID != packet.PacketPublication || p.Offset != last+1 || string(p.Payload) != strconv.FormatInt(p.Offset, 10) {
					t.Fatalf("round %d: %s after offset %d", round, describe(p), last)
				}
				last = p.Offset
				got++
				read++
			}
		}
		c.CloseNow()
	}
	wg.Wait()
	if got != total {
		t.Fatalf("received %d, want %d", got, total)
	}
}

// TestHistoryRedisRestartedEmpty: publishes and SubscribeFrom are refused
// (503) while Redis is down; once it is back, empty, the live subscriber is
// told the epoch changed (recovered 0) without being closed, and goes on
// with the new epoch's offsets; its old position cannot be recovered.
func TestHistoryRedisRestartedEmpty(t *testing.T) {
	t.Parallel()
	srv, a, _ := hcNodes(t, 10)
	const ch = "h:r"
	s := connect(t, a, "alice")
	_, sf := hcSubscribeFrom(t, s, ch, history.Position{})
	old := hiAdminPublish(t, a, ch, "before")
	hiExpect(t, s, publication(ch, 1, "before"))
	p := connect(t, a, "bob")
	srv.Stop()
	// Refused while down: the first publish may be taken by the queue and
	// lost, then told; keep publishing until Redis's absence is known.
	deadline := time.Now().Add(10 * time.Second)
	for {
		send(t, p, packet.AppendPing(packet.AppendPublish(nil, ch, []byte("lost"))))
		var refused bool
		for _, q := range readMessage(t, p) {
			refused = refused || (q.ID == packet.PacketError && q.Code == packet.ErrorUnavailable)
		}
		if refused {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("publishes still accepted 10 s after Redis stopped")
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := connect(t, a, "carol")
	send(t, c, packet.AppendSubscribeFrom(nil, ch, sf.Epoch, 0))
	if q := readOne(t, c); q.ID != packet.PacketError || q.Code != packet.ErrorUnavailable {
		t.Fatalf("SubscribeFrom while Redis is down: %s", describe(q))
	}
	srv.Restart(t)
	// The reconnect's check finds another epoch: told, not closed.
	var told packet.ServerPacket
	for told.ID != packet.PacketSubscribedFrom {
		told = readOne(t, s)
	}
	if told.Recovered != 0 || told.Epoch == old.Epoch {
		t.Fatalf("after Redis came back empty: %s", describe(told))
	}
	var next history.Position
	waitUntil(t, "a publish accepted again", func() bool {
		status, body, ct := e2eDo(t, "POST", adminURL(a)+"/api/publish?channel="+ch, "application/json", []byte("after"))
		if status != 200 {
			return false
		}
		m := e2eDecodeJSON(t, body, ct)
		e, _ := strconv.ParseInt(m["epoch"].(string), 10, 64)
		next = history.Position{Epoch: e, Offset: int64(m["offset"].(float64))}
		return true
	})
	if next.Epoch != told.Epoch || next.Offset != told.Offset+1 {
		t.Fatalf("first publish after the restart at %+v, the session was told %s", next, describe(told))
	}
	hiExpect(t, s, publication(ch, next.Offset, "after"))
	d := connect(t, a, "dave")
	if replay, sf2 := hcSubscribeFrom(t, d, ch, old); len(replay) != 0 || sf2.Recovered != 0 || sf2.Epoch != next.Epoch {
		t.Fatalf("the old position after the restart: %v %s", replay, describe(sf2))
	}
}
