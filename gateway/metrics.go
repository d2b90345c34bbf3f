package gateway

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/wsgateway/gateway/session"
)

// Handshake results, the closed set of the gateway_handshakes_total result
// label.
const (
	resultOK         = "ok"
	resultBadRequest = "bad_request"
	resultNotFound   = "not_found"
	resultRejected   = "rejected"
	resultTimeout    = "timeout"
	resultTooLarge   = "too_large"
	resultShutdown   = "shutdown"
	// resultAuthorizerBusy: Options.MaxAuthorizing upgrades were waiting
	// for a HeadAuthorizer already (503).
	resultAuthorizerBusy = "authorizer_busy"
)

// maxProtocols bounds the protocols one server registers; per-loop counters
// are arrays indexed by protocol.
const maxProtocols = 8

// metrics holds the server's Prometheus series. Children with fixed labels
// are resolved once; per-message counts live in per-loop atomics summed at
// scrape time, so the hot path never looks up a label.
type metrics struct {
	reg *prometheus.Registry

	accepted      prometheus.Counter
	httpHandOffs  prometheus.Counter
	slowConsumers prometheus.Counter
	panics        prometheus.Counter
	handshakes    *prometheus.CounterVec
	handshakeDur  *prometheus.HistogramVec
	connections   *prometheus.GaugeVec
	disconnects   *prometheus.CounterVec
	acceptErrors  *prometheus.CounterVec
	// opDisconnectsLocal, opDisconnectsCluster: disconnect.go.
	opDisconnectsLocal, opDisconnectsCluster prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gateway_build_info", Help: "Always 1; labels say which build runs.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(Version, runtime.Version()).Set(1)
	f(build)
	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_connections_accepted_total", Help: "TCP connections accepted on the main listener.",
	})
	m.httpHandOffs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_http_handoffs_total", Help: "Plain HTTP requests handed from the event loops to net/http.",
	})
	m.slowConsumers = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_slow_consumer_disconnects_total", Help: "Connections closed because their outbound buffer passed its budget.",
	})
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_handler_panics_total", Help: "Protocol handler panics recovered (each closed its connection).",
	})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_handshakes_total", Help: "WebSocket handshakes by protocol and result.",
	}, []string{"protocol", "result"})
	m.handshakeDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "gateway_handshake_duration_seconds", Help: "From TCP accept to the 101 answer.",
		Buckets: prometheus.ExponentialBucketsRange(0.0005, 5, 12),
	}, []string{"protocol"})
	m.connections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gateway_connections", Help: "Upgraded WebSocket connections open now.",
	}, []string{"protocol"})
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_disconnects_total", Help: "Closed WebSocket connections by close code (known codes, else other) and who closed.",
	}, []string{"protocol", "code", "initiator"})
	m.acceptErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_accept_errors_total",
		Help: "Failed accepts of TCP connections, by reason (fd_limit: EMFILE, system_fd_limit: ENFILE, memory, other); each pauses accepting.",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{m.accepted, m.httpHandOffs, m.slowConsumers, m.panics, m.handshakes,
		m.handshakeDur, m.connections, m.disconnects, m.acceptErrors, &loopCollector{s}} {
		f(c)
	}
	m.newOperatorDisconnects()
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gateway_sessions", Help: "Authenticated sessions on this node.",
	}, func() float64 { return float64(s.hub.Sessions()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gateway_channels", Help: "Channels with at least one subscriber on this node.",
	}, func() float64 { return float64(s.hub.Channels()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gateway_accept_paused", Help: "1 while the node does not accept new connections because accept failed (see gateway_accept_errors_total), else 0.",
	}, func() float64 {
		if _, paused := s.AcceptPaused(); paused {
			return 1
		}
		return 0
	}))
	hs := s.hub.Stats()
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gateway_publishes_total", Help: "Publishes delivered to this node's subscribers (local and from other nodes).",
	}, func() float64 { return float64(hs.Publishes.Load()) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gateway_broadcast_loop_tasks_total", Help: "Deliveries handed to event loops: one per loop with subscribers per publish.",
	}, func() float64 { return float64(hs.LoopTasks.Load()) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gateway_broker_refusals_total", Help: "Publishes refused because the broker's queue or an event loop's task queue was full, or, on wsify's raw channels, because Redis did not take them or is known down.",
	}, func() float64 { return float64(hs.BrokerRefusals.Load()) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gateway_subscription_refusals_total",
		Help: "Subscribes refused because the connection held its cap (--max-subscriptions): native Error 429, wsify close 1008.",
	}, func() float64 { return float64(hs.SubscriptionRefusals.Load()) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gateway_recovery_gaps_total",
		Help: "Gaps found in the publications of SubscribeFrom subscribers (a delivery a busy loop dropped, an epoch that changed), each filled from the history or told to the session.",
	}, func() float64 { return float64(hs.RecoveryGaps.Load()) }))
	f(hubDropsCollector{hs})
	return m
}

