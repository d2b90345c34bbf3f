package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// End-to-end tests of the native protocol through an independent client
// (github.com/coder/websocket). Helpers of this file start with "ne".

// neReadPackets reads whole messages until it holds exactly n packets and
// returns them with the number of WebSocket messages that carried them.
func neReadPackets(t testing.TB, c *websocket.Conn, n int) ([]packet.ServerPacket, int) {
	t.Helper()
	var out []packet.ServerPacket
	msgs := 0
	for len(out) < n {
		out = append(out, readMessage(t, c)...)
		msgs++
	}
	if len(out) != n {
		t.Fatalf("got %d packets, want %d: %s", len(out), n, neDescribeAll(out))
	}
	return out, msgs
}

func neDescribeAll(ps []packet.ServerPacket) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, describe(p))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// neCheckPong checks p is a Pong whose clock is near the test's.
func neCheckPong(t testing.TB, p packet.ServerPacket) {
	t.Helper()
	if p.ID != packet.PacketPong {
		t.Fatalf("got %s, want Pong", describe(p))
	}
	if d := time.Since(time.UnixMilli(p.Millis)); d < -10*time.Second || d > 10*time.Second {
		t.Fatalf("Pong clock %d is %v away from now", p.Millis, d)
	}
}

func neCheckError(t testing.TB, p packet.ServerPacket, code int16, want string) {
	t.Helper()
	if p.ID != packet.PacketError || p.Code != code || !strings.Contains(string(p.Text), want) {
		t.Fatalf("got %s, want Error(%d) containing %q", describe(p), code, want)
	}
}

func neCheckMessage(t testing.TB, p packet.ServerPacket, channel string, payload []byte) {
	t.Helper()
	if p.ID != packet.PacketMessage || string(p.Channel) != channel || !bytes.Equal(p.Payload, payload) {
		t.Fatalf("got %s, want Message(%q, %q)", describe(p), channel, payload)
	}
}

// nePing sends a Ping and checks that the very next message is one Pong:
// nothing (no Error, no Message) was queued before it.
func nePing(t testing.TB, c *websocket.Conn) {
	t.Helper()
	send(t, c, packet.AppendPing(nil))
	neCheckPong(t, readOne(t, c))
}

// nePublishSync publishes and waits for a Pong sent in the same message:
// once it arrives the hub has queued the publish on every loop.
func nePublishSync(t testing.TB, c *websocket.Conn, channel string, payload []byte) {
	t.Helper()
	send(t, c, packet.AppendPing(packet.AppendPublish(nil, channel, payload)))
	neCheckPong(t, readOne(t, c))
}

// neExpectCloseFirst checks that the very next thing the server sends is
// the close frame: no message comes before it.
func neExpectCloseFirst(t testing.TB, c *websocket.Conn, code websocket.StatusCode, want string) {
	t.Helper()
	typ, msg, err := c.Read(testCtx(t))
	if err == nil {
		t.Fatalf("got a %v message % x before the close, want close %d", typ, msg, code)
	}
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("connection ended without a close frame (want %d): %v", code, err)
	}
	if ce.Code != code || !strings.Contains(ce.Reason, want) {
		t.Fatalf("closed with %d %q, want %d containing %q", ce.Code, ce.Reason, code, want)
	}
}

func neCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// nePinger sends a Ping every interval until the returned stop is called.
func nePinger(c *websocket.Conn, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				err := c.Write(ctx, websocket.MessageBinary, []byte{packet.PacketPing})
				cancel()
				if err != nil {
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// TestNative runs the scenarios that need a node with default limits on one
// shared node (each uses its own channels), in parallel.
func TestNative(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *node.Node)
	}{
		{"AuthSuccessPong", neTestAuthSuccessPong},
		{"AuthRefusals", neTestAuthRefusals},
		{"TextMessageCloses1003", neTestTextMessageCloses1003},
		{"RevokedDuringSession", neTestRevokedDuringSession},
		{"MultiplePacketsPerMessage", neTestMultiplePacketsPerMessage},
		{"MalformedAfterAuth", neTestMalformedAfterAuth},
		{"EchoSetting", neTestEchoSetting},
		{"SettingsRejected", neTestSettingsRejected},
		{"BatchWindow", neTestBatchWindow},
		{"MessageEncoding", neTestMessageEncoding},
		{"SubscribeUnsubscribe", neTestSubscribeUnsubscribe},
		{"SubscribeFromWithoutHistory", neTestSubscribeFromWithoutHistory},
		{"ChannelPolicy", neTestChannelPolicy},
		{"SubscriptionLimit", neTestSubscriptionLimit},
		{"FanOut", neTestFanOut},
		{"PlainHTTP", neTestPlainHTTP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, n)
		})
	}
}

