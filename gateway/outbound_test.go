package gateway

import (
	"testing"

	"github.com/gobwas/ws"
)

// The budget counts what waits behind a write larger than it, not that
// write itself: the pending figures stand for what gnet holds after each
// write (the fake's OutboundBuffered).
func TestBudgetCountsWhatIsBehindAnOversizedWrite(t *testing.T) {
	const budget = 1 << 20
	f, c := openBudgetedEcho(t, budget)
	steps := []struct {
		name    string
		pending int // what gnet holds before the write
		n       int
		want    bool
	}{
		{"an 8 MiB write into an empty queue", 0, 8 << 20, true},
		{"small writes behind it, within the budget", 6 << 20, budget / 2, true},
		{"more behind it than the budget", 6<<20 + budget/2, budget/2 + 1, false},
		{"a second oversized write behind the first", 5<<20 + budget/2, 4 << 20, true},
		{"a third while two are in flight", 9<<20 + budget/2, 2 << 20, false},
		{"the first sent, the second half sent: room behind it again", 2<<20 + budget/2, budget / 2, true},
		{"the queue drained", 0, budget, true},
		{"a reader that stopped: behind it passes the budget", budget, 1, false},
	}
	for _, s := range steps {
		f.pending = s.pending
		if got := c.sendWithin(make([]byte, s.n)); got != s.want {
			t.Fatalf("%s: sendWithin = %v, want %v", s.name, got, s.want)
		}
	}
}

// An echo larger than the budget goes out whole to a reader that reads,
// and a connection is closed 1008 once the bytes behind it pass the budget.
func TestEchoLargerThanTheBudget(t *testing.T) {
	l := NewFakeLoop(Options{MaxMessageSize: 16 << 20, MaxOutbound: 64 << 10},
		Route{Path: "/echo", Protocol: echoProtocol{}, Text: true})
	f := openEcho(t, l)
	payload := pattern(1 << 20)
	l.feed(f, maskedFrame(true, ws.OpBinary, payload, [4]byte{1, 2, 3, 4}))
	if want := serverFrame(ws.OpBinary, payload); string(f.out) != string(want) {
		t.Fatalf("echo of %d bytes: got %d bytes", len(want), len(f.out))
	}
	f.pending = 1 << 20 // the kernel took none of it: the peer does not read
	f.out = f.out[:0]
	for i := 0; i < 3; i++ {
		l.feed(f, maskedFrame(true, ws.OpBinary, pattern(30<<10), [4]byte{}))
		f.pending += len(f.out)
		f.out = f.out[:0]
	}
	l.feed(f, maskedFrame(true, ws.OpBinary, pattern(30<<10), [4]byte{}))
	if c := f.ctx.(*Conn); c.state != stateClosing || c.closeCode != CloseSlowConsumer {
		t.Fatalf("state %v code %d, want closing with %d", c.state, c.closeCode, CloseSlowConsumer)
	}
}

// A long batch of loop tasks writes a connection's outbox every
// outboxChunk bytes, not all at the batch's end, and closes a slow
// consumer as soon as the budget is passed rather than after piling up the
// whole batch.
func TestOutboxWrittenInChunks(t *testing.T) {
	l := NewFakeLoop(Options{MaxOutbound: 1 << 20},
		Route{Path: "/echo", Protocol: echoProtocol{}, Text: true})
	f := openEcho(t, l)
	c := f.ctx.(*Conn)
	frame := serverFrame(ws.OpBinary, pattern(1000))
	f.out, f.writes = f.out[:0], 0
	c.loop.Run(func(any) {
		for range 200 {
			c.SendFrames(frame)
		}
	}, nil)
	l.run()
	if want := 200 * len(frame); len(f.out) != want {
		t.Fatalf("wrote %d bytes, want %d", len(f.out), want)
	}
	if per := outboxChunk / len(frame); f.writes != (200+per-1)/per {
		t.Fatalf("%d writes, want one per %d frames", f.writes, per)
	}
	f.pending = 1<<20 - 10<<10 // the peer stopped reading
	c.loop.Run(func(any) {
		for range 2000 {
			c.SendFrames(frame)
		}
		if c.outbox != nil && len(c.outbox) > outboxChunk {
			t.Errorf("outbox of %d bytes", len(c.outbox))
		}
	}, nil)
	l.run()
	if c.state != stateClosing || c.closeCode != CloseSlowConsumer {
		t.Fatalf("state %v code %d, want closing with 1008", c.state, c.closeCode)
	}
}

func TestPowerOfTwoPieces(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 1004, 3012, 65536, 65537, 100000, 1 << 20} {
		b := pattern(n)
		var joined []byte
		pieces := powerOfTwoPieces(nil, b)
		for i, p := range pieces {
			last := i == len(pieces)-1
			if len(p)&(len(p)-1) != 0 && !(last && len(p) < minPiece) {
				t.Errorf("%d bytes: piece %d of %d bytes is not a power of two", n, i, len(p))
			}
			joined = append(joined, p...)
		}
		if string(joined) != string(b) {
			t.Errorf("%d bytes: pieces do not join back", n)
		}
	}
}

// The cold part that records an oversized write in flight goes once gnet
// has sent it: an idle connection that once got a large reply (KOsync's
// documents.all) keeps no cold part for the rest of its life.
func TestColdPartGoesWithTheOversizedWrite(t *testing.T) {
	const budget = 1 << 20
	f, c := openBudgetedEcho(t, budget)
	f.pending = 0
	if !c.sendWithin(make([]byte, 2*budget)) || c.cold == nil || c.cold.big == nil {
		t.Fatalf("oversized write not recorded: cold part %+v", c.cold)
	}
	f.pending = budget // half of it still in gnet's buffer
	if !c.sendWithin(make([]byte, 10)) || c.cold == nil || c.cold.big == nil {
		t.Fatalf("oversized write in flight forgotten: cold part %+v", c.cold)
	}
	f.pending = 0 // all sent
	if !c.sendWithin(make([]byte, 10)) || c.cold != nil {
		t.Fatalf("cold part kept after the oversized write was sent: %+v", c.cold)
	}
}

// openBudgetedEcho opens an echo connection on a fake loop with an
// outbound budget of budget bytes, its output discarded.
func openBudgetedEcho(t *testing.T, budget int) (*fakeConn, *Conn) {
	l := NewFakeLoop(Options{MaxMessageSize: 16 << 20, MaxOutbound: budget},
		Route{Path: "/echo", Protocol: echoProtocol{}, Text: true})
	f := openEcho(t, l)
	f.discardOutput = true
	return f, f.ctx.(*Conn)
}
