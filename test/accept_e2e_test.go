package test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// Accepting connections: binding and rebinding the listeners, what the
// loop answers to heads it cannot serve, the limits checked before any
// work, and upgrades on keep-alive connections. Helpers of this file start
// with "ac".

// acServeAt starts `gateway serve` on fixed addresses and fails the test if
// it does not become ready.
func acServeAt(t *testing.T, dir, listen, admin, wsify string) *e2eProc {
	t.Helper()
	p, err := e2eServeAt(t, e2eEnv(), listen, admin, wsify, "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// acServeSomeTraffic connects clients of every listener to p and has them
// talk, so that closing them leaves TIME_WAIT sockets on the node's ports.
func acServeSomeTraffic(t *testing.T, p *e2eProc, key, wsify string) []*websocket.Conn {
	t.Helper()
	var conns []*websocket.Conn
	for range 5 {
		c := e2eConnectURL(t, p.ws, key)
		subscribe(t, c, "room")
		e2ePing(t, c)
		conns = append(conns, c)
	}
	for range 3 {
		w, _, err := websocket.Dial(testCtx(t), "ws://"+wsify+"/ws", nil)
		if err != nil {
			t.Fatalf("wsify dial: %v", err)
		}
		t.Cleanup(func() { _ = w.CloseNow() })
		writeText(t, w, `{"command":"join","args":{"channel":"news"}}`)
		writeText(t, w, `{"command":"broadcast","args":{"channel":"news","content":"self"}}`)
		if got := readText(t, w); got != `"self"` {
			t.Fatalf("wsify member got %s", got)
		}
		conns = append(conns, w)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if status, _, _ := e2eDo(t, http.MethodGet, p.admin+path, "", nil); status != http.StatusOK {
			t.Fatalf("admin %s: %d", path, status)
		}
	}
	// Plain HTTP on the main port, handed to net/http by the loop.
	if status, _, _ := e2eDo(t, http.MethodGet, "http://"+strings.TrimSuffix(strings.TrimPrefix(p.ws, "ws://"), "/api/ws")+"/nothing", "", nil); status != http.StatusNotFound {
		t.Fatalf("plain request answered %d, want 404", status)
	}
	return conns
}

// TestProcessRestartSamePorts: a node stopped with SIGTERM after serving
// clients (every session closed by the server, so each leaves a TIME_WAIT
// on the node's side) starts again at once on the same main, admin and
// wsify ports, twice in a row.
func TestProcessRestartSamePorts(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	text := e2eKeyIssue(t, e2eEnv(), "--subject", "alice", "--data-dir", dir)
	free := e2eFreeAddrs(t, 3)
	listen, admin, wsify := free[0], free[1], free[2]
	p := acServeAt(t, dir, listen, admin, wsify)
	for run := range 2 {
		conns := acServeSomeTraffic(t, p, text, wsify)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		for _, c := range conns[:5] { // the native sessions: 1001 from the server
			expectClose(t, c, websocket.StatusGoingAway, "server shutting down")
		}
		if code := p.e2eWaitExit(t, 15*time.Second); code != 0 {
			t.Fatalf("run %d: exit code %d after SIGTERM; stderr:\n%s", run, code, p.stderr.String())
		}
		started := time.Now()
		p = acServeAt(t, dir, listen, admin, wsify)
		t.Logf("run %d: ready again %v after the exit", run, time.Since(started).Round(time.Millisecond))
	}
	acServeSomeTraffic(t, p, text, wsify)
}

// TestProcessPortTaken: a port another socket listens on stops serve with
// an error naming the address and "address already in use", whichever of
// the three listeners it is, and a non-zero exit.
func TestProcessPortTaken(t *testing.T) {
	t.Parallel()
	for _, which := range []string{"main", "admin", "wsify"} {
		t.Run(which, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			addrs := map[string]string{"main": e2eFreeAddr(t), "admin": e2eFreeAddr(t), "wsify": e2eFreeAddr(t)}
			addrs[which] = taken.Addr().String()
			_, stderr, code := e2eRun(t, e2eEnv(), "serve", "--listen", addrs["main"], "--admin-listen", addrs["admin"],
				"--wsify-listen", addrs["wsify"], "--event-loops", "1", "--data-dir", t.TempDir())
			if code == 0 {
				t.Fatalf("serve exited 0 with its %s port taken", which)
			}
			if !strings.Contains(stderr, addrs[which]) || !strings.Contains(stderr, "address already in use") {
				t.Fatalf("stderr %q, want the address %s and \"address already in use\"", stderr, addrs[which])
			}
		})
	}
}

// acPlain sends a plain keep-alive GET on c and checks the status; the
// connection stays open.
func acPlain(t *testing.T, c *rtConn, path string, want int) {
	t.Helper()
	c.write([]byte("GET " + path + " HTTP/1.1\r\nHost: gateway\r\n\r\n"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("plain GET %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want || resp.Close {
		t.Fatalf("plain GET %s: %s (close %v), want %d, kept alive", path, resp.Status, resp.Close, want)
	}
}

// TestUpgradeAfterKeepAlive: an upgrade on a connection that already
// carried plain requests (served by net/http) is upgraded, not answered
// 401 or 426: net/http gives the connection back to the loop. Frames sent
// with the upgrade head, and requests pipelined before it, are kept.
func TestUpgradeAfterKeepAlive(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.WsifyListen = "127.0.0.1:0" })

	t.Run("native, after two requests", func(t *testing.T) {
		c := rtDial(t, n)
		acPlain(t, c, "/nothing", http.StatusNotFound)
		acPlain(t, c, "/nothing-else", http.StatusNotFound)
		c.write(c.request("/api/ws"))
		c.readUpgrade()
		c.write(rtMsg(rtAuthMsg(t, n)))
		c.expectPong()
	})
	t.Run("native, auth in the same write as the head", func(t *testing.T) {
		c := rtDial(t, n)
		acPlain(t, c, "/nothing", http.StatusNotFound)
		c.write(append(c.request("/api/ws"), rtMsg(rtAuthMsg(t, n))...))
		c.readUpgrade()
		c.expectPong()
		c.write(rtMsg(packet.AppendPing(nil)))
		c.expectPong()
	})
	t.Run("pipelined behind a plain request", func(t *testing.T) {
		c := rtDial(t, n)
		c.write(append(append([]byte("GET /nothing HTTP/1.1\r\nHost: gateway\r\n\r\n"), c.request("/api/ws")...), rtMsg(rtAuthMsg(t, n))...))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("first answer %v %v, want 404", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		c.readUpgrade()
		c.expectPong()
	})
	t.Run("unknown path after a request: 404 from the loop", func(t *testing.T) {
		c := rtDial(t, n)
		acPlain(t, c, "/nothing", http.StatusNotFound)
		c.write(c.request("/nope"))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("answer %v %v, want 404", resp, err)
		}
	})
	t.Run("wsify listener", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", n.WsifyAddr().String(), waitFor)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(waitFor))
		c := &rtConn{t: t, nc: nc, br: bufio.NewReader(nc), key: "dGhlIHNhbXBsZSBub25jZQ=="}
		acPlain(t, c, "/nothing", http.StatusNotFound)
		c.write(c.request("/ws"))
		if resp := c.cfResponse(); resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("wsify upgrade answered %s", resp.Status)
		}
		c.write(cfFrame(true, ws.OpText, []byte(`{"command":"join","args":{"channel":"news"}}`)))
		c.write(cfFrame(true, ws.OpText, []byte(`{"command":"broadcast","args":{"channel":"news","content":"self"}}`)))
		c.cfExpect(ws.OpText, []byte(`"self"`))
	})
}

