package gateway_test

import (
	"bytes"
	"testing"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/packet"
)

// The history pair of BenchmarkNativeFanOut (issue 13, Performance): the
// same 10,000 subscribers on one loop and 100-byte publishes through the
// hub's Publish, on a node alone, with history on (history.MemoryStore,
// subscribers with SubscribeFrom, deliveries are Publications) and off
// (history configured for other channels: the path every channel without
// history takes once a node keeps history anywhere). ns/op and allocs/op
// are per publish; per delivery divide by 10,000.

const histSubscribers = 10000

func histFanOut(b *testing.B, keep bool) {
	l, key := nativeLoop(b)
	hub := l.Server().Hub()
	if err := hub.SetHistory(history.Options{Size: 100, Channels: []string{"kept"}}); err != nil {
		b.Fatal(err)
	}
	channel, frame := "fan", 2+packet.MessageLen(3, 100)
	sub := packet.AppendSubscribe(nil, channel)
	if keep {
		channel, frame = "kept", 2+packet.PublicationLen(4, 100)
		sub = packet.AppendSubscribeFrom(nil, channel, 0, 0)
	}
	if hub.Keeps(channel) != keep {
		b.Fatalf("Keeps(%q) = %v", channel, !keep)
	}
	conns := make([]*gateway.FakeConn, histSubscribers)
	for i := range conns {
		conns[i] = authenticated(b, l, key)
		l.Feed(conns[i], unmasked(sub))
		l.Run()
		want := packet.PacketSubscribed
		if keep {
			want = packet.PacketSubscribedFrom
		}
		if out := conns[i].Output(); len(out) < 3 || out[2] != want {
			b.Fatalf("subscriber %d: answer % x", i, out)
		}
		conns[i].ResetOutput()
		conns[i].DiscardOutput()
	}
	payload := bytes.Repeat([]byte("p"), 100)
	b.ReportAllocs()
	for b.Loop() {
		if err := hub.Publish(channel, payload, 0); err != nil {
			b.Fatal(err)
		}
		l.Run()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*histSubscribers), "ns/delivery")
	for i, c := range conns {
		if c.Written() != frame*b.N {
			b.Fatalf("subscriber %d got %d bytes, want %d", i, c.Written(), frame*b.N)
		}
	}
}

// BenchmarkNativeFanOutHistoryOff: a channel without history on a node
// that keeps history for others (compare BenchmarkNativeFanOut).
func BenchmarkNativeFanOutHistoryOff(b *testing.B) { histFanOut(b, false) }

// BenchmarkNativeFanOutHistoryOn: a channel with history, every
// subscriber subscribed with SubscribeFrom.
func BenchmarkNativeFanOutHistoryOn(b *testing.B) { histFanOut(b, true) }

// TestHistoryHotPathAllocations guards the pair's allocation counts: on a
// node that keeps history, a publish on a channel without history
// allocates what it did before history existed (its message, at most 4,
// as TestHotPathAllocatesNothing), and a publish on a channel with history
// one more (the kept copy); neither grows with the subscribers, so no
// delivery allocates.
func TestHistoryHotPathAllocations(t *testing.T) {
	for _, keep := range []bool{false, true} {
		l, key := nativeLoop(t)
		hub := l.Server().Hub()
		if err := hub.SetHistory(history.Options{Size: 100, Channels: []string{"kept"}}); err != nil {
			t.Fatal(err)
		}
		channel, sub := "fan", packet.AppendSubscribe(nil, "fan")
		if keep {
			channel, sub = "kept", packet.AppendSubscribeFrom(nil, "kept", 0, 0)
		}
		payload := bytes.Repeat([]byte("p"), 100)
		var counts []float64
		for _, n := range []int{20, 200} {
			for range n - len(counts)*20 {
				s := authenticated(t, l, key)
				l.Feed(s, unmasked(sub))
				l.Run()
				s.DiscardOutput()
			}
			counts = append(counts, testing.AllocsPerRun(200, func() {
				_ = hub.Publish(channel, payload, 0)
				l.Run()
			}))
		}
		limit := 4.0
		if keep {
			limit = 5
		}
		if counts[1] != counts[0] || counts[1] > limit {
			t.Errorf("history %v: a publish costs %v allocations at 20 subscribers and %v at 200, want the same and at most %v",
				keep, counts[0], counts[1], limit)
		}
	}
}