func neTestAuthSuccessPong(t *testing.T, n *node.Node) {
	c := dial(t, n)
	send(t, c, packet.AppendAuth(nil, packet.Version, issueKey(t, n, "alice", time.Hour)))
	neCheckPong(t, readOne(t, c))
	// The session works: a Ping gets its own Pong.
	nePing(t, c)
}

func neTestAuthRefusals(t *testing.T, n *node.Node) {
	key := issueKey(t, n, "alice", time.Hour)
	good := packet.AppendAuth(nil, packet.Version, key)

	flipped := bytes.Clone(key)
	flipped[len(flipped)-1] ^= 0x01
	other, err := token.ParseSecrets("another-secret-0123456789-0123456789-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := other.Issue("alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := n.Secrets.Issue("alice", time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	revoked, claims, err := n.Secrets.Issue("alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Revoker.RevokeKey(testCtx(t), claims); err != nil {
		t.Fatal(err)
	}
	neg := append([]byte{0xb6, 0xc4, 0x00, 0x80}, bytes.Repeat([]byte{'k'}, 128)...)

	const malformed = "malformed auth message"
	cases := []struct {
		name string
		msg  []byte
		code websocket.StatusCode
		want string
	}{
		{"empty", []byte{}, 3001, malformed + ": bad auth magic"},
		{"one byte", []byte{0xb6}, 3001, malformed + ": bad auth magic"},
		{"wrong magic", append([]byte{0xb6, 0xc5}, good[2:]...), 3001, malformed + ": bad auth magic"},
		{"ping first", []byte{packet.PacketPing}, 3001, malformed},
		{"magic only", []byte{0xb6, 0xc4}, 3001, malformed + ": auth message truncated"},
		{"version 1", packet.AppendAuth(nil, 1, key), 3002, "unsupported protocol version 1"},
		{"version 7 no key", []byte{0xb6, 0xc4, 0x07}, 3002, "unsupported protocol version 7"},
		{"version ff bad length", []byte{0xb6, 0xc4, 0xff, 0x00}, 3002, "unsupported protocol version 255"},
		{"no length byte", []byte{0xb6, 0xc4, 0x00}, 3001, malformed + ": auth message truncated"},
		{"key length 0", []byte{0xb6, 0xc4, 0x00, 0x00}, 3001, malformed + ": bad key length"},
		{"key length 0x80", neg, 3001, malformed + ": bad key length"},
		{"key length 0xff", []byte{0xb6, 0xc4, 0x00, 0xff, 'k'}, 3001, malformed + ": bad key length"},
		{"short", good[:len(good)-1], 3001, malformed + ": auth message truncated"},
		{"long", append(bytes.Clone(good), 0x00), 3001, malformed + ": trailing bytes after key"},
		{"bad signature", packet.AppendAuth(nil, packet.Version, flipped), 3001, "invalid access key"},
		{"garbage key", packet.AppendAuth(nil, packet.Version, bytes.Repeat([]byte{7}, 40)), 3001, "invalid access key"},
		{"foreign secret", packet.AppendAuth(nil, packet.Version, foreign), 3001, "invalid access key"},
		{"expired", packet.AppendAuth(nil, packet.Version, expired), 3001, "access key expired"},
		{"revoked", packet.AppendAuth(nil, packet.Version, revoked), 3001, "access key revoked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, n)
			send(t, c, tc.msg)
			neExpectCloseFirst(t, c, tc.code, tc.want)
		})
	}
}

func neTestTextMessageCloses1003(t *testing.T, n *node.Node) {
	t.Run("before auth", func(t *testing.T) {
		c := dial(t, n)
		if err := c.Write(testCtx(t), websocket.MessageText, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		neExpectCloseFirst(t, c, websocket.StatusUnsupportedData, "binary")
	})
	t.Run("after auth", func(t *testing.T) {
		c := connect(t, n, "alice")
		if err := c.Write(testCtx(t), websocket.MessageText, []byte{packet.PacketPing}); err != nil {
			t.Fatal(err)
		}
		neExpectCloseFirst(t, c, websocket.StatusUnsupportedData, "binary")
	})
}

// neGoTB runs a scenario on its own goroutine: Fatal reports the failure
// on the test, prefixed with the scenario's name, and ends only that
// goroutine.
type neGoTB struct {
	testing.TB
	name string
}

func (g neGoTB) Errorf(format string, args ...any) { g.TB.Errorf(g.name+": "+format, args...) }
func (g neGoTB) Error(args ...any)                 { g.TB.Error(append([]any{g.name + ":"}, args...)...) }
func (g neGoTB) Fatalf(format string, args ...any) { g.Errorf(format, args...); runtime.Goexit() }
func (g neGoTB) Fatal(args ...any)                 { g.Error(args...); runtime.Goexit() }
func (g neGoTB) FailNow()                          { g.TB.Fail(); runtime.Goexit() }

// neConcurrently runs deadline scenarios at the same time, so their waits
// overlap instead of holding test slots one after another.
func neConcurrently(t *testing.T, scenarios map[string]func(testing.TB)) {
	t.Helper()
	var wg sync.WaitGroup
	for name, fn := range scenarios {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(neGoTB{TB: t, name: name})
		}()
	}
	wg.Wait()
}

// neReadPongsUntilClose reads Pongs until the close, which must have code
// and reason.
func neReadPongsUntilClose(t testing.TB, c *websocket.Conn, code websocket.StatusCode, reason string) {
	t.Helper()
	for {
		typ, msg, err := c.Read(testCtx(t))
		if err == nil {
			if ps := decodeAll(t, msg); typ != websocket.MessageBinary || len(ps) != 1 || ps[0].ID != packet.PacketPong {
				t.Fatalf("got %v % x, want a Pong or the close", typ, msg)
			}
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code || ce.Reason != reason {
			t.Fatalf("ended with %v, want close %d %q", err, code, reason)
		}
		return
	}
}

// TestNativeTimeouts runs the deadline scenarios on one node with 2 s
// handshake and ping timeouts.
func TestNativeTimeouts(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) {
		c.HandshakeTimeout = 2 * time.Second
		c.PingTimeout = 2 * time.Second
	})
	neConcurrently(t, map[string]func(testing.TB){
		"no auth message": func(t testing.TB) {
			c := dial(t, n)
			neExpectCloseFirst(t, c, 3003, "authentication timeout: no auth message within 2s")
		},
		"no ping after auth": func(t testing.TB) {
			c := connect(t, n, "alice")
			neExpectCloseFirst(t, c, 3003, "ping timeout: no ping within 2s")
		},
		"pings keep the session": func(t testing.TB) {
			c := connect(t, n, "alice")
			stop := nePinger(c, 500*time.Millisecond)
			// Pinging for 3.2 s (past the 2 s timeout): every message
			// is a Pong and the connection stays open.
			until := time.Now().Add(3200 * time.Millisecond)
			pongs := 0
			for time.Now().Before(until) {
				neCheckPong(t, readOne(t, c))
				pongs++
			}
			stop()
			if pongs < 2 {
				t.Fatalf("only %d pongs while pinging", pongs)
			}
			// Silent now: 3003 (Pongs of pings in flight may come first).
			neReadPongsUntilClose(t, c, 3003, "ping timeout: no ping within 2s")
		},
		"key expires during the session": func(t testing.TB) {
			c := dial(t, n)
			send(t, c, packet.AppendAuth(nil, packet.Version, issueKey(t, n, "alice", 2*time.Second)))
			neCheckPong(t, readOne(t, c))
			stop := nePinger(c, 500*time.Millisecond)
			defer stop()
			neReadPongsUntilClose(t, c, 3001, "access key expired")
		},
	})
}

