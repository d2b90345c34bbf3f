package session

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

// rawW is the Raw of wsifyLikeNames: "#w:" channels travel raw.
func rawW(c string) bool { return strings.HasPrefix(c, "#w:") }

// outsideSub subscribes a plain go-redis client to names, as an original
// wsify node or any consumer would, and returns its message channel once
// Redis confirmed the subscription.
func outsideSub(t *testing.T, addr string, names ...string) <-chan *redis.Message {
	t.Helper()
	c := newRedisClient(t, addr)
	ps := c.Subscribe(context.Background(), names...)
	t.Cleanup(func() { _ = ps.Close() })
	for range names {
		if _, err := ps.Receive(context.Background()); err != nil { // the subscribe replies
			t.Fatal(err)
		}
	}
	return ps.Channel()
}

func nextMsg(t *testing.T, ch <-chan *redis.Message) *redis.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no Redis message within 5 s")
	}
	return nil
}

// TestRedisBrokerRawChannel: on a raw channel the Redis message is exactly
// the payload, a node's own publishes come back to it (once) since the hub
// does not deliver them locally, and whatever arrives is delivered as is,
// even bytes that look like an envelope carrying the node's own id. Other
// channels keep the envelope.
func TestRedisBrokerRawChannel(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	pfx := testPrefix(t)
	names := wsifyLikeNames(pfx)
	ha, hb := &fakeBrokerHandler{}, &fakeBrokerHandler{}
	a := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'A'}, ChannelName: names, Raw: rawW}, ha)
	b := startBroker(t, srv.Addr, RedisBrokerOptions{Prefix: pfx, NodeID: [8]byte{'B'}, ChannelName: names, Raw: rawW}, hb)
	if !a.Echoes("#w:hello") || a.Echoes("marker") || a.Echoes("#wx") {
		t.Fatal("Echoes must follow Raw")
	}
	if (&RedisBroker{}).Echoes("#w:hello") {
		t.Fatal("a broker without Raw echoes nothing")
	}
	out := outsideSub(t, srv.Addr, pfx+"hello", pfx+"ch:marker")
	for _, br := range []*RedisBroker{a, b} {
		br.Subscribe("#w:hello")
		br.Subscribe("marker")
	}
	waitFor(t, 5*time.Second, "Live", func() bool {
		return ha.liveCount("#w:hello") == 1 && hb.liveCount("#w:hello") == 1 && ha.liveCount("marker") == 1 && hb.liveCount("marker") == 1
	})

	// A's publish: exactly the JSON on Redis, once to A itself and once to B.
	payload := []byte(`{"a":"\u003c","b":[1,2]}`)
	if err := a.Publish("#w:hello", payload); err != nil {
		t.Fatal(err)
	}
	if m := nextMsg(t, out); m.Channel != pfx+"hello" || m.Payload != string(payload) {
		t.Fatalf("Redis carried %q on %q, want exactly %q", m.Payload, m.Channel, payload)
	}
	// An empty payload is a publish too.
	if err := b.Publish("#w:hello", nil); err != nil {
		t.Fatal(err)
	}
	if m := nextMsg(t, out); m.Payload != "" {
		t.Fatalf("empty publish carried %q", m.Payload)
	}
	// An outside publish that looks like an envelope, even one of A's own:
	// raw channels never parse, so it is delivered whole, to both.
	fake := "\x00G\x01A\x00\x00\x00\x00\x00\x00\x00" + "12345678" + "tail"
	rc := newRedisClient(t, srv.Addr)
	if err := rc.Publish(context.Background(), pfx+"hello", fake).Err(); err != nil {
		t.Fatal(err)
	}
	nextMsg(t, out)
	want := [][]byte{payload, {}, []byte(fake)}
	for name, h := range map[string]*fakeBrokerHandler{"A": ha, "B": hb} {
		waitFor(t, 5*time.Second, name+"'s 3 deliveries", func() bool { return len(h.payloads("#w:hello")) >= 3 })
		if got := h.payloads("#w:hello"); !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("%s delivered %q, want %q", name, got, want)
		}
	}

	// A channel that is not raw keeps the envelope, and A skips its own.
	if err := a.Publish("marker", []byte("m")); err != nil {
		t.Fatal(err)
	}
	m := nextMsg(t, out)
	if m.Channel != pfx+"ch:marker" || len(m.Payload) != envelopeHeaderLen+1 || m.Payload[:4] != "\x00G\x01A" || m.Payload[19:] != "m" {
		t.Fatalf("enveloped channel carried %q on %q", m.Payload, m.Channel)
	}
	waitFor(t, 5*time.Second, "marker on B", func() bool { return len(hb.payloads("marker")) == 1 })
	// Every raw delivery on A above was before the marker; nothing more may
	// come: the counts are final.
	if got := ha.payloads("marker"); len(got) != 0 {
		t.Fatalf("A delivered its own enveloped publish: %q", got)
	}
	if got := len(ha.payloads("#w:hello")); got != 3 {
		t.Fatalf("A delivered %d raw publishes, want 3", got)
	}
	if st := a.Stats(); st.Received != 3 || st.Malformed != 0 || st.Down {
		t.Fatalf("A's stats %+v", st)
	}
}

