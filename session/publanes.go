package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/slot"
)

// ---- publisher: lanes ----
//
// A lane is a goroutine that sends publishes in pipelines of up to
// redisPublishBatch commands, one pipeline at a time. On one Redis there is
// one lane and it takes the broker's queue itself. On a Redis Cluster there
// is one lane per shard (by its master's address, as go-redis's slot map
// says) plus one for publishes whose owner is unknown, each with its own
// bounded queue, and a dispatcher goroutine moves the broker's queue into
// them by the slot of each publish's Redis channel: a shard that is down or
// stopped then delays, and after its batch fails drops, only the publishes
// whose channel it owns (go-redis's cluster pipeline waits for every shard
// of a batch, so one batch for all shards waited for the slowest). A full
// lane is waited for while it moves (backpressure, as on one Redis) and
// dropped for once it stalls (see dispatch).
//
// Order: a channel's publishes go through one lane, in order. When a slot's
// owner changes (failover, resharding) the dispatcher keeps routing the
// slot to the old lane until the publishes it gave that lane are all
// answered (a per-slot pending count), then switches: a channel's
// publishes are never in flight on two lanes at once. The lane is only a
// grouping: go-redis still routes each command by its own slot map at send
// time and follows MOVED and ASK.
//
// No retries: every command a lane sends is marked NoRetry (noRetryCmd,
// go-redis's Cmder.NoRetry), so go-redis never sends a publish pipeline
// again after a network error or a timeout, whatever the client's
// MaxRetries. A timed-out PUBLISH may have run in Redis (it was sent; Redis
// was slow to answer), and sending it again delivers it twice; a duplicate
// delivery is worse than a counted loss. Such a publish is counted in
// PublishErrors and answered as failed (it reached other nodes at most
// once); so is one whose connection could not even be dialled, where a
// retry would have been safe, to keep one rule. On a cluster go-redis still
// follows MOVED and ASK replies, which say the command did not run, up to
// ClusterOptions.MaxRedirects: its cluster pipeline counts network retries
// and redirects against that one budget, so a client with MaxRedirects -1
// would lose the redirects too; NoRetry stops only the former. The history
// script of PublishKept is sent the same way, and so is AppendNow's.
//
// Down: a lane whose batch failed drops what it takes for a second
// (redisDownPause), then tries again, and PINGs its shard every second
// until a batch or a PING succeeds; Redis counts as down (b.down) while
// every lane is.
//
// Retirement: every redisLaneCheck the dispatcher closes and forgets each
// lane that holds nothing (no publish pending on it) and whose address no
// longer masters any slot it was given, in go-redis's slot map (a failed
// over or moved master, or the unknown-owner lane): its goroutine, queue
// and PINGs go, and "every lane down" counts only the shards in use. A
// retired address that masters a slot again gets a new lane. While such a
// lane is down the check asks go-redis to reload its map, which it
// otherwise rereads only every minute or on a MOVED.

// noRetryCmd marks a command as not to be sent again by go-redis (its
// NoRetry hook); everything else is the command's own.
type noRetryCmd struct{ redis.Cmder }

func (*noRetryCmd) NoRetry() bool { return true }

// laneSet is the broker's set of lanes, for Stats and for Down: Redis is
// down when every lane is.
type laneSet struct {
	mu    sync.Mutex
	all   []*lane
	nDown int
}

func (s *laneSet) add(l *lane) {
	s.mu.Lock()
	s.all = append(s.all, l)
	s.mu.Unlock()
}

// remove forgets a retired lane and sets b.down for the lanes left.
func (s *laneSet) remove(b *RedisBroker, l *lane) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = slices.DeleteFunc(s.all, func(x *lane) bool { return x == l })
	l.gone = true
	if l.down {
		s.nDown--
	}
	b.down.Store(s.nDown > 0 && s.nDown == len(s.all))
}

// isDown reports a lane's state, for the dispatcher.
func (s *laneSet) isDown(l *lane) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return l.down
}

