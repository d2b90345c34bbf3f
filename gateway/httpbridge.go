package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
)

// handOff passes a plain HTTP request to net/http. It runs on the loop: it
// duplicates the socket as a net.Conn (gnet closes its own descriptor when
// OnTraffic returns gnet.Close) and copies the bytes already read; a
// goroutine queues it for net/http's Accept, off the loop. The
// connection's place in its address's cap goes with it, given back when
// net/http closes the connection.
//
// It reports false when the socket cannot be duplicated (out of
// descriptors, say): the caller answers 503, and the failure is logged,
// collapsed when it repeats.
//
// net/http keeps the connection alive for more requests. If one of them
// asks for a WebSocket upgrade, upgradeBack gives the connection back to
// the loop it came from, which upgrades it as if it were new (routes,
// limits, handshake deadline and all): an upgrade is served whether or not
// it is the connection's first request.
func (c *Conn) handOff(buffered []byte) bool {
	s := c.loop.srv
	nc, err := dupConn(c.gc)
	if err != nil {
		s.handOffLog.Log("dup", "http hand-off failed: request answered 503", slog.String("err", err.Error()))
		return false
	}
	pc := &prefixConn{Conn: nc, prefix: append([]byte(nil), buffered...), el: c.gc.EventLoop(), release: c.handOffPlace()}
	s.metrics.httpHandOffs.Inc()
	go s.listeners[c.listener].ln.deliver(pc)
	return true
}

// response503HandOff answers a plain request that could not be handed to
// net/http.
var response503HandOff = fixedResponse(http.StatusServiceUnavailable, "server busy: try again", "Retry-After: 1")

// dupConn duplicates gc's socket as a net.Conn of its own: a few system
// calls that do not block.
func dupConn(gc gnet.Conn) (net.Conn, error) {
	fd, err := gc.Dup()
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "handoff")
	nc, err := net.FileConn(f) // dups again; the *os.File is ours to close
	_ = f.Close()
	return nc, err
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
	// The per-IP place goes with the connection: OnOpen keeps it rather
	// than take one again, which another connection of the address could
	// have taken meanwhile.
	place := pc.takePlace()
	carry := rebuildHead(r)
	ahead, _ := brw.Reader.Peek(brw.Reader.Buffered())
	carry = append(append(carry, ahead...), pc.prefix...)
	ctx := gnet.NewContext(context.Background(), &returnedConn{carry: carry, placeHeld: place != nil})
	res, err := pc.el.Enroll(ctx, tcp) // dups the socket, then closes tcp
	if err != nil {
		_ = nc.Close()
		if place != nil {
			place()
		}
		return err
	}
	if r := <-res; r.Err != nil {
		if place != nil {
			place()
		}
		return r.Err
	}
	return nil
}

// returnedConn is the gnet context of a connection net/http gave back: the
// bytes OnOpen must treat as already read, and whether it brings its
// per-IP place along.
type returnedConn struct {
	carry     []byte
	placeHeld bool
}

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
	c.cold.carry = nil
	if n < len(buf) {
		c.more().carry = buf[n:] // ours: append made it
	} else {
		c.shedCold()
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

// deliver queues c for Accept, or closes it once the listener is
// closed.
func (l *handoffListener) deliver(c *prefixConn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
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
// socket, and holds the connection's place in its address's cap until it
// is closed or given back to the loop.
type prefixConn struct {
	net.Conn
	prefix []byte
	el     gnet.EventLoop // the loop it came from, for upgradeBack
	// release gives the place back (nil: none held); released makes that
	// happen once, whoever comes first.
	release  func()
	released atomic.Bool
}

// Close closes the socket and gives the place back.
func (c *prefixConn) Close() error {
	c.releasePlace()
	return c.Conn.Close()
}

// takePlace takes the place over from the connection, for whoever holds
// it next: it returns the function that gives it back (nil when none was
// held or it was given back already), and Close will not give it back.
func (c *prefixConn) takePlace() func() {
	if c.release != nil && c.released.CompareAndSwap(false, true) {
		return c.release
	}
	return nil
}

func (c *prefixConn) releasePlace() {
	if c.release != nil && c.released.CompareAndSwap(false, true) {
		c.release()
	}
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