// TestRedisBrokerRawRefusedWhileDown: a publish on a raw channel reaches
// nobody while Redis is down, not even this node's subscribers, so
// PublishConfirmed reports the failure, and once the publisher knows Redis
// is down Publish refuses it (ErrBrokerDown, which is an ErrBrokerBusy),
// while other channels are still accepted; a PING notices Redis back even
// when only raw publishes were tried meanwhile.
func TestRedisBrokerRawRefusedWhileDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("stops and restarts its redis-server: not with a shared REDIS_URL")
	}
	pfx := testPrefix(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	h := &fakeBrokerHandler{}
	br := startBroker(t, srv.Addr, RedisBrokerOptions{Client: client, Prefix: pfx, ChannelName: wsifyLikeNames(pfx), Raw: rawW}, h)
	br.Subscribe("#w:room")
	waitFor(t, 5*time.Second, "Live", func() bool { return h.liveCount("#w:room") == 1 })
	if err := br.Publish("#w:room", []byte("up")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "own raw publish back", func() bool { return len(h.payloads("#w:room")) == 1 })

	if err := br.PublishConfirmed(context.Background(), "#w:room", []byte("confirmed")); err != nil {
		t.Fatalf("PublishConfirmed with Redis up: %v", err)
	}
	waitFor(t, 5*time.Second, "the confirmed publish back", func() bool { return len(h.payloads("#w:room")) == 2 })

	srv.Stop()
	// The first publish learns it from Redis; the broker knows from then on.
	err := br.PublishConfirmed(context.Background(), "#w:room", []byte("lost"))
	if !errors.Is(err, ErrBrokerDown) {
		t.Fatalf("PublishConfirmed with Redis down: %v, want ErrBrokerDown", err)
	}
	err = br.Publish("#w:room", []byte("lost"))
	if !errors.Is(err, ErrBrokerDown) || !errors.Is(err, ErrBrokerBusy) || !br.Stats().Down {
		t.Fatalf("raw publish while down: %v (stats %+v), want ErrBrokerDown", err, br.Stats())
	}
	if err := br.Publish("other", []byte("x")); err != nil {
		t.Fatalf("an enveloped publish while down: %v, want accepted (its node delivers it)", err)
	}

	srv.Restart(t)
	waitFor(t, 15*time.Second, "raw publishes accepted again", func() bool {
		return br.Publish("#w:room", []byte("probe")) == nil
	})
	if br.Stats().Down {
		t.Fatal("Stats().Down after Redis came back")
	}
}

// echoBroker is a broker that echoes "#w:" channels, delivered back when
// the test says.
type echoBroker struct {
	slowBroker
	published []string
}

func (e *echoBroker) Publish(channel string, p []byte) error {
	e.published = append(e.published, channel+"="+string(p))
	return nil
}

func (*echoBroker) Echoes(channel string) bool { return rawW(channel) }

// TestHubEchoedChannelDeliversOnlyTheCopy: on a channel the broker Echoes
// the hub hands the publish to the broker and delivers nothing itself, and
// counts nothing as published or lost until the copy comes back; other
// channels are delivered at once as before.
func TestHubEchoedChannelDeliversOnlyTheCopy(t *testing.T) {
	br := &echoBroker{}
	h := NewHub(br)
	_ = h.Start()
	l := &queueLoop{}
	sh, _ := h.NewShard(l)
	s, sink := newSession(sh, "a")
	sh.Subscribe(s, "#w:room")
	sh.Subscribe(s, "plain")
	br.h.Live("#w:room")
	br.h.Live("plain")
	l.run()

	if err := h.Publish("#w:room", []byte("x"), 7); err != nil {
		t.Fatal(err)
	}
	l.run()
	st := h.Stats()
	if len(sink.got) != 0 || st.Publishes.Load() != 0 || st.LoopDrops.Load() != 0 || st.BrokerRefusals.Load() != 0 {
		t.Fatalf("before the copy: got %v, publishes %d, drops %d, refusals %d",
			sink.got, st.Publishes.Load(), st.LoopDrops.Load(), st.BrokerRefusals.Load())
	}
	if !slices.Equal(br.published, []string{"#w:room=x"}) {
		t.Fatalf("broker got %v", br.published)
	}
	br.h.Deliver("#w:room", []byte("x")) // the copy
	if err := h.Publish("plain", []byte("y"), 7); err != nil {
		t.Fatal(err)
	}
	l.run()
	if !slices.Equal(sink.got, []string{"#w:room=x", "plain=y"}) || st.Publishes.Load() != 2 {
		t.Fatalf("got %v, publishes %d", sink.got, st.Publishes.Load())
	}
}
