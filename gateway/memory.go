package gateway

import (
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// Giving memory back after a burst.
//
// A burst (a fan-out to many slow readers, say) fills outboxes and gnet's
// buffers; once it passed they are garbage or sit in pools, but the Go
// runtime gives the pages back to the OS only slowly, and not at all while
// nothing allocates enough to start a collection: 10,000 connections went
// 27 MiB idle, ~360 MiB in a burst, and still 174 MiB 30 s later. So:
//
//   - the loops keep no large buffer past the second after its last use
//     (Loop.releaseLarge), and their pool of outbox buffers shrinks by what
//     the last second did not use (Loop.trimFree);
//   - every releaseInterval, releaseMemory looks at the heap the process
//     holds from the OS: if it is more than twice the live heap and at least
//     releaseFloor more, it collects and returns the free pages
//     (debug.FreeOSMemory). When no collection ran since the last look (a
//     quiet heap: the live figure is stale), it collects once to find out,
//     and only again once the runtime collected by itself, so an idle node
//     with a large live heap is not collected over and over.
//
// The cost is one forced collection per interval at most, and only after a
// burst. GOMEMLIMIT, when set, still applies: the runtime's own scavenger
// works toward it as well.
const (
	// releaseInterval is how often releaseMemory looks.
	releaseInterval = 10 * time.Second
	// releaseFloor is the least amount worth a forced collection.
	releaseFloor = 16 << 20
)

// memSamples are the runtime/metrics releaseMemory reads.
var memSamples = []rtmetrics.Sample{
	{Name: "/gc/cycles/total:gc-cycles"},
	{Name: "/gc/heap/live:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
}

// heapFigures returns the collections so far, the live heap at the last
// one, and the heap held from the OS (objects, dead or alive, and free
// pages not yet returned).
func heapFigures(s []rtmetrics.Sample) (cycles, live, held uint64) {
	rtmetrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(),
		s[2].Value.Uint64() + s[3].Value.Uint64() + s[4].Value.Uint64()
}

// releaseMemory runs until the server drains, giving memory back after
// bursts.
func (s *Server) releaseMemory() {
	samples := append([]rtmetrics.Sample(nil), memSamples...)
	var lastCycles uint64
	quietChecked := false // a quiet heap was collected and had nothing to give
	for !s.draining.Load() {
		time.Sleep(releaseInterval)
		cycles, live, held := heapFigures(samples)
		quiet := cycles == lastCycles
		if !quiet {
			quietChecked = false
		}
		switch {
		case quiet && !quietChecked && held > releaseFloor:
			runtime.GC() // the pools' victims go in a second collection
			debug.FreeOSMemory()
			_, _, after := heapFigures(samples)
			quietChecked = held-min(after, held) < releaseFloor
		case !quiet && held > 2*live && held-live > releaseFloor:
			debug.FreeOSMemory()
		}
		lastCycles, _, _ = heapFigures(samples)
	}
}
