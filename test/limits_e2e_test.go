package test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// Bad input and overload: each client gets a clear close code or HTTP
// status, everyone else goes on being served, and nothing stays counted or
// allocated. Helpers of this file start with "lim"; servers come from
// cfStart (conformance_e2e_test.go).

var (
	limIP1 = net.IPv4(127, 0, 0, 1)
	limIP2 = net.IPv4(127, 0, 0, 2)
)

// limUpgrade sends an upgrade request from local to path with extra header
// lines and returns the answer (for a 101 the connection stays open).
func limUpgrade(t testing.TB, srv *gateway.Server, local net.IP, path string, extra ...string) (*rtConn, *http.Response) {
	t.Helper()
	c := cfDialFrom(t, srv.Addr().String(), local)
	c.write(c.cfRequest(path, extra...))
	return c, c.cfResponse()
}

func limExpectStatus(t testing.TB, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("upgrade answered %s, want %d", resp.Status, want)
	}
	if want == http.StatusTooManyRequests || want == http.StatusServiceUnavailable {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s <= 0 {
			t.Fatalf("%d without a Retry-After in seconds: %q", want, resp.Header.Get("Retry-After"))
		}
	}
}

// limStillEchoes checks a connection is served: a message comes back.
func limStillEchoes(t testing.TB, c *rtConn) {
	t.Helper()
	c.write(cfFrame(true, ws.OpText, []byte("still here")))
	c.cfExpect(ws.OpText, []byte("still here"))
}

// limBye closes a connection cleanly and waits for the server to end it
// (the server has run OnClose by then).
func limBye(t testing.TB, c *rtConn) {
	t.Helper()
	c.write(cfFrame(true, ws.OpClose, cfClosePayload(1000, "")))
	if code := c.cfCloseCode(); code != 1000 {
		t.Fatalf("close answered %d", code)
	}
}

