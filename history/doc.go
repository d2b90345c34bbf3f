// Package history keeps the recent publications of channels with a
// position for each, so that a client that lost its connection can ask for
// what it missed (PROTOCOL.md §5.1).
//
// A position is an epoch and an offset. Every publication on a channel
// that keeps history gets the next offset (1 for the first of an epoch).
// The epoch is a random non-zero int64 drawn when a channel's offsets
// start, and drawn again whenever the store can no longer tell which
// offsets it gave: a MemoryStore in a new process, a Redis that lost the
// channel's metadata (restarted empty, or the metadata expired). Offsets
// never repeat within an epoch.
//
// A channel keeps exactly its last Options.Size publications that are
// younger than Options.TTL: trimming is exact, never approximate. A
// publication trimmed by size or age does not change the epoch; asking for
// it just cannot be satisfied (Recovery.Recovered false).
//
// Two stores implement Store: MemoryStore for a node alone (nothing
// survives a restart, so a restarted node starts new epochs), and
// RedisStore, where one Lua script per publish assigns the offset, appends,
// trims, sets the expiry and publishes the message with its position in one
// atomic step, so every node sees the same offsets in the same order.
package history
