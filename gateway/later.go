package gateway

import (
	"container/heap"
	"time"
)

// laterQueue runs short-delay tasks on a loop (milliseconds, unlike the
// one-second wheel): a min-heap of due times and one runtime timer per loop,
// armed for the earliest. Protocols use it for opt-in work such as batch
// windows, so idle connections cost nothing here.
type laterQueue struct {
	items laterHeap
	timer *time.Timer
	armed time.Time // when timer fires; zero when stopped
}

type laterItem struct {
	due  time.Time
	fn   func(any)
	arg  any
	conn *Conn // the connection it works for, if any
}

type laterHeap []laterItem

func (h laterHeap) Len() int           { return len(h) }
func (h laterHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h laterHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *laterHeap) Push(x any)        { *h = append(*h, x.(laterItem)) }
func (h *laterHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = laterItem{}
	*h = old[:len(old)-1]
	return it
}

// After runs fn(arg) on the loop once d has passed (never early; late by
// the loop's backlog). It runs on the loop.
func (l *Loop) After(d time.Duration, fn func(any), arg any) { l.after(d, fn, arg, nil) }

func (l *Loop) after(d time.Duration, fn func(any), arg any, c *Conn) {
	q := &l.later
	due := time.Now().Add(d)
	heap.Push(&q.items, laterItem{due, fn, arg, c})
	if q.armed.IsZero() || due.Before(q.armed) {
		l.armLater(due)
	}
}

func (l *Loop) armLater(due time.Time) {
	q := &l.later
	q.armed = due
	d := time.Until(due)
	if q.timer == nil {
		q.timer = time.AfterFunc(d, func() { l.Run(l.runLaterFn, nil) })
		return
	}
	q.timer.Reset(d)
}

// runLater runs the due tasks and re-arms for the next one.
func (l *Loop) runLater(any) {
	q := &l.later
	q.armed = time.Time{}
	now := time.Now()
	for len(q.items) > 0 && !q.items[0].due.After(now) {
		it := heap.Pop(&q.items).(laterItem)
		l.runTask(&task{it.fn, it.arg, it.conn, -1})
	}
	if len(q.items) > 0 {
		l.armLater(q.items[0].due)
	}
}
