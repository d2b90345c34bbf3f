package gateway

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
)

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// Two gnet listeners' addresses: gnet hands the same pointer to the
// handler and as the LocalAddr of the connections it accepted.
var (
	lnA net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	lnB net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3000}
)

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestAcceptErrorReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{acceptErr(syscall.EMFILE), "fd_limit"},
		{acceptErr(syscall.ENFILE), "system_fd_limit"},
		{acceptErr(syscall.ENOBUFS), "memory"},
		{acceptErr(syscall.ENOMEM), "memory"},
		{acceptErr(syscall.EPERM), "other"},
		{syscall.EMFILE, "fd_limit"}, // gnet passes the bare errno
	} {
		if got := acceptErrorReason(c.err); got != c.want {
			t.Errorf("acceptErrorReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// lockedBuffer is a log sink safe for the gate's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestGate(t *testing.T) (*acceptGate, *prometheus.CounterVec, *lockedBuffer) {
	t.Helper()
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e"}, []string{"reason"})
	var log lockedBuffer
	g := newAcceptGate(slog.New(slog.NewTextHandler(&log, nil)), errs)
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.stop)
	return g, errs, &log
}

func reserved(g *acceptGate) []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.reserve...)
}

// isOpen reports whether fd is an open descriptor of this process.
func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// waitResumed waits (bounded, not timed) for a listener's resume call.
func waitResumed(t *testing.T, ch chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the paused listener was not resumed")
	}
}

// The gate gives its spares back on an accept error, reports the pause,
// and resumes every paused listener, once each, when descriptors are free
// (plenty are, in a test process); the log is rate limited.
func TestAcceptGatePausesAndResumes(t *testing.T) {
	g, errs, log := newTestGate(t)
	spares := reserved(g)
	if len(spares) != acceptReserveFDs {
		t.Fatalf("%d spare descriptors held, want %d", len(spares), acceptReserveFDs)
	}
	for _, fd := range spares {
		if !isOpen(fd) {
			t.Fatalf("spare descriptor %d is not open", fd)
		}
	}

	resumedA, resumedB := make(chan struct{}, 2), make(chan struct{}, 2)
	g.failed(lnA, syscall.EMFILE, func() { resumedA <- struct{}{} })
	g.failed(lnB, syscall.ENFILE, func() { resumedB <- struct{}{} })
	waitResumed(t, resumedA)
	waitResumed(t, resumedB)
	if g.shed(lnA) || g.shed(lnB) {
		t.Error("sheds connections after resuming")
	}
	if cause, paused := g.state(); paused {
		t.Fatalf("still paused (%q) after the listeners resumed", cause)
	}
	if n := len(reserved(g)); n != acceptReserveFDs {
		t.Fatalf("%d spare descriptors after resuming, want %d", n, acceptReserveFDs)
	}
	if v := value(errs.WithLabelValues("fd_limit")); v != 1 {
		t.Errorf("fd_limit errors = %v, want 1", v)
	}
	if v := value(errs.WithLabelValues("system_fd_limit")); v != 1 {
		t.Errorf("system_fd_limit errors = %v, want 1", v)
	}
	if v := value(errs.WithLabelValues("memory")) + value(errs.WithLabelValues("other")); v != 0 {
		t.Errorf("memory+other errors = %v, want 0 (the series exist from the start)", v)
	}

	// A second pause within acceptLogEvery is counted, not logged again.
	g.failed(lnA, acceptErr(syscall.EMFILE), func() { resumedA <- struct{}{} })
	waitResumed(t, resumedA)
	if v := value(errs.WithLabelValues("fd_limit")); v != 2 {
		t.Errorf("fd_limit errors = %v, want 2", v)
	}
	out := log.String()
	if n := strings.Count(out, "accept failed"); n != 1 {
		t.Errorf("%d error lines, want 1 (rate limited):\n%s", n, out)
	}
	if n := strings.Count(out, "accepting new connections again"); n != 1 {
		t.Errorf("%d resume lines, want 1 (rate limited):\n%s", n, out)
	}
}

