package session

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/wsgateway/gateway/token"
)

// queueLoop runs tasks when run is called, like an event loop after its
// current callback.
type queueLoop struct {
	tasks  []task
	max    int // TryRun refuses past it; 0: no bound
	drop   int // TryRun refuses this many more, though Busy says no (a loop filling up meanwhile)
	panics []any
}

type task struct {
	fn  func(any)
	arg any
}

func (q *queueLoop) Run(fn func(any), arg any) { q.tasks = append(q.tasks, task{fn, arg}) }

func (q *queueLoop) TryRun(fn func(any), arg any, _ int) bool {
	if q.Busy() {
		return false
	}
	if q.drop > 0 {
		q.drop--
		return false
	}
	q.Run(fn, arg)
	return true
}

func (q *queueLoop) Busy() bool { return q.max > 0 && len(q.tasks) >= q.max }

func (q *queueLoop) SinkPanicked(s *Session, v any) {
	q.panics = append(q.panics, v)
	s.Sink.Close(1011, "internal server error")
}

func (q *queueLoop) run() {
	for len(q.tasks) > 0 {
		t := q.tasks[0]
		q.tasks = q.tasks[1:]
		t.fn(t.arg)
	}
}

// recSink records what a session is told.
type recSink struct {
	got        []string
	subscribed []string
	closed     uint16
}

func (r *recSink) Deliver(m *Message, enc *EncodeCache) {
	frame := enc.Get(0, func(dst []byte, m *Message) []byte { return append(append(dst, m.Channel+"="...), m.Payload...) })
	r.got = append(r.got, string(frame))
}
func (r *recSink) Subscribed(ch string)        { r.subscribed = append(r.subscribed, ch) }
func (r *recSink) Close(code uint16, _ string) { r.closed = code }

func newSession(sh *Shard, subject string) (*Session, *recSink) {
	sink := &recSink{}
	s := New(token.Claims{Subject: subject}, sink)
	sh.Add(s)
	return s, sink
}

func TestHubDeliversToSubscribersOfEachLoop(t *testing.T) {
	h := NewHub(nil)
	l1, l2 := &queueLoop{}, &queueLoop{}
	sh1, _ := h.NewShard(l1)
	sh2, _ := h.NewShard(l2)
	a, sa := newSession(sh1, "a")
	b, sb := newSession(sh2, "b")
	_, sc := newSession(sh2, "c")
	sh1.Subscribe(a, "room")
	sh2.Subscribe(b, "room")
	if !slices.Equal(sa.subscribed, []string{"room"}) || !slices.Equal(sb.subscribed, []string{"room"}) {
		t.Fatalf("standalone subscriptions are live at once: %v %v", sa.subscribed, sb.subscribed)
	}
	for i := range 3 {
		if err := h.Publish("room", []byte(fmt.Sprint(i)), a.ID); err != nil {
			t.Fatal(err)
		}
	}
	if len(l1.tasks) != 3 || len(l2.tasks) != 3 {
		t.Fatalf("tasks per loop %d %d, want one per publish per loop", len(l1.tasks), len(l2.tasks))
	}
	l1.run()
	l2.run()
	want := []string{"room=0", "room=1", "room=2"}
	if !slices.Equal(sa.got, want) || !slices.Equal(sb.got, want) || len(sc.got) != 0 {
		t.Fatalf("a %v b %v c %v", sa.got, sb.got, sc.got)
	}
	if h.Channels() != 1 || h.Sessions() != 3 {
		t.Fatalf("channels %d sessions %d", h.Channels(), h.Sessions())
	}
}

func TestUnsubscribeAndRemoveKeepIndexes(t *testing.T) {
	h := NewHub(nil)
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	var sessions []*Session
	var sinks []*recSink
	for i := range 5 {
		s, sink := newSession(sh, fmt.Sprint(i))
		sh.Subscribe(s, "x")
		sh.Subscribe(s, "y")
		sessions, sinks = append(sessions, s), append(sinks, sink)
	}
	sh.Unsubscribe(sessions[0], "x") // moves the last subscriber into slot 0
	sh.Unsubscribe(sessions[0], "x") // not subscribed: no-op
	sh.Remove(sessions[2])
	sh.Remove(sessions[2]) // removed: no-op
	_ = h.Publish("x", []byte("1"), 0)
	_ = h.Publish("y", []byte("2"), 0)
	l.run()
	wantGot := [][]string{{"y=2"}, {"x=1", "y=2"}, nil, {"x=1", "y=2"}, {"x=1", "y=2"}}
	for i, sink := range sinks {
		if !slices.Equal(sink.got, wantGot[i]) {
			t.Errorf("session %d got %v, want %v", i, sink.got, wantGot[i])
		}
	}
	for _, s := range sessions {
		sh.Remove(s)
	}
	if h.Channels() != 0 || h.Sessions() != 0 || len(sh.topics) != 0 {
		t.Fatalf("left channels %d sessions %d topics %d", h.Channels(), h.Sessions(), len(sh.topics))
	}
}

