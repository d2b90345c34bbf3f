package gateway

import (
	"context"
	"net/netip"

	"github.com/gobwas/ws"
)

// Protocol is one wire format spoken over WebSocket. The server picks it by
// listener and path when a request upgrades; from then on the connection's
// Handler speaks it. Implementations must be goroutine-safe: every loop
// calls Accept.
type Protocol interface {
	// Name labels the protocol in metrics and logs ("native", "kosync", ...).
	Name() string
	// Accept runs on the loop once the upgrade request is parsed and valid,
	// before the 101 answer. It returns the connection's handler, or an
	// error to refuse the upgrade: a *HTTPError chooses the status, any
	// other error answers 500. It must not block.
	Accept(r *Request) (Handler, error)
}

// HeadAuthorizer is implemented by a Protocol that must ask an outside
// party before it upgrades (wsify's connect webhook). AuthorizeHead runs on
// a goroutine of its own, never on a loop, with a copy of the request head
// (parse it with net/http's ReadRequest); meanwhile the connection waits.
// A nil error upgrades, and state reaches Accept as Request.Authorized; an
// *HTTPError refuses with its status and an empty body, any other error
// with 403. ctx is canceled when the connection closes meanwhile (the
// client left, the handshake timed out, the server stops): end the call
// then, its answer is dropped. At most Options.MaxAuthorizing calls run at
// once, server-wide. ConnIDFrom(ctx) names the connection, for log lines.
type HeadAuthorizer interface {
	AuthorizeHead(ctx context.Context, head []byte, remote netip.AddrPort) (state any, err error)
}

// Handler is one connection's protocol state. Every method runs on the
// connection's event loop.
type Handler interface {
	// OnOpen runs right after the upgrade. What it sends goes out in the
	// same write as the 101 answer (the native hello, the KOsync hello).
	OnOpen(c *Conn)
	// OnMessage gets one whole message: fragments joined, unmasked, text
	// checked for UTF-8 when the route says so. payload is valid only during
	// the call: copy what must outlive it.
	OnMessage(c *Conn, op ws.OpCode, payload []byte)
	// OnDeadline runs when the deadline set with Conn.SetDeadline passes.
	// The handler closes the connection with its protocol's code or moves
	// the deadline.
	OnDeadline(c *Conn)
	// OnClose runs once when the connection is gone, whatever ended it.
	OnClose(c *Conn)
}

// Route binds a path on a listener to a protocol.
type Route struct {
	// Listener names the listener (AddListener); zero means the main one.
	Listener string
	// Path is matched exactly, or as a prefix when it ends in "/".
	Path     string
	Protocol Protocol
	// Text allows text messages, checked for valid UTF-8 (close 1007).
	// Without it a text message closes the connection with 1003.
	Text bool
	// Subprotocols the route may select (Sec-WebSocket-Protocol): the first
	// one the client offers that is in this list; none if the client offers
	// only others. Zero means the route selects none.
	Subprotocols []string
	// EchoLoneSubprotocol selects the subprotocol a client offers when it
	// offers exactly one and Subprotocols does not list it, whatever it is,
	// as wsify's x/net/websocket server does: browsers fail a connection
	// whose offer got no answer. With several offered, none of them listed,
	// none is selected. Zero (false) means only Subprotocols are selected.
	EchoLoneSubprotocol bool
	// Browser marks a protocol browsers speak (KOsync, Hypothesis, wsify,
	// echo): its upgrades carrying an Origin header are checked against
	// Limits.AllowedOrigins (403 when not allowed), against cross-site
	// WebSocket hijacking. Native clients are not browsers: their routes
	// ignore Origin.
	Browser bool
	// Forbidden is the whole HTTP response (status line to body) answering
	// an upgrade refused by its Origin, for a protocol with its own error
	// shape; it must close the connection (Connection: close). Zero means
	// the gateway's 403 text/plain "origin not allowed".
	Forbidden []byte
	// InternalError is the close code sent when the protocol's handler
	// panics (the panic is logged and the server goes on); zero means
	// CloseInternalError (1011).
	InternalError uint16

	index int // the protocol's slot in per-loop counters
}

// Request is an upgrade request as a Protocol sees it. It and every slice in
// it are valid only during Accept: the loop reuses them.
type Request struct {
	// URI is the request target: path and query, as sent.
	URI []byte
	// Path is URI up to the query.
	Path []byte
	Host []byte
	// Origin, Authorization, ForwardedFor and ForwardedProto are the values
	// of those headers, or nil.
	Origin, Authorization, ForwardedFor, ForwardedProto []byte
	Remote                                              netip.AddrPort
	// Authorized is what the protocol's HeadAuthorizer returned, if any.
	Authorized any
	// ID names the connection being upgraded, for the protocol's log
	// lines (ID.LogAttr).
	ID ConnID
}

// HTTPError refuses an upgrade with an HTTP status and a short text.
type HTTPError struct {
	Status int
	Text   string
}

func (e *HTTPError) Error() string { return e.Text }
