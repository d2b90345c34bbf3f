// Package redismode picks, for a go-redis client, the pub/sub commands
// that reach every subscriber: classic PUBLISH/SUBSCRIBE on a single
// Redis (plain or behind Sentinel), sharded SPUBLISH/SSUBSCRIBE on a Redis
// Cluster.
//
// On a cluster a classic PUBLISH is broadcast to every node over the
// cluster bus (its cost grows with the cluster) and reaches only classic
// subscribers, while the gateway's subscribers in cluster mode listen
// with SSUBSCRIBE; a Lua script that SPUBLISHes must do so on a channel in
// the slot of its keys. The stores (revocations, history) and the node's
// control channel ask here which commands to use.
package redismode

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/shardps"
)

// Cluster reports whether c is a Redis Cluster client.
func Cluster(c redis.UniversalClient) bool {
	_, ok := c.(*redis.ClusterClient)
	return ok
}

// PublishCommand is the command a Lua script calls to publish through c:
// "SPUBLISH" on a cluster (the channel must then be in the slot of the
// script's keys), else "PUBLISH".
func PublishCommand(c redis.UniversalClient) string {
	if Cluster(c) {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// Publish publishes msg on channel: SPUBLISH on a cluster, else PUBLISH.
// Its answer counts the subscribers reached (on a cluster: those of the
// shard that owns channel, which are all the sharded ones).
func Publish(ctx context.Context, c redis.UniversalClient, channel string, msg any) *redis.IntCmd {
	if Cluster(c) {
		return c.SPublish(ctx, channel, msg)
	}
	return c.Publish(ctx, channel, msg)
}

// ErrClosed is Listen's error when the client was closed under it.
var ErrClosed = errors.New("subscription closed")

// logger receives the warnings of Listen's sharded subscriptions; nil
// means slog.Default().
var logger atomic.Pointer[slog.Logger]

// SetLogger sends the warnings of Listen on a cluster (a shard's
// connection lost, a command refused: see shardps) to l instead of
// slog.Default(), which the gateway does not configure. One per process,
// the first call's, like go-redis's own logger: the node sets both.
func SetLogger(l *slog.Logger) { logger.CompareAndSwap(nil, l) }

// listenBuffer is the output buffer of a sharded Listen: its channels
// carry rare control messages.
const listenBuffer = 256

// Listen subscribes to channel until ctx ends: SUBSCRIBE on a single Redis,
// SSUBSCRIBE on a cluster (internal/shardps, as the broker's channels:
// on the master that owns channel's slot, followed through failovers and
// slot migrations). It calls onSubscribed at every subscription
// confirmation, the first and the one after each reconnect (messages
// published meanwhile are lost), and onMessage with each message's
// payload, one call at a time on Listen's goroutine. It returns nil when
// ctx ends, ErrClosed if the client was closed (on a cluster: when a slot
// map reload, which a fault or a slot move asks for, finds it closed).
func Listen(ctx context.Context, c redis.UniversalClient, channel string, onSubscribed func(), onMessage func(payload string)) error {
	if cc, ok := c.(*redis.ClusterClient); ok {
		return listenSharded(ctx, cc, channel, onSubscribed, onMessage)
	}
	ps := c.Subscribe(ctx, channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return ErrClosed
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					onSubscribed()
				}
			case *redis.Message:
				onMessage(m.Payload)
			}
		}
	}
}

// listenSharded is Listen on a cluster: a shardps subscription of its own,
// confirmed by a barrier, then by each Reconnected.
func listenSharded(ctx context.Context, cc *redis.ClusterClient, channel string, onSubscribed func(), onMessage func(string)) error {
	ps := shardps.New(shardps.Options{Cluster: cc, Buffer: listenBuffer, Logger: logger.Load()})
	defer ps.Close()
	ps.Subscribe(channel)
	ps.Barrier(channel, channel)
	for {
		select {
		case <-ctx.Done():
			return nil
		case v, ok := <-ps.Channel():
			if !ok {
				return ErrClosed // only the client's close ends it
			}
			switch v := v.(type) {
			case *redis.Message:
				onMessage(v.Payload)
			case shardps.Barrier, shardps.Reconnected:
				onSubscribed()
			}
		}
	}
}

// NumSub returns the number of subscribers of channel: PUBSUB
// SHARDNUMSUB asked of the master that owns channel's slot on a cluster
// (go-redis would send it to any node, which counts only its own), else
// PUBSUB NUMSUB.
func NumSub(ctx context.Context, c redis.UniversalClient, channel string) (int64, error) {
	var m map[string]int64
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		var master *redis.Client
		if master, err = cc.MasterForKey(ctx, channel); err == nil {
			m, err = master.PubSubShardNumSub(ctx, channel).Result()
		}
	} else {
		m, err = c.PubSubNumSub(ctx, channel).Result()
	}
	return m[channel], err
}
