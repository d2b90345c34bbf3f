package gateway

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/session"
)

// Defaults of Options; a zero field means its default.
const (
	// DefaultListen is the main listener: WebSocket upgrades and plain HTTP.
	DefaultListen = ":8080"
	// DefaultHandshakeTimeout bounds TCP accept to authenticated: it closes
	// clients that dribble their request head or never authenticate.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxMessageSize caps a whole inbound message, fragments summed
	// (larger: close 1009).
	DefaultMaxMessageSize = 64 << 10
	// DefaultMaxOutbound is the byte budget of a connection's unsent
	// output; a consumer past it is closed with CloseSlowConsumer.
	DefaultMaxOutbound = 1 << 20
	// DefaultSocketSendBuffer is the kernel's send buffer per connection
	// (SO_SNDBUF; Linux doubles it for its bookkeeping). Left to the
	// kernel, it grows to tcp_wmem's maximum (4 MiB) for a client that does
	// not read, before MaxOutbound counts a byte: 500 such clients then hold
	// 2 GB of the kernel's TCP memory, past tcp_mem's pressure mark, and the
	// kernel starves every socket, fast readers too. 256 KiB still lets one
	// connection carry 256 KiB per round trip (25 MB/s at 10 ms).
	DefaultSocketSendBuffer = 256 << 10
	// DefaultDrainWindow spreads the 1001 closes of a shutdown, so that
	// clients do not all reconnect in the same second.
	DefaultDrainWindow = 10 * time.Second
	// DefaultShutdownTimeout bounds Shutdown as a whole: the drain, the
	// close handshakes, then the engine stops whatever is left.
	DefaultShutdownTimeout = 30 * time.Second
	// DefaultMaxLoopTasks bounds the deliveries queued or running on one
	// event loop. Past it, or past DefaultMaxLoopBytes, a loop that stalls
	// or cannot keep up drops the deliveries that reach it from the broker
	// (counted in gateway_dropped_messages_total{reason="loop_backlog"}),
	// and publishes made on this node are refused as busy (HTTP 503, native
	// Error 503).
	DefaultMaxLoopTasks = 64 << 10
	// DefaultMaxLoopBytes bounds the payload bytes of the deliveries queued
	// or running on one event loop: a stalled loop holds at most this much
	// of other people's messages.
	DefaultMaxLoopBytes = 64 << 20
	// DefaultMaxAuthorizing bounds the upgrade requests waiting for a
	// HeadAuthorizer (wsify's connect webhook) at once, server-wide. Each
	// holds a goroutine and an outgoing call; past the bound an upgrade is
	// answered 503 at once, without a call, so a flood of upgrade heads
	// cannot queue thousands of calls in front of real clients'. 1024 is
	// four times the connections wsify keeps to its authorizer (256): a
	// burst of clients waits a little in that queue, no more.
	DefaultMaxAuthorizing = 1024
	// minDrainRate is the slowest a node drains, in closes per second: a
	// node with few connections does not wait out the whole window.
	minDrainRate = 1000
)

// Close codes the gateway itself uses, whatever the protocol (RFC 6455
// 7.4.1).
const (
	// CloseProtocolError (1002): a frame broke RFC 6455, or a protocol's
	// message could not be parsed.
	CloseProtocolError uint16 = 1002
	// CloseUnsupportedData (1003): a text message where only binary is
	// spoken.
	CloseUnsupportedData uint16 = 1003
	// CloseInvalidPayload (1007): text that is not UTF-8.
	CloseInvalidPayload uint16 = 1007
	// CloseMessageTooBig (1009): a message over MaxMessageSize.
	CloseMessageTooBig uint16 = 1009
	// CloseInternalError (1011): the server failed.
	CloseInternalError uint16 = 1011
	// CloseGoingAway (1001): the server is shutting down; reconnect.
	CloseGoingAway uint16 = 1001
	// ClosePolicyViolation (1008): the connection broke a limit, such as
	// sending faster than Limits.MessageRate allows.
	ClosePolicyViolation uint16 = 1008
	// CloseSlowConsumer is the policy violation of a connection whose
	// unsent output passed its budget because the client reads too slowly.
	CloseSlowConsumer = ClosePolicyViolation
)

// closeGraceSeconds is how long a connection that was sent a close frame
// may take to answer before its TCP connection is dropped (1 to 2 s on the
// one-second wheel).
const closeGraceSeconds = 2

