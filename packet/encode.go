package packet

import "encoding/binary"

// The Append* functions encode one packet at the end of dst and return the
// extended slice, like strconv.AppendInt: they allocate only when dst lacks
// capacity. Several packets may be appended to one buffer to form one
// message.
//
// They never truncate silently: a string longer than MaxStringLen, or a
// payload longer than 2^31-1 bytes, makes them panic. Callers must enforce
// those limits (the server's own limits are far smaller).

// Fixed parts of the encoded packets, to size buffers.
const (
	stringPrefixLen = 2
	bytesPrefixLen  = 4
)

// AppendPong appends a client-bound Pong carrying the server's clock.
func AppendPong(dst []byte, unixMillis int64) []byte {
	dst = append(dst, PacketPong)
	return binary.BigEndian.AppendUint64(dst, uint64(unixMillis))
}

// AppendMessage appends a client-bound Message.
func AppendMessage(dst []byte, channel string, payload []byte) []byte {
	return appendChannelPayload(dst, PacketMessage, channel, payload)
}

// AppendMessageBytes is AppendMessage for a channel held as bytes, such as
// Packet.Channel, so the server need not convert it to a string.
func AppendMessageBytes(dst []byte, channel []byte, payload []byte) []byte {
	return appendChannelPayload(dst, PacketMessage, channel, payload)
}

// MessageLen returns the encoded size of a Message with a channel and a
// payload of the given byte lengths.
func MessageLen(channel, payload int) int {
	return 1 + stringPrefixLen + channel + bytesPrefixLen + payload
}

// AppendPublication appends a client-bound Publication: a publish on a
// channel with history, at its offset.
func AppendPublication(dst []byte, channel string, offset int64, payload []byte) []byte {
	dst = appendChannel(dst, PacketPublication, channel)
	dst = binary.BigEndian.AppendUint64(dst, uint64(offset))
	return appendBytes(dst, payload)
}

// PublicationLen returns the encoded size of a Publication with a channel
// and a payload of the given byte lengths.
func PublicationLen(channel, payload int) int {
	return MessageLen(channel, payload) + 8
}

// AppendSubscribedFrom appends a client-bound SubscribedFrom; recovered is
// written as 1 or 0.
func AppendSubscribedFrom(dst []byte, channel string, epoch, offset int64, recovered bool) []byte {
	dst = appendChannel(dst, PacketSubscribedFrom, channel)
	dst = binary.BigEndian.AppendUint64(dst, uint64(epoch))
	dst = binary.BigEndian.AppendUint64(dst, uint64(offset))
	if recovered {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// AppendError appends a client-bound Error; code is one of the Error*
// constants and message a short human-readable explanation.
func AppendError(dst []byte, code int16, message string) []byte {
	dst = append(dst, PacketError)
	dst = appendInt16(dst, code)
	return appendString(dst, message)
}

// AppendSubscribed appends a client-bound Subscribed.
func AppendSubscribed(dst []byte, channel string) []byte {
	return appendChannel(dst, PacketSubscribed, channel)
}

// AppendSubscribedBytes is AppendSubscribed for a channel held as bytes.
func AppendSubscribedBytes(dst []byte, channel []byte) []byte {
	return appendChannel(dst, PacketSubscribed, channel)
}

// AppendPing appends a server-bound Ping.
func AppendPing(dst []byte) []byte {
	return append(dst, PacketPing)
}

// AppendSubscribe appends a server-bound Subscribe.
func AppendSubscribe(dst []byte, channel string) []byte {
	return appendChannel(dst, PacketSubscribe, channel)
}

// AppendUnsubscribe appends a server-bound Unsubscribe.
func AppendUnsubscribe(dst []byte, channel string) []byte {
	return appendChannel(dst, PacketUnsubscribe, channel)
}

// AppendSubscribeFrom appends a server-bound SubscribeFrom: subscribe and
// replay what followed offset in epoch (epoch 0, offset 0: no replay).
func AppendSubscribeFrom(dst []byte, channel string, epoch, offset int64) []byte {
	dst = appendChannel(dst, PacketSubscribeFrom, channel)
	dst = binary.BigEndian.AppendUint64(dst, uint64(epoch))
	return binary.BigEndian.AppendUint64(dst, uint64(offset))
}

// AppendPublish appends a server-bound Publish.
func AppendPublish(dst []byte, channel string, payload []byte) []byte {
	return appendChannelPayload(dst, PacketPublish, channel, payload)
}

// AppendSettings appends a server-bound Settings packet: each setting's id
// and the value of the type its id calls for (Byte, String or Short), then
// the terminator. A setting with an unknown id is written as its id byte
// alone, with no value, so tests can build bad input.
func AppendSettings(dst []byte, settings ...Setting) []byte {
	dst = append(dst, PacketSettings)
	for i := range settings {
		dst = appendSetting(dst, &settings[i])
	}
	return append(dst, SettingsTerminator)
}

func appendSetting(dst []byte, s *Setting) []byte {
	dst = append(dst, s.ID)
	switch s.ID {
	case SettingEcho:
		dst = append(dst, byte(s.Byte))
	case SettingClientName:
		dst = appendString(dst, s.String)
	case SettingBatchWindow:
		dst = appendInt16(dst, s.Short)
	}
	return dst
}

func appendChannel[T string | []byte](dst []byte, id byte, channel T) []byte {
	dst = append(dst, id)
	return appendString(dst, channel)
}

func appendChannelPayload[T string | []byte](dst []byte, id byte, channel T, payload []byte) []byte {
	dst = appendChannel(dst, id, channel)
	return appendBytes(dst, payload)
}
