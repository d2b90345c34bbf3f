package test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
)

// azHead is a wsify upgrade request head.
const azHead = "GET /ws HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// TestConnectCallsEndWithTheirClient: a client that connects, sends a
// wsify upgrade head and closes, over and over from one address, cannot
// pile up connect webhook calls: each call is canceled when its client
// leaves (the webhook sees its request's context end, long before the
// webhook's 2 s answer), and the address's place comes back only once the
// call is over, so no more than --max-conns-per-ip calls are in flight.
// Before the fix every call ran its full 2 s and the loop had dozens in
// flight.
func TestConnectCallsEndWithTheirClient(t *testing.T) {
	t.Parallel()
	const perIP, wantCalls = 3, 20
	var calls, inflight, peak, canceled atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // net/http watches for the client leaving once the body is read
		calls.Add(1)
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-r.Context().Done():
			canceled.Add(1)
		case <-time.After(2 * time.Second):
			w.WriteHeader(http.StatusOK)
		}
	}))
	t.Cleanup(hook.Close)
	n := startNode(t, func(c *node.Config) {
		c.WsifyListen = "127.0.0.1:0"
		c.Wsify.AuthorizerURL = hook.URL
		c.Limits = gateway.Limits{MaxConnsPerIP: perIP}
	})
	addr := n.WsifyAddr().String()
	refused := 0
	for i := 0; calls.Load() < wantCalls; i++ {
		if i == 200 {
			t.Fatalf("%d webhook calls after %d connections (%d refused 429), want %d", calls.Load(), i, refused, wantCalls)
		}
		if azConnectAndLeave(t, addr, &calls) {
			refused++
		}
	}
	if p := peak.Load(); p > perIP {
		t.Fatalf("%d webhook calls in flight at once from one address, want at most %d (--max-conns-per-ip)", p, perIP)
	}
	deadline := time.Now().Add(1500 * time.Millisecond) // well before the webhook's 2 s answer
	for inflight.Load() > 0 || canceled.Load() < calls.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d webhook calls canceled, %d still in flight, 1.5 s after their clients left",
				canceled.Load(), calls.Load(), inflight.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d calls, all canceled; peak %d in flight; %d connections refused 429", calls.Load(), peak.Load(), refused)
}

// azConnectAndLeave connects, sends the upgrade head and closes once the
// webhook was called for it, or once the gateway answered (a 429: the
// address's places are all taken). It reports whether the gateway answered.
func azConnectAndLeave(t *testing.T, addr string, calls *atomic.Int64) (answered bool) {
	t.Helper()
	before := calls.Load()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte(azHead)); err != nil {
		return true // refused and closed already
	}
	buf := make([]byte, 512)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if calls.Load() > before {
			return false
		}
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		n, err := nc.Read(buf)
		if n > 0 {
			if string(buf[:min(n, 13)]) != "HTTP/1.1 429 " {
				t.Fatalf("answer %q, want a 429 or nothing until the webhook answers", buf[:n])
			}
			return true
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("read: %v", err)
		}
	}
	t.Fatal("neither a webhook call nor an answer within 5 s")
	return false
}
