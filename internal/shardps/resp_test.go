package shardps

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReplyReader(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     []reply
		err      bool
	}{
		{"message", "*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhe\x00lo\r\n", []reply{{kind: "smessage", channel: "ch", payload: "he\x00lo"}}, false},
		{"empty payload", "*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$0\r\n\r\n", []reply{{kind: "smessage", channel: "ch"}}, false},
		{"acks", "*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n",
			[]reply{{kind: "ssubscribe", channel: "a"}, {kind: "sunsubscribe", channel: "a"}}, false},
		{"pong", "*2\r\n$4\r\npong\r\n$0\r\n\r\n", []reply{{kind: "pong"}}, false},
		{"error", "-MOVED 42 127.0.0.1:7001\r\n", []reply{{err: "MOVED 42 127.0.0.1:7001"}}, false},
		{"status line", "+OK\r\n", nil, true},
		{"bare LF", "*3\n", nil, true},
		{"huge bulk", "*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$999999999999\r\n", nil, true},
		{"negative bulk", "*3\r\n$-1\r\n", nil, true},
		{"array of 5", "*5\r\n", nil, true},
		{"truncated payload", "*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhe", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rr := newReplyReader(strings.NewReader(c.in))
			for i, w := range c.want {
				got, err := rr.read()
				if err != nil || got != w {
					t.Fatalf("reply %d: %+v, %v; want %+v", i, got, err, w)
				}
			}
			_, err := rr.read()
			if c.err != (err != nil && !errors.Is(err, io.EOF)) {
				t.Fatalf("after the replies: err %v, want a protocol error: %v", err, c.err)
			}
		})
	}
}

// FuzzReplyReader: any stream gives replies or an error, never a panic or
// a read past its end; a message written by appendCommand's encoding reads
// back exactly.
func FuzzReplyReader(f *testing.F) {
	f.Add([]byte("*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"), "ch", []byte("p"))
	f.Add([]byte("-ERR x\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n"), "{x}", []byte{})
	f.Fuzz(func(t *testing.T, stream []byte, ch string, payload []byte) {
		rr := newReplyReader(bytes.NewReader(stream))
		for range 64 {
			if _, err := rr.read(); err != nil {
				break
			}
		}
		msg := appendCommand(nil, "smessage", ch, string(payload))
		got, err := newReplyReader(bytes.NewReader(msg)).read()
		if err != nil || got.kind != "smessage" || got.channel != ch || got.payload != string(payload) {
			t.Fatalf("round trip of %q/%q: %+v, %v", ch, payload, got, err)
		}
	})
}

func BenchmarkReplyReaderMessage(b *testing.B) {
	msg := appendCommand(nil, "smessage", "gateway:ch:room-42", strings.Repeat("x", 64))
	r := bytes.NewReader(nil)
	rr := newReplyReader(r)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(msg)
		rr.r.Reset(r)
		if _, err := rr.read(); err != nil {
			b.Fatal(err)
		}
	}
}
