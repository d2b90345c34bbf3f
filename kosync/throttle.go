package kosync

// What keeps unauthenticated KOReader requests from taking the node's CPU.
//
// A KOReader key is checked with argon2id (tens of milliseconds of one core,
// 19 MiB) whenever the verified-key cache has no entry for it, and an
// unknown user costs one hash too (auth.go). Two things bound that work:
//
//   - The hash pool: at most HashWorkers hashes run at once (default
//     NumCPU-1, at least 1, so a core is always left to the event loops and
//     to cached requests), and at most HashQueue more wait for a worker.
//     Past that the request is answered 503 with Retry-After at once: a
//     queue that cannot drain within a client's timeout only adds latency.
//   - The per-address limiter: every verification that may fail (a cache
//     miss, an unknown user) and every registration takes one token from
//     its client address's bucket before any hashing; a successful
//     verification gives it back, so only failures (and registrations) are
//     limited. An address out of tokens is answered 429 with Retry-After
//     (the time until its next token) without hashing. Requests whose key
//     is in the verified-key cache never touch the limiter, so a device
//     that shares an address (a NAT, a slot, see below) with an attacker
//     keeps syncing.
//
// The limiter is a fixed table of GCRA cells (one int64 each), indexed by a
// keyed hash of the address; an IPv6 address counts as its /64, which is
// what one subscriber usually gets. Each address maps to two cells and is
// refused only when both are exhausted (a count-min sketch), so memory is
// fixed whatever the number of addresses, and an attacker rotating
// addresses can at worst make an innocent address share its fate with a
// probability of (cells it exhausted / AuthLimiterSlots)^2.
//
// JWTs (Bearer, /api/ws/<jwt>) are checked with an HMAC, never hashed:
// they use neither the pool nor the limiter.
//
// Behind a reverse proxy, the client address is the last X-Forwarded-For
// entry not in TrustedProxies (the first one a trusted hop saw); without
// --trusted-proxies, every client of a proxy shares the proxy's address.

import (
	"errors"
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the hashing bounds (Options).
const (
	// DefaultHashQueue is how many hashes may wait for a worker when
	// Options.HashQueue is zero. With hashes of ~50 ms on one worker the
	// last one waits about 1.6 s, well inside KOReader's 5 s timeout.
	DefaultHashQueue = 32
	// DefaultAuthFailuresPerMinute is the sustained rate of failed
	// verifications (and registrations) one address may make when
	// Options.AuthFailuresPerMinute is zero.
	DefaultAuthFailuresPerMinute = 6
	// DefaultAuthFailureBurst is how many may come back to back before the
	// rate applies, when Options.AuthFailureBurst is zero.
	DefaultAuthFailureBurst = 10
	// DefaultAuthLimiterSlots is the number of cells of the per-address
	// table when Options.AuthLimiterSlots is zero: 512 KiB.
	DefaultAuthLimiterSlots = 1 << 16
	// busyRetryAfter is the Retry-After of a 503 for a full hash queue: the
	// queue drains in about a second.
	busyRetryAfter = time.Second
)

// DefaultHashWorkers is the hash pool's size when Options.HashWorkers is
// zero: one less than the CPUs, at least one.
func DefaultHashWorkers() int { return max(1, runtime.NumCPU()-1) }

// errHashBusy: the hash pool's queue is full (503).
var errHashBusy = errors.New("kosync: too many password hashes waiting")

// rateLimitedError: the client address has no token left (429).
type rateLimitedError struct{ retryAfter time.Duration }

func (e *rateLimitedError) Error() string {
	return "kosync: too many failed attempts from this address"
}

// retryAfterSeconds is the Retry-After value of err (429 or 503): whole
// seconds, at least 1; 0 when err is neither.
func retryAfterSeconds(err error) int {
	var rl *rateLimitedError
	switch {
	case errors.As(err, &rl):
		return max(1, int(math.Ceil(rl.retryAfter.Seconds())))
	case errors.Is(err, errHashBusy):
		return int(busyRetryAfter / time.Second)
	}
	return 0
}

// hashPool runs argon2id on at most cap(slots) goroutines at a time, with
// a bounded number waiting. Goroutine-safe.
type hashPool struct {
	slots    chan struct{}
	admitted atomic.Int64 // running + waiting
	limit    int64        // workers + queue

	wait prometheus.Histogram
	busy prometheus.Counter
}

func newHashPool(workers, queue int) *hashPool {
	return &hashPool{
		slots: make(chan struct{}, workers),
		limit: int64(workers + queue),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_kosync_hash_wait_seconds",
			Help:    "Time a KOReader key hash waited for a worker of the hash pool.",
			Buckets: []float64{0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_kosync_hash_busy_total",
			Help: "KOReader requests answered 503 because the hash pool's queue was full.",
		}),
	}
}

// run runs fn on a worker, waiting for one if need be; errHashBusy when the
// queue is full.
func (p *hashPool) run(fn func()) error {
	if p.admitted.Add(1) > p.limit {
		p.admitted.Add(-1)
		p.busy.Inc()
		return errHashBusy
	}
	defer p.admitted.Add(-1)
	start := time.Now()
	p.slots <- struct{}{}
	p.wait.Observe(time.Since(start).Seconds())
	defer func() { <-p.slots }()
	fn()
	return nil
}

