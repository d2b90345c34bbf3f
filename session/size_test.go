package session

import (
	"testing"
	"unsafe"
)

// TestHotStructSizes guards what every idle session keeps (issue 15: at
// most 1 KiB of RSS per idle authenticated connection). Go allocates by
// size class (..., 32, 48, ..., 144, 160, 176, ...): a field that moves a
// struct to the next class costs every connection 16 bytes or more.
func TestHotStructSizes(t *testing.T) {
	if n := unsafe.Sizeof(Session{}); n > 144 {
		t.Errorf("Session is %d bytes, past its 144-byte size class", n)
	}
	// A session's first subscription is a slice of one.
	if n := unsafe.Sizeof(subscription{}); n > 32 {
		t.Errorf("subscription is %d bytes, past its 32-byte size class", n)
	}
}
