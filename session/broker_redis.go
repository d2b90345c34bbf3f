package session

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/internal/shardps"
)

// Redis broker protocol
//
// This is the wire contract between the nodes of a cluster and any outside
// tool; changing it breaks mixed-version clusters.
//
// Channels. The gateway channel C travels on the Redis channel
//
//	<prefix>ch:<C>
//
// where <prefix> is RedisBrokerOptions.Prefix (DefaultRedisPrefix, "gateway:",
// unless configured). An outside publisher reaches the subscribers of the
// gateway channel "news" on every node with
//
//	redis-cli PUBLISH gateway:ch:news '{"x":1}'
//
// RedisBrokerOptions.ChannelName replaces that mapping (wsify maps its
// channels to raw Redis names, as wsify itself does). Whatever the mapping,
// SUBSCRIBE, UNSUBSCRIBE and PUBLISH use the mapped name, and a message
// arriving on a mapped name is delivered under the gateway channel that was
// subscribed with it.
//
// Raw channels. A gateway channel for which RedisBrokerOptions.Raw is true
// (wsify's channels on their raw names) carries no envelope in either
// direction: a node PUBLISHes the payload exactly as given (for wsify, the
// JSON text its clients receive), and every message arriving on it is
// delivered verbatim, without looking at its bytes, so other servers and
// tools sharing the channel (original wsify nodes, redis-cli, consumers)
// see only payloads. With no node id to skip its own publishes by, a node
// does not deliver its publishes on a raw channel locally: the hub only
// publishes them (the broker is an Echoer), and the node's subscribers get
// the copy Redis sends back, like every other subscriber of the channel.
// Consequences, all as with an original wsify node on Redis: a subscriber
// gets nothing published before its node's SUBSCRIBE took effect, its own
// node's publishes included; a publish that does not reach Redis reaches
// nobody, so while the publisher knows Redis is unreachable (a batch
// failed and no PING or batch succeeded since) Publish refuses raw
// publishes with ErrBrokerDown, and a publish accepted just before Redis
// failed is lost for every node, its own included; a caller that can wait
// uses PublishConfirmed (the broker is a Confirmer) to learn the outcome.
//
// The broker also sends UNSUBSCRIBE <prefix>sync:<n> (n a decimal number) on
// its own subscription connection as an ordering barrier (see Live below).
// Nothing is ever published on <prefix>sync:*; those names are reserved.
//
// Redis Cluster. With a *redis.ClusterClient the same names travel on
// sharded pub/sub: SSUBSCRIBE, SUNSUBSCRIBE and SPUBLISH (Redis 7), so a
// publish costs only the shard that owns its channel's slot. An outside
// publisher uses
//
//	redis-cli -c SPUBLISH gateway:ch:news '{"x":1}'
//
// (a classic PUBLISH on a cluster reaches no node). The subscriptions run
// on internal/shardps: one connection per shard, one command per slot. The
// barrier is then an SUNSUBSCRIBE of <prefix>sync:<n>{<tag>} on each shard
// that owns a channel the round subscribed, <tag> picking a slot that shard
// owns; each channel of the round is confirmed when its shard has
// answered, whatever the others do (a master that is down delays only its
// own channels), so rounds may be confirmed out of order. A shard's
// failover, a slot migration or a broken subscription connection is a
// reconnect (Reconnected) once its channels are subscribed again on the
// new owner. Publishes go out per shard, on lanes (publanes.go): a shard
// that fails delays and drops only the publishes whose channel it owns,
// counts them as PublishErrors and tells go-redis to reload its slot map;
// the broker counts Redis as down only when every lane is.
//
// Envelope. Every message a node publishes on a channel that is not raw is
//
//	offset 0   0x00 'G'    magic
//	offset 2   0x01        envelope version
//	offset 3   nodeID      8 bytes, the publishing node
//	offset 11  sent at     int64 Unix nanoseconds, big-endian, taken when
//	                       Publish was called (so lag includes queueing)
//	offset 19  payload     the bytes given to Publish, as is
//
// A publish on a channel with history (PublishKept) carries envelope
// version 2: the same 19-byte header with version 0x02, the publishing
// session's id (8 bytes; for its own node's echo rule), then the epoch and
// the offset the history script gave it (8 bytes each, big-endian), then
// the payload. The script appends and publishes in one step, so Redis
// delivers a channel's publications in offset order; every node, the
// publishing one included, delivers them from Redis (the hub does not
// deliver them locally), so the node id is not used to skip them.
//
// A node skips incoming version 1 envelopes carrying its own nodeID: its hub has
// delivered them locally already. An incoming message that does not start
// with 0x00 'G' is an outside publisher's raw payload and is delivered
// unchanged. A message that starts with 0x00 'G' but is shorter than the
// header or has another version is dropped and counted as Malformed: it
// comes from a node speaking another envelope version. On raw channels
// none of this applies: nothing is parsed, skipped or dropped. (Gateway
// versions before raw channels put the envelope on wsify's channels too; a
// cluster must not mix them with this version, or their wsify publishes
// reach the other kind's clients with the envelope's bytes in front, or
// not at all.)

