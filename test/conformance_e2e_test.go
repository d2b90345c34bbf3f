package test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/session"
)

// RFC 6455 conformance of the frame layer, as the Autobahn TestSuite's case
// families (which cannot run on these machines) over raw TCP, against the
// gateway's echo protocol: the same frame layer serves every protocol.
// Helpers of this file start with "cf"; frames are built with rtFrameBytes
// and read with rtConn.readFrame (rawtcp_e2e_test.go).

// cfStart starts a bare gateway.Server on loopback port 0 with routes (the
// echo route when none) and, if set, limits; it stops when the test ends.
func cfStart(t testing.TB, opts gateway.Options, limits *gateway.Limits, routes ...gateway.Route) *gateway.Server {
	t.Helper()
	opts.Listen = cmp.Or(opts.Listen, "127.0.0.1:0")
	opts.EventLoops = cmp.Or(opts.EventLoops, 2)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv := gateway.New(opts, session.NewHub(nil))
	if len(routes) == 0 {
		routes = []gateway.Route{gateway.EchoRoute("/echo")}
	}
	for _, r := range routes {
		srv.Handle(r)
	}
	if limits != nil {
		srv.SetLimits(*limits)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv
}

// cfDialFrom opens a TCP connection to addr from a local IP (nil: any).
func cfDialFrom(t testing.TB, addr string, local net.IP) *rtConn {
	t.Helper()
	d := net.Dialer{Timeout: waitFor}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("tcp dial: %v", err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	var k [16]byte
	_, _ = rand.Read(k[:])
	return &rtConn{t: t, nc: nc, br: bufio.NewReader(nc), key: base64.StdEncoding.EncodeToString(k[:])}
}

// cfRequest is an upgrade request for path with extra header lines.
func (c *rtConn) cfRequest(path string, extra ...string) []byte {
	head := c.request(path)
	head = head[:len(head)-2]
	for _, h := range extra {
		head = append(head, h+"\r\n"...)
	}
	return append(head, "\r\n"...)
}

// cfResponse reads the answer to an upgrade request; for a 101 it checks
// Sec-WebSocket-Accept (RFC 6455 4.2.2).
func (c *rtConn) cfResponse() *http.Response {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("read upgrade response: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		sum := sha1.Sum([]byte(c.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
			c.t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, want)
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp
}

// cfEcho upgrades a new connection to the echo route.
func cfEcho(t testing.TB, srv *gateway.Server) *rtConn {
	t.Helper()
	c := cfDialFrom(t, srv.Addr().String(), nil)
	c.write(c.cfRequest("/echo"))
	if resp := c.cfResponse(); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s", resp.Status)
	}
	return c
}

// cfExpect reads one whole, unfragmented frame and checks it.
func (c *rtConn) cfExpect(op ws.OpCode, payload []byte) {
	c.t.Helper()
	f := c.readFrame()
	if !f.fin || f.op != op || !bytes.Equal(f.payload, payload) {
		c.t.Fatalf("got frame fin=%v op=%v (%d bytes) %.40q, want op=%v (%d bytes) %.40q",
			f.fin, f.op, len(f.payload), f.payload, op, len(payload), payload)
	}
}

// cfWriteChunks writes b in chunks of n bytes, each its own TCP write.
func (c *rtConn) cfWriteChunks(b []byte, n int) {
	c.t.Helper()
	for len(b) > 0 {
		k := min(n, len(b))
		c.write(b[:k])
		b = b[k:]
	}
}

// cfCloseCode reads a close frame and returns its code (0 when empty), then
// checks the TCP stream ends with nothing after it.
func (c *rtConn) cfCloseCode() uint16 {
	c.t.Helper()
	f := c.readFrame()
	if f.op != ws.OpClose || !f.fin || len(f.payload) == 1 {
		c.t.Fatalf("got frame op=%v %.40q, want a close frame", f.op, f.payload)
	}
	var code uint16
	if len(f.payload) >= 2 {
		code = binary.BigEndian.Uint16(f.payload)
		if !utf8.Valid(f.payload[2:]) {
			c.t.Fatalf("close reason %q is not UTF-8", f.payload[2:])
		}
	}
	c.expectEOF()
	return code
}

// cfFrame is rtFrameBytes with fewer words.
func cfFrame(fin bool, op ws.OpCode, payload []byte) []byte { return rtFrameBytes(fin, 0, op, payload) }

func cfPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = '*' + byte(i%64)
	}
	return b
}

func cfClosePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := cfStart(t, gateway.Options{}, nil)
	t.Run("1 framing", func(t *testing.T) { t.Parallel(); cfFraming(t, srv) })
	t.Run("2 ping pong", func(t *testing.T) { t.Parallel(); cfPingPong(t, srv) })
	t.Run("3 reserved bits", func(t *testing.T) { t.Parallel(); cfReservedBits(t, srv) })
	t.Run("4 opcodes", func(t *testing.T) { t.Parallel(); cfOpcodes(t, srv) })
	t.Run("5 fragmentation", func(t *testing.T) { t.Parallel(); cfFragmentation(t, srv) })
	t.Run("6 utf-8", func(t *testing.T) { t.Parallel(); cfUTF8(t, srv) })
	t.Run("7 close", func(t *testing.T) { t.Parallel(); cfClose(t, srv) })
	t.Run("9 limits", func(t *testing.T) { t.Parallel(); cfSizeLimits(t) })
}

// cfFraming (Autobahn 1.x): text and binary messages of the lengths at the
// edges of the 7-bit, 16-bit and 64-bit length encodings (RFC 6455 5.2:
// 0-125 inline, 126 = 16-bit length, 127 = 64-bit length) are echoed
// whole, whether the frame arrives in one write or in small pieces (TCP is
// a stream: RFC 6455 5.2 frames have no relation to segments). Client
// frames must be masked (RFC 6455 5.1).
func cfFraming(t *testing.T, srv *gateway.Server) {
	for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
		for _, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
			chunk := 1
			if n > 1000 {
				chunk = 997 // Autobahn 1.1.8 / 1.2.8
			}
			t.Run(fmt.Sprintf("%v %d whole", op, n), func(t *testing.T) {
				t.Parallel()
				c := cfEcho(t, srv)
				p := cfPattern(n)
				c.write(cfFrame(true, op, p))
				c.cfExpect(op, p)
			})
			t.Run(fmt.Sprintf("%v %d in %d-byte chunks", op, n, chunk), func(t *testing.T) {
				t.Parallel()
				c := cfEcho(t, srv)
				p := cfPattern(n)
				c.cfWriteChunks(cfFrame(true, op, p), chunk)
				c.cfExpect(op, p)
			})
		}
	}
	t.Run("many messages in one write", func(t *testing.T) {
		t.Parallel()
		c := cfEcho(t, srv)
		var b []byte
		for i := range 100 {
			b = append(b, cfFrame(true, ws.OpText, []byte(fmt.Sprint(i)))...)
		}
		c.write(b)
		for i := range 100 {
			c.cfExpect(ws.OpText, []byte(fmt.Sprint(i)))
		}
	})
	t.Run("unmasked client frame", func(t *testing.T) {
		// RFC 6455 5.1: a server MUST close the connection on an unmasked
		// frame (1002).
		t.Parallel()
		c := cfEcho(t, srv)
		c.write([]byte{0x81, 0x02, 'h', 'i'})
		c.expectClose(1002, "masked")
	})
	t.Run("64-bit length with the top bit", func(t *testing.T) {
		// RFC 6455 5.2: the most significant bit of a 64-bit length MUST
		// be 0.
		t.Parallel()
		c := cfEcho(t, srv)
		c.write([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})
		c.expectClose(1002, "frame length")
	})
}

