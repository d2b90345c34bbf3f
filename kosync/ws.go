package kosync

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// WebSocket constants (reference B.4, B.9).
const (
	// WSPath prefixes the WebSocket URI: /api/ws/{token}.
	WSPath = "/api/ws/"
	// pingEvery: the server pings an open socket this often.
	pingEvery = 30 * time.Second
	// idleLimit: a socket silent this long (not even a Pong) is closed
	// with 1001.
	idleLimit = 60 * time.Second
	// maxQueued bounds the requests a socket may have waiting behind the
	// one in flight; past it the socket is closed with 1008.
	maxQueued = 32
	// storeTimeout bounds one store request of a socket.
	storeTimeout = 10 * time.Second
	// encoding is the KOsync text frame's slot in the loops' encode caches.
	encoding session.Encoding = 1
	// closeMissedAnnounces (1012, service restart) closes the subscribed
	// sockets of a node whose Redis subscription reconnected: announces
	// from other nodes may have been lost meanwhile, and a client
	// reconnects, subscribes again and calls documents.all (reference
	// B.7). The protocol has no message meaning "refetch".
	closeMissedAnnounces  uint16 = 1012
	missedAnnouncesReason        = "announces may have been missed; reconnect and call documents.all"
)

var (
	badTokenFrame   = []byte(`{"type":"rpc","payload":{"for_rpc":"connect","result":null,"error":"Your access token is invalid. Make sure it is supplied like this: /api/ws/{token}"}}`)
	subscribedFrame = []byte(`{"type":"pubsub","payload":{"for_topic":"user.documents","data":"subscribed"}}`)
)

// wsProtocol is the KOsync WebSocket API on the gateway's loops.
type wsProtocol struct {
	s     *Service
	hello []byte
}

// Route returns the gateway route of the KOsync WebSocket API.
func (s *Service) Route() gateway.Route {
	type helloPayload struct {
		ServerName    string `json:"server_name"`
		ServerVersion string `json:"server_version"`
		Message       string `json:"message"`
	}
	hello, _ := json.Marshal(struct {
		Type    string       `json:"type"`
		Payload helloPayload `json:"payload"`
	}{"rpc", helloPayload{ServerName, s.opts.Version, "KOsync WebSocket API. Hello!"}})
	return gateway.Route{
		Path: WSPath, Protocol: &wsProtocol{s: s, hello: hello}, Text: true,
		Subprotocols: []string{"kosync.rpc", "kosync.pubsub"},
	}
}

func (p *wsProtocol) Name() string { return "kosync" }

// Accept verifies the token (no I/O) but never refuses: a browser cannot
// read a refused upgrade, so a bad token is answered after it (B.4).
func (p *wsProtocol) Accept(r *gateway.Request) (gateway.Handler, error) {
	h := &wsConn{s: p.s, hello: p.hello}
	user, claims, err := p.s.VerifyJWT(string(r.Path[len(WSPath):]))
	if err == nil {
		h.user, h.claims = user, claims
	} else {
		p.s.logRefusedFrom(p.s.clientAddrOf(r.Remote.Addr(), string(r.ForwardedFor)), authReason(err), "", r.ID.LogAttr())
	}
	h.tokenOK = err == nil
	return h, nil
}

// wsConn is one KOsync socket: its gateway.Handler and its session.Sink.
// It runs on the connection's loop. Requests run one at a time: while a
// store request is in flight, later messages wait in queue.
type wsConn struct {
	s       *Service
	c       *gateway.Conn
	hello   []byte
	tokenOK bool
	user    string
	claims  token.Claims
	sess    *session.Session
	// subscribed: the socket is in its loop's socketSet.
	subscribed bool

	busy   bool
	queue  [][]byte
	doneFn func(any)
}

// OnOpen greets, or answers a bad token and closes with 3001.
func (h *wsConn) OnOpen(c *gateway.Conn) {
	h.c = c
	if !h.tokenOK {
		c.Send(ws.OpText, badTokenFrame)
		c.Close(packet.CloseUnauthorized, "invalid access token")
		return
	}
	c.Authenticated(h.user)
	h.sess = session.New(h.claims, h)
	c.Loop().Shard().Add(h.sess)
	h.doneFn = h.done
	c.Send(ws.OpText, h.hello)
	c.SetDeadline(time.Now().Add(pingEvery))
}

