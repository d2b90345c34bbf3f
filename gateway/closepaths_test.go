package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/internal/ratelog"
)

// TestServerClosesAfterPeerReset runs every way the server closes or
// writes to a connection whose peer reset it: the write fails with
// ECONNRESET and gnet closes the connection inside Write. Afterwards the
// connection must be closed once, with no call on its socket (each would be
// a system call on a descriptor number gnet already closed).
func TestServerClosesAfterPeerReset(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	inTask := func(l *fakeLoop, c *Conn, fn func()) {
		c.Run(func(any) { fn() }, nil)
		l.run()
	}
	tests := []struct {
		name     string
		upgraded bool
		run      func(l *fakeLoop, f *fakeConn, c *Conn)
	}{
		{"close from a task", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			inTask(l, c, func() { c.Close(4000, "bye") })
		}},
		{"close while answering the peer", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			l.feed(f, maskedFrame(true, ws.OpBinary, []byte("bye"), key))
		}},
		{"reply while answering the peer", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			l.feed(f, maskedFrame(true, ws.OpBinary, []byte("echo me"), key))
		}},
		{"handler panic", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			l.feed(f, maskedFrame(true, ws.OpBinary, []byte("panic"), key))
		}},
		{"sends and a close batched in one task", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			inTask(l, c, func() {
				c.SendFrames([]byte{0x82, 0x01, 'a'})
				c.SendEncoded([]byte{0x82, 0x01, 'b'})
				c.Close(4000, "bye")
			})
		}},
		{"slow consumer", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			f.pending = l.srv.opts.MaxOutbound
			inTask(l, c, func() { c.SendFrames([]byte{0x82, 0x01, 'a'}) })
		}},
		{"slow consumer at the end of a batch", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			inTask(l, c, func() {
				c.SendEncoded([]byte{0x82, 0x01, 'a'})
				f.pending = l.srv.opts.MaxOutbound
			})
		}},
		{"a write cut in pieces behind a queue", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			f.pending = 100
			inTask(l, c, func() { c.Send(ws.OpBinary, make([]byte, 5000)) })
		}},
		{"deadline", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			c.SetDeadline(l.srv.epoch)
			l.srv.epoch = l.srv.epoch.Add(-2 * 1e9)
			c.loop.tick(nil)
		}},
		{"handshake timeout", false, func(l *fakeLoop, f *fakeConn, c *Conn) {
			l.srv.epoch = l.srv.epoch.Add(-2 * DefaultHandshakeTimeout)
			c.loop.tick(nil)
		}},
		{"shutdown", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			c.loop.shutdown(nil)
			l.run()
		}},
		{"task panic", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			inTask(l, c, func() { panic("task") })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var closed int
			l := echoLoop(&closed)
			l.srv.logger = discardLogger
			var f *fakeConn
			if tt.upgraded {
				f = openEcho(t, l)
			} else {
				f = l.open()
			}
			c := f.ctx.(*Conn)
			f.reset = true
			tt.run(l, f, c)
			if !f.closed || c.state != stateClosed || c.gc != nil {
				t.Fatalf("closed %v state %v gc %v", f.closed, c.state, c.gc)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.upgraded]; closed != want {
				t.Fatalf("protocol OnClose ran %d times, want %d", closed, want)
			}
			if len(f.afterClose) > 0 {
				t.Fatalf("socket touched after close: %v", f.afterClose)
			}
			// Whatever comes later finds a closed connection and does nothing.
			c.Close(4000, "again")
			c.Send(ws.OpBinary, []byte("late"))
			c.loop.tick(nil)
			l.run()
			if len(f.afterClose) > 0 {
				t.Fatalf("socket touched after close: %v", f.afterClose)
			}
		})
	}
}

