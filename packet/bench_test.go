package packet

import "testing"

// benchMessage is a typical client message: ping, subscribe, a publish of
// 100 bytes and settings.
var benchMessage = func() []byte {
	msg := AppendPing(nil)
	msg = AppendSubscribe(msg, "chat.room.42")
	msg = AppendPublish(msg, "chat.room.42", make([]byte, 100))
	return AppendSettings(msg,
		Setting{ID: SettingEcho, Byte: 1},
		Setting{ID: SettingClientName, String: []byte("load-gen")},
		Setting{ID: SettingBatchWindow, Short: 20})
}()

var benchServerMessage = func() []byte {
	msg := AppendPong(nil, 1_700_000_000_000)
	msg = AppendSubscribed(msg, "chat.room.42")
	msg = AppendMessage(msg, "chat.room.42", make([]byte, 100))
	return AppendError(msg, ErrorTooMany, "too many subscriptions")
}()

var benchAuth = AppendAuth(nil, Version, []byte("0123456789abcdef0123456789abcdef"))

// Sinks keep the compiler from discarding the work being measured.
var (
	sinkInt   int
	sinkBytes []byte
	sinkErr   error
)

// badMessage ends in a subscribe with a negative channel length.
var badMessage = cat(benchMessage, []byte{0x02, 0xff, 0xff})

// decodeMessage walks every packet and setting of msg, as the server's read
// loop does.
func decodeMessage(msg []byte) int {
	d := NewDecoder(msg)
	var p Packet
	var s Setting
	n := 0
	for {
		ok, err := d.Next(&p)
		if !ok {
			if err != nil {
				panic(err)
			}
			return n
		}
		n += len(p.Payload)
		if p.ID == PacketSettings {
			r := NewSettingsReader(p.Settings)
			for r.Next(&s) {
				n++
			}
		}
	}
}

func decodeServerMessage(msg []byte) int {
	d := NewClientDecoder(msg)
	var p ServerPacket
	n := 0
	for {
		ok, err := d.Next(&p)
		if !ok {
			if err != nil {
				panic(err)
			}
			return n
		}
		n += len(p.Payload) + len(p.Text)
	}
}

func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchMessage)))
	for b.Loop() {
		sinkInt = decodeMessage(benchMessage)
	}
}

func BenchmarkParseAuth(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		key, err := ParseAuth(benchAuth)
		if err != nil {
			b.Fatal(err)
		}
		sinkBytes = key
	}
}

func BenchmarkAppendPong(b *testing.B) {
	b.ReportAllocs()
	dst := make([]byte, 0, 64)
	for b.Loop() {
		dst = AppendPong(dst[:0], 1_700_000_000_000)
	}
	sinkBytes = dst
}

func BenchmarkAppendMessage(b *testing.B) {
	b.ReportAllocs()
	payload := make([]byte, 100)
	dst := make([]byte, 0, MessageLen(len("chat.room.42"), len(payload)))
	b.SetBytes(int64(cap(dst)))
	for b.Loop() {
		dst = AppendMessage(dst[:0], "chat.room.42", payload)
	}
	sinkBytes = dst
}

func BenchmarkClientDecode(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchServerMessage)))
	for b.Loop() {
		sinkInt = decodeServerMessage(benchServerMessage)
	}
}

func TestZeroAllocs(t *testing.T) {
	payload := make([]byte, 100)
	dst := make([]byte, 0, 256)
	for name, run := range map[string]func(){
		"Decoder.Next":       func() { sinkInt = decodeMessage(benchMessage) },
		"Validate":           func() { sinkErr = Validate(benchMessage) },
		"ClientDecoder.Next": func() { sinkInt = decodeServerMessage(benchServerMessage) },
		"ParseAuth":          func() { sinkBytes, _ = ParseAuth(benchAuth) },
		"AppendPong":         func() { dst = AppendPong(dst[:0], 42) },
		"AppendMessage":      func() { dst = AppendMessage(dst[:0], "chat.room.42", payload) },
		"AppendMessageBytes": func() { dst = AppendMessageBytes(dst[:0], benchAuth, payload) },
		"AppendError":        func() { dst = AppendError(dst[:0], ErrorTooLarge, "payload too large") },
		"AppendSubscribed":   func() { dst = AppendSubscribed(dst[:0], "chat.room.42") },
		"Validate error":     func() { sinkErr = Validate(badMessage) },
	} {
		if allocs := testing.AllocsPerRun(100, run); allocs != 0 {
			t.Errorf("%s: %v allocs per run, want 0", name, allocs)
		}
	}
}
