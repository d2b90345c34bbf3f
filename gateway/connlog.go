package gateway

import (
	"log/slog"
	"net/netip"

	"github.com/wsgateway/gateway/internal/ratelog"
)

// The connection lifecycle is logged at debug: "connection opened" at the
// upgrade, "authenticated" when the protocol has checked the client's
// credential (Conn.Authenticated), "connection closed" when the TCP
// connection is gone. Every line carries the same fields (README.md,
// "Logs"): conn (ConnID), protocol, remote (the peer's IP, no port), and
// subject, code, reason, by where they apply.
//
// They are rate limited like the refusals (ratelog): up to lifecycleBurst
// lines of a kind (event, protocol, and for closes who closed) per
// interval, then one line with the count, so that debugging a few clients
// shows every line and a flood of connections does not flood the log.
//
// These lines run on the event loop. With debug off they cost one
// Enabled call on the handler and nothing else: no attribute is built,
// nothing is allocated. Never log the request URI or headers: the KOsync
// JWT travels in the path, the Hypothesis key in the query.

// lifecycleBurst is how many lifecycle lines of one kind are written per
// interval (ratelog.Interval, 10 s by default) before they are counted.
const lifecycleBurst = 10

// Values of the "by" field of "connection closed".
const (
	closedByServer = "server" // the server sent the close frame first
	closedByPeer   = "peer"   // the peer sent it first, or dropped TCP
)

// codeAbnormal (1006) stands, in the log only, for a connection that
// ended without a close frame from either side (RFC 6455 7.1.5).
const codeAbnormal = 1006

// codeNoStatus (1005) stands for a peer close frame without a code.
const codeNoStatus = 1005

// debugOn reports whether the server's logger writes debug lines; the
// lifecycle lines check it before building anything.
func (s *Server) debugOn() bool { return s.lifeLog.Enabled() }

// LogAttr returns the connection's "conn" log field: its ConnID as a
// string. Protocols add it to their own lines about the connection.
func (c *Conn) LogAttr() slog.Attr { return c.ID().LogAttr() }

// LogAttr returns the "conn" log field of id.
func (id ConnID) LogAttr() slog.Attr { return slog.String("conn", id.String()) }

// logOpened writes "connection opened" (debug) after an upgrade.
func (c *Conn) logOpened() {
	s := c.loop.srv
	if !s.debugOn() {
		return
	}
	name := c.route.Protocol.Name()
	s.lifeLog.Log("opened\x00"+name, "connection opened",
		c.LogAttr(), slog.String("protocol", name), remoteAttr(c.remote.Addr()))
}

// Authenticated writes "authenticated" (debug) with the subject the
// protocol's check of the client's credential gave: a key's subject, a
// KOReader user name. Never pass the credential itself. Call it on the
// loop, once per connection.
func (c *Conn) Authenticated(subject string) {
	s := c.loop.srv
	if c.route == nil || !s.debugOn() {
		return
	}
	name := c.route.Protocol.Name()
	s.lifeLog.Log("authenticated\x00"+name, "authenticated",
		c.LogAttr(), slog.String("protocol", name), remoteAttr(c.remote.Addr()),
		slog.String("subject", ratelog.Truncate(subject, ratelog.MaxSubjectLen)))
}

// logClosed writes "connection closed" (debug) once an upgraded
// connection is gone: the close code and reason sent or received, and who
// closed first. A connection that ended without any close frame is logged
// with 1006 and by=peer.
func (c *Conn) logClosed() {
	s := c.loop.srv
	if !s.debugOn() {
		return
	}
	code, reason, by := int(c.closeCode), c.closeReason(), closedByServer
	switch {
	case c.byPeer:
		by = closedByPeer
		if code == 0 {
			code = codeNoStatus
		}
	case code == 0:
		code, reason, by = codeAbnormal, "connection lost", closedByPeer
	}
	name := c.route.Protocol.Name()
	s.lifeLog.Log("closed\x00"+name+"\x00"+by, "connection closed",
		c.LogAttr(), slog.String("protocol", name), remoteAttr(c.remote.Addr()),
		slog.Int("code", code), slog.String("reason", reason), slog.String("by", by))
}

// peerReason keeps the reason of the peer's close frame for logClosed,
// only when debug lines are written (it allocates).
func (c *Conn) peerReason(payload []byte) {
	if len(payload) > 2 && c.loop.srv.debugOn() {
		c.more().closeReason = ratelog.Truncate(string(payload[2:]), maxCloseReason)
	}
}

// maxCloseReason is the longest reason a close frame can carry (125 bytes
// of payload less the code).
const maxCloseReason = 123

// logPolicyClose leaves an info line for a 1008 close the client caused,
// collapsed per reason when they repeat.
func (c *Conn) logPolicyClose(reason string) {
	if c.state == stateOpen && c.loop.srv.policyLog.Enabled() {
		c.loop.srv.policyLog.Refused("connection closed: policy violation", c.route.Protocol.Name(), reason,
			c.remote.Addr(), "", c.LogAttr(), slog.Int("code", int(ClosePolicyViolation)))
	}
}

// Reasons of the limits' refusals in "connection refused" (info,
// collapsed per reason).
const (
	refusedOrigin      = "origin_forbidden"
	refusedMaxConns    = "max_conns"
	refusedMaxConnsIP  = "max_conns_per_ip"
	refusedAuthorizing = "max_authorizing"
)

// logRefused leaves an info line for an upgrade the limits refused: the
// origin check, the server's or the address's connection cap, the cap on
// authorizer calls. protocol is "" when it is not known yet (the address's
// cap is checked at accept, before the request is read).
func (c *Conn) logRefused(protocol, reason string, status int) {
	if !c.loop.srv.policyLog.Enabled() {
		return
	}
	c.loop.srv.policyLog.Refused("connection refused", protocol, reason, c.remote.Addr(), "",
		c.LogAttr(), slog.Int("status", status))
}

// remoteAttr is the "remote" field: the peer's IP without its port, so
// that a query on one address finds every line about it.
func remoteAttr(a netip.Addr) slog.Attr { return slog.String("remote", a.Unmap().String()) }

// refusalReason names a refusal of admit in the log: its metrics label
// says "over_limit" for every cap, the log says which.
func (lim *limiter) refusalReason(result string) string {
	if result == resultOriginForbidden {
		return refusedOrigin
	}
	return refusedMaxConns
}

// responseStatus reads the status code of a fixed "HTTP/1.1 NNN ..."
// answer; 0 if it is not one.
func responseStatus(response []byte) int {
	if len(response) < 12 {
		return 0
	}
	n := 0
	for _, b := range response[9:12] {
		if b < '0' || b > '9' {
			return 0
		}
		n = n*10 + int(b-'0')
	}
	return n
}
