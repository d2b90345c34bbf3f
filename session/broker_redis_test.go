package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

// fakeBrokerHandler records a broker's calls.
type fakeBrokerHandler struct {
	mu         sync.Mutex
	delivered  []brokerDelivery
	live       []string
	reconnects int
	events     []string // "live:C", "reconnected", in call order
}

type brokerDelivery struct {
	channel string
	payload []byte
}

func (f *fakeBrokerHandler) Deliver(channel string, payload []byte) {
	f.mu.Lock()
	f.delivered = append(f.delivered, brokerDelivery{channel, payload})
	f.mu.Unlock()
}

func (f *fakeBrokerHandler) Live(channel string) {
	f.mu.Lock()
	f.live = append(f.live, channel)
	f.events = append(f.events, "live:"+channel)
	f.mu.Unlock()
}

func (f *fakeBrokerHandler) Reconnected() {
	f.mu.Lock()
	f.reconnects++
	f.events = append(f.events, "reconnected")
	f.mu.Unlock()
}

// mark records a test step among the handler's events.
func (f *fakeBrokerHandler) mark(step string) {
	f.mu.Lock()
	f.events = append(f.events, "mark:"+step)
	f.mu.Unlock()
}

// eventsAfter returns the events recorded after the mark of step.
func (f *fakeBrokerHandler) eventsAfter(step string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.events {
		if e == "mark:"+step {
			return append([]string(nil), f.events[i+1:]...)
		}
	}
	return nil
}

func (f *fakeBrokerHandler) liveCount(channel string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.live {
		if c == channel {
			n++
		}
	}
	return n
}

func (f *fakeBrokerHandler) reconnectCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reconnects
}

// payloads returns copies of the payloads delivered on channel, in order.
func (f *fakeBrokerHandler) payloads(channel string) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]byte
	for _, d := range f.delivered {
		if d.channel == channel {
			out = append(out, d.payload)
		}
	}
	return out
}

func (f *fakeBrokerHandler) deliveredCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.delivered)
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testPrefix gives a test names of its own, for when tests share a Redis
// (REDIS_URL). TestRedisBrokerOutsidePublisherAndLag alone among the tests
// uses the default prefix.
func testPrefix(t testing.TB) string { return "test:" + t.Name() + ":" }

func newRedisClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startBroker starts a broker on its own client to addr with handler h.
func startBroker(t testing.TB, addr string, o RedisBrokerOptions, h BrokerHandler) *RedisBroker {
	t.Helper()
	if o.Client == nil {
		o.Client = newRedisClient(t, addr)
	}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	b := NewRedisBroker(o)
	if err := b.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func numSub(t testing.TB, c *redis.Client, name string) int64 {
	t.Helper()
	m, err := c.PubSubNumSub(context.Background(), name).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m[name]
}

var _ Broker = (*RedisBroker)(nil)

func TestRedisBrokerTwoNodes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	ha, hb := &fakeBrokerHandler{}, &fakeBrokerHandler{}
	a := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'A'}}, ha)
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'B'}}, hb)
	a.Subscribe("room") // A must skip its own publishes coming back from Redis
	b.Subscribe("room")
	waitFor(t, 5*time.Second, "Live(room) on A and B", func() bool {
		return ha.liveCount("room") == 1 && hb.liveCount("room") == 1
	})

	const n = 1000
	want := make([][]byte, n)
	for i := range want {
		want[i] = fmt.Appendf(nil, `{"seq":%d}`, i)
	}
	want[0] = []byte{0x00, 'G', 0x01, 'A', 0, 0, 0, 0, 0, 0, 0} // looks like an envelope itself
	want[1] = []byte{}
	for _, p := range want {
		buf := append([]byte(nil), p...)
		if err := a.Publish("room", buf); err != nil {
			t.Fatal(err)
		}
		clear(buf) // Publish must not retain the caller's slice
	}
	waitFor(t, 10*time.Second, "1000 deliveries on B", func() bool { return len(hb.payloads("room")) >= n })
	got := hb.payloads("room")
	if len(got) != n {
		t.Fatalf("B got %d payloads, want %d", len(got), n)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("payload %d: got %q, want %q", i, got[i], want[i])
		}
	}
	// A's own publishes have come back to A by now (B saw them all, and A
	// subscribed first); none may be delivered.
	b.Publish("room", []byte("from-b"))
	waitFor(t, 5*time.Second, "B's publish on A", func() bool { return ha.deliveredCount() == 1 })
	if got := ha.payloads("room"); len(got) != 1 || string(got[0]) != "from-b" {
		t.Fatalf("A delivered %q, want only B's publish", got)
	}
	sa, sb := a.Stats(), b.Stats()
	if sa.Published != n || sa.PublishErrors != 0 || sa.Dropped != 0 {
		t.Fatalf("A stats %+v", sa)
	}
	if sb.Received != n || sb.Lag <= 0 {
		t.Fatalf("B stats %+v", sb)
	}
	if sa.Received != 1 {
		t.Fatalf("A stats %+v", sa)
	}
	if ha.reconnectCount()+hb.reconnectCount() != 0 || sa.Reconnects+sb.Reconnects != 0 {
		t.Fatal("spurious Reconnected")
	}
}

