package gateway

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsgateway/gateway/session"
)

// connState is where a connection stands; it only moves forward.
type connState uint8

const (
	// stateHandshake: reading the HTTP request head.
	stateHandshake connState = iota
	// stateOpen: upgraded; the protocol handler owns the messages.
	stateOpen
	// stateClosing: our close frame is out; waiting for the peer's close
	// frame or the close grace, reading and dropping everything else.
	stateClosing
	// stateClosed: the TCP connection is gone.
	stateClosed
)

// Conn is one client connection. It is not goroutine-safe: every method
// runs on the connection's event loop (in a Handler or session.Sink method,
// or a task queued with Loop.Run).
//
// gnet closes a connection synchronously inside a Write that fails
// (ECONNRESET, EPIPE): after any write the descriptor number may already
// belong to another connection. So whatever may run after a write touches
// the socket only through sysWrite, sysWritev, outbound, halfClose and
// closeNow, which do nothing once the connection is closed, and closed
// drops the gnet handle. The few other gnet calls (Peek, Discard, Wake, Dup
// in OnTraffic and the handshake) run only before any write of theirs, on
// a connection that OnTraffic or the upgrade found open.
type Conn struct {
	gc      gnet.Conn // nil once closed
	loop    *Loop
	handler Handler
	route   *Route
	timer   session.Timer[Conn]
	remote  netip.AddrPort
	seq     uint64 // ConnID.Seq (connid.go)
	// tat is the message rate's token bucket (GCRA: when the bucket is next
	// empty, in nanoseconds since the server's epoch).
	tat int64

	outbox []byte // frames queued during a batch of tasks; nil otherwise
	outRef []byte // or the one encoded frame queued, by reference
	// written counts the bytes handed to gnet's Write by sendWithin
	// (outbound.go).
	written uint64
	// cold holds what a connection needs only at times (connCold); nil
	// for an idle open connection.
	cold *connCold

	// lastActive is the wheel second of the last bytes from the peer.
	lastActive uint32
	closeCode  uint16 // the code sent or received, for metrics and the log

	// The one-byte fields last, together: Conn fills its size class
	// (TestHotStructSizes).
	state    connState
	discard  bool  // a framing error: no more frames can be parsed
	shutWR   bool  // half-close our side once the close frame is flushed
	byPeer   bool  // the peer started the close
	listener uint8 // index in Server.listeners
	// authorizing: a HeadAuthorizer is deciding; bytes wait in gnet's
	// buffer. cold.cancelAuth ends its call (closed); set and cleared on
	// the loop only.
	authorizing bool
	// admitted, ipHeld: the connection holds a place in the limiter's
	// server cap, in its address's cap (releaseLimits).
	admitted, ipHeld bool
}

// connCold is the part of a Conn that an idle open connection does not
// need, allocated only while some of it is in use: the handshake (from
// OnOpen to the upgrade), a fragmented or partly arrived message, an
// oversized write in flight, a close reason, bytes carried from net/http.
// An idle authenticated connection is the common case by far (issue 15:
// at most 1 KiB of RSS each), and these fields would more than double
// what it keeps in Conn (TestHotStructSizes). It is dropped at the upgrade
// when nothing but the handshake used it, and at the close; once a
// connection has read a fragmented message or a partial frame it keeps
// it until the close, so that a stream of large messages does not
// allocate one per message. It holds no pointer back to the Conn.
type connCold struct {
	accept time.Duration // the TCP accept, on the server's monotonic clock
	// carry: bytes read before gnet had the connection (net/http gave it
	// back for an upgrade); OnTraffic reads them first. nil otherwise.
	carry      []byte
	authState  any                // what a HeadAuthorizer decided, for Accept
	cancelAuth context.CancelFunc // ends a HeadAuthorizer's call
	frag       []byte             // a fragmented message being joined; nil otherwise
	// rx is a frame whose payload is still arriving; nil otherwise.
	rx *partialFrame
	// big holds the writes over the outbound budget still in flight
	// (outbound.go).
	big *oversized
	// closeReason is the reason sent, or the peer's when debug lines are
	// written, for "connection closed" (connlog.go).
	closeReason string
	scanned     uint16 // how far the request head was searched for its end
	fragOp      ws.OpCode
	// utf8 validates a fragmented text message as its fragments come; zero
	// otherwise.
	utf8 utf8State
}

