package session

import (
	"context"
	"time"

	"github.com/wsgateway/gateway/history"
)

// PositionSink is implemented by the Sink of a protocol with positions
// (the native protocol's SubscribeFrom, PROTOCOL.md §5.1). Its methods run
// on the session's loop, like Sink's.
type PositionSink interface {
	Sink
	// DeliverAt hands over a publication with its position on a
	// subscription made with SubscribeFrom: live (enc is the loop's cache,
	// m is shared: read it, never keep it) or replayed from the history or
	// held during a recovery (enc is nil).
	DeliverAt(m *Message, enc *EncodeCache)
	// SubscribedFrom tells the session where it stands: after the replay
	// that answers a SubscribeFrom, and unprompted when it has a gap the
	// history cannot fill or the channel's epoch changed (recovered
	// false). The next publication it gets is pos.Offset+1.
	SubscribedFrom(channel string, pos history.Position, recovered bool)
	// SubscribeFromFailed tells the session that its SubscribeFrom could
	// not be answered (the history's store is unreachable or busy); the
	// subscription is gone.
	SubscribeFromFailed(channel string, err error)
}

// recState is where a SubscribeFrom subscription stands.
type recState uint8

const (
	recWaitLive recState = iota // the channel is not live on this node yet
	recFetching                 // the history's answer is awaited; live publications are held
	recLive                     // delivering; epoch and offset are the session's
	recGone                     // unsubscribed
)

// Bounds of recoveries that wait for a store off the loop (Redis).
const (
	// maxRecoveryHeld bounds the live publications a subscription holds
	// while its recovery is under way. Past it the held ones are dropped
	// and the recovery ends with recovered false at the newest one seen.
	maxRecoveryHeld = 1024
	// recoveryReaders is how many history reads a node runs at once (its
	// reader goroutines, started with the history).
	recoveryReaders = 64
	// maxRecoveryQueued bounds the reads waiting for a reader; past it a
	// SubscribeFrom is refused (Error 503, try again) and a gap is told
	// instead of filled. A burst of reconnecting clients waits here.
	maxRecoveryQueued = 16384
	// recoveryTimeout bounds one history read.
	recoveryTimeout = 5 * time.Second
)

// recovery is the position of one SubscribeFrom subscription. It lives on
// the session's loop; a read under way off the loop only holds a pointer
// to compare when its answer comes back.
type recovery struct {
	state         recState
	prompted      bool             // recFetching: answers a SubscribeFrom (else fills a gap)
	check         bool             // recFetching: a reconnect's check (checkPositions)
	recheck       bool             // recFetching: a reconnect came during the read; read again once live
	since         history.Position // recFetching: asked for
	epoch, offset int64            // recLive: what the session has
	held          []*Message       // recFetching: live publications meanwhile
	overflow      bool             // recFetching: more than maxRecoveryHeld came
	newest        history.Position // recFetching: the newest publication seen
}