// queued returns the hashes waiting for a worker.
func (p *hashPool) queued() int64 { return max(0, p.admitted.Load()-int64(len(p.slots))) }

// addrLimiter limits failed attempts per client address; see the file
// comment. Goroutine-safe, lock-free.
type addrLimiter struct {
	seed      maphash.Seed
	cells     []atomic.Int64 // GCRA theoretical arrival times, ns since start
	interval  int64          // ns per token
	tolerance int64          // (burst-1) intervals
	start     time.Time      // monotonic base of now
	now       func() time.Time
}

// newAddrLimiter returns a limiter of perMinute tokens a minute with burst,
// over slots cells; nil (no limit) when perMinute is negative.
func newAddrLimiter(perMinute float64, burst, slots int) *addrLimiter {
	if perMinute < 0 {
		return nil
	}
	interval := max(int64(float64(time.Minute)/perMinute), 1)
	return &addrLimiter{
		seed:      maphash.MakeSeed(),
		cells:     make([]atomic.Int64, slots),
		interval:  interval,
		tolerance: int64(burst-1) * interval,
		start:     time.Now(),
		now:       time.Now,
	}
}

// cellsOf returns the two cells of a's bucket: a is cut to its /64 when
// IPv6 and hashed with the limiter's random seed, so no one can aim at
// another address's cells.
func (l *addrLimiter) cellsOf(a netip.Addr) (*atomic.Int64, *atomic.Int64) {
	a = a.Unmap()
	if a.Is6() {
		a = netip.PrefixFrom(a, 64).Masked().Addr()
	}
	b := a.As16()
	h := maphash.Bytes(l.seed, b[:])
	n := uint64(len(l.cells))
	return &l.cells[(h&0xffffffff)%n], &l.cells[(h>>32)%n]
}

// take charges one attempt to a's bucket, or returns a *rateLimitedError
// when both its cells are out of tokens. A nil limiter or an invalid
// address (no peer known) is never limited.
func (l *addrLimiter) take(a netip.Addr) error {
	if l == nil || !a.IsValid() {
		return nil
	}
	now := int64(l.now().Sub(l.start)) + l.interval // cells start at 0: full
	c1, c2 := l.cellsOf(a)
	wait1, wait2 := l.over(c1, now), l.over(c2, now)
	if wait1 > 0 && wait2 > 0 {
		return &rateLimitedError{time.Duration(min(wait1, wait2))}
	}
	l.charge(c1, now)
	if c2 != c1 {
		l.charge(c2, now)
	}
	return nil
}

// over returns how long until cell c has a token again, 0 if it has one.
func (l *addrLimiter) over(c *atomic.Int64, now int64) int64 {
	return max(0, max(c.Load(), now)-now-l.tolerance)
}

// charge takes a token from c; a cell already empty (its twin had one) is
// not pushed further than one interval past empty.
func (l *addrLimiter) charge(c *atomic.Int64, now int64) {
	for {
		old := c.Load()
		next := min(max(old, now)+l.interval, now+l.tolerance+l.interval)
		if c.CompareAndSwap(old, next) {
			return
		}
	}
}

// refund gives back the token take charged (the attempt succeeded, or was
// not made).
func (l *addrLimiter) refund(a netip.Addr) {
	if l == nil || !a.IsValid() {
		return
	}
	c1, c2 := l.cellsOf(a)
	c1.Add(-l.interval)
	if c2 != c1 {
		c2.Add(-l.interval)
	}
}

// clientAddr is the address a request is limited and logged under; see
// clientAddrOf. The zero Addr when the peer cannot be parsed.
func (s *Service) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return s.clientAddrOf(ap.Addr(), strings.Join(r.Header.Values("X-Forwarded-For"), ","))
}

// clientAddrOf is the client behind peer: peer itself, or when peer is a
// trusted proxy the last entry of the X-Forwarded-For list xff that is not
// one (the first address a trusted hop saw).
func (s *Service) clientAddrOf(peer netip.Addr, xff string) netip.Addr {
	addr := peer.Unmap()
	if !s.trusted(addr) || xff == "" {
		return addr
	}
	hops := strings.Split(xff, ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // a hop we cannot read: stop at the last we trust
		}
		if a = a.Unmap(); !s.trusted(a) {
			return a
		}
		addr = a
	}
	return addr
}

// trusted reports whether a is in TrustedProxies.
func (s *Service) trusted(a netip.Addr) bool {
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// throttleCollectors returns the pool's and the limiter's series.
func (a *authenticator) throttleCollectors() []prometheus.Collector {
	return []prometheus.Collector{
		a.pool.wait, a.pool.busy, a.rateLimited,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_kosync_hash_queue_depth",
			Help: "KOReader key hashes waiting for a worker of the hash pool now.",
		}, func() float64 { return float64(a.pool.queued()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_kosync_hash_workers",
			Help: "Workers of the KOReader key hash pool (hashes that may run at once).",
		}, func() float64 { return float64(cap(a.pool.slots)) }),
	}
}