// more returns the connection's cold part, allocating it on first use.
func (c *Conn) more() *connCold {
	if c.cold == nil {
		c.cold = new(connCold)
	}
	return c.cold
}

// shedCold drops the cold part once the handshake is over if nothing else
// holds anything there: the handshake's fields must be cleared first.
func (c *Conn) shedCold() {
	if x := c.cold; x != nil && x.carry == nil && x.frag == nil && x.rx == nil && x.big == nil &&
		x.closeReason == "" && x.authState == nil && x.cancelAuth == nil && x.fragOp == 0 {
		c.cold = nil
	}
}

// fragOp returns the opcode of the fragmented message being joined, or 0.
func (c *Conn) fragOp() ws.OpCode {
	if c.cold == nil {
		return 0
	}
	return c.cold.fragOp
}

// fragLen returns the bytes of the fragmented message joined so far.
func (c *Conn) fragLen() int {
	if c.cold == nil {
		return 0
	}
	return len(c.cold.frag)
}

// carried returns the bytes carried from net/http, or nil.
func (c *Conn) carried() []byte {
	if c.cold == nil {
		return nil
	}
	return c.cold.carry
}

// closeReason returns the reason kept for "connection closed", or "".
func (c *Conn) closeReason() string {
	if c.cold == nil {
		return ""
	}
	return c.cold.closeReason
}

// Loop returns the connection's event loop.
func (c *Conn) Loop() *Loop { return c.loop }

// Remote returns the peer's address.
func (c *Conn) Remote() netip.AddrPort { return c.remote }

// Open reports whether the connection is upgraded and not closing: whether
// sending still makes sense.
func (c *Conn) Open() bool { return c.state == stateOpen }

// LastActive returns when the peer last sent anything (any frame, a Pong
// included), to the second.
func (c *Conn) LastActive() time.Time {
	return c.loop.srv.epoch.Add(time.Duration(c.lastActive) * time.Second)
}

// KeepAlive is the keepalive of the JSON protocols: call it from
// OnDeadline. A peer silent (not even a Pong) for idle is closed with 1001;
// otherwise it is sent a Ping and the next check is armed, every interval
// and never later than when idle would pass. Arm the first check in OnOpen
// with SetDeadline(time.Now().Add(every)).
func (c *Conn) KeepAlive(every, idle time.Duration) {
	now := time.Now()
	silentUntil := c.LastActive().Add(idle)
	if !now.Before(silentUntil) {
		c.Close(CloseGoingAway, fmt.Sprintf("no activity for %v", idle))
		return
	}
	c.Send(ws.OpPing, nil)
	next := now.Add(every)
	if silentUntil.Before(next) {
		next = silentUntil
	}
	c.SetDeadline(next)
}

// SetDeadline arms the connection's one timer: at t the handler's
// OnDeadline runs. Resolution is one second, never early.
func (c *Conn) SetDeadline(t time.Time) {
	if c.state == stateOpen {
		c.loop.wheel.Set(&c.timer, c.loop.srv.seconds(t))
	}
}

// Send writes one unfragmented message. Nothing is sent once the connection
// is closing.
func (c *Conn) Send(op ws.OpCode, payload []byte) {
	if c.state != stateOpen {
		return
	}
	l := c.loop
	l.stats.countSent(c, len(payload))
	if l.cur == c {
		l.out = AppendFrame(l.out, op, payload)
		return
	}
	if l.draining {
		c.enqueue(AppendFrameHeader(l.scratch[:0], op, len(payload)), payload)
		return
	}
	l.scratch = AppendFrame(l.scratch[:0], op, payload)
	c.write(l.scratch)
	l.scratch = l.reuse(l.scratch)
}

