package session

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// MaxShards is the most event loops a hub serves: a channel's loops are kept
// as a 64-bit mask.
const MaxShards = 64

// ErrTooManyShards is returned by NewShard past MaxShards.
var ErrTooManyShards = errors.New("session: more than 64 event loops")

// Hub is the node's view of channels and sessions across event loops. Its
// methods are goroutine-safe.
type Hub struct {
	broker     Broker
	echoer     Echoer // the broker, if it brings some channels' own publishes back; else nil
	liveAtOnce bool   // the broker has no other nodes to confirm with

	maxPayload atomic.Int64  // SetMaxPayload; 0: no cap
	maxReplay  atomic.Int64  // SetMaxReplay; 0: no bound
	hist       *historyState // SetHistory; nil: no channel keeps history
	closeOnce  sync.Once

	mu          sync.RWMutex
	channels    map[string]*channelState
	shards      []*Shard
	onReconnect []func(*Shard) // OnReconnect; appended only, read under mu

	sessions atomic.Int64
	stats    HubStats
}

// channelState is a channel's subscribed loops and whether the broker
// confirmed it.
type channelState struct {
	mask uint64
	live bool
}

// ErrTooLarge is returned by Publish for a payload over SetMaxPayload.
var ErrTooLarge = errors.New("payload larger than the node delivers")

// HubStats counts the hub's work; read it with Stats.
type HubStats struct {
	Publishes      atomic.Uint64 // publishes delivered to the node's loops, local or from the broker (an echoed one counts once, when its copy comes back)
	LoopTasks      atomic.Uint64 // deliveries handed to loops (one per loop per publish)
	BrokerRefusals atomic.Uint64 // publishes refused because the broker or a loop was busy (or the broker knows its server is down: ErrBrokerDown)
	LoopDrops      atomic.Uint64 // deliveries dropped because a loop's queue was full
	TooLarge       atomic.Uint64 // publishes from the broker dropped for a payload over SetMaxPayload
	// RecoveryGaps counts the gaps found in the publications of SubscribeFrom
	// subscribers (a delivery a busy loop dropped, an epoch that changed),
	// each mended from the history or told to the session.
	RecoveryGaps atomic.Uint64
	// SubscriptionRefusals counts subscribes refused because the session
	// held its cap (ErrTooManySubscriptions).
	SubscriptionRefusals atomic.Uint64
}

// ErrLoopBusy is returned by Publish when an event loop with subscribers of
// the channel has a full task queue (it stalls or cannot keep up): the
// publish is refused whole rather than delivered to some loops only. It
// wraps ErrBrokerBusy, so callers that refuse a busy broker refuse it too.
var ErrLoopBusy = fmt.Errorf("event loop busy: %w", ErrBrokerBusy)

// NewHub returns a hub whose publishes also go through b. A nil b means a
// Standalone broker.
func NewHub(b Broker) *Hub {
	if b == nil {
		b = &Standalone{}
	}
	_, alone := b.(*Standalone)
	e, _ := b.(Echoer)
	return &Hub{broker: b, echoer: e, liveAtOnce: alone, channels: make(map[string]*channelState)}
}

// Start starts the broker.
func (h *Hub) Start() error { return h.broker.Start(brokerHandler{h}) }

// Close stops the broker.
func (h *Hub) Close() error {
	if hs := h.hist; hs != nil && hs.done != nil {
		h.closeOnce.Do(func() { close(hs.done) })
	}
	return h.broker.Close()
}

// NewShard adds the shard of one event loop. Call it once per loop, before
// the loop's first session.
func (h *Hub) NewShard(loop Loop) (*Shard, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.shards) == MaxShards {
		return nil, ErrTooManyShards
	}
	sh := &Shard{hub: h, loop: loop, bit: 1 << len(h.shards), topics: make(map[string]*topic)}
	sh.deliverTask, sh.liveTask = sh.deliver, sh.markLive
	sh.fetchedTask, sh.dropTask = sh.takeFetched, sh.drop
	h.shards = append(h.shards, sh)
	return sh, nil
}

// Sessions returns the number of sessions on the node.
func (h *Hub) Sessions() int { return int(h.sessions.Load()) }