// TestNativeHandshakeTimeoutNotEarly checks that a client that does not
// authenticate is closed no sooner than HandshakeTimeout after it began to
// connect. This is a lower bound only: load makes the close later, never
// earlier. Four clients start 250 ms apart so they fall at different
// points of the server's one-second timing wheel.
func TestNativeHandshakeTimeoutNotEarly(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.HandshakeTimeout = 2 * time.Second })
	scenarios := map[string]func(testing.TB){}
	for i := range 4 {
		scenarios[fmt.Sprintf("client %d", i)] = func(t testing.TB) {
			time.Sleep(time.Duration(i) * 250 * time.Millisecond)
			start := time.Now()
			c := dial(t, n)
			neExpectCloseFirst(t, c, 3003, "authentication timeout")
			if elapsed := time.Since(start); elapsed < 2*time.Second {
				t.Fatalf("closed for authentication timeout %v after the dial began, before the 2s HandshakeTimeout", elapsed.Round(time.Millisecond))
			}
		}
	}
	neConcurrently(t, scenarios)
}

func neTestRevokedDuringSession(t *testing.T, n *node.Node) {
	raw, claims, err := n.Secrets.Issue("alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, n)
	send(t, c, packet.AppendAuth(nil, packet.Version, raw))
	neCheckPong(t, readOne(t, c))
	other := connect(t, n, "alice") // another key of the same subject
	if err := n.Revoker.RevokeKey(testCtx(t), claims); err != nil {
		t.Fatal(err)
	}
	neExpectCloseFirst(t, c, 3004, "access key revoked")
	nePing(t, other)
}

func neTestMultiplePacketsPerMessage(t *testing.T, n *node.Node) {
	c := connect(t, n, "alice")

	// [Ping, Ping]: two Pongs, in one message or two.
	send(t, c, packet.AppendPing(packet.AppendPing(nil)))
	ps, _ := neReadPackets(t, c, 2)
	neCheckPong(t, ps[0])
	neCheckPong(t, ps[1])

	// An empty message holds no packet: nothing answers it.
	send(t, c, nil)
	nePing(t, c)

	// [Subscribe a, Subscribe b, Ping]: answered in order.
	msg := packet.AppendSubscribe(nil, "mp-a")
	msg = packet.AppendSubscribe(msg, "mp-b")
	msg = packet.AppendPing(msg)
	send(t, c, msg)
	ps, _ = neReadPackets(t, c, 3)
	if ps[0].ID != packet.PacketSubscribed || string(ps[0].Channel) != "mp-a" ||
		ps[1].ID != packet.PacketSubscribed || string(ps[1].Channel) != "mp-b" {
		t.Fatalf("got %s, want Subscribed(mp-a), Subscribed(mp-b), Pong", neDescribeAll(ps))
	}
	neCheckPong(t, ps[2])
}

func neTestMalformedAfterAuth(t *testing.T, n *node.Node) {
	cases := []struct {
		name string
		msg  []byte
		code websocket.StatusCode
		want string
	}{
		{"truncated string", []byte{0x02, 0x00, 0x05, 'a'}, 1002, "packet truncated at byte 1"},
		{"truncated length", []byte{0x02, 0x00}, 1002, "packet truncated at byte 1"},
		{"truncated payload", []byte{0x04, 0x00, 0x01, 'c', 0x00, 0x00, 0x00, 0x09, 'x'}, 1002, "packet truncated at byte 4"},
		{"unknown packet", []byte{0x09}, 1002, "unknown packet id at byte 0"},
		{"ping then unknown", []byte{0x00, 0x09}, 1002, "unknown packet id at byte 1"},
		{"unknown setting", []byte{0x01, 0x04, 0x00, 0xff}, 1002, "unknown setting id at byte 1"},
		{"reserved setting 0", []byte{0x01, 0x00, 0x00, 0xff}, 1002, "unknown setting id at byte 1"},
		{"settings without terminator", []byte{0x01, 0x01, 0x01}, 1002, "packet truncated at byte 3"},
		{"negative string length", []byte{0x02, 0xff, 0xff}, 1002, "negative length at byte 1"},
		{"negative bytes length", []byte{0x04, 0x00, 0x01, 'c', 0xff, 0xff, 0xff, 0xff}, 1002, "negative length at byte 4"},
		{"invalid utf-8 channel", []byte{0x02, 0x00, 0x02, 'a', 0xff}, 1007, "invalid utf-8 at byte 1"},
		{"invalid utf-8 after ping", []byte{0x00, 0x03, 0x00, 0x01, 0xc0}, 1007, "invalid utf-8 at byte 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := connect(t, n, "alice")
			send(t, c, tc.msg)
			// Nothing of the message runs: no Pong, no Subscribed first.
			neExpectCloseFirst(t, c, tc.code, tc.want)
		})
	}

	// A malformed message's valid Publish is not published either.
	t.Run("publish not run", func(t *testing.T) {
		t.Parallel()
		sub := connect(t, n, "bob")
		subscribe(t, sub, "malformed-m")
		c := connect(t, n, "alice")
		msg := packet.AppendPublish(nil, "malformed-m", []byte("must not arrive"))
		msg = append(msg, 0x09)
		send(t, c, msg)
		neExpectCloseFirst(t, c, 1002, "unknown packet id at byte")
		other := connect(t, n, "carol")
		nePublishSync(t, other, "malformed-m", []byte("marker"))
		neCheckMessage(t, readOne(t, sub), "malformed-m", []byte("marker"))
	})
}

