package gateway

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// echoProtocol greets with "hi" and echoes messages; "panic" panics and
// "bye" closes with 4000.
type echoProtocol struct{ closed *int }

func (echoProtocol) Name() string { return "echo" }

func (p echoProtocol) Accept(r *Request) (Handler, error) {
	if bytes.Contains(r.URI, []byte("refuse")) {
		return nil, &HTTPError{Status: 403, Text: "refused"}
	}
	return &echoHandler{p}, nil
}

type echoHandler struct{ p echoProtocol }

func (h *echoHandler) OnOpen(c *Conn) { c.Send(ws.OpBinary, []byte("hi")) }
func (h *echoHandler) OnMessage(c *Conn, op ws.OpCode, msg []byte) {
	switch string(msg) {
	case "panic":
		panic("test panic")
	case "bye":
		c.Close(4000, "asked to leave")
	default:
		c.Send(op, msg)
	}
}
func (h *echoHandler) OnDeadline(c *Conn) { c.Close(4001, "deadline") }
func (h *echoHandler) OnClose(*Conn) {
	if h.p.closed != nil {
		*h.p.closed++
	}
}

const upgradeHead = "GET /echo HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// echoLoop returns a fake loop serving echoProtocol on /echo, text allowed,
// with internal errors closing 3005.
func echoLoop(closed *int) *fakeLoop {
	l := NewFakeLoop(Options{MaxMessageSize: 1024},
		Route{Path: "/echo", Protocol: echoProtocol{closed}, Text: true, InternalError: 3005})
	return l
}

func TestUpgradeAndFirstFrameInOneRead(t *testing.T) {
	l := echoLoop(nil)
	f := l.open()
	in := append([]byte(upgradeHead), maskedFrame(true, ws.OpBinary, []byte("ping"), [4]byte{7, 7, 7, 7})...)
	if action := l.feed(f, in); action != gnet.None {
		t.Fatalf("action %v", action)
	}
	out := string(f.out)
	// RFC 6455 1.3's sample key and its accept value.
	if !strings.HasPrefix(out, "HTTP/1.1 101 Switching Protocols\r\n") || !strings.Contains(out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") {
		t.Fatalf("response:\n%s", out)
	}
	frames := out[strings.Index(out, "\r\n\r\n")+4:]
	if want := "\x82\x02hi\x82\x04ping"; frames != want {
		t.Fatalf("frames after 101 = %q, want %q", frames, want)
	}
	if len(f.in) != 0 {
		t.Fatalf("%d bytes left unconsumed", len(f.in))
	}
}

func TestHandshakeRefusals(t *testing.T) {
	tests := []struct {
		name, head, wantStatus string
	}{
		{"unknown path", strings.Replace(upgradeHead, "/echo", "/nope", 1), "HTTP/1.1 404"},
		{"protocol refuses", strings.Replace(upgradeHead, "/echo", "/echo?refuse", 1), "HTTP/1.1 403"},
		{"bad version", strings.Replace(upgradeHead, "Version: 13", "Version: 8", 1), "HTTP/1.1 426"},
		{"no key", strings.Replace(upgradeHead, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 1), "HTTP/1.1 400"},
		{"POST", strings.Replace(upgradeHead, "GET", "POST", 1), "HTTP/1.1 405"},
		{"head too large", "GET /echo HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHeadSize) + "\r\n\r\n", "HTTP/1.1 431"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := echoLoop(nil)
			f := l.open()
			if action := l.feed(f, []byte(tt.head)); action != gnet.Close {
				t.Fatalf("action %v, want Close", action)
			}
			if !strings.HasPrefix(string(f.out), tt.wantStatus) {
				t.Fatalf("response %q, want %s", f.out, tt.wantStatus)
			}
		})
	}
}

func TestHeadArrivesInPieces(t *testing.T) {
	l := echoLoop(nil)
	f := l.open()
	for i := 0; i < len(upgradeHead); i++ {
		if action := l.feed(f, []byte{upgradeHead[i]}); action != gnet.None {
			t.Fatalf("byte %d: action %v", i, action)
		}
	}
	if !bytes.HasPrefix(f.out, []byte("HTTP/1.1 101")) {
		t.Fatalf("response %q", f.out)
	}
}

func TestIsUpgrade(t *testing.T) {
	tests := map[string]bool{
		upgradeHead: true,
		"GET / HTTP/1.1\r\nupgrade:  WebSocket \r\n\r\n":    true,
		"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n":            false,
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n":                 false,
		"GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n\r\n":    false,
		"GET / HTTP/1.1\r\nUpgrade: foo, websocket\r\n\r\n": true,
	}
	for head, want := range tests {
		if got := isUpgrade([]byte(head)); got != want {
			t.Errorf("isUpgrade(%q) = %v", head, got)
		}
	}
}