// Channels returns the number of channels with subscribers on the node.
func (h *Hub) Channels() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels)
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *HubStats { return &h.stats }

// Publish delivers payload on channel to every subscriber on every node.
// origin is the publishing session's id (zero for none). payload is copied.
// It returns ErrBrokerBusy, and delivers nothing, when the broker cannot
// take the publish.
//
// On a channel the broker Echoes the publish is only handed to the broker:
// the node's subscribers get the copy the broker brings back, in the
// broker's order, and origin is lost (see Echoer).
func (h *Hub) Publish(channel string, payload []byte, origin uint64) error {
	return h.PublishOr(channel, payload, origin, nil)
}

// PublishOr is Publish for a caller that wants to hear of a publish lost
// after it was accepted: on a channel with history in a cluster the
// publish goes through the broker's queue to Redis, and a batch Redis
// fails is told to failed (from the broker's goroutine; failed must hop
// to the caller's loop itself). nil means not told.
func (h *Hub) PublishOr(channel string, payload []byte, origin uint64, failed func(error)) error {
	if err := h.admit(channel, payload); err != nil {
		return err
	}
	if h.Keeps(channel) {
		if r := h.hist.remote; r != nil {
			if err := r.PublishKept(channel, payload, origin, failed); err != nil {
				h.stats.BrokerRefusals.Add(1)
				return err
			}
			return nil // delivered here when Redis brings it back
		}
		h.publishKept(channel, payload, origin)
		return nil
	}
	if err := h.broker.Publish(channel, payload); err != nil {
		h.stats.BrokerRefusals.Add(1)
		return err
	}
	if h.echoer != nil && h.echoer.Echoes(channel) {
		return nil // delivered here when the broker brings it back
	}
	h.deliverLocal(&Message{Channel: channel, Payload: append([]byte(nil), payload...), Origin: origin})
	return nil
}

// PublishConfirmed is Publish for a caller that may wait (never an event
// loop): on a channel the broker Echoes, where a publish that does not
// reach the broker's server reaches nobody, it returns once the server
// took the publish, or the error that lost it (wrapping ErrBrokerDown),
// when the broker is a Confirmer. Anywhere else it is Publish.
func (h *Hub) PublishConfirmed(ctx context.Context, channel string, payload []byte, origin uint64) error {
	c, ok := h.broker.(Confirmer)
	if !ok || h.echoer == nil || !h.echoer.Echoes(channel) {
		return h.Publish(channel, payload, origin)
	}
	if err := h.admit(channel, payload); err != nil {
		return err
	}
	if err := c.PublishConfirmed(ctx, channel, payload); err != nil {
		if ctx.Err() == nil { // not the caller giving up
			h.stats.BrokerRefusals.Add(1)
		}
		return err
	}
	return nil // delivered here when the broker brings it back
}

// admit refuses a publish no subscriber could take: too large, or a loop
// with subscribers of the channel at its queue's bound.
func (h *Hub) admit(channel string, payload []byte) error {
	if h.tooLarge(payload) {
		return ErrTooLarge
	}
	if h.loopsBusy(channel) {
		h.stats.BrokerRefusals.Add(1)
		return ErrLoopBusy
	}
	return nil
}

// SetMaxPayload caps the payload of a publish: larger ones are refused
// (ErrTooLarge) when made on this node and dropped (TooLarge) when they
// come from the broker, since no subscriber's memory budget could hold
// them. Zero means no cap.
func (h *Hub) SetMaxPayload(n int) { h.maxPayload.Store(int64(n)) }

func (h *Hub) tooLarge(payload []byte) bool {
	max := h.maxPayload.Load()
	return max > 0 && int64(len(payload)) > max
}

// loopsBusy reports whether a loop with subscribers of channel is at its
// queue's bound.
func (h *Hub) loopsBusy(channel string) bool {
	busy := false
	h.forShards(h.mask(channel), func(sh *Shard) { busy = busy || sh.loop.Busy() })
	return busy
}

func (h *Hub) mask(channel string) uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if cs := h.channels[channel]; cs != nil {
		return cs.mask
	}
	return 0
}