const (
	// DefaultRedisPrefix is the key and channel prefix used when
	// RedisBrokerOptions.Prefix is empty.
	DefaultRedisPrefix = "gateway:"
	// DefaultBrokerQueue is the outbound publish queue length used when
	// RedisBrokerOptions.QueueSize is zero.
	DefaultBrokerQueue = 65536

	envelopeVersion   = 0x01
	envelopeHeaderLen = 19
	// envelopeKept is the version of a publish with a position (history):
	// the version 1 header, the publishing session (8 bytes), then what
	// the history script adds, the epoch and the offset.
	envelopeKept     = 0x02
	envelopeKeptHead = envelopeHeaderLen + 8
	envelopeKeptLen  = envelopeKeptHead + 16

	// redisPublishBatch bounds the publishes sent in one pipeline round trip.
	redisPublishBatch = 512
	// redisSubscribeChunk bounds the channels named in one (UN)SUBSCRIBE.
	redisSubscribeChunk = 1024
	// redisChannelSize is the buffer of go-redis's message channel. The
	// reader drains it at once; go-redis drops a message only when it stays
	// full for a minute.
	redisChannelSize = 4096
	// redisBarrierRetry is how long a barrier may stay unanswered before it
	// is sent again (its command or its reply may be lost with a connection).
	redisBarrierRetry = 500 * time.Millisecond
	// redisCloseGrace is how long Close lets the goroutines flush queued
	// publishes before it cancels their Redis calls.
	redisCloseGrace = time.Second
	// redisDownPause is how long the publisher drops publishes without
	// trying Redis after a batch failed, and how often it PINGs Redis
	// while it knows it is down.
	redisDownPause = time.Second
	// redisLaneStall is how long a shard's lane (Redis Cluster) may take
	// over one batch before it counts as stalled: the dispatcher waits for
	// room in a full lane that is moving, and drops for a stalled one.
	redisLaneStall = 100 * time.Millisecond
	// redisLaneCheck is how often the publisher on a Redis Cluster retires
	// the lanes of addresses that no longer master their slots (after a
	// failover or a slot move; see publanes.go).
	redisLaneCheck = 5 * time.Second
	// redisLaneQueue caps each shard lane's queue (Redis Cluster): a few
	// batches keep its pipeline busy, and the backlog waits in the
	// broker's own queue. A lane as long as the broker's queue (65,536
	// envelopes, 5 MiB, scanned by every GC) would hold a backlog per
	// shard on top of it.
	redisLaneQueue = 4 * redisPublishBatch
	// redisNameCache bounds the publisher's cache of Redis channel names.
	redisNameCache = 4096
)

// errRedisBrokerClosed is returned by Publish after Close. It wraps
// ErrBrokerBusy so callers that refuse busy publishes refuse it too.
var errRedisBrokerClosed = fmt.Errorf("redis broker closed: %w", ErrBrokerBusy)

// RedisBrokerOptions configures a RedisBroker.
type RedisBrokerOptions struct {
	// Client is the Redis client; required. The broker uses one pub/sub
	// connection of it for all channels (on a *redis.ClusterClient: one
	// per shard, sharded pub/sub) plus its pool for publishes. A
	// *redis.Ring does not work (Start fails), since Ring shards pub/sub
	// by channel. The broker does not close it.
	Client redis.UniversalClient
	// Prefix starts every Redis name the broker uses (see the protocol
	// comment above); zero means DefaultRedisPrefix, "gateway:".
	Prefix string
	// NodeID identifies this node in envelopes; zero means random. Nodes
	// sharing a Redis and a Prefix must have distinct NodeIDs, or they drop
	// each other's publishes as their own.
	NodeID [8]byte
	// QueueSize is the length of the outbound publish queue; zero means
	// DefaultBrokerQueue. When it is full Publish returns ErrBrokerBusy. On
	// a Redis Cluster each shard's lane has a queue of its own, of this
	// length or redisLaneQueue (2,048) if shorter; when one is full the publisher waits for room while its shard
	// answers (so the queue fills, as on one Redis), and drops the
	// shard's publishes (Dropped; PublishConfirmed answers ErrBrokerBusy)
	// while its batch has been unanswered for redisLaneStall or longer.
	QueueSize int
	// Logger receives the broker's warnings; zero means slog.Default().
	Logger *slog.Logger
	// ChannelName maps a hub channel to the Redis channel it travels on;
	// zero means <Prefix>ch:<channel>. It must be injective, must not
	// return names under <Prefix>sync: (the barriers) and must be
	// deterministic: every node of a cluster needs the same mapping. The
	// broker remembers, for each channel it subscribed, which hub channel a
	// Redis name stands for, and delivers incoming messages under it.
	ChannelName func(hubChannel string) string
	// Raw reports the hub channels that travel without an envelope (see
	// "Raw channels" in the protocol comment above); zero means none. It
	// makes the broker an Echoer: the hub delivers its publishes on those
	// channels through Redis only. It is called on every publish and must
	// be quick, allocation-free and deterministic, the same on every node;
	// a raw channel must have a Redis name of its own (ChannelName), not
	// one under <Prefix>.
	Raw func(hubChannel string) bool
	// OnLag, if not nil, is called with the lag in seconds (receive time
	// minus the envelope's sent-at, clamped at zero) of every envelope
	// delivered from another node. It is called from the broker's single
	// reader goroutine and must be quick (e.g. a Prometheus Observe); zero
	// means lag is only kept in BrokerStats.Lag.
	OnLag func(seconds float64)
}

