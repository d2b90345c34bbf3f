package gateway

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/gobwas/ws"
)

// MaxFrameHeaderSize is the largest header a server frame needs: 2 bytes plus
// an 8-byte length (server frames are never masked).
const MaxFrameHeaderSize = 10

// errFrameLength rejects a 64-bit frame length with the top bit set or one
// that does not fit an int (RFC 6455 5.2).
var errFrameLength = errors.New("frame length out of range")

// parseHeader reads a frame header from the front of b without copying or
// allocating. n is the header's size, or 0 when b does not hold all of it
// yet. It does not validate the header: ws.CheckHeader does that.
func parseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 0x07
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u > uint64(math.MaxInt) { // includes the forbidden top bit
			return h, 0, errFrameLength
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// AppendFrameHeader appends the header of an unfragmented, unmasked server
// frame carrying n payload bytes.
func AppendFrameHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= math.MaxUint16:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// FrameHeaderSize returns the size of the header AppendFrameHeader writes.
func FrameHeaderSize(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= math.MaxUint16:
		return 4
	default:
		return 10
	}
}

// AppendFrame appends a whole unfragmented server frame.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	return append(AppendFrameHeader(dst, op, len(payload)), payload...)
}

// MaxCloseReason is the longest close reason that fits a control frame
// (125 bytes minus the 2-byte code).
const MaxCloseReason = 123

// AppendCloseFrame appends a close frame with code and reason, cutting the
// reason to MaxCloseReason bytes at a rune boundary. Code 0 writes an empty
// close frame (the answer to a close without a code).
func AppendCloseFrame(dst []byte, code uint16, reason string) []byte {
	if code == 0 {
		return append(dst, 0x80|byte(ws.OpClose), 0)
	}
	reason = truncateUTF8(reason, MaxCloseReason)
	dst = AppendFrameHeader(dst, ws.OpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

func truncateUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && s[max]&0xC0 == 0x80 { // do not cut inside a rune
		max--
	}
	return s[:max]
}