// deliverLocal hands m to each loop that has subscribers of its channel. A
// loop whose queue is full loses the delivery (counted in LoopDrops): a
// message from another node cannot be refused any more, and a stalled loop
// must not gather one task per publish without bound.
func (h *Hub) deliverLocal(m *Message) {
	h.stats.Publishes.Add(1)
	h.forShards(h.mask(m.Channel), func(sh *Shard) {
		if sh.loop.TryRun(sh.deliverTask, m, len(m.Payload)) {
			h.stats.LoopTasks.Add(1)
		} else {
			h.stats.LoopDrops.Add(1)
		}
	})
}

// EachShard runs fn(shard) on every shard's own loop: the way to act on
// sessions from another goroutine (revocation, shutdown).
func (h *Hub) EachShard(fn func(*Shard)) {
	h.forShards(^uint64(0), func(sh *Shard) {
		sh.loop.Run(func(any) { fn(sh) }, nil)
	})
}

// OnReconnect registers fn to run on every shard's own loop, through
// EachShard, each time the broker reports that it lost and regained its
// server: publishes from other nodes made meanwhile were lost, and fn may
// tell the shard's sessions to resync. A broker with no other nodes never
// reports one. fn picks its own sessions; the hub walks none.
func (h *Hub) OnReconnect(fn func(*Shard)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onReconnect = append(h.onReconnect, fn)
}

func (h *Hub) forShards(mask uint64, fn func(*Shard)) {
	if mask == 0 {
		return
	}
	h.mu.RLock()
	shards := h.shards
	h.mu.RUnlock()
	for mask != 0 {
		i := bits.TrailingZeros64(mask)
		mask &^= 1 << i
		if i < len(shards) {
			fn(shards[i])
		}
	}
}

// join records that a shard has subscribers of channel and reports whether
// the channel is already live. The node's first subscriber subscribes the
// broker; the call is made under the lock so that subscribe and unsubscribe
// reach the broker in the order they happened.
func (h *Hub) join(channel string, bit uint64) (live bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := h.channels[channel]
	if cs == nil {
		cs = &channelState{live: h.liveAtOnce}
		h.channels[channel] = cs
		if !h.liveAtOnce {
			h.broker.Subscribe(channel)
		}
	}
	cs.mask |= bit
	return cs.live
}

// leave records that a shard has no more subscribers of channel.
func (h *Hub) leave(channel string, bit uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := h.channels[channel]
	if cs == nil {
		return
	}
	cs.mask &^= bit
	if cs.mask == 0 {
		delete(h.channels, channel)
		if !h.liveAtOnce {
			h.broker.Unsubscribe(channel)
		}
	}
}

// brokerHandler keeps the BrokerHandler methods off Hub's public API.
type brokerHandler struct{ h *Hub }

func (b brokerHandler) Deliver(channel string, payload []byte) {
	if b.h.tooLarge(payload) {
		b.h.stats.TooLarge.Add(1)
		return
	}
	b.h.deliverLocal(&Message{Channel: channel, Payload: payload})
}

// DeliverAt implements PositionHandler: a publish on a channel with
// history, with its position, from any node (this one included).
func (b brokerHandler) DeliverAt(channel string, payload []byte, origin uint64, epoch, offset int64) {
	if b.h.tooLarge(payload) {
		b.h.stats.TooLarge.Add(1)
		return
	}
	b.h.deliverLocal(&Message{Channel: channel, Payload: payload, Origin: origin, Epoch: epoch, Offset: offset})
}

func (b brokerHandler) Live(channel string) {
	h := b.h
	h.mu.Lock()
	cs := h.channels[channel]
	var mask uint64
	if cs != nil && !cs.live {
		cs.live = true
		mask = cs.mask
	}
	h.mu.Unlock()
	h.forShards(mask, func(sh *Shard) { sh.loop.Run(sh.liveTask, &channel) })
}

// Reconnected runs the OnReconnect callbacks on every shard's loop. The
// channels need nothing: go-redis resubscribes by itself, and publishes
// lost meanwhile are lost (PROTOCOL.md says so); the callbacks let a
// protocol tell its sessions so. Revocations have their own resync in
// package token.
func (b brokerHandler) Reconnected() {
	h := b.h
	h.mu.RLock()
	fns := h.onReconnect
	h.mu.RUnlock()
	for _, fn := range fns {
		h.EachShard(fn)
	}
}
