package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Server kinds.
const (
	Gateway  = "gateway"
	Baseline = "baseline"
)

// Target is the server under test.
type Target struct {
	// Kind is Gateway or Baseline.
	Kind string `json:"kind"`
	// WSURL is the native endpoint, ws://host:port/api/ws.
	WSURL string `json:"ws_url"`
	// MetricsURL serves Prometheus text with go_memstats_heap_inuse_bytes
	// (empty: no heap figures).
	MetricsURL string `json:"metrics_url"`
	// PID of the server process for /proc figures (0: none).
	PID int `json:"pid"`
	// Secret is GATEWAY_SECRET, to issue access keys.
	Secret string `json:"-"`
	// HTTPURL is the main listener's HTTP base (KOsync), http://host:port.
	HTTPURL string `json:"http_url,omitempty"`
	// WsifyURL is the wsify endpoint, ws://host:port/ws (gateway only).
	WsifyURL string `json:"wsify_url,omitempty"`
}

// Params size a scenario; zero values take the defaults of DefaultParams.
type Params struct {
	Conns       int     `json:"conns,omitempty"`
	Subs        int     `json:"subs,omitempty"`
	Publishes   int     `json:"publishes,omitempty"`
	PayloadSize int     `json:"payload_size,omitempty"`
	PublishRate float64 `json:"publish_rate,omitempty"` // per publisher; 0: back to back
	// Channel is fanout's channel (zero: bench.fanout); PublishAt, when set,
	// holds fanout's publishes until then: several load processes attached
	// to one cluster connect first and publish together.
	Channel        string        `json:"channel,omitempty"`
	PublishAt      time.Time     `json:"publish_at,omitempty"`
	Channels       int           `json:"channels,omitempty"`
	SubsPerChannel int           `json:"subs_per_channel,omitempty"`
	Publishers     int           `json:"publishers,omitempty"`
	Pings          int           `json:"pings,omitempty"`
	ChurnRate      float64       `json:"churn_rate,omitempty"`
	ChurnLifetime  time.Duration `json:"churn_lifetime,omitempty"`
	Duration       time.Duration `json:"duration,omitempty"`
	Timeout        time.Duration `json:"timeout,omitempty"`
	Engine         Config        `json:"-"`
	// Barrier, when set, is called by fanout at each stage ("connected":
	// every dial done, before the first publish; "delivered": deliveries
	// counted, connections still open) with the figures so far, and holds
	// the scenario until it returns: a cluster run of many load processes
	// samples every process at the same moment. Nil: no barrier.
	Barrier func(stage string, r *Result) `json:"-"`
}

// DefaultParams are the bounded defaults of `make bench` (2 cores, a few
// minutes for the whole suite).
func DefaultParams() Params {
	return Params{Conns: 10000, Subs: 5000, Publishes: 200, PayloadSize: 100, Channels: 100, SubsPerChannel: 20,
		Publishers: 10, Pings: 20, ChurnRate: 1000, ChurnLifetime: time.Second, Duration: 10 * time.Second,
		Timeout: 60 * time.Second}
}

func (p Params) or(d Params) Params {
	pick := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	p.Conns = pick(p.Conns, d.Conns)
	p.Subs = pick(p.Subs, d.Subs)
	p.Publishes = pick(p.Publishes, d.Publishes)
	p.PayloadSize = pick(p.PayloadSize, d.PayloadSize)
	p.Channels = pick(p.Channels, d.Channels)
	p.SubsPerChannel = pick(p.SubsPerChannel, d.SubsPerChannel)
	p.Publishers = pick(p.Publishers, d.Publishers)
	p.Pings = pick(p.Pings, d.Pings)
	if p.ChurnRate == 0 {
		p.ChurnRate = d.ChurnRate
	}
	if p.ChurnLifetime == 0 {
		p.ChurnLifetime = d.ChurnLifetime
	}
	if p.Duration == 0 {
		p.Duration = d.Duration
	}
	if p.Timeout == 0 {
		p.Timeout = d.Timeout
	}
	return p
}

