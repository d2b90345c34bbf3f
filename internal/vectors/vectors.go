// Package vectors loads the native protocol's shared test vectors
// (testdata/packets.json at the root of the repository) for the Go tests of
// every codec: package packet and the Go client. The TypeScript client
// reads the same file, so the codecs cannot drift apart.
package vectors

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/wsgateway/gateway/packet"
)

// File is the whole vectors file.
type File struct {
	Hello                string      `json:"hello"`
	Auth                 []Auth      `json:"auth"`
	ServerBound          []Message   `json:"server_bound"`
	ClientBound          []Message   `json:"client_bound"`
	ServerBoundMalformed []Malformed `json:"server_bound_malformed"`
	ClientBoundMalformed []Malformed `json:"client_bound_malformed"`
}

// Auth is a client auth message and its key, or the error it must give.
type Auth struct {
	Name  string `json:"name"`
	Hex   string `json:"hex"`
	Key   string `json:"key"`
	Error string `json:"error"`
}

// Message is one well-formed WebSocket message and the packets it holds.
type Message struct {
	Name    string   `json:"name"`
	Hex     string   `json:"hex"`
	Packets []Packet `json:"packets"`
}

// Malformed is a message a decoder must refuse.
type Malformed struct {
	Name          string `json:"name"`
	Hex           string `json:"hex"`
	Error         string `json:"error"`
	Offset        int    `json:"offset"`
	PacketsBefore int    `json:"packets_before"`
}

// Packet is a decoded packet as the file writes it: longs as decimal
// strings, payloads as hex.
type Packet struct {
	Type      string    `json:"type"`
	Channel   string    `json:"channel"`
	Payload   string    `json:"payload"`
	Epoch     string    `json:"epoch"`
	Offset    string    `json:"offset"`
	Millis    string    `json:"millis"`
	Code      int16     `json:"code"`
	Text      string    `json:"text"`
	Recovered byte      `json:"recovered"`
	Settings  []Setting `json:"settings"`
}

// Setting is one entry of a Settings packet.
type Setting struct {
	ID    string          `json:"id"`
	Value json.RawMessage `json:"value"`
}

// Load reads testdata/packets.json.
func Load() (*File, error) {
	_, here, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "testdata", "packets.json"))
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("testdata/packets.json: %w", err)
	}
	return &f, nil
}

// Bytes decodes a hex field; the file is the repository's own, so a bad
// one is a bug in it.
func Bytes(h string) []byte {
	b, err := hex.DecodeString(h)
	if err != nil {
		panic(fmt.Sprintf("vectors: bad hex %q: %v", h, err))
	}
	return b
}

func long(s string) int64 {
	if s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		panic(fmt.Sprintf("vectors: bad long %q", s))
	}
	return n
}

var serverBoundIDs = map[string]byte{
	"Ping": packet.PacketPing, "Settings": packet.PacketSettings, "Subscribe": packet.PacketSubscribe,
	"Unsubscribe": packet.PacketUnsubscribe, "Publish": packet.PacketPublish, "SubscribeFrom": packet.PacketSubscribeFrom,
}

var clientBoundIDs = map[string]byte{
	"Pong": packet.PacketPong, "Message": packet.PacketMessage, "Error": packet.PacketError,
	"Subscribed": packet.PacketSubscribed, "Publication": packet.PacketPublication, "SubscribedFrom": packet.PacketSubscribedFrom,
}

// Encode appends the server-bound packet p with package packet's encoders.
func (p Packet) Encode(dst []byte) []byte {
	switch p.Type {
	case "Ping":
		return packet.AppendPing(dst)
	case "Settings":
		return packet.AppendSettings(dst, p.settings()...)
	case "Subscribe":
		return packet.AppendSubscribe(dst, p.Channel)
	case "Unsubscribe":
		return packet.AppendUnsubscribe(dst, p.Channel)
	case "Publish":
		return packet.AppendPublish(dst, p.Channel, Bytes(p.Payload))
	case "SubscribeFrom":
		return packet.AppendSubscribeFrom(dst, p.Channel, long(p.Epoch), long(p.Offset))
	}
	panic("vectors: not a server-bound packet: " + p.Type)
}