// hubDropsCollector exports the hub's drops in the shape every collector of
// gateway_dropped_messages_total has: a constant protocol label ("any":
// the hub drops before any protocol sees the message) and a reason.
type hubDropsCollector struct{ hs *session.HubStats }

var descHubDrops = prometheus.NewDesc("gateway_dropped_messages_total", DroppedMessagesHelp,
	[]string{"reason"}, prometheus.Labels{"protocol": "any"})

func (hubDropsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descHubDrops }

func (c hubDropsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descHubDrops, prometheus.CounterValue, float64(c.hs.LoopDrops.Load()), "loop_backlog")
	ch <- prometheus.MustNewConstMetric(descHubDrops, prometheus.CounterValue, float64(c.hs.TooLarge.Load()), "too_large")
}

// DroppedMessagesHelp is the help text of gateway_dropped_messages_total.
// Every package that exports a collector of that name (each with its own
// constant protocol label, and a reason label) must use this exact text, or
// the registry refuses the second one.
const DroppedMessagesHelp = "Messages dropped instead of delivered, by protocol and reason."

// Registry is where protocols and brokers register their own series, on the
// admin listener's /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

func protocolName(p Protocol) string {
	if p == nil {
		return "none"
	}
	return p.Name()
}

func (m *metrics) handshake(p Protocol, result string) {
	m.handshakes.WithLabelValues(protocolName(p), result).Inc()
}

func (m *metrics) upgraded(p Protocol, d time.Duration) {
	m.handshake(p, resultOK)
	m.handshakeDur.WithLabelValues(p.Name()).Observe(d.Seconds())
	m.connections.WithLabelValues(p.Name()).Inc()
}

func (m *metrics) disconnect(p Protocol, code uint16, byPeer bool) {
	m.connections.WithLabelValues(p.Name()).Dec()
	initiator := "server"
	if byPeer {
		initiator = "client"
	}
	m.disconnects.WithLabelValues(p.Name(), closeCodeLabel(code), initiator).Inc()
}

// closeCodeLabel maps a close code to the bounded label set.
func closeCodeLabel(code uint16) string {
	switch {
	case code == 0:
		return "none"
	case code >= 1000 && code <= 1015, code >= 3000 && code <= 3009:
		return strconv.Itoa(int(code))
	}
	return "other"
}

// loopStats are one loop's per-protocol message counters: written by that
// loop only, read at scrape time.
type loopStats struct {
	p [maxProtocols]struct {
		msgsIn, bytesIn, msgsOut, bytesOut atomic.Uint64
	}
}

func (st *loopStats) countReceived(c *Conn, n int) {
	p := &st.p[c.route.index]
	p.msgsIn.Add(1)
	p.bytesIn.Add(uint64(n))
}

func (st *loopStats) countSent(c *Conn, n int) {
	p := &st.p[c.route.index]
	p.msgsOut.Add(1)
	p.bytesOut.Add(uint64(n))
}

// loopCollector sums the loops' counters when Prometheus scrapes.
type loopCollector struct{ s *Server }

var (
	descMsgsIn   = prometheus.NewDesc("gateway_messages_received_total", "WebSocket messages received, by protocol.", []string{"protocol"}, nil)
	descBytesIn  = prometheus.NewDesc("gateway_received_bytes_total", "Payload bytes of WebSocket messages received, by protocol.", []string{"protocol"}, nil)
	descMsgsOut  = prometheus.NewDesc("gateway_messages_sent_total", "WebSocket writes of messages (a batch counts once), by protocol.", []string{"protocol"}, nil)
	descBytesOut = prometheus.NewDesc("gateway_sent_bytes_total", "Bytes written in WebSocket messages, by protocol.", []string{"protocol"}, nil)
)

func (lc *loopCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMsgsIn
	ch <- descBytesIn
	ch <- descMsgsOut
	ch <- descBytesOut
}

func (lc *loopCollector) Collect(ch chan<- prometheus.Metric) {
	s := lc.s
	for i, p := range s.protocols() {
		var in, bin, out, bout uint64
		for _, l := range s.allLoops() {
			st := &l.stats.p[i]
			in, bin = in+st.msgsIn.Load(), bin+st.bytesIn.Load()
			out, bout = out+st.msgsOut.Load(), bout+st.bytesOut.Load()
		}
		name := p.Name()
		ch <- prometheus.MustNewConstMetric(descMsgsIn, prometheus.CounterValue, float64(in), name)
		ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(bin), name)
		ch <- prometheus.MustNewConstMetric(descMsgsOut, prometheus.CounterValue, float64(out), name)
		ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(bout), name)
	}
}
