// Package loadgen is the benchmark client engine and its scenarios. The
// engine speaks the gateway's native protocol (and the text protocols of
// its JSON adapters) the way a real client does: masked frames, the
// server's hello, the auth message, a protocol Ping every 25 s. The
// WebSocket handshake is done by hand on a blocking socket by a bounded
// pool of dialling goroutines; the socket is then enrolled in a gnet
// client (which dups the fd and closes the original) so that every
// established connection is served by the event loops with no goroutine
// of its own. Per-connection state is the small Conn struct.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsgateway/gateway/packet"
)

// Config configures an Engine; zero values mean the defaults.
type Config struct {
	// SourceIPs is how many loopback source addresses dials rotate over
	// (127.0.0.FirstSourceIP ... ): each gives its own 28k ephemeral ports
	// towards one server address. Default 50.
	SourceIPs int
	// FirstSourceIP is the last octet of the first source address
	// (default 2). Several load processes use distinct ranges.
	FirstSourceIP int
	// SourceNet is the /16 of the source addresses, "127.0" by default
	// (127.0.0.0/8 is all loopback: "127.1" gives 127.1.0.x).
	SourceNet string
	// MaxInFlight bounds handshakes in progress (default 500, at most
	// somaxconn/2 of a default kernel).
	MaxInFlight int
	// DialRate paces dials (per second); 0 means no pacing beyond
	// MaxInFlight.
	DialRate float64
	// PingInterval is the protocol Ping period of native connections
	// (default 25 s); negative disables the pinger.
	PingInterval time.Duration
	// HandshakeTimeout bounds TCP connect + upgrade + auth (default 10 s).
	HandshakeTimeout time.Duration
	// EventLoops of the gnet client (default GOMAXPROCS).
	EventLoops int
}

