package wsify

import (
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
func RedisChannelName(wsifyPrefix, brokerPrefix string) func(string) string {
	if brokerPrefix == "" {
		brokerPrefix = session.DefaultRedisPrefix
	}
	own := brokerPrefix + "ch:"
	return func(c string) string {
		if n, ok := strings.CutPrefix(c, ChannelPrefix); ok {
			if raw := wsifyPrefix + n; !strings.HasPrefix(raw, brokerPrefix) {
				return raw
			}
		}
		return own + c
	}
}
