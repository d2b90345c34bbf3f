package session

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wsgateway/gateway/token"
)

func TestSubscribeCapsPerSession(t *testing.T) {
	h := NewHub(nil)
	sh, _ := h.NewShard(&queueLoop{})
	s, sink := newSession(sh, "a")
	for i := range DefaultMaxSubscriptions {
		if err := sh.Subscribe(s, fmt.Sprint("c", i)); err != nil {
			t.Fatalf("subscription %d: %v", i, err)
		}
	}
	if err := sh.Subscribe(s, "one-more"); !errors.Is(err, ErrTooManySubscriptions) {
		t.Fatalf("subscription %d: err %v, want ErrTooManySubscriptions", DefaultMaxSubscriptions+1, err)
	}
	if got := h.Stats().SubscriptionRefusals.Load(); got != 1 {
		t.Fatalf("SubscriptionRefusals = %d, want 1", got)
	}
	if s.IsSubscribed("one-more") || s.Subscriptions() != DefaultMaxSubscriptions || h.Channels() != DefaultMaxSubscriptions {
		t.Fatalf("a refused subscribe changed state: subscribed %v, %d subscriptions, %d channels",
			s.IsSubscribed("one-more"), s.Subscriptions(), h.Channels())
	}
	// At the cap, a channel already held still answers, and a leave frees a place.
	sink.subscribed = nil
	if err := sh.Subscribe(s, "c0"); err != nil || !slices.Equal(sink.subscribed, []string{"c0"}) {
		t.Fatalf("re-subscribe at the cap: err %v, Subscribed %v", err, sink.subscribed)
	}
	sh.Unsubscribe(s, "c5")
	if err := sh.Subscribe(s, "one-more"); err != nil {
		t.Fatalf("after a leave: %v", err)
	}
}

func TestSubscribeCapOption(t *testing.T) {
	h := NewHub(nil)
	sh, _ := h.NewShard(&queueLoop{})
	s, _ := newSession(sh, "a")
	s.MaxSubscriptions = 2
	_ = sh.Subscribe(s, "x")
	_ = sh.Subscribe(s, "y")
	if err := sh.Subscribe(s, "z"); !errors.Is(err, ErrTooManySubscriptions) {
		t.Fatalf("cap 2, third channel: err %v", err)
	}
	u, _ := newSession(sh, "b")
	u.MaxSubscriptions = -1
	for i := range 3 * DefaultMaxSubscriptions {
		if err := sh.Subscribe(u, fmt.Sprint(i)); err != nil {
			t.Fatalf("no cap, subscription %d: %v", i, err)
		}
	}
}

// TestIndexedSubscriptionsStayConsistent crosses the indexing threshold
// both ways with many sessions sharing channels, leaving in every order,
// and checks after each step that every session finds exactly what it
// holds and every topic slot points back at its session.
func TestIndexedSubscriptionsStayConsistent(t *testing.T) {
	h := NewHub(nil)
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	const sessions, channels = 6, 3 * indexFrom
	var ss []*Session
	for i := range sessions {
		s, _ := newSession(sh, fmt.Sprint(i))
		for c := range channels {
			_ = sh.Subscribe(s, fmt.Sprint("ch", (c+i)%channels))
		}
		ss = append(ss, s)
	}
	check := func(step string) {
		t.Helper()
		for si, s := range ss {
			for i, sub := range s.subs {
				if s.find(sub.channel) != i {
					t.Fatalf("%s: session %d finds %q at %d, it is at %d", step, si, sub.channel, s.find(sub.channel), i)
				}
				list := sh.topics[sub.channel].live
				if list[sub.index] != s {
					t.Fatalf("%s: session %d's slot %d in %q holds another session", step, si, sub.index, sub.channel)
				}
			}
			if s.byChannel != nil && len(s.byChannel) != len(s.subs) {
				t.Fatalf("%s: session %d indexes %d of %d subscriptions", step, si, len(s.byChannel), len(s.subs))
			}
		}
	}
	check("subscribed")
	for c := channels - 1; c >= 0; c -= 2 { // leave every other channel, from the end
		for _, s := range ss[:3] {
			sh.Unsubscribe(s, fmt.Sprint("ch", c))
		}
		check(fmt.Sprint("left ch", c))
	}
	for c := range channels { // then all of them, from the front
		sh.Unsubscribe(ss[0], fmt.Sprint("ch", c))
	}
	check("emptied session 0")
	if ss[0].byChannel != nil || ss[0].Subscriptions() != 0 {
		t.Fatalf("an emptied session keeps its index: %v", ss[0].byChannel)
	}
	sh.Remove(ss[4])
	ss = slices.Delete(ss, 4, 5)
	check("removed session 4")
	_ = h.Publish("ch1", []byte("p"), 0)
	l.run()
	for _, s := range ss {
		sh.Remove(s)
	}
	if h.Channels() != 0 || len(sh.topics) != 0 {
		t.Fatalf("left %d channels, %d topics", h.Channels(), len(sh.topics))
	}
}