func (c *Config) defaults() {
	if c.SourceIPs <= 0 {
		c.SourceIPs = 50
	}
	if c.FirstSourceIP <= 0 {
		c.FirstSourceIP = 2
	}
	if c.SourceNet == "" {
		c.SourceNet = "127.0"
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 500
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
}

// Handler receives a connection's traffic once it is set up. Methods run
// on event loops (or on the dialling goroutine for bytes that arrived with
// the handshake): they must not block and must be safe for concurrent use
// across connections. Each connection's calls are serialised.
type Handler interface {
	// OnPacket is called for each packet of native binary messages.
	OnPacket(c *Conn, p *packet.ServerPacket, now int64)
	// OnText is called for each text message (JSON adapters).
	OnText(c *Conn, msg []byte, now int64)
	// OnClose is called once when the connection ends; code is the
	// server's close code, or 1006 without a close frame.
	OnClose(c *Conn, code uint16)
}

// NopHandler ignores everything; embed it to implement only some methods.
type NopHandler struct{}

// OnPacket implements Handler.
func (NopHandler) OnPacket(*Conn, *packet.ServerPacket, int64) {}

// OnText implements Handler.
func (NopHandler) OnText(*Conn, []byte, int64) {}

// OnClose implements Handler.
func (NopHandler) OnClose(*Conn, uint16) {}

// From is one SubscribeFrom: a channel and the position after which the
// client wants every publication (0, 0: none, only the position now).
type From struct {
	Channel       string
	Epoch, Offset int64
}

// Proto selects what a connection speaks.
type Proto int

const (
	// Native: binary messages of packets, the hello and auth message.
	Native Proto = iota
	// Text: JSON text messages (wsify, KOsync).
	Text
)

// DialSpec describes one connection.
type DialSpec struct {
	// URL is ws://host:port/path.
	URL string
	// Proto: Native or Text.
	Proto Proto
	// Key is the raw access key of a native connection.
	Key []byte
	// Subscribe lists native channels subscribed during set-up (one
	// message); Dial returns once every Subscribed came back.
	Subscribe []string
	// SubscribeFrom lists native channels subscribed with recovery
	// (PROTOCOL.md §5.1) in the same message; Dial returns once every
	// SubscribedFrom came back. The replayed Publications and the
	// SubscribedFrom itself reach Handler, during set-up too.
	SubscribeFrom []From
	// BusyRetries is how often a SubscribeFrom refused with Error 503 (a
	// node past its bound of history reads under way: "try again") is sent
	// again during set-up, after a jittered 20-100 ms; zero: not retried,
	// the Error fails the dial.
	BusyRetries int
	// TextSetup are text messages sent after the upgrade (Text).
	TextSetup [][]byte
	// TextReady, if set, is given each text message during set-up; set-up
	// ends when it returns true. Without it set-up ends after the upgrade.
	TextReady func(msg []byte) bool
	// Handler receives the traffic after set-up.
	Handler Handler
	// Tag is for the caller.
	Tag int
}

// Timing is how long each step of a dial took.
type Timing struct {
	Connect   time.Duration // TCP connect
	Upgrade   time.Duration // request to 101
	Auth      time.Duration // 101 to authenticated (native) or ready
	Handshake time.Duration // total, until Dial returns
	Retries   int           // SubscribeFrom sent again after Error 503 (BusyRetries)
}

// Engine holds connections on a gnet client.
type Engine struct {
	cfg    Config
	cli    *gnet.Client
	sem    chan struct{}
	pace   sync.Mutex
	next   time.Time
	srcIdx atomic.Uint32

	live     atomic.Int64
	closed   atomic.Int64
	regMu    sync.Mutex
	registry map[*Conn]struct{}

	// RTT records the round trip of every protocol Ping sent by Conn.Ping
	// (the periodic pinger's included).
	RTT Histogram

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Conn is one client connection.
type Conn struct {
	e    *Engine
	spec *DialSpec
	gc   atomic.Pointer[gnetConn]
	nc   net.Conn // during set-up only

	// parser state
	frag     []byte
	fragOp   byte
	fragging bool
	carry    []byte

	// set-up state (dialling goroutine only)
	phase      int
	pendingSub int
	retries    int // BusyRetries used
	setupErr   error

	closeSent  atomic.Bool
	closed     atomic.Bool
	closeCode  uint16
	closeErr   error // what ended the socket, from gnet's OnClose
	pingAt     atomic.Int64
	lastPingTx atomic.Int64

	// Tracker checks this connection's deliveries (used on its loop).
	Tracker SeqTracker
	// User is for the caller.
	User any
}

type gnetConn struct{ gnet.Conn }

// NewEngine starts a gnet client.
func NewEngine(cfg Config) (*Engine, error) {
	cfg.defaults()
	e := &Engine{cfg: cfg, sem: make(chan struct{}, cfg.MaxInFlight), registry: map[*Conn]struct{}{}, stop: make(chan struct{})}
	opts := []gnet.Option{gnet.WithMulticore(true), gnet.WithLogger(quietLogger{}), gnet.WithTCPNoDelay(gnet.TCPNoDelay)}
	if cfg.EventLoops > 0 {
		opts = append(opts, gnet.WithNumEventLoop(cfg.EventLoops))
	}
	cli, err := gnet.NewClient(&engineHandler{e: e}, opts...)
	if err != nil {
		return nil, err
	}
	if err := cli.Start(); err != nil {
		return nil, err
	}
	e.cli = cli
	if cfg.PingInterval > 0 {
		e.wg.Add(1)
		go e.pinger()
	}
	return e, nil
}

// Live is the number of established (enrolled, not closed) connections.
func (e *Engine) Live() int { return int(e.live.Load()) }

// Close closes every connection and stops the event loops.
func (e *Engine) Close() error {
	var err error
	e.stopOnce.Do(func() {
		close(e.stop)
		e.wg.Wait()
		err = e.cli.Stop()
	})
	return err
}

// CloseAll starts a clean close (1000) of every connection and waits up
// to timeout for them to end.
func (e *Engine) CloseAll(timeout time.Duration) {
	for _, c := range e.snapshot() {
		c.Close()
	}
	deadline := time.Now().Add(timeout)
	for e.Live() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *Engine) snapshot() []*Conn {
	e.regMu.Lock()
	defer e.regMu.Unlock()
	out := make([]*Conn, 0, len(e.registry))
	for c := range e.registry {
		out = append(out, c)
	}
	return out
}

// pinger sends a protocol Ping on every native connection every
// PingInterval: one goroutine walks the connections once a second.
func (e *Engine) pinger() {
	defer e.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			limit := now.Add(-e.cfg.PingInterval).UnixNano()
			for _, c := range e.snapshot() {
				if c.spec.Proto == Native && c.lastPingTx.Load() < limit {
					c.Ping()
				}
			}
		}
	}
}

