package history

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redismode"
	"github.com/wsgateway/gateway/internal/slot"
)

// RedisStore keeps history in Redis, shared by every node of a cluster.
//
// Keys, for a channel C under the prefix P, on a single Redis:
//
//	P history:{C}:m   hash: e = epoch (8 bytes, big-endian), t = top offset
//	P history:{C}:l   list of publications, oldest first; each is
//	                  offset (8 bytes) | Redis time in ms (8 bytes) | payload
//
// On a Redis Cluster the script that appends also publishes (SPUBLISH) on
// C's Redis pub/sub channel N (Options.RedisChannel), which must then be
// in the slot of the keys: they are slot.Colocated(P+"history:", N, ":m")
// and ":l", that is P history:{N}:m and :l for the usual names (N with no
// brace).
//
// The list expires TTL after the last publish, the hash MetaTTL after the
// last publish or recovery. A list found without its hash (the hash was
// evicted or expired) is dropped with it: its offsets belong to a finished
// epoch.
type RedisStore struct {
	c    redis.UniversalClient
	opts Options
	pfx  string
	// pub is the command the append script publishes with (redismode).
	pub string
}

// NewRedisStore returns a store on c with keys under prefix (the node's
// --redis-prefix). c may be a *redis.ClusterClient (see RedisStore).
func NewRedisStore(c redis.UniversalClient, prefix string, o Options) *RedisStore {
	o = o.WithDefaults()
	if o.RedisChannel == nil {
		o.RedisChannel = func(channel string) string { return prefix + "ch:" + channel }
	}
	return &RedisStore{c: c, opts: o, pfx: prefix, pub: redismode.PublishCommand(c)}
}

// keys returns the list and meta keys of channel.
func (s *RedisStore) keys(channel string) []string {
	if redismode.Cluster(s.c) {
		n := s.opts.RedisChannel(channel)
		return []string{slot.Colocated(s.pfx+"history:", n, ":l"), slot.Colocated(s.pfx+"history:", n, ":m")}
	}
	tag := s.pfx + "history:{" + channel + "}:"
	return []string{tag + "l", tag + "m"}
}

// The scripts' shared prelude: Redis time in ms, big-endian 8-byte
// packing of non-negative integers below 2^53 (offsets, times), and the
// loading (or start) of the channel's epoch and top.
const luaPrelude = `
local function pack8(n)
  local hi = math.floor(n / 4294967296)
  return struct.pack('>I4I4', hi, n - hi * 4294967296)
end
local function unpack8(s, at)
  local hi, lo = struct.unpack('>I4I4', s, at)
  return hi * 4294967296 + lo
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', KEYS[2], 'e')
local top = 0
if epoch then
  top = tonumber(redis.call('HGET', KEYS[2], 't') or '0')
else
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 't', 0)
end
local ttl = tonumber(ARGV[2])
local function expire()
  while true do
    local h = redis.call('LINDEX', KEYS[1], 0)
    if not h or unpack8(h, 9) > now - ttl then return end
    redis.call('LPOP', KEYS[1])
  end
end
`

// appendScript: KEYS list, meta; ARGV new epoch, ttl ms, meta ttl ms,
// size, pub/sub channel ("" for none), message head, payload, publish
// command (PUBLISH, or SPUBLISH on a cluster). It keeps the payload as the
// next offset, trims by size and age, publishes head | epoch | offset |
// payload on the pub/sub channel and returns {epoch, offset}.
var appendScript = redis.NewScript(luaPrelude + `
top = top + 1
redis.call('HSET', KEYS[2], 't', top)
redis.call('RPUSH', KEYS[1], pack8(top) .. pack8(now) .. ARGV[7])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
expire()
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then
  redis.call(ARGV[8], ARGV[5], ARGV[6] .. epoch .. pack8(top) .. ARGV[7])
end
return {epoch, top}
`)

// recoverScript: KEYS list, meta; ARGV new epoch, ttl ms, meta ttl ms,
// asked epoch ("" for none), asked offset, limit (0: none), overhead. It
// returns {epoch, top, recovered (0/1), entries...}: the entries after the
// asked offset when all of them are kept and, each counted as its payload
// plus overhead, they stay within limit. It reads them in chunks and
// stops past the limit, so that a refused replay costs Redis no more than
// the limit.
var recoverScript = redis.NewScript(luaPrelude + `
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local out = {epoch, top, 0}
if ARGV[4] == '' then out[3] = 1; return out end
local since = tonumber(ARGV[5])
if ARGV[4] ~= epoch or since > top then return out end
if since == top then out[3] = 1; return out end
expire()
local h = redis.call('LINDEX', KEYS[1], 0)
if not h then return out end
local first = unpack8(h, 1)
if first > since + 1 then return out end
out[3] = 1
local limit, overhead = tonumber(ARGV[6]), tonumber(ARGV[7])
local cost, n, k, i = 0, redis.call('LLEN', KEYS[1]), 3, since + 1 - first
while i < n do
  local chunk = redis.call('LRANGE', KEYS[1], i, i + 255)
  for j = 1, #chunk do
    if limit > 0 then
      cost = cost + #chunk[j] - 16 + overhead
      if cost > limit then return {epoch, top, 0} end
    end
    k = k + 1
    out[k] = chunk[j]
  end
  i = i + 256
end
return out
`)

// readScript: KEYS list, meta; ARGV new epoch, ttl ms, meta ttl ms,
// limit (0: all). It returns {epoch, top, entries...}, the newest limit.
var readScript = redis.NewScript(luaPrelude + `
redis.call('PEXPIRE', KEYS[2], ARGV[3])
expire()
local limit = tonumber(ARGV[4])
local from = 0
if limit > 0 then from = -limit end
local out = {epoch, top}
local rest = redis.call('LRANGE', KEYS[1], from, -1)
for i = 1, #rest do out[2 + i] = rest[i] end
return out
`)