// Options configure a Server. Every zero value means the documented default.
type Options struct {
	// Listen is the main listener's address; zero means DefaultListen.
	Listen string
	// EventLoops is the number of gnet event loops; zero means one per CPU.
	EventLoops int
	// ReusePort sets SO_REUSEPORT so several gateway processes can share
	// the listen port; zero (false) means an exclusive bind.
	ReusePort bool
	// HandshakeTimeout: zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxMessageSize: zero means DefaultMaxMessageSize.
	MaxMessageSize int
	// MaxOutbound: zero means DefaultMaxOutbound.
	MaxOutbound int
	// SocketSendBuffer: zero means DefaultSocketSendBuffer; negative leaves
	// the kernel's autotuning on.
	SocketSendBuffer int
	// DrainWindow: zero means DefaultDrainWindow. Sessions are closed
	// evenly over it, at least minDrainRate (1000) per second.
	DrainWindow time.Duration
	// ShutdownTimeout: zero means DefaultShutdownTimeout; it is raised to
	// DrainWindow plus 5 s if shorter.
	ShutdownTimeout time.Duration
	// MaxLoopTasks: zero means DefaultMaxLoopTasks.
	MaxLoopTasks int
	// MaxLoopBytes: zero means DefaultMaxLoopBytes.
	MaxLoopBytes int
	// MaxAuthorizing caps the upgrade requests waiting for a
	// HeadAuthorizer at once; past it an upgrade is answered 503 with
	// Retry-After: 1, without the call. Zero means DefaultMaxAuthorizing.
	MaxAuthorizing int
	// Logger: zero means slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	o.Listen = cmp.Or(o.Listen, DefaultListen)
	o.EventLoops = cmp.Or(o.EventLoops, runtime.NumCPU())
	o.HandshakeTimeout = cmp.Or(o.HandshakeTimeout, DefaultHandshakeTimeout)
	o.MaxMessageSize = cmp.Or(o.MaxMessageSize, DefaultMaxMessageSize)
	o.MaxOutbound = cmp.Or(o.MaxOutbound, DefaultMaxOutbound)
	o.SocketSendBuffer = cmp.Or(o.SocketSendBuffer, DefaultSocketSendBuffer)
	o.DrainWindow = cmp.Or(o.DrainWindow, DefaultDrainWindow)
	o.MaxLoopTasks = cmp.Or(o.MaxLoopTasks, DefaultMaxLoopTasks)
	o.MaxLoopBytes = cmp.Or(o.MaxLoopBytes, DefaultMaxLoopBytes)
	o.MaxAuthorizing = cmp.Or(o.MaxAuthorizing, DefaultMaxAuthorizing)
	o.ShutdownTimeout = max(cmp.Or(o.ShutdownTimeout, DefaultShutdownTimeout), o.DrainWindow+5*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Server is the gateway's main listener: gnet event loops that upgrade
// WebSocket requests on the loop and hand plain HTTP to net/http.
type Server struct {
	opts      Options
	logger    *slog.Logger
	hub       *session.Hub
	routes    []*Route
	listeners []*listener // [0] is the main listener
	metrics   *metrics
	epoch     time.Time

	eng          gnet.Engine
	gate         *acceptGate // pauses and resumes accepting on errors (accept.go)
	httpErrorLog *log.Logger
	booted       chan struct{}
	stopped      chan error
	draining     atomic.Bool
	conns        atomic.Int64
	tag          uint32        // this server's part of every ConnID
	lastSeq      atomic.Uint64 // the last ConnID.Seq handed out
	authorizing  atomic.Int64  // HeadAuthorizer calls running (Options.MaxAuthorizing)

	loopsMu sync.Mutex
	loops   []*Loop

	limits *limiter // SetLimits; nil: no limits

	// policyLog writes the closes a client causes by misbehaving (slow
	// consumer, message rate), collapsed when they repeat.
	policyLog *ratelog.Logger
	// handOffLog writes the plain HTTP requests that could not be handed
	// to net/http (out of descriptors), collapsed when they repeat.
	handOffLog *ratelog.Logger
	// lifeLog writes the connection lifecycle at debug (connlog.go).
	lifeLog *ratelog.Logger
}

// New returns a server that delivers publishes through hub. Add routes and
// HTTP handlers before Start.
func New(opts Options, hub *session.Hub) *Server {
	opts.setDefaults()
	s := &Server{
		opts: opts, logger: opts.Logger, hub: hub,
		epoch: time.Now(), booted: make(chan struct{}), stopped: make(chan error, 1), tag: randomTag(),
		httpErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	s.metrics = newMetrics(s)
	hub.SetMaxPayload(s.maxPayload())
	// A replay larger than half the outbound budget would close its own
	// reader as a slow consumer; the hub answers recovered 0 instead.
	hub.SetMaxReplay(s.opts.MaxOutbound / 2)
	s.policyLog = ratelog.New(opts.Logger, slog.LevelInfo, 0)
	s.handOffLog = ratelog.New(opts.Logger, slog.LevelWarn, 0)
	s.lifeLog = ratelog.NewBurst(opts.Logger, slog.LevelDebug, 0, lifecycleBurst)
	s.gate = newAcceptGate(s.logger, s.metrics.acceptErrors)
	s.AddListener(MainListener, opts.Listen)
	return s
}

// maxPayload is the largest publish the node delivers: a client's message
// is at most MaxMessageSize, and a budget of MaxOutbound lets at least that
// much through to one reader. A larger payload (from an outside Redis
// publisher, say) is dropped by the hub: no reader's memory budget could
// hold it.
func (s *Server) maxPayload() int { return max(s.opts.MaxMessageSize, s.opts.MaxOutbound) }

// maxWrite is the largest write exempt from the outbound budget while in
// flight (see outbound.go): the largest payload, framed, with a batch of
// smaller ones before it in the same write.
func (s *Server) maxWrite() int { return s.maxPayload() + maxBatchSlack }

// maxBatchSlack is what may share one write with the largest payload: an
// outbox is written every 64 KiB (outboxChunk), and a protocol's batch of
// small messages stays under that too.
const maxBatchSlack = 128 << 10

// Hub returns the session hub the server delivers through.
func (s *Server) Hub() *session.Hub { return s.hub }

// Handle adds a WebSocket route. Call before Start.
func (s *Server) Handle(r Route) {
	idx := -1
	for _, old := range s.routes {
		if old.Protocol == r.Protocol {
			idx = old.index
		}
	}
	if idx < 0 {
		idx = len(s.protocols())
	}
	if idx >= maxProtocols {
		panic("gateway: too many protocols")
	}
	r.index = idx
	s.routes = append(s.routes, &r)
}

// HandleHTTP adds a net/http handler on the main listener for requests that
// do not upgrade. Call before Start.
func (s *Server) HandleHTTP(pattern string, h http.Handler) {
	s.HandleHTTPOn(MainListener, pattern, h)
}

// match returns the route of a request path on a listener, or nil.
func (s *Server) match(listenerName string, path []byte) *Route {
	for _, r := range s.routes {
		if r.Listener != listenerName {
			continue
		}
		if string(path) == r.Path || (r.Path[len(r.Path)-1] == '/' && bytes.HasPrefix(path, []byte(r.Path))) {
			return r
		}
	}
	return nil
}

// protocols returns the distinct protocols in index order.
func (s *Server) protocols() []Protocol {
	var ps []Protocol
	for _, r := range s.routes {
		if r.index == len(ps) {
			ps = append(ps, r.Protocol)
		}
	}
	return ps
}

// fallbackHTTP answers plain requests no handler took: 426 on WebSocket
// paths, else the listener's not-found handler or a JSON 404.
func (s *Server) fallbackHTTP(l *listener, w http.ResponseWriter, r *http.Request) {
	if s.match(l.name, []byte(r.URL.Path)) == nil && l.notFound != nil {
		l.notFound.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if s.match(l.name, []byte(r.URL.Path)) != nil {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusUpgradeRequired)
		fmt.Fprintln(w, `{"error":"this path speaks WebSocket: send an Upgrade request"}`)
		return
	}
	w.WriteHeader(http.StatusNotFound)
	fmt.Fprintln(w, `{"error":"not found"}`)
}

// Start binds the listener and runs the event loops; it returns once the
// server accepts connections.
func (s *Server) Start() error {
	if err := s.distinctAddrs(); err != nil {
		return err
	}
	if err := s.checkBindable(); err != nil {
		return err
	}
	if err := s.gate.start(); err != nil {
		return err
	}
	s.warnBudget()
	if err := s.hub.Start(); err != nil {
		s.gate.stop()
		return fmt.Errorf("start broker: %w", err)
	}
	opts := []gnet.Option{
		gnet.WithAcceptErrorHandler(s.gate.failed),
		// OnOpen keeps the peer's address in Conn.remote: gnet need not keep
		// its own copy for each connection's life (issue 15, memory).
		gnet.WithRemoteAddrInOpenOnly(true),
		gnet.WithNumEventLoop(s.opts.EventLoops),
		gnet.WithReusePort(s.opts.ReusePort),
		gnet.WithReuseAddr(true), // restart at once over the TIME_WAITs of the last run
		gnet.WithTicker(true),
		gnet.WithTCPKeepAlive(time.Minute),
		gnet.WithLogger(gnetLogger{s.logger}),
	}
	if s.opts.SocketSendBuffer > 0 { // accepted connections inherit it
		opts = append(opts, gnet.WithSocketSendBuffer(s.opts.SocketSendBuffer))
	}
	for attempt := 1; ; attempt++ {
		addrs := make([]string, len(s.listeners))
		for i, l := range s.listeners {
			addrs[i] = "tcp://" + l.addr
		}
		go func() { s.stopped <- gnet.Rotate(s, addrs, opts...) }()
		select {
		case <-s.booted:
			go s.releaseMemory() // until Shutdown
			return nil
		case err := <-s.stopped:
			if err == nil {
				err = errors.New("gnet stopped during start")
			}
			// A port picked for a second port-0 listener may be taken by
			// another process before gnet binds it; gnet then fails on
			// the closed descriptor. Pick again.
			if attempt < maxBindAttempts && bindRace(err) && s.repick() {
				s.logger.Warn("a picked port was taken before it was bound; picking again", "err", err)
				continue
			}
			s.gate.stop()
			return fmt.Errorf("listen %s: %w", strings.Join(addrs, " "), err)
		}
	}
}

// maxBindAttempts bounds the starts tried when picked ports were taken.
const maxBindAttempts = 3

// bindRace reports whether gnet failed to bind as it does when a port was
// taken under it (checkBindable's comment: the error names the closed
// descriptor, not the bind).
func bindRace(err error) bool {
	return errors.Is(err, syscall.EBADF) || errors.Is(err, syscall.EADDRINUSE) ||
		strings.Contains(err.Error(), "bad file descriptor") || strings.Contains(err.Error(), "address already in use")
}

// warnBudget says at start when the outbound budget is smaller than the
// largest message a client may send (and so be echoed): such a message
// still goes out whole to a reader that reads (outbound.go), but only two
// of them may be in flight at once, and what waits behind them is held to
// the budget, so a client streaming them back to back is closed sooner than
// the budget suggests.
func (s *Server) warnBudget() {
	if s.opts.MaxOutbound < s.opts.MaxMessageSize {
		s.logger.Warn("the outbound budget is smaller than the message size limit: messages larger than the budget "+
			"go out at most two at a time, and a connection with more queued behind them is closed as a slow consumer",
			"max_outbound", s.opts.MaxOutbound, "max_message_size", s.opts.MaxMessageSize)
	}
}

// Addr returns the main listener's address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ListenerAddr(MainListener) }

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Shutdown refuses new connections (Draining turns true, so /readyz answers
// 503), closes every session with 1001 and a reason, spread over the drain
// window, waits for them to go (at most ShutdownTimeout, or ctx), then stops
// the loops and the HTTP side.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.draining.Swap(true) {
		return errors.New("gateway: already shut down")
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.ShutdownTimeout)
	defer cancel()
	for _, l := range s.allLoops() {
		l.Run(l.shutdownFn, nil)
	}
	for s.conns.Load() > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer stopCancel()
	err := s.eng.Stop(stopCtx)
	<-s.stopped
	s.gate.stop()
	for _, l := range s.listeners {
		if l.ln != nil {
			l.ln.Close()
			_ = l.http.Shutdown(stopCtx)
		}
	}
	_ = s.hub.Close()
	return err
}

func (s *Server) allLoops() []*Loop {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	return s.loops
}

// loopFor returns the gateway state of a gnet loop, creating it the first
// time the loop opens a connection (gnet has no API that lists its loops).
func (s *Server) loopFor(el gnet.EventLoop) (*Loop, error) {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	for _, l := range s.loops {
		if l.el == el {
			return l, nil
		}
	}
	l := newLoop(s, el, len(s.loops))
	shard, err := s.hub.NewShard(l)
	if err != nil {
		return nil, err
	}
	l.shard = shard
	l.wheel.Advance(s.clock(), fireDeadline)
	s.loops = append(append([]*Loop(nil), s.loops...), l) // copy: allLoops readers keep theirs
	return l, nil
}

// OnBoot learns the bound addresses and starts the HTTP side.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	if err := s.bindAll(eng); err != nil {
		s.logger.Error("cannot start the listeners", "err", err)
		return gnet.Shutdown
	}
	close(s.booted)
	return gnet.None
}

