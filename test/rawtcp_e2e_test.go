package test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// End-to-end tests of the frame layer and the HTTP head parser over raw
// TCP: hand-written requests and frames. Helpers of this file start with
// "rt".

type rtConn struct {
	t   testing.TB
	nc  net.Conn
	br  *bufio.Reader
	key string // Sec-WebSocket-Key sent
}

type rtFrame struct {
	fin     bool
	rsv     byte
	op      ws.OpCode
	payload []byte
}

// rtDial opens a TCP connection to the node's main listener; every read
// and write is bounded by waitFor.
func rtDial(t testing.TB, n *node.Node) *rtConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", n.Addr().String(), waitFor)
	if err != nil {
		t.Fatalf("tcp dial: %v", err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	var k [16]byte
	_, _ = rand.Read(k[:])
	return &rtConn{t: t, nc: nc, br: bufio.NewReader(nc), key: base64.StdEncoding.EncodeToString(k[:])}
}

// request returns an upgrade request head for path.
func (c *rtConn) request(path string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\n" +
		"Host: " + c.nc.RemoteAddr().String() + "\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + c.key + "\r\n" +
		"Sec-WebSocket-Version: 13\r\n\r\n")
}

func (c *rtConn) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("tcp write: %v", err)
	}
}

// rtFrameBytes builds a masked client frame.
func rtFrameBytes(fin bool, rsv byte, op ws.OpCode, payload []byte) []byte {
	b0 := byte(op) | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	out = append(out, mask[:]...)
	start := len(out)
	out = append(out, payload...)
	ws.Cipher(out[start:], mask, 0)
	return out
}

// rtMsg builds a masked, final, binary frame.
func rtMsg(payload []byte) []byte { return rtFrameBytes(true, 0, ws.OpBinary, payload) }

// readFrame reads one server frame and checks it is not masked.
func (c *rtConn) readFrame() rtFrame {
	c.t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		c.t.Fatalf("read frame header: %v", err)
	}
	f := rtFrame{fin: h[0]&0x80 != 0, rsv: h[0] >> 4 & 7, op: ws.OpCode(h[0] & 0x0f)}
	if h[1]&0x80 != 0 {
		c.t.Fatalf("server frame % x is masked", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			c.t.Fatal(err)
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			c.t.Fatal(err)
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 1<<22 {
		c.t.Fatalf("server frame of %d bytes", n)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, f.payload); err != nil {
		c.t.Fatalf("read frame payload: %v", err)
	}
	if f.rsv != 0 {
		c.t.Fatalf("server frame has rsv %d", f.rsv)
	}
	return f
}

// expectBinary reads a final binary frame and checks its exact payload.
func (c *rtConn) expectBinary(want []byte) {
	c.t.Helper()
	f := c.readFrame()
	if !f.fin || f.op != ws.OpBinary || !bytes.Equal(f.payload, want) {
		c.t.Fatalf("got frame fin=%v op=%v % x, want binary % x", f.fin, f.op, f.payload, want)
	}
}

// expectPong reads a binary frame holding exactly one native Pong.
func (c *rtConn) expectPong() {
	c.t.Helper()
	f := c.readFrame()
	if !f.fin || f.op != ws.OpBinary || len(f.payload) != 9 || f.payload[0] != packet.PacketPong {
		c.t.Fatalf("got frame fin=%v op=%v % x, want a binary Pong", f.fin, f.op, f.payload)
	}
	ms := int64(binary.BigEndian.Uint64(f.payload[1:]))
	if d := time.Since(time.UnixMilli(ms)); d < -10*time.Second || d > 10*time.Second {
		c.t.Fatalf("Pong clock %d is %v away from now", ms, d)
	}
}

// expectClose reads a close frame with code and a reason containing want,
// then the end of the TCP stream.
func (c *rtConn) expectClose(code uint16, want string) {
	c.t.Helper()
	f := c.readFrame()
	if f.op != ws.OpClose || !f.fin || len(f.payload) < 2 {
		c.t.Fatalf("got frame op=%v % x, want a close frame with code %d", f.op, f.payload, code)
	}
	got, reason := binary.BigEndian.Uint16(f.payload), string(f.payload[2:])
	if got != code || !strings.Contains(reason, want) {
		c.t.Fatalf("closed with %d %q, want %d containing %q", got, reason, code, want)
	}
	c.expectEOF()
}

// expectEOF checks the server ends the TCP stream with nothing more.
func (c *rtConn) expectEOF() {
	c.t.Helper()
	rest, err := io.ReadAll(c.br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("after the close: %v (got % x)", err, rest)
	}
	if len(rest) > 0 {
		c.t.Fatalf("got % x after the close frame", rest)
	}
}

// readUpgrade reads the 101 answer and checks its Sec-WebSocket-Accept and
// the hello frame.
func (c *rtConn) readUpgrade() {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("read upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.t.Fatalf("upgrade answered %s", resp.Status)
	}
	sum := sha1.Sum([]byte(c.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		c.t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, want)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		c.t.Fatalf("Upgrade header = %q", resp.Header.Get("Upgrade"))
	}
	c.expectBinary(packet.Hello)
}

func rtAuthMsg(t testing.TB, n *node.Node) []byte {
	return packet.AppendAuth(nil, packet.Version, issueKey(t, n, "alice", time.Hour))
}

// rtConnect upgrades and authenticates with the request head and the auth
// frame in one TCP write.
func rtConnect(t testing.TB, n *node.Node) *rtConn {
	t.Helper()
	c := rtDial(t, n)
	c.write(append(c.request("/api/ws"), rtMsg(rtAuthMsg(t, n))...))
	c.readUpgrade()
	c.expectPong()
	return c
}

// TestRaw runs the raw TCP scenarios that need a node with default limits
// on one shared node, in parallel.
func TestRaw(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *node.Node)
	}{
		{"UpgradeAndAuthInOneWrite", rtTestUpgradeAndAuthInOneWrite},
		{"UpgradeAuthAndPacketsInOneWrite", rtTestUpgradeAuthAndPacketsInOneWrite},
		{"HeadDribbled", rtTestHeadDribbled},
		{"HeadTooLarge", rtTestHeadTooLarge},
		{"FramingErrors", rtTestFramingErrors},
		{"FragmentedMessageWithPing", rtTestFragmentedMessageWithPing},
		{"FragmentedAuth", rtTestFragmentedAuth},
		{"CloseHandshake", rtTestCloseHandshake},
		{"UpgradeUnknownPath", rtTestUpgradeUnknownPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, n)
		})
	}
}

