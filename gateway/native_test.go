package gateway_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/native"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

const nativeHead = "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// unmasked wraps msg in a masked client frame with a zero mask: valid on
// the wire and unchanged by in-place unmasking, so benchmarks can feed it
// again and again.
func unmasked(msg []byte) []byte {
	return append(append([]byte{0x82, 0x80 | byte(len(msg))}, 0, 0, 0, 0), msg...)
}

// nativeLoop returns a fake loop serving the native protocol and a key.
func nativeLoop(b testing.TB) (*gateway.FakeLoop, []byte) {
	secrets, err := token.NewSecrets(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		b.Fatal(err)
	}
	key, _, err := secrets.Issue("bench", time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	p := native.New(native.Options{Secrets: secrets, Revoked: token.NewRevoked()})
	return gateway.NewFakeLoop(gateway.Options{}, p.Route()), key
}

// authenticated opens a native connection through upgrade and auth.
func authenticated(b testing.TB, l *gateway.FakeLoop, key []byte) *gateway.FakeConn {
	f := l.Open()
	l.Feed(f, append([]byte(nativeHead), unmasked(packet.AppendAuth(nil, packet.Version, key))...))
	out := f.Output()
	if !bytes.Contains(out, []byte("101 Switching")) || !bytes.Contains(out, []byte{0x82, 0x02, 0x6d, 0x73, 0x82, 0x09, 0x00}) {
		b.Fatalf("upgrade and auth failed: %q", out)
	}
	f.ResetOutput()
	return f
}

// BenchmarkNativePing: a Ping frame in, a Pong frame out, on the loop.
func BenchmarkNativePing(b *testing.B) {
	l, key := nativeLoop(b)
	f := authenticated(b, l, key)
	f.DiscardOutput()
	ping := unmasked(packet.AppendPing(nil))
	b.ReportAllocs()
	for b.Loop() {
		l.Feed(f, ping)
	}
	if f.Written() != 11*b.N {
		b.Fatalf("wrote %d bytes for %d pings, want 11 each", f.Written(), b.N)
	}
}

// BenchmarkNativeFanOut publishes 100-byte payloads to 10,000 subscribers
// on one loop; ns/op and allocs/op are per publish, so per delivery divide
// by 10,000.
func BenchmarkNativeFanOut(b *testing.B) {
	const subscribers = 10000
	l, key := nativeLoop(b)
	conns := make([]*gateway.FakeConn, subscribers)
	for i := range conns {
		conns[i] = authenticated(b, l, key)
		l.Feed(conns[i], unmasked(packet.AppendSubscribe(nil, "fan")))
		conns[i].ResetOutput()
		conns[i].DiscardOutput()
	}
	hub := l.Server().Hub()
	payload := bytes.Repeat([]byte("p"), 100)
	b.ReportAllocs()
	for b.Loop() {
		if err := hub.Publish("fan", payload, 0); err != nil {
			b.Fatal(err)
		}
		l.Run()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subscribers), "ns/delivery")
	frame := 2 + packet.MessageLen(3, 100)
	for i, c := range conns {
		if c.Written() != frame*b.N {
			b.Fatalf("subscriber %d got %d bytes, want %d", i, c.Written(), frame*b.N)
		}
	}
}

// TestHotPathAllocatesNothing guards the benchmarks' 0 allocs/op: answering
// a Ping and delivering a publish to a subscriber allocate nothing.
func TestHotPathAllocatesNothing(t *testing.T) {
	l, key := nativeLoop(t)
	f := authenticated(t, l, key)
	f.DiscardOutput()
	ping := unmasked(packet.AppendPing(nil))
	if n := testing.AllocsPerRun(1000, func() { l.Feed(f, ping) }); n != 0 {
		t.Errorf("a Ping costs %v allocations, want 0", n)
	}

	const subscribers = 200
	for range subscribers {
		s := authenticated(t, l, key)
		l.Feed(s, unmasked(packet.AppendSubscribe(nil, "fan")))
		s.DiscardOutput()
	}
	hub := l.Server().Hub()
	payload := bytes.Repeat([]byte("p"), 100)
	perPublish := testing.AllocsPerRun(200, func() {
		_ = hub.Publish("fan", payload, 0)
		l.Run()
	})
	// The publish itself allocates its message (a constant); deliveries add
	// nothing, so the count must not grow with the subscribers.
	if perPublish > 4 {
		t.Errorf("a publish to %d subscribers costs %v allocations, want at most 4 (none per delivery)", subscribers, perPublish)
	}
}

