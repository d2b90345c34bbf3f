package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/wsgateway/gateway/internal/ratelog"
)

// blockingAuthorizer is a HeadAuthorizer whose calls wait until their
// context ends or release is closed; each call sends its context first.
type blockingAuthorizer struct {
	echoProtocol
	calls   chan context.Context
	release chan struct{}
}

func newBlockingAuthorizer() *blockingAuthorizer {
	return &blockingAuthorizer{calls: make(chan context.Context, 16), release: make(chan struct{})}
}

func (a *blockingAuthorizer) Name() string { return "echo-auth" }

func (a *blockingAuthorizer) AuthorizeHead(ctx context.Context, _ []byte, _ netip.AddrPort) (any, error) {
	a.calls <- ctx
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.release:
		return nil, nil
	}
}

func authLoop(opts Options, a *blockingAuthorizer) *fakeLoop {
	return NewFakeLoop(opts, Route{Path: "/echo", Protocol: a, Text: true})
}

func nextCall(t *testing.T, a *blockingAuthorizer) context.Context {
	t.Helper()
	select {
	case ctx := <-a.calls:
		return ctx
	case <-time.After(5 * time.Second):
		t.Fatal("the authorizer was not called")
		return nil
	}
}

// waitDecisions waits until no authorizer call runs, then runs the
// decisions they queued.
func waitDecisions(t *testing.T, l *fakeLoop) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.srv.authorizing.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("authorizer calls still running")
		}
		time.Sleep(time.Millisecond)
	}
	l.run()
}

// TestAuthorizeCanceledWhenClientLeaves: a client that closes while its
// head is being authorized cancels the call, and its address's place is
// held until the call's decision has come back: an address under
// MaxConnsPerIP cannot have more calls running than its cap by
// connecting and closing in a loop.
func TestAuthorizeCanceledWhenClientLeaves(t *testing.T) {
	a := newBlockingAuthorizer()
	l := authLoop(Options{}, a)
	l.srv.SetLimits(Limits{MaxConnsPerIP: 1})
	f := l.open()
	l.feed(f, []byte(upgradeHead))
	ctx := nextCall(t, a)
	_ = l.Close(f)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the authorizer call goes on after its client left")
	}
	// The call is over, but its decision has not run on the loop yet: the
	// place is still taken.
	g := l.open()
	if !strings.HasPrefix(string(g.out), "HTTP/1.1 429 ") {
		t.Fatalf("a second connection while the first one's call ends: %q, want 429", g.out)
	}
	_ = l.Close(g)
	waitDecisions(t, l)
	h := l.open()
	if len(h.out) != 0 {
		t.Fatalf("a connection after the decision ran: %q, want nothing yet", h.out)
	}
	if n := l.srv.limits.perIP.count(netip.MustParseAddr("127.0.0.1")); n != 1 {
		t.Fatalf("%d places counted for the address, want 1", n)
	}
}

// TestMaxAuthorizing: past Options.MaxAuthorizing calls running, an
// upgrade is answered 503 with Retry-After at once, without a call, and
// counted; a call that ends makes room again.
func TestMaxAuthorizing(t *testing.T) {
	a := newBlockingAuthorizer()
	l := authLoop(Options{MaxAuthorizing: 1}, a)
	f := l.open()
	l.feed(f, []byte(upgradeHead))
	nextCall(t, a)
	g := l.open()
	l.feed(g, []byte(upgradeHead))
	if out := string(g.out); !strings.HasPrefix(out, "HTTP/1.1 503 ") || !strings.Contains(out, "\r\nRetry-After: 1\r\n") || !g.closed {
		t.Fatalf("an upgrade past MaxAuthorizing: %q (closed %v), want 503 with Retry-After: 1", out, g.closed)
	}
	if len(a.calls) != 0 {
		t.Fatal("the authorizer was called past MaxAuthorizing")
	}
	busy := l.srv.metrics.handshakes.WithLabelValues("echo-auth", resultAuthorizerBusy)
	var m dto.Metric
	if err := busy.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 1 {
		t.Fatalf("gateway_handshakes_total{result=%q} = %v, want 1", resultAuthorizerBusy, n)
	}
	close(a.release)
	waitDecisions(t, l)
	if !strings.HasPrefix(string(f.out), "HTTP/1.1 101 ") {
		t.Fatalf("the authorized upgrade: %q", f.out)
	}
	h := l.open()
	l.feed(h, []byte(upgradeHead))
	nextCall(t, a)
	waitDecisions(t, l)
	if !strings.HasPrefix(string(h.out), "HTTP/1.1 101 ") {
		t.Fatalf("an upgrade once the first call ended: %q", h.out)
	}
}

// TestHandOffFailureAnswers503: a plain HTTP request that cannot be handed
// to net/http (the fake connection's Dup fails, as it does out of
// descriptors) is answered 503 with Retry-After on the loop and closed;
// the warning is logged once for a flood of them.
func TestHandOffFailureAnswers503(t *testing.T) {
	l := echoLoop(nil)
	var log strings.Builder
	l.srv.handOffLog = ratelog.New(slog.New(slog.NewTextHandler(&log, nil)), slog.LevelWarn, 0)
	for range 3 {
		f := l.open()
		l.feed(f, []byte("GET /metrics HTTP/1.1\r\nHost: example.com\r\n\r\n"))
		if string(f.out) != string(response503HandOff) || !f.closed {
			t.Fatalf("answer %q (closed %v), want %q", f.out, f.closed, response503HandOff)
		}
	}
	if !strings.HasPrefix(string(response503HandOff), "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n") {
		t.Fatalf("response %q", response503HandOff)
	}
	if n := strings.Count(log.String(), "http hand-off failed"); n != 1 {
		t.Fatalf("%d log lines for 3 failed hand-offs, want 1: %q", n, log.String())
	}
}

// panickingAuthorizer is a HeadAuthorizer that panics.
type panickingAuthorizer struct{ echoProtocol }

func (panickingAuthorizer) Name() string { return "echo-panic" }
func (panickingAuthorizer) AuthorizeHead(context.Context, []byte, netip.AddrPort) (any, error) {
	panic("authorizer bug")
}

// TestAuthorizerPanicIsContained: a HeadAuthorizer that panics (in its own
// goroutine, where nothing of the loops' guards runs) fails only its
// request, with a 500; the panic is counted and every place comes back.
func TestAuthorizerPanicIsContained(t *testing.T) {
	l := NewFakeLoop(Options{}, Route{Path: "/echo", Protocol: panickingAuthorizer{}, Text: true})
	l.srv.logger = discardLogger
	l.srv.SetLimits(Limits{MaxConnsPerIP: 1})
	f := l.open()
	l.feed(f, []byte(upgradeHead))
	waitDecisions(t, l)
	if !strings.HasPrefix(string(f.out), "HTTP/1.1 500 ") || !f.closed {
		t.Fatalf("answer %q closed %v, want a 500 and the connection closed", f.out, f.closed)
	}
	if got := counterValue(t, l.srv.metrics.panics); got != 1 {
		t.Fatalf("panics counted %v, want 1", got)
	}
	if l.srv.authorizing.Load() != 0 || l.srv.limits.perIP.count(netip.MustParseAddr("127.0.0.1")) != 0 {
		t.Fatalf("authorizing %d, places of 127.0.0.1 %d", l.srv.authorizing.Load(), l.srv.limits.perIP.count(netip.MustParseAddr("127.0.0.1")))
	}
}
