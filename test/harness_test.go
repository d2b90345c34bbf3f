package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// testSecret is the secret of every test node, so keys issued by one node
// verify on another (as in a real cluster sharing GATEWAY_SECRET).
const testSecret = "test-secret-0123456789-0123456789-0123456789"

// waitFor bounds every read of a test: generous for a loaded 2-core CI
// machine, never a timing assertion.
const waitFor = 10 * time.Second

// startNode starts a node on loopback port 0 with a fresh data dir. mods
// adjust the config; the node stops when the test ends.
func startNode(t testing.TB, mods ...func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(),
		Secret: testSecret, EventLoops: 2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, m := range mods {
		m(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

// wsURL is the node's native WebSocket URL.
func wsURL(n *node.Node) string { return "ws://" + n.Addr().String() + "/api/ws" }

// adminURL is the node's admin base URL.
func adminURL(n *node.Node) string { return "http://" + n.AdminAddr().String() }

// issueKey returns a raw access key for subject valid for ttl.
func issueKey(t testing.TB, n *node.Node, subject string, ttl time.Duration) []byte {
	t.Helper()
	raw, _, err := n.Secrets.Issue(subject, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// dial upgrades to the native protocol and checks the hello is exactly
// 6d 73.
func dial(t testing.TB, n *node.Node) *websocket.Conn {
	t.Helper()
	ctx := testCtx(t)
	c, _, err := websocket.Dial(ctx, wsURL(n), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetReadLimit(1 << 22)
	t.Cleanup(func() { _ = c.CloseNow() })
	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read hello: %v", err)
	}
	if typ != websocket.MessageBinary || !bytes.Equal(msg, []byte{0x6d, 0x73}) {
		t.Fatalf("hello = %v % x, want binary 6d 73", typ, msg)
	}
	return c
}

// send writes one binary message.
func send(t testing.TB, c *websocket.Conn, msg []byte) {
	t.Helper()
	if err := c.Write(testCtx(t), websocket.MessageBinary, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// connect dials and authenticates as subject, checking the Pong that
// answers the auth message.
func connect(t testing.TB, n *node.Node, subject string) *websocket.Conn {
	t.Helper()
	c := dial(t, n)
	send(t, c, packet.AppendAuth(nil, packet.Version, issueKey(t, n, subject, time.Hour)))
	p := readOne(t, c)
	if p.ID != packet.PacketPong {
		t.Fatalf("after auth got packet %#x, want Pong", p.ID)
	}
	return c
}

// readMessage reads one WebSocket message and decodes its packets (copied).
func readMessage(t testing.TB, c *websocket.Conn) []packet.ServerPacket {
	t.Helper()
	typ, msg, err := c.Read(testCtx(t))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("got a %v message, want binary", typ)
	}
	return decodeAll(t, msg)
}

func decodeAll(t testing.TB, msg []byte) []packet.ServerPacket {
	t.Helper()
	msg = bytes.Clone(msg)
	d := packet.NewClientDecoder(msg)
	var out []packet.ServerPacket
	for {
		var p packet.ServerPacket
		ok, err := d.Next(&p)
		if err != nil {
			t.Fatalf("undecodable server message % x: %v", msg, err)
		}
		if !ok {
			return out
		}
		out = append(out, p)
	}
}

// readOne reads a message that must hold exactly one packet.
func readOne(t testing.TB, c *websocket.Conn) packet.ServerPacket {
	t.Helper()
	ps := readMessage(t, c)
	if len(ps) != 1 {
		t.Fatalf("got %d packets in one message, want 1: %+v", len(ps), ps)
	}
	return ps[0]
}

// expectClose reads until the connection ends and checks the close code
// the client received and that the reason contains want.
func expectClose(t testing.TB, c *websocket.Conn, code websocket.StatusCode, want string) {
	t.Helper()
	ctx := testCtx(t)
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("connection ended without a close frame (want %d): %v", code, err)
		}
		if ce.Code != code || !strings.Contains(ce.Reason, want) {
			t.Fatalf("closed with %d %q, want %d containing %q", ce.Code, ce.Reason, code, want)
		}
		return
	}
}

// subscribe subscribes and waits for Subscribed.
func subscribe(t testing.TB, c *websocket.Conn, channel string) {
	t.Helper()
	send(t, c, packet.AppendSubscribe(nil, channel))
	p := readOne(t, c)
	if p.ID != packet.PacketSubscribed || string(p.Channel) != channel {
		t.Fatalf("after subscribe got %s, want Subscribed(%q)", describe(p), channel)
	}
}

func describe(p packet.ServerPacket) string {
	switch p.ID {
	case packet.PacketPong:
		return fmt.Sprintf("Pong(%d)", p.Millis)
	case packet.PacketMessage:
		return fmt.Sprintf("Message(%q, %q)", p.Channel, p.Payload)
	case packet.PacketError:
		return fmt.Sprintf("Error(%d, %q)", p.Code, p.Text)
	case packet.PacketSubscribed:
		return fmt.Sprintf("Subscribed(%q)", p.Channel)
	case packet.PacketPublication:
		return fmt.Sprintf("Publication(%q, %d, %q)", p.Channel, p.Offset, p.Payload)
	case packet.PacketSubscribedFrom:
		return fmt.Sprintf("SubscribedFrom(%q, %d, %d, %d)", p.Channel, p.Epoch, p.Offset, p.Recovered)
	}
	return fmt.Sprintf("packet %#x", p.ID)
}