// OnShutdown implements gnet.EventHandler.
func (s *Server) OnShutdown(gnet.Engine) {}

// OnOpen registers a new TCP connection and arms its handshake deadline.
// While draining, and while accepting is paused for a listener that has
// not failed yet (acceptGate.shed), it closes the connection at once.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if s.draining.Load() || s.gate.shed(gc.LocalAddr()) {
		return nil, gnet.Close
	}
	l, err := s.loopFor(gc.EventLoop())
	if err != nil {
		s.logger.Error("event loop", "err", err)
		return nil, gnet.Close
	}
	c := &Conn{gc: gc, loop: l, remote: addrPort(gc.RemoteAddr()), cold: &connCold{accept: s.sinceEpoch()},
		listener: s.listenerOf(gc.Fd()), seq: s.lastSeq.Add(1)}
	if r, ok := gc.Context().(*returnedConn); ok { // an upgrade net/http gave back
		c.cold.carry, c.ipHeld = r.carry, r.placeHeld
		_ = gc.Wake(nil) // OnTraffic reads the carried head
	}
	c.timer.Init(c)
	l.wheel.Set(&c.timer, s.secondsAfter(c.cold.accept+s.opts.HandshakeTimeout))
	gc.SetContext(c)
	s.conns.Add(1)
	s.metrics.accepted.Inc()
	if lim := s.limits; lim != nil && !c.ipHeld {
		var refusal []byte
		if c.ipHeld, refusal = lim.acceptIP(c.remote.Addr().Unmap()); refusal != nil {
			s.metrics.handshake(nil, resultOverLimit)
			c.logRefused("", refusedMaxConnsIP, http.StatusTooManyRequests)
			c.refuseAtAccept(refusal)
		}
	}
	return nil, gnet.None
}

