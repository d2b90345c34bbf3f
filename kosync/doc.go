// Package kosync makes the gateway a complete KOReader sync server with the
// KOsync live API: the KOReader sync HTTP endpoints (Part A of the reference,
// answered exactly as koreader-sync-server does), KOsync's /api/* endpoints
// and JWTs, and the KOsync WebSocket API on the gateway's event loops, with
// users and documents in one Store (bbolt in the data dir, or Redis for a
// cluster).
//
// # Concurrency
//
// HTTP handlers run on net/http goroutines and may block on the store. The
// WebSocket handler (wsConn) runs on its connection's event loop and never
// blocks: store work runs on a goroutine and comes back through Loop.Run,
// one request at a time per connection, so replies keep the order of
// requests. Store implementations are goroutine-safe.
//
// # Announces
//
// Every committed document write is published on the hub channel
// "#kosync:<username>" (hub channels starting with '#' are reserved for the
// gateway's protocols: native clients cannot name them). The payload is the
// whole pubsub frame, encoded once; every subscribed socket of that user, on
// every node, receives it. The admin API refuses to publish there
// (POST /api/publish answers 400 for '#' channels), so nothing but those
// frames reaches the sockets.
//
// # Closes
//
// A socket's session has the subject "kosync:<username>": a revocation of
// it closes the user's sockets with 3004, and an operator's disconnect
// (POST /api/disconnect) with 3006 "closed by the operator; you may
// reconnect", a WebSocket close with no KOsync frame before it; the client
// may reconnect with the same JWT.
package kosync