// openEcho upgrades a fake connection and drops the handshake output.
func openEcho(t testing.TB, l *fakeLoop) *fakeConn {
	f := l.open()
	l.feed(f, []byte(upgradeHead))
	if !bytes.HasPrefix(f.out, []byte("HTTP/1.1 101")) {
		t.Fatalf("upgrade failed: %q", f.out)
	}
	f.out = f.out[:0]
	return f
}

func TestFrameErrorsClose(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	tests := []struct {
		name string
		in   []byte
		code uint16
	}{
		{"unmasked", []byte{0x82, 0x01, 'x'}, 1002},
		{"reserved opcode", maskedFrame(true, 0x3, nil, key), 1002},
		{"rsv1", func() []byte { b := maskedFrame(true, ws.OpBinary, []byte("x"), key); b[0] |= 0x40; return b }(), 1002},
		{"continuation first", maskedFrame(true, ws.OpContinuation, []byte("x"), key), 1002},
		{"control not final", maskedFrame(false, ws.OpPing, nil, key), 1002},
		{"too big", maskedFrame(true, ws.OpBinary, make([]byte, 2000), key), 1009},
		{"fragments too big", append(maskedFrame(false, ws.OpBinary, make([]byte, 800), key), maskedFrame(true, ws.OpContinuation, make([]byte, 800), key)...), 1009},
		{"invalid utf-8", maskedFrame(true, ws.OpText, []byte{0xff}, key), 1007},
		{"close 1-byte", maskedFrame(true, ws.OpClose, []byte{3}, key), 1002},
		{"close 1005", maskedFrame(true, ws.OpClose, []byte{0x03, 0xed}, key), 1002},
		{"handler panic", maskedFrame(true, ws.OpBinary, []byte("panic"), key), 3005},
		{"handler close", maskedFrame(true, ws.OpBinary, []byte("bye"), key), 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			closed := 0
			l := echoLoop(&closed)
			l.srv.logger = discardLogger
			f := openEcho(t, l)
			l.feed(f, tt.in)
			if len(f.out) < 4 || f.out[0] != 0x88 {
				t.Fatalf("no close frame: % x", f.out)
			}
			if got := uint16(f.out[2])<<8 | uint16(f.out[3]); got != tt.code {
				t.Fatalf("close code %d (%q), want %d", got, f.out[4:], tt.code)
			}
			// After a clean close the peer's close frame ends the connection;
			// after a failure the stream is dropped until the close grace.
			l.feed(f, maskedFrame(true, ws.OpClose, nil, key))
			if clean := tt.code == 4000; f.closed != clean {
				t.Fatalf("closed after the peer's close frame = %v, want %v", f.closed, clean)
			}
		})
	}
}

func TestControlFramesBetweenFragments(t *testing.T) {
	l := echoLoop(nil)
	f := openEcho(t, l)
	key := [4]byte{9, 9, 9, 9}
	in := maskedFrame(false, ws.OpText, []byte("hel"), key)
	in = append(in, maskedFrame(true, ws.OpPing, []byte("p"), key)...)
	in = append(in, maskedFrame(false, ws.OpContinuation, []byte("l"), key)...)
	in = append(in, maskedFrame(true, ws.OpPong, nil, key)...)
	in = append(in, maskedFrame(true, ws.OpContinuation, []byte("o"), key)...)
	l.feed(f, in)
	if want := "\x8a\x01p\x81\x05hello"; string(f.out) != want {
		t.Fatalf("out %q, want %q", f.out, want)
	}
}

func TestPeerCloseIsEchoed(t *testing.T) {
	closed := 0
	l := echoLoop(&closed)
	f := openEcho(t, l)
	action := l.feed(f, maskedFrame(true, ws.OpClose, []byte{0x03, 0xe8, 'o', 'k'}, [4]byte{}))
	if action != gnet.Close || string(f.out) != "\x88\x02\x03\xe8" || closed != 1 {
		t.Fatalf("action %v out % x closed %d", action, f.out, closed)
	}
}

