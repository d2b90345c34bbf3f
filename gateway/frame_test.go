package gateway

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// maskedFrame builds a client frame by hand: fin, opcode, masked with key.
func maskedFrame(fin bool, op ws.OpCode, payload []byte, key [4]byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	var b []byte
	switch n := len(payload); {
	case n < 126:
		b = []byte{b0, 0x80 | byte(n)}
	case n <= 0xffff:
		b = []byte{b0, 0x80 | 126, byte(n >> 8), byte(n)}
	default:
		b = binary.BigEndian.AppendUint64([]byte{b0, 0x80 | 127}, uint64(n))
	}
	b = append(b, key[:]...)
	p := bytes.Clone(payload)
	ws.Cipher(p, key, 0)
	return append(b, p...)
}

func TestParseHeader(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	tests := []struct {
		name    string
		in      []byte
		wantN   int
		wantLen int64
		wantOp  ws.OpCode
		wantErr bool
	}{
		{"empty", nil, 0, 0, 0, false},
		{"one byte", []byte{0x82}, 0, 0, 0, false},
		{"short masked without key", []byte{0x82, 0x85, 1, 2}, 0, 0, 0, false},
		{"short masked", maskedFrame(true, ws.OpBinary, []byte("hello"), key), 6, 5, ws.OpBinary, false},
		{"16-bit length", maskedFrame(true, ws.OpBinary, make([]byte, 300), key), 8, 300, ws.OpBinary, false},
		{"16-bit length incomplete", []byte{0x82, 0x80 | 126, 1}, 0, 0, 0, false},
		{"64-bit length", maskedFrame(true, ws.OpBinary, make([]byte, 70000), key), 14, 70000, ws.OpBinary, false},
		{"64-bit length incomplete", []byte{0x82, 0x80 | 127, 0, 0, 0, 0}, 0, 0, 0, false},
		{"64-bit length with top bit", append([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1}, key[:]...), 0, 0, 0, true},
		{"unmasked", []byte{0x81, 0x02, 'h', 'i'}, 2, 2, ws.OpText, false},
		{"close", maskedFrame(true, ws.OpClose, []byte{3, 0xe8}, key), 6, 2, ws.OpClose, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := parseHeader(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if n != tt.wantN {
				t.Fatalf("n = %d, want %d", n, tt.wantN)
			}
			if n > 0 && (h.Length != tt.wantLen || h.OpCode != tt.wantOp) {
				t.Fatalf("header = %+v, want length %d op %v", h, tt.wantLen, tt.wantOp)
			}
			if n > 0 && h.Masked && h.Mask != key {
				t.Fatalf("mask = %v, want %v", h.Mask, key)
			}
		})
	}
}

// TestParseHeaderAgreesWithGobwas checks the hand parser against
// ws.ReadHeader on frames gobwas writes.
func TestParseHeaderAgreesWithGobwas(t *testing.T) {
	for _, n := range []int64{0, 1, 125, 126, 127, 65535, 65536, 1 << 40} {
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpContinuation, ws.OpPing} {
			want := ws.Header{Fin: n%2 == 0, Rsv: ws.Rsv(false, true, false), OpCode: op, Length: n, Masked: true, Mask: [4]byte{9, 8, 7, 6}}
			var buf bytes.Buffer
			if err := ws.WriteHeader(&buf, want); err != nil {
				t.Fatal(err)
			}
			got, hl, err := parseHeader(buf.Bytes())
			if err != nil || hl != buf.Len() || got != want {
				t.Fatalf("parseHeader(%+v) = %+v, %d, %v", want, got, hl, err)
			}
		}
	}
}

func TestAppendFrameHeader(t *testing.T) {
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x82, 0}},
		{125, []byte{0x82, 125}},
		{126, []byte{0x82, 126, 0, 126}},
		{65535, []byte{0x82, 126, 0xff, 0xff}},
		{65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	}
	for _, tt := range tests {
		got := AppendFrameHeader(nil, ws.OpBinary, tt.n)
		if !bytes.Equal(got, tt.want) || FrameHeaderSize(tt.n) != len(tt.want) {
			t.Errorf("n=%d: % x (size %d), want % x", tt.n, got, FrameHeaderSize(tt.n), tt.want)
		}
	}
}

func TestAppendCloseFrame(t *testing.T) {
	got := AppendCloseFrame(nil, 3003, "ping timeout")
	want := append([]byte{0x88, 14, 0x0b, 0xbb}, "ping timeout"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("% x, want % x", got, want)
	}
	if got := AppendCloseFrame(nil, 0, "ignored"); !bytes.Equal(got, []byte{0x88, 0}) {
		t.Fatalf("empty close = % x", got)
	}
	long := strings.Repeat("é", 100) // 200 bytes: cut to 122, not inside a rune
	got = AppendCloseFrame(nil, 1001, long)
	if len(got) > 2+125 || got[1] != byte(2+122) {
		t.Fatalf("long reason gave a %d-byte frame, length byte %d", len(got), got[1])
	}
}

func TestPeerCloseCode(t *testing.T) {
	code := func(c uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, c), reason...)
	}
	tests := []struct {
		payload []byte
		want    uint16
		ok      bool
	}{
		{nil, 0, true},
		{[]byte{3}, 0, false},
		{code(1000, "bye"), 1000, true},
		{code(1001, ""), 1001, true},
		{code(1004, ""), 0, false},
		{code(1005, ""), 0, false},
		{code(1006, ""), 0, false},
		{code(1011, ""), 1011, true},
		{code(1014, ""), 1014, true},
		{code(1015, ""), 0, false},
		{code(1016, ""), 0, false},
		{code(2999, ""), 0, false},
		{code(999, ""), 0, false},
		{code(3000, ""), 3000, true},
		{code(4999, ""), 4999, true},
		{code(5000, ""), 0, false},
		{code(1000, "\xff"), 0, false},
	}
	for _, tt := range tests {
		got, ok := peerCloseCode(tt.payload)
		if got != tt.want || ok != tt.ok {
			t.Errorf("peerCloseCode(% x) = %d, %v, want %d, %v", tt.payload, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(maskedFrame(true, ws.OpBinary, []byte("hello"), key))
	f.Add(maskedFrame(false, ws.OpText, make([]byte, 300), key))
	f.Add([]byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})
	f.Add([]byte{0x88, 0x82, 1, 2, 3, 4, 2, 0xea})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseHeader(b)
		if err != nil || n == 0 {
			return
		}
		if n > len(b) || h.Length < 0 {
			t.Fatalf("n=%d of %d bytes, length %d", n, len(b), h.Length)
		}
		got, err := ws.ReadHeader(bytes.NewReader(b))
		if err != nil || got != h {
			t.Fatalf("parseHeader = %+v; gobwas = %+v, %v", h, got, err)
		}
	})
}