// Result is one scenario run against one server. Rates are per second,
// memory in bytes, latencies in milliseconds.
type Result struct {
	Scenario string `json:"scenario"`
	Server   string `json:"server"`
	Params   Params `json:"params"`
	Error    string `json:"error,omitempty"`

	Conns         int    `json:"conns"`
	ConnectErrors int    `json:"connect_errors"`
	FirstError    string `json:"first_connect_error,omitempty"`
	// ErrorKinds counts the failed dials by step and cause, e.g.
	// "connect: EADDRNOTAVAIL", "connect: timeout", "upgrade response: ECONNRESET".
	ErrorKinds     map[string]int `json:"connect_error_kinds,omitempty"`
	HandshakesPerS float64        `json:"handshakes_per_s,omitempty"`
	Handshake      Latency        `json:"handshake_latency"`

	Publishes    uint64  `json:"publishes,omitempty"`
	OfferedPerS  float64 `json:"offered_publishes_per_s,omitempty"`
	Expected     uint64  `json:"expected_deliveries,omitempty"`
	Delivered    uint64  `json:"delivered,omitempty"`
	Lost         uint64  `json:"lost"`
	Duplicates   uint64  `json:"duplicates"`
	Reordered    uint64  `json:"reordered"`
	DeliveriesPS float64 `json:"deliveries_per_s,omitempty"`
	Latency      Latency `json:"latency"`
	PingRTT      Latency `json:"ping_rtt"`
	PingsPerS    float64 `json:"pings_per_s,omitempty"`

	Empty  Sample  `json:"server_empty"` // right after start, no connection
	After  Sample  `json:"server_after"` // at the end, connections still open
	CPU    float64 `json:"server_cpu_seconds"`
	RSSPC  float64 `json:"rss_per_conn_bytes,omitempty"`
	HeapPC float64 `json:"heap_per_conn_bytes,omitempty"`
	CPUPM  float64 `json:"cpu_s_per_million_deliveries,omitempty"`

	CloseCodes map[string]int `json:"unexpected_close_codes,omitempty"`
	Extra      map[string]any `json:"extra,omitempty"`
	Seconds    float64        `json:"seconds"`
}

// Scenario runs one scenario against a freshly started, idle server.
type Scenario func(ctx context.Context, t Target, p Params) *Result

// Scenarios by name, in the suite's order.
var Scenarios = map[string]Scenario{
	"idle":          Idle,
	"handshake":     Handshake,
	"ping":          PingRTT,
	"fanout":        Fanout,
	"fanout-paced":  FanoutPaced,
	"channels":      ManyChannels,
	"churn":         Churn,
	"wsify-fanout":  WsifyFanout,
	"kosync-fanout": KosyncFanout,
	"burst-release": BurstRelease,
}

// Order is the suite's order.
var Order = []string{"idle", "handshake", "ping", "fanout", "fanout-paced", "channels", "churn", "wsify-fanout", "kosync-fanout"}

// GatewayOnly lists the scenarios the baseline does not speak.
var GatewayOnly = map[string]bool{"wsify-fanout": true, "kosync-fanout": true}

// run holds what every scenario shares.
type run struct {
	ctx    context.Context
	t      Target
	p      Params
	r      *Result
	e      *Engine
	start  time.Time
	hs     Histogram
	keys   *keyMint
	closes sync.Map // closeKind -> *atomic.Int64
	del    Deliveries
	errMu  sync.Mutex
}

func begin(ctx context.Context, name string, t Target, p Params) (*run, error) {
	p = p.or(DefaultParams())
	rn := &run{ctx: ctx, t: t, p: p, r: &Result{Scenario: name, Server: t.Kind, Params: p}, start: time.Now()}
	rn.r.Empty = SampleProcess(t.PID, t.MetricsURL)
	e, err := NewEngine(p.Engine)
	if err != nil {
		return rn, err
	}
	rn.e = e
	if t.Secret != "" {
		if rn.keys, err = newKeyMint(t.Secret); err != nil {
			return rn, err
		}
	}
	return rn, nil
}