func TestRedisBrokerOutsidePublisherAndLag(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	hb := &fakeBrokerHandler{}
	var lagMu sync.Mutex
	var lags []float64
	b := startBroker(t, srv.Addr, RedisBrokerOptions{OnLag: func(s float64) {
		lagMu.Lock()
		lags = append(lags, s)
		lagMu.Unlock()
	}}, hb)
	b.Subscribe("room")
	waitFor(t, 5*time.Second, "Live(room)", func() bool { return hb.liveCount("room") == 1 })
	c := newRedisClient(t, srv.Addr)
	ctx := context.Background()
	if err := c.Publish(ctx, "gateway:ch:room", `{"x":1}`).Err(); err != nil {
		t.Fatal(err)
	}
	// A truncated envelope and one of an unknown version are dropped.
	if err := c.Publish(ctx, "gateway:ch:room", "\x00G\x01short").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "gateway:ch:room", "\x00G\x02xxxxxxxxxxxxxxxxxxxxxxxxx").Err(); err != nil {
		t.Fatal(err)
	}
	a := startBroker(t, srv.Addr, RedisBrokerOptions{}, &fakeBrokerHandler{})
	if err := a.Publish("room", []byte("enveloped")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 deliveries", func() bool { return len(hb.payloads("room")) == 2 })
	got := hb.payloads("room")
	if string(got[0]) != `{"x":1}` || string(got[1]) != "enveloped" {
		t.Fatalf("got %q", got)
	}
	st := b.Stats()
	if st.Malformed != 2 || st.Received != 2 {
		t.Fatalf("stats %+v", st)
	}
	lagMu.Lock()
	defer lagMu.Unlock()
	if len(lags) != 1 || lags[0] < 0 || lags[0] > 5 {
		t.Fatalf("lags %v, want one sane value (raw payloads have no lag)", lags)
	}
}

func TestRedisBrokerUnsubscribe(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	hb := &fakeBrokerHandler{}
	a := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, &fakeBrokerHandler{})
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, hb)
	c := newRedisClient(t, srv.Addr)
	b.Subscribe("room")
	b.Subscribe("marker")
	waitFor(t, 5*time.Second, "Live", func() bool { return hb.liveCount("room") == 1 && hb.liveCount("marker") == 1 })
	a.Publish("room", []byte("before"))
	waitFor(t, 5*time.Second, "delivery before unsubscribe", func() bool { return len(hb.payloads("room")) == 1 })

	b.Unsubscribe("room")
	a.Publish("room", []byte("after")) // may still reach B's connection: must not be delivered
	a.Publish("marker", []byte("m1"))
	waitFor(t, 5*time.Second, "marker", func() bool { return len(hb.payloads("marker")) == 1 })
	if got := hb.payloads("room"); len(got) != 1 {
		t.Fatalf("room deliveries after Unsubscribe: %q", got)
	}
	// And Redis itself dropped the subscription.
	waitFor(t, 5*time.Second, "UNSUBSCRIBE in Redis", func() bool { return numSub(t, c, pfx+"ch:room") == 0 })
	a.Publish("room", []byte("later"))
	a.Publish("marker", []byte("m2"))
	waitFor(t, 5*time.Second, "marker 2", func() bool { return len(hb.payloads("marker")) == 2 })
	if got := hb.payloads("room"); len(got) != 1 {
		t.Fatalf("room deliveries after Unsubscribe: %q", got)
	}
}

