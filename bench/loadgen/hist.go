package loadgen

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is a log-linear histogram of non-negative durations in
// nanoseconds with a relative precision of 1/128 (< 1%), in the spirit of
// HdrHistogram. Values below 256 ns are exact. Record is lock-free and safe
// for concurrent use.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	total  atomic.Uint64
	max    atomic.Int64
}

const (
	histSub     = 128 // sub-buckets per power of two
	histBuckets = 256 + 56*histSub
)

func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 256 {
		return int(u)
	}
	shift := bits.Len64(u) - 8 // u>>shift is in [128, 255]
	return 256 + (shift-1)*histSub + int(u>>shift) - histSub
}

// histValue is the midpoint of bucket i.
func histValue(i int) int64 {
	if i < 256 {
		return int64(i)
	}
	shift := (i-256)/histSub + 1
	sub := uint64((i-256)%histSub + histSub)
	lo := sub << shift
	return int64(lo + (uint64(1)<<shift)/2)
}

// Record adds one sample of v nanoseconds.
func (h *Histogram) Record(v int64) {
	i := histIndex(v)
	if i >= histBuckets {
		i = histBuckets - 1
	}
	h.counts[i].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Quantile returns the value at quantile q (0..1), within 1%; 0 when empty.
// The maximum is exact.
func (h *Histogram) Quantile(q float64) int64 {
	total := h.total.Load()
	if total == 0 {
		return 0
	}
	if q >= 1 {
		return h.max.Load()
	}
	rank := uint64(q*float64(total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := histValue(i)
			if m := h.max.Load(); v > m {
				v = m
			}
			return v
		}
	}
	return h.max.Load()
}

// Latency is the JSON summary of a Histogram, in milliseconds.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary gives p50, p99, p99.9 and the maximum in milliseconds.
func (h *Histogram) Summary() Latency {
	ms := func(v int64) float64 { return float64(v) / float64(time.Millisecond) }
	return Latency{Count: h.Count(), P50: ms(h.Quantile(0.5)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.max.Load())}
}