// OnMessage runs a request, or queues it behind the one in flight.
func (h *wsConn) OnMessage(c *gateway.Conn, _ ws.OpCode, msg []byte) {
	if h.busy {
		if len(h.queue) == maxQueued {
			h.s.refusals.Refused("connection closed: policy violation", "kosync", "too_many_requests", c.Remote().Addr(), h.user,
				c.LogAttr(), slog.Int("code", int(gateway.CloseSlowConsumer)))
			c.Close(gateway.CloseSlowConsumer, "too many requests in flight")
			return
		}
		h.queue = append(h.queue, append([]byte(nil), msg...))
		return
	}
	h.handle(msg)
}

// handle decodes one message into fresh state (KOsync bug C.2) and runs it.
func (h *wsConn) handle(msg []byte) {
	var env map[string]json.RawMessage
	if json.Unmarshal(msg, &env) != nil || env == nil {
		h.rpcError("", "Invalid message: expected a JSON object")
		return
	}
	typ, ok := jsonString(env["type"])
	if !ok {
		h.rpcError("", "Invalid message: 'type' must be a string")
		return
	}
	switch typ {
	case "rpc":
		h.rpc(env["payload"])
	case "pubsub":
		h.pubsub(env["payload"])
	default:
		h.rpcError("", "Unknown message type: '"+typ+"'")
	}
}

// rpc runs an RPC call (B.6).
func (h *wsConn) rpc(payload json.RawMessage) {
	var p map[string]json.RawMessage
	if json.Unmarshal(payload, &p) != nil || p == nil {
		h.rpcError("", "Invalid message: 'payload' must be an object")
		return
	}
	method, ok := jsonString(p["method"])
	if !ok {
		h.rpcError("", "Invalid RPC call: 'method' must be a string")
		return
	}
	var args map[string]json.RawMessage
	if raw, ok := p["arguments"]; ok {
		if json.Unmarshal(raw, &args) != nil || args == nil {
			h.rpcError(method, "Invalid RPC call: 'arguments' must be an object")
			return
		}
	}
	switch method {
	case "documents.all":
		h.async(method, func(ctx context.Context, post func(any, error)) {
			post(h.s.AllDocuments(ctx, h.user))
		})
	case "documents.update":
		doc, ok := args["document"]
		if !ok {
			h.rpcError(method, "RPC call is missing the argument 'document'")
			return
		}
		h.async(method, func(ctx context.Context, post func(any, error)) {
			// The reply is queued after the commit and before the announce
			// is published, so the caller reads its reply first (B.6).
			posted := false
			_, err := h.s.updateDocument(ctx, h.user, doc, func(d APIDocument) {
				posted = true
				post(d, nil)
			})
			if !posted {
				post(nil, err)
			}
		})
	case "disconnect":
		h.reply(method, "goodbye.", "")
		h.c.Close(1000, "goodbye.")
	default:
		h.rpcError(method, "Unknown RPC method: '"+method+"'")
	}
}

// pubsub subscribes to a topic (B.7). "subscribed" answers once the
// subscription is live on every node (Subscribed, below): at once alone,
// after the Redis subscription is confirmed in a cluster. Other requests do
// not wait for it.
func (h *wsConn) pubsub(payload json.RawMessage) {
	var p map[string]json.RawMessage
	_ = json.Unmarshal(payload, &p)
	topic, ok := jsonString(p["topic"])
	if !ok {
		h.rpcError("pubsub", "Invalid PubSub request: 'topic' must be a string")
		return
	}
	if topic != TopicUserDocuments {
		h.rpcError("pubsub", "Unknown PubSub topic: '"+topic+"'")
		return
	}
	sh := h.c.Loop().Shard()
	if !h.subscribed {
		h.subscribed = true
		h.s.socketsOn(sh)[h] = struct{}{}
	}
	sh.Subscribe(h.sess, userChannel(h.user))
}

// socketSet is one loop's subscribed sockets.
type socketSet map[*wsConn]struct{}