func TestRedisBrokerPrefixIsolation(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	h1, h2 := &fakeBrokerHandler{}, &fakeBrokerHandler{}
	a1 := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx + "one:"}, &fakeBrokerHandler{})
	b1 := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx + "one:"}, h1)
	a2 := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx + "two:"}, &fakeBrokerHandler{})
	b2 := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx + "two:"}, h2)
	b1.Subscribe("room")
	b2.Subscribe("room")
	waitFor(t, 5*time.Second, "Live", func() bool { return h1.liveCount("room") == 1 && h2.liveCount("room") == 1 })
	a1.Publish("room", []byte("for-one"))
	waitFor(t, 5*time.Second, "b1 delivery", func() bool { return len(h1.payloads("room")) == 1 })
	a2.Publish("room", []byte("for-two"))
	waitFor(t, 5*time.Second, "b2 delivery", func() bool { return len(h2.payloads("room")) == 1 })
	if got := h2.payloads("room"); string(got[0]) != "for-two" {
		t.Fatalf("b2 got %q", got)
	}
	if got := h1.payloads("room"); len(got) != 1 || string(got[0]) != "for-one" {
		t.Fatalf("b1 got %q", got)
	}
}

func TestRedisBrokerSubscribeUnsubscribeSubscribe(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	hb := &fakeBrokerHandler{}
	a := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, &fakeBrokerHandler{})
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, hb)
	c := newRedisClient(t, srv.Addr)

	// Usually all five calls make one round and the first Subscribes get
	// no Live at all; under load a round trip may fit between two calls and
	// give the first Subscribe its Live before the Unsubscribe. Either way
	// no Live may follow an Unsubscribe, and the last Subscribe gets one.
	b.Subscribe("gone")
	b.Unsubscribe("gone")
	hb.mark("unsubscribed gone")
	b.Subscribe("r")
	b.Unsubscribe("r")
	hb.mark("unsubscribed r")
	b.Subscribe("r")
	waitFor(t, 5*time.Second, "Live(r) for the last Subscribe", func() bool {
		return slices.Contains(hb.eventsAfter("unsubscribed r"), "live:r")
	})
	if ev := hb.eventsAfter("unsubscribed gone"); slices.Contains(ev, "live:gone") {
		t.Fatalf("Live(gone) after Unsubscribe(gone): %q", ev)
	}
	if n := hb.liveCount("r"); n > 2 {
		t.Fatalf("Live(r) called %d times", n)
	}
	if n := numSub(t, c, pfx+"ch:r"); n != 1 {
		t.Fatalf("NUMSUB r = %d, want 1", n)
	}
	if n := numSub(t, c, pfx+"ch:gone"); n != 0 {
		t.Fatalf("NUMSUB gone = %d, want 0", n)
	}
	a.Publish("r", []byte("x"))
	waitFor(t, 5*time.Second, "delivery", func() bool { return len(hb.payloads("r")) == 1 })

	// Flip a live channel many times in a row; it must end live, with the
	// last Live after the last Subscribe.
	for range 50 {
		b.Unsubscribe("r")
		b.Subscribe("r")
		runtime.Gosched()
	}
	b.Unsubscribe("r")
	hb.mark("flipped r")
	b.Subscribe("r")
	waitFor(t, 5*time.Second, "Live(r) after flips", func() bool {
		return slices.Contains(hb.eventsAfter("flipped r"), "live:r")
	})
	a.Publish("r", []byte("y"))
	waitFor(t, 5*time.Second, "delivery after flips", func() bool { return len(hb.payloads("r")) == 2 })
	if n := numSub(t, c, pfx+"ch:r"); n != 1 {
		t.Fatalf("NUMSUB r = %d, want 1", n)
	}
	if n := hb.reconnectCount(); n != 0 {
		t.Fatalf("spurious Reconnected: %d", n)
	}
}

// lockingHandler takes, in Live and Deliver, the lock its owner holds
// around Subscribe and Unsubscribe, as the hub does.
type lockingHandler struct {
	fakeBrokerHandler
	hubMu *sync.Mutex
}

