package test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
)

// Issue 10 item 1: a publish that is not valid UTF-8 on a wsify channel,
// in the same batch of loop tasks as valid ones, once panicked the loop
// and took the whole node down. Now it is dropped and counted, the valid
// ones arrive in order, and nothing panics.

// bpJoined joins channel on a wsify socket of n and waits until a marker
// that publish sends arrives, so the join is in place (wsify acknowledges
// nothing).
func bpJoined(t *testing.T, n *node.Node, channel string, publish func(marker string)) *websocket.Conn {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		c := dialText(t, "ws://"+n.WsifyAddr().String()+"/ws")
		writeText(t, c, `{"command":"join","args":{"channel":"`+channel+`"}}`)
		publish(`"marker"`)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, msg, err := c.Read(ctx)
		cancel()
		if err == nil && string(msg) == `"marker"` {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the wsify join never took effect: %q %v", msg, err)
		}
	}
}

// bpAdminPublish publishes body on a hub channel through the admin API.
func bpAdminPublish(t *testing.T, n *node.Node, channel string, body []byte) {
	status, b, _ := e2eDo(t, http.MethodPost, adminURL(n)+"/api/publish?channel="+url.QueryEscape(channel), "application/octet-stream", body)
	if status != http.StatusOK {
		t.Errorf("admin publish: %d %s", status, b)
	}
}

// bpExpect reads exactly want, in order, from a wsify socket.
func bpExpect(t *testing.T, c *websocket.Conn, want []string) {
	t.Helper()
	for i, w := range want {
		if got := readText(t, c); got != w {
			t.Fatalf("message %d = %q, want %q", i, got, w)
		}
	}
}

func bpCheckCounters(t *testing.T, n *node.Node, minDropped int) {
	t.Helper()
	samples, _ := e2eScrape(t, n)
	if p := samples["gateway_handler_panics_total"]; p != "0" {
		t.Fatalf("gateway_handler_panics_total = %s, want 0", p)
	}
	got := samples[`gateway_dropped_messages_total{protocol="wsify",reason="invalid_utf8"}`]
	if d, err := strconv.Atoi(got); err != nil || d < minDropped {
		t.Fatalf("dropped invalid_utf8 = %q, want at least %d", got, minDropped)
	}
}

func TestBadPublishStormStandalone(t *testing.T) {
	t.Parallel()
	n := protoNode(t, nil)
	c := bpJoined(t, n, "news", func(m string) { bpAdminPublish(t, n, "#wsify:news", []byte(m)) })
	other := connect(t, n, "bystander") // a native session on the same node

	const rounds = 20
	var wg sync.WaitGroup
	for i := range 2 * rounds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte(`"ok"`)
			if i%2 == 1 {
				body = []byte("\xff\xfe")
			}
			bpAdminPublish(t, n, "#wsify:news", body)
		}()
	}
	wg.Wait()
	want := make([]string, rounds)
	for i := range want {
		want[i] = `"ok"`
	}
	bpExpect(t, c, want)
	e2ePing(t, other)
	bpCheckCounters(t, n, rounds)
}

func TestBadPublishStormRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	n := protoNode(t, srv)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	c := bpJoined(t, n, "news", func(m string) {
		if err := rc.Publish(testCtx(t), "news", m).Err(); err != nil {
			t.Fatal(err)
		}
	})
	other := connect(t, n, "bystander")
	const rounds = 5
	for range rounds {
		_, err := rc.TxPipelined(testCtx(t), func(p redis.Pipeliner) error {
			p.Publish(testCtx(t), "news", `"ok"`)
			p.Publish(testCtx(t), "news", "\xff\xfe")
			p.Publish(testCtx(t), "news", `"after"`)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for range rounds {
		want = append(want, `"ok"`, `"after"`)
	}
	bpExpect(t, c, want)
	e2ePing(t, other)
	bpCheckCounters(t, n, rounds)
}