// finish samples the server (connections still open), closes everything
// and fills the derived figures.
func (rn *run) finish(err error) *Result {
	r := rn.r
	if err != nil && r.Error == "" {
		r.Error = err.Error()
	}
	r.After = SampleProcess(rn.t.PID, rn.t.MetricsURL)
	r.CPU = r.After.CPU - r.Empty.CPU
	if r.Conns > 0 && rn.t.PID > 0 {
		r.RSSPC = float64(r.After.RSS-r.Empty.RSS) / float64(r.Conns)
	}
	if r.Conns > 0 && r.After.Heap >= 0 && r.Empty.Heap >= 0 {
		r.HeapPC = float64(r.After.Heap-r.Empty.Heap) / float64(r.Conns)
	}
	if r.Delivered > 0 && rn.t.PID > 0 {
		r.CPUPM = r.CPU / (float64(r.Delivered) / 1e6)
	}
	if rn.hs.Count() > 0 && r.Handshake.Count == 0 {
		r.Handshake = rn.hs.Summary()
	}
	if rn.e != nil {
		if rn.e.RTT.Count() > 0 {
			r.PingRTT = rn.e.RTT.Summary()
		}
		rn.e.CloseAll(5 * time.Second)
		_ = rn.e.Close()
	}
	rn.closes.Range(func(k, v any) bool {
		if r.CloseCodes == nil {
			r.CloseCodes = map[string]int{}
		}
		r.CloseCodes[k.(string)] = int(v.(*atomic.Int64).Load())
		return true
	})
	r.Seconds = time.Since(rn.start).Seconds()
	return r
}

// unexpectedClose counts a close the scenario did not start. Once the
// client sent its close frame, whatever ends the connection is expected: the
// end of a run stops the engine after a bounded wait, which a loaded server
// may not beat (the client then drops the socket itself: 1006).
func (rn *run) unexpectedClose(c *Conn, code uint16) {
	if c.closeSent.Load() {
		return
	}
	v, _ := rn.closes.LoadOrStore(closeKind(c, code), new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// closeKind names a close: its code, and for 1006 (no close frame) why the
// socket ended: the client's own parse failure, or what the socket
// reported (EOF: the peer closed; an errno: reset, ...).
func closeKind(c *Conn, code uint16) string {
	k := strconv.Itoa(int(code))
	switch {
	case code != 1006:
	case c.setupErr != nil:
		k += " client: " + c.setupErr.Error()
	case c.closeErr != nil:
		var errno syscall.Errno
		if errors.As(c.closeErr, &errno) {
			k += " " + unix.ErrnoName(errno)
		} else {
			k += " " + c.closeErr.Error()
		}
	}
	return k
}

func (rn *run) connectErr(err error) {
	rn.errMu.Lock()
	defer rn.errMu.Unlock()
	rn.r.ConnectErrors++
	if rn.r.FirstError == "" {
		rn.r.FirstError = err.Error()
	}
	if rn.r.ErrorKinds == nil {
		rn.r.ErrorKinds = map[string]int{}
	}
	rn.r.ErrorKinds[ErrorKind(err)]++
}

// ErrorKind names a dial's failure by its step (the text before the first
// colon of Dial's error) and its cause: the errno's name (EADDRNOTAVAIL,
// EMFILE, ENFILE, ENOMEM, ECONNREFUSED, ECONNRESET, ...), "timeout" (a
// SYN never answered ends so: the kernel dropped it) or "other". A kernel
// limit shows up here by name.
func ErrorKind(err error) string {
	step, _, _ := strings.Cut(err.Error(), ":")
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		if name := unix.ErrnoName(errno); name != "" {
			return step + ": " + name
		}
		return step + ": errno " + strconv.Itoa(int(errno))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return step + ": timeout"
	}
	return step + ": other"
}

// keyMint issues access keys, one subject per connection index.
type keyMint struct {
	s   *token.Secrets
	now time.Time
}

func newKeyMint(secret string) (*keyMint, error) {
	s, err := token.ParseSecrets(secret)
	if err != nil {
		return nil, err
	}
	return &keyMint{s: s, now: time.Now()}, nil
}

func (k *keyMint) key(i int) []byte {
	raw, _, err := k.s.Issue("bench-"+strconv.Itoa(i), time.Hour, k.now)
	if err != nil {
		panic(err)
	}
	return raw
}

// dialAll opens n native connections to url with handler h, each
// subscribed to channels(i) (nil: none), and returns them (nil entries for
// failures).
func (rn *run) dialAll(url string, n int, h Handler, channels func(i int) []string, offset int) ([]*Conn, time.Duration) {
	conns := make([]*Conn, n)
	start := time.Now()
	rn.e.DialMany(rn.ctx, n, func(i int) *DialSpec {
		s := &DialSpec{URL: url, Proto: Native, Key: rn.keys.key(offset + i), Handler: h, Tag: offset + i}
		if channels != nil {
			s.Subscribe = channels(i)
		}
		return s
	}, func(i int, c *Conn, tm Timing, err error) {
		if err != nil {
			rn.connectErr(err)
			return
		}
		rn.hs.Record(int64(tm.Handshake))
		conns[i] = c
	})
	el := time.Since(start)
	ok := 0
	for _, c := range conns {
		if c != nil {
			ok++
		}
	}
	rn.r.Conns += ok
	if el > 0 {
		rn.r.HandshakesPerS = float64(ok) / el.Seconds()
	}
	return conns, el
}

// subHandler records deliveries of native messages.
type subHandler struct {
	rn *run
}

func (h *subHandler) OnPacket(c *Conn, p *packet.ServerPacket, now int64) {
	if p.ID == packet.PacketMessage {
		h.rn.del.Add(&c.Tracker, p.Payload, now)
	}
}
func (h *subHandler) OnText(*Conn, []byte, int64)  {}
func (h *subHandler) OnClose(c *Conn, code uint16) { h.rn.unexpectedClose(c, code) }

// waitDeliveries waits until want deliveries arrived, the timeout passed,
// or nothing arrived for a sixth of the timeout (at least 5 s: a loaded
// cluster may pause a receiver that long without losing anything).
func (rn *run) waitDeliveries(want uint64) {
	deadline := time.Now().Add(rn.p.Timeout)
	stall := max(5*time.Second, rn.p.Timeout/6)
	last, lastChange := rn.del.Delivered(), time.Now()
	for rn.del.Delivered() < want && time.Now().Before(deadline) && rn.ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		if d := rn.del.Delivered(); d != last {
			last, lastChange = d, time.Now()
		} else if time.Since(lastChange) > stall {
			return
		}
	}
}

