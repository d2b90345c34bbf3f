package gateway

import "testing"

func TestConnIDRoundTrip(t *testing.T) {
	for _, id := range []ConnID{{1, 1}, {0x9f2c01ab, 17}, {0xffffffff, 1<<64 - 1}} {
		got, err := ParseConnID(id.String())
		if err != nil || got != id {
			t.Errorf("ParseConnID(%q) = %v, %v; want %v", id.String(), got, err, id)
		}
	}
	if s := (ConnID{0x0000ab01, 5}).String(); s != "0000ab01-5" {
		t.Errorf("String = %q", s)
	}
	for _, bad := range []string{"", "-", "9f2c01ab", "9f2c01ab-", "9f2c01ab-0", "9f2c01a-1", "9f2c01abc-1", "zzzzzzzz-1", "9f2c01ab--1", "9f2c01ab-1x"} {
		if _, err := ParseConnID(bad); err == nil {
			t.Errorf("ParseConnID(%q): no error", bad)
		}
	}
}
