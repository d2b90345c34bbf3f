package native

import (
	"bytes"

	"github.com/wsgateway/gateway/packet"
)

// Channel access policy (PROTOCOL.md "Channels"):
//   - a name is 1..255 bytes of UTF-8 without control characters;
//   - "user:S" and "user:S:..." belong to subject S: only S may subscribe
//     or publish;
//   - "server:..." is read-only for clients: anyone subscribes, only the
//     admin API publishes;
//   - names starting with '#' are reserved for the gateway's other
//     protocols (KOsync announces travel on "#kosync:<user>");
//   - every other name is open to every authenticated client.
const reservedPrefix = '#'

var (
	personalPrefix = []byte("user:")
	serverPrefix   = []byte("server:")
)

type channelOp uint8

const (
	opSubscribe channelOp = iota
	opPublish
)

// checkChannel returns 0 when subject may do op on channel, else the Error
// packet code and why.
func checkChannel(channel []byte, subject string, op channelOp) (int16, string) {
	if len(channel) == 0 || len(channel) > MaxChannelLen {
		return packet.ErrorBadRequest, "channel names are 1 to 255 bytes"
	}
	for _, b := range channel {
		if b < 0x20 || b == 0x7f {
			return packet.ErrorBadRequest, "channel names have no control characters"
		}
	}
	switch {
	case channel[0] == reservedPrefix:
		return packet.ErrorForbidden, "channels starting with '#' are reserved"
	case bytes.HasPrefix(channel, personalPrefix):
		owner := channel[len(personalPrefix):]
		if i := bytes.IndexByte(owner, ':'); i >= 0 {
			owner = owner[:i]
		}
		if string(owner) != subject {
			return packet.ErrorForbidden, "personal channel of another subject"
		}
	case bytes.HasPrefix(channel, serverPrefix) && op == opPublish:
		return packet.ErrorForbidden, "server: channels are read-only for clients"
	}
	return 0, ""
}
