package session

// Encoding names one wire encoding of a Message (a protocol's frame).
// Protocols take distinct values below MaxEncodings.
type Encoding uint8

// MaxEncodings bounds the encodings a loop caches per message.
const MaxEncodings = 8

// EncodeCache encodes the message being delivered once per encoding, into
// an arena the loop reuses: a publish to 10,000 sessions on a loop is
// encoded once there and allocates nothing once the arena has grown. The
// arena lives until the loop ends its batch of tasks (Shard.EndBatch), so a
// connection may queue a reference to the bytes instead of copying them.
// It runs on its shard's loop.
type EncodeCache struct {
	m     *Message
	valid [MaxEncodings]bool
	got   [MaxEncodings][]byte
	arena []byte
}

// Get returns m encoded as e, calling encode the first time per message. The
// bytes stay valid and unchanged until the loop's batch of tasks ends.
// encode appends to dst and returns it.
func (c *EncodeCache) Get(e Encoding, encode func(dst []byte, m *Message) []byte) []byte {
	if !c.valid[e] {
		start := len(c.arena)
		c.arena = encode(c.arena, c.m)
		c.got[e] = c.arena[start:len(c.arena):len(c.arena)]
		c.valid[e] = true
	}
	return c.got[e]
}

func (c *EncodeCache) reset(m *Message) {
	c.m = m
	c.valid = [MaxEncodings]bool{}
	c.got = [MaxEncodings][]byte{}
}

// maxArena is the largest arena kept between batches.
const maxArena = 1 << 20

func (c *EncodeCache) endBatch() {
	if cap(c.arena) > maxArena {
		c.arena = nil
		return
	}
	c.arena = c.arena[:0]
}
