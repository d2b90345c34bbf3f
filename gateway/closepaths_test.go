package gateway

import (
	"testing"

	"github.com/gobwas/ws"
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
			f.buffered = l.srv.opts.MaxOutbound
			inTask(l, c, func() { c.SendFrames([]byte{0x82, 0x01, 'a'}) })
		}},
		{"slow consumer at the end of a batch", true, func(l *fakeLoop, f *fakeConn, c *Conn) {
			inTask(l, c, func() {
				c.SendEncoded([]byte{0x82, 0x01, 'a'})
				f.buffered = l.srv.opts.MaxOutbound
			})
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