// acDial opens a raw TCP connection to addr from local (nil: any).
func acDial(t *testing.T, addr string, local net.IP) *rtConn {
	t.Helper()
	return cfDialFrom(t, addr, local)
}

// acExpectAnswer reads everything until the server ends the connection and
// checks it is exactly want, and that it came well before the handshake
// timeout (10 s by default): the server decided at once.
func acExpectAnswer(t *testing.T, c *rtConn, sent time.Time, want string) {
	t.Helper()
	got, err := io.ReadAll(c.br)
	if err != nil {
		t.Fatalf("read the answer: %v (got %q)", err, got)
	}
	if string(got) != want {
		t.Fatalf("answer %q, want %q", got, want)
	}
	if d := time.Since(sent); d > 3*time.Second {
		t.Fatalf("answered after %v: not at once", d)
	}
}

func acAnswer400(body string) string {
	body += "\n"
	return "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// TestHeadsAnsweredAtOnce: a head with LF-only line ends, a TLS
// ClientHello on the plain port and binary noise get a 400 naming the
// problem at once (nginx and net/http answer them too), not the 408 of the
// handshake timeout.
func TestHeadsAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	addr := n.Addr().String()
	for _, tc := range []struct {
		name, send, want string
	}{
		{"LF-only upgrade", "GET /api/ws HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n",
			acAnswer400("request lines must end with CRLF")},
		{"LF-only plain request", "GET /healthz HTTP/1.1\nHost: x\n\n", acAnswer400("request lines must end with CRLF")},
		{"LF-only first line alone", "GET / HTTP/1.1\n", acAnswer400("request lines must end with CRLF")},
		{"TLS record header alone", "\x16\x03\x01\x02\x00", acAnswer400("this port speaks plain HTTP and ws://, not TLS: use http:// or ws://, or a TLS proxy in front")},
		{"binary noise", "\x00\xff\x13\x37", acAnswer400("malformed request line")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := acDial(t, addr, nil)
			sent := time.Now()
			c.write([]byte(tc.send))
			acExpectAnswer(t, c, sent, tc.want)
		})
	}
	t.Run("Go's TLS client", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", addr, waitFor)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(waitFor))
		start := time.Now()
		err = tls.Client(nc, &tls.Config{ServerName: "gateway", InsecureSkipVerify: true}).Handshake()
		var rh tls.RecordHeaderError
		if !errors.As(err, &rh) || string(rh.RecordHeader[:]) != "HTTP/" {
			t.Fatalf("TLS handshake: %v; want a RecordHeaderError on an HTTP answer", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("answered after %v", d)
		}
		_, err = e2eHTTP.Get("https://" + addr + "/api/ws")
		if err == nil || !strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
			t.Fatalf("https:// on the plain port: %v", err)
		}
	})
}