// slowBroker confirms subscriptions only when told.
type slowBroker struct {
	Standalone
	h      BrokerHandler
	subs   []string
	unsubs []string
}

func (b *slowBroker) Start(h BrokerHandler) error { b.h = h; return nil }
func (b *slowBroker) Subscribe(ch string)         { b.subs = append(b.subs, ch) }
func (b *slowBroker) Unsubscribe(ch string)       { b.unsubs = append(b.unsubs, ch) }

func TestSubscribedWaitsForBroker(t *testing.T) {
	br := &slowBroker{}
	h := NewHub(br)
	_ = h.Start()
	l1, l2 := &queueLoop{}, &queueLoop{}
	sh1, _ := h.NewShard(l1)
	sh2, _ := h.NewShard(l2)
	a, sa := newSession(sh1, "a")
	b, sb := newSession(sh2, "b")
	sh1.Subscribe(a, "room")
	sh2.Subscribe(b, "room")
	if !slices.Equal(br.subs, []string{"room"}) {
		t.Fatalf("broker subscriptions %v, want one for the node", br.subs)
	}
	_ = h.Publish("room", []byte("early"), 0) // local: delivered before the broker confirms
	l1.run()
	if len(sa.subscribed) != 0 || !slices.Equal(sa.got, []string{"room=early"}) {
		t.Fatalf("before Live: subscribed %v got %v", sa.subscribed, sa.got)
	}
	br.h.Live("room")
	_ = h.Publish("room", []byte("late"), 0)
	l1.run()
	l2.run()
	for _, s := range []*recSink{sa, sb} {
		if !slices.Equal(s.subscribed, []string{"room"}) || !slices.Equal(s.got, []string{"room=early", "room=late"}) {
			t.Fatalf("after Live: subscribed %v got %v", s.subscribed, s.got)
		}
	}
	sh1.Remove(a)
	if len(br.unsubs) != 0 {
		t.Fatal("unsubscribed the broker while b still listens")
	}
	sh2.Remove(b)
	if !slices.Equal(br.unsubs, []string{"room"}) {
		t.Fatalf("broker unsubscriptions %v", br.unsubs)
	}
}

func TestBrokerBusyDeliversNothing(t *testing.T) {
	br := &busyBroker{}
	h := NewHub(br)
	_ = h.Start()
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	s, sink := newSession(sh, "a")
	sh.Subscribe(s, "room")
	br.h.Live("room")
	l.run()
	if len(sink.subscribed) != 1 {
		t.Fatal("subscription not live")
	}
	if err := h.Publish("room", []byte("x"), 0); err != ErrBrokerBusy {
		t.Fatalf("err = %v", err)
	}
	l.run()
	if len(sink.got) != 0 || h.Stats().BrokerRefusals.Load() != 1 {
		t.Fatalf("got %v refusals %d", sink.got, h.Stats().BrokerRefusals.Load())
	}
}

type busyBroker struct{ slowBroker }

func (*busyBroker) Publish(string, []byte) error { return ErrBrokerBusy }

func TestEachShardRunsOnEveryLoop(t *testing.T) {
	h := NewHub(nil)
	l1, l2 := &queueLoop{}, &queueLoop{}
	sh1, _ := h.NewShard(l1)
	sh2, _ := h.NewShard(l2)
	_, s1 := newSession(sh1, "a")
	_, s2 := newSession(sh2, "b")
	h.EachShard(func(sh *Shard) { sh.Each(func(s *Session) { s.Sink.Close(3004, "x") }) })
	if s1.closed != 0 {
		t.Fatal("ran before the loop did")
	}
	l1.run()
	l2.run()
	if s1.closed != 3004 || s2.closed != 3004 {
		t.Fatalf("closed %d %d", s1.closed, s2.closed)
	}
}

// closingSink removes its own session from inside Deliver, as a connection
// whose write fails does.
type closingSink struct {
	recSink
	sh *Shard
	s  *Session
}

func (c *closingSink) Deliver(m *Message, enc *EncodeCache) {
	c.recSink.Deliver(m, enc)
	c.sh.Remove(c.s)
}

func TestRemoveDuringDeliveryMissesNobody(t *testing.T) {
	h := NewHub(nil)
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	var sinks []*recSink
	for i := range 6 {
		if i%2 == 0 {
			cs := &closingSink{sh: sh}
			cs.s = New(token.Claims{}, cs)
			sh.Add(cs.s)
			sh.Subscribe(cs.s, "x")
			sinks = append(sinks, &cs.recSink)
			continue
		}
		s, sink := newSession(sh, "k")
		sh.Subscribe(s, "x")
		sinks = append(sinks, sink)
	}
	_ = h.Publish("x", []byte("1"), 0)
	l.run()
	for i, s := range sinks {
		if !slices.Equal(s.got, []string{"x=1"}) {
			t.Fatalf("subscriber %d got %v", i, s.got)
		}
	}
	if sh.Len() != 3 || h.Sessions() != 3 {
		t.Fatalf("after the delivery %d sessions remain (hub %d), want 3", sh.Len(), h.Sessions())
	}
	var seen int
	sh.Each(func(s *Session) { seen++; sh.Remove(s) })
	if seen != 3 || sh.Len() != 0 {
		t.Fatalf("Each with removals saw %d and left %d", seen, sh.Len())
	}
}