func rtTestUpgradeAndAuthInOneWrite(t *testing.T, n *node.Node) {
	c := rtConnect(t, n)
	// The session works.
	c.write(rtMsg([]byte{packet.PacketPing}))
	c.expectPong()
}

func rtTestUpgradeAuthAndPacketsInOneWrite(t *testing.T, n *node.Node) {
	c := rtDial(t, n)
	b := c.request("/api/ws")
	b = append(b, rtMsg(rtAuthMsg(t, n))...)
	b = append(b, rtMsg(packet.AppendSubscribe(nil, "one"))...)
	b = append(b, rtMsg([]byte{packet.PacketPing})...)
	c.write(b)
	c.readUpgrade()
	c.expectPong()
	c.expectBinary(packet.AppendSubscribed(nil, "one"))
	c.expectPong()
}

func rtTestHeadDribbled(t *testing.T, n *node.Node) {
	// The default 10 s handshake timeout covers the dribble.
	c := rtDial(t, n)
	for _, b := range c.request("/api/ws") {
		c.write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	c.readUpgrade()
	// The auth frame dribbled too.
	for _, b := range rtMsg(rtAuthMsg(t, n)) {
		c.write([]byte{b})
		time.Sleep(time.Millisecond)
	}
	c.expectPong()
}

func rtTestHeadTooLarge(t *testing.T, n *node.Node) {
	expect431 := func(c *rtConn) {
		t.Helper()
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("got %s, want 431", resp.Status)
		}
		c.expectEOF()
	}
	t.Run("complete", func(t *testing.T) {
		c := rtDial(t, n)
		head := c.request("/api/ws")
		pad := "X-Pad: " + strings.Repeat("a", 9000) + "\r\n"
		head = append(head[:len(head)-2], pad+"\r\n"...)
		c.write(head)
		expect431(c)
	})
	t.Run("never ends", func(t *testing.T) {
		c := rtDial(t, n)
		head := c.request("/api/ws")
		head = append(head[:len(head)-2], "X-Pad: "+strings.Repeat("a", 9000)...)
		c.write(head)
		expect431(c)
	})
	t.Run("just under the limit", func(t *testing.T) {
		c := rtDial(t, n)
		head := c.request("/api/ws")
		room := 8<<10 - len(head) - len("X-Pad: \r\n")
		head = append(head[:len(head)-2], "X-Pad: "+strings.Repeat("a", room)+"\r\n\r\n"...)
		if len(head) != 8<<10 {
			t.Fatalf("test bug: head is %d bytes", len(head))
		}
		c.write(append(head, rtMsg(rtAuthMsg(t, n))...))
		c.readUpgrade()
		c.expectPong()
	})
}

