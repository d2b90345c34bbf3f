package gateway

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/wsgateway/gateway/session"
)

// Loop is the gateway's state for one gnet event loop: its shard of the
// session hub, its timing wheel, its handshake parser and its scratch
// buffers. Everything but Run runs on the loop.
type Loop struct {
	srv   *Server
	el    gnet.EventLoop
	index int
	shard *session.Shard
	wheel session.Wheel[Conn]
	stats loopStats

	// out collects what the connection in OnTraffic sends, written with one
	// c.Write when OnTraffic ends. cur is that connection.
	out []byte
	cur *Conn
	// scratch builds a frame written outside OnTraffic.
	scratch []byte
	// spareFrame is a buffer kept for the next large frame that arrives in
	// pieces (inbound.go). largeUsed: a buffer over maxKeptScratch was used
	// since the last tick.
	spareFrame []byte
	largeUsed  bool
	// iov cuts a write into pieces for gnet's Writev (outbound.go).
	iov [][]byte
	// draining: tasks are running; connections they write to wait in
	// dirty with their outboxes until the batch ends. free holds outbox
	// buffers for reuse.
	draining bool
	dirty    []*Conn
	free     [][]byte
	freeLow  int // the fewest buffers free since the last tick

	// The handshake parser: one Upgrader whose hooks fill hs.
	upgrader   ws.Upgrader
	hs         handshakeState
	headReader bytes.Reader

	// The task queue: the one path by which other goroutines reach the loop.
	mu        sync.Mutex
	tasks     []task
	running   []task
	scheduled bool
	drainFn   gnet.RunnableFunc
	// tickQueued: a tick waits in tasks; a stalled loop gets one, not one
	// per second it stalled.
	tickQueued atomic.Bool
	// backlog and backlogBytes count the deliveries (TryRun's tasks)
	// queued or running, and their payload bytes: what TryRun bounds.
	backlog, backlogBytes atomic.Int64

	later laterQueue

	tickFn, shutdownFn, runLaterFn, authorizedFn func(any)

	// locals hold per-loop state of protocols (Local, SetLocal).
	locals map[any]any
}

// Local returns what a protocol stored on this loop under key, or nil.
func (l *Loop) Local(key any) any { return l.locals[key] }

// SetLocal stores per-loop state of a protocol (an index of its sockets,
// say): no lock, because only the loop touches it.
func (l *Loop) SetLocal(key, v any) {
	if l.locals == nil {
		l.locals = make(map[any]any)
	}
	l.locals[key] = v
}

// task is one unit of work queued for the loop. conn, when set, is the
// connection it works for: a panic in fn fails that connection alone. size
// is a delivery's payload bytes, counted in the backlog while it waits and
// runs; negative for other tasks.
type task struct {
	fn   func(any)
	arg  any
	conn *Conn
	size int
}

func newLoop(srv *Server, el gnet.EventLoop, index int) *Loop {
	l := &Loop{srv: srv, el: el, index: index}
	l.drainFn = l.drain
	l.tickFn = l.tick
	l.shutdownFn = l.shutdown
	l.runLaterFn = l.runLater
	l.authorizedFn = l.authorized
	l.initUpgrader()
	return l
}

// Run queues fn(arg) to run on the loop after everything queued before it.
// It is goroutine-safe and never blocks. gnet's own Execute may reorder
// tasks under load (its low-priority overflow queue), so the gateway keeps
// its own FIFO and asks gnet only to wake the loop, once per batch.
//
// Run always queues: it is for control work whose amount is bounded where
// it comes from (at most one off-loop completion in flight per connection,
// one tick and one timer wake-up at a time, one shutdown, one confirmation
// per channel). Work whose amount others decide (a publish per task) goes
// through TryRun, which refuses past Options.MaxLoopTasks.
func (l *Loop) Run(fn func(any), arg any) { l.enqueue(task{fn: fn, arg: arg, size: -1}) }

// TryRun is Run for deliveries of size payload bytes: it refuses, and
// reports false, when the deliveries queued or running on the loop already
// number Options.MaxLoopTasks or hold Options.MaxLoopBytes (a loop that
// stalls or cannot keep up): the caller drops the work and counts it. One
// delivery is always taken when none waits, whatever its size.
func (l *Loop) TryRun(fn func(any), arg any, size int) bool {
	return l.enqueue(task{fn: fn, arg: arg, size: max(size, 0)})
}

