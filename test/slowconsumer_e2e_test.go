package test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// scDialSmallWindow connects with a 4 KiB receive buffer, set before the
// connection so the window is small from the start: a client that does not
// read fills the server's side soon.
func scDialSmallWindow(t testing.TB, n *node.Node) *websocket.Conn {
	t.Helper()
	d := net.Dialer{Timeout: waitFor, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	ctx := testCtx(t)
	c, _, err := websocket.Dial(ctx, wsURL(n), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != string(packet.Hello) {
		t.Fatalf("hello: % x %v", msg, err)
	}
	send(t, c, packet.AppendAuth(nil, packet.Version, issueKey(t, n, "slow", time.Hour)))
	if p := readOne(t, c); p.ID != packet.PacketPong {
		t.Fatalf("after auth: %s", describe(p))
	}
	return c
}

// TestSlowConsumersBesideFastReaders: 100 subscribers that never read and
// 3 that read at full speed share a channel a publisher sends 1 MB/s to.
// The slow ones are closed with 1008 once their budget is full; the fast
// ones get every message, in order, without waiting on the slow ones.
func TestSlowConsumersBesideFastReaders(t *testing.T) {
	const (
		slowN, fastN = 100, 3
		msgs, size   = 500, 1000 // 100 KB/s for 5 s
		every        = 10 * time.Millisecond
		budget       = 256 << 10
	)
	n := startNode(t, func(c *node.Config) { c.MaxOutbound, c.SocketSendBuffer = budget, 16<<10 })
	slow := make([]*websocket.Conn, slowN)
	for i := range slow {
		slow[i] = scDialSmallWindow(t, n)
		subscribe(t, slow[i], "feed")
	}
	fast := make([]*websocket.Conn, fastN)
	for i := range fast {
		fast[i] = connect(t, n, fmt.Sprint("fast", i))
		subscribe(t, fast[i], "feed")
	}
	pub := connect(t, n, "publisher")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var worst atomic.Int64 // the longest publish-to-delivery delay, in ns
	errs := make(chan error, fastN)
	for _, c := range fast {
		go func() { errs <- scReadAll(ctx, c, msgs, &worst) }()
	}
	// Each slow one, once closed, has only the close grace (1 to 2 s) to
	// read what was queued for it and the close frame after it: they all
	// start reading as soon as the node counts them all closed.
	var wg sync.WaitGroup
	codes := make([]error, slowN)
	started := make(chan struct{})
	go func() {
		defer close(started)
		for limScrapeValue(t, n, "gateway_slow_consumer_disconnects_total") < slowN && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		for i, c := range slow {
			wg.Go(func() { codes[i] = scExpectClose(ctx, c, websocket.StatusPolicyViolation) })
		}
	}()
	payload := make([]byte, size)
	start := time.Now()
	for i := range msgs {
		for time.Since(start) < time.Duration(i)*every {
			time.Sleep(200 * time.Microsecond)
		}
		binary.BigEndian.PutUint32(payload, uint32(i))
		binary.BigEndian.PutUint64(payload[4:], uint64(time.Now().UnixNano()))
		if err := pub.Write(ctx, websocket.MessageBinary, packet.AppendPublish(nil, "feed", payload)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for range fast {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("fast readers: all %d messages each; the longest publish-to-delivery delay %v", msgs, time.Duration(worst.Load()))

	if v := limScrapeValue(t, n, "gateway_slow_consumer_disconnects_total"); v != slowN {
		t.Fatalf("gateway_slow_consumer_disconnects_total = %v, want %d", v, slowN)
	}
	<-started
	wg.Wait()
	for i, err := range codes {
		if err != nil {
			t.Errorf("slow subscriber %d: %v", i, err)
		}
	}
}

// scReadAll reads the channel's messages 0..msgs-1 in order, noting the
// longest delay from publish to delivery.
func scReadAll(ctx context.Context, c *websocket.Conn, msgs int, worst *atomic.Int64) error {
	next := 0
	for next < msgs {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("fast reader: %v after %d of %d messages", err, next, msgs)
		}
		d := packet.NewClientDecoder(msg)
		for {
			var p packet.ServerPacket
			ok, err := d.Next(&p)
			if err != nil || !ok {
				break
			}
			if p.ID != packet.PacketMessage || len(p.Payload) < 12 {
				return fmt.Errorf("fast reader: unexpected %s", describe(p))
			}
			if got := int(binary.BigEndian.Uint32(p.Payload)); got != next {
				return fmt.Errorf("fast reader: message %d, want %d", got, next)
			}
			delay := time.Now().UnixNano() - int64(binary.BigEndian.Uint64(p.Payload[4:]))
			for w := worst.Load(); delay > w && !worst.CompareAndSwap(w, delay); w = worst.Load() {
			}
			next++
		}
	}
	return nil
}

// scExpectClose reads until the close frame and checks its code.
func scExpectClose(ctx context.Context, c *websocket.Conn, code websocket.StatusCode) error {
	c.SetReadLimit(1 << 20)
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			return fmt.Errorf("ended without a close frame: %v", err)
		}
		if ce.Code != code {
			return fmt.Errorf("closed with %d %q, want %d", ce.Code, ce.Reason, code)
		}
		return nil
	}
}
