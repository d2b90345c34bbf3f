package packet

import (
	"bytes"
	"strings"
	"testing"
)

func TestEncodeExactBytes(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"pong", AppendPong(nil, 0x0102030405060708), []byte{0x00, 1, 2, 3, 4, 5, 6, 7, 8}},
		{"negative pong", AppendPong(nil, -1), []byte{0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"message", AppendMessage(nil, "ab", []byte{9}), []byte{0x01, 0x00, 0x02, 'a', 'b', 0, 0, 0, 1, 9}},
		{"message bytes", AppendMessageBytes(nil, []byte("ab"), []byte{9}), []byte{0x01, 0x00, 0x02, 'a', 'b', 0, 0, 0, 1, 9}},
		{"error", AppendError(nil, ErrorTooMany, "slow"), []byte{0x02, 0x01, 0xad, 0x00, 0x04, 's', 'l', 'o', 'w'}},
		{"subscribed", AppendSubscribed(nil, "c"), []byte{0x03, 0x00, 0x01, 'c'}},
		{"subscribed bytes", AppendSubscribedBytes(nil, []byte("c")), []byte{0x03, 0x00, 0x01, 'c'}},
		{"publication", AppendPublication(nil, "c", 258, []byte{9, 8}),
			[]byte{0x04, 0x00, 0x01, 'c', 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2, 9, 8}},
		{"subscribed from, recovered", AppendSubscribedFrom(nil, "c", -5, 3, true),
			[]byte{0x05, 0x00, 0x01, 'c', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb, 0, 0, 0, 0, 0, 0, 0, 3, 1}},
		{"subscribed from, not recovered", AppendSubscribedFrom(nil, "c", 1, 0, false),
			[]byte{0x05, 0x00, 0x01, 'c', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"subscribe from", AppendSubscribeFrom(nil, "c", 0x0102030405060708, 7), msgSubscribeFrom},
		{"ping", AppendPing(nil), msgPing},
		{"subscribe", AppendSubscribe(nil, "ab"), msgSubscribeAB},
		{"unsubscribe", AppendUnsubscribe(nil, "ab"), msgUnsubAB},
		{"publish", AppendPublish(nil, "c", []byte{9, 8}), msgPublish},
		{"publish empty", AppendPublish(nil, "", nil), msgPublishZero},
		{"empty settings", AppendSettings(nil), msgSettings0},
		{"settings", AppendSettings(nil,
			Setting{ID: SettingEcho, Byte: 1},
			Setting{ID: SettingClientName, String: []byte("bot")},
			Setting{ID: SettingBatchWindow, Short: 50}), msgSettings},
		{"unknown setting is written as its id only", AppendSettings(nil, Setting{ID: 0x04, Short: 7}), []byte{0x01, 0x04, 0xff}},
		{"appends after existing bytes", AppendPong([]byte{0xaa}, 1), []byte{0xaa, 0x00, 0, 0, 0, 0, 0, 0, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(tt.got, tt.want) {
				t.Fatalf("got % x, want % x", tt.got, tt.want)
			}
		})
	}
}

func TestMessageLen(t *testing.T) {
	for _, n := range [][2]int{{0, 0}, {2, 1}, {100, 4096}} {
		msg := AppendMessage(nil, strings.Repeat("c", n[0]), make([]byte, n[1]))
		if got := MessageLen(n[0], n[1]); got != len(msg) {
			t.Errorf("MessageLen(%d, %d) = %d, want %d", n[0], n[1], got, len(msg))
		}
	}
}

func TestPublicationLen(t *testing.T) {
	for _, n := range [][2]int{{0, 0}, {2, 1}, {100, 4096}} {
		msg := AppendPublication(nil, strings.Repeat("c", n[0]), 1, make([]byte, n[1]))
		if got := PublicationLen(n[0], n[1]); got != len(msg) {
			t.Errorf("PublicationLen(%d, %d) = %d, want %d", n[0], n[1], got, len(msg))
		}
	}
}