// BrokerStats are counters of a broker since it was made.
type BrokerStats struct {
	Published     uint64        // publishes Redis accepted
	PublishErrors uint64        // publishes failed by Redis errors or timeouts (sent to no other node; after a timeout, at most once)
	Dropped       uint64        // publishes refused with ErrBrokerBusy (queue or a shard's lane full, closed, or ErrBrokerDown)
	Received      uint64        // publishes from Redis delivered to the handler (other nodes', outside ones, and this node's own on raw channels)
	Malformed     uint64        // incoming envelopes of an unknown version or truncated, dropped
	Reconnects    uint64        // reconnects reported with BrokerHandler.Reconnected
	QueueLen      int           // publishes waiting in the queue and the lanes' queues now
	Lag           time.Duration // lag of the most recently delivered envelope
	Down          bool          // Redis (on a cluster: every shard) is known unreachable: raw publishes are refused (ErrBrokerDown)
}

// RedisBroker is a Broker over Redis pub/sub. See the protocol comment at
// the top of this file for what goes over the wire.
//
// Goroutines: Start runs the publisher (on one Redis a lane that drains the
// publish queue and sends up to 512 PUBLISH commands per pipeline round
// trip; on a Redis Cluster a dispatcher and a lane per shard, see
// publanes.go), the subscriber and the reader. The subscriber
// turns queued Subscribe/Unsubscribe calls into SUBSCRIBE/UNSUBSCRIBE
// commands on the single *redis.PubSub. The reader reads that PubSub and
// calls the handler; being one goroutine, it keeps the order of every Redis
// channel.
//
// Redis down: Start succeeds anyway and go-redis keeps redialling (its
// receive loop retries about every 100 ms, its pool at least once a second).
// A publish accepted while Redis is down reaches the local subscribers (the
// hub delivers those; on raw channels it does not, and the publish reaches
// nobody) but no other node: its batch fails, is logged (collapsed by
// internal/ratelog: one line per kind and interval, with repeated=<count>)
// and counted in PublishErrors, and the publisher goes on. From
// that failure on the broker counts Redis as down (BrokerStats.Down) until
// a batch succeeds or a PING, sent every second meanwhile, is answered;
// while down, Publish refuses raw-channel publishes with ErrBrokerDown.
// A publish pipeline is never retried (see publanes.go: a timed-out
// PUBLISH may have run, and must not run twice). After a failed batch the
// publisher drops what it takes from the queue, counting it in
// PublishErrors, for one second before it tries Redis again: the queue
// keeps draining during an outage instead of filling while each batch
// waits out go-redis's dial timeout; it fills (and Publish returns
// ErrBrokerBusy) only while a batch is actually waiting on Redis.
// Subscriptions asked for meanwhile are made when the connection comes back
// (a failed SUBSCRIBE is redone every 500 ms), and Live is called then.
//
// Live: after each round of (UN)SUBSCRIBE commands the subscriber sends the
// barrier UNSUBSCRIBE <prefix>sync:<n>. Redis answers on the one connection
// in order, so when the reader sees the barrier's reply every command sent
// before it has taken effect, and the reader calls Live for each channel
// subscribed in rounds up to n that is still wanted by the same Subscribe
// call (an Unsubscribe, or an Unsubscribe and a new Subscribe, since then
// cancels it; the new Subscribe gets its own Live). This is safer than
// calling Live on the channel's "subscribe" reply, after which an already
// sent UNSUBSCRIBE of the same channel could still open a gap. go-redis keeps
// the set of subscribed channels and resubscribes all of them on every new
// connection, so a barrier answered on a newer connection proves the
// channel is subscribed there too. (On a cluster the round's barrier names
// its channels and shardps reports them shard by shard: see barrier.) A
// barrier lost with a connection is sent again after 500 ms while channels
// wait for Live (on one Redis; shardps keeps a cluster's barriers itself).
// No broker lock that Subscribe or Unsubscribe take is held while a handler method runs, so
// the hub may hold its own lock around those calls and take it in Live;
// handler methods may even call Subscribe and Unsubscribe (but not Close).
// The price: the wanted-check and the Live call are not atomic, so a Live
// may, rarely, follow an Unsubscribe of its channel that returned in
// between; the handler ignores a Live for a channel it no longer has.
//
// Reconnects: the reader keeps the set of channels whose "subscribe" reply
// arrived on the current connection and the reply's count of subscriptions.
// A "subscribe" reply for a channel already in the set, or whose count is
// not the set's size plus one, can only come from a new connection (go-redis
// resubscribing), so the reader calls Reconnected once, then starts the set
// afresh with that channel; the other resubscribe replies then fit the new
// set and report nothing. Limits: a reconnect is seen only when a channel was
// subscribed on the old connection and is resubscribed on the new one (a
// node with no channels reports none, which the Broker contract allows); it
// is reported when the first resubscribe reply arrives, that is when
// publishes flow again, not when the connection broke; several connection
// losses before Redis answers again are reported once; and it relies on the
// broker never subscribing a channel twice without unsubscribing between,
// which it ensures.
type RedisBroker struct {
	client     redis.UniversalClient
	chPrefix   string              // prefix + "ch:"
	chName     func(string) string // RedisBrokerOptions.ChannelName, or nil
	raw        func(string) bool   // RedisBrokerOptions.Raw, or nil
	syncPrefix string              // prefix + "sync:"
	nodeID     [8]byte
	log        *slog.Logger
	onLag      func(float64)

	queue chan pubItem

	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup

	startMu   sync.Mutex
	started   bool
	closeOnce sync.Once
	closed    atomic.Bool
	ps        *redis.PubSub   // on one Redis
	sps       *shardps.PubSub // on a Redis Cluster (then cluster is set)
	cluster   *redis.ClusterClient
	psCh      <-chan any
	h         BrokerHandler

	// liveMu is held by the reader while it picks and calls Live, and by
	// the subscriber while it takes queued calls (see barrier). It is
	// taken before mu, never under it.
	liveMu  sync.Mutex
	liveBuf []string // reader's scratch, under liveMu

	// mu guards the subscription state shared by Subscribe/Unsubscribe,
	// the subscriber and the reader. No handler method is called under it.
	mu        sync.Mutex
	subs      map[string]*redisSub // wanted channels: latest call was Subscribe
	hubOf     map[string]string    // Redis name -> hub channel, for the wanted channels
	ops       []subOp              // calls not yet taken by the subscriber
	awaiting  []awaitLive          // FIFO by round, for Live
	awaitHead int
	// awaitDone counts the entries of awaiting taken (sub nil): those
	// before awaitHead and, on a cluster, later ones confirmed out of order.
	awaitDone int
	round     uint64 // last subscriber round taken
	wake      chan struct{}

	confirmed atomic.Uint64 // highest barrier answered

	published     atomic.Uint64
	publishErrors atomic.Uint64
	dropped       atomic.Uint64
	received      atomic.Uint64
	malformed     atomic.Uint64
	reconnects    atomic.Uint64
	lag           atomic.Int64
	down          atomic.Bool // every lane is down: its batch failed, and no batch or PING succeeded since
	lanes         laneSet     // the publisher's lanes (publanes.go)

	hist *history.RedisStore // EnableHistory; nil: no channel keeps history

	rlog *ratelog.Logger // warnings, collapsed per kind
}