func (l *lockingHandler) Live(channel string) {
	l.hubMu.Lock()
	defer l.hubMu.Unlock()
	l.fakeBrokerHandler.Live(channel)
}

func (l *lockingHandler) Deliver(channel string, payload []byte) {
	l.hubMu.Lock()
	defer l.hubMu.Unlock()
	l.fakeBrokerHandler.Deliver(channel, payload)
}

func TestRedisBrokerHubLockOrder(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	var hubMu sync.Mutex
	h := &lockingHandler{hubMu: &hubMu}
	a := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, &fakeBrokerHandler{})
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			ch := fmt.Sprint("c", i%20)
			hubMu.Lock()
			if i/20%2 == 0 {
				b.Subscribe(ch)
			} else {
				b.Unsubscribe(ch)
			}
			hubMu.Unlock()
			a.Publish(ch, []byte("x"))
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock between the broker and a hub-like handler")
	}
	// 2000 = 50 passes over 20 channels, ending with an Unsubscribe pass:
	// subscribe them all once more and wait for every Live.
	hubMu.Lock()
	for i := range 20 {
		b.Subscribe(fmt.Sprint("c", i))
	}
	h.mark("final") // before any Live of these: Live needs hubMu
	hubMu.Unlock()
	waitFor(t, 5*time.Second, "final Lives", func() bool {
		n := 0
		for _, e := range h.eventsAfter("final") {
			if strings.HasPrefix(e, "live:") {
				n++
			}
		}
		return n == 20
	})
}

// blockingDialer dials addr only once release is closed.
func blockingDialer(addr string, release <-chan struct{}) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		select {
		case <-release:
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func TestRedisBrokerQueueFull(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	release := make(chan struct{})
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, Dialer: blockingDialer(srv.Addr, release)})
	t.Cleanup(func() { _ = client.Close() })
	b := NewRedisBroker(RedisBrokerOptions{Client: client, Prefix: testPrefix(t), QueueSize: 4, Logger: testLogger(t)})
	if err := b.Start(&fakeBrokerHandler{}); err != nil {
		t.Fatal(err)
	}
	var ok, busy uint64
	for range 100 {
		switch err := b.Publish("room", []byte("p")); {
		case err == nil:
			ok++
		case errors.Is(err, ErrBrokerBusy):
			busy++
		default:
			t.Fatal(err)
		}
	}
	// The publisher holds at most one batch while stuck dialling; the queue
	// holds 4 more.
	if busy == 0 || ok < 4 || ok > 4+redisPublishBatch {
		t.Fatalf("ok=%d busy=%d", ok, busy)
	}
	// The publisher may take the queued ones into its batch at any moment,
	// so only what is still queued plus one batch must account for ok.
	if st := b.Stats(); st.Dropped != busy || st.QueueLen > 4 || ok-uint64(st.QueueLen) > redisPublishBatch {
		t.Fatalf("stats %+v with ok=%d, want Dropped=%d QueueLen<=4 and at most one batch held", st, ok, busy)
	}
	// Once Redis answers, everything accepted is sent.
	close(release)
	waitFor(t, 10*time.Second, "queued publishes sent", func() bool { return b.Stats().Published == ok })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := b.Publish("room", nil); !errors.Is(err, ErrBrokerBusy) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