// setDown records a lane's state and sets b.down: every lane down. A
// retired lane (a PING that ended after remove) changes nothing.
func (s *laneSet) setDown(b *RedisBroker, l *lane, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.gone {
		return
	}
	if l.down != down {
		l.down = down
		if down {
			s.nDown++
		} else {
			s.nDown--
		}
	}
	// Stored every time: AppendNow may have cleared it meanwhile.
	b.down.Store(s.nDown > 0 && s.nDown == len(s.all))
}

// queued returns the publishes waiting in the lanes' own queues.
func (s *laneSet) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.all {
		n += len(l.feed)
	}
	return n
}

// nameCache maps gateway channels to Redis channels, bounded.
type nameCache map[string]string

func (c nameCache) get(b *RedisBroker, channel string) string {
	name, ok := c[channel]
	if !ok {
		if len(c) >= redisNameCache {
			clear(c)
		}
		name = b.redisName(channel)
		c[channel] = name
	}
	return name
}

// lane is one publishing goroutine's state; see the comment above.
type lane struct {
	b    *RedisBroker
	addr string        // the shard's master ("" on one Redis, or owner unknown)
	node redis.Cmdable // what ping asks: the shard's master, or the client
	in   <-chan pubItem
	feed chan pubItem    // in, as the dispatcher sends to it; nil for the lane fed by b.queue
	stop <-chan struct{} // b.stop for the lane fed by b.queue; nil for shard lanes (in is closed)
	// pending, on a cluster, counts per slot the publishes the dispatcher
	// gave a lane and the lane has not answered yet.
	pending *[slot.Count]atomic.Int32
	names   nameCache // the lane fed by b.queue resolves names itself

	pipe      redis.Pipeliner // sends
	stage     redis.Pipeliner // builds the commands (never executed)
	batch     []pubItem
	wrap      []noRetryCmd
	sending   atomic.Int64 // when the batch or PING under way was sent (Unix ns); 0: none
	downUntil time.Time    // after a failed batch: drop without sending until then
	probe     *time.Timer  // while down: when to PING
	down      bool         // written under laneSet.mu, by the lane's goroutine only
	gone      bool         // under laneSet.mu: retired, no longer counted
}

func (b *RedisBroker) newLane(addr string, node redis.Cmdable, in <-chan pubItem) *lane {
	l := &lane{
		b:     b,
		addr:  addr,
		node:  node,
		in:    in,
		pipe:  b.client.Pipeline(),
		stage: b.client.Pipeline(),
		batch: make([]pubItem, 0, redisPublishBatch),
		wrap:  make([]noRetryCmd, redisPublishBatch),
		probe: time.NewTimer(redisDownPause),
	}
	l.probe.Stop()
	b.lanes.add(l)
	return l
}

// startPublishing starts the publisher goroutines: one lane on b.queue, or
// on a cluster the dispatcher (which starts the lanes).
func (b *RedisBroker) startPublishing() {
	b.wg.Add(1)
	if b.cluster == nil {
		l := b.newLane("", b.client, b.queue)
		l.stop = b.stop
		l.names = make(nameCache)
		go l.run()
		return
	}
	go newDispatcher(b).run()
}

func (l *lane) run() {
	defer l.b.wg.Done()
	defer l.probe.Stop()
	for {
		select {
		case it, ok := <-l.in:
			if !ok {
				return // a shard lane: the dispatcher has stopped
			}
			l.batch = append(l.batch, it)
			l.fill()
			l.send()
		case <-l.probe.C:
			l.ping()
		case <-l.stop:
			// Flush what is queued; Close cancels b.ctx after its grace.
			for {
				l.fill()
				if len(l.batch) == 0 {
					return
				}
				l.send()
			}
		}
	}
}

// fill takes queued publishes without waiting, up to a batch.
func (l *lane) fill() {
	for len(l.batch) < redisPublishBatch {
		select {
		case it, ok := <-l.in:
			if !ok {
				return
			}
			l.batch = append(l.batch, it)
		default:
			return
		}
	}
}

