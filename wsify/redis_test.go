package wsify

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/session"
)

func TestRedisChannelName(t *testing.T) {
	// Not parallel: AllocsPerRun.
	for _, c := range []struct{ wsifyPrefix, brokerPrefix, in, want string }{
		{"", "gateway:", "#wsify:hello", "hello"},
		{"", "gateway:", "#wsify: spaced name", " spaced name"},
		{"ws:", "gateway:", "#wsify:hello", "ws:hello"},
		{"", "gateway:", "user.1", "gateway:ch:user.1"},
		{"", "", "user.1", "gateway:ch:user.1"}, // the broker's default prefix
		{"", "gateway:", "#other:x", "gateway:ch:#other:x"},
		// Names inside the broker's namespace are never used raw.
		{"", "gateway:", "#wsify:gateway:ch:user.1", "gateway:ch:#wsify:gateway:ch:user.1"},
		{"", "gateway:", "#wsify:gateway:revocations", "gateway:ch:#wsify:gateway:revocations"},
		{"", "gateway:", "#wsify:gateway:sync:1", "gateway:ch:#wsify:gateway:sync:1"},
		{"gate", "gateway:", "#wsify:way:x", "gateway:ch:#wsify:way:x"},
		{"", "gateway:", "#wsify:gateway", "gateway"},
		{"gateway:", "gateway:", "#wsify:hello", "gateway:ch:#wsify:hello"},
		{"gateway:x:", "gateway:", "#wsify:hello", "gateway:ch:#wsify:hello"},
		{"gat", "gateway:", "#wsify:eway:x", "gateway:ch:#wsify:eway:x"},
		{"gat", "gateway:", "#wsify:ewa", "gatewa"},
		{"x:", "", "#wsify:y", "x:y"},
		{"", "", "#wsify:gateway:ch:y", "gateway:ch:#wsify:gateway:ch:y"},
	} {
		if got := RedisChannelName(c.wsifyPrefix, c.brokerPrefix)(c.in); got != c.want {
			t.Errorf("RedisChannelName(%q, %q)(%q) = %q, want %q", c.wsifyPrefix, c.brokerPrefix, c.in, got, c.want)
		}
		// Raw exactly where the name is not the broker's own: only those
		// travel without the envelope.
		own := strings.HasPrefix(c.want, cmp.Or(c.brokerPrefix, "gateway:")+"ch:")
		raw := RedisChannelRaw(c.wsifyPrefix, c.brokerPrefix)
		if got := raw(c.in); got == own {
			t.Errorf("RedisChannelRaw(%q, %q)(%q) = %v for the Redis name %q", c.wsifyPrefix, c.brokerPrefix, c.in, got, c.want)
		}
		if n := testing.AllocsPerRun(10, func() { raw(c.in) }); n != 0 {
			t.Errorf("RedisChannelRaw allocates (%v)", n)
		}
	}
}