func TestRawHeadTimeout408(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.HandshakeTimeout = 2 * time.Second })
	c := rtDial(t, n)
	c.write([]byte("GET /api/ws HTTP/1.1\r\nHost: x\r\n"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("got %s, want 408", resp.Status)
	}
	c.expectEOF()
}

func rtTestFramingErrors(t *testing.T, n *node.Node) {
	topBit := []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
	unmasked := []byte{0x82, 0x01, packet.PacketPing}
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"unmasked", unmasked, "masked"},
		{"reserved opcode 3", rtFrameBytes(true, 0, ws.OpCode(0x3), []byte{0}), "reserved op code"},
		{"reserved control opcode b", rtFrameBytes(true, 0, ws.OpCode(0xb), nil), "reserved op code"},
		{"rsv1", rtFrameBytes(true, 4, ws.OpBinary, []byte{0}), "rsv"},
		{"rsv3", rtFrameBytes(true, 1, ws.OpBinary, []byte{0}), "rsv"},
		{"continuation without start", rtFrameBytes(true, 0, ws.OpContinuation, []byte{0}), "continuation"},
		{"new message inside fragmented", append(rtFrameBytes(false, 0, ws.OpBinary, []byte{0}),
			rtFrameBytes(true, 0, ws.OpBinary, []byte{0})...), "continuation"},
		{"fragmented ping", rtFrameBytes(false, 0, ws.OpPing, nil), "control frame"},
		{"ping over 125 bytes", rtFrameBytes(true, 0, ws.OpPing, make([]byte, 126)), "control frame"},
		{"close with 1 byte", rtFrameBytes(true, 0, ws.OpClose, []byte{0x03}), "invalid close frame"},
		{"close code 1005", rtFrameBytes(true, 0, ws.OpClose, []byte{0x03, 0xed}), "invalid close frame"},
		{"close code 1006", rtFrameBytes(true, 0, ws.OpClose, []byte{0x03, 0xee}), "invalid close frame"},
		{"close code 999", rtFrameBytes(true, 0, ws.OpClose, []byte{0x03, 0xe7}), "invalid close frame"},
		{"close code 5000", rtFrameBytes(true, 0, ws.OpClose, []byte{0x13, 0x88}), "invalid close frame"},
		{"close reason not utf-8", rtFrameBytes(true, 0, ws.OpClose, []byte{0x03, 0xe8, 0xff}), "invalid close frame"},
		{"64-bit length top bit", topBit, "frame length out of range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := rtConnect(t, n)
			c.write(tc.frame)
			c.expectClose(1002, tc.want)
		})
	}
}

func rtTestFragmentedMessageWithPing(t *testing.T, n *node.Node) {
	c := rtConnect(t, n)
	// [Subscribe "frag", Ping] in 3 fragments, a ping control frame between
	// the first two; each frame in its own TCP write.
	msg := packet.AppendPing(packet.AppendSubscribe(nil, "frag"))
	c.write(rtFrameBytes(false, 0, ws.OpBinary, msg[:3]))
	c.write(rtFrameBytes(true, 0, ws.OpPing, []byte("hi")))
	c.write(rtFrameBytes(false, 0, ws.OpContinuation, msg[3:5]))
	c.write(rtFrameBytes(true, 0, ws.OpContinuation, msg[5:]))
	f := c.readFrame()
	if !f.fin || f.op != ws.OpPong || string(f.payload) != "hi" {
		t.Fatalf("got frame fin=%v op=%v %q, want pong \"hi\"", f.fin, f.op, f.payload)
	}
	c.expectBinary(packet.AppendSubscribed(nil, "frag"))
	c.expectPong()

	// The same with every frame in one write, and an empty first fragment.
	b := rtFrameBytes(false, 0, ws.OpBinary, nil)
	b = append(b, rtFrameBytes(false, 0, ws.OpContinuation, []byte{packet.PacketPing})...)
	b = append(b, rtFrameBytes(true, 0, ws.OpPing, nil)...)
	b = append(b, rtFrameBytes(true, 0, ws.OpContinuation, []byte{packet.PacketPing})...)
	c.write(b)
	f = c.readFrame()
	if f.op != ws.OpPong || len(f.payload) != 0 {
		t.Fatalf("got frame op=%v % x, want an empty pong", f.op, f.payload)
	}
	c.expectPong()
	c.expectPong()
}

