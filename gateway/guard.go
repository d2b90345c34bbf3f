package gateway

import (
	"runtime/debug"
	"time"
)

// No panic leaves an event loop: gnet would end the process, and every
// connection of every protocol with it. Each way into connection code from
// gnet or the task queue is guarded here: OnTraffic (handshake, frames,
// OnMessage), OnClose, deadlines from the wheel, loop tasks (Loop.Run,
// Conn.Run, After) and the hub's calls into a session's Sink
// (Loop.SinkPanicked); and off the loops, the goroutines that work for a
// connection (the head authorizer's call, and a protocol's through
// RecoverOffLoop). A recovered panic is counted in
// gateway_handler_panics_total, logged with its stack, and fails only the
// connection concerned.

// panicked records a recovered panic and fails c (nil: no connection is
// concerned) with its route's internal-error code.
func (s *Server) panicked(c *Conn, where string, v any) {
	s.metrics.panics.Inc()
	attrs := []any{"where", where, "panic", v, "stack", string(debug.Stack())}
	if c != nil {
		attrs = append(attrs, c.LogAttr(), remoteAttr(c.remote.Addr()))
		if c.route != nil {
			attrs = append(attrs, "protocol", c.route.Protocol.Name())
		}
	}
	s.logger.Error("panic recovered on an event loop", attrs...)
	if c != nil {
		c.failAfterPanic()
	}
}

// failAfterPanic ends a connection whose code panicked: a session is sent
// the internal-error close, a handshake is dropped. The connection's state
// may be half-updated, so a second panic here only leaves it to its
// deadline.
func (c *Conn) failAfterPanic() {
	defer func() { _ = recover() }()
	switch c.state {
	case stateOpen:
		c.fail(CloseInternalError, "internal server error")
	case stateHandshake:
		c.closeNow()
	}
}

// panickedOffLoop records a panic recovered in a goroutine working for c
// (an authorizer call, a store request): counted and logged like one on a
// loop; the caller still delivers its outcome, or c fails through
// RecoverOffLoop.
func (s *Server) panickedOffLoop(c *Conn, where string, v any) {
	s.metrics.panics.Inc()
	s.logger.Error("panic recovered off the event loops", "where", where, c.LogAttr(), remoteAttr(c.remote.Addr()),
		"panic", v, "stack", string(debug.Stack()))
}

// RecoverOffLoop is deferred in a goroutine a protocol starts on c's
// behalf: a panic there would end the process. It is counted and logged,
// and c fails on its loop with its protocol's internal-error code. It is
// goroutine-safe.
func (c *Conn) RecoverOffLoop(where string) {
	if v := recover(); v != nil {
		c.loop.srv.panickedOffLoop(c, where, v)
		c.Run(func(any) { c.failAfterPanic() }, nil)
	}
}

// recoverConn is deferred around a call into c's code.
func (c *Conn) recoverConn(where string) {
	if v := recover(); v != nil {
		c.loop.srv.panicked(c, where, v)
	}
}

// Run queues fn(arg) on the connection's loop like Loop.Run, for work done
// on c's behalf off the loop (an authorizer's answer, a store's result): a
// panic in fn fails c alone. fn runs even if c closed meanwhile; check
// Open. Unlike Conn's other methods, Run is goroutine-safe.
func (c *Conn) Run(fn func(any), arg any) {
	c.loop.enqueue(task{fn: fn, arg: arg, conn: c, size: -1})
}

// After is Loop.After on c's behalf: a panic in fn fails c alone.
func (c *Conn) After(d time.Duration, fn func(any), arg any) { c.loop.after(d, fn, arg, c) }