type pubItem struct {
	channel string
	name    string       // Redis channel; set by the dispatcher or the lane
	data    []byte       // whole envelope, or the payload alone on a raw channel
	done    chan<- error // PublishConfirmed's: gets the outcome (buffered); else nil
	// kept: a publish on a channel with history (PublishKept): data is the
	// version 2 header, then the payload; the history script appends it
	// and publishes it with its position. failed, if set, hears a loss.
	kept   bool
	slot   uint16 // name's slot, on a cluster (set by the dispatcher)
	failed func(error)
}

// redisSub is one Subscribe call's subscription; its identity tells a
// Subscribe from a later one of the same channel. raw is Raw(channel),
// kept for the reader.
type redisSub struct{ live, raw bool }

type subOp struct {
	channel string
	sub     bool
}

type awaitLive struct {
	channel string
	name    string // its Redis name, on a cluster (the barrier lists those)
	sub     *redisSub
	round   uint64
}

// NewRedisBroker returns a broker over o.Client; Start starts it. It panics
// if o.Client is nil.
func NewRedisBroker(o RedisBrokerOptions) *RedisBroker {
	if o.Client == nil {
		panic("session: RedisBrokerOptions.Client is nil")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultRedisPrefix
	}
	if o.NodeID == ([8]byte{}) {
		_, _ = rand.Read(o.NodeID[:])
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultBrokerQueue
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &RedisBroker{
		client:     o.Client,
		chPrefix:   o.Prefix + "ch:",
		chName:     o.ChannelName,
		raw:        o.Raw,
		syncPrefix: o.Prefix + "sync:",
		nodeID:     o.NodeID,
		log:        o.Logger.With("component", "redis-broker", "node", hex.EncodeToString(o.NodeID[:])),
		rlog:       ratelog.New(o.Logger.With("component", "redis-broker", "node", hex.EncodeToString(o.NodeID[:])), slog.LevelWarn, 0),
		onLag:      o.OnLag,
		queue:      make(chan pubItem, o.QueueSize),
		ctx:        ctx,
		cancel:     cancel,
		stop:       make(chan struct{}),
		subs:       make(map[string]*redisSub),
		hubOf:      make(map[string]string),
		wake:       make(chan struct{}, 1),
	}
}

// redisName returns the Redis channel a hub channel travels on.
func (b *RedisBroker) redisName(channel string) string {
	if b.chName != nil {
		return b.chName(channel)
	}
	return b.chPrefix + channel
}

// Echoes implements Echoer: publishes on a raw channel come back through
// Redis, and the hub delivers only that copy.
func (b *RedisBroker) Echoes(channel string) bool { return b.raw != nil && b.raw(channel) }

// NodeID returns the node's identity in envelopes.
func (b *RedisBroker) NodeID() [8]byte { return b.nodeID }

// Start implements Broker. It does not wait for Redis: it returns nil even
// when Redis is down, and the broker connects in the background. It fails
// if h is nil, if the broker was started or closed before, or if the client
// is a *redis.Ring.
func (b *RedisBroker) Start(h BrokerHandler) error {
	if h == nil {
		return errors.New("session: RedisBroker.Start: nil handler")
	}
	if _, ok := b.client.(*redis.Ring); ok {
		return errors.New("session: RedisBroker does not support *redis.Ring clients")
	}
	b.startMu.Lock()
	defer b.startMu.Unlock()
	if b.closed.Load() {
		return errors.New("session: RedisBroker.Start after Close")
	}
	if b.started {
		return errors.New("session: RedisBroker started twice")
	}
	b.started = true
	b.h = h
	if cc, ok := b.client.(*redis.ClusterClient); ok {
		b.cluster = cc
		b.sps = shardps.New(shardps.Options{Cluster: cc, Logger: b.log, Buffer: redisChannelSize})
		b.psCh = b.sps.Channel()
	} else {
		// With no channels this makes no connection yet; go-redis's
		// receive loop, started by ChannelWithSubscriptions, dials and
		// redials.
		b.ps = b.client.Subscribe(b.ctx)
		b.psCh = b.ps.ChannelWithSubscriptions(redis.WithChannelSize(redisChannelSize))
	}
	b.wg.Add(2)
	b.startPublishing()
	go b.runSubscriber()
	go b.runReader()
	return nil
}

// Publish implements Broker: it copies payload into an envelope (on a raw
// channel: as is) and queues it. It returns ErrBrokerBusy, and counts a
// drop, when the queue is full, ErrBrokerDown for a raw channel while Redis
// is known down, and an error wrapping ErrBrokerBusy after Close.
func (b *RedisBroker) Publish(channel string, payload []byte) error {
	return b.publish(channel, payload, nil)
}

// EnableHistory makes the broker carry the publishes of channels with
// history through store (PublishKept). Call it before Start.
func (b *RedisBroker) EnableHistory(store *history.RedisStore) { b.hist = store }

// History returns the store EnableHistory gave, or nil.
func (b *RedisBroker) History() *history.RedisStore { return b.hist }

// Down reports whether the publisher knows Redis is unreachable (a batch
// failed and no batch or PING succeeded since; on a cluster, on every
// shard's lane).
func (b *RedisBroker) Down() bool { return b.down.Load() }

// PublishKept queues a publish on a channel with history: in Redis, one
// script appends it to the channel's history, gives it its position and
// publishes it (envelope version 2) to every node, this one included. It
// returns ErrBrokerBusy or ErrBrokerDown at once when the publish cannot
// be queued; a publish lost after it was queued (Redis failed the batch)
// is told to failed, from the publisher's goroutine, when failed is set.
func (b *RedisBroker) PublishKept(channel string, payload []byte, origin uint64, failed func(error)) error {
	if b.closed.Load() {
		b.dropped.Add(1)
		return errRedisBrokerClosed
	}
	if b.down.Load() {
		b.dropped.Add(1)
		return ErrBrokerDown
	}
	buf := make([]byte, envelopeKeptHead+len(payload))
	b.putHeader(buf, envelopeKept)
	binary.BigEndian.PutUint64(buf[envelopeHeaderLen:], origin)
	copy(buf[envelopeKeptHead:], payload)
	select {
	case b.queue <- pubItem{channel: channel, data: buf, kept: true, failed: failed}:
		return nil
	default:
		b.dropped.Add(1)
		return ErrBrokerBusy
	}
}

// AppendNow appends and publishes like PublishKept, at once and on the
// caller's goroutine, and returns the position: for a caller that may wait
// (the admin API), never an event loop.
func (b *RedisBroker) AppendNow(ctx context.Context, channel string, payload []byte) (history.Position, error) {
	head := make([]byte, envelopeKeptHead)
	b.putHeader(head, envelopeKept)
	// One command on a pipeline of its own, to be NoRetry (see publanes.go):
	// a timed-out append may have run, and must not run twice.
	stage, pipe, wrap := b.client.Pipeline(), b.client.Pipeline(), make([]noRetryCmd, 1)
	cmd := b.hist.QueueAppendPublish(ctx, stage, channel, payload, b.redisName(channel), head)
	_, _ = execNoRetry(ctx, stage, pipe, wrap)
	pos, err := history.ReadPosition(cmd)
	if err == nil {
		b.published.Add(1)
		if b.cluster == nil { // one shard, and it answers: no need to wait for the probe
			b.down.Store(false)
		}
	}
	return pos, err
}

// putHeader writes the envelope header of the given version at buf[:19].
func (b *RedisBroker) putHeader(buf []byte, version byte) {
	buf[0], buf[1], buf[2] = 0x00, 'G', version
	copy(buf[3:11], b.nodeID[:])
	binary.BigEndian.PutUint64(buf[11:19], uint64(time.Now().UnixNano()))
}

// PublishConfirmed implements Confirmer: Publish, then the outcome of the
// PUBLISH command. A publish that fails (Redis unreachable, or an error
// reply, or a timeout: it is not sent again) gets an error wrapping
// ErrBrokerDown and the Redis error; one the publisher drops unsent, during
// its pause after a failed batch, gets ErrBrokerDown; one dropped because
// its shard's lane is full gets ErrBrokerBusy; one still queued when the
// broker is closed gets an error wrapping ErrBrokerBusy. It costs a channel per call: it is for callers
// that can wait, not for event loops.
func (b *RedisBroker) PublishConfirmed(ctx context.Context, channel string, payload []byte) error {
	done := make(chan error, 1)
	if err := b.publish(channel, payload, done); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done(): // closed: the publisher may be gone
		select {
		case err := <-done:
			return err
		default:
			return errRedisBrokerClosed
		}
	}
}

