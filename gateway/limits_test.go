package gateway

import (
	"net/netip"
	"testing"
	"time"
)

func TestOriginMatcher(t *testing.T) {
	list := []string{"https://app.example.com", "http://localhost:3000", "https://*.example.org",
		"HTTP://Upper.Example.NET:80", "https://[::1]:8443", "wss://ws.example.com:443"}
	m, err := parseOrigins(list)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://app.example.com", true},
		{"https://app.example.com:443", true}, // default port normalised
		{"HTTPS://APP.EXAMPLE.COM", true},     // case-insensitive
		{"http://app.example.com", false},     // other scheme
		{"https://app.example.com:8443", false},
		{"https://evil.com", false},
		{"https://app.example.com.evil.com", false},
		{"https://evilapp.example.com", false},
		{"http://localhost:3000", true},
		{"http://localhost", false},
		{"http://localhost:3001", false},
		{"https://a.example.org", true},
		{"https://a.b.example.org", true},
		{"https://example.org", false}, // the wildcard needs a subdomain
		{"https://badexample.org", false},
		{"http://a.example.org", false},
		{"https://a.example.org:444", false},
		{"http://upper.example.net", true},
		{"https://[::1]:8443", true},
		{"https://[::1]", false},
		{"wss://ws.example.com", true},
		{"null", false},
		{"", false},
		{"https://app.example.com/path", false},
		{"https://*.example.org", false},
	} {
		if got := m.allowed([]byte(tc.origin)); got != tc.ok {
			t.Errorf("allowed(%q) = %v, want %v", tc.origin, got, tc.ok)
		}
	}
	for _, all := range [][]string{nil, {}, {"*"}, {"https://x.com", "*"}} {
		m, err := parseOrigins(all)
		if err != nil || !m.allowed([]byte("https://anything.test")) || !m.allowed([]byte("null")) {
			t.Errorf("%q must allow everything (err %v)", all, err)
		}
	}
	for _, bad := range []string{"example.com", "https://", "https://a.com/", "https://a.com:0", "https://a.com:99999",
		"https://a*.com", "https://*.", "https://x.*.com", "https://u@a.com", "://a.com"} {
		if _, err := parseOrigins([]string{bad}); err == nil {
			t.Errorf("parseOrigins(%q) accepted", bad)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, l := range []Limits{{MessageRate: -1}, {MessageBurst: -1}, {MaxConnsPerIP: -1}, {MaxConns: -1},
		{RetryAfter: -time.Second}, {AllowedOrigins: []string{"nope"}}} {
		if l.Validate() == nil {
			t.Errorf("%+v validated", l)
		}
	}
	if err := (Limits{MessageRate: 10, AllowedOrigins: []string{"https://a.com"}}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestMessageRateBucket: the bucket lets Burst messages through at once,
// then exactly Rate per second (not one refill per second: centrifugo#1206).
func TestMessageRateBucket(t *testing.T) {
	lim := &limiter{interval: int64(time.Second / 100)} // 100/s
	lim.tolerance = 9 * lim.interval                    // burst 10
	var tat int64
	now := int64(time.Hour)
	n := 0
	for !lim.overRate(&tat, now) {
		n++
	}
	if n != 10 {
		t.Fatalf("burst let %d through, want 10", n)
	}
	// 10 ms later one more token; 50 ms later five.
	if !lim.overRate(&tat, now+int64(5*time.Millisecond)) {
		t.Fatal("half an interval later, no token should be back")
	}
	if lim.overRate(&tat, now+int64(10*time.Millisecond)) {
		t.Fatal("a token should have refilled after one interval")
	}
	n = 0
	later := now + int64(60*time.Millisecond)
	for !lim.overRate(&tat, later) {
		n++
	}
	if n != 5 {
		t.Fatalf("after 50 ms more, %d let through, want 5", n)
	}
	// A long pause refills to the burst, not beyond.
	n = 0
	for !lim.overRate(&tat, later+int64(time.Minute)) {
		n++
	}
	if n != 10 {
		t.Fatalf("after a pause, %d let through, want the burst of 10", n)
	}
}

func TestIPCounter(t *testing.T) {
	var c ipCounter
	a, b := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	for range 3 {
		if !c.acquire(a, 3) {
			t.Fatal("refused under the cap")
		}
	}
	if c.acquire(a, 3) {
		t.Fatal("accepted over the cap")
	}
	if !c.acquire(b, 3) {
		t.Fatal("another address is refused")
	}
	c.release(a)
	if !c.acquire(a, 3) {
		t.Fatal("a released place is not reusable")
	}
	for range 3 {
		c.release(a)
	}
	c.release(b)
	if c.count(a) != 0 || c.count(b) != 0 || len(c.shard(a).m) != 0 {
		t.Fatal("counts left behind")
	}
}

// TestIPKey: the per-address cap counts an IPv4 address alone (mapped
// into IPv6 or not) and an IPv6 address as its /64.
func TestIPKey(t *testing.T) {
	for _, tc := range []struct{ addr, key string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"2001:db8:1:2::", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
		{"fe80::1%eth0", "fe80::"},
		{"::1", "::"},
	} {
		if got := ipKey(netip.MustParseAddr(tc.addr)); got != netip.MustParseAddr(tc.key) {
			t.Errorf("ipKey(%s) = %s, want %s", tc.addr, got, tc.key)
		}
	}
}

// TestPerIPCapGroups: addresses of one IPv6 /64 share a cap; other /64s
// and IPv4 addresses have their own.
func TestPerIPCapGroups(t *testing.T) {
	var c ipCounter
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"2001:db8::1", true},
		{"2001:db8::2", false}, // same /64
		{"2001:db8:0:0:ffff:ffff:ffff:ffff", false},
		{"2001:db8:0:1::1", true}, // next /64
		{"192.0.2.1", true},
		{"::ffff:192.0.2.1", false}, // the same IPv4 address
		{"192.0.2.2", true},
	} {
		if got := c.acquire(netip.MustParseAddr(tc.addr), 1); got != tc.ok {
			t.Errorf("acquire(%s) = %v, want %v", tc.addr, got, tc.ok)
		}
	}
	c.release(netip.MustParseAddr("2001:db8::ffff")) // another address of the /64 gives it back
	if !c.acquire(netip.MustParseAddr("2001:db8::3"), 1) {
		t.Error("the /64's place was not given back")
	}
}
