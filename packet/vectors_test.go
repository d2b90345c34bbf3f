package packet_test

import (
	"bytes"
	"testing"

	"github.com/wsgateway/gateway/internal/vectors"
	"github.com/wsgateway/gateway/packet"
)

// TestVectors checks the codec against the shared test vectors
// (testdata/packets.json): every message decodes to its packets, every
// packet encodes back to the same bytes, every malformed message fails with
// its error at its offset.
func TestVectors(t *testing.T) {
	f, err := vectors.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(packet.Hello, vectors.Bytes(f.Hello)) {
		t.Errorf("Hello % x, vectors say %s", packet.Hello, f.Hello)
	}
	for _, a := range f.Auth {
		key, err := packet.ParseAuth(vectors.Bytes(a.Hex))
		if got := errText(err); got != a.Error || string(key) != a.Key {
			t.Errorf("auth %q: key %q, error %q; want %q, %q", a.Name, key, got, a.Key, a.Error)
		}
		if a.Error == "" && !bytes.Equal(packet.AppendAuth(nil, packet.Version, []byte(a.Key)), vectors.Bytes(a.Hex)) {
			t.Errorf("auth %q: AppendAuth differs", a.Name)
		}
	}
	for _, m := range f.ServerBound {
		d := packet.NewDecoder(vectors.Bytes(m.Hex))
		var enc []byte
		for i, want := range m.Packets {
			var p packet.Packet
			if ok, err := d.Next(&p); !ok {
				t.Fatalf("server-bound %q: packet %d: %v", m.Name, i, err)
			}
			if err := want.Matches(&p); err != nil {
				t.Errorf("server-bound %q: packet %d: %v", m.Name, i, err)
			}
			enc = want.Encode(enc)
		}
		var p packet.Packet
		if ok, err := d.Next(&p); ok || err != nil {
			t.Errorf("server-bound %q: more than %d packets (%v)", m.Name, len(m.Packets), err)
		}
		if h := vectors.Bytes(m.Hex); !bytes.Equal(enc, h) {
			t.Errorf("server-bound %q: encoded % x, want % x", m.Name, enc, h)
		}
	}
	for _, m := range f.ClientBound {
		d := packet.NewClientDecoder(vectors.Bytes(m.Hex))
		var enc []byte
		for i, want := range m.Packets {
			var p packet.ServerPacket
			if ok, err := d.Next(&p); !ok {
				t.Fatalf("client-bound %q: packet %d: %v", m.Name, i, err)
			}
			if err := want.MatchesServer(&p); err != nil {
				t.Errorf("client-bound %q: packet %d: %v", m.Name, i, err)
			}
			enc = want.EncodeServer(enc)
		}
		var p packet.ServerPacket
		if ok, err := d.Next(&p); ok || err != nil {
			t.Errorf("client-bound %q: more than %d packets (%v)", m.Name, len(m.Packets), err)
		}
		if h := vectors.Bytes(m.Hex); !bytes.Equal(enc, h) {
			t.Errorf("client-bound %q: encoded % x, want % x", m.Name, enc, h)
		}
	}
	for _, m := range f.ServerBoundMalformed {
		d := packet.NewDecoder(vectors.Bytes(m.Hex))
		n, err := 0, error(nil)
		for {
			var p packet.Packet
			var ok bool
			if ok, err = d.Next(&p); !ok {
				break
			}
			n++
		}
		if errText(err) != m.Error || d.Offset() != m.Offset || n != m.PacketsBefore {
			t.Errorf("server-bound malformed %q: %q at %d after %d packets; want %q at %d after %d",
				m.Name, errText(err), d.Offset(), n, m.Error, m.Offset, m.PacketsBefore)
		}
	}
	for _, m := range f.ClientBoundMalformed {
		d := packet.NewClientDecoder(vectors.Bytes(m.Hex))
		n, err := 0, error(nil)
		for {
			var p packet.ServerPacket
			var ok bool
			if ok, err = d.Next(&p); !ok {
				break
			}
			n++
		}
		if errText(err) != m.Error || d.Offset() != m.Offset || n != m.PacketsBefore {
			t.Errorf("client-bound malformed %q: %q at %d after %d packets; want %q at %d after %d",
				m.Name, errText(err), d.Offset(), n, m.Error, m.Offset, m.PacketsBefore)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
