package loadgen

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgateway/gateway/packet"
)

// Cluster is what the history scenarios run against: one node alone or
// several nodes sharing a Redis (RedisPID, for its CPU), with or without
// history on the channel they use.
type Cluster struct {
	// Label names the set-up in results ("alone", "alone+history", ...).
	Label string `json:"label"`
	// Nodes are the gateway processes; subscribers are spread over them
	// round robin, the publisher is on the first.
	Nodes []Target `json:"nodes"`
	// RedisPID is the redis-server's pid (0: no Redis).
	RedisPID int `json:"redis_pid,omitempty"`
	// History: the channel keeps history and subscribers use SubscribeFrom
	// (deliveries are Publications); otherwise Subscribe and Messages.
	History bool `json:"history"`
	// OnMeasure, if set, is called when the measured phase starts (the
	// fan-out's publishes, the recovery's reconnect): the runner's
	// -history-profile takes a CPU profile then.
	OnMeasure func() `json:"-"`
}

// HistoryScenario runs one history scenario against a cluster.
type HistoryScenario func(ctx context.Context, cl Cluster, p Params) *Result

// HistoryScenarios by name; "history" in the runner means both, in
// HistoryOrder.
var HistoryScenarios = map[string]HistoryScenario{
	"history-fanout":   HistoryFanout,
	"history-recovery": HistoryRecovery,
}

// HistoryOrder is the order of the history suite.
var HistoryOrder = []string{"history-fanout", "history-recovery"}

// busyRetries is DialSpec.BusyRetries of the history scenarios' clients:
// a node refuses a SubscribeFrom with Error 503 ("try again") while it has
// its bound of history reads under way, and these clients try again, as
// PROTOCOL.md's error table says of 503.
const busyRetries = 100

// HistoryChannel is the channel of the history scenarios; the nodes keep
// history for the prefix "hist." when the set-up has history.
const HistoryChannel = "hist.bench"

// clusterCPU is every node's CPU seconds, and Redis's.
func clusterCPU(cl Cluster) (nodes, redis float64) {
	for _, n := range cl.Nodes {
		nodes += SampleProcess(n.PID, "").CPU
	}
	if cl.RedisPID > 0 {
		redis = SampleProcess(cl.RedisPID, "").CPU
	}
	return nodes, redis
}

// beginCluster is begin on the first node; the other nodes' figures are
// added by the scenario.
func beginCluster(ctx context.Context, name string, cl Cluster, p Params) (*run, float64, float64, error) {
	t := cl.Nodes[0]
	rn, err := begin(ctx, name, t, p)
	rn.r.Server = cl.Label
	n, r := clusterCPU(cl)
	return rn, n, r, err
}

// histSubHandler records deliveries of Messages and Publications alike.
type histSubHandler struct {
	rn *run
}

func (h *histSubHandler) OnPacket(c *Conn, p *packet.ServerPacket, now int64) {
	if p.ID == packet.PacketMessage || p.ID == packet.PacketPublication {
		h.rn.del.Add(&c.Tracker, p.Payload, now)
	}
}
func (h *histSubHandler) OnText(*Conn, []byte, int64)  {}
func (h *histSubHandler) OnClose(c *Conn, code uint16) { h.rn.unexpectedClose(c, code) }

// errCounter counts the Error packets a publisher gets (refused publishes).
type errCounter struct {
	rn    *run
	n     atomic.Int64
	first atomic.Value
}

func (h *errCounter) OnPacket(_ *Conn, p *packet.ServerPacket, _ int64) {
	if p.ID == packet.PacketError {
		h.n.Add(1)
		h.first.CompareAndSwap(nil, fmt.Sprintf("%d %s", p.Code, p.Text))
	}
}
func (h *errCounter) OnText(*Conn, []byte, int64)  {}
func (h *errCounter) OnClose(c *Conn, code uint16) { h.rn.unexpectedClose(c, code) }

