package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/gateway/node"
)

func TestHistogramPercentiles(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty histogram")
	}
	var vals []int64
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := int64(r.ExpFloat64() * float64(time.Millisecond))
		vals = append(vals, v)
		h.Record(v)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	for _, q := range []float64{0.5, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if rel := float64(got-want) / float64(want); rel > 0.01 || rel < -0.01 {
			t.Errorf("q%.3f: got %d want %d (%.2f%%)", q, got, want, rel*100)
		}
	}
	if h.Quantile(1) != vals[len(vals)-1] {
		t.Errorf("max: got %d want %d", h.Quantile(1), vals[len(vals)-1])
	}
	// Exact below 256, and bucket values stay within 1% above.
	for _, v := range []int64{0, 1, 255, 256, 257, 1000, 123456789, 1 << 40} {
		got := histValue(histIndex(v))
		if diff := got - v; diff < 0 && -diff > v/100 || diff > 0 && diff > v/100+1 {
			t.Errorf("bucket of %d is %d", v, got)
		}
	}
	if got := histValue(histIndex(200)); got != 200 {
		t.Errorf("200 -> %d", got)
	}
	s := h.Summary()
	if s.Count != 100000 || s.P50 <= 0 || s.P99 < s.P50 || s.P999 < s.P99 || s.Max < s.P999 {
		t.Errorf("summary %+v", s)
	}
}

func TestSeqTracker(t *testing.T) {
	var d Deliveries
	var tr SeqTracker
	now := time.Now()
	send := func(pub uint32, seq uint64) {
		d.Add(&tr, AppendPayload(nil, pub, seq, now, 100), now.UnixNano()+int64(time.Millisecond))
	}
	// publisher 0: 0 1 2 4 3 3 6 (5 lost, 3 reordered once, 3 duplicated)
	for _, s := range []uint64{0, 1, 2, 4, 3, 3, 6} {
		send(0, s)
	}
	// publisher 1: in order, independent of publisher 0
	for s := range uint64(5) {
		send(1, s)
	}
	c := d.Counts()
	if c.Delivered != 12 || c.Distinct != 11 || c.Duplicates != 1 || c.Reordered != 1 {
		t.Fatalf("counts %+v", c)
	}
	if g := tr.Gaps(); g != 1 {
		t.Fatalf("gaps %d, want 1", g)
	}
	if d.Latency.Count() != 12 || d.Latency.Quantile(0.5) < int64(990*time.Microsecond) || d.Latency.Quantile(0.5) > int64(1010*time.Microsecond) {
		t.Fatalf("latency p50 %d", d.Latency.Quantile(0.5))
	}
	pub, seq, sent, ok := ParsePayload(AppendPayload(nil, 7, 42, now, 10))
	if !ok || pub != 7 || seq != 42 || sent != now.UnixNano() {
		t.Fatalf("payload round trip: %d %d %d %v", pub, seq, sent, ok)
	}
}

func TestAppendMaskedFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		p := make([]byte, n)
		f := AppendMaskedFrame(nil, opBinary, p)
		if f[0] != 0x82 || f[1]&0x80 == 0 {
			t.Fatalf("n=%d: header % x", n, f[:2])
		}
		hl := map[bool]int{true: 2, false: 4}[n < 126]
		if n >= 65536 {
			hl = 10
		}
		mask := f[hl : hl+4]
		for i, b := range f[hl+4:] {
			if b^mask[i&3] != 0 {
				t.Fatalf("n=%d: byte %d not masked", n, i)
			}
		}
		if len(f) != hl+4+n {
			t.Fatalf("n=%d: len %d", n, len(f))
		}
	}
}

const testSecret = "bench-test-secret-0123456789abcdef0123456789abcdef"

func startNode(t *testing.T) (*node.Node, Target) { return startNodeWith(t, nil) }