func (b *RedisBroker) publish(channel string, payload []byte, done chan<- error) error {
	if b.closed.Load() {
		b.dropped.Add(1)
		return errRedisBrokerClosed
	}
	if len(b.queue) == cap(b.queue) { // cheap refusal: no envelope to throw away
		b.dropped.Add(1)
		return ErrBrokerBusy
	}
	var buf []byte
	if b.Echoes(channel) {
		if b.down.Load() {
			b.dropped.Add(1)
			return ErrBrokerDown
		}
		buf = append([]byte(nil), payload...)
		if buf == nil {
			buf = []byte{} // an empty payload is still a publish
		}
	} else {
		buf = make([]byte, envelopeHeaderLen+len(payload))
		b.putHeader(buf, envelopeVersion)
		copy(buf[envelopeHeaderLen:], payload)
	}
	select {
	case b.queue <- pubItem{channel: channel, data: buf, done: done}:
		return nil
	default:
		b.dropped.Add(1)
		return ErrBrokerBusy
	}
}

// Subscribe implements Broker. It queues the subscription; Live follows
// once Redis has made it.
func (b *RedisBroker) Subscribe(channel string) {
	if b.closed.Load() {
		return
	}
	name := b.redisName(channel)
	raw := b.Echoes(channel)
	b.mu.Lock()
	b.subs[channel] = &redisSub{raw: raw}
	b.hubOf[name] = channel
	b.ops = append(b.ops, subOp{channel: channel, sub: true})
	b.mu.Unlock()
	b.poke()
}

