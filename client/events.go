package client

import "sync"

// events is the dispatcher's queue. It is bounded (Options.QueueSize): when
// it is full the reader waits, so a slow application slows the server's
// writes down to it. One exception keeps that from becoming a deadlock: a
// callback running on the dispatcher may call a request method (doc.go),
// whose answer only the reader can take; while one does, the reader goes
// on queueing past the bound.
type events struct {
	mu      sync.Mutex
	cond    sync.Cond
	items   []func()
	bound   int
	closed  bool // no more pushes; pop drains what is left
	halted  bool // the client closes: pushes that do not fit are dropped
	inCall  bool // the dispatcher is running a callback
	waiting int  // requests waiting for their answer
}

func newEvents(bound int) *events {
	q := &events{bound: bound}
	q.cond.L = &q.mu
	return q
}

// push queues fn, waiting while the queue is full (see events).
func (q *events) push(fn func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) >= q.bound && !q.closed && !q.halted && !(q.inCall && q.waiting > 0) {
		q.cond.Wait()
	}
	if q.closed || (q.halted && len(q.items) >= q.bound) {
		return
	}
	q.items = append(q.items, fn)
	q.cond.Broadcast()
}

// pop takes the next callback and marks the dispatcher busy with it;
// false once closed and drained.
func (q *events) pop() (func(), bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inCall = false
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return nil, false
	}
	fn := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	q.inCall = true
	q.cond.Broadcast()
	return fn, true
}

// request marks a request waiting for its answer (+1) or answered (-1).
func (q *events) request(delta int) {
	q.mu.Lock()
	q.waiting += delta
	q.cond.Broadcast()
	q.mu.Unlock()
}

// halt makes pushes that do not fit drop instead of wait (the client
// closes); close ends the queue once drained.
func (q *events) halt()  { q.set(&q.halted) }
func (q *events) close() { q.set(&q.closed) }

func (q *events) set(flag *bool) {
	q.mu.Lock()
	*flag = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