// cfPingPong (Autobahn 2.x): RFC 6455 5.5.2/5.5.3: a Ping is answered by a
// Pong with the same payload (0-125 bytes, 5.5); a control frame over 125
// bytes is a protocol error (1002); an unsolicited Pong needs no answer;
// control frames may come between the fragments of a message (5.4).
func cfPingPong(t *testing.T, srv *gateway.Server) {
	for _, n := range []int{0, 1, 10, 124, 125} {
		t.Run(fmt.Sprintf("ping %d bytes", n), func(t *testing.T) {
			t.Parallel()
			c := cfEcho(t, srv)
			p := cfPattern(n)
			c.write(cfFrame(true, ws.OpPing, p))
			c.cfExpect(ws.OpPong, p)
		})
	}
	t.Run("ping binary payload", func(t *testing.T) { // 2.3
		t.Parallel()
		c := cfEcho(t, srv)
		p := []byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff}
		c.write(cfFrame(true, ws.OpPing, p))
		c.cfExpect(ws.OpPong, p)
	})
	t.Run("ping 125 bytes in 1-byte chunks", func(t *testing.T) { // 2.6
		t.Parallel()
		c := cfEcho(t, srv)
		p := cfPattern(125)
		c.cfWriteChunks(cfFrame(true, ws.OpPing, p), 1)
		c.cfExpect(ws.OpPong, p)
	})
	t.Run("ping 126 bytes", func(t *testing.T) { // 2.5
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpPing, cfPattern(126)))
		c.expectClose(1002, "control frame")
	})
	t.Run("unsolicited pong", func(t *testing.T) { // 2.7, 2.8
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpPong, nil))
		c.write(cfFrame(true, ws.OpPong, []byte("unsolicited pong payload")))
		c.write(cfFrame(true, ws.OpText, []byte("after")))
		c.cfExpect(ws.OpText, []byte("after")) // nothing came before it
	})
	t.Run("unsolicited pong then ping", func(t *testing.T) { // 2.9
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpPong, []byte("unsolicited")))
		c.write(cfFrame(true, ws.OpPing, []byte("ping payload")))
		c.cfExpect(ws.OpPong, []byte("ping payload"))
	})
	t.Run("10 pings", func(t *testing.T) { // 2.10, 2.11
		t.Parallel()
		c := cfEcho(t, srv)
		var b []byte
		for i := range 10 {
			b = append(b, cfFrame(true, ws.OpPing, []byte(fmt.Sprint("payload-", i)))...)
		}
		c.write(b)
		for i := range 10 {
			c.cfExpect(ws.OpPong, []byte(fmt.Sprint("payload-", i)))
		}
	})
	t.Run("ping between fragments", func(t *testing.T) { // 5.6-5.8
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(false, ws.OpText, []byte("fragment1")))
		c.write(cfFrame(true, ws.OpPing, []byte("ping")))
		c.cfExpect(ws.OpPong, []byte("ping"))
		c.write(cfFrame(true, ws.OpContinuation, []byte("fragment2")))
		c.cfExpect(ws.OpText, []byte("fragment1fragment2"))
	})
}

// cfReservedBits (Autobahn 3.x): RFC 6455 5.2: RSV1-3 MUST be 0 unless an
// extension defines them; none is negotiated, so any set bit fails the
// connection (1002). What came before is still answered; what comes after
// is not.
func cfReservedBits(t *testing.T, srv *gateway.Server) {
	ops := []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpPing, ws.OpClose}
	for rsv := byte(1); rsv <= 7; rsv++ {
		t.Run(fmt.Sprintf("rsv %d", rsv), func(t *testing.T) {
			t.Parallel()
			op := ops[int(rsv)%len(ops)]
			payload := []byte("small")
			if op == ws.OpClose {
				payload = cfClosePayload(1000, "")
			}
			c := cfEcho(t, srv)
			c.write(cfFrame(true, ws.OpText, []byte("before")))
			c.write(rtFrameBytes(true, rsv, op, payload))
			c.write(cfFrame(true, ws.OpPing, []byte("after")))
			c.cfExpect(ws.OpText, []byte("before"))
			c.expectClose(1002, "rsv")
		})
	}
}

// cfOpcodes (Autobahn 4.x): RFC 6455 5.2: opcodes 3-7 (data) and 11-15
// (control) are reserved; receiving one fails the connection (1002).
func cfOpcodes(t *testing.T, srv *gateway.Server) {
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		t.Run(fmt.Sprintf("opcode %d", op), func(t *testing.T) {
			t.Parallel()
			c := cfEcho(t, srv)
			c.write(cfFrame(true, ws.OpText, []byte("before")))
			c.write(cfFrame(true, op, []byte("reserved")))
			c.write(cfFrame(true, ws.OpPing, []byte("after")))
			c.cfExpect(ws.OpText, []byte("before"))
			c.expectClose(1002, "reserved op code")
		})
	}
}

