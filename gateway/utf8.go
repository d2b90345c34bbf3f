package gateway

import "unicode/utf8"

// utf8State validates UTF-8 fed in pieces (the fragments of a text
// message): it fails as soon as the bytes so far cannot be the start of
// valid UTF-8, and accepts a sequence cut at a piece's end until the next
// piece (Autobahn 6.x "fail fast"). It is 3 bytes, zero when no sequence is
// open; a connection keeps one only while a fragmented text message is in
// flight (it fits in Conn's padding, so idle connections pay nothing).
type utf8State struct {
	need   uint8 // continuation bytes still expected
	lo, hi byte  // the allowed range of the next continuation byte
}

// feed checks p as the continuation of what was fed before. It returns false
// once the input can no longer be valid UTF-8; the state is then undefined.
func (s *utf8State) feed(p []byte) bool {
	// Finish a sequence left open by the previous piece.
	for s.need > 0 && len(p) > 0 {
		if !s.step(p[0]) {
			return false
		}
		p = p[1:]
	}
	if len(p) == 0 {
		return true
	}
	// The whole runes in p are checked by the (fast) standard library; the
	// last at most 3 bytes, which may start a rune the next piece ends, go
	// through the byte machine.
	cut := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		if p[i] >= 0xC0 { // a lead byte: is its rune complete within p?
			if i+runeLen(p[i]) > len(p) {
				cut = i
			}
			break
		}
		if p[i] < 0x80 {
			break
		}
	}
	if !utf8.Valid(p[:cut]) {
		return false
	}
	for _, b := range p[cut:] {
		if !s.step(b) {
			return false
		}
	}
	return true
}

// complete reports whether no sequence is left open: the message may end.
func (s *utf8State) complete() bool { return s.need == 0 }

// step feeds one byte (RFC 3629 section 4's table: no overlong forms, no
// surrogates, nothing above U+10FFFF).
func (s *utf8State) step(b byte) bool {
	if s.need > 0 {
		if b < s.lo || b > s.hi {
			return false
		}
		s.need--
		s.lo, s.hi = 0x80, 0xBF
		return true
	}
	s.lo, s.hi = 0x80, 0xBF
	switch {
	case b < 0x80:
		return true
	case b < 0xC2: // continuation without a lead, or overlong 2-byte lead
		return false
	case b < 0xE0:
		s.need = 1
	case b == 0xE0:
		s.need, s.lo = 2, 0xA0 // no overlong 3-byte forms
	case b == 0xED:
		s.need, s.hi = 2, 0x9F // no surrogates U+D800..U+DFFF
	case b < 0xF0:
		s.need = 2
	case b == 0xF0:
		s.need, s.lo = 3, 0x90 // no overlong 4-byte forms
	case b < 0xF4:
		s.need = 3
	case b == 0xF4:
		s.need, s.hi = 3, 0x8F // nothing above U+10FFFF
	default:
		return false
	}
	return true
}

// runeLen is the length a lead byte announces (1 for anything else; bytes
// that are never valid are left to the checks).
func runeLen(b byte) int {
	switch {
	case b >= 0xF0:
		return 4
	case b >= 0xE0:
		return 3
	case b >= 0xC0:
		return 2
	}
	return 1
}