// fillDeliveries copies the delivery figures; firstPub is the first
// publish's time.
func (rn *run) fillDeliveries(expected uint64, firstPub time.Time) {
	r := rn.r
	c := rn.del.Counts()
	r.Expected = expected
	r.Delivered = c.Delivered
	r.Duplicates = c.Duplicates
	r.Reordered = c.Reordered
	if expected > c.Distinct {
		r.Lost = expected - c.Distinct
	}
	if last := rn.del.Last(); last > 0 {
		if d := time.Duration(last - firstPub.UnixNano()); d > 0 {
			r.DeliveriesPS = float64(c.Delivered) / d.Seconds()
		}
	}
	r.Latency = rn.del.Latency.Summary()
	if m := rn.del.Malformed(); m > 0 {
		rn.extra("malformed_payloads", m)
	}
}

func (rn *run) extra(k string, v any) {
	if rn.r.Extra == nil {
		rn.r.Extra = map[string]any{}
	}
	rn.r.Extra[k] = v
}

// publisher sends publishes on one connection.
type publisher struct {
	c    *Conn
	id   uint32
	seqs map[string]uint64
	buf  []byte
}

func (p *publisher) publish(channel string, size int) error {
	seq := p.seqs[channel]
	p.seqs[channel] = seq + 1
	p.buf = AppendPayload(p.buf[:0], p.id, seq, time.Now(), size)
	return p.c.SendBinary(packet.AppendPublish(nil, channel, p.buf))
}

// pace sleeps so that the i-th event of a rate-per-second stream started
// at start does not run early.
func pace(start time.Time, i int, rate float64) {
	if rate <= 0 {
		return
	}
	if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
		time.Sleep(d)
	}
}

// Idle connects Conns clients (auth only), holds them for Duration with
// the 25 s pinger running, then checks every one answers a Ping.
func Idle(ctx context.Context, t Target, p Params) *Result {
	rn, err := begin(ctx, "idle", t, p)
	if err != nil {
		return rn.finish(err)
	}
	h := &pingHandler{rn: rn}
	conns, _ := rn.dialAll(rn.t.WSURL, rn.p.Conns, h, nil, 0)
	select {
	case <-time.After(rn.p.Duration):
	case <-ctx.Done():
	}
	live := pingRound(rn, h, conns, rn.p.Timeout)
	rn.extra("answered_final_ping", live)
	return rn.finish(nil)
}