// FuzzNativeMessages feeds arbitrary messages to an authenticated native
// connection: whatever the bytes, the loop must not panic, and a message
// either runs or closes the connection with a code.
func FuzzNativeMessages(f *testing.F) {
	f.Add(packet.AppendPing(nil))
	f.Add(packet.AppendSubscribe(packet.AppendPing(nil), "room"))
	f.Add(packet.AppendPublish(nil, "room", []byte("x")))
	f.Add(packet.AppendSettings(nil, packet.Setting{ID: packet.SettingBatchWindow, Short: 10}, packet.Setting{ID: packet.SettingEcho, Byte: 1}))
	f.Add([]byte{0x01, 0x04, 0xff})
	f.Add([]byte{0x02, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > 125 {
			return // unmasked() writes a one-byte length
		}
		l, key := nativeLoop(t)
		c := authenticated(t, l, key)
		l.Feed(c, unmasked(packet.AppendSubscribe(nil, "room")))
		l.Feed(c, unmasked(msg))
		l.Feed(c, unmasked(packet.AppendPublish(nil, "room", []byte("after"))))
	})
}

// TestBatchOfPublishesIsOneWrite: publishes that reach a loop in one batch
// of tasks leave to each subscriber in one write, in order, and a close in
// the same batch follows them.
func TestBatchOfPublishesIsOneWrite(t *testing.T) {
	l, key := nativeLoop(t)
	subs := make([]*gateway.FakeConn, 3)
	for i := range subs {
		subs[i] = authenticated(t, l, key)
		l.Feed(subs[i], unmasked(packet.AppendSubscribe(nil, "b")))
		subs[i].ResetOutput()
	}
	hub := l.Server().Hub()
	for _, p := range []string{"one", "two", "three"} {
		if err := hub.Publish("b", []byte(p), 0); err != nil {
			t.Fatal(err)
		}
	}
	hub.EachShard(func(sh *session.Shard) {
		sh.Each(func(s *session.Session) { s.Sink.Close(3004, "bye") })
	})
	l.Run()
	var want []byte
	for _, p := range []string{"one", "two", "three"} {
		msg := packet.AppendMessage(nil, "b", []byte(p))
		want = append(gateway.AppendFrameHeader(want, 0x2, len(msg)), msg...)
	}
	want = gateway.AppendCloseFrame(want, 3004, "bye")
	for i, s := range subs {
		if s.Writes() != 1 || !bytes.Equal(s.Output(), want) {
			t.Fatalf("subscriber %d: %d writes of % x, want one of % x", i, s.Writes(), s.Output(), want)
		}
	}
}

// TestBatchWindowFlushToResetPeer: a batch window that fills twice in one
// batch of deliveries writes the first window's bytes to a peer that reset
// the connection; gnet closes it inside that write and the protocol's
// OnClose drops the window's state while flush is still running. Nothing
// may panic, and the connection is closed once.
func TestBatchWindowFlushToResetPeer(t *testing.T) {
	l, key := nativeLoop(t)
	f := authenticated(t, l, key)
	l.Feed(f, unmasked(packet.AppendSettings(nil, packet.Setting{ID: packet.SettingBatchWindow, Short: 1000})))
	l.Feed(f, unmasked(packet.AppendSubscribe(nil, "b")))
	f.ResetByPeer()
	hub := l.Server().Hub()
	for range 10 { // 160 KiB: the window reaches 64 KiB twice
		if err := hub.Publish("b", bytes.Repeat([]byte("x"), 16<<10), 0); err != nil {
			t.Fatal(err)
		}
	}
	l.Run()
	if n := l.Panics(t); n != 0 {
		t.Fatalf("%d panics recovered", n)
	}
	if n := l.Server().Hub().Sessions(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}
