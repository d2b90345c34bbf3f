package session

import (
	"bytes"
	"testing"
)

// TestEncodeCacheEncoderCannotCorruptArena: within one batch, frames already
// encoded stay intact whatever a later encoder returns: nil, an empty slice,
// or its dst cut back (the wsify encoder once returned dst[:0], which cut
// the arena under frames queued by reference and panicked the loop).
func TestEncodeCacheEncoderCannotCorruptArena(t *testing.T) {
	good := func(dst []byte, m *Message) []byte { return append(dst, m.Payload...) }
	drops := map[string]func(dst []byte, m *Message) []byte{
		"nil":       func([]byte, *Message) []byte { return nil },
		"dst[:0]":   func(dst []byte, _ *Message) []byte { return dst[:0] },
		"dst":       func(dst []byte, _ *Message) []byte { return dst },
		"shrunk":    func(dst []byte, _ *Message) []byte { return append(dst, "xyz"...)[:1] },
		"reslice-0": func(dst []byte, _ *Message) []byte { return dst[:0:0] },
	}
	for name, drop := range drops {
		t.Run(name, func(t *testing.T) {
			var c EncodeCache
			var kept [][]byte
			for i, p := range []string{"first", "bad", "third", "bad", "fifth"} {
				c.reset(&Message{Payload: []byte(p)})
				enc := good
				if p == "bad" {
					enc = drop
				}
				got := c.Get(Encoding(i%2), enc)
				if again := c.Get(Encoding(i%2), good); !bytes.Equal(again, got) {
					t.Fatalf("second Get of message %d = %q, want the cached %q", i, again, got)
				}
				kept = append(kept, got)
			}
			want := []string{"first", "", "third", "", "fifth"}
			if name == "shrunk" {
				want[1], want[3] = "x", "x"
			}
			for i, k := range kept {
				if string(k) != want[i] {
					t.Fatalf("frame %d = %q, want %q (all: %q)", i, k, want[i], kept)
				}
			}
			c.endBatch()
		})
	}
}

// BenchmarkEncodeCacheGet: one encoding per message into the reused arena.
func BenchmarkEncodeCacheGet(b *testing.B) {
	var c EncodeCache
	m := &Message{Payload: bytes.Repeat([]byte("p"), 100)}
	enc := func(dst []byte, m *Message) []byte { return append(dst, m.Payload...) }
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.reset(m)
		_ = c.Get(0, enc)
		if i%64 == 63 {
			c.endBatch()
		}
	}
}
