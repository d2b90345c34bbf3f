package native

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// conn is one native connection: its gateway.Handler and, once
// authenticated, its session.Sink. It runs on the connection's loop.
type conn struct {
	p    *Protocol
	c    *gateway.Conn
	sess *session.Session // nil until authenticated
	// set holds the session's settings once a Settings packet moved one
	// from its default, and the batch window's packets; nil otherwise, as
	// for most connections: conn stays in the 32-byte size class
	// (TestHotStructSizes; issue 15, memory per idle connection).
	set *settings
}

// settings are a session's settings (PROTOCOL.md §6) and its batch window.
type settings struct {
	echo  bool
	batch time.Duration
	name  string
	// pending holds Message packets of the open batch window.
	pending []byte
}

// echo reports whether the session gets its own publishes.
func (h *conn) echo() bool { return h.set != nil && h.set.echo }

// batch returns the batch window, 0 for none.
func (h *conn) batch() time.Duration {
	if h.set == nil {
		return 0
	}
	return h.set.batch
}

// OnOpen sends the hello; it leaves in the same write as the 101.
func (h *conn) OnOpen(c *gateway.Conn) {
	h.c = c
	c.Send(ws.OpBinary, packet.Hello)
}

// OnMessage authenticates the first message and runs the packets of every
// later one.
func (h *conn) OnMessage(c *gateway.Conn, _ ws.OpCode, msg []byte) {
	if h.sess == nil {
		h.authenticate(msg)
		return
	}
	if !h.check(msg) {
		return
	}
	d := packet.NewDecoder(msg)
	var pk packet.Packet
	for c.Open() {
		if ok, _ := d.Next(&pk); !ok {
			return
		}
		h.run(&pk)
	}
}

// check validates a message whole before any of it runs, and closes the
// connection for one that does not parse (1002, 1007: PROTOCOL.md
// "Malformed messages") or holds more than MaxPacketsPerMessage packets
// (1008), which bounds what one message can make the loop do.
func (h *conn) check(msg []byte) bool {
	d := packet.NewDecoder(msg)
	var pk packet.Packet
	for n := 0; ; n++ {
		ok, err := d.Next(&pk)
		switch {
		case err != nil:
			code := gateway.CloseProtocolError
			if errors.Is(err, packet.ErrInvalidUTF8) {
				code = gateway.CloseInvalidPayload
			}
			h.c.Close(code, fmt.Sprintf("%v at byte %d", err, d.Offset()))
			return false
		case !ok:
			return true
		case n == MaxPacketsPerMessage:
			h.p.refusals.Refused("connection closed: policy violation", "native", "too_many_packets",
				h.c.Remote().Addr(), h.sess.Claims.Subject, h.c.LogAttr(), slog.Int("code", int(gateway.ClosePolicyViolation)))
			h.c.Close(gateway.ClosePolicyViolation, tooManyPackets)
			return false
		}
	}
}

// authenticate checks the auth message; success opens the session and
// answers with a Pong.
func (h *conn) authenticate(msg []byte) {
	key, err := packet.ParseAuth(msg)
	switch {
	case errors.Is(err, packet.ErrAuthVersion):
		h.refuse(reasonVersion, packet.CloseVersionMismatch,
			fmt.Sprintf("unsupported protocol version %d; this server speaks %d", msg[2], packet.Version))
		return
	case err != nil:
		h.refuse(reasonMalformed, packet.CloseUnauthorized, "malformed auth message: "+err.Error())
		return
	}
	now := time.Now()
	claims, err := h.p.opts.Secrets.Verify(key, now)
	switch {
	case errors.Is(err, token.ErrExpired):
		h.refuseKey(reasonExpired, claims.Subject, "access key expired")
		return
	case err != nil:
		h.refuseKey(reasonInvalid, "", "invalid access key")
		return
	case !h.p.opts.Revoked.Known():
		// Fail closed: the node could not load its revocations yet.
		h.refuse(reasonUnavailable, packet.CloseTryAgainLater, "revocations not loaded yet; try again later")
		return
	case h.p.opts.Revoked.Check(claims):
		h.refuseKey(reasonRevoked, claims.Subject, "access key revoked")
		return
	}
	h.p.metrics.authOK.Inc()
	h.c.Authenticated(claims.Subject)
	h.sess = session.New(claims, h)
	h.sess.MaxSubscriptions = h.p.opts.MaxSubscriptions
	h.c.Loop().Shard().Add(h.sess)
	h.pong(now)
}

func (h *conn) refuse(reason string, code uint16, text string) {
	h.p.metrics.authFailures[reason].Inc()
	h.logRefused(reason, "", code)
	h.c.Close(code, text)
}