// send publishes the batch in one pipeline round trip, answers it and
// empties it.
func (l *lane) send() {
	b, n := l.b, uint64(len(l.batch))
	defer l.release()
	if b.ctx.Err() != nil {
		b.publishErrors.Add(n)
		l.answer(nil, errRedisBrokerClosed)
		return
	}
	if time.Now().Before(l.downUntil) {
		b.publishErrors.Add(n)
		l.answer(nil, ErrBrokerDown)
		return
	}
	cmds, err := l.exec()
	if err == nil {
		b.published.Add(n)
		b.lanes.setDown(b, l, false)
		l.answer(nil, nil)
		return
	}
	failed := n
	if len(cmds) == int(n) {
		failed = 0
		for _, c := range cmds {
			if c.Err() != nil {
				failed++
			}
		}
	} else {
		cmds = nil
	}
	b.published.Add(n - failed)
	b.publishErrors.Add(failed)
	if b.ctx.Err() != nil {
		l.answer(cmds, err)
		return
	}
	if b.cluster != nil {
		// A shard failing over: its slot map is stale in go-redis until
		// told.
		b.cluster.ReloadState(b.ctx)
		if failed < n {
			l.answer(cmds, err)
			b.warn("publish", "redis broker: publish failed on a shard", "err", err, "dropped", failed, "shard", l.addr)
			return
		}
	}
	// The lane's Redis is unreachable or failing. Drop instead of sending
	// for a while, so the queue keeps moving (and Publish keeps accepting)
	// rather than waiting out a dial timeout per batch. The waiting
	// PublishConfirmed callers are answered after b.down is set: on one
	// Redis a caller told "down" finds Publish refusing.
	l.downUntil = time.Now().Add(redisDownPause)
	if !l.down {
		l.probe.Reset(redisDownPause)
	}
	b.lanes.setDown(b, l, true)
	l.answer(cmds, err)
	b.warn("publish", "redis broker: publish failed; dropping publishes to other nodes for a second",
		"err", err, "dropped", failed, "shard", l.addr)
}

// stallIn returns how long the batch under way may still take before the
// lane counts as stalled (redisLaneStall after it was sent), or 0 if it is
// stalled; an idle lane has redisLaneStall to take a batch.
func (l *lane) stallIn() time.Duration {
	since := l.sending.Load()
	if since == 0 {
		return redisLaneStall
	}
	return max(redisLaneStall-time.Duration(time.Now().UnixNano()-since), 0)
}

// exec builds the batch's commands with go-redis's own builders on the
// stage pipeline, marks each NoRetry and sends them in one round trip.
func (l *lane) exec() ([]redis.Cmder, error) {
	b := l.b
	l.sending.Store(time.Now().UnixNano())
	defer l.sending.Store(0)
	for i := range l.batch {
		it := &l.batch[i]
		if l.names != nil {
			it.name = l.names.get(b, it.channel)
		}
		switch {
		case it.kept:
			b.hist.QueueAppendPublish(b.ctx, l.stage, it.channel, it.data[envelopeKeptHead:], it.name, it.data[:envelopeKeptHead])
		case b.cluster != nil:
			l.stage.SPublish(b.ctx, it.name, it.data)
		default:
			l.stage.Publish(b.ctx, it.name, it.data)
		}
	}
	return execNoRetry(b.ctx, l.stage, l.pipe, l.wrap)
}

// execNoRetry sends the commands queued on stage (which it empties) on
// pipe in one round trip, each wrapped in wrap[i] (len(wrap) >= the
// commands) to be NoRetry. The Cmders it returns are the wrappers.
func execNoRetry(ctx context.Context, stage, pipe redis.Pipeliner, wrap []noRetryCmd) ([]redis.Cmder, error) {
	for i, c := range stage.Cmds() {
		wrap[i].Cmder = c
		_ = pipe.Process(ctx, &wrap[i])
	}
	stage.Discard()
	return pipe.Exec(ctx)
}

