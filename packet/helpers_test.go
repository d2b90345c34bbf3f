package packet

import "bytes"

// cat joins message parts, so test messages can be written packet by packet.
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// repeat returns n copies of b.
func repeat(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// reencode appends p through the public encoders, so that decoding then
// encoding can be compared with the original bytes.
func reencode(dst []byte, p *Packet) []byte {
	switch p.ID {
	case PacketPing:
		return AppendPing(dst)
	case PacketSettings:
		return AppendSettings(dst, readAllSettings(p.Settings)...)
	case PacketSubscribe:
		return AppendSubscribe(dst, string(p.Channel))
	case PacketUnsubscribe:
		return AppendUnsubscribe(dst, string(p.Channel))
	case PacketPublish:
		return AppendPublish(dst, string(p.Channel), p.Payload)
	case PacketSubscribeFrom:
		return AppendSubscribeFrom(dst, string(p.Channel), p.Epoch, p.Offset)
	}
	panic("reencode: unknown packet id")
}

func reencodeServer(dst []byte, p *ServerPacket) []byte {
	switch p.ID {
	case PacketPong:
		return AppendPong(dst, p.Millis)
	case PacketMessage:
		return AppendMessageBytes(dst, p.Channel, p.Payload)
	case PacketError:
		return AppendError(dst, p.Code, string(p.Text))
	case PacketSubscribed:
		return AppendSubscribedBytes(dst, p.Channel)
	case PacketPublication:
		return AppendPublication(dst, string(p.Channel), p.Offset, p.Payload)
	case PacketSubscribedFrom:
		dst = AppendSubscribedFrom(dst, string(p.Channel), p.Epoch, p.Offset, false)
		dst[len(dst)-1] = p.Recovered // as read: the decoder keeps values other than 0 and 1
		return dst
	}
	panic("reencodeServer: unknown packet id")
}

func readAllSettings(raw []byte) []Setting {
	var out []Setting
	r := NewSettingsReader(raw)
	var s Setting
	for r.Next(&s) {
		out = append(out, s)
	}
	return out
}

func decodeAll(msg []byte) (packets []Packet, offset int, err error) {
	d := NewDecoder(msg)
	for {
		var p Packet
		ok, err := d.Next(&p)
		if !ok {
			return packets, d.Offset(), err
		}
		packets = append(packets, p)
	}
}

func decodeAllServer(msg []byte) (packets []ServerPacket, offset int, err error) {
	d := NewClientDecoder(msg)
	for {
		var p ServerPacket
		ok, err := d.Next(&p)
		if !ok {
			return packets, d.Offset(), err
		}
		packets = append(packets, p)
	}
}

func packetsEqual(a, b []Packet) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID ||
			!bytes.Equal(a[i].Channel, b[i].Channel) ||
			!bytes.Equal(a[i].Payload, b[i].Payload) ||
			!bytes.Equal(a[i].Settings, b[i].Settings) ||
			a[i].Epoch != b[i].Epoch || a[i].Offset != b[i].Offset ||
			(a[i].Settings == nil) != (b[i].Settings == nil) {
			return false
		}
	}
	return true
}

func serverPacketsEqual(a, b []ServerPacket) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Millis != b[i].Millis || a[i].Code != b[i].Code ||
			a[i].Epoch != b[i].Epoch || a[i].Offset != b[i].Offset || a[i].Recovered != b[i].Recovered ||
			!bytes.Equal(a[i].Channel, b[i].Channel) ||
			!bytes.Equal(a[i].Payload, b[i].Payload) ||
			!bytes.Equal(a[i].Text, b[i].Text) {
			return false
		}
	}
	return true
}

func settingsEqual(a, b []Setting) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Byte != b[i].Byte || a[i].Short != b[i].Short ||
			!bytes.Equal(a[i].String, b[i].String) {
			return false
		}
	}
	return true
}