// pacing: wait for a dial slot.
func (e *Engine) waitSlot(ctx context.Context) error {
	if e.cfg.DialRate <= 0 {
		return ctx.Err()
	}
	interval := time.Duration(float64(time.Second) / e.cfg.DialRate)
	e.pace.Lock()
	now := time.Now()
	slot := e.next
	if slot.Before(now) {
		slot = now
	}
	e.next = slot.Add(interval)
	e.pace.Unlock()
	if d := time.Until(slot); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (e *Engine) dialer(host string) *net.Dialer {
	// No TCP keepalive (Go's dialer turns it on, 15 s): the protocol Ping
	// keeps the connection alive, and the probes of many connections opened
	// together come in bursts that overflow the kernel's loopback input
	// queue (net.core.netdev_max_backlog) and get connections aborted.
	d := &net.Dialer{Timeout: e.cfg.HandshakeTimeout, KeepAlive: -1}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return d
	}
	i := int(e.srcIdx.Add(1)-1) % e.cfg.SourceIPs
	n := e.cfg.FirstSourceIP + i
	src := net.ParseIP(fmt.Sprintf("%s.%d.%d", e.cfg.SourceNet, n/256, n%256))
	if src == nil {
		return d
	}
	d.LocalAddr = &net.TCPAddr{IP: src}
	d.Control = func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}
	return d
}

// ErrClosed is a set-up that ended with a close frame.
type ErrClosed struct{ Code uint16 }

func (e ErrClosed) Error() string { return fmt.Sprintf("closed by server: %d", e.Code) }

// Dial opens one connection, paced and bounded by MaxInFlight: TCP,
// upgrade, then (native) hello, auth until Pong, subscriptions until
// Subscribed; then it is enrolled on the event loops.
func (e *Engine) Dial(ctx context.Context, spec *DialSpec) (*Conn, Timing, error) {
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, Timing{}, ctx.Err()
	}
	defer func() { <-e.sem }()
	if err := e.waitSlot(ctx); err != nil {
		return nil, Timing{}, err
	}
	return e.dial(ctx, spec)
}

// DialMany dials n connections with at most MaxInFlight goroutines; spec
// gives the i-th spec and done (called concurrently) its outcome.
func (e *Engine) DialMany(ctx context.Context, n int, spec func(i int) *DialSpec, done func(i int, c *Conn, t Timing, err error)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, e.cfg.MaxInFlight) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, t, err := e.Dial(ctx, spec(i))
				done(i, c, t, err)
			}
		}()
	}
	wg.Wait()
}

var wsGUID = []byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11")