// SendFrames writes bytes that are already whole server frames, such as a
// publish encoded once for every subscriber of a loop.
func (c *Conn) SendFrames(frames []byte) {
	if c.state != stateOpen || len(frames) == 0 {
		return
	}
	l := c.loop
	l.stats.countSent(c, len(frames))
	if l.cur == c {
		l.out = append(l.out, frames...)
		return
	}
	if l.draining {
		c.enqueue(frames, nil)
		return
	}
	c.write(frames)
}

// SendEncoded is SendFrames for frames from the loop's session.EncodeCache,
// which stay unchanged until the batch of tasks ends: the first one queued
// for a connection in a batch is kept by reference, not copied, so a publish
// to many connections copies nothing. Empty frames (a message the encoder
// dropped) send nothing.
func (c *Conn) SendEncoded(frames []byte) {
	l := c.loop
	if c.state != stateOpen || len(frames) == 0 || !l.draining || l.cur == c || c.outbox != nil || c.outRef != nil {
		c.SendFrames(frames)
		return
	}
	l.stats.countSent(c, len(frames))
	c.outRef = frames
	l.dirty = append(l.dirty, c)
}

// queue adds a and b to the connection's outbox: what tasks of one batch
// send to a connection (several publishes, say) leaves in one write when the
// batch ends (Loop.flushOutboxes), instead of one system call each.
func (c *Conn) queue(a, b []byte) {
	l := c.loop
	if c.outbox == nil {
		c.outbox = append(l.getBuf(), c.outRef...)
		if c.outRef == nil {
			l.dirty = append(l.dirty, c)
		}
		c.outRef = nil
	}
	c.outbox = append(append(c.outbox, a...), b...)
}

// enqueue is queue for data frames: an outbox that would pass
// outboxChunk is written first, so a long batch (a loop that fell behind
// a fast publisher) neither holds more than that per connection on top of
// the budget nor keeps a fast reader waiting for the batch's end; and the
// budget is checked as the batch goes, so a slow consumer is closed before
// its outbox grows.
func (c *Conn) enqueue(a, b []byte) {
	if n := len(c.outbox) + len(c.outRef); n > 0 && n+len(a)+len(b) > outboxChunk {
		c.flushOutbox()
		if c.state != stateOpen {
			return
		}
	}
	c.queue(a, b)
}

// outboxChunk is the most an outbox holds before it is written in the
// middle of a batch. A power of two: gnet keeps what the kernel did not
// take in pooled buffers of power-of-two sizes, so chunks up to it waste
// little there.
const outboxChunk = 64 << 10

// flushOutbox writes the outbox at the end of a batch of tasks.
func (c *Conn) flushOutbox() {
	b, owned := c.outbox, true
	if b == nil {
		b, owned = c.outRef, false
	}
	c.outbox, c.outRef = nil, nil
	if c.state == stateOpen {
		if !c.sendWithin(b) {
			c.slowConsumer()
		}
	} else {
		c.sysWrite(b) // the close frame after the rest: no budget
	}
	c.halfClose()
	if owned {
		c.loop.putBuf(b)
	}
}

// write sends b now, or closes a consumer whose queued bytes would pass the
// outbound budget: a broadcast never waits for one slow reader.
func (c *Conn) write(b []byte) {
	if !c.sendWithin(b) {
		c.slowConsumer()
	}
}

// sysWrite writes b to the socket unless the connection is closed. A failed
// write closes the connection synchronously (gnet runs OnClose inside
// Write): callers re-check the state after it, through these helpers.
func (c *Conn) sysWrite(b []byte) {
	if c.state != stateClosed {
		_, _ = c.gc.Write(b)
	}
}

// sysWritev is sysWrite for pieces written with one writev(2).
func (c *Conn) sysWritev(iov [][]byte) {
	if c.state != stateClosed {
		_, _ = c.gc.Writev(iov)
	}
}