func epochBytes(e int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(e))
	return string(b[:])
}

func readEpoch(v any) (int64, error) {
	s, ok := v.(string)
	if !ok || len(s) != 8 {
		return 0, fmt.Errorf("history: bad epoch %q in Redis", v)
	}
	return int64(binary.BigEndian.Uint64([]byte(s))), nil
}

func (s *RedisStore) ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Append implements Store; it publishes nothing.
func (s *RedisStore) Append(ctx context.Context, channel string, payload []byte) (Position, error) {
	return s.AppendPublish(ctx, channel, payload, "", nil)
}

// AppendPublish is Append that also publishes head | epoch (8 bytes) |
// offset (8 bytes) | payload on the Redis pub/sub channel pubsub, in the
// same atomic step, so pub/sub order is offset order. An empty pubsub
// publishes nothing. On a cluster pubsub must be Options.RedisChannel of
// channel (Redis refuses the script otherwise).
func (s *RedisStore) AppendPublish(ctx context.Context, channel string, payload []byte, pubsub string, head []byte) (Position, error) {
	v, err := appendScript.Run(ctx, s.c, s.keys(channel),
		epochBytes(newEpoch()), s.ms(s.opts.TTL), s.ms(s.opts.MetaTTL), s.opts.Size, pubsub, head, payload, s.pub).Slice()
	if err != nil {
		return Position{}, unavailable(err)
	}
	return positionOf(v)
}

// QueueAppendPublish queues AppendPublish on pipe (a broker's batch of
// publishes, one round trip for many); the command's answer is read with
// ReadPosition once the pipeline ran. It sends the script's text (EVAL):
// a pipeline cannot fall back from EVALSHA when Redis lost its scripts.
func (s *RedisStore) QueueAppendPublish(ctx context.Context, pipe redis.Pipeliner, channel string, payload []byte, pubsub string, head []byte) *redis.Cmd {
	return appendScript.Eval(ctx, pipe, s.keys(channel),
		epochBytes(newEpoch()), s.ms(s.opts.TTL), s.ms(s.opts.MetaTTL), s.opts.Size, pubsub, head, payload, s.pub)
}

// ReadPosition reads the answer of a command QueueAppendPublish queued.
func ReadPosition(cmd *redis.Cmd) (Position, error) {
	v, err := cmd.Slice()
	if err != nil {
		return Position{}, unavailable(err)
	}
	return positionOf(v)
}

func positionOf(v []any) (Position, error) {
	if len(v) != 2 {
		return Position{}, fmt.Errorf("history: append answered %d values", len(v))
	}
	e, err := readEpoch(v[0])
	if err != nil {
		return Position{}, err
	}
	off, _ := v[1].(int64)
	return Position{Epoch: e, Offset: off}, nil
}

// Recover implements Store.
func (s *RedisStore) Recover(ctx context.Context, channel string, since Position) (Recovery, error) {
	return s.RecoverWithin(ctx, channel, since, 0, 0)
}

// RecoverWithin implements Store.
func (s *RedisStore) RecoverWithin(ctx context.Context, channel string, since Position, overhead, limit int64) (Recovery, error) {
	asked := ""
	if since.Epoch != 0 {
		asked = epochBytes(since.Epoch)
	}
	v, err := recoverScript.Run(ctx, s.c, s.keys(channel),
		epochBytes(newEpoch()), s.ms(s.opts.TTL), s.ms(s.opts.MetaTTL), asked, since.Offset, max(limit, 0), overhead).Slice()
	if err != nil {
		return Recovery{}, unavailable(err)
	}
	if len(v) < 3 {
		return Recovery{}, fmt.Errorf("history: recover answered %d values", len(v))
	}
	e, err := readEpoch(v[0])
	if err != nil {
		return Recovery{}, err
	}
	top, _ := v[1].(int64)
	rec, _ := v[2].(int64)
	r := Recovery{Top: Position{Epoch: e, Offset: top}, Recovered: rec == 1}
	if len(v) > 3 {
		r.Publications, err = readEntries(v[3:])
	}
	return r, err
}

// Read implements Store.
func (s *RedisStore) Read(ctx context.Context, channel string, limit int) (Position, []Publication, error) {
	v, err := readScript.Run(ctx, s.c, s.keys(channel),
		epochBytes(newEpoch()), s.ms(s.opts.TTL), s.ms(s.opts.MetaTTL), max(limit, 0)).Slice()
	if err != nil {
		return Position{}, nil, unavailable(err)
	}
	if len(v) < 2 {
		return Position{}, nil, fmt.Errorf("history: read answered %d values", len(v))
	}
	e, err := readEpoch(v[0])
	if err != nil {
		return Position{}, nil, err
	}
	top, _ := v[1].(int64)
	pubs, err := readEntries(v[2:])
	return Position{Epoch: e, Offset: top}, pubs, err
}

// readEntries decodes list entries: offset | time | payload.
func readEntries(v []any) ([]Publication, error) {
	pubs := make([]Publication, 0, len(v))
	for _, x := range v {
		entry, _ := x.(string)
		if len(entry) < 16 {
			return nil, fmt.Errorf("history: entry of %d bytes in Redis", len(entry))
		}
		pubs = append(pubs, Publication{
			Offset:  int64(binary.BigEndian.Uint64([]byte(entry[:8]))),
			Payload: []byte(entry[16:]),
		})
	}
	return pubs, nil
}

// unavailable marks a failure to reach Redis (as opposed to a script bug)
// as ErrUnavailable.
func unavailable(err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return err // Redis answered: a script error, not an outage
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
