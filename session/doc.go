// Package session keeps the gateway's live sessions, their channel
// subscriptions and the per-loop timers, independently of sockets and gnet.
//
// # Shape
//
// A Hub is the node-wide view: which event loops have subscribers of which
// channel, and the Broker that links this node to the others. Each event loop
// owns one Shard: its sessions, its topics (channel -> subscribed sessions)
// and a reusable encoding cache. A Session is one authenticated connection,
// whatever protocol it speaks; its connection side is a Sink.
//
// # The loop boundary
//
// Shard, Session, Wheel and every Sink method run on the shard's event loop
// and are not goroutine-safe. Hub methods are goroutine-safe. Work for a loop
// enters it through Loop.Run only, which keeps order: a publish becomes one
// task per loop that has subscribers of the channel, never one per session,
// and the frame each protocol needs is encoded once per loop.
//
// # Cost per connection
//
// A session holds at most Session.MaxSubscriptions channels (default
// DefaultMaxSubscriptions, 128); Shard.Subscribe refuses one more with
// ErrTooManySubscriptions, which each protocol answers in its own terms.
// Subscribe, Unsubscribe and the lookup behind them are O(1) (a session
// indexes its channels once it holds more than a few), and Remove is
// O(the session's subscriptions): one connection cannot hold its loop for
// long, whatever it sends.
//
// # Memory
//
// Sessions are not indexed by subject or key id: revocation is rare, so a
// revocation scans each shard's session list once (on the shard's loop). That
// saves two map entries per connection, which matters at 100,000 connections.
package session