// neAssertNoEcho checks that a's publish on channel does not come back to
// a: b publishes a marker afterwards, and the marker is the next thing a
// (subscribed to channel) receives.
func neAssertNoEcho(t testing.TB, a, b *websocket.Conn, channel string) {
	t.Helper()
	nePublishSync(t, a, channel, []byte("self"))
	nePublishSync(t, b, channel, []byte("marker"))
	neCheckMessage(t, readOne(t, a), channel, []byte("marker"))
}

func neTestEchoSetting(t *testing.T, n *node.Node) {
	a := connect(t, n, "alice")
	b := connect(t, n, "bob")
	subscribe(t, a, "echo-room")
	subscribe(t, b, "echo-room")

	// Default echo off: b gets a's publish, a does not.
	nePublishSync(t, a, "echo-room", []byte("one"))
	neCheckMessage(t, readOne(t, b), "echo-room", []byte("one"))
	nePublishSync(t, b, "echo-room", []byte("marker1"))
	neCheckMessage(t, readOne(t, a), "echo-room", []byte("marker1"))

	// Echo on (01 01 01 ff): a's publish comes back to a.
	send(t, a, []byte{0x01, 0x01, 0x01, 0xff})
	nePublishSync(t, a, "echo-room", []byte("two"))
	neCheckMessage(t, readOne(t, a), "echo-room", []byte("two"))
	neCheckMessage(t, readOne(t, b), "echo-room", []byte("two"))

	// Echo off again (01 01 00 ff): b gets a's publish, then b's marker
	// is the next thing a receives.
	send(t, a, []byte{0x01, 0x01, 0x00, 0xff})
	nePublishSync(t, a, "echo-room", []byte("three"))
	neCheckMessage(t, readOne(t, b), "echo-room", []byte("three"))
	nePublishSync(t, b, "echo-room", []byte("marker2"))
	neCheckMessage(t, readOne(t, a), "echo-room", []byte("marker2"))
}

