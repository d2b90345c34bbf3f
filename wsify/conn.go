package wsify

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// message is one decoded client message (§4), built from its own frame
// alone (§8.2).
type message struct {
	command string
	// args is the message's args object as sent, nil when absent or null:
	// what the authorizer receives.
	args json.RawMessage
	// channel is args.channel trimmed ("" when absent or not a string).
	channel string
	// content is json.Marshal of args.content decoded into any, for a
	// broadcast: the bytes members receive.
	content []byte
}

// decode parses one client message into fresh state. It reports false for
// what is ignored silently: invalid JSON, a non-object, a command that is
// not a string, args that are not an object, and a broadcast whose content
// Go cannot decode (a number beyond float64, which upstream's decoder
// rejects too). null stands for an absent command or args, as with
// upstream's decoder.
func decode(payload []byte) (*message, bool) {
	var env map[string]json.RawMessage
	if json.Unmarshal(payload, &env) != nil || env == nil {
		return nil, false
	}
	m := &message{}
	if raw, ok := env["command"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &m.command) != nil {
			return nil, false
		}
	}
	var args map[string]json.RawMessage
	if raw, ok := env["args"]; ok && !isNull(raw) {
		if json.Unmarshal(raw, &args) != nil {
			return nil, false
		}
		m.args = raw
	}
	if raw, ok := args["channel"]; ok {
		var ch string
		if json.Unmarshal(raw, &ch) == nil {
			m.channel = strings.TrimSpace(ch)
		}
	}
	if m.command == "broadcast" {
		content, ok := reencode(args["content"])
		if !ok {
			return nil, false
		}
		m.content = content
	}
	return m, true
}

// reencode is upstream's delivery encoding (§7): decode into any, then
// json.Marshal (compact, sorted keys, float64 numbers, HTML escaping).
// Absent content is null.
func reencode(raw json.RawMessage) ([]byte, bool) {
	if raw == nil {
		return []byte("null"), true
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil, false
	}
	b, err := json.Marshal(v)
	return b, err == nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// conn is one wsify socket: its gateway.Handler and its session.Sink. It
// runs on the connection's loop. With an authorizer, messages are
// authorized one at a time, in arrival order: while a call is in flight,
// later messages wait in queue.
type conn struct {
	p    *Protocol
	c    *gateway.Conn
	id   *identity
	sess *session.Session

	busy   bool       // an authorizer call is in flight
	cancel func()     // cancels it
	queue  []*message // messages waiting behind it
	doneFn func(any)
}

// OnOpen joins the loop's shard and arms the keepalive.
func (h *conn) OnOpen(c *gateway.Conn) {
	h.c = c
	// The subject lets an operator revoke one wsify connection by subject
	// ("wsify:<conn id>"); wsify has no keys of its own.
	h.sess = session.New(token.Claims{Subject: "wsify:" + h.id.id}, h)
	c.Authenticated(h.sess.Claims.Subject)
	h.sess.MaxSubscriptions = h.p.maxJoins
	c.Loop().Shard().Add(h.sess)
	h.doneFn = h.done
	c.SetDeadline(time.Now().Add(pingEvery))
}

// OnMessage decodes a message and runs it, at once without an authorizer,
// otherwise after the authorizer allows it.
func (h *conn) OnMessage(c *gateway.Conn, op ws.OpCode, payload []byte) {
	if op == ws.OpBinary && !utf8.Valid(payload) {
		return // JSON text is UTF-8; text frames are checked by the gateway
	}
	m, ok := decode(payload)
	if !ok {
		return
	}
	if h.p.authURL == "" {
		h.run(m)
		return
	}
	if h.busy {
		if 1+len(h.queue) >= h.p.maxBacklog {
			h.closePolicy("max_backlog", "too many messages awaiting the authorizer")
			return
		}
		h.queue = append(h.queue, m)
		return
	}
	h.authorize(m)
}

// authResult carries an authorizer call's outcome back to the loop.
type authResult struct {
	m      *message
	v      verdict
	status int
	err    error
}

// authorize asks the authorizer about m off the loop; the answer comes
// back through Conn.Run to done. The connection takes no other call
// meanwhile, and a call still running when it closes is canceled: a client
// that sends a message and leaves, again and again, cannot pile calls up.
func (h *conn) authorize(m *message) {
	h.busy = true
	p, c, id := h.p, h.c, h.id
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		defer c.RecoverOffLoop("wsify authorizer call")
		defer cancel()
		v, status, err := p.call(ctx, p.messageBody(id, m))
		c.Run(h.doneFn, &authResult{m, v, status, err})
	}()
}