// startNodeWith starts a node on loopback ports, with configure (if not
// nil) changing its config first, and stops it when the test ends.
func startNodeWith(t *testing.T, configure func(*node.Config)) (*node.Node, Target) {
	t.Helper()
	cfg := node.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", Secret: testSecret, EventLoops: 1,
		DataDir: t.TempDir(), WsifyListen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if configure != nil {
		configure(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	addr := n.Addr().(*net.TCPAddr)
	tg := Target{Kind: Gateway, WSURL: "ws://" + addr.String() + "/api/ws", MetricsURL: "http://" + n.AdminAddr().String() + "/metrics",
		Secret: testSecret, HTTPURL: "http://" + addr.String(), WsifyURL: "ws://" + n.WsifyAddr().String() + "/ws"}
	return n, tg
}

func smallParams() Params {
	return Params{Subs: 20, Publishes: 10, Conns: 50, Pings: 3, Channels: 4, SubsPerChannel: 5, Publishers: 3,
		ChurnRate: 100, ChurnLifetime: 200 * time.Millisecond, Duration: time.Second, Timeout: 10 * time.Second,
		Engine: Config{EventLoops: 2, SourceIPs: 4}}
}

func checkClean(t *testing.T, r *Result, deliveries uint64) {
	t.Helper()
	if r.Error != "" || r.ConnectErrors != 0 {
		t.Fatalf("%s: error %q, connect errors %d (%s)", r.Scenario, r.Error, r.ConnectErrors, r.FirstError)
	}
	if r.Lost != 0 || r.Duplicates != 0 || r.Reordered != 0 || len(r.CloseCodes) != 0 {
		t.Fatalf("%s: lost %d dup %d reordered %d closes %v", r.Scenario, r.Lost, r.Duplicates, r.Reordered, r.CloseCodes)
	}
	if deliveries > 0 && (r.Delivered != deliveries || r.Latency.Count != deliveries) {
		t.Fatalf("%s: delivered %d (latency samples %d), want %d", r.Scenario, r.Delivered, r.Latency.Count, deliveries)
	}
}

// TestFanoutSmoke runs the fan-out scenario through the real engine
// against an in-process gateway: 20 subscribers x 10 publishes.
func TestFanoutSmoke(t *testing.T) {
	_, tg := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := Fanout(ctx, tg, smallParams())
	checkClean(t, r, 200)
	if r.Conns != 20 || r.After.Heap <= 0 {
		t.Fatalf("conns %d heap %d", r.Conns, r.After.Heap)
	}
}

func TestScenariosSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	_, tg := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := smallParams()
	p.Duration = 300 * time.Millisecond
	cases := []struct {
		name string
		want uint64
	}{{"idle", 0}, {"handshake", 0}, {"ping", 0}, {"channels", 3 * 10 * 5}, {"wsify-fanout", 200}, {"kosync-fanout", 200}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Scenarios[c.name](ctx, tg, p)
			checkClean(t, r, c.want)
			if c.name == "ping" && r.PingRTT.Count < 150 {
				t.Fatalf("ping: %d RTT samples", r.PingRTT.Count)
			}
			if c.name == "idle" && r.Extra["answered_final_ping"] != 50 {
				t.Fatalf("idle: %v answered", r.Extra["answered_final_ping"])
			}
		})
	}
	t.Run("churn", func(t *testing.T) {
		p := p
		p.Duration = time.Second
		r := Churn(ctx, tg, p)
		checkClean(t, r, 0)
		if r.Delivered == 0 || r.Extra["churn_opened"].(int64) < 50 {
			t.Fatalf("churn: delivered %d opened %v", r.Delivered, r.Extra["churn_opened"])
		}
	})
}

// TestErrorKind: a failed dial is named by its step and errno, as the
// scale run reports kernel limits.
func TestErrorKind(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, refused := net.Dial("tcp", addr) // nothing listens there now
	if refused == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("connect: %w", refused), "connect: ECONNREFUSED"},
		{fmt.Errorf("connect: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}), "connect: EADDRNOTAVAIL"},
		{fmt.Errorf("set-up: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}), "set-up: timeout"},
		{fmt.Errorf("connect: %w", context.DeadlineExceeded), "connect: timeout"},
		{errors.New(`upgrade refused: "HTTP/1.1 503 Service Unavailable"`), "upgrade refused: other"},
	} {
		if got := ErrorKind(c.err); got != c.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