// Busy reports whether the loop's backlog of deliveries is at its bound,
// when TryRun would refuse: a publisher is told to try again rather than
// published to a loop that would drop it.
func (l *Loop) Busy() bool {
	return l.backlog.Load() >= int64(l.srv.opts.MaxLoopTasks) ||
		l.backlogBytes.Load() >= int64(l.srv.opts.MaxLoopBytes)
}

// enqueue queues t; a delivery (size >= 0) only within the backlog's bound.
func (l *Loop) enqueue(t task) bool {
	l.mu.Lock()
	if t.size >= 0 {
		n, bytes := l.backlog.Load(), l.backlogBytes.Load()
		if n >= int64(l.srv.opts.MaxLoopTasks) || n > 0 && bytes+int64(t.size) > int64(l.srv.opts.MaxLoopBytes) {
			l.mu.Unlock()
			return false
		}
		l.backlog.Add(1)
		l.backlogBytes.Add(int64(t.size))
	}
	l.tasks = append(l.tasks, t)
	wake := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if wake {
		if err := l.el.Execute(context.Background(), l.drainFn); err != nil {
			// The engine is stopping: nothing will run any more.
			l.mu.Lock()
			l.scheduled = false
			for _, t := range l.tasks {
				if t.size >= 0 {
					l.backlog.Add(-1)
					l.backlogBytes.Add(-int64(t.size))
				}
			}
			clear(l.tasks)
			l.tasks = l.tasks[:0]
			l.mu.Unlock()
		}
	}
	return true
}

// drain runs every queued task on the loop.
func (l *Loop) drain(context.Context) error {
	l.mu.Lock()
	l.tasks, l.running = l.running[:0], l.tasks
	l.scheduled = false
	l.mu.Unlock()
	l.draining = true
	for i := range l.running {
		t := &l.running[i]
		l.runTask(t)
		if t.size >= 0 {
			l.backlog.Add(-1)
			l.backlogBytes.Add(-int64(t.size))
		}
		*t = task{}
	}
	l.draining = false
	l.flushOutboxes()
	if l.shard != nil {
		l.shard.EndBatch()
	}
	return nil
}

// runTask runs one task; a panic in it is recovered, counted and fails
// only the connection the task works for.
func (l *Loop) runTask(t *task) {
	defer l.recoverTask(t.conn)
	t.fn(t.arg)
}

func (l *Loop) recoverTask(c *Conn) {
	if v := recover(); v != nil {
		// A task that acted as a connection's OnTraffic (an authorized
		// upgrade) may have panicked before handing l.out back: what it
		// answered (the 101) goes out before the connection fails.
		if c != nil && l.cur == c && len(l.out) > 0 {
			c.sysWrite(l.out)
		}
		l.cur, l.out = nil, l.out[:0]
		l.srv.panicked(c, "loop task", v)
	}
}

// SinkPanicked implements session.Loop: a session's Sink panicked while
// the shard called it (a delivery, say); the session's connection is
// closed with its protocol's internal-error code and the others go on.
func (l *Loop) SinkPanicked(s *session.Session, v any) {
	l.srv.panicked(nil, "session "+strconv.FormatUint(s.ID, 10), v)
	defer func() { _ = recover() }() // a Sink broken enough to panic in Close too is left to its deadline
	s.Sink.Close(CloseInternalError, "internal server error")
}

// flushOutboxes writes every outbox filled by the batch, one write each.
func (l *Loop) flushOutboxes() {
	for i := 0; i < len(l.dirty); i++ { // a flush may close a connection but adds none
		c := l.dirty[i]
		l.dirty[i] = nil
		if c.outbox != nil || c.outRef != nil {
			c.flushOutbox()
		}
	}
	l.dirty = l.dirty[:0]
}

// Outbox buffers kept for reuse: at most maxFreeBufs of at most maxFreeBuf
// bytes per loop, so a burst to many connections does not pin its memory
// after it passed.
const (
	maxFreeBuf  = 16 << 10
	maxFreeBufs = 4096
)

// maxKeptScratch is the size above which the loop's out, scratch and spare
// frame buffers count as large: a large one is kept while large messages
// keep coming (reused, not reallocated for each) and let go at the first
// tick of a second without one, so a burst does not pin its size on the
// loop.
const maxKeptScratch = 256 << 10

// reuse empties b for the next use, noting when it is large.
func (l *Loop) reuse(b []byte) []byte {
	if cap(b) > maxKeptScratch {
		l.largeUsed = true
	}
	return b[:0]
}