func TestRedisBrokerPublishWhileDown(t *testing.T) {
	t.Parallel()
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("needs a port with no Redis")
	}
	srv := redistest.Start(t) // for a free port only
	srv.Stop()
	// Fail fast: no command retries, one dial attempt.
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = client.Close() })
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Client: client, Prefix: testPrefix(t), QueueSize: 16}, &fakeBrokerHandler{})
	if err := b.Publish("room", []byte("p")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "publish error", func() bool { return b.Stats().PublishErrors == 1 })
	// Now the publisher drops without trying Redis: the tiny queue keeps
	// draining and Publish keeps accepting.
	for i := range 1000 {
		for {
			err := b.Publish("room", []byte("p"))
			if err == nil {
				break
			}
			if !errors.Is(err, ErrBrokerBusy) {
				t.Fatal(err)
			}
			if i > 100 && b.Stats().Dropped > 100 {
				t.Fatalf("queue does not drain while Redis is down: %+v", b.Stats())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(t, 5*time.Second, "all counted", func() bool {
		st := b.Stats()
		return st.PublishErrors == 1001 && st.Published == 0
	})
}

func TestRedisBrokerRestart(t *testing.T) {
	t.Parallel()
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("needs a redis-server of its own to restart")
	}
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	hb := &fakeBrokerHandler{}
	a := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, &fakeBrokerHandler{})
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx}, hb)
	chans := []string{"room", "r2", "r3"}
	for _, ch := range chans {
		b.Subscribe(ch)
	}
	waitFor(t, 5*time.Second, "Live", func() bool {
		return hb.liveCount("room") == 1 && hb.liveCount("r2") == 1 && hb.liveCount("r3") == 1
	})
	a.Publish("room", []byte("before"))
	waitFor(t, 5*time.Second, "delivery before restart", func() bool { return len(hb.payloads("room")) == 1 })

	srv.Restart(t)
	waitFor(t, 15*time.Second, "Reconnected", func() bool { return hb.reconnectCount() >= 1 })
	deadline := time.Now().Add(15 * time.Second)
	for len(hb.payloads("room")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery after restart; stats A %+v B %+v", a.Stats(), b.Stats())
		}
		a.Publish("room", []byte("after"))
		time.Sleep(100 * time.Millisecond)
	}
	if got := hb.payloads("room"); string(got[1]) != "after" {
		t.Fatalf("got %q", got)
	}
	if n := hb.reconnectCount(); n != 1 {
		t.Fatalf("Reconnected called %d times, want 1", n)
	}
	if st := b.Stats(); st.Reconnects != 1 {
		t.Fatalf("stats %+v", st)
	}
	for _, ch := range chans {
		if n := hb.liveCount(ch); n != 1 {
			t.Fatalf("Live(%s) called %d times, want 1", ch, n)
		}
	}
}

func TestRedisBrokerStartsWithoutRedis(t *testing.T) {
	t.Parallel()
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("needs to start a redis-server of its own")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server")
	}
	srv := redistest.Start(t) // for a free port only
	srv.Stop()
	_, port, _ := net.SplitHostPort(srv.Addr)

	hb := &fakeBrokerHandler{}
	b := startBroker(t, srv.Addr, RedisBrokerOptions{}, hb)
	b.Subscribe("room")
	if err := b.Publish("room", []byte("lost")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := hb.liveCount("room"); n != 0 {
		t.Fatalf("Live without Redis")
	}

	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 10*time.Second, "Live(room) once Redis is up", func() bool { return hb.liveCount("room") == 1 })

	a := startBroker(t, srv.Addr, RedisBrokerOptions{}, &fakeBrokerHandler{})
	a.Publish("room", []byte("hello"))
	waitFor(t, 5*time.Second, "delivery", func() bool { return len(hb.payloads("room")) == 1 })
	waitFor(t, 5*time.Second, "publish error counted", func() bool {
		st := b.Stats()
		return st.PublishErrors+st.Published == 1
	})
	if n := hb.reconnectCount(); n != 0 {
		t.Fatalf("Reconnected %d times; there was no subscription to lose", n)
	}
}

func BenchmarkRedisBrokerPublish(bm *testing.B) {
	srv := redistest.Start(bm)
	b := startBroker(bm, srv.Addr, RedisBrokerOptions{Logger: testLogger(bm)}, &fakeBrokerHandler{})
	payload := bytes.Repeat([]byte("x"), 128)
	bm.ReportAllocs()
	bm.SetBytes(int64(len(payload)))
	start := b.Stats().Published
	var accepted uint64
	bm.ResetTimer()
	for range bm.N {
		for b.Publish("room", payload) != nil {
			runtime.Gosched()
		}
		accepted++
	}
	// Include the time to get everything accepted to Redis.
	for {
		st := b.Stats()
		if st.Published+st.PublishErrors-start >= accepted {
			if st.PublishErrors != 0 {
				bm.Fatalf("stats %+v", st)
			}
			break
		}
		runtime.Gosched()
	}
}

// wsifyLikeNames maps "#w:<n>" to the raw Redis name pfx+n and everything
// else to the default <pfx>ch:<c>, as wsify.RedisChannelName does.
func wsifyLikeNames(pfx string) func(string) string {
	return func(c string) string {
		if n, ok := strings.CutPrefix(c, "#w:"); ok {
			return pfx + n
		}
		return pfx + "ch:" + c
	}
}

