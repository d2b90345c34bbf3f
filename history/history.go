package history

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// Defaults of Options.
const (
	// DefaultTTL is how long a publication is kept when Options.TTL is zero.
	DefaultTTL = 5 * time.Minute
	// DefaultMetaTTL is how long a channel's epoch and top offset are kept
	// after its last publish or recovery when Options.MetaTTL is zero (and
	// at least TTL). Keeping them longer than the publications lets a
	// client that missed nothing during a quiet hour resume without a
	// resynchronisation.
	DefaultMetaTTL = 24 * time.Hour
	// DefaultMaxBytes bounds a MemoryStore when Options.MaxBytes is zero.
	DefaultMaxBytes = 256 << 20
	// MaxSize bounds Options.Size: the publications one recovery may
	// replay, which a client receives back to back.
	MaxSize = 100_000
)

// ErrUnavailable wraps the errors of a store that cannot answer now
// (Redis unreachable); the protocols answer them with "try again" (503).
var ErrUnavailable = errors.New("history unavailable")

// Options say which channels keep history and how much.
type Options struct {
	// Size is how many publications a channel keeps; zero means no channel
	// keeps history. At most MaxSize.
	Size int
	// TTL is how long a publication is kept; zero means DefaultTTL.
	TTL time.Duration
	// MetaTTL is how long a channel's epoch outlives its last publish or
	// recovery; zero means DefaultMetaTTL. Never less than TTL.
	MetaTTL time.Duration
	// Channels are the channel-name prefixes that keep history; empty
	// means every channel except the reserved "#..." ones.
	Channels []string
	// MaxBytes bounds what a MemoryStore holds, publications and channels
	// (see MemoryStore); zero means DefaultMaxBytes. A RedisStore is bounded
	// by Redis's own maxmemory.
	MaxBytes int64
	// RedisChannel maps a channel to the Redis pub/sub channel it travels
	// on (the broker's ChannelName). A RedisStore on a Redis Cluster keeps
	// a channel's keys in that name's hash slot, so that its script may
	// SPUBLISH there in the same atomic step; on a single Redis it is not
	// used. Zero means prefix+"ch:"+channel, the broker's default, with
	// the RedisStore's prefix.
	RedisChannel func(channel string) string
}

// WithDefaults returns o with its zero values replaced by the defaults.
func (o Options) WithDefaults() Options {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.MetaTTL <= 0 {
		o.MetaTTL = DefaultMetaTTL
	}
	o.MetaTTL = max(o.MetaTTL, o.TTL)
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	return o
}

// Keeps reports whether channel keeps history under o. Reserved channels
// ("#...", the gateway's other protocols) never do.
func (o Options) Keeps(channel string) bool {
	if o.Size <= 0 || strings.HasPrefix(channel, "#") {
		return false
	}
	if len(o.Channels) == 0 {
		return true
	}
	for _, p := range o.Channels {
		if strings.HasPrefix(channel, p) {
			return true
		}
	}
	return false
}

// ParseChannels reads the comma-separated prefix list of --history-channels.
func ParseChannels(list string) []string {
	var out []string
	for p := range strings.SplitSeq(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Position is where a channel's stream stands: its epoch and the offset of
// its last publication (0 before the first of the epoch).
type Position struct {
	Epoch  int64
	Offset int64
}

// Publication is one kept publication.
type Publication struct {
	Offset  int64
	Payload []byte
}

// Recovery is the answer to a request for what followed a position.
type Recovery struct {
	// Top is the channel's position now.
	Top Position
	// Recovered is true when Publications hold every publication after the
	// asked position (or nothing was asked); false when that is impossible
	// (another epoch, the history no longer reaches back, an offset above
	// the top), and then Publications is empty.
	Recovered bool
	// Publications follow the asked offset, in offset order, up to Top.
	Publications []Publication
}

// Store keeps the history of the channels that keep one. Its methods are
// safe for concurrent use and may block (Redis round trips): call them off
// the event loops.
type Store interface {
	// Append keeps payload as the channel's next publication and returns
	// its position.
	Append(ctx context.Context, channel string, payload []byte) (Position, error)
	// Recover returns what followed since in channel: since.Epoch zero asks
	// for nothing (and since.Offset must then be zero). A channel never
	// published to gets its epoch here and keeps it.
	Recover(ctx context.Context, channel string, since Position) (Recovery, error)
	// RecoverWithin is Recover with a bound on the replay: when the
	// publications after since, each counted as its payload plus overhead
	// bytes, exceed limit (limit > 0), it answers Recovered false with no
	// publications, having gathered none, so that a replay its caller
	// would refuse costs no more than the limit.
	RecoverWithin(ctx context.Context, channel string, since Position, overhead, limit int64) (Recovery, error)
	// Read returns the channel's position and its newest limit kept
	// publications (all of them when limit <= 0), in offset order.
	Read(ctx context.Context, channel string, limit int) (Position, []Publication, error)
}

// newEpoch draws a random non-zero epoch.
func newEpoch() int64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
		if e := int64(binary.BigEndian.Uint64(b[:])); e != 0 {
			return e
		}
	}
}
