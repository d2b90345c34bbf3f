package session

import (
	"context"
	"errors"

	"github.com/wsgateway/gateway/history"
)

// ErrNoHistory is returned for a position asked of a channel that keeps
// no history.
var ErrNoHistory = errors.New("channel keeps no history")

// ErrHistoryNeedsStore is returned by SetHistory on a hub whose broker
// carries publishes to other nodes but keeps no history (a RedisBroker
// without EnableHistory).
var ErrHistoryNeedsStore = errors.New("the broker keeps no history")

// KeptBroker is a Broker that keeps history for the whole cluster (the
// Redis broker after EnableHistory): it assigns positions, appends and
// publishes in one step, and every node, the publishing one included,
// delivers those publishes from it (BrokerHandler via PositionHandler).
type KeptBroker interface {
	// PublishKept queues a publish on a channel with history; a loss
	// after it was queued is told to failed (from another goroutine).
	PublishKept(channel string, payload []byte, origin uint64, failed func(error)) error
	// AppendNow publishes at once and returns the position; it blocks.
	AppendNow(ctx context.Context, channel string, payload []byte) (history.Position, error)
	// History is the store to read from; nil when history is not enabled.
	History() *history.RedisStore
	// Down reports whether the broker knows its server is unreachable.
	Down() bool
}

// historyState is the hub's history: which channels keep one, and where.
type historyState struct {
	opts   history.Options
	store  history.Store
	mem    *history.MemoryStore // a node alone; nil with a KeptBroker
	remote KeptBroker           // the cluster's; nil for a node alone
	queue  chan *fetched        // reads waiting for a reader (remote)
	done   chan struct{}        // closed by Hub.Close: the readers end
}

// SetHistory makes the channels o.Keeps keep history (PROTOCOL.md §5.1);
// o.Size zero turns it off. Call it before the first publish. A node
// alone keeps it in memory (history.MemoryStore): its epochs start anew
// with the process. A node with other nodes keeps it in its broker, which
// must be a KeptBroker with a store. After a lost broker connection comes
// back, every SubscribeFrom subscriber's position is checked against the
// history and any gap filled (or told).
func (h *Hub) SetHistory(o history.Options) error {
	if o.Size <= 0 {
		h.hist = nil
		return nil
	}
	o = o.WithDefaults()
	if h.liveAtOnce {
		mem := history.NewMemoryStore(o)
		h.hist = &historyState{opts: o, store: mem, mem: mem}
		return nil
	}
	kb, ok := h.broker.(KeptBroker)
	if !ok || kb.History() == nil {
		return ErrHistoryNeedsStore
	}
	hs := &historyState{opts: o, store: kb.History(), remote: kb,
		queue: make(chan *fetched, maxRecoveryQueued), done: make(chan struct{})}
	for range recoveryReaders {
		go hs.readHistory(h.maxReplay.Load)
	}
	h.hist = hs
	h.OnReconnect((*Shard).checkPositions)
	return nil
}

// SetMaxReplay bounds the bytes one recovery replays (payloads and the
// packets around them, about); past it the
// recovery is not attempted (recovered 0), so that a replay cannot make
// its own reader a slow consumer. Zero means no bound.
func (h *Hub) SetMaxReplay(n int) { h.maxReplay.Store(int64(n)) }

// Keeps reports whether channel keeps history.
func (h *Hub) Keeps(channel string) bool { return h.hist != nil && h.hist.opts.Keeps(channel) }

// HistoryOptions returns the history configuration (Size zero: off).
func (h *Hub) HistoryOptions() history.Options {
	if h.hist == nil {
		return history.Options{}
	}
	return h.hist.opts
}

// publishKept appends a publish to its channel's history and queues its
// deliveries while the channel is locked, so that every loop gets a
// channel's publications in offset order whoever published them.
func (h *Hub) publishKept(channel string, payload []byte, origin uint64) history.Position {
	return h.hist.mem.AppendFunc(channel, payload, func(pos history.Position) {
		h.deliverLocal(&Message{Channel: channel, Payload: append([]byte(nil), payload...), Origin: origin,
			Epoch: pos.Epoch, Offset: pos.Offset})
	})
}

// PublishAt is Publish that also returns the publication's position on a
// channel that keeps history (zero otherwise): the admin API's publish.
func (h *Hub) PublishAt(ctx context.Context, channel string, payload []byte) (history.Position, error) {
	if !h.Keeps(channel) {
		return history.Position{}, h.PublishConfirmed(ctx, channel, payload, 0)
	}
	if err := h.admit(channel, payload); err != nil {
		return history.Position{}, err
	}
	if r := h.hist.remote; r != nil {
		pos, err := r.AppendNow(ctx, channel, payload)
		if err != nil {
			h.stats.BrokerRefusals.Add(1)
		}
		return pos, err
	}
	return h.publishKept(channel, payload, 0), nil
}

// History returns a channel's position and its newest limit kept
// publications (all when limit <= 0); ErrNoHistory for a channel that
// keeps none.
func (h *Hub) History(ctx context.Context, channel string, limit int) (history.Position, []history.Publication, error) {
	if !h.Keeps(channel) {
		return history.Position{}, nil, ErrNoHistory
	}
	return h.hist.store.Read(ctx, channel, limit)
}

// SweepHistory forgets channels whose history expired (history.MemoryStore
// Sweep); the node calls it now and then.
func (h *Hub) SweepHistory() {
	if h.hist != nil && h.hist.mem != nil {
		h.hist.mem.Sweep()
	}
}
