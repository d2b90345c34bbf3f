package gateway

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/session"
)

// DefaultDisconnectCode is the close code of an operator's disconnect when
// none is given: 3006 "disconnected", which tells clients they may
// reconnect with the same key (PROTOCOL.md §8).
const DefaultDisconnectCode = packet.CloseDisconnected

// DefaultDisconnectReason is the close reason of an operator's disconnect
// when none is given.
const DefaultDisconnectReason = "closed by the operator; you may reconnect"

// Disconnect is an operator's request to close connections without
// revoking anything (POST /api/disconnect): every session of Subject, or
// the one connection Conn. Exactly one of them is set.
type Disconnect struct {
	Subject string
	Conn    ConnID
	// Code is the close code (3000 to 4999); Reason the close reason (at
	// most MaxCloseReason bytes).
	Code   uint16
	Reason string
	// Remote: the request came from another node through Redis (the
	// origin label of gateway_operator_disconnects_total).
	Remote bool
}

// Tag returns the server's random tag, the Node of every ConnID it hands
// out: a disconnect by connection id acts only on the server it names.
func (s *Server) Tag() uint32 { return s.tag }

// ForThisServer reports whether d may name connections of s: a subject may
// have sessions anywhere, a connection id lives on the server it names.
func (s *Server) ForThisServer(d Disconnect) bool {
	return d.Subject != "" || d.Conn.Node == s.tag
}

// Disconnect closes, each on its own event loop, the connections of this
// server that d names, with d's code and reason, and calls done (when not
// nil) once every loop has done its part, with how many it closed, from
// the loop that finished last. Nothing is revoked: the client may
// reconnect with the same key. If the server stops before a loop runs its
// part, done is never called: a caller that waits bounds its wait.
//
// By subject it walks each shard's sessions, as a revocation sweep does
// (sessions are not indexed by subject: see package session). By
// connection id it walks each loop's timing wheel, which holds every
// connection of the loop from accept to close (a handshake deadline, then
// the protocol's ping or keepalive, then the close grace; shutdown relies
// on the same). An index from id to connection would cost a map entry per
// connection (about 40 bytes on top of the ~1.2 KiB an idle connection
// costs, and map growth on the accept path) for an operation an operator
// runs by hand; the walk costs a few milliseconds per 100,000 connections,
// on each loop once, off any hot path.
func (s *Server) Disconnect(d Disconnect, done func(closed int)) {
	loops := s.allLoops()
	if !s.ForThisServer(d) || len(loops) == 0 {
		if done != nil {
			done(0)
		}
		return
	}
	run := &disconnectRun{s: s, d: d, done: done}
	run.left.Store(int32(len(loops)))
	for _, l := range loops {
		l.Run(run.onLoop, l)
	}
}

// disconnectRun is one Disconnect across the loops.
type disconnectRun struct {
	s      *Server
	d      Disconnect
	done   func(int)
	closed atomic.Int64
	left   atomic.Int32
}

// onLoop does the run's part on one loop, then finishes the run if it is
// the last.
func (r *disconnectRun) onLoop(arg any) {
	l := arg.(*Loop)
	var n int
	func() {
		// A panic in a Sink fails that session (the shard recovers it); one
		// here must not keep done from being called.
		defer func() {
			if v := recover(); v != nil {
				l.srv.panicked(nil, "disconnect", v)
			}
		}()
		n = l.disconnect(r.d)
	}()
	if n > 0 {
		r.s.metrics.operatorDisconnects(r.d.Remote).Add(float64(n))
		r.closed.Add(int64(n))
	}
	if r.left.Add(-1) == 0 && r.done != nil {
		r.done(int(r.closed.Load()))
	}
}

// disconnect closes the loop's connections that d names; it returns how
// many it told to close.
func (l *Loop) disconnect(d Disconnect) int {
	if d.Subject != "" {
		if l.shard == nil {
			return 0
		}
		n := 0
		l.shard.Each(func(s *session.Session) {
			if s.Claims.Subject == d.Subject {
				s.Sink.Close(d.Code, d.Reason)
				n++
			}
		})
		return n
	}
	var target *Conn
	l.wheel.Each(func(c *Conn) { // Each must not re-arm timers: Close runs after
		if c.seq == d.Conn.Seq {
			target = c
		}
	})
	if target == nil || target.state >= stateClosing {
		return 0
	}
	target.Close(d.Code, d.Reason) // a handshake in progress is dropped at once
	return 1
}

// operatorDisconnects returns the counter of connections closed by
// operator disconnects from this node's admin API (remote false) or from
// another node's, through Redis (remote true).
func (m *metrics) operatorDisconnects(remote bool) prometheus.Counter {
	if remote {
		return m.opDisconnectsCluster
	}
	return m.opDisconnectsLocal
}

// newOperatorDisconnects registers gateway_operator_disconnects_total.
func (m *metrics) newOperatorDisconnects() {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_operator_disconnects_total",
		Help: "Connections closed by an operator's disconnect (POST /api/disconnect), by origin: local (this node's admin API) or cluster (another node's, through Redis).",
	}, []string{"origin"})
	m.reg.MustRegister(v)
	m.opDisconnectsLocal, m.opDisconnectsCluster = v.WithLabelValues("local"), v.WithLabelValues("cluster")
}