// SubscribeFrom subscribes s to channel with a position (PROTOCOL.md
// §5.1): once the channel is live on this node the session gets, through
// its PositionSink, every kept publication after since (since.Epoch zero:
// none), then SubscribedFrom, then the live publications with no gap and
// no duplicate. A subscription s already holds on channel is replaced. It
// returns ErrNoHistory for a channel that keeps none,
// ErrTooManySubscriptions past the session's cap and ErrBrokerDown while
// the history's store is known unreachable.
func (sh *Shard) SubscribeFrom(s *Session, channel string, since history.Position) error {
	if !sh.hub.Keeps(channel) {
		return ErrNoHistory
	}
	if _, ok := s.Sink.(PositionSink); !ok {
		return ErrNoHistory
	}
	if r := sh.hub.hist.remote; r != nil && r.Down() {
		return ErrBrokerDown
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
	s.addSub(subscription{channel: channel, index: int32(len(t.positioned)), rec: rec})
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
// A node alone reads its memory on the loop, at once: every delivery
// queued after the read carries a higher offset, and one queued before it
// is a duplicate that the live path drops. With Redis the read runs off
// the loop and its answer comes back as a loop task; live publications
// are held meanwhile and delivered after the replay, duplicates dropped.
func (sh *Shard) recover(s *Session, channel string, rec *recovery, prompted bool, then *Message) {
	sh.walking++ // a Sink that fails a write is removed after, not during
	defer sh.doneWalking()
	hs := sh.hub.hist
	if hs.mem != nil {
		r, _ := hs.mem.RecoverWithin(context.Background(), channel, rec.since, replayOverhead+int64(len(channel)), sh.hub.maxReplay.Load())
		sh.recovered(s, channel, rec, prompted, r, then)
		return
	}
	rec.state, rec.prompted, rec.held, rec.overflow = recFetching, prompted, rec.held[:0], false
	if then != nil {
		rec.hold(then)
	}
	select {
	case hs.queue <- &fetched{sh: sh, s: s, channel: channel, rec: rec, since: rec.since}:
	default:
		sh.fetchFailed(s, channel, rec, ErrBrokerBusy)
	}
}

// fetched is a history read on its way to a reader and back to the loop.
type fetched struct {
	sh      *Shard
	s       *Session
	channel string
	rec     *recovery        // compared on the loop; never read off it
	since   history.Position // rec.since when the read was asked
	r       history.Recovery
	err     error
}

// readHistory is one of the node's history readers: it runs reads off the
// loops until the hub closes.
func (hs *historyState) readHistory(maxReplay func() int64) {
	for {
		select {
		case f := <-hs.queue:
			hs.readOne(f, maxReplay())
		case <-hs.done:
			return
		}
	}
}

// readOne reads the history for f and hands the answer to f's loop.
func (hs *historyState) readOne(f *fetched, limit int64) {
	defer func() {
		if v := recover(); v != nil {
			f.sh.loop.Run(func(any) { f.sh.loop.SinkPanicked(f.s, v) }, nil)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
	f.r, f.err = hs.store.RecoverWithin(ctx, f.channel, f.since, replayOverhead+int64(len(f.channel)), limit)
	cancel()
	f.sh.loop.Run(f.sh.fetchedTask, f)
}

// takeFetched takes a history read's answer on the loop, if its
// subscription still waits for it.
func (sh *Shard) takeFetched(arg any) {
	f := arg.(*fetched)
	i := f.s.find(f.channel)
	if i < 0 || f.s.subs[i].rec != f.rec || f.rec.state != recFetching {
		return // unsubscribed, replaced, or the session is gone
	}
	defer sh.recoverSink(f.s)
	sh.walking++
	defer sh.doneWalking()
	if f.err != nil {
		sh.fetchFailed(f.s, f.channel, f.rec, f.err)
		return
	}
	sh.recovered(f.s, f.channel, f.rec, f.rec.prompted, f.r, nil)
}

// fetchFailed ends a recovery whose read failed: a SubscribeFrom is
// refused and unsubscribed; a gap fill is told (recovered false) and the
// session goes on from what it holds.
func (sh *Shard) fetchFailed(s *Session, channel string, rec *recovery, err error) {
	ps := s.Sink.(PositionSink)
	if rec.prompted {
		// Unsubscribed by a task of its own: this may run inside a walk
		// over the channel's subscribers, which must not change under it.
		rec.state = recGone
		sh.loop.Run(sh.dropTask, &dropped{s: s, channel: channel, rec: rec})
		ps.SubscribeFromFailed(channel, err)
		return
	}
	pos := history.Position{Epoch: rec.epoch, Offset: rec.offset}
	held := rec.held
	if len(held) > 0 && !rec.overflow {
		pos = history.Position{Epoch: held[0].Epoch, Offset: held[0].Offset - 1}
	} else if rec.overflow {
		pos, held = rec.newest, nil
	}
	ps.SubscribedFrom(channel, pos, false)
	sh.goLive(s, rec, pos, held)
	sh.checkAgain(s, channel, rec)
}

// dropped is a SubscribeFrom subscription to end once the walk is over.
type dropped struct {
	s       *Session
	channel string
	rec     *recovery
}

func (sh *Shard) drop(arg any) {
	d := arg.(*dropped)
	if i := d.s.find(d.channel); i >= 0 && d.s.subs[i].rec == d.rec {
		sh.Unsubscribe(d.s, d.channel)
	}
}

// recovered hands a history read's answer to the session: the replay,
// SubscribedFrom where the protocol wants one, then what was held.
func (sh *Shard) recovered(s *Session, channel string, rec *recovery, prompted bool, r history.Recovery, then *Message) {
	ps := s.Sink.(PositionSink)
	replay, ok := r.Publications, r.Recovered
	if ok && sh.tooMuchReplay(channel, replay) {
		replay, ok = nil, false
	}
	held := rec.held
	if rec.overflow {
		// Held publications were dropped: what the session missed lies
		// beyond the read. It goes on after the newest one seen.
		replay, ok, held = nil, false, nil
		if rec.newest.Epoch != r.Top.Epoch || rec.newest.Offset > r.Top.Offset {
			r.Top = rec.newest
		}
	}
	pos := r.Top
	if ok && rec.since.Epoch != 0 {
		pos.Offset = rec.since.Offset
		if n := len(replay); n > 0 {
			pos.Offset = replay[n-1].Offset
		}
	}
	for _, p := range replay {
		ps.DeliverAt(&Message{Channel: channel, Payload: p.Payload, Epoch: r.Top.Epoch, Offset: p.Offset}, nil)
	}
	if rec.check && (len(replay) > 0 || !ok) {
		sh.hub.stats.RecoveryGaps.Add(1) // a reconnect's check found one
	}
	if prompted || !ok {
		ps.SubscribedFrom(channel, pos, ok)
	}
	if then != nil {
		held = append(held, then)
	}
	sh.goLive(s, rec, pos, held)
	sh.checkAgain(s, channel, rec)
}

// checkAgain reads again for a subscription whose read was under way when
// the broker reconnected: Redis may have answered it before the pub/sub
// connection was back, and what was published between is on no
// connection this node heard.
func (sh *Shard) checkAgain(s *Session, channel string, rec *recovery) {
	if rec.state != recLive || !rec.recheck {
		return // a read under way keeps the flag for its own end
	}
	rec.recheck = false
	rec.since = history.Position{Epoch: rec.epoch, Offset: rec.offset}
	rec.check = true
	sh.recover(s, channel, rec, false, nil)
}

// goLive makes rec live at pos and delivers what was held, in order.
func (sh *Shard) goLive(s *Session, rec *recovery, pos history.Position, held []*Message) {
	rec.state, rec.epoch, rec.offset = recLive, pos.Epoch, pos.Offset
	rec.held, rec.newest, rec.check = nil, history.Position{}, false
	for i, m := range held {
		if rec.state != recLive {
			// A gap among them started another read: it holds the rest.
			for _, r := range held[i:] {
				rec.hold(r)
			}
			return
		}
		sh.deliverAt(s, rec, m, nil)
	}
}

// hold keeps a live publication while a read is under way.
func (rec *recovery) hold(m *Message) {
	if m.Offset == 0 {
		return
	}
	rec.newest = history.Position{Epoch: m.Epoch, Offset: m.Offset}
	if rec.overflow {
		return
	}
	if len(rec.held) >= maxRecoveryHeld {
		rec.overflow, rec.held = true, nil
		return
	}
	rec.held = append(rec.held, m)
}

// tooMuchReplay reports whether replay would queue more bytes than
// SetMaxReplay allows: its payloads and, for each publication, the
// channel name and replayOverhead.
func (sh *Shard) tooMuchReplay(channel string, replay []history.Publication) bool {
	limit := sh.hub.maxReplay.Load()
	if limit <= 0 {
		return false
	}
	var n int64
	for _, p := range replay {
		if n += int64(len(p.Payload)) + replayOverhead + int64(len(channel)); n > limit {
			return true
		}
	}
	return false
}

// replayOverhead is what a replayed publication costs a session besides
// its payload and channel name: the native Publication packet's type,
// length prefixes and offset (15 bytes) and a WebSocket frame header (at
// most 10 bytes). SetMaxReplay's bound counts it, since a replay of many
// small publications is mostly overhead.
const replayOverhead = 25

// deliverPositioned hands a live publication to a SubscribeFrom
// subscriber; a panic in its Sink is the loop's to handle.
func (sh *Shard) deliverPositioned(s *Session, m *Message, enc *EncodeCache) {
	defer sh.recoverSink(s)
	rec := s.subs[s.find(m.Channel)].rec
	switch rec.state {
	case recLive:
		sh.deliverAt(s, rec, m, enc)
	case recFetching:
		rec.hold(m)
	}
	// recWaitLive: the read that follows liveness covers m.
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

// checkPositions starts a read for every live SubscribeFrom subscription
// of the shard, to fill what a lost broker connection may have lost
// (Hub.OnReconnect). A channel whose epoch changed meanwhile (Redis
// restarted empty) is told with recovered false. A subscription whose read
// is under way reads again once live (checkAgain): Redis may have answered
// before the pub/sub connection was back.
func (sh *Shard) checkPositions() {
	sh.walking++
	defer sh.doneWalking()
	for channel, t := range sh.topics {
		for i := 0; i < len(t.positioned); i++ {
			s := t.positioned[i]
			rec := s.subs[s.find(channel)].rec
			if rec.state == recFetching {
				rec.recheck = true
			}
			if rec.state != recLive {
				continue
			}
			rec.since = history.Position{Epoch: rec.epoch, Offset: rec.offset}
			rec.check = true
			sh.recover(s, channel, rec, false, nil)
		}
	}
}
