//go:build linux

package gnet

import (
	"testing"
	"unsafe"
)

// TestConnSize guards the wsgateway patches that keep conn in the 224-byte
// size class (PATCH.md): every idle connection of the gateway holds one.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 224 {
		t.Errorf("conn is %d bytes, past its 224-byte size class", n)
	}
}
