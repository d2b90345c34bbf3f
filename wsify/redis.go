package wsify

import (
	"cmp"
	"strings"

	"github.com/wsgateway/gateway/session"
)

// RedisChannelName returns the session.RedisBrokerOptions.ChannelName of a
// node that speaks wsify (§7.2). A wsify channel n (hub channel
// "#wsify:"+n) travels on the Redis channel wsifyPrefix+n: with the default
// empty prefix that is the raw name, as wsify does, so
//
//	redis-cli PUBLISH hello '{"x":1}'
//
// reaches the members of "hello" on every node, verbatim. Every other hub
// channel keeps the broker's own name, brokerPrefix+"ch:"+c (an empty
// brokerPrefix means session.DefaultRedisPrefix, as for the broker).
//
// A wsify name that would fall inside the broker's namespace (wsifyPrefix+n
// starting with brokerPrefix, e.g. "gateway:ch:user.1" or
// "gateway:revocations") is not used raw: that channel travels on
// brokerPrefix+"ch:#wsify:"+n instead, so a wsify client can neither
// listen to nor inject into the gateway's own channels (nor break the
// broker's barriers). Such wsify channels still work across gateway nodes,
// but outside publishers must use that name.
//
// Give the broker RedisChannelRaw with the same prefixes as its Raw.
func RedisChannelName(wsifyPrefix, brokerPrefix string) func(string) string {
	raw := RedisChannelRaw(wsifyPrefix, brokerPrefix)
	own := cmp.Or(brokerPrefix, session.DefaultRedisPrefix) + "ch:"
	return func(c string) string {
		if raw(c) {
			return wsifyPrefix + c[len(ChannelPrefix):]
		}
		return own + c
	}
}

// RedisChannelRaw returns the session.RedisBrokerOptions.Raw of a node
// that speaks wsify: true for the hub channels RedisChannelName maps to a
// raw name (wsifyPrefix+n), so that on them the Redis message is exactly
// the JSON text wsify clients receive, in both directions, with no
// envelope, as original wsify nodes and any other subscriber of the
// channel expect. The broker then delivers a node's own broadcasts back
// to it through Redis, and the hub skips delivering them locally (see
// session.Echoer): every node, gateway or original wsify, delivers each
// broadcast once, in Redis's order. Channels inside the broker's namespace
// keep the envelope. It does not allocate.
func RedisChannelRaw(wsifyPrefix, brokerPrefix string) func(string) bool {
	brokerPrefix = cmp.Or(brokerPrefix, session.DefaultRedisPrefix)
	return func(c string) bool {
		n, ok := strings.CutPrefix(c, ChannelPrefix)
		if !ok {
			return false
		}
		// Whether wsifyPrefix+n starts with brokerPrefix, without
		// building wsifyPrefix+n.
		if len(wsifyPrefix) >= len(brokerPrefix) {
			return !strings.HasPrefix(wsifyPrefix, brokerPrefix)
		}
		rest, ok := strings.CutPrefix(brokerPrefix, wsifyPrefix)
		return !ok || !strings.HasPrefix(n, rest)
	}
}