func rtTestFragmentedAuth(t *testing.T, n *node.Node) {
	c := rtDial(t, n)
	c.write(c.request("/api/ws"))
	c.readUpgrade()
	auth := rtAuthMsg(t, n)
	c.write(rtFrameBytes(false, 0, ws.OpBinary, auth[:3]))
	c.write(rtFrameBytes(false, 0, ws.OpContinuation, auth[3:10]))
	c.write(rtFrameBytes(true, 0, ws.OpContinuation, auth[10:]))
	c.expectPong()
	c.write(rtMsg([]byte{packet.PacketPing}))
	c.expectPong()
}

func rtTestCloseHandshake(t *testing.T, n *node.Node) {
	t.Run("code 1000", func(t *testing.T) {
		t.Parallel()
		c := rtConnect(t, n)
		c.write(rtFrameBytes(true, 0, ws.OpClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}))
		f := c.readFrame()
		if !f.fin || f.op != ws.OpClose || !bytes.Equal(f.payload, []byte{0x03, 0xe8}) {
			t.Fatalf("got frame op=%v % x, want close 03 e8", f.op, f.payload)
		}
		c.expectEOF()
	})
	t.Run("code 4000 before auth", func(t *testing.T) {
		t.Parallel()
		c := rtDial(t, n)
		c.write(append(c.request("/api/ws"), rtFrameBytes(true, 0, ws.OpClose, []byte{0x0f, 0xa0})...))
		c.readUpgrade()
		f := c.readFrame()
		if f.op != ws.OpClose || !bytes.Equal(f.payload, []byte{0x0f, 0xa0}) {
			t.Fatalf("got frame op=%v % x, want close 0f a0", f.op, f.payload)
		}
		c.expectEOF()
	})
	t.Run("empty", func(t *testing.T) {
		t.Parallel()
		c := rtConnect(t, n)
		c.write(rtFrameBytes(true, 0, ws.OpClose, nil))
		f := c.readFrame()
		if !f.fin || f.op != ws.OpClose || len(f.payload) != 0 {
			t.Fatalf("got frame op=%v % x, want an empty close", f.op, f.payload)
		}
		c.expectEOF()
	})
	t.Run("answer to a server close", func(t *testing.T) {
		t.Parallel()
		c := rtConnect(t, n)
		c.write(rtMsg([]byte{0x09})) // malformed: the server closes 1002
		f := c.readFrame()
		if f.op != ws.OpClose || binary.BigEndian.Uint16(f.payload) != 1002 {
			t.Fatalf("got frame op=%v % x, want close 1002", f.op, f.payload)
		}
		// Data after the server's close is dropped; our close ends it.
		c.write(rtMsg([]byte{packet.PacketPing}))
		c.write(rtFrameBytes(true, 0, ws.OpClose, []byte{0x03, 0xea}))
		c.expectEOF()
	})
}

func TestRawMessageTooBig(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.MaxMessageSize = 4096 })
	t.Run("fragments summed", func(t *testing.T) {
		t.Parallel()
		c := rtConnect(t, n)
		c.write(rtFrameBytes(false, 0, ws.OpBinary, make([]byte, 3000)))
		c.write(rtFrameBytes(true, 0, ws.OpContinuation, make([]byte, 3000)))
		c.expectClose(1009, "message too big")
	})
	t.Run("header alone", func(t *testing.T) {
		t.Parallel()
		c := rtConnect(t, n)
		// Only the header of a 1 MiB frame: refused before its payload.
		c.write([]byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4})
		c.expectClose(1009, "message too big")
	})
	t.Run("fragments at the limit", func(t *testing.T) {
		t.Parallel()
		c := rtConnect(t, n)
		// A Ping and a Publish of 4096 bytes in all, in two fragments: the
		// Pong shows the message ran.
		msg := packet.AppendPublish(packet.AppendPing(nil), "x", make([]byte, 4096-1-(1+2+1+4)))
		if len(msg) != 4096 {
			t.Fatalf("message of %d bytes", len(msg))
		}
		c.write(rtFrameBytes(false, 0, ws.OpBinary, msg[:2048]))
		c.write(rtFrameBytes(true, 0, ws.OpContinuation, msg[2048:]))
		c.expectPong()
	})
}

func rtTestUpgradeUnknownPath(t *testing.T, n *node.Node) {
	c := rtDial(t, n)
	c.write(c.request("/nope"))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upgrade on /nope answered %s, want 404", resp.Status)
	}
}