// panicSink panics on every delivery, after removing itself as a
// connection closed by the panic would.
type panicSink struct {
	recSink
	sh *Shard
	s  *Session
}

func (p *panicSink) Deliver(*Message, *EncodeCache) {
	p.sh.Remove(p.s)
	panic("broken sink")
}

func TestSinkPanicSparesTheOtherSubscribers(t *testing.T) {
	h := NewHub(nil)
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	bad := &panicSink{sh: sh}
	bad.s = New(token.Claims{}, bad)
	sh.Add(bad.s)
	sh.Subscribe(bad.s, "x")
	s, sink := newSession(sh, "good")
	sh.Subscribe(s, "x")
	if err := h.Publish("x", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	l.run()
	if len(l.panics) != 1 || bad.closed != 1011 || !slices.Equal(sink.got, []string{"x=1"}) {
		t.Fatalf("panics %v closed %d got %v", l.panics, bad.closed, sink.got)
	}
	// The removal held back during the delivery took place.
	if sh.walking != 0 || sh.Len() != 1 || bad.s.IsSubscribed("x") {
		t.Fatalf("walking %d sessions %d", sh.walking, sh.Len())
	}
	if err := h.Publish("x", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	l.run()
	if len(l.panics) != 1 || !slices.Equal(sink.got, []string{"x=1", "x=2"}) {
		t.Fatalf("panics %v got %v", l.panics, sink.got)
	}
}

// TestFullLoopQueue: a loop at its queue's bound refuses local publishes
// (ErrLoopBusy, which is ErrBrokerBusy to callers) and drops deliveries
// from the broker, counting them; it takes work again once it drained.
func TestFullLoopQueue(t *testing.T) {
	h := NewHub(nil)
	l := &queueLoop{max: 2}
	sh, _ := h.NewShard(l)
	s, sink := newSession(sh, "a")
	sh.Subscribe(s, "x")
	for i := range 2 {
		if err := h.Publish("x", []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Publish("x", []byte("refused"), 0); !errors.Is(err, ErrLoopBusy) || !errors.Is(err, ErrBrokerBusy) {
		t.Fatalf("publish to a full loop: %v", err)
	}
	brokerHandler{h}.Deliver("x", []byte("dropped"))
	if got := h.Stats().LoopDrops.Load(); got != 1 {
		t.Fatalf("loop drops %d, want 1", got)
	}
	if err := h.Publish("other", []byte("nobody here"), 0); err != nil {
		t.Fatalf("a channel without subscribers on the full loop: %v", err)
	}
	l.run()
	if err := h.Publish("x", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	l.run()
	if !slices.Equal(sink.got, []string{"x=0", "x=1", "x=2"}) {
		t.Fatalf("got %v", sink.got)
	}
}

// TestMaxPayload: a payload over SetMaxPayload is refused when published
// on this node and dropped, counted, when it comes from the broker.
func TestMaxPayload(t *testing.T) {
	h := NewHub(nil)
	h.SetMaxPayload(4)
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	s, sink := newSession(sh, "a")
	sh.Subscribe(s, "x")
	if err := h.Publish("x", []byte("12345"), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("publish over the cap: %v", err)
	}
	brokerHandler{h}.Deliver("x", []byte("12345"))
	brokerHandler{h}.Deliver("x", []byte("1234"))
	l.run()
	if h.Stats().TooLarge.Load() != 1 || !slices.Equal(sink.got, []string{"x=1234"}) {
		t.Fatalf("too large %d got %v", h.Stats().TooLarge.Load(), sink.got)
	}
}

func TestReconnectedRunsOnReconnectOnEveryLoop(t *testing.T) {
	h := NewHub(nil)
	l1, l2 := &queueLoop{}, &queueLoop{}
	sh1, _ := h.NewShard(l1)
	sh2, _ := h.NewShard(l2)
	var ran []*Shard
	h.OnReconnect(func(sh *Shard) { ran = append(ran, sh) })
	h.OnReconnect(func(sh *Shard) { ran = append(ran, sh) })
	brokerHandler{h}.Reconnected()
	if len(ran) != 0 {
		t.Fatal("ran before the loops did")
	}
	l1.run()
	if !slices.Equal(ran, []*Shard{sh1, sh1}) {
		t.Fatalf("after loop 1 ran on %v, want shard 1 twice", ran)
	}
	l2.run()
	if !slices.Equal(ran, []*Shard{sh1, sh1, sh2, sh2}) {
		t.Fatalf("ran on %v, want each shard once per callback", ran)
	}
}
