package gateway

import (
	"testing"

	"github.com/gobwas/ws"
)

// BenchmarkFrameParse parses, validates and unmasks one 100-byte client
// frame, as the frame loop does.
func BenchmarkFrameParse(b *testing.B) {
	frame := maskedFrame(true, ws.OpBinary, make([]byte, 100), [4]byte{1, 2, 3, 4})
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		h, n, err := parseHeader(frame)
		if err != nil || n == 0 {
			b.Fatal(err)
		}
		if err := ws.CheckHeader(h, ws.StateServerSide); err != nil {
			b.Fatal(err)
		}
		ws.Cipher(frame[n:], h.Mask, 0)
	}
}

// BenchmarkEchoMessage drives a whole OnTraffic over a fake connection:
// frame in, handler, frame out, one write.
func BenchmarkEchoMessage(b *testing.B) {
	l := echoLoop(nil)
	f := openEcho(b, l)
	f.discardOutput = true
	// A zero mask leaves the payload as is, so the same bytes can be fed
	// again after the in-place unmasking.
	frame := maskedFrame(true, ws.OpBinary, make([]byte, 100), [4]byte{})
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f.in = frame
		l.srv.OnTraffic(f)
	}
	if f.written == 0 {
		b.Fatal("nothing written")
	}
}