// Unsubscribe implements Broker. Publishes of the channel that arrive after
// it returns are not delivered, even before Redis has dropped the
// subscription (one whose Deliver was already under way may still finish).
func (b *RedisBroker) Unsubscribe(channel string) {
	if b.closed.Load() {
		return
	}
	name := b.redisName(channel)
	b.mu.Lock()
	delete(b.subs, channel)
	if b.hubOf[name] == channel {
		delete(b.hubOf, name)
	}
	b.ops = append(b.ops, subOp{channel: channel, sub: false})
	b.mu.Unlock()
	b.poke()
}

func (b *RedisBroker) poke() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Close implements Broker. It stops taking publishes, gives the publisher
// up to a second to send what is queued, stops the goroutines and closes the
// pub/sub connection. It does not close the client. It is idempotent. It
// must not be called from a BrokerHandler method (it waits for the
// goroutine calling them).
func (b *RedisBroker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.startMu.Lock()
		b.closed.Store(true)
		started := b.started
		b.startMu.Unlock()
		close(b.stop)
		if !started {
			b.cancel()
			return
		}
		grace := time.AfterFunc(redisCloseGrace, b.cancel)
		b.wg.Wait()
		grace.Stop()
		b.cancel()
		if b.sps != nil {
			err = b.sps.Close()
		} else if e := b.ps.Close(); e != nil {
			err = e
		}
		// go-redis closes its channel once its receive loop sees the close;
		// drain it so that loop is not left blocked on a full channel.
		timeout := time.NewTimer(2 * time.Second)
		defer timeout.Stop()
		for {
			select {
			case _, ok := <-b.psCh:
				if ok {
					continue
				}
			case <-timeout.C:
			}
			break
		}
	})
	return err
}

// Stats returns the broker's counters.
func (b *RedisBroker) Stats() BrokerStats {
	return BrokerStats{
		Published:     b.published.Load(),
		PublishErrors: b.publishErrors.Load(),
		Dropped:       b.dropped.Load(),
		Received:      b.received.Load(),
		Malformed:     b.malformed.Load(),
		Reconnects:    b.reconnects.Load(),
		QueueLen:      len(b.queue) + b.lanes.queued(),
		Lag:           time.Duration(b.lag.Load()),
		Down:          b.down.Load(),
	}
}

// ---- subscriber ----

func (b *RedisBroker) runSubscriber() {
	defer b.wg.Done()
	issued := make(map[string]bool) // what go-redis was last told, by gateway channel
	final := make(map[string]bool)
	var spare []subOp
	var failed []string // gateway channels whose SUBSCRIBE must be redone
	var sent uint64     // last round whose barrier is due
	retry := time.NewTimer(redisBarrierRetry)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-retry.C:
			if len(failed) > 0 {
				// Redo only what is still wanted, as UNSUBSCRIBE then
				// SUBSCRIBE: the failed SUBSCRIBE may have reached Redis
				// after all, and subscribing twice would look like a
				// reconnect to the reader.
				keep := failed[:0]
				for _, ch := range failed {
					if issued[ch] {
						keep = append(keep, ch)
					}
				}
				clear(failed[len(keep):])
				failed = nil
				if len(keep) > 0 {
					names := make([]string, len(keep))
					for i, ch := range keep {
						names[i] = b.redisName(ch)
					}
					b.unsubscribe(names)
					failed = b.subscribe(keep, names)
				}
			}
			if len(failed) == 0 && b.confirmed.Load() < sent {
				b.mu.Lock()
				waiting := b.awaitHead < len(b.awaiting)
				b.mu.Unlock()
				if waiting {
					b.sendBarrier(sent)
				}
			}
			if len(failed) > 0 || b.confirmed.Load() < sent {
				retry.Reset(redisBarrierRetry)
			}
		case <-b.wake:
			b.liveMu.Lock() // see barrier
			b.mu.Lock()
			ops := b.ops
			b.ops = spare[:0]
			if len(ops) == 0 {
				b.mu.Unlock()
				b.liveMu.Unlock()
				spare = ops
				continue
			}
			b.round++
			round := b.round
			// Net effect of the round per channel: the last call wins. A
			// channel unsubscribed and subscribed again within the round
			// stays subscribed in Redis; the new Subscribe still gets its
			// Live through the barrier.
			clear(final)
			for _, op := range ops {
				final[op.channel] = op.sub
			}
			var toSub, toSubNames, toUnsub, awaitNames []string
			for ch, sub := range final {
				if sub {
					if s := b.subs[ch]; s != nil {
						a := awaitLive{channel: ch, sub: s, round: round}
						if b.sps != nil {
							a.name = b.redisName(ch)
							awaitNames = append(awaitNames, a.name)
						}
						b.awaiting = append(b.awaiting, a)
					}
				}
				if sub == issued[ch] {
					continue
				}
				if sub {
					issued[ch] = true
					toSub = append(toSub, ch)
					toSubNames = append(toSubNames, b.redisName(ch))
				} else {
					delete(issued, ch)
					toUnsub = append(toUnsub, b.redisName(ch))
				}
			}
			b.mu.Unlock()
			b.liveMu.Unlock()
			clear(ops)
			spare = ops[:0]
			failed = append(failed, b.subscribe(toSub, toSubNames)...)
			if b.sps != nil {
				// shardps keeps a barrier until the shards of its channels
				// answer, across reconnects: no retry.
				b.unsubscribe(toUnsub)
				if len(awaitNames) > 0 {
					b.sps.Barrier(b.syncName(round), awaitNames...)
				}
				continue
			}
			// While a SUBSCRIBE is to be redone no barrier is sent: its
			// reply would declare the failed channels live.
			if len(failed) == 0 {
				toUnsub = append(toUnsub, b.syncName(round))
			}
			b.unsubscribe(toUnsub)
			sent = round
			retry.Reset(redisBarrierRetry)
		}
	}
}

