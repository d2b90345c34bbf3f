package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// History and recovery (PROTOCOL.md §5.1) on a node alone. Helpers start
// with "hi".

func hiNode(t testing.TB, size int, mods ...func(*node.Config)) *node.Node {
	return startNode(t, append([]func(*node.Config){func(c *node.Config) {
		c.History = history.Options{Size: size, TTL: time.Minute, Channels: []string{"h:"}}
	}}, mods...)...)
}

// hiAdminPublish publishes through the admin API and returns the position
// it answers.
func hiAdminPublish(t testing.TB, n *node.Node, channel, payload string) history.Position {
	t.Helper()
	m := e2eAdminJSON(t, n, "/api/publish?channel="+channel, payload, 200)
	e, err := strconv.ParseInt(fmt.Sprint(m["epoch"]), 10, 64)
	if err != nil || e == 0 {
		t.Fatalf("admin publish on %s answered %v: no epoch", channel, m)
	}
	off, _ := m["offset"].(float64)
	return history.Position{Epoch: e, Offset: int64(off)}
}

// hiExpect reads packets until it has len(want) and compares them, in
// order, with want (described as describe writes them).
func hiExpect(t testing.TB, c *websocket.Conn, want ...string) []packet.ServerPacket {
	t.Helper()
	var got []packet.ServerPacket
	for len(got) < len(want) {
		got = append(got, readMessage(t, c)...)
	}
	var g []string
	for _, p := range got {
		g = append(g, describe(p))
	}
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
	}
	return got
}

func subscribedFrom(channel string, pos history.Position, recovered int) string {
	return describe(packet.ServerPacket{ID: packet.PacketSubscribedFrom, Channel: []byte(channel), Epoch: pos.Epoch, Offset: pos.Offset, Recovered: byte(recovered)})
}

func publication(channel string, offset int64, payload string) string {
	return describe(packet.ServerPacket{ID: packet.PacketPublication, Channel: []byte(channel), Offset: offset, Payload: []byte(payload)})
}

func TestHistoryRecovery(t *testing.T) {
	t.Parallel()
	n := hiNode(t, 5)
	const ch = "h:room"
	p1 := hiAdminPublish(t, n, ch, "one")
	if p1.Offset != 1 {
		t.Fatalf("first publish at %+v, want offset 1", p1)
	}
	e := p1.Epoch

	// No replay asked: the position now, recovered.
	a := connect(t, n, "alice")
	send(t, a, packet.AppendSubscribeFrom(nil, ch, 0, 0))
	hiExpect(t, a, subscribedFrom(ch, history.Position{Epoch: e, Offset: 1}, 1))
	// Live: a Publication with the next offset, from the admin API and
	// from a client; a plain subscriber gets Messages.
	b := connect(t, n, "bob")
	subscribe(t, b, ch)
	hiAdminPublish(t, n, ch, "two")
	neCheckMessage(t, readOne(t, b), ch, []byte("two"))
	nePublishSync(t, b, ch, []byte("three"))
	hiExpect(t, a, publication(ch, 2, "two"), publication(ch, 3, "three"))

	// alice leaves at 3; 4 and 5 are published; she recovers them.
	a.CloseNow()
	hiAdminPublish(t, n, ch, "four")
	hiAdminPublish(t, n, ch, "five")
	a = connect(t, n, "alice")
	send(t, a, packet.AppendSubscribeFrom(nil, ch, e, 3))
	hiExpect(t, a, publication(ch, 4, "four"), publication(ch, 5, "five"), subscribedFrom(ch, history.Position{Epoch: e, Offset: 5}, 1))

	// Impossible recoveries: nothing replayed, the top, recovered 0.
	for i := 6; i <= 8; i++ { // keeps 4..8 (size 5)
		hiAdminPublish(t, n, ch, fmt.Sprintf("p%d", i))
	}
	top := history.Position{Epoch: e, Offset: 8}
	for _, since := range []history.Position{{Epoch: e, Offset: 2}, {Epoch: e, Offset: 100}, {Epoch: e + 1, Offset: 7}} {
		c := connect(t, n, "carol")
		send(t, c, packet.AppendSubscribeFrom(nil, ch, since.Epoch, since.Offset))
		hiExpect(t, c, subscribedFrom(ch, top, 0))
		hiAdminPublish(t, n, ch, "next")
		top.Offset++
		hiExpect(t, c, publication(ch, top.Offset, "next"))
	}
	// The oldest kept one is still reachable: from 3 gives 4..top.
	c := connect(t, n, "dave")
	send(t, c, packet.AppendSubscribeFrom(nil, ch, e, top.Offset-5))
	var want []string
	for o := top.Offset - 4; o <= top.Offset; o++ {
		want = append(want, publication(ch, o, map[bool]string{true: "next", false: fmt.Sprintf("p%d", o)}[o > 8]))
	}
	hiExpect(t, c, append(want, subscribedFrom(ch, top, 1))...)
}