func neTestSettingsRejected(t *testing.T, n *node.Node) {
	a := connect(t, n, "alice")
	b := connect(t, n, "bob")
	subscribe(t, a, "settings-room")

	long := strings.Repeat("n", 65)
	cases := []struct {
		name     string
		settings []packet.Setting
		want     string
	}{
		{"echo 2", []packet.Setting{{ID: packet.SettingEcho, Byte: 2}}, "echo"},
		{"echo -1", []packet.Setting{{ID: packet.SettingEcho, Byte: -1}}, "echo"},
		{"batch -1", []packet.Setting{{ID: packet.SettingBatchWindow, Short: -1}}, "batch window"},
		{"batch 1001", []packet.Setting{{ID: packet.SettingBatchWindow, Short: 1001}}, "batch window"},
		{"name 65 bytes", []packet.Setting{{ID: packet.SettingClientName, String: []byte(long)}}, "client name"},
		{"echo then bad batch", []packet.Setting{
			{ID: packet.SettingEcho, Byte: 1},
			{ID: packet.SettingClientName, String: []byte("ok")},
			{ID: packet.SettingBatchWindow, Short: 5000},
		}, "batch window"},
		{"bad name after echo", []packet.Setting{
			{ID: packet.SettingEcho, Byte: 1},
			{ID: packet.SettingClientName, String: []byte(long)},
		}, "client name"},
	}
	for _, tc := range cases {
		// The Error comes first, then the Pong of the same message: the
		// connection goes on.
		send(t, a, packet.AppendPing(packet.AppendSettings(nil, tc.settings...)))
		ps, _ := neReadPackets(t, a, 2)
		neCheckError(t, ps[0], 400, tc.want)
		neCheckPong(t, ps[1])
		// Nothing of the packet applied: echo is still off.
		neAssertNoEcho(t, a, b, "settings-room")
	}

	// In range values are accepted silently: a 64-byte name, batch 0 and
	// 1000, echo 0.
	send(t, a, packet.AppendPing(packet.AppendSettings(nil,
		packet.Setting{ID: packet.SettingClientName, String: []byte(strings.Repeat("n", 64))},
		packet.Setting{ID: packet.SettingBatchWindow, Short: 1000},
		packet.Setting{ID: packet.SettingBatchWindow, Short: 0},
		packet.Setting{ID: packet.SettingEcho, Byte: 0},
	)))
	neCheckPong(t, readOne(t, a))
	// An empty Settings packet (01 ff) is valid.
	send(t, a, []byte{0x01, 0xff, 0x00})
	neCheckPong(t, readOne(t, a))
}

func neTestBatchWindow(t *testing.T, n *node.Node) {
	pub := connect(t, n, "alice")
	sub := connect(t, n, "bob")
	subscribe(t, sub, "batch-feed")

	publishFive := func(prefix string) [][]byte {
		var msg []byte
		var want [][]byte
		for i := range 5 {
			p := []byte(fmt.Sprintf("%s-%d", prefix, i))
			want = append(want, p)
			msg = packet.AppendPublish(msg, "batch-feed", p)
		}
		send(t, pub, packet.AppendPing(msg))
		neCheckPong(t, readOne(t, pub))
		return want
	}

	// Batch window 200 ms (01 03 00 c8 ff).
	send(t, sub, packet.AppendPing([]byte{0x01, 0x03, 0x00, 0xc8, 0xff}))
	neCheckPong(t, readOne(t, sub))
	want := publishFive("batched")
	ps, msgs := neReadPackets(t, sub, 5)
	for i, p := range ps {
		neCheckMessage(t, p, "batch-feed", want[i])
	}
	if msgs >= 5 {
		t.Fatalf("5 publishes in a 200 ms window came in %d messages, want them coalesced", msgs)
	}

	// Batch window 0: every Message alone.
	send(t, sub, packet.AppendPing([]byte{0x01, 0x03, 0x00, 0x00, 0xff}))
	neCheckPong(t, readOne(t, sub))
	want = publishFive("single")
	for i := range 5 {
		neCheckMessage(t, readOne(t, sub), "batch-feed", want[i])
	}
}

