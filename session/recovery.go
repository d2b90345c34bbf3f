package session

import (
	"context"

	"github.com/wsgateway/gateway/history"
)

// PositionSink is implemented by the Sink of a protocol with positions
// (the native protocol's SubscribeFrom, PROTOCOL.md §5.1). Its methods run
// on the session's loop, like Sink's.
type PositionSink interface {
	Sink
	// DeliverAt hands over a publication with its position on a
	// subscription made with SubscribeFrom: live (enc is the loop's cache,
	// m is shared: read it, never keep it) or replayed from the history
	// (enc is nil and m is the session's own).
	DeliverAt(m *Message, enc *EncodeCache)
	// SubscribedFrom tells the session where it stands: after the replay
	// that answers a SubscribeFrom, and unprompted when it has a gap the
	// history cannot fill or the channel's epoch changed (recovered
	// false). The next publication it gets is pos.Offset+1.
	SubscribedFrom(channel string, pos history.Position, recovered bool)
}

// recState is where a SubscribeFrom subscription stands.
type recState uint8

const (
	recWaitLive recState = iota // the channel is not live on this node yet
	recLive                     // delivering; epoch and offset are the session's
	recGone                     // unsubscribed
)

// recovery is the position of one SubscribeFrom subscription.
type recovery struct {
	state         recState
	since         history.Position // asked for; until the first answer
	epoch, offset int64            // recLive: what the session has
}

// SubscribeFrom subscribes s to channel with a position (PROTOCOL.md
// §5.1): once the channel is live on this node the session gets, through
// its PositionSink, every kept publication after since (since.Epoch zero:
// none), then SubscribedFrom, then the live publications with no gap and
// no duplicate. A subscription s already holds on channel is replaced. It
// returns ErrNoHistory for a channel that keeps none and
// ErrTooManySubscriptions past the session's cap.
func (sh *Shard) SubscribeFrom(s *Session, channel string, since history.Position) error {
	if !sh.hub.Keeps(channel) {
		return ErrNoHistory
	}
	if _, ok := s.Sink.(PositionSink); !ok {
		return ErrNoHistory
	}
	if s.find(channel) >= 0 {
		sh.Unsubscribe(s, channel)
	}
	if s.atCap() {
		sh.hub.stats.SubscriptionRefusals.Add(1)
		return ErrTooManySubscriptions
	}
	t := sh.topic(channel)
	rec := &recovery{since: since}
	s.addSub(subscription{channel: channel, index: len(t.positioned), rec: rec})
	t.positioned = append(t.positioned, s)
	if t.isLive {
		sh.recover(s, channel, rec, true, nil)
	}
	return nil
}

// startRecovery begins the recovery of a subscription that waited for its
// channel to be live (markLive).
func (sh *Shard) startRecovery(s *Session, channel string) {
	defer sh.recoverSink(s)
	if rec := s.subs[s.find(channel)].rec; rec.state == recWaitLive {
		sh.recover(s, channel, rec, true, nil)
	}
}

// recover asks the history for what followed rec.since and hands it to
// the session: prompted (a SubscribeFrom) ends with SubscribedFrom; a gap
// fill says nothing when the gap is filled. then is the live publication
// that revealed the gap, delivered after the fill (nil for none).
//
// The store of a node alone answers on the loop, at once: every delivery
// queued after the read carries a higher offset, and one queued before it
// is a duplicate that the live path drops.
func (sh *Shard) recover(s *Session, channel string, rec *recovery, prompted bool, then *Message) {
	ps := s.Sink.(PositionSink)
	r, _ := sh.hub.hist.store.Recover(context.Background(), channel, rec.since)
	replay, recovered := r.Publications, r.Recovered
	if recovered && sh.tooMuchReplay(replay) {
		replay, recovered = nil, false
	}
	pos := r.Top
	if recovered && rec.since.Epoch != 0 {
		pos.Offset = rec.since.Offset
		if n := len(replay); n > 0 {
			pos.Offset = replay[n-1].Offset
		}
	}
	for _, p := range replay {
		if p.Offset <= rec.since.Offset && rec.since.Epoch == r.Top.Epoch {
			continue
		}
		ps.DeliverAt(&Message{Channel: channel, Payload: p.Payload, Epoch: r.Top.Epoch, Offset: p.Offset}, nil)
	}
	if prompted || !recovered {
		ps.SubscribedFrom(channel, pos, recovered)
	}
	rec.state, rec.epoch, rec.offset = recLive, pos.Epoch, pos.Offset
	if then != nil {
		sh.deliverAt(s, rec, then, nil)
	}
}

// tooMuchReplay reports whether replay holds more payload bytes than
// SetMaxReplay allows.
func (sh *Shard) tooMuchReplay(replay []history.Publication) bool {
	limit := sh.hub.maxReplay.Load()
	if limit <= 0 {
		return false
	}
	var n int64
	for _, p := range replay {
		if n += int64(len(p.Payload)); n > limit {
			return true
		}
	}
	return false
}

// deliverPositioned hands a live publication to a SubscribeFrom
// subscriber; a panic in its Sink is the loop's to handle.
func (sh *Shard) deliverPositioned(s *Session, m *Message, enc *EncodeCache) {
	defer sh.recoverSink(s)
	rec := s.subs[s.find(m.Channel)].rec
	if rec.state != recLive {
		return // recWaitLive: the replay that follows liveness covers m
	}
	sh.deliverAt(s, rec, m, enc)
}

// deliverAt delivers m if it is the session's next publication, drops it
// if the session has it, and otherwise mends the gap first: from the
// history within the epoch, or by telling the session (recovered false)
// when the epoch changed.
func (sh *Shard) deliverAt(s *Session, rec *recovery, m *Message, enc *EncodeCache) {
	ps := s.Sink.(PositionSink)
	switch {
	case m.Offset == 0:
		// No position: an outside tool published into the channel.
		// Positioned subscribers never get a publication without one.
	case m.Epoch == rec.epoch && m.Offset <= rec.offset:
		// A duplicate: the replay had it.
	case m.Epoch == rec.epoch && m.Offset == rec.offset+1:
		rec.offset = m.Offset
		ps.DeliverAt(m, enc)
	case m.Epoch == rec.epoch:
		sh.hub.stats.RecoveryGaps.Add(1)
		rec.since = history.Position{Epoch: rec.epoch, Offset: rec.offset}
		sh.recover(s, m.Channel, rec, false, m)
	default:
		sh.hub.stats.RecoveryGaps.Add(1)
		ps.SubscribedFrom(m.Channel, history.Position{Epoch: m.Epoch, Offset: m.Offset - 1}, false)
		rec.epoch, rec.offset = m.Epoch, m.Offset
		ps.DeliverAt(m, enc)
	}
}
