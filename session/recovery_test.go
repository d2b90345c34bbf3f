package session

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/token"
)

// posSink records what a SubscribeFrom subscriber is told, in order.
type posSink struct {
	recSink
	log []string
}

func (p *posSink) DeliverAt(m *Message, enc *EncodeCache) {
	kind := "live"
	if enc == nil {
		kind = "replay"
	}
	p.log = append(p.log, fmt.Sprintf("%s %d=%s", kind, m.Offset, m.Payload))
}

func (p *posSink) SubscribedFrom(_ string, pos history.Position, recovered bool) {
	p.log = append(p.log, fmt.Sprintf("subscribed-from %d recovered=%v", pos.Offset, recovered))
}

func (p *posSink) SubscribeFromFailed(_ string, err error) {
	p.log = append(p.log, "failed "+err.Error())
}

func historyHub(t *testing.T, size int) (*Hub, *queueLoop, *Shard) {
	t.Helper()
	h := NewHub(nil)
	if err := h.SetHistory(history.Options{Size: size}); err != nil {
		t.Fatal(err)
	}
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	return h, l, sh
}

func positioned(t *testing.T, sh *Shard, channel string, since history.Position) (*Session, *posSink) {
	t.Helper()
	sink := &posSink{}
	s := New(token.Claims{Subject: "p"}, sink)
	sh.Add(s)
	if err := sh.SubscribeFrom(s, channel, since); err != nil {
		t.Fatal(err)
	}
	return s, sink
}

// A delivery the loop could not queue leaves a gap; the next publication
// reveals it and the history fills it before that publication.
func TestRecoveryFillsADroppedDelivery(t *testing.T) {
	h, l, sh := historyHub(t, 10)
	_, sink := positioned(t, sh, "c", history.Position{})
	for i := 1; i <= 2; i++ {
		if err := h.Publish("c", []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	l.run()
	l.drop = 1 // 3 is dropped
	_ = h.Publish("c", []byte("3"), 0)
	l.run()
	_ = h.Publish("c", []byte("4"), 0)
	l.run()
	// The fill reads the history after 4 was kept: 4 comes with it, and its
	// live delivery is then a duplicate.
	want := "subscribed-from 0 recovered=true|live 1=1|live 2=2|replay 3=3|replay 4=4"
	if got := strings.Join(sink.log, "|"); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if g := h.Stats().RecoveryGaps.Load(); g != 1 {
		t.Fatalf("RecoveryGaps %d", g)
	}
}

// A gap the history no longer holds is told (recovered false) and the
// subscriber goes on from the top.
func TestRecoveryTellsAGapItCannotFill(t *testing.T) {
	h, l, sh := historyHub(t, 2)
	_, sink := positioned(t, sh, "c", history.Position{})
	l.drop = 4
	for i := 1; i <= 4; i++ { // all dropped; the history keeps 3 and 4
		_ = h.Publish("c", []byte(fmt.Sprint(i)), 0)
	}
	l.run()
	_ = h.Publish("c", []byte("5"), 0)
	l.run()
	want := "subscribed-from 0 recovered=true|subscribed-from 5 recovered=false"
	if got := strings.Join(sink.log, "|"); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	_ = h.Publish("c", []byte("6"), 0)
	l.run()
	if got := sink.log[len(sink.log)-1]; got != "live 6=6" {
		t.Fatalf("after the gap: %s", got)
	}
}

// A publication of another epoch is told before it is delivered, and one
// without a position (an outside tool) never reaches the subscriber.
func TestRecoveryEpochChangeAndUnpositioned(t *testing.T) {
	_, l, sh := historyHub(t, 10)
	_, sink := positioned(t, sh, "c", history.Position{})
	sh.deliver(&Message{Channel: "c", Payload: []byte("raw")})
	sh.deliver(&Message{Channel: "c", Payload: []byte("x"), Epoch: 77, Offset: 5})
	sh.deliver(&Message{Channel: "c", Payload: []byte("y"), Epoch: 77, Offset: 6})
	l.run()
	want := "subscribed-from 0 recovered=true|subscribed-from 4 recovered=false|live 5=x|live 6=y"
	if got := strings.Join(sink.log, "|"); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// Subscribe and SubscribeFrom on one channel replace each other, and the
// topic's lists stay consistent through Remove.
func TestRecoverySubscriptionKindsReplaceEachOther(t *testing.T) {
	h, l, sh := historyHub(t, 10)
	s, sink := positioned(t, sh, "c", history.Position{})
	if err := sh.Subscribe(s, "c"); err != nil {
		t.Fatal(err)
	}
	_ = h.Publish("c", []byte("m"), 0)
	l.run()
	if len(sink.got) != 1 || len(sink.log) != 1 {
		t.Fatalf("after Subscribe: messages %q, positioned %q", sink.got, sink.log)
	}
	if err := sh.SubscribeFrom(s, "c", history.Position{}); err != nil {
		t.Fatal(err)
	}
	if s.Subscriptions() != 1 || len(sh.topics["c"].live) != 0 || len(sh.topics["c"].positioned) != 1 {
		t.Fatalf("after SubscribeFrom: %d subscriptions, topic %+v", s.Subscriptions(), sh.topics["c"])
	}
	sh.Remove(s)
	if len(sh.topics) != 0 || h.Channels() != 0 {
		t.Fatalf("after Remove: topics %v, hub channels %d", sh.topics, h.Channels())
	}
	if err := sh.SubscribeFrom(New(token.Claims{}, &recSink{}), "c", history.Position{}); err != ErrNoHistory {
		t.Fatalf("a sink without positions: %v", err)
	}
}

// The replay bound is about what the session would have to queue: many
// small publications on a long channel name make a replay far larger than
// their payloads, and it must be refused (recovered 0) rather than let
// the session become a slow consumer.
func TestRecoveryReplayBoundCountsPacketOverhead(t *testing.T) {
	h, _, sh := historyHub(t, 100)
	h.SetMaxReplay(1000)
	channel := strings.Repeat("c", 200)
	var first history.Position
	for i := range 20 {
		pos, err := h.PublishAt(t.Context(), channel, []byte{'x'})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = pos
		}
	}
	// 20 Publications of 200+ bytes each: over 4000 bytes to queue for 20
	// payload bytes.
	_, sink := positioned(t, sh, channel, history.Position{Epoch: first.Epoch, Offset: 0})
	want := "subscribed-from 20 recovered=false"
	if got := strings.Join(sink.log, "|"); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// A SubscribeFrom whose replay is over the bound costs no more than the
// bound: the store must not gather the whole history first (one small
// packet would otherwise make the node allocate and walk Size entries
// under the channel's lock, which every publisher of the channel needs).
func TestRecoveryOverTheBoundDoesNotGatherTheHistory(t *testing.T) {
	h, _, sh := historyHub(t, history.MaxSize)
	h.SetMaxReplay(1 << 10)
	var first history.Position
	for i := range history.MaxSize {
		pos, err := h.PublishAt(t.Context(), "c", []byte{'x'})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = pos
		}
	}
	s := New(token.Claims{Subject: "p"}, &posSink{})
	sh.Add(s)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if err := sh.SubscribeFrom(s, "c", history.Position{Epoch: first.Epoch}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("10 refused recoveries allocated %d bytes", n)
	}
}
