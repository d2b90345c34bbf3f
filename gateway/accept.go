package gateway

// # Accept errors
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
// The fix is in gnet, where the error is: third_party/gnet is gnet v2.9.7
// with a few patches (third_party/gnet/PATCH.md: this is the first), used
// through a replace directive in go.mod. With the new option
// WithAcceptErrorHandler, an accept error takes the listener out of the
// poller and calls the handler instead of shutting down; the handler puts
// the listener back when it chooses. Accepting on our own goroutines with Go's net package and
// handing each connection to gnet with Enroll was built and measured
// first: Enroll dups every descriptor, Go's netFD set-up and close add
// about five system calls and a round trip to the loop per accept, and
// each connection keeps Go's two addresses, which cost +130 to +180 bytes
// of heap per idle connection (about +12 %) and about twice the server CPU
// per accept (bench/README.md). The patch costs nothing per connection.
//
// # Out of descriptors
//
// While the node accepts normally it holds acceptReserveFDs spare
// descriptors (the libuv trick, widened). On an accept error the listener
// pauses and the spares are closed, so that what else the node needs a
// descriptor for (the admin listener's /readyz and /metrics, Redis, the
// hand-off of plain HTTP requests, KOsync's files) keeps working while new
// clients wait in the listen backlog (a listener that has not failed yet,
// on another port or another loop's SO_REUSEPORT socket, closes what it
// accepts meanwhile: acceptGate.shed). The failure is logged (rate limited),
// counted in gateway_accept_errors_total and shown by gateway_accept_paused
// and by /readyz (503 "not_accepting"). An accept error of the admin
// listener (gatedListener) pauses the same way, since a probe may be the
// first to find the node out of descriptors. A goroutine then tries to
// take the spares back after a pause that doubles from acceptRetryMin to
// acceptRetryMax, as net/http's Server.Serve does; it resumes every paused
// listener once 2 × acceptReserveFDs descriptors are free (it keeps half),
// so a node at the edge of its limit does not flap. Sessions already open
// are never touched.

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

const (
	// acceptReserveFDs is how many spare descriptors the node holds while
	// it accepts normally, and gives back to the rest of the process when
	// accept(2) fails.
	acceptReserveFDs = 16
	// acceptRetryMin is the first pause after an accept error; it doubles
	// while descriptors stay short, up to acceptRetryMax.
	acceptRetryMin = 5 * time.Millisecond
	// acceptRetryMax is the longest pause between two attempts to resume.
	acceptRetryMax = time.Second
	// acceptLogEvery rate-limits the accept error log line (and, apart, the
	// line that says accepting resumed).
	acceptLogEvery = 10 * time.Second
)

// Reasons of gateway_accept_errors_total, a closed set.
const (
	acceptFDLimit       = "fd_limit"        // EMFILE: the process's RLIMIT_NOFILE
	acceptSystemFDLimit = "system_fd_limit" // ENFILE: the system's file table
	acceptMemory        = "memory"          // ENOBUFS, ENOMEM
	acceptOther         = "other"
)

var acceptReasons = []string{acceptFDLimit, acceptSystemFDLimit, acceptMemory, acceptOther}

// acceptErrorReason maps an accept error to its label.
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

// acceptGate is the gnet accept error handler: it pauses the listeners
// that failed, holds the spare descriptors and resumes the listeners when
// descriptors are free again. Its methods are goroutine-safe; failed runs
// on the event loop that accepts and never blocks, and shed, which every
// loop's OnOpen calls, takes no lock. Nothing is logged while mu is held:
// a slow log writer must not hold up a loop waiting for mu.
type acceptGate struct {
	logger *slog.Logger
	errors map[string]prometheus.Counter // by reason, resolved once
	paused atomic.Bool
	// pausedLns holds the addresses of the paused listeners (gnet's own
	// *net.TCPAddr values), for shed to read without a lock: a map never
	// changed once stored, replaced under mu.
	pausedLns atomic.Pointer[map[net.Addr]bool]

	mu         sync.Mutex
	reserve    []int
	resumes    []func() // of the paused listeners
	retrying   bool     // a retry goroutine runs
	stopped    bool
	done       chan struct{} // closed by stop: the retry goroutine ends
	since      time.Time     // when the pause began
	cause      string        // the error that began it
	nextLog    time.Time     // accept errors are logged from then on
	nextResume time.Time     // the same for the line that says accepting resumed
	suppressed int           // errors not logged since the last line
}

