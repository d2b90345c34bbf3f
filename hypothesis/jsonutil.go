package hypothesis

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

const lowerHex = "0123456789abcdef"

// appendPyDumps appends a JSON value (already validated) as Python's
// json.dumps prints it once json.loads has read it: strings with
// ensure_ascii (non-ASCII as \uXXXX, surrogate pairs above U+FFFF, no HTML
// escaping), integers as their literal ("-0" is 0), floats as Python's
// repr. Only scalars reach it (lists and objects are swallowed earlier).
func appendPyDumps(dst []byte, raw []byte) []byte {
	if len(raw) == 0 {
		return append(dst, "null"...)
	}
	switch raw[0] {
	case '"':
		return appendPyString(dst, raw)
	case 'n', 't', 'f':
		return append(dst, raw...)
	}
	lit := string(raw)
	if !strings.ContainsAny(lit, ".eE") {
		if lit == "-0" {
			return append(dst, '0')
		}
		return append(dst, lit...)
	}
	f, _ := strconv.ParseFloat(lit, 64) // ±Inf on overflow, like Python
	return appendPyFloat(dst, f)
}

// appendPyFloat is Python's float repr (and json's Infinity).
func appendPyFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d[.ddd]e±XX
	mant, expText, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expText)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1
	if decpt > -4 && decpt <= 16 {
		switch {
		case decpt <= 0:
			dst = append(dst, "0."...)
			dst = append(dst, strings.Repeat("0", -decpt)...)
			return append(dst, digits...)
		case decpt >= len(digits):
			dst = append(dst, digits...)
			dst = append(dst, strings.Repeat("0", decpt-len(digits))...)
			return append(dst, ".0"...)
		default:
			dst = append(dst, digits[:decpt]...)
			dst = append(dst, '.')
			return append(dst, digits[decpt:]...)
		}
	}
	dst = append(dst, digits[0])
	if len(digits) > 1 {
		dst = append(dst, '.')
		dst = append(dst, digits[1:]...)
	}
	dst = append(dst, 'e')
	x := decpt - 1
	if x < 0 {
		dst = append(dst, '-')
		x = -x
	} else {
		dst = append(dst, '+')
	}
	if x < 10 {
		dst = append(dst, '0')
	}
	return strconv.AppendInt(dst, int64(x), 10)
}

// appendPyString transcodes a valid JSON string literal (quotes included)
// to json.dumps(ensure_ascii=True) of its value, escape by escape, so that
// even lone surrogates written as \uD800 come out as Python prints them.
func appendPyString(dst []byte, lit []byte) []byte {
	dst = append(dst, '"')
	end := len(lit) - 1
	for i := 1; i < end; {
		c := lit[i]
		switch {
		case c == '\\':
			e := lit[i+1]
			switch e {
			case 'u':
				v, _ := strconv.ParseUint(string(lit[i+2:i+6]), 16, 16)
				dst = appendPyUnit(dst, uint16(v))
				i += 6
				continue
			case '/':
				dst = append(dst, '/')
			default: // " \ b f n r t: the same short escape
				dst = append(dst, '\\', e)
			}
			i += 2
		case c < utf8.RuneSelf:
			dst = appendPyUnit(dst, uint16(c))
			i++
		default:
			r, size := utf8.DecodeRune(lit[i:])
			if r >= 0x10000 {
				r1, r2 := utf16.EncodeRune(r)
				dst = appendU(appendU(dst, uint16(r1)), uint16(r2))
			} else {
				dst = appendU(dst, uint16(r))
			}
			i += size
		}
	}
	return append(dst, '"')
}

// appendPyUnit appends one UTF-16 code unit as ensure_ascii prints it.
func appendPyUnit(dst []byte, u uint16) []byte {
	switch u {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	}
	if u >= 0x20 && u <= 0x7e {
		return append(dst, byte(u))
	}
	return appendU(dst, u)
}

func appendU(dst []byte, u uint16) []byte {
	return append(dst, '\\', 'u', lowerHex[u>>12], lowerHex[u>>8&15], lowerHex[u>>4&15], lowerHex[u&15])
}

// appendJSONString appends s as a JSON string without HTML escaping.
// Invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = appendU(dst, uint16(c))
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\uFFFD"...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// jsonString decodes raw as a JSON string; false if it is not one.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	// raw is one valid JSON value: a string without escapes, of valid
	// UTF-8, is its bytes between the quotes (a filter holds a thousand).
	if n := len(raw); n >= 2 && raw[n-1] == '"' {
		if body := raw[1 : n-1]; bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
			return string(body), true
		}
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// isJSONNumber reports whether a valid JSON value is a number.
func isJSONNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9')
}