// subscribe sends SUBSCRIBE for the Redis names (names[i] is channels[i]'s)
// and returns the gateway channels of those that failed. go-redis records a name even when its
// SUBSCRIBE fails and subscribes it on its next connection, but not when
// the failure itself made go-redis reconnect at once (it resubscribes
// before recording the new name), so failed names are redone.
func (b *RedisBroker) subscribe(channels, names []string) (failed []string) {
	if b.sps != nil {
		b.sps.Subscribe(names...) // shardps redoes what fails itself
		return nil
	}
	for len(names) > 0 {
		n := min(len(names), redisSubscribeChunk)
		if err := b.ps.Subscribe(b.ctx, names[:n]...); err != nil && b.ctx.Err() == nil {
			b.warn("subscribe", "redis broker: subscribe failed; will retry", "err", err)
			failed = append(failed, channels[:n]...)
		}
		names, channels = names[n:], channels[n:]
	}
	return failed
}

// syncName is the barrier name of round.
func (b *RedisBroker) syncName(round uint64) string {
	return b.syncPrefix + strconv.FormatUint(round, 10)
}

// sendBarrier sends the barrier of round on one Redis: an UNSUBSCRIBE of
// its sync name, answered after every command sent before it. A lost one
// is sent again by the retry timer.
func (b *RedisBroker) sendBarrier(round uint64) { b.unsubscribe([]string{b.syncName(round)}) }

// unsubscribe sends UNSUBSCRIBE for the Redis names. go-redis forgets the
// names even when the command fails, and a new connection does not have
// them, so failures need no retry.
func (b *RedisBroker) unsubscribe(names []string) {
	if b.sps != nil {
		b.sps.Unsubscribe(names...)
		return
	}
	for len(names) > 0 {
		n := min(len(names), redisSubscribeChunk)
		if err := b.ps.Unsubscribe(b.ctx, names[:n]...); err != nil && b.ctx.Err() == nil {
			b.warn("unsubscribe", "redis broker: unsubscribe failed", "err", err)
		}
		names = names[n:]
	}
}

// ---- reader ----

func (b *RedisBroker) runReader() {
	defer b.wg.Done()
	onConn := make(map[string]struct{}) // Redis channels subscribed on the current connection
	for {
		var m any
		var ok bool
		select {
		case <-b.stop:
			return
		case m, ok = <-b.psCh:
			if !ok {
				return
			}
		}
		switch m := m.(type) {
		case *redis.Message:
			b.deliver(m)
		case shardps.Barrier:
			if round, err := strconv.ParseUint(strings.TrimPrefix(m.Name, b.syncPrefix), 10, 64); err == nil {
				b.barrier(round, m.Channels)
			}
		case shardps.Reconnected:
			b.reconnected("shard", m.Shard)
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe":
				// A new connection starts counting at 1: go-redis
				// resubscribes every channel there. Counting 1 while
				// channels are known on the old connection is the one sure
				// sign of a reconnect. Comparing every count with what is
				// known is not: a channel subscribed during the reconnect
				// is subscribed twice (its own SUBSCRIBE and go-redis's
				// resubscription), and each later count would then look
				// like another reconnect.
				if m.Count == 1 && len(onConn) > 0 {
					b.reconnected()
					clear(onConn)
				}
				onConn[m.Channel] = struct{}{}
			case "unsubscribe":
				if rest, ok := strings.CutPrefix(m.Channel, b.syncPrefix); ok {
					if round, err := strconv.ParseUint(rest, 10, 64); err == nil {
						b.barrier(round, nil)
					}
					continue
				}
				delete(onConn, m.Channel)
			}
		}
	}
}

// reconnected reports a new subscription connection: publishes may have
// been lost on its channels meanwhile.
func (b *RedisBroker) reconnected(logArgs ...any) {
	b.reconnects.Add(1)
	b.warn("reconnect", "redis broker: reconnected; publishes from other nodes may have been lost", logArgs...)
	b.h.Reconnected()
}

// barrier handles the reply to the barrier of round. On one Redis (names
// nil: one connection answers in order) every channel subscribed in round
// or before is live unless unsubscribed since. On a cluster, names lists
// the Redis names of round's channels whose shard has answered (shardps):
// those are, each shard's as soon as it answers, so rounds and their
// channels are confirmed in any order and a master that is down holds
// back only its own channels.
func (b *RedisBroker) barrier(round uint64, names []string) {
	if names == nil && round > b.confirmed.Load() {
		b.confirmed.Store(round) // only the reader stores
	}
	// liveMu, not mu, is held across the Live calls: the hub calls
	// Subscribe under its own lock and Live takes that lock. Holding liveMu
	// keeps the subscriber from taking new calls meanwhile, so should an
	// Unsubscribe and a new Subscribe of a channel come between the check
	// and its Live, both land in the same round, which leaves the Redis
	// subscription untouched: the early Live is then still true.
	b.liveMu.Lock()
	defer b.liveMu.Unlock()
	b.mu.Lock()
	live := b.takeAwaiting(round, names, b.liveBuf[:0])
	b.compactAwaiting()
	b.mu.Unlock()
	for _, ch := range live {
		b.h.Live(ch)
	}
	clear(live)
	b.liveBuf = live[:0]
}

