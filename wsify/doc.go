// Package wsify speaks wsify v3 (alash3al/wsify v3.0.0) on the gateway: its
// WebSocket at GET /ws, its server-side POST /broadcast and its authorizer
// webhook, so that existing wsify clients and authorizers work unchanged.
// The normative reference is REFERENCE.md in this directory; README.md
// lists flags, metrics and decisions.
//
// # Wiring
//
//	p, err := wsify.New(wsify.Options{Hub: hub, AuthorizerURL: url, ...})
//	srv.AddListener("wsify", ":3000")
//	srv.Handle(p.Route("wsify"))
//	p.RegisterHTTP(srv, "wsify")
//	registry.MustRegister(p.Collectors()...)
//	// after srv.Start():
//	p.WarnIfOpen(srv.ListenerAddr("wsify"))
//
// With Redis, the broker maps wsify channels to raw Redis names and sends
// them without its envelope:
//
//	session.RedisBrokerOptions{
//		ChannelName: wsify.RedisChannelName(wsifyPrefix, prefix),
//		Raw:         wsify.RedisChannelRaw(wsifyPrefix, prefix),
//	}
//
// # The loop boundary
//
// Protocol is goroutine-safe. A connection's conn (its gateway.Handler and
// session.Sink) runs on its event loop only, and so do decode, run and
// Deliver. Two things run off the loop, never on it:
//
//   - the connect call: the Protocol is a gateway.HeadAuthorizer, and the
//     gateway runs AuthorizeHead on a goroutine of its own with a copy of
//     the request head, and cancels its context when the client leaves
//     first: the call ends then (verdict "canceled", not logged). Without
//     an authorizer, Route hands the gateway a view of the Protocol that
//     is not a HeadAuthorizer, so connections upgrade at once with no
//     goroutine.
//   - message calls: conn.authorize starts one goroutine per call; it
//     builds the body, POSTs it and hands the answer back through
//     Loop.Run (FIFO) to conn.done, on the loop. A connection has at most
//     one call in flight; later messages wait, decoded, in its queue, so
//     each connection's messages are authorized and run strictly in
//     arrival order while other connections and the loop go on. Without an
//     authorizer, messages run at once on the loop.
//
// A message's state (*message) is owned by the loop, then by the call's
// goroutine while it is in flight (it only reads it), then by the loop
// again; it is never shared between connections.
//
// # Decisions
//
//   - Each message is decoded into fresh state (upstream bugs §8.1, §8.2).
//     Invalid JSON, a non-object, a command that is not a string, args that
//     are not an object, and a broadcast whose content Go cannot decode
//     (a number beyond float64) are ignored silently and are NOT posted to
//     the authorizer: upstream could not decode them either. A binary frame
//     that is not valid UTF-8 is ignored too (JSON text is UTF-8). null for
//     command or args means absent, as with upstream's decoder. Every
//     well-formed message is posted, unknown commands included, and an
//     unknown command then does nothing.
//   - Message calls carry {"command","args","conn"}: args exactly as the
//     client sent them (compacted, values untouched, not the trimmed
//     channel; upstream re-marshalled them through map[string]any), and
//     conn = {"id","query"} unless Options.DisableConnIdentity. The connect
//     call carries conn = {"id"}. Ids are "c-" and 16 random hex digits.
//   - Authorizer answers: 200 runs the message; 5xx, a transport error or
//     a timeout closes with 1011 "authorizer unavailable" and drops the
//     queue; anything else (3xx included: redirects are not followed)
//     drops the message silently. On connect, anything but 200 is 403 with
//     an empty body.
//   - Backlog: MaxBacklog counts the message in flight and those queued;
//     the message that would pass it closes the connection with 1008. Its
//     default is BacklogPerChannel × MaxChannels (256): a client may join
//     every channel it may hold at once on connect, with headroom.
//   - Subprotocols: a lone offered subprotocol is echoed
//     (gateway.Route.EchoLoneSubprotocol), as x/net/websocket does for
//     upstream; browsers fail a connection whose offer got no answer. With
//     several offered none is selected and the upgrade goes on without the
//     header (upstream answers 400: x/net/websocket will not choose).
//   - Redis (§7.2): on a wsify channel's raw Redis name the message is
//     exactly the JSON text members receive, in both directions, as
//     between wsify nodes: original wsify v3 nodes, gateway nodes and
//     outside tools can share one Redis. With no envelope a node cannot
//     tell its own publishes from others', so it does not deliver them
//     itself: the hub only publishes (session.Echoer), and the node's
//     members get Redis's copy like everyone else, once, in Redis's order
//     (the sender too, when it has joined). As with wsify on Redis, a join
//     takes effect when the node's SUBSCRIBE does: a broadcast made before,
//     the joiner's own included, is not delivered to it. A broadcast that
//     does not reach Redis reaches nobody, its own node included, so POST
//     /broadcast waits for Redis's answer (Hub.PublishConfirmed), as
//     upstream does: 201 once Redis took it, else 503 with Retry-After: 1
//     (upstream: 500), at once while the node knows Redis is down (a
//     publish failed; a PING every second tells when it is back). A
//     client's broadcast cannot be answered: it is queued, and refused
//     (dropped and logged, as upstream logs it) while Redis is known down;
//     one accepted in the moment Redis failed is lost for everyone.
//     A member that leaves before Redis's copy arrives does not get it, and
//     while a node's subscription connection reconnects its members miss
//     what is published meanwhile, their own node's broadcasts included. A
//     node with no member of the channel still publishes it; nothing is
//     counted lost for the members it does not have. Without Redis,
//     broadcasts are delivered locally at once.
//   - join/leave of an empty (trimmed) channel are ignored, join is
//     idempotent, leave of a channel not joined is a no-op; a broadcast to
//     an empty channel is ignored (upstream published to "", which nobody
//     can join). A broadcast the broker refuses (queue full) is dropped;
//     the hub counts it (gateway_broker_refusals_total).
//   - Content is re-encoded as upstream does (decode into any, then
//     json.Marshal) once per message, at decode time; members receive those
//     bytes as a text frame, framed once per loop (EncodeCache slot 2). The
//     sender receives its own broadcast when it has joined (no echo
//     suppression).
//   - Deliver drops a payload that is not valid UTF-8 (only outside Redis
//     publishers can produce one) and counts it in
//     gateway_dropped_messages_total{protocol="wsify",reason="invalid_utf8"},
//     once per event loop that had members of the channel.
//   - Hub channels are "#wsify:" + name: '#' names are reserved for
//     protocols, so wsify clients cannot reach native or KOsync channels.
//   - Sessions carry the claims {Subject: "wsify:<conn id>"}, so an
//     operator can revoke one wsify connection by subject; wsify has no
//     keys of its own. An operator's disconnect (the admin API's POST
//     /api/disconnect, by that subject or by the gateway's connection id)
//     closes with 3006 "closed by the operator; you may reconnect" (or the
//     operator's code and reason); nothing is revoked and the client may
//     reconnect at once. Upstream wsify has no such close.
//   - Keepalive: a Ping every 30 s, close 1001 after 60 s of silence.
//   - POST /broadcast checks key (SHA-256 digests compared in constant
//     time), then content type (mime.ParseMediaType, application/json with
//     any parameters), then the body (≤ 1 MiB, else 413), as in REFERENCE.md
//     §7.1. Every refusal has an empty body.
//   - Plain HTTP on the listener answers like Echo: {"message":"Not Found"}
//     404 everywhere but /ws and /broadcast, {"message":"Method Not
//     Allowed"} 405 for a wrong method on them, with Echo's default CORS
//     headers. A plain GET /ws (no Upgrade) gets 426.
//   - Channels per connection are capped (Options.MaxChannels, default
//     128; upstream has none): a join of one channel more closes the
//     connection with 1008 "too many channels joined: more than N". wsify
//     has no error message a refused join could answer with, and ignoring
//     it would leave the client waiting for broadcasts that never come; a
//     close is what wsify already does past its other limit (the
//     authorizer backlog). Joins, leaves and the disconnect cost O(1) per
//     channel. A join of a channel name longer than MaxChannelName (1024
//     bytes, trimmed; upstream has no cap) closes with 1008 "channel name
//     longer than 1024 bytes" too: 128 joins of 64 KiB names would pin
//     8 MiB per connection in the hub. Broadcasts and leaves take any
//     name. The gateway's message cap (64 KiB, 1009) and outbound budget
//     apply.
package wsify
