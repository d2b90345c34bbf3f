package gateway

import (
	"testing"
	"unsafe"
)

// TestHotStructSizes guards what every idle connection keeps (issue 15:
// at most 1 KiB of RSS per idle authenticated connection). Go allocates
// by size class (..., 176, 192, 208, 224, 240, 256, ...): a field added
// to Conn moves it to the next class and costs every connection 16 bytes
// or more. Put what only some connections need at times in connCold
// instead; raise a limit here only knowing what it costs at a million.
func TestHotStructSizes(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 208 {
		t.Errorf("Conn is %d bytes, past its 208-byte size class", n)
	}
	// connCold is allocated for each handshake: it stays in one class.
	if n := unsafe.Sizeof(connCold{}); n > 128 {
		t.Errorf("connCold is %d bytes, past its 128-byte size class", n)
	}
}
