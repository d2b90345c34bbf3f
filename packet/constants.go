package packet

// Handshake constants.
const (
	// HelloLen is the length of Hello.
	HelloLen = 2
	// Version is the only protocol version this package speaks; it is the
	// version byte of the client auth message.
	Version = 0
	// MaxKeyLen is the longest key the auth message can carry: its length
	// byte is read as a signed int8.
	MaxKeyLen = 127
)

// Hello is the binary message the server sends first on every connection.
// It is shared by all callers: do not modify it.
var Hello = []byte{0x6d, 0x73}

// MaxStringLen is the longest string, in bytes, that a short length prefix
// can describe.
const MaxStringLen = 32767

// Server-bound packet ids (client -> server).
const (
	PacketPing        byte = 0x00 // no arguments
	PacketSettings    byte = 0x01 // (setting id, value)... 0xFF
	PacketSubscribe   byte = 0x02 // channel string
	PacketUnsubscribe byte = 0x03 // channel string
	PacketPublish     byte = 0x04 // channel string, payload bytes
	// PacketSubscribeFrom subscribes with recovery: channel string, epoch
	// long, offset long (PROTOCOL.md §5.1).
	PacketSubscribeFrom byte = 0x05
)

// Client-bound packet ids (server -> client).
const (
	PacketPong       byte = 0x00 // unix millis long
	PacketMessage    byte = 0x01 // channel string, payload bytes
	PacketError      byte = 0x02 // code short, message string
	PacketSubscribed byte = 0x03 // channel string
	// PacketPublication is a publish on a channel with history: channel
	// string, offset long, payload bytes.
	PacketPublication byte = 0x04
	// PacketSubscribedFrom answers SubscribeFrom (and tells of a gap):
	// channel string, epoch long, offset long, recovered byte (0 or 1).
	PacketSubscribedFrom byte = 0x05
)

// Setting ids inside a Settings packet, with the type of their value.
// Id 0x00 is reserved and, like every id not listed, is an error.
const (
	SettingEcho        byte = 0x01 // byte
	SettingClientName  byte = 0x02 // string
	SettingBatchWindow byte = 0x03 // short
	// SettingsTerminator ends the list of settings.
	SettingsTerminator byte = 0xFF
)

// WebSocket close status codes used by the protocol (the 3000-3999 range is
// registered for libraries and frameworks).
const (
	// CloseUnauthorized: the auth message was malformed or its key was
	// rejected.
	CloseUnauthorized uint16 = 3001
	// CloseVersionMismatch: the auth message asked for a protocol version
	// the server does not speak.
	CloseVersionMismatch uint16 = 3002
	// CloseTimeout: the client did not authenticate, or went silent, in
	// time.
	CloseTimeout uint16 = 3003
	// CloseRevoked: the key was revoked while the connection was open.
	CloseRevoked uint16 = 3004
	// CloseServerError: the server failed internally and dropped the
	// connection.
	CloseServerError uint16 = 3005
	// CloseDisconnected: an operator closed the connection (the admin
	// API's POST /api/disconnect) without revoking anything; reconnect
	// with the same key.
	CloseDisconnected uint16 = 3006
	// CloseTryAgainLater (RFC 6455's 1013): the server cannot
	// authenticate yet (its revoked set is not loaded); reconnect later
	// with the same key.
	CloseTryAgainLater uint16 = 1013
)

// Codes carried by the Error packet. They borrow HTTP status numbers so
// their meaning is familiar.
const (
	// ErrorBadRequest: a value out of range or a bad channel name.
	ErrorBadRequest int16 = 400
	// ErrorForbidden: the channel policy denies the operation.
	ErrorForbidden int16 = 403
	// ErrorTooLarge: the payload is over the limit.
	ErrorTooLarge int16 = 413
	// ErrorTooMany: too many subscriptions, or over the rate limit.
	ErrorTooMany int16 = 429
	// ErrorUnavailable: the broker is temporarily failing; retry later.
	ErrorUnavailable int16 = 503
)