// While paused, state says why; the spares are closed at once.
func TestAcceptGateStateWhilePaused(t *testing.T) {
	g, _, _ := newTestGate(t)
	spares := reserved(g)
	g.mu.Lock()
	g.stopped = true // no retry goroutine: the pause lasts
	g.mu.Unlock()
	g.failed(lnA, acceptErr(syscall.EMFILE), func() { t.Error("resumed after stop") })
	cause, paused := g.state()
	if !paused || cause != "accept: too many open files" {
		t.Fatalf("state = %q, %v; want the EMFILE text, paused", cause, paused)
	}
	if n := len(reserved(g)); n != 0 {
		t.Fatalf("%d spares held while paused, want 0", n)
	}
	// What the failed listener accepted before its error is kept; what
	// another listener accepts now is closed, so the spares stay free.
	if g.shed(lnA) {
		t.Error("shed a connection of the listener that failed")
	}
	if !g.shed(lnB) {
		t.Error("kept a connection another listener accepted while paused")
	}
	for _, fd := range spares {
		if isOpen(fd) {
			// The number may have been reused by another test's socket;
			// only this test runs here, so it should not be.
			t.Errorf("spare descriptor %d still open while paused", fd)
		}
	}
}

// errListener fails its first Accept with EMFILE, then reports closed.
type errListener struct {
	net.Listener
	calls int
}

func (l *errListener) Accept() (net.Conn, error) {
	l.calls++
	if l.calls == 1 {
		return nil, acceptErr(syscall.EMFILE)
	}
	return nil, net.ErrClosed
}

// The admin listener's accept errors pause the gate too (its spares go to
// the admin listener); a closed listener is not an error.
func TestGatedListenerReportsAcceptErrors(t *testing.T) {
	g, errs, _ := newTestGate(t)
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	ln := gatedListener{&errListener{}, g}
	if _, err := ln.Accept(); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("first Accept: %v, want EMFILE passed through (net/http retries it)", err)
	}
	if _, paused := g.state(); !paused {
		t.Fatal("not paused after the admin listener's EMFILE")
	}
	if !g.shed(lnA) {
		t.Error("a gnet listener's new connection kept while the admin listener is out of descriptors")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Accept: %v, want net.ErrClosed", err)
	}
	if v := value(errs.WithLabelValues("fd_limit")) + value(errs.WithLabelValues("other")); v != 1 {
		t.Errorf("errors counted = %v, want 1 (a closed listener is not one)", v)
	}
}

// blockingWriter is a log writer that stalls until released: a log
// shipper that fell behind.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	return len(p), nil
}

// TestAcceptGateLogsOutsideItsLock: while the accept error's log line is
// stuck in a slow writer, the gate answers shed (every loop's OnOpen) and
// state (/readyz) at once: nothing is logged under its mutex.
func TestAcceptGateLogsOutsideItsLock(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e"}, []string{"reason"})
	g := newAcceptGate(slog.New(slog.NewTextHandler(w, nil)), errs)
	if err := g.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.stop)
	g.mu.Lock()
	g.stopped = true // no retry goroutine: the pause lasts
	g.mu.Unlock()
	go g.failed(lnA, acceptErr(syscall.EMFILE), func() {})
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the accept error was not logged")
	}
	answered := make(chan [3]bool, 1)
	go func() {
		_, paused := g.state()
		answered <- [3]bool{g.shed(lnA), g.shed(lnB), paused}
	}()
	select {
	case got := <-answered:
		if got != [3]bool{false, true, true} {
			t.Errorf("shed(failed listener), shed(other), paused = %v, want [false true true]", got)
		}
	case <-time.After(10 * time.Second):
		t.Error("shed and state wait for the log writer")
	}
	close(w.release)
}