func TestDeadlines(t *testing.T) {
	l := echoLoop(nil)
	f := l.open()
	c := f.ctx.(*Conn)
	l.srv.epoch = l.srv.epoch.Add(-DefaultHandshakeTimeout * 2) // the clock jumps past the handshake deadline
	c.loop.tick(nil)
	if !f.closed || !bytes.HasPrefix(f.out, []byte("HTTP/1.1 408")) {
		t.Fatalf("closed %v out %q", f.closed, f.out)
	}

	f = openEcho(t, l)
	c = f.ctx.(*Conn)
	c.SetDeadline(l.srv.epoch)                  // already past: due at the next second
	l.srv.epoch = l.srv.epoch.Add(-time.Second) // which comes
	c.loop.tick(nil)
	if string(f.out) != "\x88\x0a\x0f\xa1deadline" || c.state != stateClosing {
		t.Fatalf("out %q state %v", f.out, c.state)
	}
	l.srv.epoch = l.srv.epoch.Add(-closeGraceSeconds * time.Second * 2)
	c.loop.tick(nil)
	if !f.closed {
		t.Fatal("close grace did not drop the connection")
	}
}

// FuzzTraffic feeds arbitrary bytes, split in two reads, to a connection
// before and after the upgrade: nothing may panic, and every byte is either
// consumed or waiting for more.
func FuzzTraffic(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(false, []byte(upgradeHead), 10)
	f.Add(true, maskedFrame(true, ws.OpBinary, []byte("hello"), key), 3)
	f.Add(true, append(maskedFrame(false, ws.OpText, []byte("a"), key), maskedFrame(true, ws.OpContinuation, []byte("b"), key)...), 7)
	f.Add(true, maskedFrame(true, ws.OpClose, []byte{3, 0xe8}, key), 1)
	f.Add(false, []byte("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"), 0)
	f.Add(false, []byte(strings.ReplaceAll(upgradeHead, "\r\n", "\n")), 5)
	f.Add(false, []byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), 1)
	f.Add(false, []byte(strings.Replace(upgradeHead, "/echo", "/echo/../echo", 1)), 20)
	f.Add(false, []byte(strings.Replace(upgradeHead, "/echo", "//echo", 1)), 9)
	f.Add(false, []byte(strings.Replace(upgradeHead, "/echo", "/%2e%2E/echo", 1)), 30)
	f.Add(false, []byte("\r\n"+upgradeHead), 2)
	f.Fuzz(func(t *testing.T, upgraded bool, in []byte, split int) {
		l := echoLoop(nil)
		l.srv.logger = discardLogger
		var fc *fakeConn
		if upgraded {
			fc = openEcho(t, l)
		} else {
			fc = l.open()
		}
		split = min(max(split, 0), len(in))
		for _, part := range [][]byte{in[:split], in[split:]} {
			if fc.closed {
				return
			}
			l.feed(fc, part)
		}
	})
}

// TestSubprotocolSelection: the route's list wins, in the client's order;
// EchoLoneSubprotocol echoes a lone unlisted offer and nothing else; a
// route without it selects only listed ones.
func TestSubprotocolSelection(t *testing.T) {
	tests := []struct {
		name   string
		list   []string
		echo   bool
		offer  string // header lines
		want   string // "" means no Sec-WebSocket-Protocol header
		status string
	}{
		{"listed", []string{"a", "b"}, false, "Sec-WebSocket-Protocol: x, b, a\r\n", "b", "101"},
		{"unlisted, no echo", []string{"a"}, false, "Sec-WebSocket-Protocol: chat\r\n", "", "101"},
		{"lone, echo", nil, true, "Sec-WebSocket-Protocol: chat\r\n", "chat", "101"},
		{"lone, spaces", nil, true, "Sec-WebSocket-Protocol:  chat  \r\n", "chat", "101"},
		{"two, echo", nil, true, "Sec-WebSocket-Protocol: chat, superchat\r\n", "", "101"},
		{"listed beats lone echo", []string{"a"}, true, "Sec-WebSocket-Protocol: chat, a\r\n", "a", "101"},
		{"first line lone", nil, true, "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: b\r\n", "chat", "101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewFakeLoop(Options{}, Route{Path: "/echo", Protocol: echoProtocol{}, Subprotocols: tt.list, EchoLoneSubprotocol: tt.echo})
			f := l.open()
			head := strings.Replace(upgradeHead, "\r\n\r\n", "\r\n"+tt.offer+"\r\n", 1)
			l.feed(f, []byte(head))
			out := string(f.out)
			if !strings.HasPrefix(out, "HTTP/1.1 "+tt.status) {
				t.Fatalf("response %q, want %s", out, tt.status)
			}
			got := ""
			if i := strings.Index(out, "Sec-WebSocket-Protocol: "); i >= 0 {
				got = out[i+len("Sec-WebSocket-Protocol: "):]
				got = got[:strings.Index(got, "\r\n")]
			}
			if got != tt.want {
				t.Fatalf("selected %q, want %q\n%s", got, tt.want, out)
			}
		})
	}
}