// limCounter reads a counter (with label pairs) from the server's registry.
func limCounter(t testing.TB, srv *gateway.Server, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

var _ prometheus.Registerer // the registry is Prometheus's

// TestLimitMessageRate: a connection flooding past its message rate (a
// token bucket of MessageBurst, refilled at MessageRate per second) is
// closed with 1008 "message rate exceeded" (RFC 6455 7.4.1: policy
// violation); a connection within its rate is untouched.
func TestLimitMessageRate(t *testing.T) {
	t.Parallel()
	srv := cfStart(t, gateway.Options{}, &gateway.Limits{MessageRate: 20, MessageBurst: 10})
	polite := cfEcho(t, srv)
	flood := cfEcho(t, srv)
	var b []byte
	for i := range 200 {
		b = append(b, cfFrame(true, ws.OpBinary, []byte(fmt.Sprint(i)))...)
	}
	flood.write(b)
	echoed := 0
	for {
		f := flood.readFrame()
		if f.op == ws.OpClose {
			if code := string(f.payload[2:]); f.payload[0] != 0x03 || f.payload[1] != 0xf0 || code != "message rate exceeded" {
				t.Fatalf("closed with % x %q, want 1008 \"message rate exceeded\"", f.payload[:2], code)
			}
			flood.expectEOF()
			break
		}
		echoed++
	}
	// The burst, and perhaps a token or two refilled meanwhile.
	if echoed < 10 || echoed > 15 {
		t.Fatalf("%d messages echoed before the close, want the burst of 10 (a few more at most)", echoed)
	}
	for range 3 {
		limStillEchoes(t, polite)
	}
	if n := limCounter(t, srv, "gateway_message_rate_disconnects_total"); n != 1 {
		t.Fatalf("gateway_message_rate_disconnects_total = %v, want 1", n)
	}
	// Pings count too: a Ping flood is closed the same way.
	pings := cfEcho(t, srv)
	b = b[:0]
	for range 100 {
		b = append(b, cfFrame(true, ws.OpPing, nil)...)
	}
	pings.write(b)
	for {
		f := pings.readFrame()
		if f.op == ws.OpClose {
			if string(f.payload[2:]) != "message rate exceeded" {
				t.Fatalf("ping flood closed with %q", f.payload)
			}
			break
		}
	}
	limStillEchoes(t, polite)
}

// TestLimitConnsPerIP: upgrades from one IP past MaxConnsPerIP get 429 with
// Retry-After before the protocol sees them; another IP is unaffected; a
// closed connection frees its place, and refused ones never took one.
func TestLimitConnsPerIP(t *testing.T) {
	t.Parallel()
	srv := cfStart(t, gateway.Options{}, &gateway.Limits{MaxConnsPerIP: 2, RetryAfter: 3 * time.Second})
	a1, resp := limUpgrade(t, srv, limIP1, "/echo")
	limExpectStatus(t, resp, 101)
	a2, resp := limUpgrade(t, srv, limIP1, "/echo")
	limExpectStatus(t, resp, 101)
	for range 3 {
		c, resp := limUpgrade(t, srv, limIP1, "/echo")
		limExpectStatus(t, resp, http.StatusTooManyRequests)
		if resp.Header.Get("Retry-After") != "3" {
			t.Fatalf("Retry-After %q, want 3", resp.Header.Get("Retry-After"))
		}
		c.expectEOF()
	}
	b1, resp := limUpgrade(t, srv, limIP2, "/echo")
	limExpectStatus(t, resp, 101)
	b2, resp := limUpgrade(t, srv, limIP2, "/echo")
	limExpectStatus(t, resp, 101)
	_, resp = limUpgrade(t, srv, limIP2, "/echo")
	limExpectStatus(t, resp, http.StatusTooManyRequests)
	for _, c := range []*rtConn{a1, a2, b1, b2} {
		limStillEchoes(t, c)
	}
	limBye(t, a1)
	a3, resp := limUpgrade(t, srv, limIP1, "/echo")
	limExpectStatus(t, resp, 101)
	limStillEchoes(t, a3)
	_, resp = limUpgrade(t, srv, limIP1, "/echo")
	limExpectStatus(t, resp, http.StatusTooManyRequests)
	if n := limCounter(t, srv, "gateway_limit_refusals_total", "limit", "conns_per_ip"); n != 5 {
		t.Fatalf("conns_per_ip refusals = %v, want 5", n)
	}
	// A connection that fails (not a clean close) frees its place too,
	// once gone: the server waits for the client's answering close.
	a3.write([]byte{0x81, 0x00}) // unmasked: 1002
	a3.expectClose(1002, "masked")
	_ = a3.nc.Close() // the server dropped the stream after the error: end TCP
	deadline := time.Now().Add(waitFor)
	for {
		c, resp := limUpgrade(t, srv, limIP1, "/echo")
		if resp.StatusCode == 101 {
			limStillEchoes(t, c)
			break
		}
		limExpectStatus(t, resp, http.StatusTooManyRequests)
		if time.Now().After(deadline) {
			t.Fatal("the failed connection's place was never freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLimitConns: upgrades past the server's MaxConns get 503 with
// Retry-After; a closed connection frees its place.
func TestLimitConns(t *testing.T) {
	t.Parallel()
	srv := cfStart(t, gateway.Options{}, &gateway.Limits{MaxConns: 3})
	var open []*rtConn
	for i := range 3 {
		c, resp := limUpgrade(t, srv, []net.IP{limIP1, limIP2}[i%2], "/echo")
		limExpectStatus(t, resp, 101)
		open = append(open, c)
	}
	for _, ip := range []net.IP{limIP1, limIP2} {
		_, resp := limUpgrade(t, srv, ip, "/echo")
		limExpectStatus(t, resp, http.StatusServiceUnavailable)
	}
	for _, c := range open {
		limStillEchoes(t, c)
	}
	limBye(t, open[0])
	c, resp := limUpgrade(t, srv, limIP2, "/echo")
	limExpectStatus(t, resp, 101)
	limStillEchoes(t, c)
	if n := limCounter(t, srv, "gateway_limit_refusals_total", "limit", "conns"); n != 2 {
		t.Fatalf("conns refusals = %v, want 2", n)
	}
}

// TestLimitAllowedOrigins: browser routes check Origin against the list
// (against cross-site WebSocket hijacking): listed origins (default ports
// normalised, "*." subdomain patterns) upgrade, others get 403 before the
// protocol sees them, and a request with no Origin (not a browser)
// upgrades. A route not marked Browser (native) ignores Origin.
func TestLimitAllowedOrigins(t *testing.T) {
	t.Parallel()
	srv := cfStart(t, gateway.Options{}, &gateway.Limits{
		AllowedOrigins: []string{"https://app.example.com", "https://*.example.org", "http://localhost:3000"}},
		gateway.EchoRoute("/echo"),
		gateway.Route{Path: "/native-like", Protocol: gateway.Echo{}, Text: true}) // Browser: false, like native
	keep := cfEcho(t, srv)
	for _, tc := range []struct {
		path, origin string
		want         int
	}{
		{"/echo", "https://app.example.com", 101},
		{"/echo", "https://APP.example.com:443", 101},
		{"/echo", "https://chat.example.org", 101},
		{"/echo", "http://localhost:3000", 101},
		{"/echo", "", 101},
		{"/echo", "https://evil.example.com", 403},
		{"/echo", "http://app.example.com", 403},
		{"/echo", "https://example.org", 403},
		{"/echo", "http://localhost:3001", 403},
		{"/echo", "null", 403},
		{"/native-like", "https://evil.example.com", 101},
		{"/native-like", "", 101},
	} {
		t.Run(fmt.Sprintf("%s %q", tc.path, tc.origin), func(t *testing.T) {
			var extra []string
			if tc.origin != "" {
				extra = append(extra, "Origin: "+tc.origin)
			}
			c, resp := limUpgrade(t, srv, nil, tc.path, extra...)
			limExpectStatus(t, resp, tc.want)
			if tc.want == 101 {
				limStillEchoes(t, c)
			} else {
				c.expectEOF()
			}
		})
	}
	limStillEchoes(t, keep)
	if n := limCounter(t, srv, "gateway_limit_refusals_total", "limit", "origin"); n != 5 {
		t.Fatalf("origin refusals = %v, want 5", n)
	}
}

// TestLimitSlowConsumerMemoryFlat: a subscriber that stops reading while
// others publish is closed (1008 slow consumer) once its outbound budget
// is reached, a reading subscriber gets every message, and the node's heap
// (go_memstats_heap_inuse_bytes on the admin /metrics) comes back to
// within a bound of where it was: nothing of the burst stays allocated.
//
// Not parallel: the heap is the test process's, so no other test runs
// meanwhile.
func TestLimitSlowConsumerMemoryFlat(t *testing.T) {
	n := startNode(t)
	heap := func() float64 {
		t.Helper()
		runtime.GC()
		runtime.GC() // pools are emptied over two cycles
		return limScrapeValue(t, n, "go_memstats_heap_inuse_bytes")
	}

	// The slow one: subscribes, then never reads; a small receive buffer
	// (set before connecting, so the window is right from the start) makes
	// the server's outbound buffer fill soon.
	d := net.Dialer{Timeout: waitFor, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}
	nc, err := d.Dial("tcp", n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	slow := &rtConn{t: t, nc: nc, br: bufio.NewReader(nc), key: "dGhlIHNhbXBsZSBub25jZQ=="}
	slow.write(append(slow.request("/api/ws"), rtMsg(rtAuthMsg(t, n))...))
	slow.readUpgrade()
	slow.expectPong()
	slow.write(rtMsg(packet.AppendSubscribe(nil, "flood")))
	slow.expectBinary(packet.AppendSubscribed(nil, "flood"))

	reader := connect(t, n, "reader")
	subscribe(t, reader, "flood")
	pub := connect(t, n, "publisher")
	before := heap()

	const msgs, size = 400, 32 << 10 // 12.5 MiB: well past the 1 MiB budget and the kernel's buffers
	var got atomic.Int64
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for got.Load() < msgs {
			_, msg, err := reader.Read(ctx)
			if err != nil {
				done <- err
				return
			}
			if bytes.Contains(msg, []byte("flood")) {
				got.Add(1)
			}
		}
		done <- nil
	}()
	payload := bytes.Repeat([]byte{'x'}, size)
	for i := range msgs {
		payload[0] = byte(i)
		if err := pub.Write(testCtx(t), websocket.MessageBinary, packet.AppendPublish(nil, "flood", payload)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if i%8 == 7 { // pace: the reader stays well within its budget
			for deadline := time.Now().Add(waitFor); got.Load() < int64(i+1)-8; {
				if time.Now().After(deadline) {
					t.Fatalf("the reading subscriber is stuck at %d of %d", got.Load(), i+1)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("the reading subscriber: %v after %d of %d messages", err, got.Load(), msgs)
	}

	// The slow one was closed. It reads what the kernel still holds for it;
	// the server's own backlog (and with it the 1008 close frame queued
	// behind it) may be dropped when the close grace ends, since the client
	// did not read: the stream ends either way, and nothing waits for it.
	if v := limScrapeValue(t, n, "gateway_slow_consumer_disconnects_total"); v < 1 {
		t.Fatalf("gateway_slow_consumer_disconnects_total = %v, want 1", v)
	}
	_ = slow.nc.SetDeadline(time.Now().Add(waitFor))
	rest, err := io.ReadAll(slow.br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the slow consumer's stream did not end: %v after %d bytes", err, len(rest))
	}
	frames := len(rest) / size
	if frames >= msgs {
		t.Fatalf("the slow consumer got all %d messages: never closed for being slow", frames)
	}
	if i := bytes.LastIndex(rest, []byte{0x88}); i >= 0 && i+4 <= len(rest) && rest[i+2] == 0x03 && rest[i+3] == 0xf0 {
		t.Logf("the slow consumer got its 1008 close frame")
	}
	// The rest of the node is fine.
	send(t, pub, packet.AppendPing(nil))
	if p := readOne(t, pub); p.ID != packet.PacketPong {
		t.Fatalf("publisher got %s after the burst, want Pong", describe(p))
	}
	after := heap()
	t.Logf("heap in use: %.1f MiB before, %.1f MiB after the %d MiB burst; the slow consumer got %d of %d messages",
		before/(1<<20), after/(1<<20), msgs*size>>20, frames, msgs)
	// Generous: goroutines of earlier tests may still be winding down.
	if after > before+16<<20 {
		t.Fatalf("heap in use grew from %.1f to %.1f MiB", before/(1<<20), after/(1<<20))
	}
}

func limScrapeValue(t testing.TB, n *node.Node, name string) float64 {
	t.Helper()
	s, _ := e2eScrape(t, n)
	v, err := strconv.ParseFloat(s[name], 64)
	if err != nil {
		t.Fatalf("%s: %q", name, s[name])
	}
	return v
}