// releaseLarge lets the large buffers go if none was used since the last
// tick.
func (l *Loop) releaseLarge() {
	if l.largeUsed {
		l.largeUsed = false
		return
	}
	if cap(l.out) > maxKeptScratch {
		l.out = nil
	}
	if cap(l.scratch) > maxKeptScratch {
		l.scratch = nil
	}
	if cap(l.spareFrame) > maxKeptScratch {
		l.spareFrame = nil
	}
}

func (l *Loop) getBuf() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		l.freeLow = min(l.freeLow, n-1)
		return b
	}
	return make([]byte, 0, 512)
}

func (l *Loop) putBuf(b []byte) {
	if b != nil && cap(b) <= maxFreeBuf && len(l.free) < maxFreeBufs {
		l.free = append(l.free, b[:0])
	}
}

// Shard returns the loop's shard of the session hub.
func (l *Loop) Shard() *session.Shard { return l.shard }

// Server returns the server the loop belongs to.
func (l *Loop) Server() *Server { return l.srv }

// tick advances the timing wheel; the server's ticker queues it every
// second.
func (l *Loop) tick(any) {
	l.tickQueued.Store(false)
	l.wheel.Advance(l.srv.clock(), fireDeadline)
	l.releaseLarge()
	l.trimFree()
}

// trimFree lets go of the outbox buffers the last second did not need: as
// many as stayed free all along.
func (l *Loop) trimFree() {
	n := len(l.free) - l.freeLow
	clear(l.free[n:])
	l.free = l.free[:n]
	l.freeLow = n
}

// queueTick queues a tick unless one is waiting already.
func (l *Loop) queueTick() {
	if !l.tickQueued.Swap(true) {
		l.Run(l.tickFn, nil)
	}
}

func fireDeadline(c *Conn) {
	defer c.recoverConn("deadline")
	c.deadlinePassed()
}

// shutdown starts closing every connection of the loop: handshakes at
// once, sessions with 1001 in batches spread over the drain window.
func (l *Loop) shutdown(any) {
	var open []*Conn
	l.wheel.Each(func(c *Conn) {
		if c.state == stateOpen {
			open = append(open, c)
		}
	})
	var rest []*Conn
	l.wheel.Each(func(c *Conn) {
		if c.state == stateHandshake {
			rest = append(rest, c)
		}
	})
	closeBatch(rest)
	l.spreadCloses(open)
}

// drainStep is the interval between two batches of closes in a drain.
const drainStep = 50 * time.Millisecond

// spreadCloses closes conns evenly over the loop's share of the drain: the
// window, or less when at the minimum rate they are all closed sooner.
func (l *Loop) spreadCloses(conns []*Conn) {
	loops := max(len(l.srv.allLoops()), 1)
	span := min(l.srv.opts.DrainWindow, time.Duration(len(conns))*time.Second*time.Duration(loops)/minDrainRate)
	steps := int(span / drainStep)
	if steps <= 1 {
		closeBatch(conns)
		return
	}
	per := (len(conns) + steps - 1) / steps
	for i := 0; i*per < len(conns); i++ {
		batch := conns[i*per : min((i+1)*per, len(conns))]
		if i == 0 {
			closeBatch(batch)
			continue
		}
		l.After(time.Duration(i)*drainStep, closeBatchTask, batch)
	}
}

func closeBatchTask(arg any) { closeBatch(arg.([]*Conn)) }

func closeBatch(conns []*Conn) {
	for _, c := range conns {
		c.shutdown()
	}
}

// The wheels' clock is monotonic: the server's epoch is a time.Now
// reading, and durations since it (time.Since, time.Time.Sub of two
// time.Now-based times) use the monotonic clock, so a step of the wall clock
// moves no deadline.

// seconds converts a deadline to the wheel's seconds, rounding up so it
// never fires early. t must come from time.Now (Add of it included), so
// that it carries a monotonic reading.
func (s *Server) seconds(t time.Time) uint32 { return s.secondsAfter(t.Sub(s.epoch)) }

// secondsAfter converts a time since the epoch to the wheel's seconds,
// rounding up.
func (s *Server) secondsAfter(d time.Duration) uint32 {
	if d <= 0 {
		return 1
	}
	sec := uint64((d + time.Second - 1) / time.Second)
	if sec > 1<<32-1 {
		sec = 1<<32 - 1
	}
	return uint32(sec)
}

// sinceEpoch returns the monotonic time since the server started.
func (s *Server) sinceEpoch() time.Duration { return time.Since(s.epoch) }

// clock returns the current second on the wheels' scale.
func (s *Server) clock() uint32 { return uint32(s.sinceEpoch() / time.Second) }
