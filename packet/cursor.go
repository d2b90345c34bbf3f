package packet

import (
	"encoding/binary"
	"math"
	"unicode/utf8"
)

// cursor reads wire values from a message. On error a read leaves pos at
// the start of the value at fault, so the decoders can report it as their
// Offset.
type cursor struct {
	buf []byte
	pos int
}

func (c *cursor) atEnd() bool { return c.pos >= len(c.buf) }

// take returns the next n bytes as a subslice.
func (c *cursor) take(n int) ([]byte, error) {
	if n > len(c.buf)-c.pos {
		return nil, ErrTruncated
	}
	b := c.buf[c.pos : c.pos+n : c.pos+n]
	c.pos += n
	return b, nil
}

func (c *cursor) readByte() (byte, error) {
	if c.atEnd() {
		return 0, ErrTruncated
	}
	b := c.buf[c.pos]
	c.pos++
	return b, nil
}

func (c *cursor) readInt16() (int16, error) {
	b, err := c.take(2)
	if err != nil {
		return 0, err
	}
	return int16(binary.BigEndian.Uint16(b)), nil
}

func (c *cursor) readInt32() (int32, error) {
	b, err := c.take(4)
	if err != nil {
		return 0, err
	}
	return int32(binary.BigEndian.Uint32(b)), nil
}

func (c *cursor) readInt64() (int64, error) {
	b, err := c.take(8)
	if err != nil {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// readString reads a string: short length, then that many UTF-8 bytes.
func (c *cursor) readString() ([]byte, error) {
	start := c.pos
	n, err := c.readInt16()
	if err == nil {
		var s []byte
		if s, err = c.readBody(int(n)); err == nil {
			if utf8.Valid(s) {
				return s, nil
			}
			err = ErrInvalidUTF8
		}
	}
	c.pos = start
	return nil, err
}

// readBytes reads a bytes value: int length, then that many bytes.
func (c *cursor) readBytes() ([]byte, error) {
	start := c.pos
	n, err := c.readInt32()
	if err == nil {
		var b []byte
		if b, err = c.readBody(int(n)); err == nil {
			return b, nil
		}
	}
	c.pos = start
	return nil, err
}

// readBody reads the n bytes that follow a length prefix.
func (c *cursor) readBody(n int) ([]byte, error) {
	if n < 0 {
		return nil, ErrNegativeLength
	}
	return c.take(n)
}

// The appenders below back every encoder. They panic rather than write a
// length prefix that disagrees with the data that follows it.

func appendInt16(dst []byte, v int16) []byte {
	return binary.BigEndian.AppendUint16(dst, uint16(v))
}

func appendString[T string | []byte](dst []byte, s T) []byte {
	if len(s) > MaxStringLen {
		panic("packet: string longer than MaxStringLen")
	}
	dst = appendInt16(dst, int16(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	if len(b) > math.MaxInt32 {
		panic("packet: bytes longer than 2^31-1")
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}