// takeAwaiting appends to live the channels that become live: those
// awaiting round named in names, or (names nil) every one awaiting round
// or an earlier one. It marks their entries taken: an entry keeps its
// round, so the queue stays sorted by round, and loses its sub. The head
// moves past taken entries. b.mu is held.
func (b *RedisBroker) takeAwaiting(round uint64, names []string, live []string) []string {
	q := b.awaiting[b.awaitHead:]
	lo := 0
	var named map[string]bool
	if names != nil {
		lo = sort.Search(len(q), func(i int) bool { return q[i].round >= round })
		named = make(map[string]bool, len(names))
		for _, n := range names {
			named[n] = true
		}
	}
	hi := sort.Search(len(q), func(i int) bool { return q[i].round > round })
	for i := lo; i < hi; i++ {
		a := q[i]
		if a.sub == nil || (named != nil && !named[a.name]) {
			continue // taken, or not confirmed yet
		}
		q[i] = awaitLive{round: a.round}
		b.awaitDone++
		if s := b.subs[a.channel]; s == a.sub && !s.live {
			s.live = true
			live = append(live, a.channel)
		}
	}
	for b.awaitHead < len(b.awaiting) && b.awaiting[b.awaitHead].sub == nil {
		b.awaitHead++
	}
	return live
}

// compactAwaiting drops the taken entries once they are most of the queue
// (on a cluster, entries of a shard that is down stay at the head while
// later rounds are confirmed behind them), keeping the order by round.
// b.mu is held.
func (b *RedisBroker) compactAwaiting() {
	if b.awaitHead == len(b.awaiting) {
		clear(b.awaiting)
		b.awaiting, b.awaitHead, b.awaitDone = b.awaiting[:0], 0, 0
		return
	}
	if b.awaitDone <= 1024 || b.awaitDone*2 <= len(b.awaiting) {
		return
	}
	kept := b.awaiting[:0]
	for _, a := range b.awaiting[b.awaitHead:] {
		if a.sub != nil {
			kept = append(kept, a)
		}
	}
	clear(b.awaiting[len(kept):])
	b.awaiting, b.awaitHead, b.awaitDone = kept, 0, 0
}

func (b *RedisBroker) deliver(m *redis.Message) {
	b.mu.Lock()
	channel, known := b.hubOf[m.Channel]
	s := b.subs[channel]
	b.mu.Unlock()
	if !known {
		return // not ours (or unsubscribed already)
	}
	if s == nil {
		return // unsubscribed; Redis has not caught up yet
	}
	p := m.Payload
	if s.raw {
		// Verbatim: nothing here is ours to parse, and this node's own
		// publishes come back this way to be delivered (see Echoes).
		b.received.Add(1)
		b.h.Deliver(channel, []byte(p))
		return
	}
	if len(p) >= envelopeKeptLen && p[0] == 0x00 && p[1] == 'G' && p[2] == envelopeKept {
		b.observeLag(p)
		b.received.Add(1)
		var origin uint64
		if p[3:11] == string(b.nodeID[:]) {
			origin = binary.BigEndian.Uint64([]byte(p[envelopeHeaderLen:envelopeKeptHead]))
		}
		epoch := int64(binary.BigEndian.Uint64([]byte(p[envelopeKeptHead : envelopeKeptHead+8])))
		offset := int64(binary.BigEndian.Uint64([]byte(p[envelopeKeptHead+8 : envelopeKeptLen])))
		payload := []byte(p[envelopeKeptLen:])
		if ph, ok := b.h.(PositionHandler); ok {
			ph.DeliverAt(channel, payload, origin, epoch, offset)
		} else {
			b.h.Deliver(channel, payload)
		}
		return
	}
	if len(p) >= 2 && p[0] == 0x00 && p[1] == 'G' {
		if len(p) < envelopeHeaderLen || p[2] != envelopeVersion {
			b.malformed.Add(1)
			b.warn("envelope", "redis broker: dropped message with unknown envelope",
				"channel", channel, "len", len(p))
			return
		}
		if p[3:11] == string(b.nodeID[:]) {
			return // ours: the hub delivered it locally
		}
		b.observeLag(p)
		p = p[envelopeHeaderLen:]
	}
	b.received.Add(1)
	b.h.Deliver(channel, []byte(p))
}

// observeLag records the lag of an envelope from its sent-at.
func (b *RedisBroker) observeLag(p string) {
	var sent int64
	for i := 11; i < envelopeHeaderLen; i++ {
		sent = sent<<8 | int64(p[i])
	}
	lag := max(time.Now().UnixNano()-sent, 0)
	b.lag.Store(lag)
	if b.onLag != nil {
		b.onLag(float64(lag) / 1e9)
	}
}

// warn logs a warning of kind (a closed set: "publish", "subscribe",
// "unsubscribe", "reconnect", "envelope") through the broker's ratelog:
// repeats within the interval are collapsed into one line with a count.
func (b *RedisBroker) warn(kind, msg string, args ...any) {
	b.rlog.Log(kind, msg, slog.Group("", args...))
}
