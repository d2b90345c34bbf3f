package packet

import (
	"testing"
)

// Messages used across the tests, written byte by byte so they check the
// encoders as well as the decoders.
var (
	msgPing        = []byte{0x00}
	msgSubscribeAB = []byte{0x02, 0x00, 0x02, 'a', 'b'}
	msgUnsubAB     = []byte{0x03, 0x00, 0x02, 'a', 'b'}
	msgPublish     = []byte{0x04, 0x00, 0x01, 'c', 0x00, 0x00, 0x00, 0x02, 9, 8}
	msgPublishZero = []byte{0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}
	msgSettings0   = []byte{0x01, 0xff}
	// SubscribeFrom("c", epoch 0x0102030405060708, offset 7).
	msgSubscribeFrom = []byte{0x05, 0x00, 0x01, 'c', 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 7}
	// echo=1, client name "bot", batch window 50 (0x0032).
	settingsBody = []byte{0x01, 0x01, 0x02, 0x00, 0x03, 'b', 'o', 't', 0x03, 0x00, 0x32}
	msgSettings  = cat([]byte{0x01}, settingsBody, []byte{0xff})
)

func TestDecoder(t *testing.T) {
	ping := Packet{ID: PacketPing}
	subAB := Packet{ID: PacketSubscribe, Channel: []byte("ab")}
	tests := []struct {
		name       string
		msg        []byte
		want       []Packet // packets decoded before the end or the error
		wantErr    error
		wantOffset int
	}{
		{"empty message", nil, nil, nil, 0},
		{"ping", msgPing, []Packet{ping}, nil, 1},
		{"subscribe", msgSubscribeAB, []Packet{subAB}, nil, 5},
		{"unsubscribe", msgUnsubAB, []Packet{{ID: PacketUnsubscribe, Channel: []byte("ab")}}, nil, 5},
		{"publish", msgPublish, []Packet{{ID: PacketPublish, Channel: []byte("c"), Payload: []byte{9, 8}}}, nil, 10},
		{"publish empty channel and payload", msgPublishZero, []Packet{{ID: PacketPublish, Channel: []byte{}, Payload: []byte{}}}, nil, 7},
		{"empty settings", msgSettings0, []Packet{{ID: PacketSettings, Settings: []byte{}}}, nil, 2},
		{"settings of each type", msgSettings, []Packet{{ID: PacketSettings, Settings: settingsBody}}, nil, len(msgSettings)},
		{"settings with utf-8 name", []byte{0x01, 0x02, 0x00, 0x02, 0xc3, 0xa9, 0xff},
			[]Packet{{ID: PacketSettings, Settings: []byte{0x02, 0x00, 0x02, 0xc3, 0xa9}}}, nil, 7},
		{"several packets",
			cat(msgPing, msgSubscribeAB, msgPublish, msgSettings, msgUnsubAB, msgPing),
			[]Packet{ping, subAB,
				{ID: PacketPublish, Channel: []byte("c"), Payload: []byte{9, 8}},
				{ID: PacketSettings, Settings: settingsBody},
				{ID: PacketUnsubscribe, Channel: []byte("ab")}, ping},
			nil, 1 + 5 + 10 + len(msgSettings) + 5 + 1},

		{"subscribe from", msgSubscribeFrom,
			[]Packet{{ID: PacketSubscribeFrom, Channel: []byte("c"), Epoch: 0x0102030405060708, Offset: 7}}, nil, len(msgSubscribeFrom)},
		{"subscribe from without replay", []byte{0x05, 0x00, 0x01, 'c', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			[]Packet{{ID: PacketSubscribeFrom, Channel: []byte("c")}}, nil, 20},
		// Negative epochs and offsets are well-formed; the server answers
		// Error 400 for a negative offset (a value, not a structure, rule).
		{"subscribe from negative offset", []byte{0x05, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe},
			[]Packet{{ID: PacketSubscribeFrom, Channel: []byte{}, Epoch: -1, Offset: -2}}, nil, 19},
		{"subscribe from without epoch", []byte{0x05, 0x00, 0x01, 'c', 0, 0, 0}, nil, ErrTruncated, 4},
		{"subscribe from without offset", []byte{0x05, 0x00, 0x01, 'c', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, nil, ErrTruncated, 12},

		// Unknown ids: Offset points at the id byte.
		{"unknown packet", []byte{0x06}, nil, ErrUnknownPacket, 0},
		{"unknown packet after ping", []byte{0x00, 0xff, 0x00}, []Packet{ping}, ErrUnknownPacket, 1},
		{"unknown setting 0x00", []byte{0x01, 0x00, 0xff}, nil, ErrUnknownSetting, 1},
		{"unknown setting 0x04 after echo", []byte{0x01, 0x01, 0x00, 0x04, 0xff}, nil, ErrUnknownSetting, 3},

		// Truncation: Offset points at the value that is cut off.
		{"subscribe without length", []byte{0x02}, nil, ErrTruncated, 1},
		{"subscribe with half a length", []byte{0x02, 0x00}, nil, ErrTruncated, 1},
		{"channel cut short", []byte{0x00, 0x02, 0x00, 0x03, 'a', 'b'}, []Packet{ping}, ErrTruncated, 2},
		{"publish without payload", []byte{0x04, 0x00, 0x01, 'c'}, nil, ErrTruncated, 4},
		{"publish with half a payload length", []byte{0x04, 0x00, 0x00, 0x00, 0x00}, nil, ErrTruncated, 3},
		{"payload length beyond message", []byte{0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 1, 2}, nil, ErrTruncated, 3},
		{"payload length max int32", []byte{0x04, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 1}, nil, ErrTruncated, 3},
		{"settings without terminator", []byte{0x01}, nil, ErrTruncated, 1},
		{"settings missing terminator after echo", []byte{0x01, 0x01, 0x01}, nil, ErrTruncated, 3},
		{"echo without value", []byte{0x01, 0x01}, nil, ErrTruncated, 2},
		{"batch window cut short", []byte{0x01, 0x03, 0x00}, nil, ErrTruncated, 2},
		{"client name cut short", []byte{0x01, 0x02, 0x00, 0x05, 'b', 'o'}, nil, ErrTruncated, 2},

		// Negative lengths: Offset points at the length prefix.
		{"negative channel length", []byte{0x02, 0x80, 0x00}, nil, ErrNegativeLength, 1},
		{"channel length -1", []byte{0x03, 0xff, 0xff, 'a'}, nil, ErrNegativeLength, 1},
		{"negative payload length", []byte{0x04, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff}, nil, ErrNegativeLength, 3},
		{"payload length min int32", []byte{0x04, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00}, nil, ErrNegativeLength, 3},
		{"negative client name length", []byte{0x01, 0x02, 0xff, 0xfe, 0xff}, nil, ErrNegativeLength, 2},

		// Invalid UTF-8: Offset points at the string's length prefix.
		{"invalid utf-8 channel", []byte{0x02, 0x00, 0x01, 0xff}, nil, ErrInvalidUTF8, 1},
		{"invalid utf-8 publish channel", []byte{0x04, 0x00, 0x02, 0xc3, 0x28, 0, 0, 0, 0}, nil, ErrInvalidUTF8, 1},
		{"invalid utf-8 client name", []byte{0x01, 0x01, 0x00, 0x02, 0x00, 0x02, 0xc3, 0x28, 0xff}, nil, ErrInvalidUTF8, 4},
		{"surrogate in channel", []byte{0x02, 0x00, 0x03, 0xed, 0xa0, 0x80}, nil, ErrInvalidUTF8, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, offset, err := decodeAll(tt.msg)
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if offset != tt.wantOffset {
				t.Errorf("Offset = %d, want %d", offset, tt.wantOffset)
			}
			if !packetsEqual(got, tt.want) {
				t.Errorf("packets = %+v, want %+v", got, tt.want)
			}
			if v := Validate(tt.msg); v != tt.wantErr {
				t.Errorf("Validate = %v, want %v", v, tt.wantErr)
			}
		})
	}
}

func TestDecoderErrorIsSticky(t *testing.T) {
	d := NewDecoder([]byte{0x00, 0x09, 0x00})
	var p Packet
	if ok, err := d.Next(&p); !ok || err != nil {
		t.Fatalf("first Next = %v, %v", ok, err)
	}
	for range 2 {
		p = Packet{ID: 0x42, Channel: []byte("x")}
		ok, err := d.Next(&p)
		if ok || err != ErrUnknownPacket || d.Offset() != 1 {
			t.Fatalf("Next = %v, %v at %d; want false, %v at 1", ok, err, d.Offset(), ErrUnknownPacket)
		}
		if p.ID != 0 || p.Channel != nil {
			t.Fatalf("packet not zeroed after error: %+v", p)
		}
	}
}

func TestDecoderCleanEndRepeats(t *testing.T) {
	d := NewDecoder(msgPing)
	var p Packet
	d.Next(&p)
	for range 2 {
		if ok, err := d.Next(&p); ok || err != nil {
			t.Fatalf("Next at end = %v, %v", ok, err)
		}
	}
}

func TestSettingsReader(t *testing.T) {
	want := []Setting{
		{ID: SettingEcho, Byte: 1},
		{ID: SettingClientName, String: []byte("bot")},
		{ID: SettingBatchWindow, Short: 50},
	}
	if got := readAllSettings(settingsBody); !settingsEqual(got, want) {
		t.Fatalf("settings = %+v, want %+v", got, want)
	}
	if got := readAllSettings(nil); len(got) != 0 {
		t.Fatalf("empty settings = %+v", got)
	}
	// Values are read as signed: range checks are the server's job.
	signed := []byte{0x01, 0xff, 0x03, 0xff, 0x38}
	want = []Setting{{ID: SettingEcho, Byte: -1}, {ID: SettingBatchWindow, Short: -200}}
	if got := readAllSettings(signed); !settingsEqual(got, want) {
		t.Fatalf("signed settings = %+v, want %+v", got, want)
	}
}

func TestSettingsReaderStopsOnMalformedInput(t *testing.T) {
	for _, raw := range [][]byte{
		{0x00},
		{0x01},
		{0x01, 0x01, 0x09, 0x01, 0x01},
		{0x02, 0xff, 0xff},
		{0x02, 0x00, 0x01, 0xff},
		{0x03, 0x00},
		{0xff},
	} {
		r := NewSettingsReader(raw)
		var s Setting
		n := 0
		for r.Next(&s) {
			n++
		}
		if n > 1 || s.ID != 0 || r.Next(&s) {
			t.Errorf("raw % x: read %d settings, last %+v; want at most the leading valid one", raw, n, s)
		}
	}
}