// refuseKey refuses a key that parsed: subject is its subject when its
// signature held (expired, revoked), else "".
func (h *conn) refuseKey(reason, subject, text string) {
	h.p.metrics.authFailures[reason].Inc()
	h.logRefused(reason, subject, packet.CloseUnauthorized)
	h.c.Close(packet.CloseUnauthorized, text)
}

// logRefused logs a failed authentication (info, collapsed per reason;
// the subject of a signed key at most, never the key) with the close code
// it gets.
func (h *conn) logRefused(reason, subject string, code uint16) {
	if h.p.refusals.Enabled() {
		h.p.refusals.Refused("authentication failed", "native", reason, h.c.Remote().Addr(), subject,
			h.c.LogAttr(), slog.Int("code", int(code)))
	}
}

// pong answers a Ping (and a successful auth) and moves the deadline.
func (h *conn) pong(now time.Time) {
	var b [9]byte
	h.c.Send(ws.OpBinary, packet.AppendPong(b[:0], now.UnixMilli()))
	deadline := now.Add(h.p.opts.PingTimeout)
	if exp := h.sess.Claims.Expires; exp.Before(deadline) {
		deadline = exp
	}
	h.c.SetDeadline(deadline)
}

// run executes one decoded packet. Refusals answer with an Error packet and
// the connection goes on.
func (h *conn) run(pk *packet.Packet) {
	switch pk.ID {
	case packet.PacketPing:
		h.pong(time.Now())
	case packet.PacketSettings:
		h.settings(pk.Settings)
	case packet.PacketSubscribe:
		h.subscribe(pk.Channel)
	case packet.PacketUnsubscribe:
		h.c.Loop().Shard().Unsubscribe(h.sess, string(pk.Channel))
	case packet.PacketPublish:
		h.publish(pk.Channel, pk.Payload)
	case packet.PacketSubscribeFrom:
		h.subscribeFrom(pk.Channel, pk.Epoch, pk.Offset)
	}
}

// settings applies a Settings packet all or nothing.
func (h *conn) settings(raw []byte) {
	var cur settings
	if h.set != nil {
		cur = *h.set
	}
	echo, batch, name := cur.echo, cur.batch, cur.name
	r := packet.NewSettingsReader(raw)
	var s packet.Setting
	for r.Next(&s) {
		switch s.ID {
		case packet.SettingEcho:
			if s.Byte != 0 && s.Byte != 1 {
				h.sendError(packet.ErrorBadRequest, fmt.Sprintf("setting echo: value %d is not 0 or 1", s.Byte))
				return
			}
			echo = s.Byte == 1
		case packet.SettingClientName:
			if len(s.String) > MaxClientName {
				h.sendError(packet.ErrorBadRequest, fmt.Sprintf("setting client name: longer than %d bytes", MaxClientName))
				return
			}
			name = string(s.String)
		case packet.SettingBatchWindow:
			d := time.Duration(s.Short) * time.Millisecond
			if d < 0 || d > MaxBatchWindow {
				h.sendError(packet.ErrorBadRequest, fmt.Sprintf("setting batch window: %d ms is outside 0..1000", s.Short))
				return
			}
			batch = d
		}
	}
	if h.set == nil {
		if !echo && batch == 0 && name == "" {
			return // the defaults, as before
		}
		h.set = new(settings)
	}
	h.set.echo, h.set.batch, h.set.name = echo, batch, name
	if batch == 0 {
		h.flush() // a window closed by the setting sends what it held
		if !echo && name == "" {
			h.set = nil // back to the defaults: nothing to keep
		}
	}
}

func (h *conn) subscribe(channel []byte) {
	if code, why := checkChannel(channel, h.sess.Claims.Subject, opSubscribe); code != 0 {
		h.sendError(code, fmt.Sprintf("subscribe %s: %s", quoteChannel(channel), why))
		return
	}
	err := h.c.Loop().Shard().Subscribe(h.sess, string(channel))
	if errors.Is(err, session.ErrTooManySubscriptions) {
		h.sendError(packet.ErrorTooMany, fmt.Sprintf("subscribe %s: more than %d subscriptions", quoteChannel(channel), h.p.opts.MaxSubscriptions))
	}
}

