package gateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestLoopQueueBound: TryRun refuses past MaxLoopTasks and takes work again
// once the loop ran; Run (control work) always queues; ticks coalesce.
func TestLoopQueueBound(t *testing.T) {
	fl := NewFakeLoop(Options{MaxLoopTasks: 3})
	l := fl.srv.testLoop(fl)
	ran := 0
	inc := func(any) { ran++ }
	for i := range 3 {
		if !l.TryRun(inc, nil) {
			t.Fatalf("TryRun %d refused below the bound", i)
		}
	}
	if !l.Busy() || l.TryRun(inc, nil) {
		t.Fatal("TryRun accepted past the bound")
	}
	l.Run(inc, nil) // control work is bounded at its source, never refused
	l.queueTick()
	l.queueTick()
	if len(l.tasks) != 5 {
		t.Fatalf("%d tasks queued, want 3 + 1 + one tick", len(l.tasks))
	}
	fl.run()
	if ran != 4 || l.Busy() || !l.TryRun(inc, nil) {
		t.Fatalf("ran %d busy %v", ran, l.Busy())
	}
	l.queueTick()
	if len(l.tasks) != 2 {
		t.Fatalf("a tick after the last one ran was not queued: %d tasks", len(l.tasks))
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
