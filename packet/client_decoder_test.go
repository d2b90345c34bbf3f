package packet

import "testing"

func TestClientDecoder(t *testing.T) {
	pong := ServerPacket{ID: PacketPong, Millis: 0x0102030405060708}
	msgPong := []byte{0x00, 1, 2, 3, 4, 5, 6, 7, 8}
	msgMessage := []byte{0x01, 0x00, 0x02, 'a', 'b', 0, 0, 0, 1, 9}
	msgError := []byte{0x02, 0x01, 0x93, 0x00, 0x04, 'n', 'o', 'p', 'e'}
	msgSubscribed := []byte{0x03, 0x00, 0x01, 'c'}
	msgPublication := []byte{0x04, 0x00, 0x01, 'c', 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2, 9, 8}
	msgSubscribedFrom := []byte{0x05, 0x00, 0x01, 'c', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb, 0, 0, 0, 0, 0, 0, 0, 3, 1}
	tests := []struct {
		name       string
		msg        []byte
		want       []ServerPacket
		wantErr    error
		wantOffset int
	}{
		{"empty message", nil, nil, nil, 0},
		{"pong", msgPong, []ServerPacket{pong}, nil, 9},
		{"negative pong", []byte{0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe},
			[]ServerPacket{{ID: PacketPong, Millis: -2}}, nil, 9},
		{"message", msgMessage, []ServerPacket{{ID: PacketMessage, Channel: []byte("ab"), Payload: []byte{9}}}, nil, 10},
		{"error", msgError, []ServerPacket{{ID: PacketError, Code: ErrorForbidden, Text: []byte("nope")}}, nil, 9},
		{"subscribed", msgSubscribed, []ServerPacket{{ID: PacketSubscribed, Channel: []byte("c")}}, nil, 4},
		{"several packets", cat(msgSubscribed, msgMessage, msgMessage, msgPong),
			[]ServerPacket{
				{ID: PacketSubscribed, Channel: []byte("c")},
				{ID: PacketMessage, Channel: []byte("ab"), Payload: []byte{9}},
				{ID: PacketMessage, Channel: []byte("ab"), Payload: []byte{9}},
				pong,
			}, nil, 4 + 10 + 10 + 9},

		{"publication", msgPublication,
			[]ServerPacket{{ID: PacketPublication, Channel: []byte("c"), Offset: 258, Payload: []byte{9, 8}}}, nil, len(msgPublication)},
		{"subscribed from", msgSubscribedFrom,
			[]ServerPacket{{ID: PacketSubscribedFrom, Channel: []byte("c"), Epoch: -5, Offset: 3, Recovered: 1}}, nil, len(msgSubscribedFrom)},
		{"publication without offset", []byte{0x04, 0x00, 0x01, 'c', 0, 0}, nil, ErrTruncated, 4},
		{"publication without payload", []byte{0x04, 0x00, 0x01, 'c', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, ErrTruncated, 12},
		{"subscribed from without recovered", msgSubscribedFrom[:len(msgSubscribedFrom)-1], nil, ErrTruncated, len(msgSubscribedFrom) - 1},
		{"unknown packet", []byte{0x06}, nil, ErrUnknownPacket, 0},
		{"unknown packet after pong", cat(msgPong, []byte{0xff}), []ServerPacket{pong}, ErrUnknownPacket, 9},
		{"pong cut short", []byte{0x00, 1, 2, 3}, nil, ErrTruncated, 1},
		{"error without code", []byte{0x02, 0x01}, nil, ErrTruncated, 1},
		{"error without text", []byte{0x02, 0x01, 0x90}, nil, ErrTruncated, 3},
		{"payload beyond message", []byte{0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 9}, nil, ErrTruncated, 3},
		{"negative channel length", []byte{0x03, 0xff, 0xff}, nil, ErrNegativeLength, 1},
		{"negative payload length", []byte{0x01, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00}, nil, ErrNegativeLength, 3},
		{"invalid utf-8 text", []byte{0x02, 0x01, 0x90, 0x00, 0x01, 0x80}, nil, ErrInvalidUTF8, 3},
		{"invalid utf-8 channel", []byte{0x03, 0x00, 0x01, 0xfe}, nil, ErrInvalidUTF8, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, offset, err := decodeAllServer(tt.msg)
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if offset != tt.wantOffset {
				t.Errorf("Offset = %d, want %d", offset, tt.wantOffset)
			}
			if !serverPacketsEqual(got, tt.want) {
				t.Errorf("packets = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestClientDecoderErrorIsSticky(t *testing.T) {
	d := NewClientDecoder([]byte{0x07})
	var p ServerPacket
	for range 2 {
		if ok, err := d.Next(&p); ok || err != ErrUnknownPacket || d.Offset() != 0 {
			t.Fatalf("Next = %v, %v at %d", ok, err, d.Offset())
		}
	}
}
