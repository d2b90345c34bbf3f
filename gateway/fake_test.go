package gateway

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"

	"github.com/panjf2000/gnet/v2"
)

// fakeConn is a gnet.Conn without a socket, for unit tests and benchmarks
// of the loop-side code: Peek returns in, Write appends to out (or only
// counts, with discardOutput). Methods the gateway does not call panic
// through the embedded nil interface.
type fakeConn struct {
	gnet.Conn
	el            *fakeLoop
	ctx           any
	in            []byte
	inBuf         []byte // in's storage, reused once in is consumed
	out           []byte
	written       int
	discardOutput bool
	closed        bool
	woken         int
	writes        int
	// reset makes the next Write fail as a write to a connection the peer
	// reset does in gnet: ECONNRESET, and the connection closed (OnClose
	// run) inside Write.
	reset bool
	// afterClose names every socket method called once the connection was
	// closed: each is a system call on a descriptor number that may
	// already belong to someone else.
	afterClose []string
	// carried: bytes were left over by the last OnTraffic, so Peek returns
	// a copy of everything, as gnet's does once its ring holds some.
	carried bool
	peeked  []byte
	pending int // what OutboundBuffered reports: bytes gnet would hold
}

func (f *fakeConn) touch(method string) {
	if f.closed {
		f.afterClose = append(f.afterClose, method)
	}
}

func newFakeConn(el *fakeLoop) *fakeConn { return &fakeConn{el: el} }

func (f *fakeConn) Context() any              { return f.ctx }
func (f *fakeConn) SetContext(v any)          { f.ctx = v }
func (f *fakeConn) EventLoop() gnet.EventLoop { return f.el }
func (f *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (f *fakeConn) LocalAddr() net.Addr           { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080} }
func (f *fakeConn) OutboundBuffered() int         { f.touch("OutboundBuffered"); return f.pending }
func (f *fakeConn) Wake(gnet.AsyncCallback) error { f.touch("Wake"); f.woken++; return nil }
func (f *fakeConn) Fd() int                       { f.touch("Fd"); return -1 }
func (f *fakeConn) Dup() (int, error)             { return -1, errors.New("fake connection") }
func (f *fakeConn) Peek(int) ([]byte, error) {
	f.touch("Peek")
	if f.carried {
		f.peeked = append(f.peeked[:0], f.in...)
		return f.peeked, nil
	}
	return f.in, nil
}
func (f *fakeConn) Discard(n int) (int, error) { f.touch("Discard"); f.in = f.in[n:]; return n, nil }
func (f *fakeConn) Writev(bs [][]byte) (int, error) {
	f.touch("Writev")
	if f.reset {
		_ = f.el.Close(f)
		return 0, syscall.ECONNRESET
	}
	n := 0
	for _, b := range bs {
		n += len(b)
		if !f.discardOutput {
			f.out = append(f.out, b...)
		}
	}
	f.written += n
	f.writes++
	return n, nil
}

func (f *fakeConn) Write(p []byte) (int, error) {
	f.touch("Write")
	if f.reset {
		_ = f.el.Close(f)
		return 0, syscall.ECONNRESET
	}
	f.written += len(p)
	f.writes++
	if !f.discardOutput {
		f.out = append(f.out, p...)
	}
	return len(p), nil
}

// fakeLoop is a gnet.EventLoop that queues tasks until run is called, as a
// real loop runs them after the current callback.
type fakeLoop struct {
	gnet.EventLoop
	mu    sync.Mutex // Execute is goroutine-safe, as gnet's is (timers call it)
	tasks []gnet.Runnable
	srv   *Server
}

func (l *fakeLoop) Execute(_ context.Context, r gnet.Runnable) error {
	l.mu.Lock()
	l.tasks = append(l.tasks, r)
	l.mu.Unlock()
	return nil
}

func (l *fakeLoop) Close(c gnet.Conn) error {
	f := c.(*fakeConn)
	if !f.closed {
		f.closed = true
		l.srv.OnClose(c, nil)
	}
	return nil
}

// run runs queued tasks until none are left.
func (l *fakeLoop) run() {
	for {
		l.mu.Lock()
		if len(l.tasks) == 0 {
			l.mu.Unlock()
			return
		}
		t := l.tasks[0]
		l.tasks = l.tasks[1:]
		l.mu.Unlock()
		_ = t.Run(context.Background())
	}
}

// open opens a fake connection on the loop, as gnet's OnOpen does.
func (l *fakeLoop) open() *fakeConn {
	f := newFakeConn(l)
	if _, action := l.srv.OnOpen(f); action != gnet.None {
		panic("OnOpen refused the connection")
	}
	return f
}

// feed delivers bytes as gnet's OnTraffic does and runs queued tasks.
func (l *fakeLoop) feed(f *fakeConn, b []byte) gnet.Action {
	f.carried = len(f.in) > 0
	if !f.carried {
		f.in = f.inBuf[:0]
	}
	f.in = append(f.in, b...)
	f.inBuf = f.in
	action := l.srv.OnTraffic(f)
	if action == gnet.Close {
		_ = l.Close(f)
	}
	l.run()
	return action
}
