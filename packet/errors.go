package packet

import "errors"

// The errors are sentinel values rather than a struct type so that
// returning one never allocates; Decoder.Offset tells where the fault is.
// Their messages are short and lower case because the server may send them
// as a WebSocket close reason.

// Auth message errors, returned by ParseAuth.
var (
	ErrAuthMagic     = errors.New("bad auth magic")
	ErrAuthTruncated = errors.New("auth message truncated")
	ErrAuthVersion   = errors.New("unsupported protocol version")
	ErrAuthKeyLength = errors.New("bad key length")
	ErrAuthTrailing  = errors.New("trailing bytes after key")
)

// Packet errors, returned by Decoder, Validate and ClientDecoder.
var (
	// ErrTruncated: a packet or value is cut off by the end of the message,
	// including a Settings packet without its terminator.
	ErrTruncated = errors.New("packet truncated")
	// ErrUnknownPacket: the packet id is not defined for this direction.
	ErrUnknownPacket = errors.New("unknown packet id")
	// ErrUnknownSetting: a Settings packet holds an undefined setting id.
	ErrUnknownSetting = errors.New("unknown setting id")
	// ErrNegativeLength: a string or bytes length prefix is negative.
	ErrNegativeLength = errors.New("negative length")
	// ErrInvalidUTF8: a string is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("invalid utf-8")
)
