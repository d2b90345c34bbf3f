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
	"time"

	"github.com/redis/go-redis/v9"
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

// subscribe subscribes to channel: SSUBSCRIBE on a cluster (on the master
// that owns its slot, found again at each reconnect), else SUBSCRIBE.
func subscribe(ctx context.Context, c redis.UniversalClient, channel string) *redis.PubSub {
	if Cluster(c) {
		return c.SSubscribe(ctx, channel)
	}
	return c.Subscribe(ctx, channel)
}

// ErrClosed is Listen's error when the client was closed under it.
var ErrClosed = errors.New("subscription closed")

// resubscribeWait bounds how long a subscription made again after a slot
// move may stay unconfirmed before Listen tries once more: go-redis sends
// it to the master its slot map names, and refreshes that map only in the
// background (ReloadState), so the first try may reach the old master,
// whose MOVED answer go-redis's pub/sub drops in silence.
const resubscribeWait = 500 * time.Millisecond

// pingEvery is how often Listen checks a sharded subscription's
// connection on a cluster.
const pingEvery = time.Second

// Listen subscribes to channel (see subscribe) until ctx ends. It calls
// onSubscribed at every subscription confirmation, the first and the one
// after each automatic reconnect (messages published meanwhile are lost),
// and onMessage with each message's payload, one call at a time on
// Listen's goroutine. It returns nil when ctx ends, ErrClosed if the
// client was closed.
//
// On a cluster, go-redis reconnects a sharded subscription to the master
// its slot map names, and refreshes that map only when other commands
// fail: after a failover it would keep dialing the dead master. Listen
// pings the subscription every pingEvery and has the map refreshed when
// the ping fails. And Redis ends a sharded subscription when the
// channel's slot moves to another shard (an unasked "sunsubscribe"):
// Listen then subscribes again, where the cluster now says the slot
// lives, until a subscription is confirmed.
func Listen(ctx context.Context, c redis.UniversalClient, channel string, onSubscribed func(), onMessage func(payload string)) error {
	var wait time.Duration // none for the first subscription: Redis may be down
	for {
		ps := subscribe(ctx, c, channel)
		stop := make(chan struct{})
		if cc, ok := c.(*redis.ClusterClient); ok {
			go pingLoop(ctx, cc, ps, stop)
		}
		moved, err := listenOnce(ctx, ps, wait, onSubscribed, onMessage)
		close(stop)
		if !moved {
			return err
		}
		c.(*redis.ClusterClient).ReloadState(ctx)
		wait = resubscribeWait
	}
}

// pingLoop pings ps every pingEvery until stop is closed, and has cc
// refresh its slot map after a failed ping (the ping itself redials).
func pingLoop(ctx context.Context, cc *redis.ClusterClient, ps *redis.PubSub, stop <-chan struct{}) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if ps.Ping(ctx) != nil {
				cc.ReloadState(ctx)
			}
		}
	}
}

// listenOnce serves one subscription until ctx ends (nil), the client is
// closed (ErrClosed), or its slot moved or it stayed unconfirmed for wait
// (0: forever) (moved).
func listenOnce(ctx context.Context, ps *redis.PubSub, wait time.Duration, onSubscribed func(), onMessage func(string)) (moved bool, err error) {
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	var unconfirmed <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		unconfirmed = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-unconfirmed:
			return true, nil
		case m, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return false, nil
				}
				return false, ErrClosed
			}
			switch m := m.(type) {
			case *redis.Subscription:
				switch m.Kind {
				case "subscribe", "ssubscribe":
					unconfirmed = nil
					onSubscribed()
				case "sunsubscribe":
					return true, nil
				}
			case *redis.Message:
				onMessage(m.Payload)
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
