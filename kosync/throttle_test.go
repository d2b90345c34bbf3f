package kosync

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testLimiter is a limiter on a clock the test moves.
func testLimiter(perMinute float64, burst, slots int) (*addrLimiter, *time.Time) {
	l := newAddrLimiter(perMinute, burst, slots)
	now := time.Now()
	l.start = now
	l.now = func() time.Time { return now }
	return l, &now
}

func TestAddrLimiterBucket(t *testing.T) {
	l, now := testLimiter(60, 3, 1<<16) // a token a second, 3 at once
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 3 {
		if err := l.take(a); err != nil {
			t.Fatalf("attempt %d of the burst refused: %v", i+1, err)
		}
	}
	err := l.take(a)
	var rl *rateLimitedError
	if !errors.As(err, &rl) || rl.retryAfter <= 0 || rl.retryAfter > time.Second {
		t.Fatalf("4th attempt: %v, want a refusal with a retry within 1 s", err)
	}
	if got := retryAfterSeconds(err); got != 1 {
		t.Fatalf("Retry-After %d, want 1", got)
	}
	// A success gives its token back.
	l.refund(a)
	if err := l.take(a); err != nil {
		t.Fatalf("after a refund: %v", err)
	}
	if l.take(a) == nil {
		t.Fatal("the refund gave back more than one token")
	}
	// The rate: one more token a second, not a whole burst.
	*now = now.Add(time.Second)
	if err := l.take(a); err != nil {
		t.Fatalf("a second later: %v", err)
	}
	if l.take(a) == nil {
		t.Fatal("a second gave back more than one token")
	}
	// Other addresses have their own buckets; a v6 address counts as its
	// /64; a v4-mapped address is the v4 one.
	if err := l.take(netip.MustParseAddr("192.0.2.2")); err != nil {
		t.Fatalf("another address: %v", err)
	}
	if l.take(netip.MustParseAddr("::ffff:192.0.2.1")) == nil {
		t.Fatal("the v4-mapped form of a limited address was not limited")
	}
	for i := range 3 {
		if err := l.take(netip.MustParseAddr("2001:db8:1:2::" + strconv.Itoa(i+1))); err != nil {
			t.Fatalf("v6 attempt %d: %v", i+1, err)
		}
	}
	if l.take(netip.MustParseAddr("2001:db8:1:2:ffff::9")) == nil {
		t.Fatal("another address of the same /64 was not limited")
	}
	if err := l.take(netip.MustParseAddr("2001:db8:1:3::1")); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	// No address (a peer we could not parse), no limiter: never limited.
	for range 10 {
		if err := l.take(netip.Addr{}); err != nil {
			t.Fatal(err)
		}
		var off *addrLimiter
		if err := off.take(a); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAddrLimiterRotatingAddresses: an attacker exhausting the buckets of
// 10,000 addresses leaves the table's memory as it was and most other
// addresses unlimited (each needs both of its cells exhausted).
func TestAddrLimiterRotatingAddresses(t *testing.T) {
	const slots = 1 << 16
	l, _ := testLimiter(6, 10, slots)
	for i := range 10_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		for l.take(a) == nil {
		}
	}
	if len(l.cells) != slots {
		t.Fatalf("table grew to %d cells", len(l.cells))
	}
	allowed := 0
	for i := range 100 {
		if l.take(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})) == nil {
			allowed++
		}
	}
	// Each cell is exhausted with p ≈ 0.26, both with ≈ 0.07: about 93 of
	// 100 pass; 80 is five standard deviations away.
	if allowed < 80 {
		t.Fatalf("only %d of 100 innocent addresses allowed", allowed)
	}
}

func TestHashPoolBounded(t *testing.T) {
	p := newHashPool(1, 2)
	release := make(chan struct{})
	started := make(chan struct{}, 3)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 { // one runs, two wait
		wg.Go(func() {
			errs <- p.run(func() { started <- struct{}{}; <-release })
		})
	}
	<-started
	deadline := time.Now().Add(10 * time.Second)
	for p.queued() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("queued = %d, want 2", p.queued())
		}
		time.Sleep(time.Millisecond)
	}
	ran := false
	if err := p.run(func() { ran = true }); !errors.Is(err, errHashBusy) || ran {
		t.Fatalf("past the queue: %v (ran %v), want errHashBusy without running", err, ran)
	}
	if got := retryAfterSeconds(errHashBusy); got != 1 {
		t.Fatalf("Retry-After of a busy pool %d, want 1", got)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p.queued() != 0 || p.admitted.Load() != 0 {
		t.Fatalf("after the work: queued %d, admitted %d", p.queued(), p.admitted.Load())
	}
}

