package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// Drain tests: Shutdown / SIGTERM refuse new connections at once and close
// the live sessions with 1001 spread over the drain window. Helpers are
// prefixed drain.

// drainClose is what one client saw at the end of its session.
type drainClose struct {
	at     time.Time
	code   websocket.StatusCode
	reason string
	err    error // a read error without a close frame
}

// drainDial connects and authenticates a native client without the
// testing.T (it runs off the test goroutine).
func drainDial(url string, key []byte) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	typ, msg, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || !bytes.Equal(msg, packet.Hello) {
		_ = c.CloseNow()
		return nil, fmt.Errorf("hello: %v % x %v", typ, msg, err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, packet.AppendAuth(nil, packet.Version, key)); err != nil {
		_ = c.CloseNow()
		return nil, err
	}
	_, msg, err = c.Read(ctx)
	if err != nil {
		_ = c.CloseNow()
		return nil, fmt.Errorf("auth answer: %w", err)
	}
	d := packet.NewClientDecoder(msg)
	var p packet.ServerPacket
	if ok, err := d.Next(&p); !ok || err != nil || p.ID != packet.PacketPong {
		_ = c.CloseNow()
		return nil, fmt.Errorf("auth answer % x, want Pong", msg)
	}
	return c, nil
}

// drainConnectAll opens n authenticated clients (32 dials at a time) and
// returns them; it fails the test on any error.
func drainConnectAll(t testing.TB, url string, n int, key func(i int) []byte) []*websocket.Conn {
	t.Helper()
	conns := make([]*websocket.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			conns[i], errs[i] = drainDial(url, key(i))
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				_ = c.CloseNow()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d of %d: %v", i, n, err)
		}
	}
	return conns
}

// drainWatch reads each connection until it ends and reports how.
func drainWatch(conns []*websocket.Conn) (results []drainClose, wait func()) {
	results = make([]drainClose, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for {
				_, _, err := c.Read(ctx)
				if err == nil {
					continue
				}
				r := drainClose{at: time.Now()}
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					r.code, r.reason = ce.Code, ce.Reason
				} else {
					r.err = err
				}
				results[i] = r
				return
			}
		})
	}
	return results, wg.Wait
}

// drainCheck checks every client got 1001 "server shutting down" and
// returns the spread between the first and the last close.
func drainCheck(t testing.TB, results []drainClose) time.Duration {
	t.Helper()
	var bad []string
	times := make([]time.Time, 0, len(results))
	for i, r := range results {
		if r.err != nil || r.code != websocket.StatusGoingAway || r.reason != "server shutting down" {
			bad = append(bad, fmt.Sprintf("client %d: %d %q %v", i, r.code, r.reason, r.err))
			continue
		}
		times = append(times, r.at)
	}
	if len(bad) > 0 {
		t.Fatalf("%d of %d clients did not get 1001 \"server shutting down\", e.g. %s", len(bad), len(results), bad[0])
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	return times[len(times)-1].Sub(times[0])
}

// TestDrainShutdown: 1500 sessions, DrainWindow 1 s. Once Shutdown starts,
// /readyz answers 503 draining and a new upgrade is refused; every session
// gets 1001 "server shutting down"; the closes are spread (the first and
// the last at least 0.5 s apart: they are scheduled over about 1 s, a slow
// machine only stretches that); Shutdown returns nil before
// ShutdownTimeout.
func TestDrainShutdown(t *testing.T) {
	t.Parallel()
	const clients = 1500
	const shutdownTimeout = 20 * time.Second
	n := startNode(t, func(c *node.Config) {
		c.DrainWindow = time.Second
		c.ShutdownTimeout = shutdownTimeout
	})
	keys := make([][]byte, clients)
	for i := range keys {
		keys[i] = issueKey(t, n, fmt.Sprintf("user%d", i), time.Hour)
	}
	conns := drainConnectAll(t, wsURL(n), clients, func(i int) []byte { return keys[i] })
	results, wait := drainWatch(conns)
	e2eGetJSON(t, n, "/readyz", http.StatusOK, map[string]any{"status": "ready"})

	done := make(chan error, 1)
	started := time.Now()
	var took time.Duration
	go func() {
		err := n.Shutdown(context.Background())
		took = time.Since(started)
		done <- err
	}()
	// 503 draining while it runs (Draining turns true first thing).
	for {
		status, b, ct := e2eDo(t, http.MethodGet, adminURL(n)+"/readyz", "", nil)
		if status == http.StatusServiceUnavailable {
			e2eWantFields(t, e2eDecodeJSON(t, b, ct), map[string]any{"status": "draining"})
			break
		}
		if status != http.StatusOK || time.Since(started) > waitFor {
			t.Fatalf("readyz during shutdown: %d %s, want 503 draining", status, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A new connection is refused (503 to the upgrade, or the TCP
	// connection closed, or refused once the listener is gone).
	if c, err := drainDial(wsURL(n), issueKey(t, n, "late", time.Hour)); err == nil {
		_ = c.CloseNow()
		t.Fatal("a new connection was accepted and authenticated during the drain")
	} else {
		t.Logf("new connection during the drain: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(shutdownTimeout + 15*time.Second):
		t.Fatalf("Shutdown still running after %v", shutdownTimeout+15*time.Second)
	}
	if took >= shutdownTimeout {
		t.Errorf("Shutdown took %v, not within its ShutdownTimeout %v", took, shutdownTimeout)
	}
	wait()
	spread := drainCheck(t, results)
	t.Logf("%d sessions closed with 1001, first to last %v; Shutdown took %v", clients, spread, took)
	if spread < 500*time.Millisecond {
		t.Fatalf("%d closes within %v of each other: not spread over the 1 s drain window", clients, spread)
	}
}

// TestDrainProcessSIGTERM: `gateway serve --drain-window 2s` with 200
// sessions exits 0 within 20 s of SIGTERM; every session gets 1001.
func TestDrainProcessSIGTERM(t *testing.T) {
	t.Parallel()
	const clients = 200
	env := e2eEnv("GATEWAY_SECRET=" + testSecret)
	keys := faultKeys(t)
	p := e2eServe(t, env, "--data-dir", t.TempDir(), "--drain-window", "2s")
	conns := drainConnectAll(t, p.ws, clients, func(i int) []byte {
		raw, _, err := keys.Issue(fmt.Sprintf("user%d", i), time.Hour, time.Now())
		if err != nil {
			panic(err)
		}
		return raw
	})
	results, wait := drainWatch(conns)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if code := p.e2eWaitExit(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr.String())
	}
	took := time.Since(start)
	wait()
	spread := drainCheck(t, results)
	t.Logf("%d sessions closed with 1001, first to last %v; exit 0 after %v", clients, spread, took)
}