// outbound returns the bytes gnet holds unsent (0 once closed).
func (c *Conn) outbound() int {
	if c.state == stateClosed {
		return 0
	}
	return c.gc.OutboundBuffered()
}

// slowConsumer closes a connection whose output passed the budget. Its
// close frame waits behind what gnet and the kernel already hold (up to the
// budget and the socket's send buffer), which a slow reader takes longer
// than the usual close grace to read: it gets slowCloseGraceSeconds.
func (c *Conn) slowConsumer() {
	c.loop.srv.metrics.slowConsumers.Inc()
	c.logPolicyClose("slow consumer")
	if c.outbox != nil || c.outRef != nil { // the backlog is dropped: the close frame goes alone
		c.loop.putBuf(c.outbox)
		c.outbox, c.outRef = nil, nil
	}
	c.Close(CloseSlowConsumer, "slow consumer: outbound buffer full")
	if c.state == stateClosing {
		c.loop.wheel.Set(&c.timer, c.loop.srv.clock()+slowCloseGraceSeconds)
	}
}

// slowCloseGraceSeconds is the close grace of a slow consumer: long enough
// for a client that reads at all to reach its 1008, short enough that the
// budget's memory is not held for long.
const slowCloseGraceSeconds = 5

// Close starts closing with a close frame carrying code and reason (cut to
// 123 bytes). The TCP connection ends when the peer answers with its close
// frame or after the close grace, so the peer reads the code instead of
// seeing a reset. Closing twice is a no-op. CloseInternalError stands for
// the route's own internal-error code (Route.InternalError).
func (c *Conn) Close(code uint16, reason string) {
	if c.state >= stateClosing {
		return
	}
	if c.state == stateHandshake {
		c.closeNow()
		return
	}
	if code == CloseInternalError {
		code = cmp.Or(c.route.InternalError, CloseInternalError)
	}
	c.closeCode = code
	if reason != "" || c.cold != nil {
		c.more().closeReason = reason
	}
	l := c.loop
	// The state moves first: a write that fails below closes the
	// connection, and that must be the last word.
	c.state = stateClosing
	c.shutWR = true
	l.wheel.Set(&c.timer, l.srv.clock()+closeGraceSeconds)
	l.scratch = AppendCloseFrame(l.scratch[:0], code, reason)
	switch {
	case l.cur == c:
		l.out = append(l.out, l.scratch...)
	case c.outbox != nil || c.outRef != nil: // after what is queued, with it
		c.queue(l.scratch, nil)
	default:
		c.sysWrite(l.scratch)
		c.halfClose()
	}
}

// halfClose sends FIN after our close frame once nothing is left to write,
// which tells the peer we are done even if it never answers.
func (c *Conn) halfClose() {
	if c.state == stateClosing && c.shutWR && c.gc.OutboundBuffered() == 0 {
		c.shutWR = false
		_ = unix.Shutdown(c.gc.Fd(), unix.SHUT_WR)
	}
}

// fail closes after a framing error, after which the byte stream cannot be
// parsed: everything more the peer sends is dropped.
func (c *Conn) fail(code uint16, reason string) {
	c.Close(code, reason)
	c.discard = true
	if c.cold != nil {
		c.cold.frag = nil
	}
}

// closeNow drops the TCP connection at once (on the loop).
func (c *Conn) closeNow() {
	if c.state != stateClosed {
		_ = c.loop.el.Close(c.gc)
	}
}

// shutdown closes the connection because the server is stopping.
func (c *Conn) shutdown() {
	switch c.state {
	case stateHandshake:
		c.closeNow()
	case stateOpen:
		c.Close(CloseGoingAway, "server shutting down")
	}
}

// deadlinePassed runs on the loop when the connection's timer fires.
func (c *Conn) deadlinePassed() {
	switch c.state {
	case stateHandshake:
		c.loop.srv.metrics.handshake(nil, resultTimeout)
		c.sysWrite(response408)
		c.closeNow()
	case stateOpen:
		c.handler.OnDeadline(c)
	case stateClosing:
		c.closeNow()
	}
}

