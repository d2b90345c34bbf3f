package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestLoopQueueBound: TryRun refuses past MaxLoopTasks deliveries queued
// or running, takes work again once they ran; Run (control work) always
// queues; ticks coalesce.
func TestLoopQueueBound(t *testing.T) {
	fl := NewFakeLoop(Options{MaxLoopTasks: 3})
	l := fl.srv.testLoop(fl)
	ran := 0
	inc := func(any) { ran++ }
	for i := range 3 {
		if !l.TryRun(inc, nil, 10) {
			t.Fatalf("TryRun %d refused below the bound", i)
		}
	}
	if !l.Busy() || l.TryRun(inc, nil, 10) {
		t.Fatal("TryRun accepted past the bound")
	}
	l.Run(inc, nil) // control work is bounded at its source, never refused
	l.queueTick()
	l.queueTick()
	if len(l.tasks) != 5 {
		t.Fatalf("%d tasks queued, want 3 + 1 + one tick", len(l.tasks))
	}
	fl.run()
	if ran != 4 || l.Busy() || l.backlogBytes.Load() != 0 || !l.TryRun(inc, nil, 10) {
		t.Fatalf("ran %d busy %v bytes %d", ran, l.Busy(), l.backlogBytes.Load())
	}
	l.queueTick()
	if len(l.tasks) != 2 {
		t.Fatalf("a tick after the last one ran was not queued: %d tasks", len(l.tasks))
	}
}

// TestLoopBacklogCountsRunningAndBytes: deliveries still running count
// against the bound (a drained queue is not an empty backlog), and so do
// their bytes; one delivery is taken whatever its size when none waits.
func TestLoopBacklogCountsRunningAndBytes(t *testing.T) {
	fl := NewFakeLoop(Options{MaxLoopTasks: 2, MaxLoopBytes: 100})
	l := fl.srv.testLoop(fl)
	var during []bool
	try := func(any) { during = append(during, l.TryRun(func(any) {}, nil, 1)) }
	if !l.TryRun(try, nil, 1) || !l.TryRun(try, nil, 1) {
		t.Fatal("refused below the bound")
	}
	fl.run()
	// Inside the first task both deliveries were queued or running.
	if len(during) != 2 || during[0] || !during[1] {
		t.Fatalf("TryRun while the batch ran: %v, want [false true]", during)
	}
	fl.run()
	if !l.TryRun(func(any) {}, nil, 1000) {
		t.Fatal("a large delivery refused on an idle loop")
	}
	if l.TryRun(func(any) {}, nil, 1) || !l.Busy() {
		t.Fatal("accepted past the byte bound")
	}
	fl.run()
	if l.backlog.Load() != 0 || l.backlogBytes.Load() != 0 {
		t.Fatalf("backlog %d bytes %d after running everything", l.backlog.Load(), l.backlogBytes.Load())
	}
}

// TestTaskPanicIsContained: a panicking task without a connection is
// counted and the tasks behind it still run.
func TestTaskPanicIsContained(t *testing.T) {
	fl := NewFakeLoop(Options{})
	fl.srv.logger = discardLogger
	l := fl.srv.testLoop(fl)
	ran := false
	l.Run(func(any) { panic("boom") }, nil)
	l.Run(func(any) { ran = true }, nil)
	fl.run()
	if !ran || counterValue(t, fl.srv.metrics.panics) != 1 {
		t.Fatalf("ran %v panics %v", ran, counterValue(t, fl.srv.metrics.panics))
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
