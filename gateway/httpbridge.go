package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/panjf2000/gnet/v2"
)

// handOff passes a plain HTTP request to net/http. It runs on the loop: it
// duplicates the socket (gnet closes its own descriptor when OnTraffic
// returns gnet.Close) and copies the bytes already read; the rest happens on
// a goroutine, off the loop.
//
// net/http keeps the connection alive for more requests. If one of them
// asks for a WebSocket upgrade, upgradeBack gives the connection back to
// the loop it came from, which upgrades it as if it were new (routes,
// limits, handshake deadline and all): an upgrade is served whether or not
// it is the connection's first request.
func (s *Server) handOff(gc gnet.Conn, listener uint8, buffered []byte) {
	fd, err := gc.Dup()
	if err != nil {
		s.logger.Warn("http hand-off: dup failed", "err", err)
		return
	}
	prefix := append([]byte(nil), buffered...)
	s.metrics.httpHandOffs.Inc()
	go s.listeners[listener].ln.deliver(fd, prefix, gc.EventLoop())
}

// upgradeBack is the net/http side of every listener: requests that ask
// for a WebSocket upgrade (on a connection's second or later request: the
// first never leaves the loop) go back to the loop, the others to next.
func (s *Server) upgradeBack(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !containsFold([]byte(r.Header.Get("Upgrade")), tokenWebSocket) {
			next.ServeHTTP(w, r)
			return
		}
		if err := s.returnToLoop(w, r); err != nil {
			s.logger.Warn("http hand-off: cannot give an upgrade back to the loop", "err", err)
		}
	})
}

// returnToLoop takes the connection from net/http and enrolls it on the
// event loop it came from. The loop cannot be given the request head net/http
// already read, so the head is written again from the parsed request
// (header names canonical, order sorted: nothing the upgrade depends on) and
// carried, with whatever net/http had read beyond it, to OnOpen.
func (s *Server) returnToLoop(w http.ResponseWriter, r *http.Request) error {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return errors.New("response writer cannot hijack")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return err
	}
	pc, _ := nc.(*prefixConn)
	var tcp *net.TCPConn
	if pc != nil {
		tcp, _ = pc.Conn.(*net.TCPConn)
	}
	if tcp == nil {
		_ = nc.Close()
		return fmt.Errorf("unexpected connection type %T", nc)
	}
	carry := rebuildHead(r)
	ahead, _ := brw.Reader.Peek(brw.Reader.Buffered())
	carry = append(append(carry, ahead...), pc.prefix...)
	ctx := gnet.NewContext(context.Background(), &returnedConn{carry: carry})
	res, err := pc.el.Enroll(ctx, tcp) // dups the socket, then closes tcp
	if err != nil {
		_ = nc.Close()
		return err
	}
	if r := <-res; r.Err != nil {
		return r.Err
	}
	return nil
}

// returnedConn is the gnet context of a connection net/http gave back: the
// bytes OnOpen must treat as already read.
type returnedConn struct{ carry []byte }

// rebuildHead writes a parsed request's head again.
func rebuildHead(r *http.Request) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\nHost: %s\r\n", r.Method, r.RequestURI, r.Proto, r.Host)
	_ = r.Header.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// consumeCarried drops what OnTraffic consumed of buf on a connection
// net/http gave back: buf is the bytes it carried, then the fresh bytes of
// gnet's buffer. gnet's are all taken; what is left of buf is carried on.
// It runs on the loop.
func (c *Conn) consumeCarried(buf []byte, n, fresh int) {
	if fresh > 0 { // never Discard(0): that discards everything
		_, _ = c.gc.Discard(fresh)
	}
	c.carry = nil
	if n < len(buf) {
		c.carry = buf[n:] // ours: append made it
	}
}

// handoffListener is the net.Listener the main listener's http.Server
// serves: its connections come from the event loops, not from accept(2).
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closer sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver wraps a duplicated descriptor as a net.Conn whose first reads
// return prefix, and queues it for Accept.
func (l *handoffListener) deliver(fd int, prefix []byte, el gnet.EventLoop) {
	f := os.NewFile(uintptr(fd), "handoff")
	nc, err := net.FileConn(f) // dups again; the *os.File is ours to close
	_ = f.Close()
	if err != nil {
		return
	}
	c := &prefixConn{Conn: nc, prefix: prefix, el: el}
	select {
	case l.conns <- c:
	case <-l.done:
		_ = nc.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// prefixConn replays the bytes the loop already read before reading the
// socket.
type prefixConn struct {
	net.Conn
	prefix []byte
	el     gnet.EventLoop // the loop it came from, for upgradeBack
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
