package gateway

import (
	"net"
	"os"
	"sync"

	"github.com/panjf2000/gnet/v2"
)

// handOff passes a plain HTTP request to net/http. It runs on the loop: it
// duplicates the socket (gnet closes its own descriptor when OnTraffic
// returns gnet.Close) and copies the bytes already read; the rest happens on
// a goroutine, off the loop.
func (s *Server) handOff(gc gnet.Conn, listener uint8, buffered []byte) {
	fd, err := gc.Dup()
	if err != nil {
		s.logger.Warn("http hand-off: dup failed", "err", err)
		return
	}
	prefix := append([]byte(nil), buffered...)
	s.metrics.httpHandOffs.Inc()
	go s.listeners[listener].ln.deliver(fd, prefix)
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
func (l *handoffListener) deliver(fd int, prefix []byte) {
	f := os.NewFile(uintptr(fd), "handoff")
	nc, err := net.FileConn(f) // dups again; the *os.File is ours to close
	_ = f.Close()
	if err != nil {
		return
	}
	c := &prefixConn{Conn: nc, prefix: prefix}
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
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
