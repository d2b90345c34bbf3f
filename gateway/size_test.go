package gateway

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
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

// TestColdPartOnlyWhileUsed: the handshake's cold part is dropped at the
// upgrade, so an idle open connection keeps none; a fragmented message
// brings it back, and the close drops it again.
func TestColdPartOnlyWhileUsed(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	l := echoLoop(nil)
	f := l.open()
	c := f.ctx.(*Conn)
	l.feed(f, []byte(upgradeHead[:20])) // a head cut short: where the scan stopped is kept
	if c.cold == nil || c.cold.scanned != 20 || c.cold.accept == 0 {
		t.Fatalf("during the handshake: cold part %+v, want the accept time and 20 bytes scanned", c.cold)
	}
	l.feed(f, []byte(upgradeHead[20:]))
	if !bytes.HasPrefix(f.out, []byte("HTTP/1.1 101")) {
		t.Fatalf("upgrade failed: %q", f.out)
	}
	if c.cold != nil {
		t.Fatalf("an idle open connection keeps a cold part: %+v", c.cold)
	}
	f.out = f.out[:0]
	l.feed(f, maskedFrame(false, ws.OpText, []byte("hel"), key))
	if c.cold == nil || c.cold.fragOp != ws.OpText || string(c.cold.frag) != "hel" {
		t.Fatalf("a fragment is not joined in the cold part: %+v", c.cold)
	}
	l.feed(f, maskedFrame(true, ws.OpContinuation, []byte("lo"), key))
	if want := serverFrame(ws.OpText, []byte("hello")); !bytes.Equal(f.out, want) {
		t.Fatalf("echo %q, want %q", f.out, want)
	}
	if c.cold.fragOp != 0 || c.cold.frag != nil {
		t.Fatalf("the joined message is left in the cold part: %+v", c.cold)
	}
	l.feed(f, maskedFrame(true, ws.OpClose, []byte{0x03, 0xe8}, key))
	if !f.closed || c.cold != nil {
		t.Fatalf("closed %v, cold part after the close %+v", f.closed, c.cold)
	}
}