func TestHistoryRefusals(t *testing.T) {
	t.Parallel()
	n := hiNode(t, 5)
	c := connect(t, n, "alice")
	for _, tc := range []struct {
		channel       string
		epoch, offset int64
		code          int16
		text          string
	}{
		{"room", 0, 0, 400, `subscribe from "room": channel keeps no history`}, // not under --history-channels
		{"h:x", 0, 3, 400, `subscribe from "h:x": bad position (epoch 0, offset 3)`},
		{"h:x", 5, -1, 400, `subscribe from "h:x": bad position (epoch 5, offset -1)`},
		{"user:bob", 0, 0, 403, `subscribe from "user:bob": personal channel of another subject`},
	} {
		send(t, c, packet.AppendSubscribeFrom(nil, tc.channel, tc.epoch, tc.offset))
		p := readOne(t, c)
		if p.ID != packet.PacketError || p.Code != tc.code || string(p.Text) != tc.text {
			t.Fatalf("SubscribeFrom(%q, %d, %d): %s, want Error(%d, %q)", tc.channel, tc.epoch, tc.offset, describe(p), tc.code, tc.text)
		}
	}
	code, body, _ := e2eDo(t, "GET", adminURL(n)+"/api/history?channel=room", "", nil)
	if code != 400 || string(body) != `{"error":"channel keeps no history"}`+"\n" {
		t.Fatalf("history of a channel without: %d %s", code, body)
	}
	code, body, _ = e2eDo(t, "GET", adminURL(n)+"/api/history?channel=h:x&limit=0", "", nil)
	if code != 400 || !strings.Contains(string(body), "limit must be a positive integer") {
		t.Fatalf("limit=0: %d %s", code, body)
	}
}

// TestHistoryAdminAPI: GET /api/history answers the newest publications
// in offset order with base64 payloads and a decimal-string epoch.
func TestHistoryAdminAPI(t *testing.T) {
	t.Parallel()
	n := hiNode(t, 3)
	var pos history.Position
	for _, p := range []string{"a", "b", "\x00\xff", "d"} {
		pos = hiAdminPublish(t, n, "h:api", p)
	}
	code, body, _ := e2eDo(t, "GET", adminURL(n)+"/api/history?channel=h:api&limit=2", "", nil)
	want := fmt.Sprintf(`{"channel":"h:api","epoch":"%d","offset":4,"publications":[{"offset":3,"payload":"AP8="},{"offset":4,"payload":"ZA=="}]}`+"\n", pos.Epoch)
	if code != 200 || string(body) != want {
		t.Fatalf("history: %d %s\nwant %s", code, body, want)
	}
	_, body, _ = e2eDo(t, "GET", adminURL(n)+"/api/history?channel=h:api", "", nil)
	var all struct{ Publications []struct{ Offset int64 } }
	if err := json.Unmarshal(body, &all); err != nil || len(all.Publications) != 3 || all.Publications[0].Offset != 2 {
		t.Fatalf("history without limit: %s (%v)", body, err)
	}
}

