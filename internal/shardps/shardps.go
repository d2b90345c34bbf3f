// Package shardps subscribes to the sharded pub/sub channels (SSUBSCRIBE,
// Redis 7) of a Redis Cluster over one connection per shard, following
// failovers and slot migrations.
//
// go-redis's PubSub cannot serve many channels of a cluster: it connects to
// the owner of one channel only, and after a reconnect it resubscribes every
// channel in one SSUBSCRIBE, which Redis refuses (CROSSSLOT) unless they all
// hash to one slot. A PubSub here keeps, for each master that owns a
// subscribed channel, one connection of its own, subscribes one slot per
// command, and when a connection breaks, a slot moves (Redis then
// unsubscribes its channels: an unsolicited SUNSUBSCRIBE reply) or a command
// is redirected (MOVED), it reloads the slot map (CLUSTER SLOTS through the
// go-redis ClusterClient), resubscribes each channel on its new owner, and
// reports Reconnected: messages published meanwhile may have been lost.
//
// One goroutine (the manager) owns all state; Subscribe, Unsubscribe and
// Barrier queue to it. Each connection has a reader goroutine that puts
// messages straight onto the output channel, in the order Redis sent them,
// while its connection is the shard's current one (a dropped connection's
// reader delivers nothing more), and hands every other reply to the
// manager; dials and slot map reloads run on goroutines of their own, so
// nothing the manager does waits on the network except a write to a local
// socket buffer (bounded by writeTimeout) and, when it drops a connection,
// a delivery under way by that connection's reader (the output channel may
// be full).
package shardps

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/internal/slot"
)

const (
	// DefaultBuffer is the length of the output channel when
	// Options.Buffer is zero.
	DefaultBuffer = 4096
	// pingEvery is how often an idle connection is PINGed; a connection
	// silent for readTimeout is given up, so a dead peer that TCP does not
	// report is found within it.
	pingEvery   = 5 * time.Second
	readTimeout = 3 * pingEvery
	// writeTimeout bounds a write of commands to a shard.
	writeTimeout = 5 * time.Second
	// minRetry and maxRetry bound the back-off between dials of a shard
	// and between slot map reloads that keep failing or keep finding a
	// channel's slot unserved.
	minRetry = 50 * time.Millisecond
	maxRetry = time.Second
	// reloadTimeout bounds one CLUSTER SLOTS call.
	reloadTimeout = 2 * time.Second
	// opsQueue is the length of the queue of Subscribe, Unsubscribe and
	// Barrier calls; callers wait when it is full.
	opsQueue = 256
)

// Options configures a PubSub.
type Options struct {
	// Cluster is the cluster's client; required. Its slot map (CLUSTER
	// SLOTS) tells which master owns a channel, and its options (Dialer,
	// DialTimeout, TLSConfig, Username, Password, CredentialsProvider) are
	// used for the subscription connections. It is not closed.
	Cluster *redis.ClusterClient
	// Logger receives warnings, collapsed by internal/ratelog (one line per
	// kind and interval, with a count); zero means slog.Default().
	Logger *slog.Logger
	// Buffer is the length of the channel Channel returns; zero means
	// DefaultBuffer. When it is full the readers stop reading, and Redis
	// closes a connection whose output buffer passes its
	// client-output-buffer-limit for pubsub (then: Reconnected).
	Buffer int
}

// Barrier is delivered on the output channel when the Barrier call of this
// Name is answered. For a call that named channels, Channels lists some of
// them: those whose Subscribe (or Unsubscribe) called before has now taken
// effect on the shard that owns them, each shard's as soon as it answers,
// so a shard that is down holds back only its own channels. Messages
// published after that on a listed, subscribed channel are delivered,
// after the Barrier. The Barriers of one call list each channel it named
// once, a channel unsubscribed since included; channels on a shard that
// never comes back are never listed. For a call that named none, one
// Barrier with no Channels comes once every shard has answered.
type Barrier struct {
	Name     string
	Channels []string
}

// Reconnected is delivered when the channels of Shard were subscribed
// again on a new connection or on a new owner (a failover, a slot
// migration, a broken connection): messages published on them in between
// may have been lost. It comes once the new subscriptions are confirmed.
type Reconnected struct{ Shard string }

// PubSub is a set of sharded subscriptions on a Redis Cluster. Its methods
// are safe for concurrent use.
type PubSub struct {
	cc   *redis.ClusterClient
	opt  *redis.ClusterOptions
	rlog *ratelog.Logger
	out  chan any
	ops  chan op
	evs  chan event

	stop       chan struct{}
	closeOnce  sync.Once
	clientGone atomic.Bool    // ended because the cluster client was closed
	wg         sync.WaitGroup // manager, readers, dialers, reloads
}