// TestDotSegmentsRefused: paths with "." or ".." segments (also
// percent-encoded) or "//" are refused with 400 before routing, upgrade
// or not: "/api/ws/../ws" must not reach KOsync (under /api/ws/) nor
// Hypothesis (/ws).
func TestDotSegmentsRefused(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	want := acAnswer400(`path must not contain "." or ".." segments or "//"`)
	for _, path := range []string{"/api/ws/../ws", "/api/ws/./x", "/api/ws/%2e%2E/ws", "//api/ws", "/api//ws", "/ws/.."} {
		t.Run("upgrade "+path, func(t *testing.T) {
			c := rtDial(t, n)
			c.write(c.request(path))
			acExpectAnswer(t, c, time.Now(), want)
		})
		t.Run("plain "+path, func(t *testing.T) {
			c := rtDial(t, n)
			c.write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"))
			acExpectAnswer(t, c, time.Now(), want)
		})
	}
	// The clean paths still route: native answers 101 and its hello.
	c := rtDial(t, n)
	c.write(c.request("/api/ws"))
	c.readUpgrade()
}

// TestHalfOpenUpgradesCountPerIP: connections still sending their request
// head hold places in MaxConnsPerIP from accept, so one address holding
// half-open upgrades is refused more (429 at once, before it sends
// anything), while another address connects and talks normally; closing
// one gives its place back.
func TestHalfOpenUpgradesCountPerIP(t *testing.T) {
	t.Parallel()
	const perIP = 4
	n := startNode(t, func(c *node.Config) {
		c.Limits = gateway.Limits{MaxConnsPerIP: perIP, RetryAfter: 2 * time.Second}
	})
	addr := n.Addr().String()
	var halfOpen []*rtConn
	for range perIP {
		c := acDial(t, addr, limIP1)
		c.write([]byte("GET /api/ws HTTP/1.1\r\nHost: x\r\n")) // and never more
		halfOpen = append(halfOpen, c)
	}
	// The loops accept concurrently: wait until the node has them all.
	for deadline := time.Now().Add(waitFor); limCounter(t, n.Server, "gateway_connections_accepted_total") < perIP; {
		if time.Now().After(deadline) {
			t.Fatal("the half-open connections were not accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nConnection: close\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\n\r\ntoo many connections from your address\n"
	for range 3 {
		c := acDial(t, addr, limIP1) // sends nothing: the answer comes at accept
		acExpectAnswer(t, c, time.Now(), want)
	}
	// Another address is served as usual, round trip included.
	other := acDial(t, addr, limIP2)
	other.write(append(other.request("/api/ws"), rtMsg(rtAuthMsg(t, n))...))
	other.readUpgrade()
	other.expectPong()
	start := time.Now()
	other.write(rtMsg(packet.AppendPing(nil)))
	other.expectPong()
	t.Logf("round trip of the other address: %v", time.Since(start))

	// A closed half-open connection gives its place back.
	_ = halfOpen[0].nc.Close()
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		c := acDial(t, addr, limIP1)
		c.write(append(c.request("/api/ws"), rtMsg(rtAuthMsg(t, n))...))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after a close: %s", resp.Status)
		}
	}
}

// TestLimitsBeforeWebhook: the origin check and the server's connection cap
// refuse wsify upgrades before its connect webhook is called: a flood of
// refused heads is no flood of webhook calls.
func TestLimitsBeforeWebhook(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(hook.Close)
	n := startNode(t, func(c *node.Config) {
		c.WsifyListen = "127.0.0.1:0"
		c.Wsify.AuthorizerURL = hook.URL
		c.Limits = gateway.Limits{MaxConns: 2, AllowedOrigins: []string{"https://app.example.com"}}
	})
	upgrade := func(origin string) (*rtConn, *http.Response) {
		c := acDial(t, n.WsifyAddr().String(), nil)
		c.write(c.cfRequest("/ws", "Origin: "+origin))
		return c, c.cfResponse()
	}
	for range 20 {
		_, resp := upgrade("https://evil.example.com")
		limExpectStatus(t, resp, http.StatusForbidden)
	}
	if got := calls.Load(); got != 0 {
		t.Fatalf("%d webhook calls for upgrades refused by origin, want 0", got)
	}
	var open []*rtConn
	for range 2 {
		c, resp := upgrade("https://app.example.com")
		limExpectStatus(t, resp, http.StatusSwitchingProtocols)
		open = append(open, c)
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("%d webhook calls for 2 upgrades, want 2", got)
	}
	for range 20 {
		_, resp := upgrade("https://app.example.com")
		limExpectStatus(t, resp, http.StatusServiceUnavailable)
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("%d webhook calls after 20 upgrades over MaxConns, want still 2", got)
	}
	for _, c := range open {
		c.write(cfFrame(true, ws.OpText, []byte(`{"command":"join","args":{"channel":"news"}}`)))
		c.write(cfFrame(true, ws.OpText, []byte(`{"command":"broadcast","args":{"channel":"news","content":"x"}}`)))
	}
}