func (e *Engine) dial(ctx context.Context, spec *DialSpec) (*Conn, Timing, error) {
	var tm Timing
	u, err := url.Parse(spec.URL)
	if err != nil {
		return nil, tm, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, e.cfg.HandshakeTimeout)
	defer cancel()
	nc, err := e.dialer(u.Hostname()).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, tm, fmt.Errorf("connect: %w", err)
	}
	tm.Connect = time.Since(start)
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		_ = nc.SetDeadline(dl)
	}
	var keyRaw [16]byte
	_, _ = rand.Read(keyRaw[:])
	key := base64.StdEncoding.EncodeToString(keyRaw[:])
	path := u.RequestURI()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " +
		key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	upStart := time.Now()
	if _, err := nc.Write([]byte(req)); err != nil {
		return nil, tm, fmt.Errorf("upgrade request: %w", err)
	}
	br := bufio.NewReaderSize(nc, 4096)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, tm, fmt.Errorf("upgrade response: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 101")) {
		return nil, tm, fmt.Errorf("upgrade refused: %q", strings.TrimSpace(string(line)))
	}
	h := sha1.New()
	h.Write([]byte(key))
	h.Write(wsGUID)
	wantAccept := base64.StdEncoding.EncodeToString(h.Sum(nil))
	accepted := false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return nil, tm, fmt.Errorf("upgrade response head: %w", err)
		}
		l := bytes.TrimSpace(line)
		if len(l) == 0 {
			break
		}
		name, value, found := bytes.Cut(l, []byte(":"))
		if found && strings.EqualFold(string(bytes.TrimSpace(name)), "Sec-WebSocket-Accept") &&
			string(bytes.TrimSpace(value)) == wantAccept {
			accepted = true
		}
	}
	if !accepted {
		return nil, tm, errors.New("upgrade: missing or wrong Sec-WebSocket-Accept")
	}
	tm.Upgrade = time.Since(upStart)
	authStart := time.Now()

	c := &Conn{e: e, spec: spec, nc: nc}
	if spec.Proto == Text {
		for _, m := range spec.TextSetup {
			if err := c.send(opText, m); err != nil {
				return nil, tm, err
			}
		}
		if spec.TextReady == nil {
			c.phase = phaseLive
		} else {
			c.phase = phaseTextWait
		}
	} else {
		c.phase = phaseHello
	}
	// Read until set-up is complete. Bytes after the 101 head are already
	// in br (the hello travels in the same TCP segment): read through br
	// and keep whatever remains for the event loop.
	buf := make([]byte, 0, 512)
	tmp := make([]byte, 4096)
	for c.phase != phaseLive {
		n, err := br.Read(tmp)
		if n > 0 {
			buf = append(buf, tmp[:n]...)
			k, _ := c.consume(buf, nil)
			buf = buf[:copy(buf, buf[k:])]
		}
		if c.setupErr != nil {
			return nil, tm, fmt.Errorf("set-up: %w", c.setupErr)
		}
		if c.closed.Load() {
			return nil, tm, ErrClosed{c.closeCode}
		}
		if err != nil && c.phase != phaseLive {
			return nil, tm, fmt.Errorf("set-up: %w", err)
		}
	}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		buf = append(buf, rest...)
	}
	if len(buf) > 0 {
		c.carry = append([]byte(nil), buf...)
	}
	tm.Auth = time.Since(authStart)
	_ = nc.SetDeadline(time.Time{})
	if _, err := e.cli.EnrollContext(nc, c); err != nil { // dups the fd, closes nc
		ok = true
		return nil, tm, fmt.Errorf("enroll: %w", err)
	}
	ok = true
	c.nc = nil
	tm.Handshake = time.Since(start)
	tm.Retries = c.retries
	return c, tm, nil
}

const (
	phaseHello = iota
	phaseAuth
	phaseSubscribe
	phaseTextWait
	phaseLive
)

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// AppendMaskedFrame appends one final client frame (masked, as RFC 6455
// requires of clients) carrying payload.
func AppendMaskedFrame(dst []byte, op byte, payload []byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n < 1<<16:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], mrand.Uint32())
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= mask[i&3]
	}
	return dst
}

// send writes one frame: on the raw socket during set-up, through the
// event loop after.
func (c *Conn) send(op byte, payload []byte) error {
	frame := AppendMaskedFrame(make([]byte, 0, len(payload)+14), op, payload)
	if c.nc != nil {
		_, err := c.nc.Write(frame)
		return err
	}
	g := c.gc.Load()
	if g == nil {
		return errors.New("not connected")
	}
	return g.AsyncWrite(frame, nil)
}

// SendBinary sends one binary message (a sequence of packets).
func (c *Conn) SendBinary(msg []byte) error { return c.send(opBinary, msg) }

// SendText sends one text message.
func (c *Conn) SendText(msg []byte) error { return c.send(opText, msg) }

var pingMsg = packet.AppendPing(nil)

// Ping sends a protocol Ping; the Pong's round trip goes to Engine.RTT
// (only one Ping is timed at a time per connection).
func (c *Conn) Ping() error {
	now := time.Now().UnixNano()
	c.pingAt.CompareAndSwap(0, now)
	c.lastPingTx.Store(now)
	return c.send(opBinary, pingMsg)
}

// Close starts a clean close (1000); the connection ends when the server
// echoes it, or after 2 s.
func (c *Conn) Close() {
	if c.closed.Load() || !c.closeSent.CompareAndSwap(false, true) {
		return
	}
	_ = c.send(opClose, []byte{0x03, 0xe8})
	time.AfterFunc(2*time.Second, func() {
		if g := c.gc.Load(); g != nil && !c.closed.Load() {
			_ = g.Close()
		}
	})
}

