package test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// memRSS returns a process's resident set in bytes (/proc/<pid>/status).
func memRSS(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMemoryBackAfterBurst: a `gateway serve` with 2,000 subscribers that
// stop reading during a burst (about 100 KiB queued for each) gives the
// memory back once they read it: within 60 s its RSS is within twice the
// idle figure for the same connections.
func TestMemoryBackAfterBurst(t *testing.T) {
	const conns, msgs, size = 2000, 10, 10 << 10
	p := e2eServe(t, e2eEnv("GATEWAY_SECRET="+testSecret), "--data-dir", t.TempDir(),
		"--event-loops", "2", "--socket-send-buffer", "16384")
	secrets, err := token.ParseSecrets(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := secrets.Issue("burst", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(p.ws, "ws://"), "/api/ws")
	subscribeMsg := append(rtMsg(packet.AppendAuth(nil, packet.Version, key)), rtMsg(packet.AppendSubscribe(nil, "burst"))...)
	clients := make([]net.Conn, conns)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	sem := make(chan struct{}, 100)
	for i := range clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := memSubscribe(addr, subscribeMsg)
			clients[i] = c
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	})
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	time.Sleep(2 * time.Second) // settle
	idle := memRSS(t, p.cmd.Process.Pid)

	// The burst: nobody reads while it is published.
	body := bytes.Repeat([]byte{'b'}, size)
	for range msgs {
		resp, err := http.Post(p.admin+"/api/publish?channel=burst", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %d", resp.StatusCode)
		}
	}
	time.Sleep(time.Second)
	peak := memRSS(t, p.cmd.Process.Pid)
	// Then everybody reads what was queued for them.
	want := int64(msgs * size)
	for _, c := range clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			n, _ := io.CopyN(io.Discard, c, want) // frames and packet headers make it a little more
			if n < want {
				errs <- fmt.Errorf("a subscriber read %d bytes of the burst, want at least %d", n, want)
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	start := time.Now()
	var rss int64
	for time.Since(start) < 60*time.Second {
		if rss = memRSS(t, p.cmd.Process.Pid); rss <= 2*idle {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("%d connections: RSS idle %.1f MiB, after the burst %.1f MiB, %.1f MiB %v after the burst was read",
		conns, float64(idle)/(1<<20), float64(peak)/(1<<20), float64(rss)/(1<<20), time.Since(start).Round(time.Second))
	if peak < idle+int64(conns)*size { // the burst must have been held, or the test shows nothing
		t.Fatalf("RSS in the burst %d is not above idle %d by the data held: the burst did not pile up", peak, idle)
	}
	if rss > 2*idle {
		t.Fatalf("RSS %d is still above twice the idle %d 60 s after the burst", rss, idle)
	}
}

// memSubscribe connects with a small receive buffer, upgrades,
// authenticates and subscribes, and reads up to the Subscribed.
func memSubscribe(addr string, authAndSubscribe []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: waitFor, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	head := "GET /api/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(head), authAndSubscribe...)); err != nil {
		return c, err
	}
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		return c, fmt.Errorf("upgrade: %v %v", resp, err)
	}
	// hello, Pong, Subscribed: three small frames.
	want := []byte{packet.PacketSubscribed}
	for range 3 {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return c, err
		}
		f := make([]byte, h[1]&0x7f)
		if _, err := io.ReadFull(br, f); err != nil {
			return c, err
		}
		want = f
	}
	if len(want) == 0 || want[0] != packet.PacketSubscribed || br.Buffered() > 0 {
		return c, fmt.Errorf("after subscribe got % x", want)
	}
	return c, nil
}