func TestDefaultHashWorkersLeaveACore(t *testing.T) {
	var o Options
	if err := o.applyHashDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.HashWorkers != DefaultHashWorkers() || o.HashQueue != DefaultHashQueue ||
		o.AuthFailuresPerMinute != DefaultAuthFailuresPerMinute || o.AuthFailureBurst != DefaultAuthFailureBurst ||
		o.AuthLimiterSlots != DefaultAuthLimiterSlots {
		t.Fatalf("defaults not applied: %+v", o)
	}
	for _, bad := range []Options{{HashWorkers: -1}, {HashQueue: -1}, {AuthFailureBurst: -1}, {AuthLimiterSlots: -1}} {
		if bad.applyHashDefaults() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestKOReaderThrottled: past the burst of failures an address gets 429
// with Retry-After in the KOReader error shape, its cached good key keeps
// working, other addresses (behind a trusted proxy here) are not limited,
// and a full hash queue answers 503.
func TestKOReaderThrottled(t *testing.T) {
	e := newHTTPEnv(t, httpBackends[0].open(t), envOpt{mod: func(o *Options) {
		o.AuthFailuresPerMinute, o.AuthFailureBurst = 1, 3
		o.HashWorkers, o.HashQueue = 1, 1
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}})
	good, bad := md5hex("good"), md5hex("bad")
	from := func(ip string, h map[string]string) map[string]string { h["X-Forwarded-For"] = ip; return h }
	const attacker, other = "203.0.113.7", "198.51.100.9"
	if r := e.do("POST", "/users/create", from(other, hdrs("", "")), `{"username":"alice","password":"`+good+`"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	// alice's key is cached (registration remembers it).
	// The attacker: 3 failures (a registration is an attempt too), then 429.
	if r := e.do("POST", "/users/create", from(attacker, hdrs("", "")), `{"username":"mallory","password":"`+bad+`"}`); r.status != 201 {
		t.Fatalf("attacker's registration: %d %s", r.status, r.body)
	}
	for i, user := range []string{"alice", "nobody"} {
		if r := e.do("GET", "/users/auth", from(attacker, hdrs(user, bad)), ""); r.status != 401 {
			t.Fatalf("failure %d: %d %s", i+1, r.status, r.body)
		}
	}
	for _, user := range []string{"alice", "nobody", "bob"} {
		r := e.do("GET", "/users/auth", from(attacker, hdrs(user, bad)), "")
		secs, _ := strconv.Atoi(r.header.Get("Retry-After"))
		if r.status != 429 || r.body != string(koTooManyAttempts) || secs < 1 || secs > 60 ||
			r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("past the burst (%s): %d %q Retry-After %q, want 429 %s", user, r.status, r.body, r.header.Get("Retry-After"), koTooManyAttempts)
		}
	}
	r := e.do("GET", "/api/documents.all", from(attacker, hdrs("alice", bad)), "")
	if r.status != 429 || r.body != "Too Many Requests" || r.header.Get("Retry-After") == "" {
		t.Fatalf("/api past the burst: %d %q", r.status, r.body)
	}
	if r := e.do("POST", "/users/create", from(attacker, hdrs("", "")), `{"username":"eve","password":"`+bad+`"}`); r.status != 429 {
		t.Fatalf("registration past the burst: %d %s", r.status, r.body)
	}
	// A cached key is checked before the limiter: alice syncs from the
	// attacker's address (a shared NAT) and from her own.
	for _, ip := range []string{attacker, other} {
		if r := e.do("GET", "/users/auth", from(ip, hdrs("alice", good)), ""); r.status != 200 {
			t.Fatalf("alice's cached key from %s: %d %s", ip, r.status, r.body)
		}
	}
	if r := e.do("GET", "/users/auth", from(other, hdrs("alice", bad)), ""); r.status != 401 {
		t.Fatalf("a failure from another address: %d %s", r.status, r.body)
	}

	// A full hash queue: 503 with Retry-After, not 401.
	release := make(chan struct{})
	var wg sync.WaitGroup
	pool := e.svc.auth.pool
	for range 2 {
		wg.Go(func() { _ = pool.run(func() { <-release }) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for pool.admitted.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the pool did not fill")
		}
		time.Sleep(time.Millisecond)
	}
	r = e.do("GET", "/users/auth", from("192.0.2.50", hdrs("alice", bad)), "")
	if r.status != 503 || r.body != string(koBusy) || r.header.Get("Retry-After") != "1" {
		t.Fatalf("full hash queue: %d %q Retry-After %q", r.status, r.body, r.header.Get("Retry-After"))
	}
	close(release)
	wg.Wait()
	// The busy answer cost that address no token: three failures pass.
	for i := range 3 {
		if r := e.do("GET", "/users/auth", from("192.0.2.50", hdrs("alice", bad)), ""); r.status != 401 {
			t.Fatalf("failure %d after a 503: %d %s", i+1, r.status, r.body)
		}
	}
}

// BenchmarkHashPoolOverhead is the pool's cost around a hash: admission,
// a worker slot and the wait histogram, with an empty fn (one argon2id
// hash of the default parameters is tens of milliseconds).
func BenchmarkHashPoolOverhead(b *testing.B) {
	p := newHashPool(DefaultHashWorkers(), DefaultHashQueue)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := p.run(func() {}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAddrLimiter is one take and refund (a successful uncached
// verification).
func BenchmarkAddrLimiter(b *testing.B) {
	l := newAddrLimiter(DefaultAuthFailuresPerMinute, DefaultAuthFailureBurst, DefaultAuthLimiterSlots)
	a := netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	for b.Loop() {
		if err := l.take(a); err != nil {
			b.Fatal(err)
		}
		l.refund(a)
	}
}

func TestClientAddr(t *testing.T) {
	s := &Service{opts: Options{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"),
	}}}
	for _, c := range []struct{ peer, xff, want string }{
		{"192.0.2.1", "203.0.113.9", "192.0.2.1"},                          // an untrusted peer's header is ignored
		{"10.0.0.1", "", "10.0.0.1"},                                       // a proxy without the header
		{"10.0.0.1", "203.0.113.9", "203.0.113.9"},                         // one trusted hop
		{"10.0.0.1", "198.51.100.1, 203.0.113.9, 10.0.0.2", "203.0.113.9"}, // the last untrusted entry, not the first (spoofable)
		{"10.0.0.1", "garbage, 10.0.0.2", "10.0.0.2"},                      // stop at the last readable trusted hop
		{"::1", "::ffff:203.0.113.9", "203.0.113.9"},                       // v4-mapped entries are v4
		{"::ffff:10.0.0.1", "2001:db8::1", "2001:db8::1"},                  // a v4-mapped peer
	} {
		if got := s.clientAddrOf(netip.MustParseAddr(c.peer), c.xff); got.String() != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
}

// FuzzClientAddr: any X-Forwarded-For gives the peer or an address listed
// in it, never a panic.
func FuzzClientAddr(f *testing.F) {
	for _, seed := range []string{"", "203.0.113.9", "1.2.3.4, 10.0.0.2", ",,, ", "::ffff:1.2.3.4,fe80::1%eth0", "10.0.0.3,x"} {
		f.Add(seed)
	}
	s := &Service{opts: Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, xff string) {
		got := s.clientAddrOf(peer, xff)
		if got == peer {
			return
		}
		for _, hop := range strings.Split(xff, ",") {
			if a, err := netip.ParseAddr(strings.TrimSpace(hop)); err == nil && a.Unmap() == got {
				return
			}
		}
		t.Fatalf("X-Forwarded-For %q gave %s, neither the peer nor a listed hop", xff, got)
	})
}

// TestPasswordChangeIsCharged: a password change costs a hash and is
// charged to its address like a registration, even though the account
// authenticates through the key cache (which charges nothing): a client
// cannot keep the hash pool busy by changing its password in a loop.
func TestPasswordChangeIsCharged(t *testing.T) {
	e := newHTTPEnv(t, httpBackends[0].open(t), envOpt{mod: func(o *Options) {
		o.AuthFailuresPerMinute, o.AuthFailureBurst = 1, 3
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}})
	key := md5hex("k")
	h := func() map[string]string {
		m := hdrs("alice", key)
		m["X-Forwarded-For"] = "203.0.113.8"
		return m
	}
	reg := hdrs("", "")
	reg["X-Forwarded-For"] = "203.0.113.8"
	if r := e.do("POST", "/users/create", reg, `{"username":"alice","password":"`+key+`"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	// The registration took one attempt of three; two changes (to the same
	// key, so the cache keeps working) take the rest.
	for i := range 2 {
		if r := e.do("PUT", "/users/password", h(), `{"password":"`+key+`"}`); r.status != 200 {
			t.Fatalf("change %d: %d %s", i+1, r.status, r.body)
		}
	}
	if r := e.do("PUT", "/users/password", h(), `{"password":"`+key+`"}`); r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("change past the burst: %d %s, want 429 with Retry-After", r.status, r.body)
	}
	if r := e.do("GET", "/users/auth", h(), ""); r.status != 200 {
		t.Fatalf("the cached key after the refusal: %d %s", r.status, r.body)
	}
}