type opKind uint8

const (
	opSubscribe opKind = iota
	opUnsubscribe
	opBarrier
)

type op struct {
	kind  opKind
	name  string   // opBarrier's name
	names []string // the channels
}

type evKind uint8

const (
	evConnected evKind = iota // a dial finished (conn or err)
	evReply                   // a reader's non-message reply
	evBroken                  // a reader's connection failed
	evSlots                   // a slot map reload finished (slots or err)
	evReload                  // a reload's back-off timer fired
)

type event struct {
	kind  evKind
	sh    *shard
	gen   int
	conn  net.Conn
	rep   reply
	err   error
	slots *[slot.Count]string
}

// New returns a PubSub on o.Cluster and starts its manager. It panics if
// o.Cluster is nil.
func New(o Options) *PubSub {
	if o.Cluster == nil {
		panic("shardps: Options.Cluster is nil")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	p := &PubSub{
		cc:   o.Cluster,
		opt:  o.Cluster.Options(),
		rlog: ratelog.New(o.Logger, slog.LevelWarn, 0),
		out:  make(chan any, o.Buffer),
		ops:  make(chan op, opsQueue),
		evs:  make(chan event, 64),
		stop: make(chan struct{}),
	}
	m := &manager{
		PubSub:   p,
		shards:   make(map[string]*shard),
		where:    make(map[string]*shard),
		unplaced: make(map[string]bool),
	}
	p.wg.Add(1)
	go m.run()
	return p
}

// Channel returns the output channel: *redis.Message for each message on a
// subscribed channel (in Redis's order per channel), Barrier and
// Reconnected. It is closed by Close.
func (p *PubSub) Channel() <-chan any { return p.out }

// Subscribe subscribes the channels (SSUBSCRIBE on their owners). It does
// not wait for Redis; a Barrier tells when they are live. Subscribing a
// channel twice is the same as once.
func (p *PubSub) Subscribe(channels ...string) {
	if len(channels) > 0 {
		p.queue(op{kind: opSubscribe, names: channels})
	}
}

// Unsubscribe drops the channels.
func (p *PubSub) Unsubscribe(channels ...string) {
	if len(channels) > 0 {
		p.queue(op{kind: opUnsubscribe, names: channels})
	}
}

// Barrier asks for Barrier events of name on the output channel (see
// Barrier): for channels, as each one's shard confirms what was queued
// before; with no channels, one once every shard has. Only the shards
// concerned are asked, and barriers are answered in any order. A channel
// named that is not subscribed is listed at once. A call with no channels
// asked again while one of the same name is pending replaces that one:
// retries while a shard is down do not pile up.
func (p *PubSub) Barrier(name string, channels ...string) {
	p.queue(op{kind: opBarrier, name: name, names: channels})
}

func (p *PubSub) queue(o op) {
	o.names = append([]string(nil), o.names...)
	select {
	case p.ops <- o:
	case <-p.stop:
	}
}

// Close closes every connection, stops the goroutines and closes the
// output channel. It is idempotent.
func (p *PubSub) Close() error {
	p.closeOnce.Do(func() {
		close(p.stop)
		p.wg.Wait()
		close(p.out)
	})
	return nil
}

// ErrClientClosed is Err's answer when the PubSub ended by itself because
// its cluster client was closed.
var ErrClientClosed = errors.New("shardps: the cluster client was closed")

// Err tells why the output channel was closed: ErrClientClosed when the
// cluster client was found closed (by a slot map reload, which a broken
// connection, a failover or a migration asks for), else nil (Close).
func (p *PubSub) Err() error {
	if p.clientGone.Load() {
		return ErrClientClosed
	}
	return nil
}

// event hands ev to the manager; false when the PubSub is closing.
func (p *PubSub) event(ev event) bool {
	select {
	case p.evs <- ev:
		return true
	case <-p.stop:
		return false
	}
}

// context returns a context that ends after timeout or at Close.
func (p *PubSub) context(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// ---- manager ----

// manager is the state the manager goroutine owns.
type manager struct {
	*PubSub
	topo     [slot.Count]string // master address owning each slot; "" unknown
	haveTopo bool
	shards   map[string]*shard // by master address
	where    map[string]*shard // subscribed channel -> its shard
	// unplaced holds subscribed channels with no shard yet (no slot map,
	// an unserved slot, a refused SSUBSCRIBE); true: they were subscribed
	// before, so placing them is a Reconnected.
	unplaced map[string]bool
	barriers []*pendingBarrier
	seq      uint64

	reloading   bool // a CLUSTER SLOTS is under way or waiting out its back-off
	reloadAgain bool // another was asked for meanwhile
	// refusedLately: a command was refused since the last reload (not a
	// MOVED): the next reload backs off, as the refusal may come again
	// (NOPERM for an ACL user without the channel, CLUSTERDOWN) and the
	// reload places the channels where they were refused.
	refusedLately bool
	reloadWait    time.Duration
}

// shard is one master and the connection to it.
type shard struct {
	addr  string
	chans map[string]struct{} // channels placed here
	slot  int                 // a slot it owns, for its barriers; -1: none known

	conn net.Conn // nil while dialing or waiting to
	// gen is the connection generation: events of older ones are stale,
	// and their readers may no longer deliver (see deliver). The manager
	// changes it only under deliverMu (supersede).
	gen       int
	deliverMu sync.Mutex
	wbuf      []byte // commands not yet written
	sent      []command
	dialing   bool
	retry     time.Duration

	// lost: channels here were subscribed on a connection or shard that is
	// gone; resubs counts the SSUBSCRIBEs whose confirmations end that.
	lost   bool
	resubs int
}

// command is a command awaiting its replies on a connection.
type command struct {
	kind    string   // the reply's kind: "ssubscribe", "sunsubscribe", "pong"
	chans   []string // in reply order
	next    int      // index of the next reply expected
	barrier uint64   // non-zero: this SUNSUBSCRIBE is that barrier
	resub   bool     // an SSUBSCRIBE that ends a shard's lost state
}

// pendingBarrier is a Barrier call not fully answered. A whole one (chans
// nil) is delivered once waiting is empty; one for channels delivers the
// channels it confirms (done) as they come, and ends when chans is empty.
type pendingBarrier struct {
	seq     uint64
	name    string
	chans   map[string]struct{} // channels not yet listed; nil: whole
	done    []string            // channels confirmed, to list
	waiting map[*shard]struct{} // shards to ask (a hint for channels)
}

// covers reports whether b waits for ch.
func (b *pendingBarrier) covers(ch string) bool {
	if b.chans == nil {
		return true
	}
	_, ok := b.chans[ch]
	return ok
}

// list moves ch from the channels b waits for to those it is to list.
func (b *pendingBarrier) list(ch string) {
	delete(b.chans, ch)
	b.done = append(b.done, ch)
}

func (m *manager) run() {
	defer m.wg.Done()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	defer m.closeAll()
	m.reload()
	for {
		select {
		case <-m.stop:
			return
		case o := <-m.ops:
			m.handleOp(o)
		case ev := <-m.evs:
			m.handleEvent(ev)
		case <-ping.C:
			for _, sh := range m.shards {
				if sh.conn != nil {
					m.send(sh, command{kind: "pong"}, "PING")
				}
			}
		}
		m.flush()
	}
}

func (m *manager) handleOp(o op) {
	switch o.kind {
	case opSubscribe:
		for _, ch := range o.names {
			if m.where[ch] == nil {
				if _, ok := m.unplaced[ch]; !ok {
					m.unplaced[ch] = false
				}
			}
		}
		m.place()
	case opUnsubscribe:
		m.unsubscribe(o.names)
	case opBarrier:
		m.barrier(o.name, o.names)
	}
}

func (m *manager) handleEvent(ev event) {
	if ev.kind == evSlots || ev.kind == evReload {
		m.slotsLoaded(ev)
		return
	}
	sh := ev.sh
	if m.shards[sh.addr] != sh || ev.gen != sh.gen {
		if ev.conn != nil {
			_ = ev.conn.Close() // a dial for a shard given up meanwhile
		}
		return // stale
	}
	switch ev.kind {
	case evConnected:
		m.connected(sh, ev.conn, ev.err)
	case evReply:
		m.handleReply(sh, ev.rep)
	case evBroken:
		m.warn(sh, "broken", "sharded pub/sub: connection lost; resubscribing", "err", ev.err)
		m.drop(sh)
	}
}

// place puts every unplaced channel whose slot has a known owner on that
// owner's shard and subscribes it there.
func (m *manager) place() {
	if !m.haveTopo {
		return
	}
	bySh := make(map[*shard][]string)
	lost := make(map[*shard]bool)
	for ch, wasLost := range m.unplaced {
		addr := m.topo[slot.Of(ch)]
		if addr == "" {
			continue
		}
		sh := m.shard(addr)
		sh.chans[ch] = struct{}{}
		m.where[ch] = sh
		delete(m.unplaced, ch)
		bySh[sh] = append(bySh[sh], ch)
		lost[sh] = lost[sh] || wasLost
	}
	for sh, chans := range bySh {
		if lost[sh] {
			sh.lost = true
		}
		for _, b := range m.barriers {
			if slices.ContainsFunc(chans, b.covers) {
				b.waiting[sh] = struct{}{} // its new channels must be confirmed too
			}
		}
		if sh.conn != nil {
			// A barrier already sent here is answered before these
			// SSUBSCRIBEs: it proves nothing about them. askShard asks
			// again after them.
			for i := range sh.sent {
				sh.sent[i].barrier = 0
			}
			m.subscribeOn(sh, chans, lost[sh])
			m.askShard(sh)
		}
	}
	if len(m.unplaced) > 0 {
		m.reload() // some slots have no known owner: ask again
	}
	m.completeBarriers()
}

func (m *manager) unsubscribe(chans []string) {
	bySh := make(map[*shard][]string)
	for _, ch := range chans {
		delete(m.unplaced, ch)
		sh := m.where[ch]
		if sh == nil {
			continue
		}
		delete(m.where, ch)
		delete(sh.chans, ch)
		bySh[sh] = append(bySh[sh], ch)
	}
	for sh, chans := range bySh {
		if sh.conn != nil {
			m.bySlot(sh, "SUNSUBSCRIBE", chans, false)
		}
	}
	m.settle(chans)
	m.completeBarriers() // an unplaced channel dropped may have held one
}

// subscribeOn sends SSUBSCRIBE for chans on sh, one command per slot.
func (m *manager) subscribeOn(sh *shard, chans []string, resub bool) {
	m.bySlot(sh, "SSUBSCRIBE", chans, resub)
}

// bySlot sends cmd for chans, one command per slot (Redis refuses a
// sharded pub/sub command over several slots).
func (m *manager) bySlot(sh *shard, cmd string, chans []string, resub bool) {
	groups := make(map[int][]string)
	for _, ch := range chans {
		s := slot.Of(ch)
		groups[s] = append(groups[s], ch)
	}
	for _, g := range groups {
		c := command{kind: strings.ToLower(cmd), chans: g, resub: resub}
		if resub {
			sh.resubs++
		}
		m.send(sh, c, append([]string{cmd}, g...)...)
	}
}

// send queues a command on sh's connection; flush writes it.
func (m *manager) send(sh *shard, c command, args ...string) {
	sh.wbuf = appendCommand(sh.wbuf, args...)
	sh.sent = append(sh.sent, c)
}

// flush writes what each shard has queued; a failed write drops the
// connection.
func (m *manager) flush() {
	for _, sh := range m.shards {
		if sh.conn == nil || len(sh.wbuf) == 0 {
			continue
		}
		_ = sh.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := sh.conn.Write(sh.wbuf)
		sh.wbuf = sh.wbuf[:0]
		if err != nil {
			m.warn(sh, "write", "sharded pub/sub: write failed; resubscribing", "err", err)
			m.drop(sh)
		}
	}
}

// shard returns the shard of addr, making it (and dialing it) if needed.
func (m *manager) shard(addr string) *shard {
	sh := m.shards[addr]
	if sh == nil {
		sh = &shard{addr: addr, chans: make(map[string]struct{}), slot: m.ownedSlot(addr)}
		m.shards[addr] = sh
		m.dial(sh, 0)
	}
	return sh
}

func (m *manager) ownedSlot(addr string) int {
	for s, a := range m.topo {
		if a == addr {
			return s
		}
	}
	return -1
}

// ---- barriers ----

func (m *manager) barrier(name string, chans []string) {
	m.seq++
	b := &pendingBarrier{seq: m.seq, name: name, waiting: make(map[*shard]struct{})}
	if len(chans) == 0 {
		// A pending one of the same name (a caller asking again while a
		// shard is down) is replaced: retries do not pile up.
		m.barriers = slices.DeleteFunc(m.barriers, func(o *pendingBarrier) bool { return o.chans == nil && o.name == name })
		for _, sh := range m.shards {
			if sh.conn != nil || len(sh.chans) > 0 {
				b.waiting[sh] = struct{}{}
			}
		}
	} else {
		b.chans = make(map[string]struct{}, len(chans))
		for _, ch := range chans {
			if sh := m.where[ch]; sh != nil {
				b.waiting[sh] = struct{}{}
			} else if _, ok := m.unplaced[ch]; !ok {
				b.done = append(b.done, ch) // not subscribed: nothing to wait for
				continue
			}
			b.chans[ch] = struct{}{}
		}
	}
	m.barriers = append(m.barriers, b)
	for sh := range b.waiting {
		m.askShard(sh) // b, the newest
	}
	m.completeBarriers()
}

// sendBarrier sends the barrier as a SUNSUBSCRIBE of a name in a slot sh
// owns (any other slot is redirected). A shard without a known slot has
// no channels to confirm; it is released from the barrier.
func (m *manager) sendBarrier(sh *shard, seq uint64, name string) {
	s := sh.slot
	if s < 0 {
		for ch := range sh.chans {
			s = slot.Of(ch) // placed here: a slot sh owns
			break
		}
	}
	if s < 0 {
		m.answered(sh, seq)
		return
	}
	bname := slot.InSlot(name, s)
	m.send(sh, command{kind: "sunsubscribe", chans: []string{bname}, barrier: seq}, "SUNSUBSCRIBE", bname)
}

// askShard sends sh the newest barrier waiting on it, unless a barrier
// command at least as new is in flight there: answering it answers the
// older ones there too. A barrier command refused (the slot moved), lost
// with a connection or made void by place is no longer in flight. A shard
// not connected is asked once it is (connected).
func (m *manager) askShard(sh *shard) {
	if sh.conn == nil {
		return
	}
	var inFlight uint64
	for _, c := range sh.sent {
		inFlight = max(inFlight, c.barrier)
	}
	var last *pendingBarrier
	for _, b := range m.barriers {
		if _, ok := b.waiting[sh]; ok && b.seq > inFlight && (last == nil || b.seq > last.seq) {
			last = b
		}
	}
	if last != nil {
		m.sendBarrier(sh, last.seq, last.name)
	}
}

// answered records that sh confirmed barrier seq, so every older one too:
// every channel of theirs placed on sh is subscribed there (an SSUBSCRIBE
// sent after the barrier command, for a channel placed here since, made
// that command prove nothing: see place).
func (m *manager) answered(sh *shard, seq uint64) {
	for _, b := range m.barriers {
		if b.seq > seq {
			continue
		}
		delete(b.waiting, sh)
		for ch := range b.chans {
			if m.where[ch] == sh {
				b.list(ch)
			}
		}
	}
	m.completeBarriers()
}

// settle lists chans, unsubscribed, on the barriers waiting for them: the
// caller learns that nothing more will come for them.
func (m *manager) settle(chans []string) {
	for _, b := range m.barriers {
		for _, ch := range chans {
			if _, ok := b.chans[ch]; ok {
				b.list(ch)
			}
		}
	}
}

// completeBarriers delivers what the pending barriers have confirmed: a
// whole one once no shard is still to answer and no subscribed channel
// is without a shard (until it is subscribed somewhere, no barrier may say
// it is live); for channels, those confirmed so far. Each barrier goes
// its own pace: one waiting on a shard that is down holds back no other.
func (m *manager) completeBarriers() {
	kept := m.barriers[:0]
	for _, b := range m.barriers {
		if b.chans == nil {
			if len(b.waiting) == 0 && len(m.unplaced) == 0 {
				m.emit(Barrier{Name: b.name})
				continue
			}
		} else if len(b.done) > 0 {
			m.emit(Barrier{Name: b.name, Channels: b.done})
			b.done = nil
		}
		if b.chans == nil || len(b.chans) > 0 {
			kept = append(kept, b)
		}
	}
	clear(m.barriers[len(kept):])
	m.barriers = kept
}

func (m *manager) emit(v any) {
	select {
	case m.out <- v:
	case <-m.stop:
	}
}

// ---- replies ----

func (m *manager) handleReply(sh *shard, rep reply) {
	if rep.kind == "sunsubscribe" && !m.expects(sh, rep) {
		m.migrated(sh, rep.channel)
		return
	}
	if rep.err != "" && m.strayMoved(sh, rep.err) {
		return
	}
	if len(sh.sent) == 0 {
		m.warn(sh, "protocol", "sharded pub/sub: unexpected reply; reconnecting", "reply", rep.kind, "err", rep.err)
		m.drop(sh)
		return
	}
	c := &sh.sent[0]
	if rep.err != "" {
		m.refused(sh, *c, rep.err)
		m.pop(sh)
		return
	}
	if rep.kind != c.kind || (c.kind != "pong" && c.chans[c.next] != rep.channel) {
		m.warn(sh, "protocol", "sharded pub/sub: reply out of order; reconnecting", "reply", rep.kind, "channel", rep.channel)
		m.drop(sh)
		return
	}
	c.next++
	sh.retry = 0 // the connection works: the next one is dialed at once
	if c.kind != "pong" && c.next < len(c.chans) {
		return
	}
	done := *c
	m.pop(sh)
	switch {
	case done.barrier != 0:
		m.answered(sh, done.barrier)
	case done.resub:
		m.resubDone(sh)
	}
}

// resubDone counts off one resubscription of sh, confirmed or refused (a
// refused one's channels carry their loss to where they go next): the last
// one ends the gap, reported if channels are left here.
func (m *manager) resubDone(sh *shard) {
	sh.resubs--
	if sh.resubs == 0 && sh.lost {
		sh.lost = false
		if len(sh.chans) > 0 {
			m.emit(Reconnected{Shard: sh.addr})
		}
	}
}

// strayMoved handles a MOVED for a slot the head command is not in: the
// answer to an SUNSUBSCRIBE of ours that Redis read after the slot left
// (having unsubscribed the channel unasked, a reply taken for ours). It is
// no reply to the head command; the slot map is reloaded.
func (m *manager) strayMoved(sh *shard, msg string) bool {
	addr, s, ok := parseMoved(msg)
	if !ok || (len(sh.sent) > 0 && sh.sent[0].kind != "pong" && slot.Of(sh.sent[0].chans[0]) == s) {
		return false
	}
	m.topo[s] = addr
	m.reload()
	return true
}

// expects reports whether rep is the reply the head command awaits.
func (m *manager) expects(sh *shard, rep reply) bool {
	if len(sh.sent) == 0 {
		return false
	}
	c := sh.sent[0]
	return c.kind == rep.kind && c.chans[c.next] == rep.channel
}

func (m *manager) pop(sh *shard) {
	sh.sent[0] = command{}
	sh.sent = sh.sent[1:]
}

// migrated handles an SUNSUBSCRIBE Redis sent unasked: the channel's slot
// left this master. The channel is placed again after a reload.
func (m *manager) migrated(sh *shard, ch string) {
	if m.where[ch] != sh {
		return
	}
	delete(m.where, ch)
	delete(sh.chans, ch)
	m.unplaced[ch] = true
	m.reload()
}

// refused handles an error reply to c: its channels (an SSUBSCRIBE) are
// placed again after a reload; a barrier is asked again then. A MOVED
// updates the slot map at once; an ASK (a one-off redirect while the slot
// migrates) does not: the slot is still the source's, tried again after
// the reload until the migration ends (then MOVED). CLUSTERDOWN is this
// shard's view of the cluster, logged under its own kind.
func (m *manager) refused(sh *shard, c command, msg string) {
	kind, what := "refused", "sharded pub/sub: a shard refused a command; reloading the slot map"
	if strings.HasPrefix(msg, "CLUSTERDOWN") {
		kind, what = "clusterdown", "sharded pub/sub: a shard reports the cluster down; retrying"
	}
	args := []any{"command", c.kind, "err", msg}
	if c.kind != "pong" {
		args = append(args, "slot", slot.Of(c.chans[0]))
	}
	m.warn(sh, kind, what, args...)
	if c.kind == "ssubscribe" {
		for _, ch := range c.chans {
			if m.where[ch] == sh {
				delete(m.where, ch)
				delete(sh.chans, ch)
				m.unplaced[ch] = c.resub || sh.lost
			}
		}
	}
	if c.resub {
		m.resubDone(sh)
	}
	if addr, s, ok := parseMoved(msg); ok {
		m.topo[s] = addr
	} else {
		m.refusedLately = true
	}
	m.reload()
}

// parseMoved reads "MOVED <slot> <addr>". An ASK is no new owner.
func parseMoved(msg string) (addr string, s int, ok bool) {
	f := strings.Fields(msg)
	if len(f) != 3 || f[0] != "MOVED" {
		return "", 0, false
	}
	s, err := strconv.Atoi(f[1])
	if err != nil || s < 0 || s >= slot.Count {
		return "", 0, false
	}
	return f[2], s, true
}

// ---- connections ----

// drop closes sh's connection after a failure and dials again; its
// channels are resubscribed on the next one (or moved by a reload).
func (m *manager) drop(sh *shard) {
	sh.supersede()
	sh.sent, sh.wbuf, sh.resubs = nil, sh.wbuf[:0], 0
	if len(sh.chans) > 0 {
		sh.lost = true
	}
	m.reload()
	m.dial(sh, sh.retry)
	sh.retry = nextRetry(sh.retry) // reset by a reply on the next connection
}

// nextRetry doubles a back-off within [minRetry, maxRetry].
func nextRetry(d time.Duration) time.Duration { return min(max(2*d, minRetry), maxRetry) }

func (m *manager) connected(sh *shard, conn net.Conn, err error) {
	sh.dialing = false
	if err != nil {
		m.warn(sh, "dial", "sharded pub/sub: cannot connect to a shard; retrying", "err", err)
		sh.retry = nextRetry(sh.retry)
		m.reload()
		m.dial(sh, sh.retry)
		return
	}
	sh.conn = conn
	m.wg.Add(1)
	go m.read(sh, conn, sh.gen)
	chans := make([]string, 0, len(sh.chans))
	for ch := range sh.chans {
		chans = append(chans, ch)
	}
	if len(chans) == 0 {
		sh.lost = false
	}
	m.subscribeOn(sh, chans, sh.lost)
	m.askShard(sh)
}

// dial connects to sh after delay on a goroutine of its own.
func (m *manager) dial(sh *shard, delay time.Duration) {
	if sh.dialing {
		return
	}
	sh.dialing = true
	gen := sh.gen
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-m.stop:
				return
			}
		}
		conn, err := m.connect(sh.addr)
		if !m.event(event{kind: evConnected, sh: sh, gen: gen, conn: conn, err: err}) && conn != nil {
			_ = conn.Close()
		}
	}()
}