// Closed reports whether the connection has ended.
func (c *Conn) Closed() bool { return c.closed.Load() }

// Spec is the connection's DialSpec.
func (c *Conn) Spec() *DialSpec { return c.spec }

// consume parses complete frames from buf and returns how many bytes it
// used; close reports that the connection must end. g is nil during
// set-up.
func (c *Conn) consume(buf []byte, g gnet.Conn) (used int, close bool) {
	now := time.Now().UnixNano()
	for {
		b := buf[used:]
		if len(b) < 2 {
			return
		}
		fin := b[0]&0x80 != 0
		op := b[0] & 0x0f
		if b[1]&0x80 != 0 {
			c.fail(errors.New("masked server frame"))
			return len(buf), true
		}
		n := uint64(b[1] & 0x7f)
		hl := 2
		switch n {
		case 126:
			if len(b) < 4 {
				return
			}
			n, hl = uint64(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			if len(b) < 10 {
				return
			}
			n, hl = binary.BigEndian.Uint64(b[2:10]), 10
		}
		if n > 1<<26 {
			c.fail(errors.New("server frame too large"))
			return len(buf), true
		}
		if uint64(len(b)-hl) < n {
			return
		}
		payload := b[hl : hl+int(n)]
		used += hl + int(n)
		switch op {
		case opPing:
			_ = c.sendCtl(g, opPong, payload)
		case opPong:
		case opClose:
			code := uint16(1005)
			if len(payload) >= 2 {
				code = binary.BigEndian.Uint16(payload)
			}
			c.closeCode = code
			if c.closeSent.CompareAndSwap(false, true) {
				_ = c.sendCtl(g, opClose, payload[:min(len(payload), 2)])
			}
			if g == nil {
				c.closed.Store(true)
			}
			return used, true
		case opCont:
			if !c.fragging {
				c.fail(errors.New("unexpected continuation"))
				return len(buf), true
			}
			c.frag = append(c.frag, payload...)
			if fin {
				c.fragging = false
				c.message(c.fragOp, c.frag, now)
				c.frag = c.frag[:0]
			}
		case opText, opBinary:
			if !fin {
				c.fragging, c.fragOp = true, op
				c.frag = append(c.frag[:0], payload...)
				continue
			}
			c.message(op, payload, now)
		default:
			c.fail(fmt.Errorf("opcode %d", op))
			return len(buf), true
		}
		if c.setupErr != nil {
			return used, true
		}
	}
}

func (c *Conn) sendCtl(g gnet.Conn, op byte, payload []byte) error {
	frame := AppendMaskedFrame(nil, op, payload)
	if g != nil {
		_, err := g.Write(frame)
		return err
	}
	if c.nc != nil {
		_, err := c.nc.Write(frame)
		return err
	}
	return nil
}

func (c *Conn) fail(err error) {
	if c.setupErr == nil {
		c.setupErr = err
	}
}

// message handles one complete data message.
func (c *Conn) message(op byte, msg []byte, now int64) {
	if op == opText {
		if c.phase == phaseTextWait {
			if c.spec.TextReady(msg) {
				c.phase = phaseLive
			}
			return
		}
		if c.spec.Handler != nil {
			c.spec.Handler.OnText(c, msg, now)
		}
		return
	}
	if c.phase == phaseHello {
		if !bytes.Equal(msg, packet.Hello) {
			c.fail(fmt.Errorf("expected hello, got % x", msg))
			return
		}
		c.phase = phaseAuth
		if err := c.send(opBinary, packet.AppendAuth(nil, packet.Version, c.spec.Key)); err != nil {
			c.fail(err)
		}
		return
	}
	d := packet.NewClientDecoder(msg)
	var p packet.ServerPacket
	for {
		ok, err := d.Next(&p)
		if err != nil {
			c.fail(err)
			return
		}
		if !ok {
			return
		}
		switch c.phase {
		case phaseAuth:
			if p.ID != packet.PacketPong {
				c.fail(fmt.Errorf("auth: unexpected packet %d", p.ID))
				return
			}
			c.lastPingTx.Store(now)
			if len(c.spec.Subscribe)+len(c.spec.SubscribeFrom) == 0 {
				c.phase = phaseLive
				continue
			}
			var m []byte
			for _, ch := range c.spec.Subscribe {
				m = packet.AppendSubscribe(m, ch)
			}
			for _, f := range c.spec.SubscribeFrom {
				m = packet.AppendSubscribeFrom(m, f.Channel, f.Epoch, f.Offset)
			}
			c.pendingSub = len(c.spec.Subscribe) + len(c.spec.SubscribeFrom)
			c.phase = phaseSubscribe
			if err := c.send(opBinary, m); err != nil {
				c.fail(err)
				return
			}
			continue
		case phaseSubscribe:
			switch p.ID {
			case packet.PacketSubscribed:
				c.pendingSub--
				if c.pendingSub == 0 {
					c.phase = phaseLive
				}
				continue
			case packet.PacketSubscribedFrom:
				// The handler hears it first: Dial may return at once.
				if c.spec.Handler != nil {
					c.spec.Handler.OnPacket(c, &p, now)
				}
				c.pendingSub--
				if c.pendingSub == 0 {
					c.phase = phaseLive
				}
				continue
			case packet.PacketError:
				if p.Code == 503 && c.retries < c.spec.BusyRetries && len(c.spec.SubscribeFrom) == 1 && len(c.spec.Subscribe) == 0 {
					// Set-up runs on the dialling goroutine: it may wait.
					c.retries++
					time.Sleep(time.Duration(20+mrand.IntN(80)) * time.Millisecond)
					f := c.spec.SubscribeFrom[0]
					if err := c.send(opBinary, packet.AppendSubscribeFrom(nil, f.Channel, f.Epoch, f.Offset)); err != nil {
						c.fail(err)
						return
					}
					continue
				}
				c.fail(fmt.Errorf("subscribe: error %d %s", p.Code, p.Text))
				return
			}
		}
		if p.ID == packet.PacketPong {
			if at := c.pingAt.Swap(0); at != 0 {
				c.e.RTT.Record(now - at)
			}
		}
		if c.spec.Handler != nil {
			c.spec.Handler.OnPacket(c, &p, now)
		}
	}
}

type engineHandler struct {
	gnet.BuiltinEventEngine
	e *Engine
}

func (h *engineHandler) OnOpen(g gnet.Conn) ([]byte, gnet.Action) {
	c := g.Context().(*Conn)
	c.gc.Store(&gnetConn{g})
	h.e.live.Add(1)
	h.e.regMu.Lock()
	h.e.registry[c] = struct{}{}
	h.e.regMu.Unlock()
	return nil, gnet.None
}

func (h *engineHandler) OnTraffic(g gnet.Conn) gnet.Action {
	c := g.Context().(*Conn)
	buf, _ := g.Peek(-1)
	if len(c.carry) > 0 {
		all := append(c.carry, buf...)
		_, _ = g.Discard(len(buf))
		n, cl := c.consume(all, g)
		c.carry = append([]byte(nil), all[n:]...)
		if cl {
			return gnet.Close
		}
		return gnet.None
	}
	n, cl := c.consume(buf, g)
	_, _ = g.Discard(n)
	if cl {
		return gnet.Close
	}
	return gnet.None
}

func (h *engineHandler) OnClose(g gnet.Conn, err error) gnet.Action {
	c, _ := g.Context().(*Conn)
	if c == nil || c.closed.Swap(true) {
		return gnet.None
	}
	c.closeErr = err
	h.e.live.Add(-1)
	h.e.closed.Add(1)
	h.e.regMu.Lock()
	delete(h.e.registry, c)
	h.e.regMu.Unlock()
	code := c.closeCode
	if code == 0 {
		code = 1006
	}
	c.closeCode = code
	if c.spec.Handler != nil {
		c.spec.Handler.OnClose(c, code)
	}
	return gnet.None
}

// quietLogger drops gnet's informational logs.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(string, ...any)  {}
func (quietLogger) Errorf(format string, args ...any) {
	fmt.Printf("gnet: "+format+"\n", args...)
}
func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Printf("gnet fatal: "+format+"\n", args...)
}