// socketsOn returns sh's set; call it on sh's loop.
func (s *Service) socketsOn(sh *session.Shard) socketSet {
	if set, ok := s.subscribers.Load(sh); ok {
		return set.(socketSet)
	}
	set, _ := s.subscribers.LoadOrStore(sh, socketSet{})
	return set.(socketSet)
}

// closeSubscribers runs on sh's loop after a Redis reconnect (hub
// OnReconnect): it closes the loop's subscribed sockets with 1012 so their
// clients reconnect and refetch. Sockets that never subscribed missed
// nothing and stay open.
func (s *Service) closeSubscribers(sh *session.Shard) {
	set, ok := s.subscribers.Load(sh)
	if !ok {
		return
	}
	for h := range set.(socketSet) {
		h.c.Close(closeMissedAnnounces, missedAnnouncesReason)
	}
}

// asyncResult carries a store request's outcome back to the loop.
type asyncResult struct {
	method string
	result any
	err    error
}

// async runs fn off the loop; fn calls post exactly once with the outcome,
// which comes back to the loop through Conn.Run. The socket takes no other
// request meanwhile.
func (h *wsConn) async(method string, fn func(ctx context.Context, post func(any, error))) {
	h.busy = true
	c := h.c
	go func() {
		defer c.RecoverOffLoop("kosync " + method)
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		fn(ctx, func(result any, err error) {
			c.Run(h.doneFn, &asyncResult{method, result, err})
		})
	}()
}

// done runs on the loop with a store request's outcome, then the requests
// that waited behind it.
func (h *wsConn) done(arg any) {
	r := arg.(*asyncResult)
	h.busy = false
	if !h.c.Open() {
		h.queue = nil
		return
	}
	var in *InputError
	switch {
	case r.err == nil:
		h.reply(r.method, r.result, "")
	case errors.As(r.err, &in):
		h.rpcError(r.method, in.Message)
	default:
		h.s.errs.Log("ws_request", "kosync websocket request failed", h.c.LogAttr(), slog.String("protocol", "kosync"),
			slog.String("subject", h.user), slog.String("method", r.method), slog.String("err", r.err.Error()))
		h.rpcError(r.method, "Internal server error")
	}
	for !h.busy && len(h.queue) > 0 && h.c.Open() {
		msg := h.queue[0]
		h.queue[0] = nil
		h.queue = h.queue[1:]
		h.handle(msg)
	}
}

// rpcReply is the payload of every RPC answer: both keys always present.
type rpcReply struct {
	ForRPC string `json:"for_rpc"`
	Result any    `json:"result"`
	Error  string `json:"error"`
}

func (h *wsConn) reply(method string, result any, errText string) {
	b, err := json.Marshal(struct {
		Type    string   `json:"type"`
		Payload rpcReply `json:"payload"`
	}{"rpc", rpcReply{method, result, errText}})
	if err != nil {
		h.s.log.Error("kosync reply encoding failed", "err", err)
		return
	}
	h.c.Send(ws.OpText, b)
}

func (h *wsConn) rpcError(method, text string) { h.reply(method, nil, text) }

// OnDeadline pings every 30 s and closes a socket silent for 60 s (B.9).
func (h *wsConn) OnDeadline(c *gateway.Conn) { c.KeepAlive(pingEvery, idleLimit) }

// OnClose leaves the hub.
func (h *wsConn) OnClose(c *gateway.Conn) {
	if h.sess != nil {
		c.Loop().Shard().Remove(h.sess)
	}
	if h.subscribed {
		delete(h.s.socketsOn(c.Loop().Shard()), h)
	}
	h.queue = nil
}

// Deliver implements session.Sink: an announce is already the whole pubsub
// frame; it is framed once per loop and written to every subscriber.
func (h *wsConn) Deliver(m *session.Message, enc *session.EncodeCache) {
	h.c.SendEncoded(enc.Get(encoding, encodeText))
}

// Subscribed implements session.Sink: the subscription is live.
func (h *wsConn) Subscribed(string) { h.c.Send(ws.OpText, subscribedFrame) }

// Close implements session.Sink (revocation: 3004).
func (h *wsConn) Close(code uint16, reason string) { h.c.Close(code, reason) }

func encodeText(dst []byte, m *session.Message) []byte {
	return gateway.AppendFrame(dst, ws.OpText, m.Payload)
}