func TestEncodersPanicOnOverlongString(t *testing.T) {
	long := strings.Repeat("x", MaxStringLen+1)
	for name, encode := range map[string]func(){
		"message":     func() { AppendMessage(nil, long, nil) },
		"error":       func() { AppendError(nil, ErrorBadRequest, long) },
		"subscribed":  func() { AppendSubscribed(nil, long) },
		"subscribe":   func() { AppendSubscribe(nil, long) },
		"client name": func() { AppendSettings(nil, Setting{ID: SettingClientName, String: []byte(long)}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic for a string longer than MaxStringLen")
				}
			}()
			encode()
		})
	}
}

func TestRoundTripServerBound(t *testing.T) {
	longest := strings.Repeat("é", MaxStringLen/2) + "x" // exactly MaxStringLen bytes
	packets := []Packet{
		{ID: PacketPing},
		{ID: PacketSubscribe, Channel: []byte("chat.room-1")},
		{ID: PacketSubscribe, Channel: []byte(longest)},
		{ID: PacketUnsubscribe, Channel: []byte("")},
		{ID: PacketPublish, Channel: []byte("ü"), Payload: repeat(0xff, 70000)},
		{ID: PacketPublish, Channel: []byte("c"), Payload: []byte{}},
		{ID: PacketSettings, Settings: []byte{}},
		{ID: PacketSettings, Settings: settingsBodyOf(
			Setting{ID: SettingBatchWindow, Short: -32768},
			Setting{ID: SettingEcho, Byte: -128},
			Setting{ID: SettingClientName, String: []byte(longest)},
			Setting{ID: SettingEcho})},
	}
	for _, p := range packets {
		msg := reencode(nil, &p)
		got, _, err := decodeAll(msg)
		if err != nil || !packetsEqual(got, []Packet{p}) {
			t.Errorf("packet %#x: decoded %d packets, err %v", p.ID, len(got), err)
		}
	}
	// All of them in one message.
	var msg []byte
	for _, p := range packets {
		msg = reencode(msg, &p)
	}
	if got, _, err := decodeAll(msg); err != nil || !packetsEqual(got, packets) {
		t.Errorf("combined message: decoded %d packets, err %v", len(got), err)
	}
}

func TestRoundTripClientBound(t *testing.T) {
	packets := []ServerPacket{
		{ID: PacketPong, Millis: 1_700_000_000_000},
		{ID: PacketPong, Millis: -1 << 63},
		{ID: PacketMessage, Channel: []byte("news"), Payload: []byte("hello")},
		{ID: PacketMessage, Channel: []byte{}, Payload: []byte{}},
		{ID: PacketError, Code: ErrorUnavailable, Text: []byte("broker unavailable")},
		{ID: PacketError, Code: -1, Text: []byte{}},
		{ID: PacketSubscribed, Channel: []byte("news")},
	}
	var msg []byte
	for _, p := range packets {
		one := reencodeServer(nil, &p)
		got, _, err := decodeAllServer(one)
		if err != nil || !serverPacketsEqual(got, []ServerPacket{p}) {
			t.Errorf("packet %+v: decoded %+v, err %v", p, got, err)
		}
		msg = append(msg, one...)
	}
	if got, _, err := decodeAllServer(msg); err != nil || !serverPacketsEqual(got, packets) {
		t.Errorf("combined message: decoded %d packets, err %v", len(got), err)
	}
	// The string-channel encoders agree with the byte-channel ones.
	if !bytes.Equal(AppendMessage(nil, "news", []byte("hello")), AppendMessageBytes(nil, []byte("news"), []byte("hello"))) ||
		!bytes.Equal(AppendSubscribed(nil, "news"), AppendSubscribedBytes(nil, []byte("news"))) {
		t.Error("string and bytes encoders disagree")
	}
}

// settingsBodyOf returns what Packet.Settings holds for these settings: the
// encoded packet without its id and terminator.
func settingsBodyOf(settings ...Setting) []byte {
	msg := AppendSettings(nil, settings...)
	return msg[1 : len(msg)-1]
}