func neTestMessageEncoding(t *testing.T, n *node.Node) {
	pub := connect(t, n, "alice")
	sub := connect(t, n, "bob")
	subscribe(t, sub, "c")

	// One whole server message, byte for byte.
	nePublishSync(t, pub, "c", []byte("xy"))
	typ, msg, err := sub.Read(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x01, 0x00, 0x01, 0x63, 0x00, 0x00, 0x00, 0x02, 0x78, 0x79}
	if typ != websocket.MessageBinary || !bytes.Equal(msg, want) {
		t.Fatalf("got %v % x, want binary % x", typ, msg, want)
	}

	// Empty, binary with zero bytes, and 60 KiB payloads arrive intact.
	big := make([]byte, 60<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for _, p := range [][]byte{{}, {0, 1, 0, 0, 0xff, 0}, big} {
		nePublishSync(t, pub, "c", p)
		typ, msg, err := sub.Read(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageBinary || !bytes.Equal(msg, packet.AppendMessage(nil, "c", p)) {
			t.Fatalf("payload of %d bytes: got %d bytes % x...", len(p), len(msg), msg[:min(len(msg), 16)])
		}
	}
}

func neTestSubscribeUnsubscribe(t *testing.T, n *node.Node) {
	pub := connect(t, n, "alice")
	sub := connect(t, n, "bob")

	subscribe(t, sub, "su-a")
	subscribe(t, sub, "su-a") // twice: Subscribed again
	subscribe(t, sub, "su-b")

	// Subscribed twice, delivered once.
	nePublishSync(t, pub, "su-a", []byte("a1"))
	nePublishSync(t, pub, "su-b", []byte("b1"))
	neCheckMessage(t, readOne(t, sub), "su-a", []byte("a1"))
	neCheckMessage(t, readOne(t, sub), "su-b", []byte("b1"))

	// Unsubscribe: silent, and a publish on a no longer arrives (the
	// marker on b comes next).
	send(t, sub, packet.AppendPing(packet.AppendUnsubscribe(nil, "su-a")))
	neCheckPong(t, readOne(t, sub))
	nePublishSync(t, pub, "su-a", []byte("a2"))
	nePublishSync(t, pub, "su-b", []byte("marker"))
	neCheckMessage(t, readOne(t, sub), "su-b", []byte("marker"))

	// Unsubscribing a channel never subscribed (or twice) is silent.
	send(t, sub, packet.AppendPing(packet.AppendUnsubscribe(packet.AppendUnsubscribe(nil, "su-never"), "su-a")))
	neCheckPong(t, readOne(t, sub))

	// Subscribing again after unsubscribing works.
	subscribe(t, sub, "su-a")
	nePublishSync(t, pub, "su-a", []byte("a3"))
	neCheckMessage(t, readOne(t, sub), "su-a", []byte("a3"))
}

// neTestSubscribeFromWithoutHistory: on a node that keeps no history every
// SubscribeFrom is refused with Error 400, checked in the protocol's order
// (position, policy, history), and subscribes nothing.
func neTestSubscribeFromWithoutHistory(t *testing.T, n *node.Node) {
	pub := connect(t, n, "alice")
	sub := connect(t, n, "bob")
	for _, tc := range []struct {
		channel       string
		epoch, offset int64
		code          int16
		want          string
	}{
		{"sf-a", 0, 0, packet.ErrorBadRequest, `subscribe from "sf-a": channel keeps no history`},
		{"sf-a", 7, 3, packet.ErrorBadRequest, `subscribe from "sf-a": channel keeps no history`},
		{"sf-a", 0, 5, packet.ErrorBadRequest, `subscribe from "sf-a": bad position (epoch 0, offset 5)`},
		{"sf-a", 7, -1, packet.ErrorBadRequest, `subscribe from "sf-a": bad position (epoch 7, offset -1)`},
		{"user:alice", 0, 0, packet.ErrorForbidden, `subscribe from "user:alice": `},
		{"#kosync:x", 0, 0, packet.ErrorForbidden, `subscribe from "#kosync:x": `},
	} {
		send(t, sub, packet.AppendSubscribeFrom(nil, tc.channel, tc.epoch, tc.offset))
		p := readOne(t, sub)
		neCheckError(t, p, tc.code, tc.want)
		if tc.code == packet.ErrorBadRequest && string(p.Text) != tc.want {
			t.Fatalf("Error text %q, want %q", p.Text, tc.want)
		}
	}
	// Nothing was subscribed: a publish on sf-a does not arrive, the
	// marker on a plain subscription does.
	subscribe(t, sub, "sf-marker")
	nePublishSync(t, pub, "sf-a", []byte("lost"))
	nePublishSync(t, pub, "sf-marker", []byte("marker"))
	neCheckMessage(t, readOne(t, sub), "sf-marker", []byte("marker"))
}

func neTestChannelPolicy(t *testing.T, n *node.Node) {
	alice := connect(t, n, "alice")
	bob := connect(t, n, "bob")

	refuse := func(c *websocket.Conn, msg []byte, code int16, want string) {
		t.Helper()
		send(t, c, packet.AppendPing(msg))
		ps, _ := neReadPackets(t, c, 2)
		neCheckError(t, ps[0], code, want)
		neCheckPong(t, ps[1])
	}
	long := strings.Repeat("x", 256)
	for _, ch := range []string{"", long, "a\x01b", "a\x7fb", "tab\there", "nl\n"} {
		refuse(alice, packet.AppendSubscribe(nil, ch), 400, "subscribe")
		refuse(alice, packet.AppendPublish(nil, ch, []byte("p")), 400, "publish")
	}
	for _, ch := range []string{"user:bob", "user:bob:inbox", "user:bobby", "user:"} {
		refuse(alice, packet.AppendSubscribe(nil, ch), 403, fmt.Sprintf("subscribe %q", ch))
		refuse(alice, packet.AppendPublish(nil, ch, []byte("p")), 403, fmt.Sprintf("publish %q", ch))
	}
	refuse(bob, packet.AppendSubscribe(nil, "user:bobby"), 403, "subscribe")
	refuse(alice, packet.AppendPublish(nil, "server:news", []byte("p")), 403, "publish \"server:news\"")
	refuse(bob, packet.AppendPublish(nil, "server:news", []byte("p")), 403, "publish")

	// Allowed: 255-byte names, own personal channels, server: subscribe.
	subscribe(t, alice, strings.Repeat("x", 255))
	subscribe(t, alice, "user:alice")
	subscribe(t, bob, "user:bob")
	subscribe(t, bob, "user:bob:inbox")
	subscribe(t, alice, "server:news")
	subscribe(t, bob, "server:news")
	send(t, bob, []byte{0x01, 0x01, 0x01, 0xff}) // echo on
	nePublishSync(t, bob, "user:bob:inbox", []byte("note to self"))
	neCheckMessage(t, readOne(t, bob), "user:bob:inbox", []byte("note to self"))

	// The admin API publishes on server: channels.
	body := []byte{0x00, 'n', 0x00, 0xff, 'e', 'w', 's'}
	resp, err := http.Post(adminURL(n)+"/api/publish?channel="+url.QueryEscape("server:news"),
		"application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin publish: %d %s", resp.StatusCode, rb)
	}
	neCheckMessage(t, readOne(t, alice), "server:news", body)
	neCheckMessage(t, readOne(t, bob), "server:news", body)
}

func neTestSubscriptionLimit(t *testing.T, n *node.Node) {
	c := connect(t, n, "alice")
	var msg []byte
	for i := range 128 {
		msg = packet.AppendSubscribe(msg, "ch-"+strconv.Itoa(i))
	}
	send(t, c, msg)
	ps, _ := neReadPackets(t, c, 128)
	for i, p := range ps {
		if p.ID != packet.PacketSubscribed || string(p.Channel) != "ch-"+strconv.Itoa(i) {
			t.Fatalf("packet %d: got %s, want Subscribed(ch-%d)", i, describe(p), i)
		}
	}
	// The 129th: Error 429.
	send(t, c, packet.AppendPing(packet.AppendSubscribe(nil, "ch-128")))
	ps, _ = neReadPackets(t, c, 2)
	neCheckError(t, ps[0], 429, "subscribe \"ch-128\"")
	neCheckPong(t, ps[1])
	// At the limit, subscribing again to a channel already held is fine.
	subscribe(t, c, "ch-0")
	// After an unsubscribe there is room again.
	send(t, c, packet.AppendUnsubscribe(nil, "ch-0"))
	subscribe(t, c, "ch-128")
}

func TestNativeMessageTooBig(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.MaxMessageSize = 4096 })
	sub := connect(t, n, "bob")
	subscribe(t, sub, "big")

	// Exactly 4096 bytes is allowed.
	pub := connect(t, n, "alice")
	payload := bytes.Repeat([]byte{0xab}, 4096-10)
	msg := packet.AppendPublish(nil, "big", payload)
	if len(msg) != 4096 {
		t.Fatalf("test bug: message is %d bytes", len(msg))
	}
	send(t, pub, msg)
	neCheckMessage(t, readOne(t, sub), "big", payload)

	// One byte more closes with 1009.
	send(t, pub, packet.AppendPublish(nil, "big", append(payload, 0xab)))
	neExpectCloseFirst(t, pub, websocket.StatusMessageTooBig, "message too big")

	// The node goes on serving.
	nePing(t, sub)
	other := connect(t, n, "carol")
	nePing(t, other)
}