// release lets the batch's envelopes and commands go and, on a cluster,
// tells the dispatcher the batch's slots are answered.
func (l *lane) release() {
	if l.pending != nil {
		for i := range l.batch {
			l.pending[l.batch[i].slot].Add(-1)
		}
	}
	clear(l.batch)
	l.batch = l.batch[:0]
	clear(l.wrap)
}

// answer tells the batch's PublishConfirmed callers their outcome: err for
// all of them, or with cmds (one per item) each command's own.
func (l *lane) answer(cmds []redis.Cmder, err error) {
	for i := range l.batch {
		e := err
		if cmds != nil {
			e = cmds[i].Err()
		}
		l.batch[i].tell(e)
	}
}

// tell gives a publish's outcome to its PublishConfirmed caller or its
// failed callback, if it has one.
func (it *pubItem) tell(err error) {
	if it.done == nil && it.failed == nil {
		return
	}
	if err != nil && !errors.Is(err, ErrBrokerBusy) {
		err = fmt.Errorf("%w: %w", ErrBrokerDown, err)
	}
	switch {
	case it.done != nil:
		it.done <- err
	case err != nil:
		it.failed(err)
	}
}

// ping runs while the lane is down: raw publishes are refused while every
// lane is, so no batch may come to prove Redis is back; a PING does. It
// runs on the lane's goroutine, like a batch would, so it waits out
// go-redis's dial like one.
func (l *lane) ping() {
	b := l.b
	if !l.down || b.ctx.Err() != nil {
		return
	}
	if time.Now().Before(l.downUntil) {
		l.probe.Reset(time.Until(l.downUntil))
		return
	}
	l.sending.Store(time.Now().UnixNano()) // a round trip too: stalled if Redis is
	err := l.node.Ping(b.ctx).Err()
	l.sending.Store(0)
	if err == nil {
		l.downUntil = time.Time{}
		b.lanes.setDown(b, l, false)
		return
	}
	l.downUntil = time.Now().Add(redisDownPause)
	l.probe.Reset(redisDownPause)
}

// ---- publisher: dispatcher (Redis Cluster) ----

// dispatcher is the dispatcher goroutine's state.
type dispatcher struct {
	b       *RedisBroker
	cc      *redis.ClusterClient
	names   nameCache
	lanes   map[string]*lane // by the shard master's address; "" owner unknown
	slotsAt [slot.Count]*lane
	pending [slot.Count]atomic.Int32
	// noMapUntil: go-redis could not load its slot map; until then,
	// publishes go to the unknown-owner lane without asking again.
	noMapUntil time.Time
	mapped     bool        // go-redis has a slot map: looking a slot up does not wait for a load
	wait       *time.Timer // dispatch's wait for room in a moving lane
}

func newDispatcher(b *RedisBroker) *dispatcher {
	d := &dispatcher{b: b, cc: b.cluster, names: make(nameCache), lanes: make(map[string]*lane), wait: time.NewTimer(time.Hour)}
	d.wait.Stop()
	return d
}

func (d *dispatcher) run() {
	b := d.b
	defer b.wg.Done()
	defer d.closeLanes()
	check := time.NewTicker(redisLaneCheck)
	defer check.Stop()
	for {
		select {
		case it := <-b.queue:
			d.dispatch(it)
		case <-check.C:
			d.retireLanes()
		case <-b.stop:
			for {
				select {
				case it := <-b.queue:
					d.dispatch(it)
				default:
					return
				}
			}
		}
	}
}

// dispatch queues it on its slot's lane. When that lane's queue is full it
// waits for room while the lane is moving (a busy shard: the wait fills
// the broker's queue, and Publish refuses, as on one Redis), but not for a
// stalled lane (a batch under way for redisLaneStall or longer: a shard
// down or stopped): it drops the publish then. So a stalled shard holds up
// the others' publishes at most once per stuck batch, for at most
// redisLaneStall, and only when its lane has filled.
func (d *dispatcher) dispatch(it pubItem) {
	it.name = d.names.get(d.b, it.channel)
	l := d.route(&it)
	select {
	case l.feed <- it:
		return
	default:
	}
	if wait := l.stallIn(); wait > 0 {
		d.wait.Reset(wait)
		select {
		case l.feed <- it:
			d.wait.Stop()
			return
		case <-d.wait.C:
		}
	}
	d.pending[it.slot].Add(-1)
	d.b.dropped.Add(1)
	it.tell(ErrBrokerBusy)
}

