package packet

// The client auth message is: magic (2 bytes), version byte, key length
// byte (signed), key.
const (
	authMagic0    = 0xb6
	authMagic1    = 0xc4
	authHeaderLen = 4
)

// ParseAuth checks a client auth message and returns its key as a subslice
// of msg (no copy; its capacity is capped so appending to it cannot touch
// msg). Errors are checked in a fixed order so a version mismatch is
// reported even when the rest of the message is bad: ErrAuthMagic,
// ErrAuthTruncated, ErrAuthVersion, ErrAuthKeyLength, ErrAuthTrailing.
func ParseAuth(msg []byte) (key []byte, err error) {
	if len(msg) < 2 || msg[0] != authMagic0 || msg[1] != authMagic1 {
		return nil, ErrAuthMagic
	}
	if len(msg) < 3 {
		return nil, ErrAuthTruncated
	}
	if msg[2] != Version {
		return nil, ErrAuthVersion
	}
	if len(msg) < authHeaderLen {
		return nil, ErrAuthTruncated
	}
	// Read as int8: lengths 0x80..0xFF are negative, hence invalid.
	keyLen := int(int8(msg[3]))
	if keyLen <= 0 {
		return nil, ErrAuthKeyLength
	}
	end := authHeaderLen + keyLen
	if len(msg) < end {
		return nil, ErrAuthTruncated
	}
	if len(msg) > end {
		return nil, ErrAuthTrailing
	}
	return msg[authHeaderLen:end:end], nil
}

// AppendAuth appends a client auth message to dst. It does not validate
// anything, so tests can build bad input: the length byte is
// byte(len(key)), which wraps for keys longer than 255 bytes and reads as
// negative for keys longer than MaxKeyLen. Callers that want a valid
// message pass Version and a key of 1..MaxKeyLen bytes.
func AppendAuth(dst []byte, version byte, key []byte) []byte {
	dst = append(dst, authMagic0, authMagic1, version, byte(len(key)))
	return append(dst, key...)
}