func neTestFanOut(t *testing.T, n *node.Node) {
	const subs, pubs = 50, 100
	conns := make([]*websocket.Conn, subs)
	for i := range conns {
		conns[i] = connect(t, n, "sub"+strconv.Itoa(i))
		subscribe(t, conns[i], "fan")
	}
	pub := connect(t, n, "publisher")
	for i := range pubs {
		send(t, pub, packet.AppendPublish(nil, "fan", []byte(fmt.Sprintf("seq-%03d", i))))
	}
	for s, c := range conns {
		got := 0
		for got < pubs {
			for _, p := range readMessage(t, c) {
				want := []byte(fmt.Sprintf("seq-%03d", got))
				if p.ID != packet.PacketMessage || string(p.Channel) != "fan" || !bytes.Equal(p.Payload, want) {
					t.Fatalf("subscriber %d, packet %d: got %s, want Message(fan, %s)", s, got, describe(p), want)
				}
				got++
			}
		}
		if got != pubs {
			t.Fatalf("subscriber %d got %d messages, want %d", s, got, pubs)
		}
	}
}

// neMetric returns the value of an unlabelled metric on the admin
// listener's /metrics.
func neMetric(t testing.TB, n *node.Node, name string) float64 {
	t.Helper()
	resp, err := http.Get(adminURL(n) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}

func TestNativeSlowConsumer(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.MaxOutbound = 64 << 10 })
	if v := neMetric(t, n, "gateway_slow_consumer_disconnects_total"); v != 0 {
		t.Fatalf("slow consumer disconnects = %v before the test", v)
	}
	slow := connect(t, n, "slow")
	subscribe(t, slow, "flood")
	pub := connect(t, n, "alice")
	// The slow client reads nothing. The kernel's socket buffers absorb a
	// few MB on loopback before the gateway's own outbound buffer grows, so
	// publish 600 KB batches until the metric moves (at most 15 MB).
	payload := bytes.Repeat([]byte{'f'}, 60<<10)
	for i := 0; ; i++ {
		for range 10 {
			send(t, pub, packet.AppendPublish(nil, "flood", payload))
		}
		nePing(t, pub) // every publish was taken
		if neMetric(t, n, "gateway_slow_consumer_disconnects_total") >= 1 {
			break
		}
		if i == 25 {
			t.Fatal("15 MB published to a client that reads nothing, and it was never closed as a slow consumer")
		}
	}

	// The slow client was dropped: reading what is buffered ends in an
	// error (a close 1008 if the close frame got through) well before the
	// deadline.
	ctx := neCtx(t, waitFor)
	for {
		_, _, err := slow.Read(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			t.Fatalf("the slow consumer is still connected: %v", err)
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.StatusPolicyViolation {
			t.Fatalf("slow consumer closed with %d %q, want 1008", ce.Code, ce.Reason)
		}
		break
	}
	// Others are served.
	nePing(t, pub)
	other := connect(t, n, "carol")
	nePing(t, other)
	if v := neMetric(t, n, "gateway_slow_consumer_disconnects_total"); v < 1 {
		t.Fatalf("gateway_slow_consumer_disconnects_total = %v, want >= 1", v)
	}
}