type pingHandler struct {
	rn    *run
	pongs atomic.Int64
}

func (h *pingHandler) OnPacket(_ *Conn, p *packet.ServerPacket, _ int64) {
	if p.ID == packet.PacketPong {
		h.pongs.Add(1)
	}
}
func (h *pingHandler) OnText(*Conn, []byte, int64)  {}
func (h *pingHandler) OnClose(c *Conn, code uint16) { h.rn.unexpectedClose(c, code) }

// pingRound pings every live connection once and waits for the Pongs; it
// returns how many answered.
func pingRound(rn *run, h *pingHandler, conns []*Conn, timeout time.Duration) int {
	base := h.pongs.Load()
	sent := 0
	for _, c := range conns {
		if c != nil && !c.Closed() {
			if c.Ping() == nil {
				sent++
			}
		}
	}
	deadline := time.Now().Add(timeout)
	for h.pongs.Load()-base < int64(sent) && time.Now().Before(deadline) && rn.ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	return int(h.pongs.Load() - base)
}

// Handshake opens Conns connections as fast as the in-flight bound allows
// (TCP, upgrade, hello, auth until Pong) and reports completions per
// second, then closes them.
func Handshake(ctx context.Context, t Target, p Params) *Result {
	p.Engine.DialRate = 0
	rn, err := begin(ctx, "handshake", t, p)
	if err != nil {
		return rn.finish(err)
	}
	rn.dialAll(rn.t.WSURL, rn.p.Conns, &pingHandler{rn: rn}, nil, 0)
	return rn.finish(nil)
}

// PingRTT connects Conns clients and runs Pings rounds: every connection
// sends a protocol Ping, and the next round starts when every Pong is
// back. The round trip of each Ping is recorded.
func PingRTT(ctx context.Context, t Target, p Params) *Result {
	rn, err := begin(ctx, "ping", t, p)
	if err != nil {
		return rn.finish(err)
	}
	h := &pingHandler{rn: rn}
	conns, _ := rn.dialAll(rn.t.WSURL, rn.p.Conns, h, nil, 0)
	start := time.Now()
	total := 0
	for range rn.p.Pings {
		total += pingRound(rn, h, conns, 10*time.Second)
	}
	if el := time.Since(start); el > 0 {
		rn.r.PingsPerS = float64(total) / el.Seconds()
	}
	rn.extra("pongs", total)
	return rn.finish(nil)
}

func cmpStr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// DefaultPacedRate is FanoutPaced's publish rate when Params gives none.
const DefaultPacedRate = 10

// FanoutPaced is Fanout at a steady publish rate (PublishRate, default
// DefaultPacedRate per second): the publish-to-delivery latency of a
// server that keeps up, where back-to-back publishing measures throughput
// and queueing.
func FanoutPaced(ctx context.Context, t Target, p Params) *Result {
	if p.PublishRate == 0 {
		p.PublishRate = DefaultPacedRate
	}
	r := Fanout(ctx, t, p)
	r.Scenario = "fanout-paced"
	return r
}

// Fanout subscribes Subs clients to one channel (waiting for every
// Subscribed), then one publisher connection sends Publishes payloads of
// PayloadSize bytes back to back (or at PublishRate) and every delivery
// is checked and timed.
func Fanout(ctx context.Context, t Target, p Params) *Result {
	rn, err := begin(ctx, "fanout", t, p)
	if err != nil {
		return rn.finish(err)
	}
	channel := cmpStr(rn.p.Channel, "bench.fanout")
	subs, _ := rn.dialAll(rn.t.WSURL, rn.p.Subs, &subHandler{rn: rn}, func(int) []string { return []string{channel} }, 0)
	n := rn.r.Conns
	pc, _, err := rn.e.Dial(ctx, &DialSpec{URL: t.WSURL, Proto: Native, Key: rn.keys.key(-1), Handler: &pingHandler{rn: rn}})
	if err != nil {
		return rn.finish(fmt.Errorf("publisher: %w", err))
	}
	_ = subs
	rn.barrier("connected")
	pub := &publisher{c: pc, seqs: map[string]uint64{}}
	if !rn.p.PublishAt.IsZero() { // several load processes publish together
		select {
		case <-time.After(time.Until(rn.p.PublishAt)):
		case <-ctx.Done():
		}
	}
	start := time.Now()
	for i := range rn.p.Publishes {
		pace(start, i, rn.p.PublishRate)
		if err := pub.publish(channel, rn.p.PayloadSize); err != nil {
			return rn.finish(err)
		}
	}
	if el := time.Since(start); el > 0 {
		rn.r.OfferedPerS = float64(rn.p.Publishes) / el.Seconds()
	}
	rn.r.Publishes = uint64(rn.p.Publishes)
	want := uint64(n) * uint64(rn.p.Publishes)
	rn.waitDeliveries(want)
	rn.fillDeliveries(want, start)
	rn.barrier("delivered")
	return rn.finish(nil)
}