// cfFragmentation (Autobahn 5.x): RFC 6455 5.4: a message may be split into
// a first frame and continuations, the last with FIN; control frames MUST
// NOT be fragmented and may come between fragments; fragments of different
// messages MUST NOT interleave; a continuation with no message started is
// a protocol error. Any violation fails the connection (1002).
func cfFragmentation(t *testing.T, srv *gateway.Server) {
	bad := []struct {
		name   string
		frames [][]byte
		want   string
	}{
		{"ping fragmented", [][]byte{cfFrame(false, ws.OpPing, []byte("frag1")), cfFrame(true, ws.OpContinuation, []byte("frag2"))}, "control frame"}, // 5.1
		{"pong fragmented", [][]byte{cfFrame(false, ws.OpPong, []byte("frag1")), cfFrame(true, ws.OpContinuation, []byte("frag2"))}, "control frame"}, // 5.2
		{"close fragmented", [][]byte{cfFrame(false, ws.OpClose, cfClosePayload(1000, "")), cfFrame(true, ws.OpContinuation, nil)}, "control frame"},
		{"continuation without start, fin", [][]byte{cfFrame(true, ws.OpContinuation, []byte("x"))}, "continuation"},     // 5.9
		{"continuation without start, no fin", [][]byte{cfFrame(false, ws.OpContinuation, []byte("x"))}, "continuation"}, // 5.13
		{"continuations after a whole message", [][]byte{cfFrame(true, ws.OpText, []byte("done")), cfFrame(false, ws.OpContinuation, []byte("x")),
			cfFrame(true, ws.OpContinuation, []byte("y"))}, "continuation"}, // 5.16-5.18
		{"text inside fragmented text", [][]byte{cfFrame(false, ws.OpText, []byte("a")), cfFrame(true, ws.OpText, []byte("b"))}, "continuation"}, // 5.18
		{"binary inside fragmented text", [][]byte{cfFrame(false, ws.OpText, []byte("a")), cfFrame(false, ws.OpBinary, []byte("b"))}, "continuation"},
		{"text inside fragmented binary", [][]byte{cfFrame(false, ws.OpBinary, []byte("a")), cfFrame(false, ws.OpContinuation, []byte("b")),
			cfFrame(true, ws.OpText, []byte("c"))}, "continuation"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := cfEcho(t, srv)
			for _, f := range tc.frames {
				c.write(f)
			}
			if tc.name == "continuations after a whole message" {
				c.cfExpect(ws.OpText, []byte("done"))
			}
			c.expectClose(1002, tc.want)
		})
	}
	good := []struct {
		name   string
		op     ws.OpCode
		pieces []string
	}{
		{"text in 2", ws.OpText, []string{"fragment1", "fragment2"}},     // 5.3
		{"binary in 2", ws.OpBinary, []string{"fragment1", "fragment2"}}, // 5.5 (binary)
		{"empty fragments", ws.OpText, []string{"", "", ""}},             // 5.19 (empty)
		{"empty first and last", ws.OpText, []string{"", "middle", ""}},  //
		{"text in 5", ws.OpText, []string{"fr", "ag", "me", "nt", "s!"}}, // 5.19
	}
	for _, tc := range good {
		for _, oneWrite := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s one write %v", tc.name, oneWrite), func(t *testing.T) {
				t.Parallel()
				c := cfEcho(t, srv)
				var all []byte
				for i, p := range tc.pieces {
					op := ws.OpContinuation
					if i == 0 {
						op = tc.op
					}
					f := cfFrame(i == len(tc.pieces)-1, op, []byte(p))
					if oneWrite {
						all = append(all, f...)
					} else {
						c.write(f)
					}
				}
				if oneWrite {
					c.write(all)
				}
				c.cfExpect(tc.op, []byte(strings.Join(tc.pieces, "")))
			})
		}
	}
	t.Run("pings between every fragment", func(t *testing.T) { // 5.19, 5.20
		t.Parallel()
		c := cfEcho(t, srv)
		var b []byte
		for i := range 5 {
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpText
			}
			b = append(b, cfFrame(i == 4, op, []byte(fmt.Sprint("f", i)))...)
			if i < 4 {
				b = append(b, cfFrame(true, ws.OpPing, []byte(fmt.Sprint("p", i)))...)
			}
		}
		c.write(b)
		for i := range 4 {
			c.cfExpect(ws.OpPong, []byte(fmt.Sprint("p", i)))
		}
		c.cfExpect(ws.OpText, []byte("f0f1f2f3f4"))
	})
	t.Run("4096 one-byte fragments", func(t *testing.T) {
		t.Parallel()
		c := cfEcho(t, srv)
		want := cfPattern(4096)
		var b []byte
		for i := range want {
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpBinary
			}
			b = append(b, cfFrame(i == len(want)-1, op, want[i:i+1])...)
		}
		c.cfWriteChunks(b, 1000)
		c.cfExpect(ws.OpBinary, want)
	})
}

