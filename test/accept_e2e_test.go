package test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

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
	dir := t.TempDir()
	text := e2eKeyIssue(t, e2eEnv(), "--subject", "alice", "--data-dir", dir)
	listen, admin, wsify := e2eFreeAddr(t), e2eFreeAddr(t), e2eFreeAddr(t)
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
