package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Limits.
const (
	// DefaultMessageBurst is how many messages a connection may send at once
	// above MessageRate when MessageBurst is zero.
	DefaultMessageBurst = 100
	// DefaultRetryAfter is the Retry-After of refused upgrades (429, 503)
	// when RetryAfter is zero.
	DefaultRetryAfter = 5 * time.Second
)

// Limits protect the server from abusive or overloading clients. Every
// zero value means the limit is off, unless its comment says otherwise.
// Set them with Server.SetLimits before Start.
type Limits struct {
	// MessageRate is how many messages (whole data messages, and Pings) one
	// connection may send per second on average. A connection past it,
	// after MessageBurst, is closed with 1008 "message rate exceeded".
	// Zero means no limit.
	MessageRate float64
	// MessageBurst is the token bucket's size: how many messages may come
	// back to back before MessageRate applies. Zero means
	// DefaultMessageBurst. Ignored without MessageRate.
	MessageBurst int
	// MaxConnsPerIP caps the connections from one remote address: an IPv4
	// address, or an IPv6 /64 (one host usually owns a whole /64). It
	// counts upgraded connections, those still sending their request head
	// or waiting for a HeadAuthorizer, and plain HTTP connections net/http
	// serves (kept alive up to its idle timeout), so one address can
	// neither hold thousands of half-open upgrades nor thousands of idle
	// keep-alive connections. A place is taken at accept and given back
	// when the connection closes: on the loop, once a HeadAuthorizer's
	// call has ended; in net/http, when it closes the connection. A
	// connection past the cap is answered 429 with Retry-After at once,
	// before its request is read, and closed. Zero means no limit.
	MaxConnsPerIP int
	// MaxConns caps the upgraded connections of this server; an upgrade
	// past it is answered 503 with Retry-After, before any HeadAuthorizer
	// call. A place is held from then until the connection closes (one
	// that closes while a HeadAuthorizer decides: until the call ended).
	// Zero means no limit.
	MaxConns int
	// AllowedOrigins lists the origins browser routes (Route.Browser)
	// accept: "scheme://host[:port]" (default ports may be left out),
	// "scheme://*.example.com" for any subdomain, or "*" for any origin. An
	// upgrade to a browser route whose Origin header is not listed is
	// answered 403 (before any HeadAuthorizer call); one without an Origin header (not a browser) is
	// accepted. Zero (empty) means every origin is allowed.
	AllowedOrigins []string
	// RetryAfter is what 429 and 503 answers ask clients to wait; zero
	// means DefaultRetryAfter.
	RetryAfter time.Duration
}

// Validate reports a setting that makes no sense, such as a malformed
// origin. SetLimits panics on what Validate refuses.
func (l Limits) Validate() error {
	switch {
	case l.MessageRate < 0 || math.IsNaN(l.MessageRate) || math.IsInf(l.MessageRate, 0):
		return fmt.Errorf("message rate %v: want a positive number, or 0 for no limit", l.MessageRate)
	case l.MessageBurst < 0:
		return fmt.Errorf("message burst %d: want a positive number", l.MessageBurst)
	case l.MaxConnsPerIP < 0:
		return fmt.Errorf("max connections per IP %d: want a positive number, or 0 for no limit", l.MaxConnsPerIP)
	case l.MaxConns < 0:
		return fmt.Errorf("max connections %d: want a positive number, or 0 for no limit", l.MaxConns)
	case l.RetryAfter < 0:
		return fmt.Errorf("retry after %v: want a positive duration", l.RetryAfter)
	}
	_, err := parseOrigins(l.AllowedOrigins)
	return err
}

// SetLimits sets the server's limits. Call it once, before Start; it
// panics on limits Validate refuses. Its refusals are counted on
// Registry().
func (s *Server) SetLimits(l Limits) {
	if err := l.Validate(); err != nil {
		panic("gateway: " + err.Error())
	}
	origins, _ := parseOrigins(l.AllowedOrigins)
	lim := &limiter{l: l, origins: origins}
	if l.MessageRate > 0 {
		burst := cmp.Or(l.MessageBurst, DefaultMessageBurst)
		lim.interval = max(int64(float64(time.Second)/l.MessageRate), 1)
		lim.tolerance = int64(burst-1) * lim.interval
	}
	secs := int64(math.Ceil(cmp.Or(l.RetryAfter, DefaultRetryAfter).Seconds()))
	retry := "Retry-After: " + strconv.FormatInt(max(secs, 1), 10)
	lim.reject429 = fixedResponse(http.StatusTooManyRequests, "too many connections from your address", retry)
	lim.reject503 = fixedResponse(http.StatusServiceUnavailable, "server at its connection limit", retry)
	lim.reject403 = fixedResponse(http.StatusForbidden, "origin not allowed")
	if s.limits != nil {
		panic("gateway: SetLimits called twice")
	}
	s.limits = lim
	lim.metrics.register(s.Registry())
}