func TestWarnIfOpen(t *testing.T) {
	t.Parallel()
	open, err := New(Options{Hub: session.NewHub(nil), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	keyed, _ := New(Options{Hub: session.NewHub(nil), Logger: discard, BroadcastingKey: "k"})
	public := &net.TCPAddr{IP: net.IPv4zero, Port: 3000}
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3000}
	if !open.WarnIfOpen(public) || open.WarnIfOpen(loop) || keyed.WarnIfOpen(public) {
		t.Fatal("WarnIfOpen: want a warning only without a key on a non-loopback address")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	hub := session.NewHub(nil)
	for _, o := range []Options{
		{},
		{Hub: hub, AuthorizerURL: "localhost:8000"},
		{Hub: hub, AuthorizerURL: "ftp://x/"},
		{Hub: hub, AuthorizerTimeout: -1},
		{Hub: hub, MaxBacklog: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// redisNodes starts two gateways sharing one Redis, as a cluster.
func redisNodes(t *testing.T) (a, b *node, rc *redis.Client) {
	srv := redistest.Start(t)
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	mk := func() *session.Hub {
		c := redis.NewClient(opt)
		t.Cleanup(func() { _ = c.Close() })
		return session.NewHub(session.NewRedisBroker(session.RedisBrokerOptions{
			Client: c, Logger: discard, ChannelName: RedisChannelName("", "gateway:"),
			Raw: RedisChannelRaw("", "gateway:"),
		}))
	}
	rc = redis.NewClient(opt)
	t.Cleanup(func() { _ = rc.Close() })
	return startNode(t, Options{}, mk), startNode(t, Options{}, mk), rc
}

// waitSubscribed waits until Redis has a subscriber of the raw name.
func waitSubscribed(t *testing.T, rc *redis.Client, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := rc.PubSubNumSub(context.Background(), name).Result()
		if err != nil {
			t.Fatal(err)
		}
		if m[name] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody subscribed %q in Redis", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// redisSpy subscribes a plain go-redis client to the raw name, as an
// original wsify node or an outside consumer does.
func redisSpy(t *testing.T, rc *redis.Client, name string) <-chan *redis.Message {
	t.Helper()
	ps := rc.Subscribe(context.Background(), name)
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ps.Channel()
}

// spyExpect reads the spy's next message: exactly want, no envelope.
func spyExpect(t *testing.T, spy <-chan *redis.Message, want string) {
	t.Helper()
	select {
	case m := <-spy:
		if m.Payload != want {
			t.Fatalf("Redis carried %q, want exactly %q", m.Payload, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing on Redis, want %q", want)
	}
}

func TestRedisCluster(t *testing.T) {
	t.Parallel()
	na, nb, rc := redisNodes(t)
	ch := "hello-" + strings.ReplaceAll(t.Name(), "/", "-") // raw names: unique if REDIS_URL is shared
	spy := redisSpy(t, rc, ch)
	member := dial(t, nb.addr, "")
	member.join(ch)
	member.sync("b-only")
	waitSubscribed(t, rc, ch)

	// A WebSocket broadcast on node A reaches node B, and Redis carries
	// exactly the JSON text the members receive.
	sender := dial(t, na.addr, "")
	sender.broadcast(ch, `{"b":1,"a":"<"}`)
	member.expect(`{"a":"\u003c","b":1}`)
	spyExpect(t, spy, `{"a":"\u003c","b":1}`)

	// So does POST /broadcast on node A.
	if status, body, _ := httpDo(t, "POST", "http://"+na.addr+"/broadcast", "application/json",
		`{"channel":"`+ch+`","content":[1.0]}`); status != 201 || len(body) != 0 {
		t.Fatalf("POST /broadcast: %d %q", status, body)
	}
	member.expect(`[1]`)
	spyExpect(t, spy, `[1]`)

	// An outside publisher on the raw name: delivered verbatim.
	ctx := context.Background()
	if err := rc.Publish(ctx, ch, `{"x": 1}`).Err(); err != nil {
		t.Fatal(err)
	}
	member.expect(`{"x": 1}`)
	if err := rc.Publish(ctx, ch, `not json`).Err(); err != nil {
		t.Fatal(err)
	}
	member.expect(`not json`)

	// Not valid UTF-8: dropped and counted.
	before := counterValue(t, nb.p, "gateway_dropped_messages_total", map[string]string{"protocol": "wsify", "reason": "invalid_utf8"})
	if err := rc.Publish(ctx, ch, "\xff\xfe bad").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(ctx, ch, `"after"`).Err(); err != nil {
		t.Fatal(err)
	}
	member.expect(`"after"`)
	if got := counterValue(t, nb.p, "gateway_dropped_messages_total", map[string]string{"protocol": "wsify", "reason": "invalid_utf8"}); got != before+1 {
		t.Fatalf("dropped invalid_utf8: %v, want %v", got, before+1)
	}

	// A's own members get A's broadcasts once: the hub does not deliver
	// them locally, A takes Redis's copy like every other subscriber. The
	// sender gets its own broadcast when it has joined, as in wsify.
	local := dial(t, na.addr, "")
	local.join(ch)
	local.sync("a-only")
	waitSubscribed(t, rc, ch)
	sender.join(ch)
	sender.sync("sender-only")
	drain(spy) // the outside publishes above
	sender.broadcast(ch, `"both"`)
	for _, c := range []*client{local, member, sender} {
		c.expect(`"both"`)
	}
	spyExpect(t, spy, `"both"`)
	if status, _, _ := httpDo(t, "POST", "http://"+na.addr+"/broadcast", "application/json",
		`{"channel":"`+ch+`","content":"posted"}`); status != 201 {
		t.Fatalf("POST /broadcast: %d", status)
	}
	for _, c := range []*client{local, member, sender} {
		c.expect(`"posted"`)
	}
	spyExpect(t, spy, `"posted"`)
	local.quiet(100 * time.Millisecond)
	member.quiet(10 * time.Millisecond)
	sender.quiet(10 * time.Millisecond)
}

// drain empties a spy of what earlier steps left there.
func drain(spy <-chan *redis.Message) {
	for {
		select {
		case <-spy:
		case <-time.After(50 * time.Millisecond):
			return
		}
	}
}

// TestRedisDownBroadcast: with Redis down a broadcast reaches nobody, not
// even the members on its own node (they take every broadcast from
// Redis), so POST /broadcast waits for Redis's answer and says 503 with
// Retry-After: 1 (upstream answered 500 after go-redis's retries), at once
// once the node knows Redis is down, and a client's broadcast is dropped;
// the connection stays. When Redis is back, broadcasts flow again.
func TestRedisDownBroadcast(t *testing.T) {
	t.Parallel()
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("stops and restarts its redis-server: not with a shared REDIS_URL")
	}
	srv := redistest.Start(t)
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries, opt.DialTimeout = -1, 200*time.Millisecond
	n := startNode(t, Options{}, func() *session.Hub {
		c := redis.NewClient(opt)
		t.Cleanup(func() { _ = c.Close() })
		return session.NewHub(session.NewRedisBroker(session.RedisBrokerOptions{
			Client: c, Logger: discard, ChannelName: RedisChannelName("", ""), Raw: RedisChannelRaw("", ""),
		}))
	})
	member := dial(t, n.addr, "")
	member.sync("room")
	url := "http://" + n.addr + "/broadcast"
	post := func(content string) (int, []byte, http.Header) {
		return httpDo(t, "POST", url, "application/json", `{"channel":"room","content":`+content+`}`)
	}

	srv.Stop()
	// POST /broadcast waits for Redis's answer: the first broadcast after
	// the outage is refused once go-redis gave up, the next ones at once
	// (the node knows Redis is down). Never a 201 for a lost broadcast.
	for i := range 3 {
		start := time.Now()
		status, body, h := post(`"lost"`)
		if status != http.StatusServiceUnavailable || len(body) != 0 || h.Get("Retry-After") != "1" {
			t.Fatalf("POST /broadcast %d while Redis is down: %d %q Retry-After %q, want 503, empty, 1",
				i, status, body, h.Get("Retry-After"))
		}
		t.Logf("POST %d while Redis is down: 503 after %v", i, time.Since(start).Round(time.Millisecond))
	}
	member.broadcast("room", `"dropped"`) // refused: warned, not delivered, not fatal
	member.quiet(100 * time.Millisecond)

	srv.Restart(t)
	deadline := time.Now().Add(15 * time.Second)
	seen := map[string]bool{}
	for try := 0; ; try++ {
		m := fmt.Sprintf(`"back-%d"`, try)
		seen[m] = true
		if status, _, _ := post(m); status != http.StatusCreated && status != http.StatusServiceUnavailable {
			t.Fatalf("POST /broadcast after the restart: %d", status)
		}
		select {
		case b, ok := <-member.msgs:
			if !ok || !seen[string(b)] {
				t.Fatalf("member got %q (open %v) after the restart", b, ok)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no broadcast came through after Redis came back")
		}
	}
}
