package native

import (
	"testing"
	"unsafe"
)

// TestHotStructSizes guards what every idle connection keeps (issue 15:
// at most 1 KiB of RSS per idle authenticated connection): conn is
// allocated in the 80-byte size class, and a field past it costs every
// connection 16 bytes more.
func TestHotStructSizes(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 80 {
		t.Errorf("conn is %d bytes, past its 80-byte size class", n)
	}
}