// finishCluster replaces the first node's CPU with the whole cluster's
// and reports Redis's apart.
func finishCluster(rn *run, cl Cluster, cpu0, redis0 float64, err error) *Result {
	n, r := clusterCPU(cl)
	res := rn.finish(err)
	res.CPU = n - cpu0
	if res.Delivered > 0 {
		res.CPUPM = res.CPU / (float64(res.Delivered) / 1e6)
	}
	if cl.RedisPID > 0 {
		if res.Extra == nil {
			res.Extra = map[string]any{}
		}
		res.Extra["redis_cpu_seconds"] = r - redis0
		if res.Delivered > 0 {
			res.Extra["redis_cpu_s_per_million_deliveries"] = (r - redis0) / (float64(res.Delivered) / 1e6)
		}
	}
	return res
}

// HistoryFanout is Fanout on HistoryChannel with the subscribers spread
// over the cluster's nodes: Subs subscribers (SubscribeFrom(ch, 0, 0) with
// history, Subscribe without), one publisher on the first node sending
// Publishes payloads back to back. CPU is every node's (Redis's apart).
func HistoryFanout(ctx context.Context, cl Cluster, p Params) *Result {
	rn, cpu0, redis0, err := beginCluster(ctx, "history-fanout", cl, p)
	if err != nil {
		return finishCluster(rn, cl, cpu0, redis0, err)
	}
	ch := HistoryChannel
	conns := make([]*Conn, rn.p.Subs)
	var retries atomic.Int64
	start := time.Now()
	rn.e.DialMany(ctx, rn.p.Subs, func(i int) *DialSpec {
		s := &DialSpec{URL: cl.Nodes[i%len(cl.Nodes)].WSURL, Proto: Native, Key: rn.keys.key(i), Handler: &histSubHandler{rn: rn}, Tag: i}
		if cl.History {
			s.SubscribeFrom, s.BusyRetries = []From{{Channel: ch}}, busyRetries
		} else {
			s.Subscribe = []string{ch}
		}
		return s
	}, func(i int, c *Conn, tm Timing, err error) {
		if err != nil {
			rn.connectErr(err)
			return
		}
		rn.hs.Record(int64(tm.Handshake))
		retries.Add(int64(tm.Retries))
		conns[i] = c
	})
	for _, c := range conns {
		if c != nil {
			rn.r.Conns++
		}
	}
	rn.r.HandshakesPerS = float64(rn.r.Conns) / time.Since(start).Seconds()
	ec := &errCounter{rn: rn}
	pc, _, err := rn.e.Dial(ctx, &DialSpec{URL: cl.Nodes[0].WSURL, Proto: Native, Key: rn.keys.key(-1), Handler: ec})
	if err != nil {
		return finishCluster(rn, cl, cpu0, redis0, fmt.Errorf("publisher: %w", err))
	}
	pub := &publisher{c: pc, seqs: map[string]uint64{}}
	// The subscriptions' CPU is not the fan-out's.
	cpu0, redis0 = clusterCPU(cl)
	if cl.OnMeasure != nil {
		cl.OnMeasure()
	}
	start = time.Now()
	for range rn.p.Publishes {
		if err := pub.publish(ch, rn.p.PayloadSize); err != nil {
			return finishCluster(rn, cl, cpu0, redis0, err)
		}
	}
	rn.r.OfferedPerS = float64(rn.p.Publishes) / time.Since(start).Seconds()
	rn.r.Publishes = uint64(rn.p.Publishes)
	want := uint64(rn.r.Conns) * uint64(rn.p.Publishes)
	rn.waitDeliveries(want)
	rn.fillDeliveries(want, start)
	rn.extra("nodes", len(cl.Nodes))
	rn.extra("history", cl.History)
	rn.extra("subscribe_from_busy_retries", retries.Load())
	rn.extra("refused_publishes", ec.n.Load())
	if f, ok := ec.first.Load().(string); ok {
		rn.extra("first_refusal", f)
	}
	return finishCluster(rn, cl, cpu0, redis0, nil)
}

// recoverer is one recovering client's state, written by its connection's
// handler (one goroutine at a time) and read after its Dial returned.
type recoverer struct {
	epoch, offset int64 // the position it last had
	next          int64 // next offset expected while replaying
	got           int   // Publications received since the reconnect
	bad           int   // Publications out of order
	answered      bool  // SubscribedFrom after the reconnect
	recovered     byte
	answerOffset  int64
}

type recoverHandler struct {
	rn    *run
	state []recoverer
	again atomic.Bool // the reconnect phase
}