// limiter returns the server's limiter, or nil: no limits. SetLimits runs
// before Start, so the loops read it without a lock.
func (l *Loop) limiter() *limiter { return l.srv.limits }

// limiter is the run-time form of Limits, shared by the loops.
type limiter struct {
	l         Limits
	interval  int64 // nanoseconds per message at MessageRate; 0: no limit
	tolerance int64 // (burst-1) intervals: how far ahead a connection may run
	origins   originMatcher
	conns     atomic.Int64
	perIP     ipCounter
	// The answers of refusals, which close the connection.
	reject429, reject503, reject403 []byte
	metrics                         limitMetrics
}

// Handshake results of the limits, in gateway_handshakes_total.
const (
	resultOriginForbidden = "origin_forbidden"
	resultOverLimit       = "over_limit"
)

// acceptIP runs at TCP accept, before anything is read: it takes the
// connection's place in its address's cap, or returns the 429 to answer.
func (lim *limiter) acceptIP(remote netip.Addr) (held bool, refusal []byte) {
	max := lim.l.MaxConnsPerIP
	if max <= 0 {
		return false, nil
	}
	if !lim.perIP.acquire(remote, max) {
		lim.metrics.perIP.Inc()
		return false, lim.reject429
	}
	return true, nil
}

// admit runs once an upgrade head for route has arrived, before any
// HeadAuthorizer call and before the upgrade: the origin check, then the
// server's connection cap. It returns the answer of a refusal and its
// metrics label; on success the connection holds a place in the cap until
// it closes (releaseLimits).
func (lim *limiter) admit(r *Route, origin []byte) (string, []byte) {
	if r.Browser && len(origin) > 0 && !lim.origins.allowed(origin) {
		lim.metrics.origin.Inc()
		if r.Forbidden != nil {
			return resultOriginForbidden, r.Forbidden
		}
		return resultOriginForbidden, lim.reject403
	}
	if max := lim.l.MaxConns; max > 0 {
		if lim.conns.Add(1) > int64(max) {
			lim.conns.Add(-1)
			lim.metrics.conns.Inc()
			return resultOverLimit, lim.reject503
		}
	}
	return "", nil
}

// releaseLimits gives back the places a closing connection holds: its
// address's (taken at accept) and the server's (taken by admit).
func (c *Conn) releaseLimits() {
	lim := c.loop.limiter()
	if lim == nil {
		return
	}
	if c.admitted && lim.l.MaxConns > 0 {
		lim.conns.Add(-1)
	}
	if c.ipHeld {
		lim.perIP.release(c.remote.Addr())
	}
	c.admitted, c.ipHeld = false, false
}

// handOffPlace moves the connection's place in its address's cap to the
// connection handed to net/http: it returns the func that gives the place
// back (when net/http closes the connection), or nil if none is held.
func (c *Conn) handOffPlace() func() {
	if !c.ipHeld {
		return nil
	}
	c.ipHeld = false
	lim, addr := c.loop.limiter(), c.remote.Addr()
	return func() { lim.perIP.release(addr) }
}

// overRate charges one message to a connection's bucket (GCRA: one int64
// per connection, the theoretical arrival time) and reports whether it is
// over the rate.
func (lim *limiter) overRate(tat *int64, now int64) bool {
	t := max(*tat, now)
	if t-now > lim.tolerance {
		return true
	}
	*tat = t + lim.interval
	return false
}

// ipCounter counts connections per remote IP. Loops accept concurrently,
// so it is sharded by address, a mutex per shard.
type ipCounter struct {
	seed   maphash.Seed
	once   sync.Once
	shards [64]ipShard
}

type ipShard struct {
	mu sync.Mutex
	m  map[netip.Addr]int32
	_  [64 - 16]byte // one shard per cache line
}

func (c *ipCounter) shard(a netip.Addr) *ipShard {
	c.once.Do(func() { c.seed = maphash.MakeSeed() })
	b := a.As16()
	return &c.shards[maphash.Bytes(c.seed, b[:])%uint64(len(c.shards))]
}

// ipKey is what an address counts as in the per-address cap: an IPv4
// address (IPv4-mapped IPv6 included) alone, an IPv6 address as its /64.
// One host, or one subscriber's router, usually owns a whole /64: counted
// address by address, it could open the cap again from each of 2^64
// addresses.
func ipKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if !a.Is6() {
		return a
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return a
	}
	return p.Addr()
}

