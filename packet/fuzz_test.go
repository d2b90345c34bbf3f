package packet

import (
	"bytes"
	"testing"
)

// The seeds run as ordinary tests under `go test`; `go test -fuzz` explores
// from them.

func FuzzDecoder(f *testing.F) {
	for _, seed := range [][]byte{
		nil, msgPing, msgSubscribeAB, msgUnsubAB, msgPublish, msgPublishZero, msgSettings0, msgSettings,
		cat(msgPing, msgSubscribeAB, msgPublish, msgSettings, msgPing),
		msgSubscribeFrom, {0x05, 0x00, 0x00, 1}, {0x06}, {0x01, 0x00, 0xff}, {0x01, 0x01, 0x01}, {0x02, 0x80, 0x00},
		{0x02, 0x00, 0x01, 0xff}, {0x04, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		d := NewDecoder(msg)
		var p Packet
		var reencoded []byte
		var err error
		for {
			var ok bool
			if ok, err = d.Next(&p); !ok {
				break
			}
			reencoded = reencode(reencoded, &p)
		}
		if off := d.Offset(); off < 0 || off > len(msg) {
			t.Fatalf("Offset %d outside message of %d bytes", off, len(msg))
		}
		if v := Validate(msg); v != err {
			t.Fatalf("Validate = %v, iteration ended with %v", v, err)
		}
		if err == nil && !bytes.Equal(reencoded, msg) {
			t.Fatalf("re-encoded % x, want % x", reencoded, msg)
		}
	})
}

func FuzzParseAuth(f *testing.F) {
	for _, seed := range [][]byte{
		nil, Hello, {0xb6, 0xc4}, {0xb6, 0xc4, 0, 3, 'k', 'e', 'y'}, {0xb6, 0xc4, 1, 1, 'k'},
		{0xb6, 0xc4, 0, 0x80}, {0xb6, 0xc4, 0, 3, 'k', 'e', 'y', '!'},
		AppendAuth(nil, Version, repeat('k', MaxKeyLen)),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		key, err := ParseAuth(msg)
		if err != nil {
			if key != nil {
				t.Fatalf("key %q returned with error %v", key, err)
			}
			return
		}
		if len(key) < 1 || len(key) > MaxKeyLen {
			t.Fatalf("accepted key of %d bytes", len(key))
		}
		if again := AppendAuth(nil, Version, key); !bytes.Equal(again, msg) {
			t.Fatalf("AppendAuth(key) = % x, want % x", again, msg)
		}
	})
}

func FuzzClientDecoder(f *testing.F) {
	for _, seed := range [][]byte{
		nil,
		AppendPong(nil, 0x0102030405060708),
		AppendMessage(nil, "ab", []byte{9}),
		AppendError(nil, ErrorTooLarge, "payload too large"),
		AppendSubscribed(AppendMessage(nil, "c", nil), "c"),
		{0x04}, {0x05, 0x00, 0x01, 'c', 1}, {0x06}, AppendPublication(nil, "c", 1, []byte{1}),
		AppendSubscribedFrom(nil, "c", 1, 2, true), {0x00, 1, 2}, {0x01, 0xff, 0xff}, {0x02, 0x01, 0x90, 0x00, 0x01, 0x80},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		d := NewClientDecoder(msg)
		var p ServerPacket
		var reencoded []byte
		var err error
		for {
			var ok bool
			if ok, err = d.Next(&p); !ok {
				break
			}
			reencoded = reencodeServer(reencoded, &p)
		}
		if off := d.Offset(); off < 0 || off > len(msg) {
			t.Fatalf("Offset %d outside message of %d bytes", off, len(msg))
		}
		if err == nil && !bytes.Equal(reencoded, msg) {
			t.Fatalf("re-encoded % x, want % x", reencoded, msg)
		}
	})
}
