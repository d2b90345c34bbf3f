package native

import (
	"testing"
	"unsafe"
)

// TestHotStructSizes guards what every idle connection keeps (issue 15:
// at most 1 KiB of RSS per idle authenticated connection): conn is
// allocated in the 32-byte size class, and a field past it costs every
// connection 16 bytes more. What only some sessions use (their settings,
// the batch window) is in settings, allocated when a Settings packet
// moves a setting from its default.
func TestHotStructSizes(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 32 {
		t.Errorf("conn is %d bytes, past its 32-byte size class", n)
	}
}