// OnClose tells the connection's protocol it is gone.
func (s *Server) OnClose(gc gnet.Conn, _ error) gnet.Action {
	if c, ok := gc.Context().(*Conn); ok {
		c.closed()
		gc.SetContext(nil)
		s.conns.Add(-1)
	}
	return gnet.None
}

// OnTraffic consumes every complete unit the peer sent (gnet does not call
// again for bytes left behind) and writes the replies once.
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*Conn)
	if !ok {
		return gnet.Close
	}
	buf, _ := gc.Peek(-1)
	fresh := len(buf)
	carry := c.carried()
	if carry != nil {
		buf = append(carry, buf...)
	}
	l := c.loop
	c.lastActive = l.wheel.Now()
	l.cur = c
	n, action := c.guardedTraffic(buf)
	l.cur = nil
	if c.state == stateClosed { // closed from inside: gnet's buffers are gone
		l.out = l.out[:0]
		return gnet.None
	}
	if carry != nil {
		c.consumeCarried(buf, n, fresh)
	} else if n > 0 {
		_, _ = gc.Discard(n)
	}
	if len(l.out) > 0 {
		if c.state != stateOpen {
			c.sysWrite(l.out) // a close frame: no budget
		} else if !c.sendWithin(l.out) {
			c.slowConsumer()
		}
		l.out = l.reuse(l.out)
	}
	if action == gnet.None {
		c.halfClose()
	}
	return action
}

// guardedTraffic is traffic under a recover: a panic drops what the peer
// sent and fails the connection, and the loop goes on.
func (c *Conn) guardedTraffic(buf []byte) (n int, action gnet.Action) {
	defer func() {
		if v := recover(); v != nil {
			c.loop.srv.panicked(c, "traffic", v)
			n, action = len(buf), gnet.None
		}
	}()
	return c.traffic(buf)
}

// OnTick advances every loop's timing wheel once a second. It runs on its
// own goroutine, so it only queues tasks.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	for _, l := range s.allLoops() {
		l.queueTick()
	}
	return time.Second, gnet.None
}

// gnetLogger sends gnet's own log lines to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "from", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "from", "gnet") }