// barrier calls Params.Barrier, if any.
func (rn *run) barrier(stage string) {
	if rn.p.Barrier != nil {
		rn.r.Seconds = time.Since(rn.start).Seconds()
		rn.p.Barrier(stage, rn.r)
	}
}

// ManyChannels subscribes SubsPerChannel clients to each of Channels
// channels; Publishers connections each send Publishes payloads, round
// robin over the channels, concurrently.
func ManyChannels(ctx context.Context, t Target, p Params) *Result {
	rn, err := begin(ctx, "channels", t, p)
	if err != nil {
		return rn.finish(err)
	}
	return rn.finish(rn.channels(t.WSURL, t.WSURL, nil))
}

// channels is the body of ManyChannels with the subscribers on subURL and
// the publishers on pubURL (another node: every delivery crosses the
// broker). measure, if set, is called just before the first publish. The
// Error packets the publishers get (refused publishes) are counted in
// Extra["refused_publishes"].
func (rn *run) channels(subURL, pubURL string, measure func()) error {
	chName := func(i int) string { return "bench.ch." + strconv.Itoa(i) }
	nsub := rn.p.Channels * rn.p.SubsPerChannel
	subs, _ := rn.dialAll(subURL, nsub, &subHandler{rn: rn}, func(i int) []string { return []string{chName(i % rn.p.Channels)} }, 0)
	perChannel := make([]uint64, rn.p.Channels)
	for i, c := range subs {
		if c != nil {
			perChannel[i%rn.p.Channels]++
		}
	}
	pubs := make([]*publisher, rn.p.Publishers)
	ec := &errCounter{rn: rn}
	for i := range pubs {
		c, _, err := rn.e.Dial(rn.ctx, &DialSpec{URL: pubURL, Proto: Native, Key: rn.keys.key(-1 - i), Handler: ec})
		if err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
		pubs[i] = &publisher{c: c, id: uint32(i), seqs: map[string]uint64{}}
	}
	var want uint64
	for pi := range pubs {
		for k := range rn.p.Publishes {
			want += perChannel[(pi+k)%rn.p.Channels]
		}
	}
	if measure != nil {
		measure()
	}
	start := time.Now()
	var wg sync.WaitGroup
	var perr atomic.Value
	for pi, pub := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range rn.p.Publishes {
				pace(start, k, rn.p.PublishRate)
				if err := pub.publish(chName((pi+k)%rn.p.Channels), rn.p.PayloadSize); err != nil {
					perr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if el := time.Since(start); el > 0 {
		rn.r.OfferedPerS = float64(rn.p.Publishes*len(pubs)) / el.Seconds()
	}
	rn.r.Publishes = uint64(rn.p.Publishes * len(pubs))
	rn.waitDeliveries(want)
	rn.fillDeliveries(want, start)
	rn.extra("refused_publishes", ec.n.Load())
	if f, ok := ec.first.Load().(string); ok {
		rn.extra("first_refusal", f)
	}
	e, _ := perr.Load().(error)
	return e
}

// churnHandler counts the deliveries of short-lived connections apart:
// they join mid-stream, so only duplicates and reorderings are checked.
type churnHandler struct {
	rn   *run
	del  Deliveries
	done atomic.Int64
}

func (h *churnHandler) OnPacket(c *Conn, p *packet.ServerPacket, now int64) {
	if p.ID == packet.PacketMessage {
		h.del.Add(&c.Tracker, p.Payload, now)
	}
}
func (h *churnHandler) OnText(*Conn, []byte, int64) {}
func (h *churnHandler) OnClose(c *Conn, code uint16) {
	h.done.Add(1)
	h.rn.unexpectedClose(c, code)
}

// Churn keeps Subs/10 (at least 100) stable subscribers and one publisher
// sending PublishRate (default 200/s) payloads on a channel for Duration,
// while new connections arrive at ChurnRate per second, subscribe to the
// same channel, live ChurnLifetime and close cleanly. The stable
// subscribers must see every publish exactly once, in order.
func Churn(ctx context.Context, t Target, p Params) *Result {
	if p.PublishRate == 0 {
		p.PublishRate = 200
	}
	rn, err := begin(ctx, "churn", t, p)
	if err != nil {
		return rn.finish(err)
	}
	const ch = "bench.churn"
	stable := max(rn.p.Subs/10, 100)
	rn.dialAll(rn.t.WSURL, stable, &subHandler{rn: rn}, func(int) []string { return []string{ch} }, 0)
	nStable := uint64(rn.r.Conns)
	pc, _, err := rn.e.Dial(ctx, &DialSpec{URL: t.WSURL, Proto: Native, Key: rn.keys.key(-1), Handler: &pingHandler{rn: rn}})
	if err != nil {
		return rn.finish(fmt.Errorf("publisher: %w", err))
	}
	pub := &publisher{c: pc, seqs: map[string]uint64{}}
	cctx, cancel := context.WithTimeout(ctx, rn.p.Duration)
	defer cancel()
	start := time.Now()
	var published atomic.Int64
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for i := 0; cctx.Err() == nil; i++ {
			pace(start, i, rn.p.PublishRate)
			if pub.publish(ch, rn.p.PayloadSize) != nil {
				return
			}
			published.Add(1)
		}
	}()
	// Churn: paced dials, each connection closes after its lifetime.
	ch2 := &churnHandler{rn: rn}
	var hs Histogram
	var opened, failed atomic.Int64
	n := int(rn.p.ChurnRate * rn.p.Duration.Seconds())
	var wg sync.WaitGroup
	sem := make(chan struct{}, rn.e.cfg.MaxInFlight)
	for i := 0; i < n && cctx.Err() == nil; i++ {
		pace(start, i, rn.p.ChurnRate)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// In-flight dials finish after the window: the parent context.
			c, tm, err := rn.e.dial(ctx, &DialSpec{URL: t.WSURL, Proto: Native, Key: rn.keys.key(stable + i),
				Subscribe: []string{ch}, Handler: ch2})
			if err != nil {
				failed.Add(1)
				rn.connectErr(err)
				return
			}
			opened.Add(1)
			hs.Record(int64(tm.Handshake))
			time.AfterFunc(rn.p.ChurnLifetime, c.Close)
		}()
	}
	wg.Wait()
	<-cctx.Done()
	pwg.Wait()
	el := time.Since(start)
	rn.r.Publishes = uint64(published.Load())
	rn.r.OfferedPerS = float64(published.Load()) / el.Seconds()
	want := nStable * uint64(published.Load())
	rn.waitDeliveries(want)
	rn.fillDeliveries(want, start)
	// Wait for the churned connections to finish closing.
	deadline := time.Now().Add(rn.p.ChurnLifetime + 3*time.Second)
	for ch2.done.Load() < opened.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cc := ch2.del.Counts()
	rn.r.Duplicates += cc.Duplicates
	rn.r.Reordered += cc.Reordered
	rn.extra("churn_opened", opened.Load())
	rn.extra("churn_failed", failed.Load())
	rn.extra("churn_closed", ch2.done.Load())
	rn.extra("churn_handshakes_per_s", float64(opened.Load())/el.Seconds())
	rn.extra("churn_handshake_latency", hs.Summary())
	rn.extra("churn_deliveries", cc.Delivered)
	rn.extra("stable_subscribers", nStable)
	rn.r.HandshakesPerS = float64(opened.Load()) / el.Seconds()
	rn.r.Handshake = hs.Summary()
	res := rn.finish(nil)
	// Memory per connection refers to the stable set only.
	return res
}

// SortedNames returns the scenario names in suite order, then any others.
func SortedNames() []string {
	out := append([]string(nil), Order...)
	var extra []string
	for k := range Scenarios {
		found := false
		for _, o := range Order {
			found = found || o == k
		}
		if !found {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}
