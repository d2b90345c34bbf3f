package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"
)

// Descriptor exhaustion (issue 10, item 15): a real `gateway serve` whose
// open files limit is lowered (prlimit(2) on its pid, as `prlimit --pid`
// does) is filled with idle TCP connections until accept(2) fails with
// EMFILE. The node must stay up, keep its sessions, say so on /readyz and
// in its metrics and log, and accept again once descriptors free up.

// fdHeadroom is how many descriptors above what the ready node holds the
// test allows it: enough for the sessions and some idle connections, well
// under what the idle connections will ask for.
const fdHeadroom = 48

// fdKeepAlive polls over one admin connection opened before the limit is
// reached, so that the first accept to fail is the main listener's (gnet's
// acceptor), not the admin listener's.
var fdKeepAlive = &http.Client{Timeout: 10 * time.Second}

// fdProbe opens a fresh connection per request, as a kubelet probe does:
// a node out of descriptors must still answer it.
var fdProbe = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func fdGet(t testing.TB, url string) (int, string) {
	t.Helper()
	return fdGetWith(t, fdProbe, url)
}

func fdGetWith(t testing.TB, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// fdMetric reads one sample (name with its labels, exactly as exposed).
func fdMetric(t testing.TB, p *e2eProc, sample string) float64 {
	t.Helper()
	status, body := fdGet(t, p.admin+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	for line := range strings.SplitSeq(body, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("sample %q: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("/metrics has no sample %s", sample)
	return 0
}

// fdOpen counts a process's open descriptors.
func fdOpen(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fdSetLimit sets a running process's open files limit, soft and hard.
func fdSetLimit(t testing.TB, pid, n int) {
	t.Helper()
	lim := unix.Rlimit{Cur: uint64(n), Max: uint64(n)}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("prlimit(%d, NOFILE, %d): %v", pid, n, err)
	}
}

// fdWaitReadyz polls /readyz until it answers status with body, or fails.
func fdWaitReadyz(t testing.TB, p *e2eProc, status int, body string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, b := fdGet(t, p.admin+"/readyz")
		if got == status && b == body {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q, want %d %q", got, b, status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFDLimitAcceptPausesAndRecovers: gnet's main reactor accepts (no
// SO_REUSEPORT), with an edge-triggered listener.
func TestFDLimitAcceptPausesAndRecovers(t *testing.T) {
	t.Parallel()
	fdExhaustAndRecover(t)
}

// TestFDLimitReusePortAcceptPausesAndRecovers: with --reuse-port each event
// loop accepts on its own level-triggered listener.
func TestFDLimitReusePortAcceptPausesAndRecovers(t *testing.T) {
	t.Parallel()
	fdExhaustAndRecover(t, "--reuse-port", "--event-loops", "2")
}

func fdExhaustAndRecover(t *testing.T, args ...string) {
	dir := e2eDataDir(t)
	env := e2eEnv()
	key := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	// A long handshake deadline keeps the idle connections open.
	p := e2eServe(t, env, append([]string{"--data-dir", dir, "--handshake-timeout", "2m"}, args...)...)
	pid := p.cmd.Process.Pid
	limit := fdOpen(t, pid) + fdHeadroom
	fdSetLimit(t, pid, limit)

	fdGetWith(t, fdKeepAlive, p.admin+"/readyz")
	// Two sessions open before the limit is reached.
	sessions := []*websocket.Conn{e2eConnectURL(t, p.ws, key), e2eConnectURL(t, p.ws, key)}
	addr := strings.TrimSuffix(strings.TrimPrefix(p.ws, "ws://"), "/api/ws")

	// Idle TCP connections until accept fails: /readyz says so.
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			_ = c.Close()
		}
	})
	const notAccepting = `{"error":"accept: too many open files","status":"not_accepting"}` + "\n"
	for {
		c, err := net.Dial("tcp", addr) // completes in the listen backlog even when not accepted
		if err != nil {
			t.Fatalf("dial %d: %v", len(idle), err)
		}
		idle = append(idle, c)
		if status, body := fdGetWith(t, fdKeepAlive, p.admin+"/readyz"); status == http.StatusServiceUnavailable {
			if body != notAccepting {
				t.Fatalf("/readyz while out of descriptors: %q, want %q", body, notAccepting)
			}
			break
		}
		if len(idle) > 2*fdHeadroom {
			t.Fatalf("%d idle connections under a limit of %d descriptors and /readyz still ready", len(idle), limit)
		}
	}
	t.Logf("accept failed after %d idle connections (limit %d)", len(idle), limit)
	// A fresh probe connection is served: the spares went to the admin
	// listener.
	if status, body := fdGet(t, p.admin+"/readyz"); status != http.StatusServiceUnavailable || body != notAccepting {
		t.Fatalf("fresh /readyz while out of descriptors: %d %q, want 503 %q", status, body, notAccepting)
	}
	if v := fdMetric(t, p, `gateway_accept_errors_total{reason="fd_limit"}`); v < 1 {
		t.Errorf("gateway_accept_errors_total{reason=\"fd_limit\"} = %v, want >= 1", v)
	}
	if v := fdMetric(t, p, "gateway_accept_paused"); v != 1 {
		t.Errorf("gateway_accept_paused = %v while out of descriptors, want 1", v)
	}
	// Open sessions are untouched.
	for _, c := range sessions {
		e2ePing(t, c)
	}
	// A new client is not served: it waits in the backlog, or is closed at
	// once by a listener that has not failed yet.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if c, _, err := websocket.Dial(ctx, p.ws, nil); err == nil {
		c.CloseNow()
		t.Error("a WebSocket handshake was answered while the node was out of descriptors")
	}
	cancel()
	if status, _ := fdGet(t, p.admin+"/healthz"); status != http.StatusOK {
		t.Errorf("/healthz: %d, want 200 (the process is alive)", status)
	}

	// Descriptors free up: the node accepts again and says it is ready.
	for _, c := range idle[:len(idle)-1] {
		_ = c.Close()
	}
	idle = idle[len(idle)-1:]
	fdWaitReadyz(t, p, http.StatusOK, `{"status":"ready"}`+"\n")
	if v := fdMetric(t, p, "gateway_accept_paused"); v != 0 {
		t.Errorf("gateway_accept_paused = %v after recovery, want 0", v)
	}
	for _, c := range append(sessions, e2eConnectURL(t, p.ws, key)) {
		e2ePing(t, c)
	}

	select {
	case <-p.exited:
		t.Fatalf("gateway exited: %v", p.err)
	default:
	}
	log := p.stderr.String()
	if n := strings.Count(log, "accept failed"); n < 1 || n > 3 {
		t.Errorf("%d \"accept failed\" log lines, want 1 to 3 (rate limited):\n%s", n, log)
	}
	if !strings.Contains(log, "accepting new connections again") {
		t.Errorf("no \"accepting new connections again\" log line:\n%s", log)
	}
	if !strings.Contains(log, fmt.Sprintf("open_files_limit=%d", limit)) {
		t.Errorf("the accept error line does not give the open files limit %d:\n%s", limit, log)
	}
}

// TestReusePortTwoProcesses: two nodes with --reuse-port share one port and
// the kernel spreads connections over both (SO_REUSEPORT is set on the
// listeners gnet opens, patched acceptor or not).
func TestReusePortTwoProcesses(t *testing.T) {
	t.Parallel()
	env := e2eEnv("GATEWAY_SECRET=" + testSecret)
	key := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", t.TempDir())
	listen := e2eFreeAddr(t)
	a := e2eServe(t, env, "--data-dir", t.TempDir(), "--reuse-port", "--listen", listen)
	b := e2eServe(t, env, "--data-dir", t.TempDir(), "--reuse-port", "--listen", listen)
	// 2^-39 is the chance that one node gets all 40.
	for range 40 {
		c := e2eConnectURL(t, "ws://"+listen+"/api/ws", key)
		e2ePing(t, c)
		c.CloseNow()
	}
	for _, p := range []*e2eProc{a, b} {
		if v := fdMetric(t, p, "gateway_connections_accepted_total"); v < 1 {
			t.Errorf("node %s accepted %v of 40 connections on the shared port, want some", p.admin, v)
		}
	}
}