// TestHistoryEchoAndBatch: a SubscribeFrom subscriber gets its own
// publications whatever its echo setting, and with a batch window the
// replay's Publications come before SubscribedFrom, in order.
func TestHistoryEchoAndBatch(t *testing.T) {
	t.Parallel()
	n := hiNode(t, 10)
	const ch = "h:batch"
	e := hiAdminPublish(t, n, ch, "x1").Epoch
	hiAdminPublish(t, n, ch, "x2")
	c := connect(t, n, "alice")
	send(t, c, packet.AppendSettings(nil, packet.Setting{ID: packet.SettingBatchWindow, Short: 200}))
	send(t, c, packet.AppendSubscribeFrom(nil, ch, e, 0))
	hiExpect(t, c, publication(ch, 1, "x1"), publication(ch, 2, "x2"), subscribedFrom(ch, history.Position{Epoch: e, Offset: 2}, 1))
	nePublishSync(t, c, ch, []byte("mine")) // echo is off: still delivered here
	hiExpect(t, c, publication(ch, 3, "mine"))
}

// TestHistoryNoGapWhileFlooding: a subscriber leaves and comes back from
// its position again and again while a publisher floods the channel; in
// the end it has every offset exactly once, in order, with its payload.
func TestHistoryNoGapWhileFlooding(t *testing.T) {
	t.Parallel()
	const total = 3000
	n := hiNode(t, total)
	const ch = "h:flood"
	pub := connect(t, n, "publisher")
	// The reader's first subscribe, before any publish, makes the epoch
	// and starts at offset 0.
	c := connect(t, n, "reader")
	send(t, c, packet.AppendSubscribeFrom(nil, ch, 0, 0))
	p0 := readOne(t, c)
	if p0.ID != packet.PacketSubscribedFrom || p0.Offset != 0 || p0.Recovered != 1 {
		t.Fatalf("first subscribe: %s", describe(p0))
	}
	c.CloseNow()
	epoch, last := p0.Epoch, int64(0)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= total; i++ {
			send(t, pub, packet.AppendPublish(nil, ch, []byte(strconv.Itoa(i))))
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	got := 0
	for round := 0; last < total; round++ {
		c := connect(t, n, "reader")
		send(t, c, packet.AppendSubscribeFrom(nil, ch, epoch, last))
		for read := 0; read < 400 && last < total; {
			for _, p := range readMessage(t, c) {
				switch p.ID {
				case packet.PacketSubscribedFrom:
					if p.Recovered != 1 || p.Epoch != epoch || p.Offset != last {
						t.Fatalf("round %d: %s after offset %d", round, describe(p), last)
					}
					epoch, last = p.Epoch, p.Offset
				case packet.PacketPublication:
					if p.Offset != last+1 || string(p.Payload) != strconv.FormatInt(p.Offset, 10) {
						t.Fatalf("round %d: %s after offset %d", round, describe(p), last)
					}
					last = p.Offset
					got++
					read++
				default:
					t.Fatalf("round %d: %s", round, describe(p))
				}
			}
		}
		c.CloseNow()
	}
	wg.Wait()
	if got != total {
		t.Fatalf("received %d publications, want %d", got, total)
	}
}

// TestHistoryEpochOfANewNode: a node started anew keeps nothing: a
// position of the old one is of another epoch and cannot be recovered.
func TestHistoryEpochOfANewNode(t *testing.T) {
	t.Parallel()
	n := hiNode(t, 10)
	old := hiAdminPublish(t, n, "h:e", "before")
	n2 := hiNode(t, 10)
	c := connect(t, n2, "alice")
	send(t, c, packet.AppendSubscribeFrom(nil, "h:e", old.Epoch, old.Offset))
	p := readOne(t, c)
	if p.ID != packet.PacketSubscribedFrom || p.Recovered != 0 || p.Epoch == old.Epoch || p.Offset != 0 {
		t.Fatalf("on a new node: %s", describe(p))
	}
	if !bytes.Equal(p.Channel, []byte("h:e")) {
		t.Fatalf("channel %q", p.Channel)
	}
}
