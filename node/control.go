package node

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/redismode"
	"github.com/wsgateway/gateway/session"
)

// The control channel carries operators' requests between nodes: today a
// disconnect (POST /api/disconnect) made on one node's admin API. It is
// the Redis pub/sub channel <prefix>control, beside <prefix>revocations
// (which carries revocations the same way, but for token.RedisStore): a
// name inside the broker's namespace, so no wsify channel maps onto it
// (wsify.RedisChannelName). Like every pub/sub message, a request is lost
// for a node cut off from Redis when it is sent; a disconnect is a nudge,
// not a state, so nothing replays it (a revocation is the durable tool).
// On a Redis Cluster it is a sharded channel (SPUBLISH/SSUBSCRIBE, see
// redismode), carried by the shard that owns its slot.

// controlChannel names the control channel under the broker's prefix.
func controlChannel(prefix string) string { return prefix + "control" }

// controlMessage is one request on the control channel, as JSON.
type controlMessage struct {
	Op      string `json:"op"`   // "disconnect"; other ops are ignored
	From    string `json:"from"` // the sender's server tag, 8 hex digits: it acted itself
	Subject string `json:"subject,omitempty"`
	Conn    string `json:"conn,omitempty"` // a gateway.ConnID: only the node it names acts
	Code    uint16 `json:"code"`
	Reason  string `json:"reason"`
}

const opDisconnect = "disconnect"

func (n *Node) controlChannel() string {
	return controlChannel(cmp.Or(n.cfg.RedisPrefix, session.DefaultRedisPrefix))
}

func (n *Node) tag() string { return fmt.Sprintf("%08x", n.Server.Tag()) }

// forwardDisconnect is the admin's Forward: it publishes d on the control
// channel and returns how many other nodes received it (Redis counts the
// subscribers reached; this node's own subscription is one of them).
func (n *Node) forwardDisconnect(ctx context.Context, d gateway.Disconnect) (int, error) {
	m := controlMessage{Op: opDisconnect, From: n.tag(), Subject: d.Subject, Code: d.Code, Reason: d.Reason}
	if d.Subject == "" {
		m.Conn = d.Conn.String()
	}
	b, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	got, err := redismode.Publish(ctx, n.redis, n.controlChannel(), b).Result()
	if err != nil {
		return 0, err
	}
	if n.controlLive.Load() {
		got-- // this node's own subscription
	}
	return int(max(got, 0)), nil
}

// watchControl listens on the control channel until ctx ends and acts on
// the requests of other nodes; it resubscribes by itself after a
// reconnect (redismode.Listen).
func (n *Node) watchControl(ctx context.Context) {
	_ = redismode.Listen(ctx, n.redis, n.controlChannel(),
		func() { n.controlLive.Store(true) },
		func(payload string) { n.control([]byte(payload)) })
}

// control acts on one request from the control channel. Malformed ones
// (another tool publishing there) are ignored.
func (n *Node) control(payload []byte) {
	var m controlMessage
	if json.Unmarshal(payload, &m) != nil || m.Op != opDisconnect || m.From == n.tag() {
		return
	}
	if m.Code < 3000 || m.Code > 4999 || len(m.Reason) > gateway.MaxCloseReason {
		return
	}
	d := gateway.Disconnect{Subject: m.Subject, Code: m.Code, Reason: m.Reason, Remote: true}
	switch {
	case m.Subject != "" && m.Conn == "":
	case m.Subject == "" && m.Conn != "":
		id, err := gateway.ParseConnID(m.Conn)
		if err != nil {
			return
		}
		d.Conn = id
	default:
		return
	}
	if !n.Server.ForThisServer(d) {
		return
	}
	from := m.From
	n.Server.Disconnect(d, func(closed int) {
		n.log.Info("operator disconnect from another node", "from", from, "subject", d.Subject, "conn", m.Conn,
			"code", d.Code, "reason", d.Reason, "closed", closed)
	})
}

// clusterStatusWait bounds how long the status page waits for Redis.
const clusterStatusWait = time.Second

// clusterStatus is the admin's Cluster: Redis's state and how many nodes
// listen on the control channel.
func (n *Node) clusterStatus(ctx context.Context) gateway.ClusterStatus {
	if n.redis == nil {
		return gateway.ClusterStatus{Nodes: -1}
	}
	st := gateway.ClusterStatus{Redis: redisAddr(n.redis), RedisUp: n.redisUp.Load(), Nodes: -1}
	ctx, cancel := context.WithTimeout(ctx, clusterStatusWait)
	defer cancel()
	subs, err := redismode.NumSub(ctx, n.redis, n.controlChannel())
	if err != nil {
		st.NodesErr = err.Error()
		return st
	}
	st.Nodes = int(subs)
	return st
}