// EncodeServer appends the client-bound packet p with package packet's
// encoders.
func (p Packet) EncodeServer(dst []byte) []byte {
	switch p.Type {
	case "Pong":
		return packet.AppendPong(dst, long(p.Millis))
	case "Message":
		return packet.AppendMessage(dst, p.Channel, Bytes(p.Payload))
	case "Error":
		return packet.AppendError(dst, p.Code, p.Text)
	case "Subscribed":
		return packet.AppendSubscribed(dst, p.Channel)
	case "Publication":
		return packet.AppendPublication(dst, p.Channel, long(p.Offset), Bytes(p.Payload))
	case "SubscribedFrom":
		return packet.AppendSubscribedFrom(dst, p.Channel, long(p.Epoch), long(p.Offset), p.Recovered == 1)
	}
	panic("vectors: not a client-bound packet: " + p.Type)
}

// Matches reports whether the decoded server-bound d is p, and if not, why.
func (p Packet) Matches(d *packet.Packet) error {
	want := packet.Packet{ID: serverBoundIDs[p.Type], Channel: []byte(p.Channel), Payload: Bytes(p.Payload),
		Epoch: long(p.Epoch), Offset: long(p.Offset)}
	got := fmt.Sprintf("%#x %q %x %d %d", d.ID, d.Channel, d.Payload, d.Epoch, d.Offset)
	if w := fmt.Sprintf("%#x %q %x %d %d", want.ID, want.Channel, want.Payload, want.Epoch, want.Offset); got != w {
		return fmt.Errorf("decoded %s, want %s (%s)", got, w, p.Type)
	}
	if p.Type == "Settings" {
		return settingsMatch(d.Settings, p.settings())
	}
	return nil
}

// MatchesServer reports whether the decoded client-bound d is p.
func (p Packet) MatchesServer(d *packet.ServerPacket) error {
	f := func(id byte, ch, pl []byte, e, o, ms int64, code int16, text []byte, rec byte) string {
		return fmt.Sprintf("%#x ch=%q payload=%x epoch=%d offset=%d millis=%d code=%d text=%q recovered=%d", id, ch, pl, e, o, ms, code, text, rec)
	}
	got := f(d.ID, d.Channel, d.Payload, d.Epoch, d.Offset, d.Millis, d.Code, d.Text, d.Recovered)
	want := f(clientBoundIDs[p.Type], []byte(p.Channel), Bytes(p.Payload), long(p.Epoch), long(p.Offset), long(p.Millis), p.Code, []byte(p.Text), p.Recovered)
	if got != want {
		return fmt.Errorf("decoded %s, want %s (%s)", got, want, p.Type)
	}
	return nil
}

var settingIDs = map[string]byte{"echo": packet.SettingEcho, "client_name": packet.SettingClientName, "batch_window": packet.SettingBatchWindow}

func (p Packet) settings() []packet.Setting {
	var out []packet.Setting
	for _, s := range p.Settings {
		st := packet.Setting{ID: settingIDs[s.ID]}
		switch s.ID {
		case "echo":
			var v int8
			_ = json.Unmarshal(s.Value, &v)
			st.Byte = v
		case "client_name":
			var v string
			_ = json.Unmarshal(s.Value, &v)
			st.String = []byte(v)
		case "batch_window":
			var v int16
			_ = json.Unmarshal(s.Value, &v)
			st.Short = v
		default:
			panic("vectors: unknown setting " + s.ID)
		}
		out = append(out, st)
	}
	return out
}

func settingsMatch(raw []byte, want []packet.Setting) error {
	r := packet.NewSettingsReader(raw)
	var got []packet.Setting
	var s packet.Setting
	for r.Next(&s) {
		got = append(got, s)
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		return fmt.Errorf("settings %+v, want %+v", got, want)
	}
	return nil
}