// connect dials addr as the cluster client would and authenticates.
func (m *manager) connect(addr string) (net.Conn, error) {
	ctx, cancel := m.context(m.opt.DialTimeout + writeTimeout)
	defer cancel()
	var conn net.Conn
	var err error
	if m.opt.Dialer != nil {
		conn, err = m.opt.Dialer(ctx, "tcp", addr)
	} else {
		d := net.Dialer{Timeout: m.opt.DialTimeout, KeepAlive: 30 * time.Second}
		conn, err = d.DialContext(ctx, "tcp", addr)
		if err == nil && m.opt.TLSConfig != nil {
			conn, err = m.tlsHandshake(ctx, conn, addr)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := m.auth(ctx, conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

func (m *manager) tlsHandshake(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	cfg := m.opt.TLSConfig.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return tc, nil
}

// auth sends AUTH when the cluster client has credentials, taken as
// go-redis takes them (a StreamingCredentialsProvider is not supported).
// It ends with ctx (Close, or connect's time bound).
func (m *manager) auth(ctx context.Context, conn net.Conn) error {
	user, pass := m.opt.Username, m.opt.Password
	switch {
	case m.opt.CredentialsProviderContext != nil:
		var err error
		if user, pass, err = m.opt.CredentialsProviderContext(ctx); err != nil {
			return err
		}
	case m.opt.CredentialsProvider != nil:
		user, pass = m.opt.CredentialsProvider()
	}
	if pass == "" {
		return nil
	}
	args := []string{"AUTH", pass}
	if user != "" {
		args = []string{"AUTH", user, pass}
	}
	dl, _ := ctx.Deadline() // zero: none
	_ = conn.SetDeadline(dl)
	defer conn.SetDeadline(time.Time{})
	// A deadline in the past wakes the blocked Write or Read when ctx ends.
	defer context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })()
	line, err := exchange(conn, args)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("shardps: AUTH: %s", strings.TrimSpace(strings.TrimPrefix(line, "-")))
	}
	return nil
}

// exchange writes one command and reads one reply line.
func exchange(conn net.Conn, args []string) (string, error) {
	if _, err := conn.Write(appendCommand(nil, args...)); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

// read is a connection's reader: messages go to the output channel, every
// other reply to the manager, in order.
func (m *manager) read(sh *shard, conn net.Conn, gen int) {
	defer m.wg.Done()
	rr := newReplyReader(conn)
	var deadline time.Time
	for {
		if now := time.Now(); now.After(deadline.Add(-readTimeout + time.Second)) {
			deadline = now.Add(readTimeout)
			_ = conn.SetReadDeadline(deadline)
		}
		rep, err := rr.read()
		if err != nil {
			select {
			case <-m.stop:
			default:
				m.event(event{kind: evBroken, sh: sh, gen: gen, err: err})
			}
			return
		}
		if rep.kind == "smessage" {
			if !m.deliver(sh, gen, &redis.Message{Channel: rep.channel, Payload: rep.payload}) {
				return
			}
			continue
		}
		m.event(event{kind: evReply, sh: sh, gen: gen, rep: rep})
	}
}

// deliver puts msg from connection gen of sh on the output channel, unless
// that connection was superseded (dropped or forgotten): false then, or at
// Close, and the reader ends. The check and the send are one step under
// deliverMu, which supersede takes too, so once the manager has superseded
// a connection nothing it read can follow what the next one delivers
// (Reconnected, messages), even a message read long before.
func (m *manager) deliver(sh *shard, gen int, msg *redis.Message) bool {
	sh.deliverMu.Lock()
	defer sh.deliverMu.Unlock()
	if sh.gen != gen {
		return false
	}
	select {
	case m.out <- msg:
		return true
	case <-m.stop:
		return false
	}
}

// supersede retires sh's connection: it is closed, and its reader
// delivers nothing more. It waits for a delivery under way (the output
// channel may be full).
func (sh *shard) supersede() {
	if sh.conn != nil {
		_ = sh.conn.Close()
		sh.conn = nil
	}
	sh.deliverMu.Lock()
	sh.gen++
	sh.deliverMu.Unlock()
}

func (m *manager) closeAll() {
	for _, sh := range m.shards {
		if sh.conn != nil {
			_ = sh.conn.Close()
		}
	}
}

// ---- slot map ----

// reload asks for the slot map (CLUSTER SLOTS) on a goroutine; asks made
// while one is under way coalesce into one more after it.
func (m *manager) reload() {
	if m.reloading {
		m.reloadAgain = true
		return
	}
	m.reloading = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := m.context(reloadTimeout)
		defer cancel()
		slots, err := m.cc.ClusterSlots(ctx).Result()
		ev := event{kind: evSlots, err: err}
		if err == nil {
			ev.slots = ownerMap(slots)
		}
		m.event(ev)
	}()
}

func ownerMap(slots []redis.ClusterSlot) *[slot.Count]string {
	var t [slot.Count]string
	for _, r := range slots {
		if len(r.Nodes) == 0 {
			continue
		}
		for s := max(r.Start, 0); s <= r.End && s < slot.Count; s++ {
			t[s] = r.Nodes[0].Addr
		}
	}
	return &t
}

// slotsLoaded takes a reload's result: channels whose slot moved leave
// their shard and are placed on the new owner; shards that own nothing and
// hold nothing are closed.
func (m *manager) slotsLoaded(ev event) {
	if ev.kind == evReload {
		m.reloading = false
		if m.reloadAgain {
			m.reloadAgain = false
			m.reload()
		}
		return
	}
	if errors.Is(ev.err, redis.ErrClosed) {
		m.clientClosed()
		return
	}
	if ev.err != nil {
		m.warn(nil, "slots", "sharded pub/sub: cannot load the cluster's slot map; retrying", "err", ev.err)
		m.reloadAgain = true
	} else {
		if m.haveTopo && m.topo != *ev.slots {
			// go-redis rereads its own slot map only on MOVED or once a
			// minute: tell it, so publishes follow the failover too.
			m.cc.ReloadState(context.Background())
		}
		m.topo = *ev.slots
		m.haveTopo = true
		m.rehome()
	}
	// Wait before the next reload, so a flapping cluster is not asked in a
	// tight loop; asks meanwhile coalesce.
	if m.reloadAgain || len(m.unplaced) > 0 || m.refusedLately {
		m.refusedLately = false
		m.reloadWait = nextRetry(m.reloadWait)
		m.reloadAgain = true
	} else {
		m.reloadWait = 0
	}
	wait := m.reloadWait
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
			m.event(event{kind: evReload})
		case <-m.stop:
		}
	}()
}