// subscribeFrom answers SubscribeFrom (PROTOCOL.md §5.1). The checks run
// in the order the protocol lists them: the position, the channel policy,
// whether the channel keeps history, the subscription cap.
func (h *conn) subscribeFrom(channel []byte, epoch, offset int64) {
	if offset < 0 || (epoch == 0 && offset != 0) {
		h.sendError(packet.ErrorBadRequest, fmt.Sprintf("subscribe from %s: bad position (epoch %d, offset %d)", quoteChannel(channel), epoch, offset))
		return
	}
	if code, why := checkChannel(channel, h.sess.Claims.Subject, opSubscribe); code != 0 {
		h.sendError(code, fmt.Sprintf("subscribe from %s: %s", quoteChannel(channel), why))
		return
	}
	err := h.c.Loop().Shard().SubscribeFrom(h.sess, string(channel), history.Position{Epoch: epoch, Offset: offset})
	switch {
	case errors.Is(err, session.ErrNoHistory):
		h.sendError(packet.ErrorBadRequest, fmt.Sprintf("subscribe from %s: channel keeps no history", quoteChannel(channel)))
	case errors.Is(err, session.ErrTooManySubscriptions):
		h.sendError(packet.ErrorTooMany, fmt.Sprintf("subscribe from %s: more than %d subscriptions", quoteChannel(channel), h.p.opts.MaxSubscriptions))
	case err != nil:
		h.sendError(packet.ErrorUnavailable, fmt.Sprintf("subscribe from %s: %v; try again", quoteChannel(channel), err))
	}
}

func (h *conn) publish(channel, payload []byte) {
	if code, why := checkChannel(channel, h.sess.Claims.Subject, opPublish); code != 0 {
		h.sendError(code, fmt.Sprintf("publish %s: %s", quoteChannel(channel), why))
		return
	}
	hub := h.c.Loop().Server().Hub()
	ch := string(channel)
	var failed func(error)
	if hub.Keeps(ch) {
		// With Redis a publish on a channel with history is appended there
		// after this returns; a loss is told back on this loop.
		failed = func(err error) { h.c.Run(h.publishFailed, &lostPublish{channel: ch, err: err}) }
	}
	if err := hub.PublishOr(ch, payload, h.sess.ID, failed); err != nil {
		h.sendError(packet.ErrorUnavailable, fmt.Sprintf("publish %s: %v; try again", quoteChannel(channel), err))
	}
}

// lostPublish is a publish the history's store lost after accepting it.
type lostPublish struct {
	channel string
	err     error
}

func (h *conn) publishFailed(arg any) {
	if !h.c.Open() {
		return
	}
	l := arg.(*lostPublish)
	h.sendError(packet.ErrorUnavailable, fmt.Sprintf("publish %s: %v; try again", quoteChannel([]byte(l.channel)), l.err))
}

// SubscribeFromFailed implements session.PositionSink: the history could
// not be read; the subscription is gone.
func (h *conn) SubscribeFromFailed(channel string, err error) {
	h.flush()
	h.sendError(packet.ErrorUnavailable, fmt.Sprintf("subscribe from %s: history unavailable (%v); try again", quoteChannel([]byte(channel)), err))
}

// quoteChannel quotes a channel name for an Error message: at most
// MaxChannelLen bytes of it (cut on a UTF-8 boundary, then "..."), so that
// the message stays a few hundred bytes whatever the client sent; a whole
// 32 KiB name, escaped, would not even fit the packet's string.
func quoteChannel(channel []byte) string {
	if len(channel) <= MaxChannelLen {
		return strconv.Quote(string(channel))
	}
	cut := MaxChannelLen
	for cut > 0 && !utf8.RuneStart(channel[cut]) {
		cut--
	}
	return strconv.Quote(string(channel[:cut])) + "..."
}

func (h *conn) sendError(code int16, text string) {
	h.p.metrics.refusals.Inc()
	h.c.Send(ws.OpBinary, packet.AppendError(nil, code, text))
}

// OnDeadline closes for the deadline that passed: authentication, key
// expiry or ping.
func (h *conn) OnDeadline(c *gateway.Conn) {
	switch {
	case h.sess == nil:
		h.p.metrics.authFailures[reasonTimeout].Inc()
		h.logRefused(reasonTimeout, "", packet.CloseTimeout)
		c.Close(packet.CloseTimeout, fmt.Sprintf("authentication timeout: no auth message within %v", h.p.opts.HandshakeTimeout))
	case !time.Now().Before(h.sess.Claims.Expires):
		c.Close(packet.CloseUnauthorized, "access key expired")
	default:
		c.Close(packet.CloseTimeout, fmt.Sprintf("ping timeout: no ping within %v", h.p.opts.PingTimeout))
	}
}

// OnClose leaves the hub.
func (h *conn) OnClose(c *gateway.Conn) {
	if h.sess != nil {
		c.Loop().Shard().Remove(h.sess)
	}
	h.set = nil
}

