package ratelog

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeClock drives a Logger by hand: pending holds the armed flushes.
type fakeClock struct {
	t       time.Time
	pending []pendingFlush
}

type pendingFlush struct {
	at time.Time
	f  func()
}

func newTestLogger(buf *bytes.Buffer, level slog.Level) (*Logger, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := New(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})), level, time.Second)
	l.now = func() time.Time { return clk.t }
	l.after = func(d time.Duration, f func()) { clk.pending = append(clk.pending, pendingFlush{clk.t.Add(d), f}) }
	return l, clk
}

// advance moves the clock and runs the flushes that are due.
func (c *fakeClock) advance(d time.Duration) {
	c.t = c.t.Add(d)
	for {
		ran := false
		for i, p := range c.pending {
			if !p.at.After(c.t) {
				c.pending = append(c.pending[:i], c.pending[i+1:]...)
				p.f()
				ran = true
				break
			}
		}
		if !ran {
			return
		}
	}
}

func lines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestFirstLineAtOnceRepeatsCollapsed(t *testing.T) {
	var buf bytes.Buffer
	l, clk := newTestLogger(&buf, slog.LevelInfo)
	l.Log("k", "refused", slog.String("n", "1"))
	if got := lines(&buf); len(got) != 1 || !strings.Contains(got[0], "msg=refused n=1") {
		t.Fatalf("first line: %q", got)
	}
	for i := 2; i <= 50; i++ {
		clk.advance(10 * time.Millisecond)
		l.Log("k", "refused", slog.Int("n", i))
	}
	if got := lines(&buf); len(got) != 1 {
		t.Fatalf("repeats within the interval were written: %q", got)
	}
	clk.advance(time.Second)
	got := lines(&buf)
	if len(got) != 2 || !strings.Contains(got[1], "n=50 repeated=49") {
		t.Fatalf("summary: %q, want the last repeat with repeated=49", got)
	}
	// A quiet interval forgets the key: the next line is written at once.
	clk.advance(2 * time.Second)
	if len(l.keys) != 0 {
		t.Fatalf("a quiet key is still tracked: %v", l.keys)
	}
	l.Log("k", "refused", slog.Int("n", 51))
	if got := lines(&buf); len(got) != 3 || !strings.Contains(got[2], "n=51") || strings.Contains(got[2], "repeated") {
		t.Fatalf("after a quiet interval: %q", got)
	}
}

func TestSteadyFloodOneLinePerInterval(t *testing.T) {
	var buf bytes.Buffer
	l, clk := newTestLogger(&buf, slog.LevelInfo)
	for i := 0; i < 1000; i++ { // 10 s at 100 lines a second
		l.Log("k", "refused")
		clk.advance(10 * time.Millisecond)
	}
	clk.advance(time.Second)
	got := lines(&buf)
	if len(got) < 10 || len(got) > 12 {
		t.Fatalf("%d lines for 10 intervals of flood, want about 11:\n%s", len(got), buf.String())
	}
	total := 1 // the first line
	for _, ln := range got[1:] {
		var n int
		if i := strings.Index(ln, "repeated="); i < 0 {
			t.Fatalf("summary without a count: %q", ln)
		} else if _, err := fmt.Sscan(ln[i+len("repeated="):], &n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 1000 {
		t.Fatalf("lines accounted for: %d, want 1000", total)
	}
}

func TestKeysAreIndependent(t *testing.T) {
	var buf bytes.Buffer
	l, _ := newTestLogger(&buf, slog.LevelInfo)
	l.Refused("authentication failed", "native", "invalid", netip.MustParseAddr("192.0.2.1"), "")
	l.Refused("authentication failed", "native", "expired", netip.MustParseAddr("192.0.2.1"), "bob")
	l.Refused("authentication failed", "kosync", "invalid", netip.MustParseAddr("::ffff:192.0.2.2"), "alice")
	l.Refused("authentication failed", "native", "invalid", netip.MustParseAddr("192.0.2.3"), "")
	got := lines(&buf)
	if len(got) != 3 {
		t.Fatalf("got %q, want three lines (the fourth repeats the first key)", got)
	}
	want := `msg="authentication failed" protocol=kosync remote=192.0.2.2 subject=alice reason=invalid`
	if !strings.Contains(got[2], want) {
		t.Fatalf("line %q, want %q", got[2], want)
	}
}

// TestBurst: NewBurst writes the first burst lines of a key in each
// interval (the summary of the last one counts as one), counts the rest,
// and accounts for every line.
func TestBurst(t *testing.T) {
	var buf bytes.Buffer
	l, clk := newTestLogger(&buf, slog.LevelInfo)
	l.burst = 3
	for i := 1; i <= 10; i++ {
		l.Log("k", "opened", slog.Int("n", i))
		clk.advance(10 * time.Millisecond)
	}
	got := lines(&buf)
	if len(got) != 3 || !strings.Contains(got[0], "n=1") || !strings.Contains(got[2], "n=3") {
		t.Fatalf("first interval: %q, want n=1..3 written", got)
	}
	clk.advance(time.Second) // summary: n=10 repeated=7; a new interval
	for i := 11; i <= 14; i++ {
		l.Log("k", "opened", slog.Int("n", i))
	}
	got = lines(&buf)
	if len(got) != 6 || !strings.Contains(got[3], "n=10 repeated=7") ||
		!strings.Contains(got[4], "n=11") || !strings.Contains(got[5], "n=12") {
		t.Fatalf("second interval: %q, want the summary, n=11, n=12", got)
	}
	clk.advance(time.Second)
	if got = lines(&buf); len(got) != 7 || !strings.Contains(got[6], "n=14 repeated=2") {
		t.Fatalf("second summary: %q", got)
	}
	clk.advance(2 * time.Second) // a quiet interval: forgotten
	for i := 15; i <= 17; i++ {
		l.Log("k", "opened", slog.Int("n", i))
	}
	if got = lines(&buf); len(got) != 10 || strings.Contains(got[9], "repeated") {
		t.Fatalf("after a quiet interval: %q, want three more lines at once", got)
	}
}

func TestDisabledLevelCostsNothing(t *testing.T) {
	var buf bytes.Buffer
	l, clk := newTestLogger(&buf, slog.LevelDebug) // the handler is at info
	l.Log("k", "x")
	l.Log("k", "x")
	clk.advance(time.Hour)
	if buf.Len() != 0 || len(l.keys) != 0 || len(clk.pending) != 0 {
		t.Fatalf("a disabled level logged or tracked: %q %v", buf.String(), l.keys)
	}
}

func TestKeysBounded(t *testing.T) {
	var buf bytes.Buffer
	l, _ := newTestLogger(&buf, slog.LevelInfo)
	for i := 0; i < 3*maxKeys; i++ {
		l.Log(strings.Repeat("k", i%50)+string(rune('a'+i%26))+string(rune(i)), "x")
	}
	if len(l.keys) > maxKeys+1 {
		t.Fatalf("%d keys tracked, want at most %d", len(l.keys), maxKeys+1)
	}
}

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"alice", 10, "alice"},
		{"abcdef", 3, "abc…"},
		{"ééé", 3, "é…"},
		{"a\xffb", 10, "a\uFFFDb"},
	} {
		if got := Truncate(c.in, c.n); got != c.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func BenchmarkLogCollapsed(b *testing.B) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), slog.LevelInfo, time.Hour)
	addr := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		l.Refused("authentication failed", "native", "invalid", addr, "")
	}
}