// closed runs from gnet's OnClose: the connection is gone. Its cold part
// goes too, except while a HeadAuthorizer's call runs: authorized, which
// comes back in any case, needs its cancel function and drops it then.
func (c *Conn) closed() {
	if c.state == stateClosed {
		return
	}
	upgraded := c.route != nil
	c.state = stateClosed
	c.gc = nil
	c.loop.wheel.Stop(&c.timer)
	if c.cold != nil {
		c.cold.frag = nil
	}
	if c.authorizing {
		// The call ends now; its decision still comes back (authorized),
		// and gives the places back then, not before.
		c.cold.cancelAuth()
	} else {
		c.releaseLimits()
	}
	if upgraded {
		c.loop.srv.metrics.disconnect(c.route.Protocol, c.closeCode, c.byPeer)
		c.logClosed()
		c.notifyClosed()
	}
	if !c.authorizing {
		c.cold = nil
	}
}

func (c *Conn) notifyClosed() {
	defer c.recoverConn("close")
	c.handler.OnClose(c)
}

// traffic handles whatever the peer sent: the request head, then frames.
// It returns how many bytes are consumed.
func (c *Conn) traffic(buf []byte) (int, gnet.Action) {
	consumed := 0
	if c.authorizing { // nothing runs before the decision; a flood is cut off
		if len(buf) > MaxHeadSize {
			c.closeNow()
		}
		return 0, gnet.None
	}
	if c.state == stateHandshake {
		n, action := c.handshake(buf)
		if n == 0 || action != gnet.None || c.state != stateOpen {
			return n, action // also: waiting for a HeadAuthorizer
		}
		consumed = n
	}
	n, action := c.frames(buf[consumed:])
	return consumed + n, action
}

// frames parses, validates, unmasks and dispatches every complete frame at
// the front of buf. The payload of a frame cut short moves into the
// connection's own buffer (cold.rx) and is consumed; only a header cut short
// stays in gnet's buffer for the next OnTraffic.
func (c *Conn) frames(buf []byte) (int, gnet.Action) {
	if c.discard {
		return len(buf), gnet.None
	}
	off := 0
	if c.cold != nil && c.cold.rx != nil {
		n, action, done := c.moreOfFrame(buf)
		if !done || action != gnet.None {
			return n, action
		}
		off = n
	}
	max := c.loop.srv.opts.MaxMessageSize
	for off < len(buf) {
		if c.discard || c.state == stateClosed {
			return len(buf), gnet.None
		}
		h, hl, err := parseHeader(buf[off:])
		if err != nil {
			c.fail(CloseProtocolError, err.Error())
			continue
		}
		if hl == 0 {
			break
		}
		state := ws.StateServerSide
		if c.fragOp() != 0 {
			state |= ws.StateFragmented
		}
		if err := ws.CheckHeader(h, state); err != nil {
			c.fail(CloseProtocolError, err.Error())
			continue
		}
		if !h.OpCode.IsControl() && h.Length > int64(max-c.fragLen()) {
			c.fail(CloseMessageTooBig, "message too big")
			continue
		}
		end := off + hl + int(h.Length)
		if end > len(buf) {
			c.startFrame(h, buf[off+hl:])
			return len(buf), gnet.None
		}
		payload := buf[off+hl : end]
		ws.Cipher(payload, h.Mask, 0)
		off = end
		if action := c.frame(h, payload); action != gnet.None {
			return off, action
		}
	}
	return off, gnet.None
}

