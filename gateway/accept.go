package gateway

// # Why the gateway accepts connections itself
//
// gnet v2.9.7 turns any accept(2) error it does not know as harmless into
// the end of the whole engine. Its acceptors (acceptor_unix.go) retry only
// EAGAIN, EINTR, ECONNRESET and ECONNABORTED; anything else (EMFILE when the
// process runs out of descriptors, ENFILE, ENOBUFS, ENOMEM) is logged as
// "Accept() failed due to error" and returned as errors.ErrAcceptSocket:
//
//   - Without SO_REUSEPORT, engine.activateReactors polls every listener on
//     the main reactor with (*eventloop).accept0. Poller.Polling
//     (pkg/netpoll/poller_epoll_default.go) returns as soon as a callback
//     returns ErrAcceptSocket; (*eventloop).rotate (reactor_default.go)
//     then calls engine.shutdown, which cancels the engine's context.
//   - With SO_REUSEPORT (WithReusePort), engine.runEventLoops gives each
//     event loop its own listener, polled with (*eventloop).accept in the
//     loop itself. The same error leaves that loop's Polling, and
//     (*eventloop).run closes the loop's connections and calls
//     engine.shutdown.
//
// Either way engine.stop then queues ErrEngineShutdown on every loop, each
// loop closes all its connections (OnClose for every session) and the
// listeners close: one EMFILE drops every client and the port refuses
// until a restart. gnet has no option that changes this and no hook that
// sees the error (upstream closed the report, panjf2000/gnet#367, as
// invalid).
//
// So the gateway owns its listening sockets and accepts on one goroutine
// per listener with Go's net package, then hands each connection to an
// event loop of a gnet.Client: the same event loops, but an engine with no
// listener, so gnet never calls accept(2) and no accept error can reach it.
// This costs, per connection and only at accept: Go's netFD set-up
// (getsockname, TCP_NODELAY, an epoll registration), gnet's dup(2) of the
// descriptor and the close of Go's copy, and one wait for OnOpen on the
// loop; the connection then keeps Go's local address (one *net.TCPAddr).
// bench/README.md has the figures. SO_REUSEPORT works as before: several
// processes bind the same port and the kernel spreads connections over
// them.
//
// # Out of descriptors
//
// While the node accepts normally it holds acceptReserveFDs spare
// descriptors (the libuv trick, widened). When an accept fails the
// acceptors pause and the spares are closed, so that what else the node
// needs a descriptor for (the admin listener's /readyz and /metrics, Redis,
// the hand-off of plain HTTP requests, KOsync's files) keeps working while
// new clients wait in the listen backlog. The failure is logged (rate
// limited), counted in gateway_accept_errors_total, shown by
// gateway_accept_paused and by /readyz (503 "not_accepting"). The
// acceptors retry after a pause that doubles from acceptRetryMin to
// acceptRetryMax, as net/http's Server.Serve does, and resume once
// 2 × acceptReserveFDs descriptors are free again (they take the spares
// back first), so a node at the edge of its limit does not flap. Sessions
// already open are never touched.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

const (
	// acceptReserveFDs is how many spare descriptors the node holds while
	// it accepts normally, and gives back to the rest of the process when
	// accept(2) runs out of them.
	acceptReserveFDs = 16
	// acceptRetryMin is the first pause after an accept error; each
	// further error doubles it, up to acceptRetryMax. A successful accept
	// resets it.
	acceptRetryMin = 5 * time.Millisecond
	// acceptRetryMax is the longest pause between two attempts.
	acceptRetryMax = time.Second
	// acceptLogEvery rate-limits the accept error log line (and, apart, the
	// line that says accepting resumed).
	acceptLogEvery = 10 * time.Second
	// tcpKeepAlive is the TCP keep-alive idle time of accepted connections
	// (probes every fifth of it, five of them), set on the listening socket,
	// whose accepted sockets inherit it on Linux.
	tcpKeepAlive = time.Minute
)

// Reasons of gateway_accept_errors_total, a closed set.
const (
	acceptFDLimit       = "fd_limit"        // EMFILE: the process's RLIMIT_NOFILE
	acceptSystemFDLimit = "system_fd_limit" // ENFILE: the system's file table
	acceptMemory        = "memory"          // ENOBUFS, ENOMEM
	acceptOther         = "other"
)