// cfUTF8Valid and cfUTF8Invalid are Autobahn 6.x payloads. RFC 6455 8.1:
// text is UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF); when an endpoint finds invalid UTF-8 in a text message it
// MUST fail the connection (1007, 7.4.1).
var (
	cfUTF8Valid = []string{
		"",
		"Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!!", // 6.2
		"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",              // 6.5.1 kosme
		"\x00", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80", // 6.7: first of each length
		"\x7f", "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", // 6.8: last of each length
		"\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", // 6.9: around the surrogates
		"\xef\xbf\xbe", "\xef\xbf\xbf", // 6.10: noncharacters are valid UTF-8
	}
	cfUTF8Invalid = []string{
		"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // 6.3: a surrogate inside
		"\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", // 6.6: 5- and 6-byte forms
		"\xf4\x90\x80\x80",             // 6.11: above U+10FFFF
		"\x80", "\xbf", "\x80\xbf\x80", // 6.12: lone continuations
		"\xc0 ", "\xe0\x80 ", "\xfe", "\xff", // 6.13/6.14: lone leads, impossible bytes
		"\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xc1\xbf", // 6.15-6.17: overlong
		"\xed\xa0\x80", "\xed\xbf\xbf", "\xed\xa0\x80\xed\xb0\x80", // 6.18/6.19: surrogates
		"\xc3", "\xe2\x82", "\xf0\x9f\x98", // truncated at the end
		"ok\xe2\x82", "\xf0\x9f\x98ok",
	}
)

// cfCompletable reports whether some bytes appended to p give valid UTF-8:
// whether a fail-fast endpoint may still wait.
func cfCompletable(p []byte) bool {
	for _, tail := range []string{"", "\x80", "\x80\x80", "\x80\x80\x80", "\xa0\x80", "\x90\x80\x80", "\xbf", "\xbf\xbf"} {
		if utf8.Valid(append(append([]byte(nil), p...), tail...)) {
			return true
		}
	}
	return false
}

// cfUTF8 (Autobahn 6.x): every payload whole, then split into two
// fragments at every byte boundary, then byte by byte. The endpoint checks
// fragment by fragment ("fail fast"): once a fragment makes the prefix
// impossible to complete, the close comes before the rest is sent; a
// sequence cut at a fragment's end is fine until the final fragment.
func cfUTF8(t *testing.T, srv *gateway.Server) {
	run := func(t *testing.T, s string, cuts []int) {
		t.Helper()
		b := []byte(s)
		valid := utf8.Valid(b)
		c := cfEcho(t, srv)
		prev := 0
		bounds := append(append([]int(nil), cuts...), len(b))
		for i, end := range bounds {
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpText
			}
			c.write(cfFrame(i == len(bounds)-1, op, b[prev:end]))
			prev = end
			if !valid && !cfCompletable(b[:end]) {
				c.expectClose(1007, "utf-8") // before the rest is sent
				return
			}
		}
		if valid {
			c.cfExpect(ws.OpText, b)
			return
		}
		c.expectClose(1007, "utf-8") // truncated: known only at the end
	}
	for i, s := range append(append([]string(nil), cfUTF8Valid...), cfUTF8Invalid...) {
		t.Run(fmt.Sprintf("%d %+q", i, s), func(t *testing.T) {
			t.Parallel()
			t.Run("whole", func(t *testing.T) { run(t, s, nil) })
			for k := 0; k <= len(s); k++ {
				t.Run(fmt.Sprint("split at ", k), func(t *testing.T) { run(t, s, []int{k}) })
			}
			if len(s) > 1 {
				var cuts []int
				for k := 1; k < len(s); k++ {
					cuts = append(cuts, k)
				}
				t.Run("byte by byte", func(t *testing.T) { run(t, s, cuts) })
			}
		})
	}
	t.Run("fail fast in 3 frames", func(t *testing.T) { // 6.4.1, 6.4.2
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(false, ws.OpText, []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")))
		c.write(cfFrame(false, ws.OpContinuation, []byte("\xf4\x90\x80\x80")))
		c.expectClose(1007, "utf-8") // "edited" is never sent
	})
	t.Run("invalid in a binary message is fine", func(t *testing.T) {
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpBinary, []byte("\xff\xfe")))
		c.cfExpect(ws.OpBinary, []byte("\xff\xfe"))
	})
	t.Run("validator state ends with the message", func(t *testing.T) {
		// A fragmented text message, then a binary one with bytes that would
		// continue its (complete) last rune, then text again.
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(false, ws.OpText, []byte("a\xe2\x82")))
		c.write(cfFrame(true, ws.OpContinuation, []byte("\xac")))
		c.write(cfFrame(false, ws.OpBinary, []byte("\xe2")))
		c.write(cfFrame(true, ws.OpContinuation, []byte("\x82")))
		c.write(cfFrame(false, ws.OpText, []byte("\x80")))
		c.cfExpect(ws.OpText, []byte("a\u20ac"))
		c.cfExpect(ws.OpBinary, []byte("\xe2\x82"))
		c.expectClose(1007, "utf-8")
	})
}

