package history

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// memEntryOverhead is what a kept publication costs besides its payload:
// its entry in the ring (offset, time, slice header) and the allocation
// rounding of its copy, about.
const memEntryOverhead = 48

// memChannelOverhead is what a channel costs with nothing kept: its map
// entry, name and state, about.
const memChannelOverhead = 200

// MemoryStore keeps history in this process: a node running alone. A
// channel holds at most Size × (payload + about 48 bytes), and its memory
// is released once its last publication expired and its epoch outlived
// MetaTTL (Sweep, which the owner calls now and then). The whole store
// holds about Options.MaxBytes at most: past it, the channels used least
// recently (appended to or read) are forgotten whole, their publications
// and epoch, until it fits again; the channel being appended to is kept,
// so one channel alone may pass the budget by its own Size. Nothing
// survives the process: a new MemoryStore gives every channel a new epoch.
type MemoryStore struct {
	opts  Options
	now   func() time.Time // time.Now; tests replace it
	bytes atomic.Int64     // what the channels hold, as counted by memBytes

	mu       sync.Mutex
	channels map[string]*memChannel
	lru      memChannel // sentinel of the channels by last use: lru.next is the newest
}

// memChannel is one channel's history: ring holds publications
// ring[head], ring[head+1], ... (modulo len) with offsets top-n+1 .. top.
type memChannel struct {
	mu      sync.Mutex
	epoch   int64
	top     int64
	ring    []memEntry
	head, n int
	touched time.Time // last Append or Recover, for MetaTTL
	gone    bool      // Sweep or the budget forgot it: look the channel up again
	held    int64     // bytes counted for it in MemoryStore.bytes
	name    string

	prev, next *memChannel // in MemoryStore.lru, under MemoryStore.mu
}

type memEntry struct {
	offset  int64
	at      time.Time
	payload []byte
}

// NewMemoryStore returns an empty store; o.Size must be positive.
func NewMemoryStore(o Options) *MemoryStore {
	s := &MemoryStore{opts: o.WithDefaults(), now: time.Now, channels: map[string]*memChannel{}}
	s.lru.prev, s.lru.next = &s.lru, &s.lru
	return s
}

// channel returns channel's history, made (with a new epoch) if needed,
// and makes it the most recently used.
func (s *MemoryStore) channel(name string) *memChannel {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[name]
	if c == nil {
		c = &memChannel{epoch: newEpoch(), held: memChannelOverhead, name: name}
		s.bytes.Add(memChannelOverhead)
		s.channels[name] = c
	} else {
		c.prev.next, c.next.prev = c.next, c.prev
	}
	c.prev, c.next = &s.lru, s.lru.next
	s.lru.next.prev = c
	s.lru.next = c
	return c
}

// forget removes c (locked by the caller) under s.mu, releasing its bytes.
func (s *MemoryStore) forget(c *memChannel) {
	c.gone = true
	c.prev.next, c.next.prev = c.next, c.prev
	c.prev, c.next = nil, nil
	s.bytes.Add(-c.held)
	c.held, c.ring, c.n, c.head = 0, nil, 0, 0
	delete(s.channels, c.name)
}

// entryBytes is what a kept publication is counted for.
func entryBytes(e *memEntry) int64 { return int64(len(e.payload)) + memEntryOverhead }

