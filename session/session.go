package session

import (
	"errors"
	"sync/atomic"

	"github.com/wsgateway/gateway/token"
)

// Loop runs work on one event loop. The gateway implements it over gnet.
type Loop interface {
	// Run queues fn(arg) to run on the loop, after every task queued before
	// it. Goroutine-safe; never blocks. Pass a method value stored once (not
	// a fresh closure) and a pointer arg, and Run allocates nothing. It is
	// for work bounded where it comes from; the hub queues deliveries with
	// TryRun.
	Run(fn func(arg any), arg any)
	// TryRun is Run for a delivery of size payload bytes, unless the loop's
	// backlog is at its bound: then it queues nothing and reports false.
	TryRun(fn func(arg any), arg any, size int) bool
	// Busy reports whether TryRun would refuse now.
	Busy() bool
	// SinkPanicked is told, on the loop, that a session's Sink panicked
	// while the shard called it; the shard carries on with the others.
	SinkPanicked(s *Session, v any)
}

// Sink is the connection side of a session, implemented by each protocol.
// Every method runs on the session's loop. A Sink must not call Subscribe
// or Unsubscribe from inside these methods (the shard may be iterating); a
// Remove from inside them (a connection that fails while written to) is
// held until the iteration ends, and the closing session must ignore
// deliveries until then.
type Sink interface {
	// Deliver hands over a publish on a channel the session subscribed to.
	// m is shared with other sessions and loops: read it, never keep or
	// change it. enc encodes m once per loop and protocol.
	Deliver(m *Message, enc *EncodeCache)
	// Subscribed reports that a subscription asked for with Shard.Subscribe
	// is live: publishes from every node reach the session from now on.
	// Publishes made on this node reach it from the Subscribe on.
	Subscribed(channel string)
	// Close ends the session from the server side with a close code and a
	// human-readable reason (revocation, shutdown).
	Close(code uint16, reason string)
}

// Message is one publish on a channel. It is immutable once published.
type Message struct {
	Channel string
	Payload []byte
	// Epoch and Offset are the publication's position on a channel that
	// keeps history (package history); zero on other channels, and for a
	// payload published into Redis by an outside tool.
	Epoch, Offset int64
	// Origin is the id of the publishing session when it lives on this
	// node, zero otherwise; protocols use it to suppress echoes.
	Origin uint64
}

// DefaultMaxSubscriptions is how many channels one session may subscribe
// to at once when Session.MaxSubscriptions is zero (Centrifugo's
// channel_limit). It bounds what one connection costs the hub and its loop:
// a disconnect leaves every channel, O(1) each.
const DefaultMaxSubscriptions = 128

// ErrTooManySubscriptions is returned by Shard.Subscribe for a new channel
// of a session already at its cap; the session is unchanged. Each protocol
// turns it into a refusal in its own terms.
var ErrTooManySubscriptions = errors.New("session: too many subscriptions")

// Session is one authenticated connection. It runs on its shard's loop.
type Session struct {
	// ID is unique within the node's lifetime; never zero.
	ID uint64
	// Claims is what authenticated the session.
	Claims token.Claims
	// Sink is the session's connection.
	Sink Sink
	// MaxSubscriptions caps the channels the session subscribes to at
	// once (live or pending): past it Shard.Subscribe refuses new ones with
	// ErrTooManySubscriptions. Zero means DefaultMaxSubscriptions; a
	// negative value means no cap (internal sessions only).
	MaxSubscriptions int

	// index is the position in its shard's sessions; -1 when not added.
	// The session keeps no pointer to its shard: Session stays in the
	// 144-byte size class (TestHotStructSizes), and the shard finds itself
	// by identity (Shard.Remove).
	index int
	subs  []subscription // channels subscribed or waiting to be live
	// byChannel indexes subs by channel once there are more than
	// indexFrom of them, so that lookups stay O(1) whatever the cap; nil
	// below that (a linear scan of a few entries is cheaper than a map,
	// and most sessions hold one or two channels).
	byChannel map[string]int
}

// indexFrom is the number of subscriptions from which a session indexes
// them by channel.
const indexFrom = 8

// subscription records where the session stands in a shard topic so that it
// can leave in O(1). It is 32 bytes (TestHotStructSizes): a session's first
// subscription is a slice of one, allocated in the 32-byte size class.
type subscription struct {
	channel string
	index   int32 // in topic.live or topic.pending; with rec, in topic.positioned
	live    bool
	// rec is the position of a subscription made with SubscribeFrom
	// (recovery.go); nil for a plain one.
	rec *recovery
}

var lastSessionID atomic.Uint64

// New returns a session for claims, not yet in any shard.
func New(claims token.Claims, sink Sink) *Session {
	return &Session{ID: lastSessionID.Add(1), Claims: claims, Sink: sink, index: -1}
}

// Subscriptions returns how many channels the session subscribed to,
// live or pending.
func (s *Session) Subscriptions() int { return len(s.subs) }

// IsSubscribed reports whether the session subscribed to channel, live or
// pending.
func (s *Session) IsSubscribed(channel string) bool { return s.find(channel) >= 0 }

// atCap reports whether the session may subscribe to no more channels.
func (s *Session) atCap() bool {
	limit := s.MaxSubscriptions
	if limit == 0 {
		limit = DefaultMaxSubscriptions
	}
	return limit > 0 && len(s.subs) >= limit
}

// find returns the position of channel in s.subs, or -1: O(1).
func (s *Session) find(channel string) int {
	if s.byChannel != nil {
		if i, ok := s.byChannel[channel]; ok {
			return i
		}
		return -1
	}
	for i := range s.subs {
		if s.subs[i].channel == channel {
			return i
		}
	}
	return -1
}

// addSub appends a subscription and indexes it.
func (s *Session) addSub(sub subscription) {
	s.subs = append(s.subs, sub)
	switch {
	case s.byChannel != nil:
		s.byChannel[sub.channel] = len(s.subs) - 1
	case len(s.subs) > indexFrom:
		s.byChannel = make(map[string]int, 2*len(s.subs))
		for i := range s.subs {
			s.byChannel[s.subs[i].channel] = i
		}
	}
}

// removeSub swap-removes s.subs[i] and keeps the index right.
func (s *Session) removeSub(i int) {
	last := len(s.subs) - 1
	if s.byChannel != nil {
		delete(s.byChannel, s.subs[i].channel)
		if i != last {
			s.byChannel[s.subs[last].channel] = i
		}
	}
	s.subs[i] = s.subs[last]
	s.subs[last] = subscription{}
	s.subs = s.subs[:last]
	if last == 0 {
		s.byChannel = nil // an emptied session returns to the cheap form
	}
}