// done runs on the loop with an authorizer's answer, then authorizes the
// next queued message.
func (h *conn) done(arg any) {
	r := arg.(*authResult)
	h.busy, h.cancel = false, nil
	if !h.c.Open() {
		h.queue = nil
		return
	}
	switch r.v {
	case allow:
		h.run(r.m)
	case deny:
		h.p.logVerdict(r.m.command, h.id.id, h.c.ID(), h.c.Remote().Addr(), r.v, r.status, r.err)
	default:
		h.p.logVerdict(r.m.command, h.id.id, h.c.ID(), h.c.Remote().Addr(), r.v, r.status, r.err)
		h.queue = nil
		h.c.Close(gateway.CloseInternalError, "authorizer unavailable")
		return
	}
	if len(h.queue) > 0 && h.c.Open() {
		next := h.queue[0]
		h.queue[0] = nil
		h.queue = h.queue[1:]
		h.authorize(next)
	}
}

// run executes an allowed message (§4). Unknown commands do nothing.
func (h *conn) run(m *message) {
	shard := h.c.Loop().Shard()
	switch m.command {
	case "join":
		if m.channel == "" {
			return
		}
		if len(m.channel) > MaxChannelName {
			h.closePolicy("channel_name_too_long", channelTooLong)
			return
		}
		// A no-op when joined; O(1) either way.
		if shard.Subscribe(h.sess, hubChannel(m.channel)) != nil {
			h.closePolicy("too_many_channels", h.p.tooManyChannels())
		}
	case "leave":
		if m.channel != "" {
			shard.Unsubscribe(h.sess, hubChannel(m.channel)) // a no-op when not joined
		}
	case "broadcast":
		if m.channel == "" {
			return // upstream published to "", which nobody can join
		}
		if err := h.p.hub.Publish(hubChannel(m.channel), m.content, h.sess.ID); err != nil {
			// Counted by the hub (gateway_broker_refusals_total); the
			// client is not told, as upstream tells it nothing.
			h.p.warns.Log("ws_broadcast", "wsify: broadcast refused by the broker",
				h.c.LogAttr(), slog.String("subject", h.sess.Claims.Subject), slog.String("err", err.Error()))
		}
	}
}

// closePolicy closes with 1008 for a limit the client passed, with an info
// line (collapsed per reason).
func (h *conn) closePolicy(reason, text string) {
	h.p.refusals.Refused("connection closed: policy violation", "wsify", reason, h.c.Remote().Addr(), h.sess.Claims.Subject,
		h.c.LogAttr(), slog.Int("code", int(gateway.ClosePolicyViolation)))
	h.queue = nil
	h.c.Close(gateway.ClosePolicyViolation, text)
}

// OnDeadline pings every 30 s and closes a socket silent for 60 s with 1001.
func (h *conn) OnDeadline(c *gateway.Conn) { c.KeepAlive(pingEvery, idleLimit) }

// OnClose leaves the hub; an authorizer call in flight finds the
// connection closed and does nothing.
func (h *conn) OnClose(c *gateway.Conn) {
	if h.sess != nil {
		c.Loop().Shard().Remove(h.sess)
	}
	h.queue = nil
	if h.cancel != nil {
		h.cancel()
	}
}

// Deliver implements session.Sink: the payload is the whole frame's
// content, framed once per loop and written to every member. A payload
// that is not valid UTF-8 (an outside publisher's, through Redis) is
// dropped: it cannot go out as a text frame.
func (h *conn) Deliver(_ *session.Message, enc *session.EncodeCache) {
	if f := enc.Get(encoding, h.p.encodeFn); len(f) > 0 {
		h.c.SendEncoded(f)
	}
}

// Subscribed implements session.Sink: wsify acknowledges nothing.
func (h *conn) Subscribed(string) {}

// Close implements session.Sink (revocation, shutdown).
func (h *conn) Close(code uint16, reason string) { h.c.Close(code, reason) }

// encode frames a publish as a text frame, or returns nothing (and counts a
// drop, once per loop) when it is not valid UTF-8.
func (p *Protocol) encode(dst []byte, m *session.Message) []byte {
	if !utf8.Valid(m.Payload) {
		p.metrics.droppedUTF8.Inc()
		return nil
	}
	return gateway.AppendFrame(dst, ws.OpText, m.Payload)
}