// fit forgets the least recently used channels, keep aside, while the
// store holds more than MaxBytes.
func (s *MemoryStore) fit(keep *memChannel) {
	if s.bytes.Load() <= s.opts.MaxBytes {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := s.lru.prev; c != &s.lru && s.bytes.Load() > s.opts.MaxBytes; {
		older := c.prev
		if c != keep {
			c.mu.Lock()
			s.forget(c)
			c.mu.Unlock()
		}
		c = older
	}
}

// lock returns channel's history locked, and the time: never one a Sweep
// forgot after channel found it, which would take publications no read
// or recovery sees, in an epoch of its own.
func (s *MemoryStore) lock(name string) (*memChannel, time.Time) {
	for {
		c := s.channel(name)
		now := s.now()
		c.mu.Lock()
		if !c.gone {
			return c, now
		}
		c.mu.Unlock()
	}
}

// Append implements Store.
func (s *MemoryStore) Append(_ context.Context, channel string, payload []byte) (Position, error) {
	return s.AppendFunc(channel, payload, nil), nil
}

// AppendFunc is Append that also calls then(position) while the channel is
// still locked, so that what then does (queueing the deliveries) happens in
// offset order across concurrent publishers. then must not block and must
// not call the store.
func (s *MemoryStore) AppendFunc(channel string, payload []byte, then func(Position)) Position {
	c, now := s.lock(channel)
	c.top++
	held := c.held
	c.push(memEntry{offset: c.top, at: now, payload: append([]byte(nil), payload...)}, s.opts.Size)
	c.expire(now.Add(-s.opts.TTL))
	c.touched = now
	s.bytes.Add(c.held - held)
	pos := Position{Epoch: c.epoch, Offset: c.top}
	if then != nil {
		then(pos)
	}
	c.mu.Unlock()
	s.fit(c)
	return pos
}

// Recover implements Store.
func (s *MemoryStore) Recover(_ context.Context, channel string, since Position) (Recovery, error) {
	return s.RecoverWithin(context.Background(), channel, since, 0, 0)
}

// RecoverWithin is Recover with a bound on the replay: when the
// publications after since, each counted as its payload plus overhead
// bytes, exceed limit (limit > 0), it answers Recovered false and no
// publications, having walked no more kept entries than the limit lets
// through and gathered none. The bound is checked under the channel's lock
// before anything is copied, so that a request for a replay its caller
// would refuse costs no more than the limit.
func (s *MemoryStore) RecoverWithin(_ context.Context, channel string, since Position, overhead, limit int64) (Recovery, error) {
	c, now := s.lock(channel)
	defer s.fit(c) // after the unlock below: a read may have made a channel
	defer c.mu.Unlock()
	s.expire(c, now)
	c.touched = now
	r := Recovery{Top: Position{Epoch: c.epoch, Offset: c.top}}
	switch {
	case since.Epoch == 0:
		r.Recovered = true
	case since.Epoch != c.epoch || since.Offset > c.top:
	case since.Offset == c.top:
		r.Recovered = true
	case c.n > 0 && c.at(0).offset <= since.Offset+1:
		from := int(since.Offset + 1 - c.at(0).offset)
		if limit > 0 {
			var n int64
			for i := from; i < c.n; i++ {
				if n += int64(len(c.at(i).payload)) + overhead; n > limit {
					return r, nil // too large: not recovered
				}
			}
		}
		r.Recovered = true
		r.Publications = make([]Publication, 0, c.n-from)
		for i := from; i < c.n; i++ {
			e := c.at(i)
			r.Publications = append(r.Publications, Publication{Offset: e.offset, Payload: e.payload})
		}
	}
	return r, nil
}

// Read implements Store.
func (s *MemoryStore) Read(_ context.Context, channel string, limit int) (Position, []Publication, error) {
	c, now := s.lock(channel)
	defer s.fit(c)
	defer c.mu.Unlock()
	s.expire(c, now)
	c.touched = now
	from := 0
	if limit > 0 && c.n > limit {
		from = c.n - limit
	}
	pubs := make([]Publication, 0, c.n-from)
	for i := from; i < c.n; i++ {
		e := c.at(i)
		pubs = append(pubs, Publication{Offset: e.offset, Payload: e.payload})
	}
	return Position{Epoch: c.epoch, Offset: c.top}, pubs, nil
}

// Sweep forgets the channels whose epoch was last used more than MetaTTL
// ago (their publications, younger than TTL <= MetaTTL, are all gone);
// it returns how many channels are left. It walks only those, from the
// least recently used end, and lets go of the store's lock every
// sweepChunk of them, so appends and reads on the event loops never wait
// for a long walk.
func (s *MemoryStore) Sweep() int {
	now := s.now()
	for {
		s.mu.Lock()
		done := true
		for range sweepChunk {
			c := s.lru.prev
			if c == &s.lru {
				break
			}
			c.mu.Lock()
			idle := now.Sub(c.touched) > s.opts.MetaTTL
			if idle {
				s.forget(c)
			}
			c.mu.Unlock()
			if !idle {
				break
			}
			done = false
		}
		left := len(s.channels)
		s.mu.Unlock()
		if done {
			return left
		}
	}
}

// sweepChunk is how many channels Sweep forgets per hold of the lock.
const sweepChunk = 1024

// expire drops c's publications older than TTL (c locked) and counts it.
func (s *MemoryStore) expire(c *memChannel, now time.Time) {
	held := c.held
	c.expire(now.Add(-s.opts.TTL))
	s.bytes.Add(c.held - held)
}

func (c *memChannel) at(i int) *memEntry { return &c.ring[(c.head+i)%len(c.ring)] }

// push appends e, dropping the oldest entry once size are kept.
func (c *memChannel) push(e memEntry, size int) {
	c.held += entryBytes(&e)
	if c.n < len(c.ring) {
		c.ring[(c.head+c.n)%len(c.ring)] = e
		c.n++
		return
	}
	if len(c.ring) < size { // grow: unroll the ring into a larger slice
		grown := make([]memEntry, c.n, min(max(2*len(c.ring), 16), size))
		for i := range c.n {
			grown[i] = *c.at(i)
		}
		c.ring, c.head = grown[:cap(grown)], 0
		c.ring[c.n] = e
		c.n++
		return
	}
	c.held -= entryBytes(&c.ring[c.head])
	c.ring[c.head] = e // full: overwrite the oldest
	c.head = (c.head + 1) % len(c.ring)
}

// expire drops the entries kept at or before cutoff (the oldest first).
func (c *memChannel) expire(cutoff time.Time) {
	for c.n > 0 && !c.at(0).at.After(cutoff) {
		c.held -= entryBytes(c.at(0))
		*c.at(0) = memEntry{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
	}
}