func neTestPlainHTTP(t *testing.T, n *node.Node) {
	base := "http://" + n.Addr().String()
	client := &http.Client{Timeout: waitFor, Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	get := func(path string) (*http.Response, map[string]string, bool) {
		t.Helper()
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(testCtx(t), trace), http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("GET %s: body %q is not a JSON object: %v", path, raw, err)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("GET %s: Content-Type %q", path, ct)
		}
		return resp, body, reused
	}

	// A plain GET of /api/ws is KOsync's URI endpoint; the WebSocket-only
	// path /api/ws/{token} answers 426.
	resp, body, _ := get("/api/ws/not-an-upgrade")
	if resp.StatusCode != http.StatusUpgradeRequired || body["error"] == "" {
		t.Fatalf("GET /api/ws/not-an-upgrade: %d %v, want 426 with an error", resp.StatusCode, body)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("426 without Upgrade: websocket: %v", resp.Header)
	}
	resp, body, reused := get("/nope")
	if resp.StatusCode != http.StatusNotFound || body["error"] != "not found" {
		t.Fatalf("GET /nope: %d %v, want 404 not found", resp.StatusCode, body)
	}
	if !reused {
		t.Fatal("the second request did not reuse the kept-alive connection")
	}
	resp, _, reused = get("/api/ws/x?x=1")
	if resp.StatusCode != http.StatusUpgradeRequired || !reused {
		t.Fatalf("third request: %d reused=%v", resp.StatusCode, reused)
	}
	// The WebSocket side still works.
	c := connect(t, n, "alice")
	nePing(t, c)
}

func TestNativeShutdown(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	c := connect(t, n, "alice")
	subscribe(t, c, "room")
	done := make(chan error, 1)
	go func() { done <- n.Shutdown(neCtx(t, waitFor)) }()
	neExpectCloseFirst(t, c, websocket.StatusGoingAway, "server shutting down")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return")
	}
	// No more upgrades.
	ctx := neCtx(t, waitFor)
	if c2, _, err := websocket.Dial(ctx, wsURL(n), nil); err == nil {
		c2.CloseNow()
		t.Fatal("dial after Shutdown succeeded")
	}
}
