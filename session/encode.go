package session

// Encoding names one wire encoding of a Message (a protocol's frame).
// Protocols take distinct values below MaxEncodings.
type Encoding uint8

// MaxEncodings bounds the encodings a loop caches per message.
const MaxEncodings = 8

// EncodeCache encodes the message being delivered once per encoding, into
// buffers the loop reuses: a publish to 10,000 sessions on a loop is encoded
// once there and allocates nothing once the buffers have grown.
// It runs on its shard's loop.
type EncodeCache struct {
	m     *Message
	valid [MaxEncodings]bool
	bufs  [MaxEncodings][]byte
}

// Get returns m encoded as e, calling encode the first time per message. The
// bytes are valid until the loop delivers the next message: write them, do
// not keep them. encode appends to dst and returns it.
func (c *EncodeCache) Get(e Encoding, encode func(dst []byte, m *Message) []byte) []byte {
	if !c.valid[e] {
		c.bufs[e] = encode(c.bufs[e][:0], c.m)
		c.valid[e] = true
	}
	return c.bufs[e]
}

func (c *EncodeCache) reset(m *Message) {
	c.m = m
	c.valid = [MaxEncodings]bool{}
}