// route picks the publish's lane, sets it.slot and counts it pending there.
func (d *dispatcher) route(it *pubItem) *lane {
	s := slot.Of(it.name)
	it.slot = uint16(s)
	if d.pending[s].Add(1) > 1 {
		return d.slotsAt[s] // the slot still has publishes on its lane
	}
	l := d.owner(it.name)
	d.slotsAt[s] = l
	return l
}

// owner returns the lane of the shard that owns name's slot in go-redis's
// slot map (which it rereads when told of a failover or MOVED, and every
// few seconds).
func (d *dispatcher) owner(name string) *lane {
	if !d.noMapUntil.IsZero() {
		if time.Now().Before(d.noMapUntil) {
			return d.lane("", d.cc)
		}
		d.noMapUntil = time.Time{}
	}
	c, err := d.cc.MasterForKey(d.b.ctx, name)
	if err != nil {
		d.noMapUntil = time.Now().Add(redisDownPause)
		return d.lane("", d.cc)
	}
	d.mapped = true
	return d.lane(c.Options().Addr, c)
}

// lane returns the lane of addr, started on first use.
func (d *dispatcher) lane(addr string, node redis.Cmdable) *lane {
	if l := d.lanes[addr]; l != nil {
		return l
	}
	feed := make(chan pubItem, min(cap(d.b.queue), redisLaneQueue))
	l := d.b.newLane(addr, node, feed)
	l.feed = feed
	l.pending = &d.pending
	d.lanes[addr] = l
	d.b.wg.Add(1)
	go l.run()
	return l
}

// retireLanes retires the lanes that hold nothing and whose address masters
// none of the slots they were given (see the comment at the top). A lane
// holds nothing when its queue is empty and no slot routed to it has a
// publish pending: a slot's publishes are pending on the lane slotsAt
// names until answered, and only this goroutine routes, so none can come
// meanwhile.
func (d *dispatcher) retireLanes() {
	if !d.mapped {
		return
	}
	idle := make(map[*lane]bool, len(d.lanes))
	for _, l := range d.lanes {
		idle[l] = len(l.feed) == 0
	}
	for s, l := range d.slotsAt {
		if l != nil && d.pending[s].Load() > 0 {
			idle[l] = false
		}
	}
	stale := false
	for l, ok := range idle {
		switch {
		case !ok:
		case !d.mastersAny(l):
			d.retire(l)
		case d.b.lanes.isDown(l):
			stale = true // a failover under way: the map may be stale
		}
	}
	if stale {
		d.cc.ReloadState(d.b.ctx)
	}
}

// mastersAny reports whether l's address masters one of the slots routed
// to l, in go-redis's slot map; the first such slot ends the look-up.
func (d *dispatcher) mastersAny(l *lane) bool {
	if l.addr == "" {
		return false
	}
	for s, at := range d.slotsAt {
		if at != l {
			continue
		}
		c, err := d.cc.MasterForKey(d.b.ctx, slot.InSlot("", s))
		if err != nil || c.Options().Addr == l.addr {
			return true // or cannot tell: keep it
		}
	}
	return false
}

// retire closes l, which holds nothing; its goroutine ends.
func (d *dispatcher) retire(l *lane) {
	delete(d.lanes, l.addr)
	for s, at := range d.slotsAt {
		if at == l {
			d.slotsAt[s] = nil
		}
	}
	d.b.lanes.remove(d.b, l)
	close(l.feed)
}

// closeLanes ends the lanes once they have sent what they hold.
func (d *dispatcher) closeLanes() {
	for _, l := range d.lanes {
		close(l.feed)
	}
}