var acceptReasons = []string{acceptFDLimit, acceptSystemFDLimit, acceptMemory, acceptOther}

// acceptErrorReason maps an accept (or enrolment) error to its label.
func acceptErrorReason(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE):
		return acceptFDLimit
	case errors.Is(err, syscall.ENFILE):
		return acceptSystemFDLimit
	case errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return acceptMemory
	}
	return acceptOther
}

// acceptedOn is the context a connection carries from its acceptor to
// OnOpen: the index of its listener in Server.listeners.
type acceptedOn uint8

// listen binds every listener: SO_REUSEADDR (Go's default), SO_REUSEPORT
// with Options.ReusePort, and TCP keep-alive for the accepted sockets to
// inherit. On an error it closes what it bound.
func (s *Server) listen() error {
	lc := net.ListenConfig{Control: s.listenerSockopts, KeepAlive: -1} // keep-alive is inherited, not set per connection
	for _, l := range s.listeners {
		ln, err := lc.Listen(context.Background(), "tcp", l.addr)
		if err != nil {
			s.closeListeners()
			return err
		}
		s.sockets = append(s.sockets, ln.(*net.TCPListener))
	}
	return nil
}

// listenerSockopts sets the listening socket's options before bind.
func (s *Server) listenerSockopts(_, _ string, rc syscall.RawConn) error {
	var err error
	ctlErr := rc.Control(func(fd uintptr) {
		set := func(level, opt, v int) {
			if err == nil {
				err = unix.SetsockoptInt(int(fd), level, opt, v)
			}
		}
		if s.opts.ReusePort {
			set(unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
		set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		set(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(tcpKeepAlive/time.Second))
		set(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(tcpKeepAlive/5/time.Second))
		set(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 5)
	})
	if ctlErr != nil {
		return ctlErr
	}
	return err
}

// startAccepting runs one acceptor goroutine per listener.
func (s *Server) startAccepting() {
	for i, ln := range s.sockets {
		s.acceptors.Add(1)
		go s.acceptLoop(acceptedOn(i), ln)
	}
}

// closeListeners closes the listening sockets; the acceptors end.
func (s *Server) closeListeners() {
	for _, ln := range s.sockets {
		_ = ln.Close()
	}
}

// stopAccepting closes the listeners, waits for the acceptors (an
// enrolment in progress needs the loops, so this comes before they stop)
// and gives the spare descriptors back.
func (s *Server) stopAccepting() {
	close(s.acceptDone)
	s.closeListeners()
	s.acceptors.Wait()
	s.gate.release()
}

// acceptLoop accepts on ln until it is closed, and enrols each connection
// in an event loop. No error ends it but the listener's close.
func (s *Server) acceptLoop(on acceptedOn, ln *net.TCPListener) {
	defer s.acceptors.Done()
	for s.gate.wait(s.acceptDone) {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.gate.failed(ln.Addr(), err)
			continue
		}
		s.gate.accepted()
		// EnrollContext dups the descriptor, registers the copy on the
		// least busy loop, waits for OnOpen and closes c.
		if _, err := s.cli.EnrollContext(c, on); err != nil {
			s.gate.failed(ln.Addr(), err)
		}
	}
}

// acceptGate paces the acceptors of all listeners (descriptors are the
// process's, so one listener's EMFILE pauses them all) and holds the spare
// descriptors. Its methods are goroutine-safe.
type acceptGate struct {
	logger *slog.Logger
	errors map[string]prometheus.Counter // by reason, resolved once

	paused atomic.Bool
	retry  atomic.Int64 // the next pause, in nanoseconds; 0 after a good accept

	mu         sync.Mutex
	reserve    []int
	since      time.Time // when the pause began
	cause      string    // the error that began it
	nextLog    time.Time // accept errors are logged from then on
	nextResume time.Time // the same for the line that says accepting resumed
	suppressed int       // errors not logged since the last line
}

func newAcceptGate(logger *slog.Logger, errs *prometheus.CounterVec) *acceptGate {
	g := &acceptGate{logger: logger, errors: map[string]prometheus.Counter{}}
	for _, r := range acceptReasons {
		g.errors[r] = errs.WithLabelValues(r)
	}
	return g
}

// fill takes the spare descriptors, first checking that twice as many are
// free. It reports false, holding nothing new, when they are not.
func (g *acceptGate) fill() bool {
	var fds [2 * acceptReserveFDs]int
	for i := range fds {
		fd, err := unix.Open("/", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll(fds[:i])
			return false
		}
		fds[i] = fd
	}
	closeAll(fds[acceptReserveFDs:])
	g.reserve = append(g.reserve[:0], fds[:acceptReserveFDs]...)
	return true
}

// release closes the spare descriptors, if held.
func (g *acceptGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *acceptGate) releaseLocked() {
	closeAll(g.reserve)
	g.reserve = g.reserve[:0]
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// start takes the spares when the server starts.
func (g *acceptGate) start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.fill() {
		return errors.New("fewer than 32 file descriptors free: raise the open files limit (ulimit -n)")
	}
	return nil
}

// accepted resets the retry pause after a good accept.
func (g *acceptGate) accepted() {
	if g.retry.Load() != 0 {
		g.retry.Store(0)
	}
}

// failed counts and logs (rate limited) a failed accept or enrolment and
// pauses the acceptors, giving the spares back.
func (g *acceptGate) failed(addr net.Addr, err error) {
	reason := acceptErrorReason(err)
	g.errors[reason].Inc()
	retry := min(max(2*time.Duration(g.retry.Load()), acceptRetryMin), acceptRetryMax)
	g.retry.Store(int64(retry))

	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if !g.paused.Load() {
		g.releaseLocked()
		g.since, g.cause = now, "accept: "+errnoText(err)
		g.paused.Store(true)
	}
	if now.Before(g.nextLog) {
		g.suppressed++
		return
	}
	args := []any{"listener", addr.String(), "reason", reason, "err", err, "open_files_limit", openFilesLimit(),
		"retry_in", retry.String()}
	if g.suppressed > 0 {
		args = append(args, "suppressed", g.suppressed)
	}
	g.suppressed, g.nextLog = 0, now.Add(acceptLogEvery)
	g.logger.Error("accept failed: new connections wait until descriptors free up; open sessions are unaffected", args...)
}

// wait returns true once the acceptors may accept, false when done closes
// first. While paused it sleeps the retry pause, then tries to take the
// spares back; whoever succeeds resumes every acceptor.
func (g *acceptGate) wait(done <-chan struct{}) bool {
	for g.paused.Load() {
		t := time.NewTimer(max(time.Duration(g.retry.Load()), acceptRetryMin))
		select {
		case <-done:
			t.Stop()
			return false
		case <-t.C:
		}
		g.tryResume()
	}
	return true
}

func (g *acceptGate) tryResume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.paused.Load() || !g.fill() {
		return
	}
	g.paused.Store(false)
	if now := time.Now(); !now.Before(g.nextResume) {
		g.nextResume = now.Add(acceptLogEvery)
		g.logger.Warn("accepting new connections again", "paused_for", now.Sub(g.since).Round(time.Millisecond).String(),
			"cause", g.cause)
	}
}

// state reports whether the acceptors are paused, and why.
func (g *acceptGate) state() (cause string, paused bool) {
	if !g.paused.Load() {
		return "", false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cause, g.paused.Load()
}

// errnoText is the system error's text without Go's wrapping (the
// listener's address is already in the log line).
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// openFilesLimit is the process's soft RLIMIT_NOFILE, for the log line.
func openFilesLimit() uint64 {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return rl.Cur
}

// AcceptPaused reports whether the server stopped accepting new
// connections because accept failed (out of file descriptors, say), and
// the error. /readyz answers 503 while it lasts.
func (s *Server) AcceptPaused() (cause string, paused bool) { return s.gate.state() }

// listenerOf is the index of the listener a connection arrived on, from
// the context its acceptor gave it (0, the main listener, without one).
func listenerOf(gc gnet.Conn) uint8 {
	on, _ := gc.Context().(acceptedOn)
	return uint8(on)
}
