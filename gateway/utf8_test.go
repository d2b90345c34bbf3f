package gateway

import (
	"testing"
	"unicode/utf8"
)

// feedSplit feeds b in pieces cut at cuts and reports validity the way the
// frame layer does: every piece must pass, and the end must be complete.
// failedAt is the index of the piece that failed, or -1.
func feedSplit(b []byte, cuts ...int) (ok bool, failedAt int) {
	var s utf8State
	prev := 0
	for i, c := range append(cuts, len(b)) {
		if !s.feed(b[prev:c]) {
			return false, i
		}
		prev = c
	}
	return s.complete(), -1
}

func TestUTF8StateCases(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty", "", true},
		{"ascii", "hello", true},
		{"2-byte", "\u00e9", true},
		{"3-byte", "\u20ac", true},
		{"4-byte", "\U0001F600", true},
		{"max", "\U0010FFFF", true},
		{"kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true},
		{"last before surrogates", "\xed\x9f\xbf", true},
		{"first after surrogates", "\xee\x80\x80", true},
		{"overlong 2-byte", "\xc0\xaf", false},
		{"overlong 2-byte c1", "\xc1\xbf", false},
		{"overlong 3-byte", "\xe0\x80\xaf", false},
		{"overlong 4-byte", "\xf0\x80\x80\xaf", false},
		{"surrogate high", "\xed\xa0\x80", false},
		{"surrogate low", "\xed\xbf\xbf", false},
		{"above U+10FFFF", "\xf4\x90\x80\x80", false},
		{"f5 lead", "\xf5\x80\x80\x80", false},
		{"ff", "\xff", false},
		{"lone continuation", "\x80", false},
		{"truncated 2-byte", "\xc3", false},
		{"truncated 3-byte", "\xe2\x82", false},
		{"truncated 4-byte", "\xf0\x9f\x98", false},
		{"truncated then ascii", "\xe2\x82a", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if utf8.ValidString(tc.in) != tc.ok {
				t.Fatalf("test bug: utf8.Valid disagrees")
			}
			b := []byte(tc.in)
			if ok, _ := feedSplit(b); ok != tc.ok {
				t.Fatalf("whole: got %v, want %v", ok, tc.ok)
			}
			for i := 0; i <= len(b); i++ {
				if ok, _ := feedSplit(b, i); ok != tc.ok {
					t.Fatalf("split at %d: got %v, want %v", i, ok, tc.ok)
				}
			}
			if len(b) > 0 {
				cuts := make([]int, 0, len(b)-1)
				for i := 1; i < len(b); i++ {
					cuts = append(cuts, i)
				}
				if ok, _ := feedSplit(b, cuts...); ok != tc.ok {
					t.Fatalf("byte by byte: got %v, want %v", ok, tc.ok)
				}
			}
		})
	}
}

// TestUTF8StateFailsFast: the piece that makes the prefix invalid is the
// one that fails, not the end.
func TestUTF8StateFailsFast(t *testing.T) {
	for _, tc := range []struct {
		pieces []string
		fail   int
	}{
		{[]string{"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", "\xf4\x90\x80\x80", "edited"}, 1},
		{[]string{"ok", "\xed", "\xa0", "\x80"}, 2},        // surrogate: known at its second byte
		{[]string{"ok", "\xf4", "\x90", "\x80\x80"}, 2},    // > U+10FFFF: known at its second byte
		{[]string{"ok", "\xe0", "\x80", "\xaf"}, 2},        // overlong: known at its second byte
		{[]string{"ok", "\xc0", "\xaf"}, 1},                // never valid lead
		{[]string{"ok\xe2\x82", "\xac ok", "\xff", ""}, 2}, // euro split, then a bad byte
	} {
		var b []byte
		var cuts []int
		for i, p := range tc.pieces {
			b = append(b, p...)
			if i < len(tc.pieces)-1 {
				cuts = append(cuts, len(b))
			}
		}
		ok, at := feedSplit(b, cuts...)
		if ok || at != tc.fail {
			t.Errorf("%q: ok=%v failed at piece %d, want piece %d", tc.pieces, ok, at, tc.fail)
		}
	}
}

// FuzzUTF8State: fed in any split, the validator agrees with utf8.Valid,
// and a failure happens at the first piece after which no continuation
// could make the prefix valid.
func FuzzUTF8State(f *testing.F) {
	f.Add([]byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), uint8(3), uint8(7))
	f.Add([]byte("\xed\xa0\x80"), uint8(1), uint8(2))
	f.Add([]byte("a\xf0\x9f\x98\x80b"), uint8(2), uint8(4))
	f.Add([]byte("\xf4\x90\x80\x80"), uint8(0), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, c1, c2 uint8) {
		x, y := min(int(c1), len(b)), min(int(c2), len(b))
		if x > y {
			x, y = y, x
		}
		ok, at := feedSplit(b, x, y)
		if ok != utf8.Valid(b) {
			t.Fatalf("% x split at %d,%d: got %v, utf8.Valid says %v", b, x, y, ok, !ok)
		}
		if ok || at < 0 {
			return
		}
		// The prefix up to the piece before the failing one must be
		// completable: appending the shortest completion makes it valid.
		prefix := b[:[]int{0, x, y}[at]]
		if !completable(prefix) {
			t.Fatalf("% x split at %d,%d: failed late, at piece %d; prefix % x was already invalid", b, x, y, at, prefix)
		}
	})
}

// completable reports whether some bytes appended to p make it valid.
func completable(p []byte) bool {
	for _, tail := range []string{"", "\x80", "\x80\x80", "\x80\x80\x80", "\xa0\x80", "\x90\x80\x80", "\xbf", "\xbf\xbf"} {
		if utf8.Valid(append(append([]byte(nil), p...), tail...)) {
			return true
		}
	}
	return false
}