// cfClose (Autobahn 7.x): RFC 6455 5.5.1 and 7.4: a close frame is answered
// with a close frame (the code echoed; an empty close answered empty, 1005
// being never sent on the wire), then the server ends TCP; after a close
// frame no data is sent or processed. A close payload of 1 byte, a code
// not allowed on the wire (7.4.1/7.4.2: 0-999, 1004-1006, 1015, undefined
// 1016-2999, 5000 and up) or a reason that is not UTF-8 is a protocol
// error (1002).
func cfClose(t *testing.T, srv *gateway.Server) {
	echoed := func(t *testing.T, payload []byte, wantCode uint16) {
		t.Helper()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpClose, payload))
		if got := c.cfCloseCode(); got != wantCode {
			t.Fatalf("answered %d, want %d", got, wantCode)
		}
	}
	t.Run("empty", func(t *testing.T) { t.Parallel(); echoed(t, nil, 0) })                                           // 7.3.1
	t.Run("code only", func(t *testing.T) { t.Parallel(); echoed(t, cfClosePayload(1000, ""), 1000) })               // 7.3.3
	t.Run("with reason", func(t *testing.T) { t.Parallel(); echoed(t, cfClosePayload(1000, "Hello World!"), 1000) }) // 7.3.4
	t.Run("123-byte reason", func(t *testing.T) {                                                                    // 7.3.5: the longest that fits
		t.Parallel()
		echoed(t, cfClosePayload(1000, strings.Repeat("*", 123)), 1000)
	})
	t.Run("124-byte reason", func(t *testing.T) { // 7.3.6: 126 bytes: control frame too big
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpClose, cfClosePayload(1000, strings.Repeat("*", 124))))
		c.expectClose(1002, "control frame")
	})
	t.Run("1-byte payload", func(t *testing.T) { // 7.3.2
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpClose, []byte{0x03}))
		c.expectClose(1002, "invalid close frame")
	})
	t.Run("reason not utf-8", func(t *testing.T) { // 7.5.1
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpClose, cfClosePayload(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")))
		c.expectClose(1002, "invalid close frame")
	})
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} { // 7.7.x
		t.Run(fmt.Sprint("valid code ", code), func(t *testing.T) { t.Parallel(); echoed(t, cfClosePayload(code, "reason"), code) })
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} { // 7.9.x
		t.Run(fmt.Sprint("invalid code ", code), func(t *testing.T) {
			t.Parallel()
			c := cfEcho(t, srv)
			c.write(cfFrame(true, ws.OpClose, cfClosePayload(code, "")))
			c.expectClose(1002, "invalid close frame")
		})
	}
	t.Run("data after close ignored", func(t *testing.T) { // 7.1.2, 7.1.3, 7.1.4
		t.Parallel()
		c := cfEcho(t, srv)
		b := cfFrame(true, ws.OpClose, cfClosePayload(1000, ""))
		b = append(b, cfFrame(true, ws.OpText, []byte("Hello World!"))...)
		b = append(b, cfFrame(true, ws.OpPing, []byte("ping"))...)
		c.write(b)
		if got := c.cfCloseCode(); got != 1000 { // and nothing after it
			t.Fatalf("answered %d, want 1000", got)
		}
	})
	t.Run("close between fragments", func(t *testing.T) { // 7.1.5
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(false, ws.OpText, []byte("fragment1")))
		c.write(cfFrame(true, ws.OpClose, cfClosePayload(1000, "")))
		c.write(cfFrame(true, ws.OpContinuation, []byte("fragment2")))
		if got := c.cfCloseCode(); got != 1000 {
			t.Fatalf("answered %d, want 1000", got)
		}
	})
	t.Run("message then close", func(t *testing.T) { // 7.1.6
		t.Parallel()
		c := cfEcho(t, srv)
		big := cfPattern(60000)
		b := cfFrame(true, ws.OpBinary, big)
		b = append(b, cfFrame(true, ws.OpText, []byte("Hello World!"))...)
		b = append(b, cfFrame(true, ws.OpClose, cfClosePayload(1000, ""))...)
		c.write(b)
		c.cfExpect(ws.OpBinary, big)
		c.cfExpect(ws.OpText, []byte("Hello World!"))
		if got := c.cfCloseCode(); got != 1000 {
			t.Fatalf("answered %d, want 1000", got)
		}
	})
	t.Run("no data after the server's close", func(t *testing.T) {
		// RFC 6455 5.5.1: after sending a close frame the endpoint MUST
		// NOT send more data frames; the client's data is dropped and its
		// close answered by ending TCP.
		t.Parallel()
		c := cfEcho(t, srv)
		c.write(cfFrame(true, ws.OpText, []byte("\xff"))) // 1007
		f := c.readFrame()
		if f.op != ws.OpClose || binary.BigEndian.Uint16(f.payload) != 1007 {
			t.Fatalf("got op=%v %q, want close 1007", f.op, f.payload)
		}
		c.write(cfFrame(true, ws.OpText, []byte("ignored")))
		c.write(cfFrame(true, ws.OpClose, cfClosePayload(1000, "")))
		c.expectEOF()
	})
}