func (m *manager) rehome() {
	for addr, sh := range m.shards {
		sh.slot = m.ownedSlot(addr)
		var moved []string
		for ch := range sh.chans {
			if m.topo[slot.Of(ch)] != addr {
				moved = append(moved, ch)
			}
		}
		for _, ch := range moved {
			delete(sh.chans, ch)
			delete(m.where, ch)
			m.unplaced[ch] = true
		}
		if sh.conn != nil && len(moved) > 0 {
			m.bySlot(sh, "SUNSUBSCRIBE", moved, false)
		}
		if sh.slot < 0 && len(sh.chans) == 0 {
			m.forget(sh)
		}
	}
	m.place()
	// A barrier command refused meanwhile (it reached a master that had
	// lost the slot it named) is asked again, in a slot the shard owns now.
	for _, sh := range m.shards {
		m.askShard(sh)
	}
}

// forget closes a shard that owns no slot and holds no channel.
func (m *manager) forget(sh *shard) {
	sh.supersede()
	delete(m.shards, sh.addr)
	for _, b := range m.barriers {
		delete(b.waiting, sh)
	}
	m.completeBarriers()
}

// clientClosed ends the PubSub: without its cluster client it cannot find
// a shard again. Close runs on a goroutine of its own (it waits for the
// manager).
func (m *manager) clientClosed() {
	m.clientGone.Store(true)
	go m.Close()
}

// warn logs through the ratelog, naming sh (nil: about no shard): repeats
// of a kind from one shard within its interval are collapsed into one line
// with a count. The key includes the shard (a closed set: the cluster's
// masters), so a fault of one shard is never counted under another's line.
func (m *manager) warn(sh *shard, kind, msg string, args ...any) {
	if sh != nil {
		kind += " " + sh.addr
		args = append([]any{"shard", sh.addr}, args...)
	}
	m.rlog.Log(kind, msg, slog.Group("", args...))
}
