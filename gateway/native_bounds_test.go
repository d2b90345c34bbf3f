package gateway_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/native"
	"github.com/wsgateway/gateway/packet"
)

// clientFrame wraps msg in a masked binary client frame with a zero mask,
// whatever its length.
func clientFrame(msg []byte) []byte {
	var f []byte
	switch {
	case len(msg) < 126:
		f = []byte{0x82, 0x80 | byte(len(msg))}
	case len(msg) <= 0xffff:
		f = binary.BigEndian.AppendUint16([]byte{0x82, 0x80 | 126}, uint16(len(msg)))
	default:
		f = binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, uint64(len(msg)))
	}
	return append(append(f, 0, 0, 0, 0), msg...)
}

// TestNativePacketsPerMessageBounded: a message of MaxPacketsPerMessage
// Pings is answered by as many Pongs, all in one write; one Ping more and
// the message is refused whole with 1008, nothing of it answered.
func TestNativePacketsPerMessageBounded(t *testing.T) {
	l, key := nativeLoop(t)

	f := authenticated(t, l, key)
	l.Feed(f, clientFrame(bytes.Repeat(packet.AppendPing(nil), native.MaxPacketsPerMessage)))
	const pongFrame = 2 + 9
	if f.Writes() != 1 || len(f.Output()) != native.MaxPacketsPerMessage*pongFrame {
		t.Fatalf("%d Pings: %d writes of %d bytes, want one write of %d", native.MaxPacketsPerMessage,
			f.Writes(), len(f.Output()), native.MaxPacketsPerMessage*pongFrame)
	}
	for off := 0; off < len(f.Output()); off += pongFrame {
		if fr := f.Output()[off : off+3]; !bytes.Equal(fr, []byte{0x82, 0x09, packet.PacketPong}) {
			t.Fatalf("reply at byte %d starts % x, want a Pong frame", off, fr)
		}
	}

	want := gateway.AppendCloseFrame(nil, 1008, fmt.Sprintf("too many packets in one message: more than %d", native.MaxPacketsPerMessage))
	for _, n := range []int{native.MaxPacketsPerMessage + 1, 60000} {
		f := authenticated(t, l, key)
		l.Feed(f, clientFrame(bytes.Repeat(packet.AppendPing(nil), n)))
		if f.Writes() != 1 || !bytes.Equal(f.Output(), want) {
			t.Fatalf("%d Pings: %d writes of % x, want only the close % x", n, f.Writes(), f.Output(), want)
		}
	}

	// Refused whole: a Subscribe before the packet past the bound does not run.
	f = authenticated(t, l, key)
	msg := packet.AppendSubscribe(nil, "room")
	msg = append(msg, bytes.Repeat(packet.AppendPing(nil), native.MaxPacketsPerMessage)...)
	l.Feed(f, clientFrame(msg))
	if !bytes.Equal(f.Output(), want) || l.Server().Hub().Channels() != 0 {
		t.Fatalf("a refused message ran its Subscribe: % x", f.Output())
	}
}

// TestNativeSubscribeRefusals: past the cap Error 429; a channel name of
// 32 KiB is refused with an Error of bounded size (it used to overflow the
// Error's string and panic the handler into a 3005 close).
func TestNativeSubscribeRefusals(t *testing.T) {
	l, key := nativeLoop(t)
	f := authenticated(t, l, key)
	var msg []byte
	for i := range native.DefaultMaxSubscriptions {
		msg = packet.AppendSubscribe(msg, fmt.Sprint("c", i))
	}
	l.Feed(f, clientFrame(msg))
	f.ResetOutput()
	l.Feed(f, clientFrame(packet.AppendSubscribe(packet.AppendSubscribe(nil, "c0"), "one-more")))
	var want []byte
	sub := packet.AppendSubscribed(nil, "c0")
	want = append(gateway.AppendFrameHeader(want, 0x2, len(sub)), sub...)
	e := packet.AppendError(nil, packet.ErrorTooMany, `subscribe "one-more": more than 128 subscriptions`)
	want = append(gateway.AppendFrameHeader(want, 0x2, len(e)), e...)
	if f.Writes() != 1 || !bytes.Equal(f.Output(), want) {
		t.Fatalf("at the cap: %d writes of % x, want one of % x", f.Writes(), f.Output(), want)
	}

	f = authenticated(t, l, key)
	long := strings.Repeat("\x01", packet.MaxStringLen)
	l.Feed(f, clientFrame(packet.AppendSubscribe(nil, long)))
	e = packet.AppendError(nil, packet.ErrorBadRequest,
		`subscribe "`+strings.Repeat(`\x01`, native.MaxChannelLen)+`"...: channel names are 1 to 255 bytes`)
	want = append(gateway.AppendFrameHeader(nil, 0x2, len(e)), e...)
	if !bytes.Equal(f.Output(), want) {
		t.Fatalf("32 KiB channel: got % x, want % x", f.Output(), want)
	}
}