func TestRedisBrokerChannelName(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	ha, hb := &fakeBrokerHandler{}, &fakeBrokerHandler{}
	names := wsifyLikeNames(pfx)
	a := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'A'}, ChannelName: names}, ha)
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'B'}, ChannelName: names}, hb)
	c := newRedisClient(t, srv.Addr)
	ctx := context.Background()

	b.Subscribe("#w:hello")
	b.Subscribe("marker")
	waitFor(t, 5*time.Second, "Live", func() bool { return hb.liveCount("#w:hello") == 1 && hb.liveCount("marker") == 1 })
	if n := numSub(t, c, pfx+"hello"); n != 1 {
		t.Fatalf("subscribers of the raw name %q: %d, want 1", pfx+"hello", n)
	}
	if n := numSub(t, c, pfx+"ch:#w:hello"); n != 0 {
		t.Fatalf("the default name is subscribed too (%d)", n)
	}
	if n := numSub(t, c, pfx+"ch:marker"); n != 1 {
		t.Fatalf("unmapped channel: %d subscribers of the default name, want 1", n)
	}

	// An outside publisher on the raw name reaches the hub channel, verbatim.
	if err := c.Publish(ctx, pfx+"hello", `{"x":1}`).Err(); err != nil {
		t.Fatal(err)
	}
	// Another node's publish travels on the raw name too, in its envelope.
	if err := a.Publish("#w:hello", []byte("from-a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 deliveries", func() bool { return len(hb.payloads("#w:hello")) == 2 })
	got := hb.payloads("#w:hello")
	if string(got[0]) != `{"x":1}` || string(got[1]) != "from-a" {
		t.Fatalf("got %q", got)
	}
	// A message on the default name of the mapped channel is not theirs.
	if err := c.Publish(ctx, pfx+"ch:#w:hello", "wrong name").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish("marker", []byte("m1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "marker", func() bool { return len(hb.payloads("marker")) == 1 })
	if got := hb.payloads("#w:hello"); len(got) != 2 {
		t.Fatalf("deliveries: %q", got)
	}

	// Unsubscribe stops it, at once and in Redis.
	b.Unsubscribe("#w:hello")
	if err := c.Publish(ctx, pfx+"hello", `{"x":2}`).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "UNSUBSCRIBE in Redis", func() bool { return numSub(t, c, pfx+"hello") == 0 })
	if err := c.Publish(ctx, pfx+"hello", `{"x":3}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish("marker", []byte("m2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "marker 2", func() bool { return len(hb.payloads("marker")) == 2 })
	if got := hb.payloads("#w:hello"); len(got) != 2 {
		t.Fatalf("deliveries after Unsubscribe: %q", got)
	}
	if ha.deliveredCount() != 0 {
		t.Fatal("A delivered something it never subscribed to")
	}
}

// TestReaderCountsOneReconnectPerReconnect feeds the reader the replies of
// a reconnect during which a channel was subscribed: go-redis resubscribes
// every channel on the new connection, and the new channel's own SUBSCRIBE
// comes too. That is one reconnect, and later subscribes are none.
func TestReaderCountsOneReconnectPerReconnect(t *testing.T) {
	ch := make(chan any, 16)
	h := &fakeBrokerHandler{}
	b := &RedisBroker{psCh: ch, stop: make(chan struct{}), h: h, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sub := func(channel string, count int) {
		ch <- &redis.Subscription{Kind: "subscribe", Channel: channel, Count: count}
	}
	sub("a", 1)
	sub("b", 2)
	sub("c", 3)
	// The reconnect: a, b, c and d again, then d's own SUBSCRIBE.
	sub("a", 1)
	sub("b", 2)
	sub("c", 3)
	sub("d", 4)
	sub("d", 4)
	sub("e", 5)
	ch <- &redis.Subscription{Kind: "unsubscribe", Channel: "e", Count: 4}
	sub("e", 5)
	close(ch)
	b.wg.Add(1)
	b.runReader()
	if n := h.reconnectCount(); n != 1 || b.reconnects.Load() != 1 {
		t.Fatalf("reconnects %d (stats %d), want 1", n, b.reconnects.Load())
	}
}