func (h *recoverHandler) OnPacket(c *Conn, p *packet.ServerPacket, _ int64) {
	s := &h.state[c.spec.Tag]
	switch p.ID {
	case packet.PacketPublication:
		if !h.again.Load() {
			s.offset = p.Offset
			return
		}
		if p.Offset != s.next {
			s.bad++
		}
		s.next = p.Offset + 1
		s.got++
	case packet.PacketSubscribedFrom:
		if !h.again.Load() {
			s.epoch, s.offset = p.Epoch, p.Offset
			return
		}
		s.answered, s.recovered, s.answerOffset = true, p.Recovered, p.Offset
	}
}
func (h *recoverHandler) OnText(*Conn, []byte, int64) {}
func (h *recoverHandler) OnClose(c *Conn, code uint16) {
	if h.again.Load() {
		h.rn.unexpectedClose(c, code)
	}
}

// watchHandler counts the Publications of the watcher, which tells when
// every publish was made.
type watchHandler struct {
	NopHandler
	n atomic.Int64
}

func (h *watchHandler) OnPacket(_ *Conn, p *packet.ServerPacket, _ int64) {
	if p.ID == packet.PacketPublication {
		h.n.Add(1)
	}
}

// HistoryRecovery: Subs clients (spread over the nodes) subscribe to
// HistoryChannel with SubscribeFrom(ch, 0, 0) and disconnect; Publishes
// publications are made on the first node (a watcher on the last node
// sees all of them); then every client reconnects at once (all dials in
// flight together, unpaced) with SubscribeFrom from its last position.
// A client is done when its SubscribedFrom came (Dial returns then):
// per-client time = dial start to SubscribedFrom, handshake included.
// Each must get recovered 1, exactly the Publishes missed, in order, and
// SubscribedFrom's offset its last. CPU is every node's over the
// reconnect phase only. The first subscriptions (all at once too, nothing
// to replay) are reported apart as the point of comparison.
func HistoryRecovery(ctx context.Context, cl Cluster, p Params) *Result {
	n := p.Subs
	p.Engine.MaxInFlight, p.Engine.DialRate = max(n, 1), 0
	rn, cpu0, redis0, err := beginCluster(ctx, "history-recovery", cl, p)
	if err != nil {
		return finishCluster(rn, cl, cpu0, redis0, err)
	}
	if !cl.History {
		return finishCluster(rn, cl, cpu0, redis0, fmt.Errorf("history-recovery needs a set-up with history"))
	}
	ch := HistoryChannel
	h := &recoverHandler{rn: rn, state: make([]recoverer, n)}
	spec := func(i int) *DialSpec {
		s := &h.state[i]
		return &DialSpec{URL: cl.Nodes[i%len(cl.Nodes)].WSURL, Proto: Native, Key: rn.keys.key(i), Handler: h, Tag: i,
			SubscribeFrom: []From{{Channel: ch, Epoch: s.epoch, Offset: s.offset}}, BusyRetries: busyRetries}
	}
	// The first subscriptions, made the same way (all at once) but with
	// nothing to replay, are the reconnect's point of comparison.
	first := make([]*Conn, n)
	var firstRetries, retries atomic.Int64
	var firstPer Histogram
	fcpu0, _ := clusterCPU(cl)
	fstart := time.Now()
	rn.e.DialMany(ctx, n, spec, func(i int, c *Conn, tm Timing, err error) {
		if err != nil {
			rn.connectErr(err)
			return
		}
		firstPer.Record(int64(tm.Handshake))
		firstRetries.Add(int64(tm.Retries))
		first[i] = c
	})
	firstAll := time.Since(fstart)
	fcpu1, _ := clusterCPU(cl)
	w, _, err := rn.e.Dial(ctx, &DialSpec{URL: cl.Nodes[len(cl.Nodes)-1].WSURL, Proto: Native, Key: rn.keys.key(-2),
		Handler: &watchHandler{}, SubscribeFrom: []From{{Channel: ch}}})
	if err != nil {
		return finishCluster(rn, cl, cpu0, redis0, fmt.Errorf("watcher: %w", err))
	}
	watch := w.spec.Handler.(*watchHandler)
	for _, c := range first {
		if c != nil {
			c.Close()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for rn.e.Live() > 1 && time.Now().Before(deadline) { // the watcher stays
		time.Sleep(5 * time.Millisecond)
	}
	ec := &errCounter{rn: rn}
	pc, _, err := rn.e.Dial(ctx, &DialSpec{URL: cl.Nodes[0].WSURL, Proto: Native, Key: rn.keys.key(-1), Handler: ec})
	if err != nil {
		return finishCluster(rn, cl, cpu0, redis0, fmt.Errorf("publisher: %w", err))
	}
	pub := &publisher{c: pc, seqs: map[string]uint64{}}
	for range rn.p.Publishes {
		if err := pub.publish(ch, rn.p.PayloadSize); err != nil {
			return finishCluster(rn, cl, cpu0, redis0, err)
		}
	}
	for watch.n.Load() < int64(rn.p.Publishes) && time.Now().Before(deadline.Add(rn.p.Timeout)) {
		time.Sleep(5 * time.Millisecond)
	}
	rn.r.Publishes = uint64(watch.n.Load())
	for i := range h.state {
		h.state[i].next = h.state[i].offset + 1
	}
	h.again.Store(true)
	// The reconnect: every client at once.
	cpu0, redis0 = clusterCPU(cl)
	if cl.OnMeasure != nil {
		cl.OnMeasure()
	}
	var per Histogram
	var mu sync.Mutex
	conns := 0
	start := time.Now()
	rn.e.DialMany(ctx, n, spec, func(i int, c *Conn, tm Timing, err error) {
		if err != nil {
			rn.connectErr(err)
			return
		}
		per.Record(int64(tm.Handshake))
		retries.Add(int64(tm.Retries))
		mu.Lock()
		conns++
		mu.Unlock()
	})
	all := time.Since(start)
	rn.r.Conns = conns
	var ok, notRecovered, missing, disordered, wrongTop, noPosition int
	var replayed int64
	for i := range h.state {
		s := &h.state[i]
		if s.epoch == 0 {
			noPosition++ // its first subscription failed: nothing to recover
			continue
		}
		if !s.answered {
			continue
		}
		replayed += int64(s.got)
		switch {
		case s.recovered != 1:
			notRecovered++
		case s.got != rn.p.Publishes:
			missing++
		case s.bad > 0:
			disordered++
		case s.answerOffset != s.offset+int64(rn.p.Publishes):
			wrongTop++
		default:
			ok++
		}
	}
	rn.r.Handshake = per.Summary()
	rn.r.Latency = rn.r.Handshake
	rn.r.Expected = uint64(n) * uint64(rn.p.Publishes)
	rn.r.Delivered = uint64(replayed)
	if rn.r.Expected > uint64(replayed) {
		rn.r.Lost = rn.r.Expected - uint64(replayed)
	}
	rn.r.DeliveriesPS = float64(replayed) / all.Seconds()
	rn.extra("nodes", len(cl.Nodes))
	rn.extra("all_recovered_s", all.Seconds())
	rn.extra("clients_ok", ok)
	rn.extra("clients_not_recovered", notRecovered)
	rn.extra("clients_missing_publications", missing)
	rn.extra("clients_out_of_order", disordered)
	rn.extra("clients_wrong_offset", wrongTop)
	rn.extra("clients_without_first_position", noPosition)
	rn.extra("first_subscribe_busy_retries", firstRetries.Load())
	rn.extra("first_subscribe", map[string]any{"all_s": firstAll.Seconds(), "latency": firstPer.Summary(),
		"node_cpu_ms_per_client": (fcpu1 - fcpu0) * 1e3 / float64(max(n, 1))})
	rn.extra("reconnect_busy_retries", retries.Load())
	rn.extra("watcher_publications", watch.n.Load())
	rn.extra("refused_publishes", ec.n.Load())
	res := finishCluster(rn, cl, cpu0, redis0, nil)
	if conns > 0 {
		res.Extra["node_cpu_ms_per_client"] = res.CPU * 1e3 / float64(conns)
	}
	if replayed > 0 {
		res.Extra["node_cpu_us_per_replayed_publication"] = res.CPU * 1e6 / float64(replayed)
	}
	return res
}
