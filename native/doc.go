// Package native speaks the gateway's native byte protocol (PROTOCOL.md):
// the hello, the access-key authentication, pings, settings and the
// publish/subscribe extensions, on top of the gateway's frame layer and the
// session hub.
//
// A connection's handler (type conn) is both the gateway.Handler of its
// WebSocket and the session.Sink of its session. Every method runs on the
// connection's event loop; Protocol is goroutine-safe.
package native