// acquire takes a place for a (counted as ipKey(a)) unless max are taken.
func (c *ipCounter) acquire(a netip.Addr, max int) bool {
	a = ipKey(a)
	sh := c.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if int(sh.m[a]) >= max {
		return false
	}
	if sh.m == nil {
		sh.m = make(map[netip.Addr]int32)
	}
	sh.m[a]++
	return true
}

// release gives back a place acquire took for a.
func (c *ipCounter) release(a netip.Addr) {
	a = ipKey(a)
	sh := c.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n := sh.m[a]; n > 1 {
		sh.m[a] = n - 1
	} else {
		delete(sh.m, a) // no memory for addresses that are gone
	}
}

// count returns the connections counted for a's key.
func (c *ipCounter) count(a netip.Addr) int {
	a = ipKey(a)
	sh := c.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return int(sh.m[a])
}

// originMatcher decides whether an Origin header is allowed.
type originMatcher struct {
	all   bool            // "*" listed, or nothing listed
	exact map[string]bool // normalised "scheme://host[:port]"
	wild  []wildOrigin
}

// wildOrigin is "scheme://*.example.com[:port]": suffix is ".example.com".
type wildOrigin struct{ scheme, suffix, port string }

// parseOrigins compiles an AllowedOrigins list.
func parseOrigins(list []string) (originMatcher, error) {
	m := originMatcher{all: len(list) == 0, exact: map[string]bool{}}
	for _, o := range list {
		o = strings.TrimSpace(o)
		if o == "*" {
			m.all = true
			continue
		}
		scheme, host, port, err := splitOrigin(o)
		if err != nil {
			return m, fmt.Errorf("allowed origin %q: %w", o, err)
		}
		if rest, ok := strings.CutPrefix(host, "*."); ok {
			if rest == "" || strings.Contains(rest, "*") {
				return m, fmt.Errorf("allowed origin %q: a wildcard must be a leading \"*.\" before a domain", o)
			}
			m.wild = append(m.wild, wildOrigin{scheme, "." + rest, port})
			continue
		}
		if strings.Contains(host, "*") {
			return m, fmt.Errorf("allowed origin %q: a wildcard must be a leading \"*.\" before a domain", o)
		}
		m.exact[joinOrigin(scheme, host, port)] = true
	}
	return m, nil
}

// allowed reports whether an Origin header value is allowed.
func (m *originMatcher) allowed(origin []byte) bool {
	if m.all {
		return true
	}
	scheme, host, port, err := splitOrigin(string(origin))
	if err != nil || strings.Contains(host, "*") {
		return false // "null" (sandboxed pages, file:) among others
	}
	if m.exact[joinOrigin(scheme, host, port)] {
		return true
	}
	for _, w := range m.wild {
		if w.scheme == scheme && w.port == port && len(host) > len(w.suffix) && strings.HasSuffix(host, w.suffix) {
			return true
		}
	}
	return false
}

var errOriginForm = errors.New(`want scheme://host[:port], no path`)

// splitOrigin splits "scheme://host[:port]" into lower-cased parts; a
// scheme's default port becomes "" (RFC 6454 section 4 serialises origins
// that way).
func splitOrigin(o string) (scheme, host, port string, err error) {
	o = strings.ToLower(o)
	scheme, hp, ok := strings.Cut(o, "://")
	if !ok || scheme == "" || hp == "" || strings.ContainsAny(hp, "/?#@ ") {
		return "", "", "", errOriginForm
	}
	host = hp
	if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.HasSuffix(hp, "]") {
		host, port = hp[:i], hp[i+1:]
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return "", "", "", errOriginForm
		}
		port = strconv.FormatUint(n, 10)
	}
	if host == "" || (strings.Contains(host, ":") && !strings.HasPrefix(host, "[")) {
		return "", "", "", errOriginForm
	}
	switch {
	case port == "80" && (scheme == "http" || scheme == "ws"),
		port == "443" && (scheme == "https" || scheme == "wss"):
		port = ""
	}
	return scheme, host, port, nil
}

func joinOrigin(scheme, host, port string) string {
	if port == "" {
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// limitMetrics count what the limits refuse.
type limitMetrics struct {
	origin, perIP, conns prometheus.Counter
	rate                 prometheus.Counter
}

func (m *limitMetrics) register(reg prometheus.Registerer) {
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_limit_refusals_total",
		Help: "Upgrades refused by a limit: origin (403), conns_per_ip (429), conns (503).",
	}, []string{"limit"})
	m.origin = refusals.WithLabelValues("origin")
	m.perIP = refusals.WithLabelValues("conns_per_ip")
	m.conns = refusals.WithLabelValues("conns")
	m.rate = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_message_rate_disconnects_total",
		Help: "Connections closed (1008) for sending messages faster than the message rate limit.",
	})
	reg.MustRegister(refusals, m.rate)
}
