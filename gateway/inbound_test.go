package gateway

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"

	"github.com/gobwas/ws"
)

// bigEchoLoop is echoLoop with room for large messages.
func bigEchoLoop(maxMessage int) *fakeLoop {
	return NewFakeLoop(Options{MaxMessageSize: maxMessage},
		Route{Path: "/echo", Protocol: echoProtocol{}, Text: true, InternalError: 3005})
}

// serverFrame is what the echo sends back for one message.
func serverFrame(op ws.OpCode, payload []byte) []byte { return AppendFrame(nil, op, payload) }

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// A frame cut into pieces (its header too) is echoed exactly, and once its
// header is known nothing of it is left in gnet's buffer between reads.
func TestFrameInPieces(t *testing.T) {
	l := bigEchoLoop(1 << 20)
	f := openEcho(t, l)
	payload := pattern(300 << 10)
	in := append(maskedFrame(true, ws.OpBinary, payload, [4]byte{9, 8, 7, 6}),
		maskedFrame(true, ws.OpText, []byte("after"), [4]byte{1, 2, 3, 4})...)
	cuts := []int{1, 5, 8, 1, 1000, 70000, 64 << 10, 100 << 10}
	at := 0
	for _, n := range cuts {
		l.feed(f, in[at:at+n])
		at += n
		if at >= 14 && len(f.in) != 0 {
			t.Fatalf("after %d bytes, %d left in gnet's buffer", at, len(f.in))
		}
		if len(f.out) != 0 {
			t.Fatalf("after %d bytes, %d bytes out before the frame is whole", at, len(f.out))
		}
	}
	l.feed(f, in[at:])
	want := append(serverFrame(ws.OpBinary, payload), serverFrame(ws.OpText, []byte("after"))...)
	if !bytes.Equal(f.out, want) {
		t.Fatalf("echo differs: %d bytes out, want %d", len(f.out), len(want))
	}
	if c := f.ctx.(*Conn); c.cold != nil && c.cold.rx != nil || len(f.in) != 0 {
		t.Fatal("frame state left behind")
	}
}

// A fragmented text message whose fragments arrive in pieces, with a Ping
// between them, is joined and checked as a whole; bad UTF-8 in a piece
// still closes 1007.
func TestFragmentsInPieces(t *testing.T) {
	key := [4]byte{3, 1, 4, 1}
	text := bytes.Repeat([]byte("héllo wörld "), 10000)
	half := len(text) / 2
	half += 1 // inside the 2-byte é or ö at most: the check must wait for the next fragment
	in := maskedFrame(false, ws.OpText, text[:half], key)
	in = append(in, maskedFrame(true, ws.OpPing, []byte("p"), key)...)
	in = append(in, maskedFrame(true, ws.OpContinuation, text[half:], key)...)
	for _, step := range []int{1, 7, 4096, 65536} {
		t.Run(fmt.Sprint(step), func(t *testing.T) {
			l := bigEchoLoop(1 << 20)
			f := openEcho(t, l)
			for at := 0; at < len(in); at += step {
				l.feed(f, in[at:min(at+step, len(in))])
			}
			want := append(serverFrame(ws.OpPong, []byte("p")), serverFrame(ws.OpText, text)...)
			if !bytes.Equal(f.out, want) {
				t.Fatalf("got %d bytes, want %d", len(f.out), len(want))
			}
		})
	}
	t.Run("bad utf-8", func(t *testing.T) {
		l := bigEchoLoop(1 << 20)
		f := openEcho(t, l)
		bad := append(bytes.Clone(text[:5000]), 0xff)
		frame := maskedFrame(true, ws.OpText, bad, key)
		l.feed(f, frame[:3000])
		l.feed(f, frame[3000:])
		if want := "\x88"; !bytes.HasPrefix(f.out, []byte(want)) || !bytes.Contains(f.out, []byte{0x03, 0xef}) {
			t.Fatalf("out %q, want a close 1007", f.out)
		}
	})
}

// FuzzFramesInPieces: however a stream of frames is cut into reads, the
// echo is the same as when it arrives in one read.
func FuzzFramesInPieces(f *testing.F) {
	key := [4]byte{5, 6, 7, 8}
	stream := append(maskedFrame(true, ws.OpBinary, pattern(3000), key), maskedFrame(false, ws.OpText, []byte("ab"), key)...)
	stream = append(stream, maskedFrame(true, ws.OpPing, []byte("x"), key)...)
	stream = append(stream, maskedFrame(true, ws.OpContinuation, pattern(200)[:0], key)...)
	stream = append(stream, maskedFrame(true, ws.OpBinary, pattern(70000), key)...)
	f.Add(stream, []byte{1, 2, 3})
	f.Add(stream, []byte{200, 13, 255, 0, 7})
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		whole := bigEchoLoop(1 << 20)
		fw := openEcho(t, whole)
		whole.feed(fw, bytes.Clone(stream))
		pieces := bigEchoLoop(1 << 20)
		fp := openEcho(t, pieces)
		at := 0
		for i := 0; at < len(stream); i++ {
			n := len(stream) - at
			if i < len(cuts) {
				n = min(n, int(cuts[i])*37+1)
			}
			pieces.feed(fp, bytes.Clone(stream[at:at+n]))
			at += n
		}
		if !bytes.Equal(fw.out, fp.out) {
			t.Fatalf("in pieces: %d bytes out, in one read: %d", len(fp.out), len(fw.out))
		}
	})
}

// BenchmarkLargeFrame receives one frame delivered in 64 KiB reads, as
// gnet delivers it, and echoes it: the CPU per MiB must not grow with the
// frame's size (cpu-ns/MiB: the process's CPU time, the garbage collector's
// included, which a shared machine disturbs less than the wall clock).
func BenchmarkLargeFrame(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20, 4 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			l := bigEchoLoop(16 << 20)
			f := openEcho(b, l)
			f.discardOutput = true
			frame := maskedFrame(true, ws.OpBinary, make([]byte, size), [4]byte{1, 2, 3, 4})
			chunks := make([][]byte, 0, len(frame)/(64<<10)+1)
			for at := 0; at < len(frame); at += 64 << 10 {
				chunks = append(chunks, frame[at:min(at+64<<10, len(frame))])
			}
			b.ReportAllocs()
			b.SetBytes(int64(size))
			start := cpuTime(b)
			for b.Loop() {
				for _, c := range chunks {
					l.feed(f, c)
				}
			}
			perOp := float64(cpuTime(b)-start) / float64(b.N)
			b.ReportMetric(perOp/(float64(size)/(1<<20)), "cpu-ns/MiB")
		})
	}
}

// cpuTime returns the CPU time the process has used, in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
