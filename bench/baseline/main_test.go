package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

const testSecret = "baseline-test-secret-0123456789abcdef"

// testServer runs the baseline in-process on ephemeral ports.
type testServer struct {
	t       *testing.T
	addr    string
	metrics string
	secrets *token.Secrets
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	return startServerQueue(t, 0)
}

// startServerQueue starts a server whose send queues hold queue messages
// (0: the default).
func startServerQueue(t *testing.T, queue int) *testServer {
	t.Helper()
	t.Setenv("GATEWAY_SECRET", testSecret)
	secrets, err := token.ParseSecrets(os.Getenv("GATEWAY_SECRET"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, "127.0.0.1:0", "127.0.0.1:0", options{secrets: secrets, queue: queue}, func(a, m net.Addr) {
			addrs <- [2]net.Addr{a, m}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case a := <-addrs:
		return &testServer{t: t, addr: a[0].String(), metrics: a[1].String(), secrets: secrets}
	case err := <-errc:
		t.Fatalf("run: %v", err)
	}
	return nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects and checks the hello message.
func (s *testServer) dial() *websocket.Conn {
	t := s.t
	t.Helper()
	c, _, err := websocket.Dial(testCtx(t), "ws://"+s.addr+wsPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if got := s.read(c); !bytes.Equal(got, []byte{0x6d, 0x73}) {
		t.Fatalf("hello = % x, want 6d 73", got)
	}
	return c
}

func (s *testServer) key(subject string) []byte {
	key, _, err := s.secrets.Issue(subject, time.Hour, time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	return key
}

// login dials and authenticates as subject; the answer must be a Pong.
func (s *testServer) login(subject string) *websocket.Conn {
	s.t.Helper()
	c := s.dial()
	s.write(c, packet.AppendAuth(nil, packet.Version, s.key(subject)))
	s.expectPong(c)
	return c
}

func (s *testServer) write(c *websocket.Conn, msg []byte) {
	s.t.Helper()
	if err := c.Write(testCtx(s.t), websocket.MessageBinary, msg); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testServer) read(c *websocket.Conn) []byte {
	s.t.Helper()
	typ, msg, err := c.Read(testCtx(s.t))
	if err != nil {
		s.t.Fatal(err)
	}
	if typ != websocket.MessageBinary {
		s.t.Fatalf("message type %v, want binary", typ)
	}
	return msg
}

func (s *testServer) expectPong(c *websocket.Conn) {
	s.t.Helper()
	msg := s.read(c)
	if len(msg) != 9 || msg[0] != packet.PacketPong {
		s.t.Fatalf("got % x, want a Pong", msg)
	}
	if d := time.Since(time.UnixMilli(int64(binary.BigEndian.Uint64(msg[1:])))); d < -time.Second || d > 5*time.Second {
		s.t.Fatalf("Pong clock is %v off", d)
	}
}

func (s *testServer) expect(c *websocket.Conn, want []byte) {
	s.t.Helper()
	if got := s.read(c); !bytes.Equal(got, want) {
		s.t.Fatalf("got % x, want % x", got, want)
	}
}

// expectClose reads until the server closes with code and a reason
// starting with reason.
func (s *testServer) expectClose(c *websocket.Conn, code websocket.StatusCode, reason string) {
	s.t.Helper()
	_, msg, err := c.Read(testCtx(s.t))
	if err == nil {
		s.t.Fatalf("got % x, want close %d", msg, code)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || !strings.HasPrefix(ce.Reason, reason) {
		s.t.Fatalf("got %v, want close %d %q", err, code, reason)
	}
}

func TestAuth(t *testing.T) {
	s := startServer(t)
	s.login("alice")

	bad := s.dial()
	s.write(bad, packet.AppendAuth(nil, packet.Version, []byte("not a key")))
	s.expectClose(bad, 3001, "invalid access key")

	c := s.dial()
	s.write(c, packet.AppendAuth(nil, 7, s.key("alice")))
	s.expectClose(c, 3002, "unsupported protocol version 7; this server speaks 0")

	c = s.dial()
	s.write(c, packet.AppendPing(nil))
	s.expectClose(c, 3001, "malformed auth message: bad auth magic")
}

func TestPublishSubscribe(t *testing.T) {
	s := startServer(t)
	sub := s.login("alice")
	pub := s.login("bob")

	s.write(sub, packet.AppendSubscribe(nil, "c"))
	s.expect(sub, []byte{0x03, 0x00, 0x01, 0x63})

	s.write(pub, packet.AppendPublish(nil, "c", []byte("xy")))
	s.expect(sub, []byte{0x01, 0x00, 0x01, 0x63, 0x00, 0x00, 0x00, 0x02, 0x78, 0x79})

	// No echo: the publisher's next packet is the Pong.
	s.write(pub, packet.AppendPing(nil))
	s.expectPong(pub)

	// Echo on, then several packets in one message.
	msg := []byte{0x01, 0x01, 0x01, 0xff}
	msg = packet.AppendSubscribe(msg, "c")
	msg = packet.AppendPublish(msg, "c", []byte("hi"))
	s.write(pub, msg)
	s.expect(pub, packet.AppendSubscribed(nil, "c"))
	want := packet.AppendMessage(nil, "c", []byte("hi"))
	s.expect(pub, want)
	s.expect(sub, want)

	// Unsubscribed (the Pong shows it ran): the next packet is a Pong.
	s.write(sub, packet.AppendPing(packet.AppendUnsubscribe(nil, "c")))
	s.expectPong(sub)
	s.write(pub, packet.AppendPublish(nil, "c", []byte("gone")))
	s.expect(pub, packet.AppendMessage(nil, "c", []byte("gone")))
	s.write(sub, packet.AppendPing(nil))
	s.expectPong(sub)
}

func TestRefusalsAndCloses(t *testing.T) {
	s := startServer(t)
	c := s.login("alice")
	s.write(c, packet.AppendSubscribe(nil, "user:bob"))
	s.expect(c, packet.AppendError(nil, packet.ErrorForbidden, `subscribe "user:bob": personal channel of another subject`))
	s.write(c, packet.AppendSettings(nil, packet.Setting{ID: packet.SettingEcho, Byte: 2}))
	s.expect(c, packet.AppendError(nil, packet.ErrorBadRequest, "setting echo: value 2 is not 0 or 1"))

	s.write(c, []byte{0x00, 0x02, 0x00})
	s.expectClose(c, 1002, "packet truncated at byte 2")

	c = s.login("alice")
	if err := c.Write(testCtx(t), websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	s.expectClose(c, 1003, "text messages are not accepted")

	c = s.login("alice")
	c.SetReadLimit(-1)
	s.write(c, make([]byte, maxMessageSize+1))
	s.expectClose(c, 1009, "")
}

// A subscriber that does not read is closed with 1008; the publisher goes
// on.
func TestSlowConsumer(t *testing.T) {
	s := startServerQueue(t, 4)
	slow := s.login("alice")
	slow.SetReadLimit(-1)
	pub := s.login("bob")
	s.write(slow, packet.AppendSubscribe(nil, "c"))
	s.expect(slow, packet.AppendSubscribed(nil, "c"))
	// Publish until the server gives up on slow (TCP buffers come first).
	msg := packet.AppendPublish(nil, "c", make([]byte, 60<<10))
	closed := slowCloses(t) + 1
	for i := 0; slowCloses(t) < closed; i++ {
		if i == 10000 {
			t.Fatal("slow consumer not closed after 600 MB")
		}
		s.write(pub, msg)
	}
	s.write(pub, packet.AppendPing(nil))
	s.expectPong(pub)
	for {
		_, msg, err := slow.Read(testCtx(t))
		if err != nil {
			if code := websocket.CloseStatus(err); code != 1008 {
				t.Fatalf("slow consumer: %v, want close 1008", err)
			}
			return
		}
		if msg[0] != packet.PacketMessage {
			t.Fatalf("got % x, want a Message", msg[:1])
		}
	}
}

func TestHTTP(t *testing.T) {
	s := startServer(t)
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("http://" + s.addr + wsPath); code != http.StatusUpgradeRequired {
		t.Errorf("plain GET %s: %d, want 426", wsPath, code)
	}
	if code, _ := get("http://" + s.metrics + "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	code, body := get("http://" + s.metrics + "/metrics")
	for _, m := range []string{"go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "baseline_connections"} {
		if code != http.StatusOK || !strings.Contains(body, m) {
			t.Errorf("/metrics (%d) lacks %s", code, m)
		}
	}
}

// slowCloses reads baseline_slow_consumer_closes_total.
func slowCloses(t *testing.T) float64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "baseline_slow_consumer_closes_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no baseline_slow_consumer_closes_total")
	return 0
}
