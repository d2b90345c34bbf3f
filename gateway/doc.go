// Package gateway owns the sockets: gnet event loops, the HTTP upgrade done
// on the loop with gobwas/ws, the WebSocket frame layer, the close handshake,
// the hand-off of plain HTTP requests to net/http, the admin listener and
// the metrics. Protocols plug in through the Protocol and Handler seam; they
// never touch a socket.
//
// # The loop boundary
//
// gnet runs each connection on one event loop goroutine. Conn, Loop (apart
// from Loop.Run) and every Handler method run on the connection's loop and
// are not goroutine-safe. Other goroutines reach a loop only through
// Loop.Run, a FIFO queue per loop woken by one gnet Execute per batch: gnet's
// own task queues may reorder tasks under load, and deliveries must keep
// their order. What the tasks of one batch send to a connection collects in
// its outbox and leaves in one write when the batch ends. Server and Admin
// methods are goroutine-safe.
//
// # Per connection
//
// A connection costs a Conn (about 150 bytes), its gnet buffers and, once
// authenticated, its protocol's session. There is no goroutine and no
// runtime timer per connection: deadlines (handshake, ping, key expiry,
// close grace) live in one timing wheel per loop, advanced once a second.
package gateway