// Subscribed implements session.Sink.
func (h *conn) Subscribed(channel string) {
	var b [3 + MaxChannelLen]byte
	h.c.Send(ws.OpBinary, packet.AppendSubscribed(b[:0], channel))
}

// Close implements session.Sink.
func (h *conn) Close(code uint16, reason string) { h.c.Close(code, reason) }

// Deliver implements session.Sink: the frame is encoded once per loop; a
// batch window gathers Message packets into one WebSocket message.
func (h *conn) Deliver(m *session.Message, enc *session.EncodeCache) {
	if !h.c.Open() || (m.Origin == h.sess.ID && !h.echo()) {
		return
	}
	h.sendShared(enc.Get(encoding, encodeMessage), packet.MessageLen(len(m.Channel), len(m.Payload)))
}

// DeliverAt implements session.PositionSink: a Publication, live (encoded
// once per loop) or replayed (this session's own). Echo does not apply: a
// SubscribeFrom subscriber gets its own publications, so that its offsets
// stay contiguous.
func (h *conn) DeliverAt(m *session.Message, enc *session.EncodeCache) {
	if !h.c.Open() {
		return
	}
	if enc == nil {
		// A replay: one packet per publication, encoded on the stack when
		// it fits (Send and the batch window copy it).
		var b [replayStackBuf]byte
		h.sendOwn(packet.AppendPublication(b[:0], m.Channel, m.Offset, m.Payload))
		return
	}
	h.sendShared(enc.Get(encodingPublication, encodePublication), packet.PublicationLen(len(m.Channel), len(m.Payload)))
}

// replayStackBuf is the replayed Publication a stack buffer holds; a
// larger one is encoded into a slice of its own.
const replayStackBuf = 1024

// SubscribedFrom implements session.PositionSink. What the batch window
// holds goes first: SubscribedFrom never overtakes a Publication.
func (h *conn) SubscribedFrom(channel string, pos history.Position, recovered bool) {
	h.flush()
	var b [3 + MaxChannelLen + 17]byte
	h.c.Send(ws.OpBinary, packet.AppendSubscribedFrom(b[:0], channel, pos.Epoch, pos.Offset, recovered))
}

// sendShared sends a frame from the loop's encode cache, whose last n bytes
// are its packet; a batch window gathers the packet instead.
func (h *conn) sendShared(frame []byte, n int) {
	if h.batch() == 0 {
		h.c.SendEncoded(frame)
		return
	}
	h.hold(frame[len(frame)-n:])
}

// sendOwn sends one packet of the session's own, or holds it in the batch
// window with the others.
func (h *conn) sendOwn(pkt []byte) {
	if h.batch() == 0 {
		h.c.Send(ws.OpBinary, pkt)
		return
	}
	h.hold(pkt)
}

// hold appends a packet to the batch window, arming its timer for the
// first and sending early past batchFlushBytes. Only a session with a
// batch window holds packets, so h.set is there.
func (h *conn) hold(pkt []byte) {
	x := h.set
	if len(x.pending) == 0 {
		h.c.After(x.batch, flushWindow, h)
	}
	x.pending = append(x.pending, pkt...)
	if len(x.pending) >= batchFlushBytes {
		h.flush()
	}
}

// flushWindow is the batch window's timer: a function, not a method value
// kept in each conn (conn stays in its size class, TestHotStructSizes).
func flushWindow(h any) { h.(*conn).flush() }

// flush sends the batch window's packets as one message. A timer armed for
// a window already flushed (or settings gone back to the defaults) finds
// nothing to send.
func (h *conn) flush() {
	x := h.set // a write that fails closes the connection: OnClose drops h.set
	if x == nil || len(x.pending) == 0 {
		return
	}
	h.c.Send(ws.OpBinary, x.pending)
	x.pending = x.pending[:0]
}

// encodeMessage encodes a publish as a whole native frame: the WebSocket
// header, then the Message packet.
func encodeMessage(dst []byte, m *session.Message) []byte {
	n := packet.MessageLen(len(m.Channel), len(m.Payload))
	dst = gateway.AppendFrameHeader(dst, ws.OpBinary, n)
	return packet.AppendMessage(dst, m.Channel, m.Payload)
}

// encodePublication encodes a publication with its offset as a whole
// native frame.
func encodePublication(dst []byte, m *session.Message) []byte {
	n := packet.PublicationLen(len(m.Channel), len(m.Payload))
	dst = gateway.AppendFrameHeader(dst, ws.OpBinary, n)
	return packet.AppendPublication(dst, m.Channel, m.Offset, m.Payload)
}