// TestDisconnectIsLinear removes a session holding 10,000 channels and
// one holding 100,000: with a scan per leave the second took minutes. Ten
// times the channels must cost about ten times as long, not a hundred; a
// loaded machine slows both alike, so only a ratio far past linear with a
// long absolute time fails (BenchmarkDisconnect measures the cost).
func TestDisconnectIsLinear(t *testing.T) {
	small := removeSessionOf(t, 10_000)
	large := removeSessionOf(t, 100_000)
	if large > 2*time.Second && large > 40*small {
		t.Fatalf("removing 100,000 subscriptions took %v, 10,000 took %v: not linear", large, small)
	}
}

// removeSessionOf subscribes one session to n channels and returns how
// long removing it took, checking that no channel is left.
func removeSessionOf(t *testing.T, n int) time.Duration {
	h := NewHub(nil)
	sh, _ := h.NewShard(&queueLoop{})
	s, _ := newSession(sh, "a")
	s.MaxSubscriptions = -1
	for i := range n {
		_ = sh.Subscribe(s, fmt.Sprint(i))
	}
	start := time.Now()
	sh.Remove(s)
	d := time.Since(start)
	if h.Channels() != 0 {
		t.Fatalf("%d channels left", h.Channels())
	}
	return d
}

// benchSession returns a shard and a session holding n channels, each
// shared with another session so that leaves move topic slots too.
func benchSession(b *testing.B, n int) (*Shard, *Session) {
	h := NewHub(nil)
	sh, _ := h.NewShard(&queueLoop{})
	s := New(token.Claims{}, nopSink{})
	s.MaxSubscriptions = -1
	other := New(token.Claims{}, nopSink{})
	other.MaxSubscriptions = -1
	sh.Add(s)
	sh.Add(other)
	for i := range n {
		_ = sh.Subscribe(other, channelName(i))
		_ = sh.Subscribe(s, channelName(i))
	}
	return sh, s
}

var benchSizes = []int{10, 10_000}

// nopSink is a Sink that does nothing, so benchmarks measure the shard.
type nopSink struct{}

func (nopSink) Deliver(*Message, *EncodeCache) {}
func (nopSink) Subscribed(string)              {}
func (nopSink) Close(uint16, string)           {}

func channelName(i int) string { return fmt.Sprint("channel-", i) }

// BenchmarkJoinLeave: one join and one leave of a new channel by a session
// that holds n channels. Per-op cost must not grow with n.
func BenchmarkJoinLeave(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			sh, s := benchSession(b, n)
			const extra = "extra"
			b.ReportAllocs()
			for b.Loop() {
				_ = sh.Subscribe(s, extra)
				sh.Unsubscribe(s, extra)
			}
		})
	}
}

// BenchmarkLookup: a join of a channel the session already holds (the
// duplicate check), at n channels.
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			sh, s := benchSession(b, n)
			held := channelName(n / 2)
			b.ReportAllocs()
			for b.Loop() {
				_ = sh.Subscribe(s, held)
			}
		})
	}
}

// BenchmarkLeaveShared: a leave and re-join of a channel held by the
// session, which moves another session's topic slot, at n channels.
func BenchmarkLeaveShared(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			sh, s := benchSession(b, n)
			held := channelName(n / 2)
			b.ReportAllocs()
			for b.Loop() {
				sh.Unsubscribe(s, held)
				_ = sh.Subscribe(s, held)
			}
		})
	}
}

// BenchmarkDisconnect: removing a session that holds n channels (each also
// held by another session), reported per subscription as ns/sub. Building
// the session is outside the timer.
func BenchmarkDisconnect(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			h := NewHub(nil)
			sh, _ := h.NewShard(&queueLoop{})
			other := New(token.Claims{}, nopSink{})
			other.MaxSubscriptions = -1
			sh.Add(other)
			names := make([]string, n)
			for i := range names {
				names[i] = channelName(i)
				_ = sh.Subscribe(other, names[i])
			}
			b.ReportAllocs()
			var timed time.Duration
			for b.Loop() {
				b.StopTimer()
				s := New(token.Claims{}, nopSink{})
				s.MaxSubscriptions = -1
				sh.Add(s)
				for _, c := range names {
					_ = sh.Subscribe(s, c)
				}
				b.StartTimer()
				start := time.Now()
				sh.Remove(s)
				timed += time.Since(start)
			}
			b.ReportMetric(float64(timed.Nanoseconds())/float64(b.N*n), "ns/sub")
		})
	}
}