func newAcceptGate(logger *slog.Logger, errs *prometheus.CounterVec) *acceptGate {
	g := &acceptGate{logger: logger, errors: map[string]prometheus.Counter{}, done: make(chan struct{})}
	for _, r := range acceptReasons {
		g.errors[r] = errs.WithLabelValues(r)
	}
	return g
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

// stop ends a retry in progress and closes the spares.
func (g *acceptGate) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopped {
		g.stopped = true
		close(g.done)
	}
	closeAll(g.reserve)
	g.reserve = nil
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

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// failed handles an accept error of a listener that gnet paused: it
// counts and logs (rate limited) the error, gives the spares back on the
// first error of a pause, and keeps resume for when descriptors are free
// (nil: the listener retries by itself, and is not gnet's).
func (g *acceptGate) failed(listener net.Addr, err error, resume func()) {
	reason := acceptErrorReason(err)
	g.errors[reason].Inc()
	if args := g.pause(listener, err, reason, resume); args != nil {
		g.logger.Error("accept failed: new connections wait until descriptors free up; open sessions are unaffected", args...)
	}
}

// pause is failed's work under mu. It returns the log line's arguments,
// or nil when the line is suppressed (rate limited).
func (g *acceptGate) pause(listener net.Addr, err error, reason string, resume func()) []any {
	g.mu.Lock()
	defer g.mu.Unlock()
	if resume != nil {
		g.resumes = append(g.resumes, resume)
		g.addPausedListener(listener)
	}
	now := time.Now()
	if !g.paused.Load() {
		closeAll(g.reserve)
		g.reserve = g.reserve[:0]
		g.since, g.cause = now, "accept: "+errnoText(err)
		g.paused.Store(true) // after pausedLns: shed must not close the failed listener's connections
	}
	if !g.retrying && !g.stopped {
		g.retrying = true
		go g.retry()
	}
	if now.Before(g.nextLog) {
		g.suppressed++
		return nil
	}
	args := []any{"reason", reason, "err", err, "open_files_limit", openFilesLimit()}
	if g.suppressed > 0 {
		args = append(args, "suppressed", g.suppressed)
	}
	g.suppressed, g.nextLog = 0, now.Add(acceptLogEvery)
	return args
}

// addPausedListener adds listener to pausedLns (a copy: readers hold the
// old map without a lock). Under mu.
func (g *acceptGate) addPausedListener(listener net.Addr) {
	old := g.pausedLns.Load()
	if old != nil && (*old)[listener] {
		return
	}
	m := map[net.Addr]bool{listener: true}
	if old != nil {
		for a := range *old {
			m[a] = true
		}
	}
	g.pausedLns.Store(&m)
}

// retry tries to take the spares back after doubling pauses, then resumes
// every paused listener. It ends there, or when the gate stops.
func (g *acceptGate) retry() {
	for pause := acceptRetryMin; ; pause = min(2*pause, acceptRetryMax) {
		t := time.NewTimer(pause)
		select {
		case <-g.done:
			t.Stop()
			return
		case <-t.C:
		}
		if g.tryResume() {
			return
		}
	}
}

// tryResume resumes the paused listeners if the spares could be taken
// back, and reports whether it did.
func (g *acceptGate) tryResume() bool {
	done, logArgs := g.resume()
	if logArgs != nil {
		g.logger.Warn("accepting new connections again", logArgs...)
	}
	return done
}

// resume is tryResume's work under mu. It returns the arguments of the
// line that says accepting resumed, or nil when none is due.
func (g *acceptGate) resume() (done bool, logArgs []any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		g.retrying = false
		return true, nil
	}
	if !g.fill() {
		return false, nil
	}
	g.paused.Store(false) // first: OnOpen closes what is accepted while paused
	for _, resume := range g.resumes {
		resume()
	}
	g.resumes, g.retrying = nil, false
	g.pausedLns.Store(nil)
	if now := time.Now(); !now.Before(g.nextResume) {
		g.nextResume = now.Add(acceptLogEvery)
		logArgs = []any{"paused_for", now.Sub(g.since).Round(time.Millisecond).String(), "cause", g.cause}
	}
	return true, logArgs
}

// shed reports whether OnOpen must close a connection that a listener
// accepted: while paused, one that has not failed (yet) would hand the
// spares kept for the admin listener to new clients. Connections the
// failed listener accepted before its error are kept. It takes no lock:
// every loop calls it for every connection it accepts.
func (g *acceptGate) shed(listener net.Addr) bool {
	if !g.paused.Load() {
		return false
	}
	lns := g.pausedLns.Load()
	return lns == nil || !(*lns)[listener]
}

// state reports whether accepting is paused, and why.
func (g *acceptGate) state() (cause string, paused bool) {
	if !g.paused.Load() {
		return "", false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cause, g.paused.Load()
}

// errnoText is the system error's text without Go's wrapping.
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

// gatedListener reports the accept errors of a net/http listener (the
// admin's) to the gate: a probe that finds the node out of descriptors
// before any client does frees the spares too, so that net/http, which
// retries by itself, gets one.
type gatedListener struct {
	net.Listener
	gate *acceptGate
}

func (l gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		l.gate.failed(nil, err, nil)
	}
	return c, err
}

// AcceptPaused reports whether the server stopped accepting new
// connections because accept failed (out of file descriptors, say), and
// the error. /readyz answers 503 while it lasts.
func (s *Server) AcceptPaused() (cause string, paused bool) { return s.gate.state() }