// TestPolicyClosesAreLogged: a slow-consumer and a message-rate close each
// leave an info line naming the protocol, the remote and the reason.
func TestPolicyClosesAreLogged(t *testing.T) {
	key := [4]byte{1, 1, 1, 1}
	for _, tt := range []struct {
		reason string
		run    func(l *fakeLoop, f *fakeConn, c *Conn)
	}{
		{"slow consumer", func(l *fakeLoop, f *fakeConn, c *Conn) {
			f.pending = l.srv.opts.MaxOutbound
			c.Run(func(any) { c.SendFrames([]byte{0x82, 0x01, 'a'}) }, nil)
			l.run()
		}},
		{"message rate exceeded", func(l *fakeLoop, f *fakeConn, c *Conn) {
			l.srv.SetLimits(Limits{MessageRate: 1, MessageBurst: 1})
			for range 3 {
				l.feed(f, maskedFrame(true, ws.OpBinary, []byte("x"), key))
			}
		}},
	} {
		t.Run(tt.reason, func(t *testing.T) {
			var log bytes.Buffer
			l := echoLoop(nil)
			l.srv.policyLog = ratelog.New(slog.New(slog.NewTextHandler(&log, nil)), slog.LevelInfo, 0)
			f := openEcho(t, l)
			tt.run(l, f, f.ctx.(*Conn))
			want := `level=INFO msg="connection closed: policy violation" protocol=echo remote=127.0.0.1 reason="` + tt.reason + `"`
			if !strings.Contains(log.String(), want) {
				t.Fatalf("log %q, want a line containing %q", log.String(), want)
			}
		})
	}
}

// TestRefusedAtAcceptAfterPeerReset: the 429 written in OnOpen to an
// address over its cap fails as a reset peer's write does; the connection
// stays closed and its socket untouched.
func TestRefusedAtAcceptAfterPeerReset(t *testing.T) {
	l := echoLoop(nil)
	l.srv.logger = discardLogger
	l.srv.SetLimits(Limits{MaxConnsPerIP: 1})
	l.open()
	f := newFakeConn(l)
	f.reset = true
	l.srv.OnOpen(f)
	if !f.closed || f.ctx != nil || len(f.afterClose) > 0 { // OnClose clears the context
		t.Fatalf("closed %v context %v after close %v", f.closed, f.ctx, f.afterClose)
	}
	l.srv.testLoop(l).tick(nil)
	if len(f.afterClose) > 0 {
		t.Fatalf("socket touched after close: %v", f.afterClose)
	}
}

// TestWriteOverTheLargestMessage: a write larger than any message the node
// delivers is exempt from the outbound budget only for a reader that has
// taken everything before it (a protocol's own large reply); behind a
// queue it is a slow consumer's, so gnet never holds it on top of one.
func TestWriteOverTheLargestMessage(t *testing.T) {
	for _, tt := range []struct {
		pending int
		written bool
	}{{0, true}, {1, false}} {
		l := NewFakeLoop(Options{MaxOutbound: 1024, MaxMessageSize: 1024},
			Route{Path: "/echo", Protocol: echoProtocol{}, Text: true})
		l.srv.logger = discardLogger
		f := openEcho(t, l)
		c := f.ctx.(*Conn)
		f.pending = tt.pending
		big := make([]byte, l.srv.maxWrite()+1)
		c.Run(func(any) { c.SendFrames(big) }, nil)
		l.run()
		if tt.written {
			if len(f.out) != len(big) || !c.Open() {
				t.Fatalf("pending %d: wrote %d of %d bytes, open %v", tt.pending, len(f.out), len(big), c.Open())
			}
			continue
		}
		if len(f.out) > 100 || len(f.out) < 4 || f.out[0] != 0x88 || uint16(f.out[2])<<8|uint16(f.out[3]) != CloseSlowConsumer {
			t.Fatalf("pending %d: wrote %d bytes starting % x, want only the 1008 close frame", tt.pending, len(f.out), f.out[:min(len(f.out), 8)])
		}
	}
}