// frame handles one validated, unmasked frame.
func (c *Conn) frame(h ws.Header, payload []byte) gnet.Action {
	switch h.OpCode {
	case ws.OpClose:
		return c.closeFrame(payload)
	case ws.OpPing:
		if c.state == stateOpen && c.overRate() {
			return gnet.None
		}
		c.Send(ws.OpPong, payload) // nothing once our close is out
		return gnet.None
	case ws.OpPong:
		return gnet.None // unsolicited or not: activity only
	}
	if c.state != stateOpen {
		return gnet.None // data after our close frame is dropped
	}
	if h.OpCode == ws.OpText && !c.route.Text {
		c.fail(CloseUnsupportedData, "text messages are not accepted; send binary")
		return gnet.None
	}
	if h.Fin && c.fragOp() == 0 {
		if !c.overRate() {
			c.message(h.OpCode, payload, false)
		}
		return gnet.None
	}
	return c.fragment(h, payload)
}

// fragment joins one fragment of a message, in the cold part, which the
// connection keeps from then on.
func (c *Conn) fragment(h ws.Header, payload []byte) gnet.Action {
	x := c.more()
	if h.OpCode != ws.OpContinuation {
		x.fragOp = h.OpCode
		x.utf8 = utf8State{}
	}
	// Text is checked fragment by fragment: the close comes as soon as the
	// bytes so far cannot be UTF-8, not when the message ends (RFC 6455
	// 8.1; Autobahn 6.x "fail fast"). A sequence cut at a fragment's end
	// waits for the next fragment.
	if x.fragOp == ws.OpText && (!x.utf8.feed(payload) || h.Fin && !x.utf8.complete()) {
		c.fail(CloseInvalidPayload, "text message is not valid utf-8")
		return gnet.None
	}
	x.frag = append(x.frag, payload...)
	if h.Fin {
		op, msg := x.fragOp, x.frag
		x.fragOp, x.frag, x.utf8 = 0, nil, utf8State{}
		if !c.overRate() {
			c.message(op, msg, true)
		}
	}
	return gnet.None
}

// overRate charges a message to the connection's rate limit; past it, the
// connection is closed with 1008 and overRate reports true.
func (c *Conn) overRate() bool {
	lim := c.loop.limiter()
	if lim == nil || lim.interval == 0 {
		return false
	}
	if !lim.overRate(&c.tat, int64(time.Since(c.loop.srv.epoch))) {
		return false
	}
	lim.metrics.rate.Inc()
	c.logPolicyClose("message rate exceeded")
	c.fail(ClosePolicyViolation, "message rate exceeded")
	return true
}

// message hands a whole message to the protocol. checked: text was already
// validated, fragment by fragment.
func (c *Conn) message(op ws.OpCode, payload []byte, checked bool) {
	if op == ws.OpText && !checked && !utf8.Valid(payload) {
		c.fail(CloseInvalidPayload, "text message is not valid utf-8")
		return
	}
	c.loop.stats.countReceived(c, len(payload))
	c.handler.OnMessage(c, op, payload)
}

// closeFrame answers the peer's close frame: echo its code, then end the
// TCP connection (RFC 6455 5.5.1: the server closes TCP first).
func (c *Conn) closeFrame(payload []byte) gnet.Action {
	if c.state == stateClosing {
		return gnet.Close
	}
	code, ok := peerCloseCode(payload)
	if !ok {
		c.fail(CloseProtocolError, "invalid close frame")
		return gnet.None
	}
	c.byPeer = true
	c.closeCode = code
	c.peerReason(payload)
	c.loop.out = AppendCloseFrame(c.loop.out, code, "")
	c.state = stateClosing
	return gnet.Close
}

// peerCloseCode validates a close frame's payload: empty (no code: 1005, we
// echo an empty close) or a code RFC 6455 allows on the wire with a UTF-8
// reason.
func peerCloseCode(payload []byte) (uint16, bool) {
	switch len(payload) {
	case 0:
		return 0, true
	case 1:
		return 0, false
	}
	code := binary.BigEndian.Uint16(payload)
	if !utf8.Valid(payload[2:]) {
		return 0, false
	}
	switch {
	case code < 1000, code >= 5000:
		return 0, false
	case code >= 3000:
		return code, true
	case code == 1004, code == 1005, code == 1006, code == 1015:
		return 0, false
	case code <= 1014:
		return code, true
	}
	return 0, false
}
