package session

// Encoding names one wire encoding of a Message (a protocol's frame).
// Protocols take distinct values below MaxEncodings; taken: 0 native
// Message, 1 KOsync, 2 wsify, 3 native Publication.
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
//
// encode appends m's frame to dst and returns the result, or returns nil
// (or dst unchanged) to drop m for this encoding (a payload the protocol
// cannot carry): Get then returns an empty slice every time for m. encode
// is given an empty slice that only extends the arena, never the arena
// itself, so whatever it returns cannot shrink or overwrite frames already
// encoded in this batch and referenced by connections' outboxes.
func (c *EncodeCache) Get(e Encoding, encode func(dst []byte, m *Message) []byte) []byte {
	if !c.valid[e] {
		start := len(c.arena)
		frame := encode(c.arena[start:start], c.m)
		if len(frame) > 0 {
			c.arena = extend(c.arena, frame)
			c.got[e] = c.arena[len(c.arena)-len(frame) : len(c.arena) : len(c.arena)]
		}
		c.valid[e] = true
	}
	return c.got[e]
}

// extend appends frame to arena. Usually the encoder appended in place,
// within arena's capacity, and frame already lies there: no copy then;
// after the encoder grew its own slice, frame is copied once.
func extend(arena, frame []byte) []byte {
	n := len(arena) + len(frame)
	if n <= cap(arena) && &arena[:n][len(arena)] == &frame[0] {
		return arena[:n]
	}
	return append(arena, frame...)
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