// cfSizeLimits (Autobahn 9.x, bounded): messages up to the configured
// message size are echoed, sent whole or in fragments; one byte more, in
// one frame or summed over fragments, is refused with 1009 (RFC 6455
// 7.4.1: "a message that is too big for it to process") as soon as the
// header declaring it arrives.
func cfSizeLimits(t *testing.T) {
	for _, limit := range []int{64 << 10, 1 << 20} {
		srv := cfStart(t, gateway.Options{MaxMessageSize: limit}, nil)
		t.Run(fmt.Sprintf("%d KiB", limit>>10), func(t *testing.T) {
			t.Run("at the limit, one frame", func(t *testing.T) {
				t.Parallel()
				c := cfEcho(t, srv)
				p := cfPattern(limit)
				c.write(cfFrame(true, ws.OpBinary, p))
				c.cfExpect(ws.OpBinary, p)
			})
			t.Run("at the limit, text in 4 KiB fragments", func(t *testing.T) {
				t.Parallel()
				c := cfEcho(t, srv)
				p := cfPattern(limit)
				var b []byte
				for off := 0; off < limit; off += 4096 {
					op := ws.OpContinuation
					if off == 0 {
						op = ws.OpText
					}
					b = append(b, cfFrame(off+4096 >= limit, op, p[off:off+4096])...)
				}
				c.write(b)
				c.cfExpect(ws.OpText, p)
			})
			t.Run("one byte over, one frame", func(t *testing.T) {
				t.Parallel()
				c := cfEcho(t, srv)
				f := cfFrame(true, ws.OpBinary, cfPattern(limit+1))
				c.write(f[:14]) // the header alone is refused
				c.expectClose(1009, "message too big")
			})
			t.Run("one byte over, fragments", func(t *testing.T) {
				t.Parallel()
				c := cfEcho(t, srv)
				c.write(cfFrame(false, ws.OpBinary, cfPattern(limit)))
				c.write(cfFrame(true, ws.OpContinuation, []byte{1})[:6])
				c.expectClose(1009, "message too big")
			})
		})
	}
}
