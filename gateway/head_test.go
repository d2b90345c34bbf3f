package gateway

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

func TestScanHead(t *testing.T) {
	tests := []struct {
		name, in string
		from     int
		end      int
		refusal  []byte
	}{
		{"whole head", "GET / HTTP/1.1\r\n\r\nrest", 0, 18, nil},
		{"incomplete", "GET / HTTP/1.1\r\n\r", 0, -1, nil},
		{"resumed", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 16, 27, nil},
		{"resumed past the end", "ab\r\n\r\n", 6, -1, nil},
		{"empty line first", "\r\nGET / HTTP/1.1\r\n\r\n", 0, 20, nil},
		{"LF only", "GET / HTTP/1.1\nHost: x\n\n", 0, -1, response400BareLF},
		{"LF only, first line incomplete", "GET / HTTP/1.1\n", 0, -1, response400BareLF},
		{"LF in a later line", "GET / HTTP/1.1\r\nHost: x\n", 0, -1, response400BareLF},
		{"LF first", "\n", 0, -1, response400Garbage},
		{"TLS ClientHello", "\x16\x03\x01\x00\xa5\x01\x00", 0, -1, response400TLS},
		{"binary", "\x00\x01GET", 0, -1, response400Garbage},
		{"space first", " GET / HTTP/1.1\r\n\r\n", 0, -1, response400Garbage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end, refusal := scanHead([]byte(tt.in), tt.from)
			if end != tt.end || !bytes.Equal(refusal, tt.refusal) {
				t.Fatalf("scanHead = %d, %q; want %d, %q", end, refusal, tt.end, tt.refusal)
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	tests := map[string]bool{
		"/api/ws":                 true,
		"/api/ws/":                true,
		"/api/ws/eyJ.abc.def":     true, // a JWT's dots are not a dot segment
		"/api/ws/...":             true,
		"/a/.b/c..":               true,
		"/":                       true,
		"*":                       true,
		"http://host/a/../b":      true, // absolute-form: not routed anyway
		"/api/ws/../ws":           false,
		"/api/ws/..":              false,
		"/api/ws/.":               false,
		"/./ws":                   false,
		"/api/ws/%2e%2e/ws":       false,
		"/api/ws/.%2E/ws":         false,
		"/api/ws/%2e/ws":          false,
		"//ws":                    false,
		"/api//ws":                false,
		"/api/ws//":               false,
		"/api/ws/%2e%2e%2e/x":     true,
		"/api/ws/%2f/x":           true, // an encoded slash is not a separator for the router
		"/api/ws/%2ex":            true,
		"/api/ws/token?next=/../": true, // only called with the path; the query is not a path
	}
	for path, want := range tests {
		p := pathOf([]byte(path))
		if got := cleanPath(p); got != want {
			t.Errorf("cleanPath(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestRequestTarget(t *testing.T) {
	tests := map[string]string{
		"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n": "/a?b",
		"GET /a\r\n\r\n":                       "/a",
		"GET\r\n\r\n":                          "",
	}
	for head, want := range tests {
		if got := string(requestTarget([]byte(head))); got != want {
			t.Errorf("requestTarget(%q) = %q, want %q", head, got, want)
		}
	}
}

// TestHeadRefusedAtOnce: heads that cannot be served are answered 400 the
// moment the telling byte arrives, before the head ends.
func TestHeadRefusedAtOnce(t *testing.T) {
	tests := []struct {
		name, in string
		want     []byte
	}{
		{"LF only", "GET /echo HTTP/1.1\n", response400BareLF},
		{"TLS", "\x16\x03\x01", response400TLS},
		{"dot segments", strings.Replace(upgradeHead, "/echo", "/nope/../echo", 1), response400Path},
		{"encoded dot segments", strings.Replace(upgradeHead, "/echo", "/nope/%2E%2E/echo", 1), response400Path},
		{"double slash", strings.Replace(upgradeHead, "/echo", "//echo", 1), response400Path},
		{"plain request with dot segments", "GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n", response400Path},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := echoLoop(nil)
			f := l.open()
			if action := l.feed(f, []byte(tt.in)); action != gnet.Close {
				t.Fatalf("action %v, want Close", action)
			}
			if !bytes.Equal(f.out, tt.want) {
				t.Fatalf("answer %q, want %q", f.out, tt.want)
			}
		})
	}
}

// FuzzScanHead: scanning a head in pieces (resuming where the last scan
// stopped, as handshake does) finds the same end or refusal as scanning it
// whole, and an end is always inside the input, after a blank line.
func FuzzScanHead(f *testing.F) {
	f.Add([]byte(upgradeHead), 7)
	f.Add([]byte("GET / HTTP/1.1\nHost: x\n\n"), 3)
	f.Add([]byte("\x16\x03\x01\x00\xa5"), 1)
	f.Add([]byte("\r\n\r\n"), 2)
	f.Add([]byte("GET /a/../b HTTP/1.1\r\n\r\n"), 12)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		end, refusal := scanHead(in, 0)
		if end > len(in) || end >= 0 && (refusal != nil || !bytes.HasSuffix(in[:end], []byte("\r\n\r\n"))) {
			t.Fatalf("scanHead(%q) = %d, %q", in, end, refusal)
		}
		split = min(max(split, 0), len(in))
		from := 0
		pieceEnd, pieceRefusal := scanHead(in[:split], 0)
		if pieceEnd < 0 && pieceRefusal == nil {
			from = split
			pieceEnd, pieceRefusal = scanHead(in, from)
		}
		if pieceEnd != end || !bytes.Equal(pieceRefusal, refusal) {
			t.Fatalf("scanHead(%q) whole = %d, %q; split at %d = %d, %q", in, end, refusal, split, pieceEnd, pieceRefusal)
		}
		_ = cleanPath(pathOf(requestTarget(in)))
	})
}

// TestReturnedConnCarry: a connection net/http gave back for an upgrade
// starts with the head (and the first bytes of a frame) carried in its
// context; the wake-up that OnOpen asks for upgrades it, and the frame's
// rest, read later by gnet, joins the carried part.
func TestReturnedConnCarry(t *testing.T) {
	l := echoLoop(nil)
	frame := maskedFrame(true, ws.OpBinary, []byte("ping"), [4]byte{5, 6, 7, 8})
	f := newFakeConn(l)
	f.ctx = &returnedConn{carry: append([]byte(upgradeHead), frame[:3]...)}
	if _, action := l.srv.OnOpen(f); action != gnet.None || f.woken != 1 {
		t.Fatalf("OnOpen: action %v, woken %d", action, f.woken)
	}
	l.feed(f, nil) // the wake-up: no new bytes
	if !strings.HasPrefix(string(f.out), "HTTP/1.1 101 ") || !strings.HasSuffix(string(f.out), "\r\n\r\n\x82\x02hi") {
		t.Fatalf("after the wake-up: %q", f.out)
	}
	f.out = f.out[:0]
	l.feed(f, frame[3:])
	if string(f.out) != "\x82\x04ping" || len(f.in) != 0 || f.ctx.(*Conn).carried() != nil {
		t.Fatalf("out %q, %d bytes left in gnet's buffer, carry %q", f.out, len(f.in), f.ctx.(*Conn).carried())
	}
}
