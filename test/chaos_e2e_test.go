package test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/client"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// The chaos smoke (issue 10, "Tests that must exist"): skipped unless
// GATEWAY_CHAOS names a duration. `make chaos` runs
//
//	GATEWAY_CHAOS=3m go test -count=1 -run '^TestChaos$' -timeout 30m -v ./test/
//
// One `gateway serve` process (built from this tree) with its own
// redis-server, all four protocols on (native, KOsync with the KOReader HTTP
// API, Hypothesis, wsify on its own listener with an authorizer webhook run
// by the test), two event loops, all on loopback. For the whole run it is
// attacked concurrently (chaosAttacks, drawn by weight by
// GATEWAY_CHAOS_WORKERS goroutines, plus the held pools): random bytes and
// malformed heads at every listener, garbage frames and mutated JSON or
// packets at every WebSocket endpoint, random requests at every HTTP
// endpoint (KOReader, wsify /broadcast, the admin API), payloads that are
// not UTF-8 or not envelopes published straight into Redis and through the
// admin API, join floods, slowloris heads, handshake floods, resets
// (SO_LINGER 0) while the server writes, peers that never read, and Redis
// killed and restarted at a third and two thirds of the run. Meanwhile one
// healthy native client per event loop keeps a publish round trip going
// (echo on, its own channel, one every chaosRoundTripEvery), and a wsify,
// a Hypothesis and a KOsync client stay connected where the hostile
// publishes land.
//
// It fails if the process exits, a healthy round trip takes longer than the
// stall bound (100 ms: the loop it runs on stalled; unless the machine
// explains it: the harness's own 5 ms sleeps overran by as much while the
// gateway used under one core, which the figures report apart) or never
// comes back (loss), gateway_handler_panics_total is above 0, a loop-lag metric (any
// series whose name has "loop_lag", if the node has one) passes the stall
// bound, or the median RSS of the last third of the run is more than
// chaosRSSFactor times that of the first third. At the end it logs the
// figures: attacks per kind, round trips (count, p50, p99, max; each stall
// with the gateway's CPU use, the harness's own scheduling delay and the
// attacks started just before, to tell a loop stall from a starved
// machine), RSS start/peak/end, CPU, panics, close codes and HTTP answers
// seen, and on failure the gateway's log lines about panics (the whole log
// follows).
//
// Environment: GATEWAY_CHAOS (duration, at least 20s; "1" or anything
// unparsable: 3m), GATEWAY_CHAOS_SEED (the run's seed, logged at the start;
// each worker draws from its own stream of it, so a seed replays the same
// choices, though not the same interleaving), GATEWAY_CHAOS_STALL (the
// stall bound), GATEWAY_CHAOS_WORKERS (attack goroutines, default 6),
// GATEWAY_CHAOS_SKIP (comma separated attack kinds to leave out, e.g. to get
// past a known crash). Helpers are prefixed chaos.

const (
	chaosDefaultDuration = 3 * time.Minute
	chaosDefaultStall    = 100 * time.Millisecond
	chaosDefaultWorkers  = 6
	// chaosLoops is the gateway's --event-loops; one healthy client each.
	chaosLoops = 2
	// chaosRoundTripEvery paces each healthy client's publishes.
	chaosRoundTripEvery = 20 * time.Millisecond
	// chaosLostAfter: a healthy publish not back by then is lost.
	chaosLostAfter = 5 * time.Second
	// chaosHealthyPingEvery keeps the healthy clients inside the ping timeout.
	chaosHealthyPingEvery = 5 * time.Second
	// chaosRSSFactor bounds the growth of the median RSS from the first
	// third of the run to the last: generous, the point is "not without bound".
	chaosRSSFactor = 3.0
	// chaosSlowloris and chaosNeverReaders are the connections the held
	// pools keep open at any time.
	chaosSlowloris    = 24
	chaosNeverReaders = 8
	// chaosIOTimeout bounds every read and write of an attack.
	chaosIOTimeout = 3 * time.Second
	// chaosAuthorizerTimeout is the gateway's --wsify-authorizer-timeout.
	chaosAuthorizerTimeout = 2 * time.Second
	// chaosMaxMessage is the gateway's default --max-message-size.
	chaosMaxMessage = 65536

	chaosNewsChannel = "chaos-news" // wsify members listen; bad UTF-8 goes here
	chaosFireChannel = "chaos-fire" // the firehose: what resets and never-readers receive
	chaosKsUser      = "chaos"
	chaosKsPassword  = "chaos-password"
	chaosHypURI      = "https://example.com/chaos"
)

// chaosConfig is what the environment asks for.
type chaosConfig struct {
	dur     time.Duration
	seed    uint64
	stall   time.Duration
	workers int
	skip    map[string]bool
}

func chaosConfigFromEnv(t *testing.T) chaosConfig {
	spec := os.Getenv("GATEWAY_CHAOS")
	if spec == "" {
		t.Skip("chaos: set GATEWAY_CHAOS=3m (a duration) to run it; `make chaos` does")
	}
	cfg := chaosConfig{dur: chaosDefaultDuration, stall: chaosDefaultStall, workers: chaosDefaultWorkers,
		seed: uint64(time.Now().UnixNano()), skip: map[string]bool{}}
	if d, err := time.ParseDuration(spec); err == nil && d > 0 {
		cfg.dur = max(d, 20*time.Second)
	}
	if s := os.Getenv("GATEWAY_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GATEWAY_CHAOS_SEED=%q: %v", s, err)
		}
		cfg.seed = n
	}
	if s := os.Getenv("GATEWAY_CHAOS_STALL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("GATEWAY_CHAOS_STALL=%q: %v", s, err)
		}
		cfg.stall = d
	}
	if s := os.Getenv("GATEWAY_CHAOS_WORKERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("GATEWAY_CHAOS_WORKERS=%q: want a positive number", s)
		}
		cfg.workers = n
	}
	for k := range strings.SplitSeq(os.Getenv("GATEWAY_CHAOS_SKIP"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			if !slices.ContainsFunc(chaosAttacks, func(a chaosAttack) bool { return a.name == k }) && !chaosHeldKinds[k] {
				t.Fatalf("GATEWAY_CHAOS_SKIP: no attack kind %q", k)
			}
			cfg.skip[k] = true
		}
	}
	return cfg
}

// chaosAttack is one kind of attack the workers draw, weighted.
type chaosAttack struct {
	name   string
	weight int
	run    func(r *chaosRun, rng *rand.Rand)
}

var chaosAttacks = []chaosAttack{
	{"raw-bytes", 8, (*chaosRun).attackRawBytes},
	{"bad-head", 8, (*chaosRun).attackBadHead},
	{"ws-bad-frames", 12, (*chaosRun).attackBadFrames},
	{"native-packets", 10, (*chaosRun).attackNativePackets},
	{"json-messages", 12, (*chaosRun).attackJSONMessages},
	{"koreader-http", 5, (*chaosRun).attackKOReader},
	{"wsify-broadcast", 5, (*chaosRun).attackWsifyBroadcast},
	{"admin-api", 5, (*chaosRun).attackAdmin},
	{"redis-publish", 3, (*chaosRun).attackRedisPublish},
	{"bad-utf8-redis", 3, (*chaosRun).attackRedisBadUTF8},
	{"bad-utf8-admin", 4, (*chaosRun).attackAdminBadUTF8},
	{"handshake-flood", 1, (*chaosRun).attackHandshakeFlood},
	{"join-flood", 1, (*chaosRun).attackJoinFlood},
	{"reset-mid-write", 6, (*chaosRun).attackResetMidWrite},
}

// chaosHeldKinds are the attacks run by their own pools or on a schedule.
var chaosHeldKinds = map[string]bool{"slowloris": true, "never-read": true, "redis-restart": true}

// chaosRun is the shared state of one run.
type chaosRun struct {
	t                              *testing.T
	cfg                            chaosConfig
	ctx                            context.Context
	began                          time.Time
	proc                           *e2eProc
	redis                          *redistest.Server
	keys                           *token.Secrets
	mainAddr, wsifyAddr, adminAddr string
	http                           *http.Client
	rdb                            *redis.Client

	keyMu   sync.Mutex
	keyText []string // valid native access keys (text), for attackers
	ksKey   string   // the KOReader key of chaosKsUser
	ksJWT   string   // a KOsync JWT of chaosKsUser

	mu          sync.Mutex
	attacks     map[string]int64 // attack kind -> attacks sent
	closes      map[string]int64 // WebSocket close codes and other endings seen by attackers
	statuses    map[string]int64 // HTTP statuses seen
	failures    []string
	rtts        []time.Duration  // healthy round trips
	stalls      []chaosStall     // round trips over the stall bound
	late        []chaosLate      // the harness's own lateness over chaosLateNoted
	lost        int64            // healthy publishes that never came back
	listeners   map[string]int64 // endings of the listening clients (wsify, Hypothesis, KOsync)
	rss         []chaosSample
	panics      float64
	lagMax      float64 // largest loop-lag sample, seconds (if the node has one)
	lagSeries   string
	scrapeErr   int64
	scrapeMax   time.Duration
	redisEvts   []string
	recent      [4096]chaosEvent // ring of attack starts
	lastMetrics map[string]float64
	recentN     int
}

// chaosSample is one reading of the gateway process: RSS and the CPU time
// it used so far.
type chaosSample struct {
	at  time.Duration
	rss int64
	cpu time.Duration
}

// chaosStall is a healthy round trip over the stall bound.
type chaosStall struct {
	client  int
	seq     int64
	at, rtt time.Duration // at: since the start of the run
	before  string        // attack kinds started in the second before
}

// chaosLate is a moment the harness itself was scheduled late.
type chaosLate struct{ at, late time.Duration }

func (r *chaosRun) count(kind string, n int64) {
	r.mu.Lock()
	r.attacks[kind] += n
	r.recent[r.recentN%len(r.recent)] = chaosEvent{time.Now(), kind}
	r.recentN++
	r.mu.Unlock()
}

// chaosEvent is an attack's start, kept in a ring to name what ran just
// before a stall.
type chaosEvent struct {
	at   time.Time
	kind string
}

// recentKinds counts the attack kinds started in the second before t
// (r.mu held).
func (r *chaosRun) recentKinds(t time.Time) string {
	kinds := map[string]int{}
	for _, e := range r.recent {
		if !e.at.IsZero() && e.at.Before(t) && t.Sub(e.at) < time.Second {
			kinds[e.kind]++
		}
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		out = append(out, fmt.Sprintf("%s×%d", k, kinds[k]))
	}
	return strings.Join(out, " ")
}

func (r *chaosRun) sawClose(what string) {
	r.mu.Lock()
	r.closes[what]++
	r.mu.Unlock()
}

func (r *chaosRun) sawStatus(code int) {
	r.mu.Lock()
	r.statuses[strconv.Itoa(code)]++
	r.mu.Unlock()
}

func (r *chaosRun) fail(format string, args ...any) {
	msg := fmt.Sprintf("[%6.1fs] ", time.Since(r.began).Seconds()) + fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.failures = append(r.failures, msg)
	r.mu.Unlock()
}

func (r *chaosRun) since() string { return fmt.Sprintf("%.1fs", time.Since(r.began).Seconds()) }

// TestChaos: see the comment at the top of the file.
func TestChaos(t *testing.T) {
	cfg := chaosConfigFromEnv(t)
	t.Logf("chaos: seed %d (GATEWAY_CHAOS_SEED=%d replays it), %v, stall bound %v, %d workers, skipping %v",
		cfg.seed, cfg.seed, cfg.dur, cfg.stall, cfg.workers, slices.Sorted(maps.Keys(cfg.skip)))

	r := &chaosRun{t: t, cfg: cfg, keys: faultKeys(t),
		attacks: map[string]int64{}, closes: map[string]int64{}, statuses: map[string]int64{},
		listeners: map[string]int64{}}
	r.redis = redistest.Start(t)
	r.wsifyAddr = e2eFreeAddr(t)
	authorizer := chaosAuthorizer(t)
	r.proc = e2eServe(t, e2eEnv("GATEWAY_SECRET="+testSecret), "--data-dir", t.TempDir(), "--redis", r.redis.URL,
		"--event-loops", strconv.Itoa(chaosLoops), "--wsify-listen", r.wsifyAddr, "--log-level", "warn",
		"--wsify-authorizer-url", authorizer.URL, "--wsify-authorizer-timeout", chaosAuthorizerTimeout.String())
	r.mainAddr = strings.TrimSuffix(strings.TrimPrefix(r.proc.ws, "ws://"), "/api/ws")
	r.adminAddr = strings.TrimPrefix(r.proc.admin, "http://")
	r.http = &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	r.rdb = redis.NewClient(&redis.Options{Addr: r.redis.Addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = r.rdb.Close() })
	for i := range 4 {
		text, _ := faultIssue(t, r.keys, fmt.Sprintf("chaos-attacker-%d", i))
		r.keyText = append(r.keyText, text)
	}
	if err := r.kosyncAccount(); err != nil {
		t.Fatalf("KOReader account: %v", err)
	}

	ctx, stop := context.WithTimeout(context.Background(), cfg.dur)
	defer stop()
	r.ctx = ctx
	r.began = time.Now()
	var bg sync.WaitGroup

	// The node must stay up: its exit ends the run at once.
	bg.Go(func() {
		select {
		case <-ctx.Done():
		case <-r.proc.exited:
			r.fail("the gateway process exited: %v", r.proc.err)
			stop()
		}
	})
	bg.Go(r.sampleRSS)
	bg.Go(r.watchSelf)
	bg.Go(r.scrapeMetrics)
	for i := range chaosLoops {
		text, _ := faultIssue(t, r.keys, fmt.Sprintf("chaos-healthy-%d", i))
		ready := make(chan struct{})
		bg.Go(func() { r.healthy(i, text, ready) })
		select { // one at a time, so round robin puts one on each loop
		case <-ready:
		case <-time.After(waitFor):
			t.Fatalf("healthy client %d did not start", i)
		}
	}
	bg.Go(r.firehose)
	for i := range 3 {
		bg.Go(func() { r.listenWsify(i) })
	}
	bg.Go(r.listenHypothesis)
	bg.Go(r.listenKosync)
	if !cfg.skip["slowloris"] {
		for i := range chaosSlowloris {
			bg.Go(func() { r.slowloris(rand.New(rand.NewPCG(cfg.seed, 1000+uint64(i)))) })
		}
	}
	if !cfg.skip["never-read"] {
		for i := range chaosNeverReaders {
			bg.Go(func() { r.neverRead(rand.New(rand.NewPCG(cfg.seed, 2000+uint64(i)))) })
		}
	}
	var attacks []chaosAttack
	total := 0
	for _, a := range chaosAttacks {
		if !cfg.skip[a.name] {
			attacks = append(attacks, a)
			total += a.weight
		}
	}
	for w := range cfg.workers {
		bg.Go(func() {
			rng := rand.New(rand.NewPCG(cfg.seed, uint64(w)))
			for ctx.Err() == nil && total > 0 {
				n := rng.IntN(total)
				for _, a := range attacks {
					if n -= a.weight; n < 0 {
						a.run(r, rng)
						break
					}
				}
				r.pause(time.Duration(rng.IntN(10)) * time.Millisecond)
			}
		})
	}

	// Redis killed and restarted at a third and at two thirds of the run.
	if !cfg.skip["redis-restart"] {
		for _, at := range []time.Duration{cfg.dur / 3, 2 * cfg.dur / 3} {
			if !r.pause(time.Until(r.began.Add(at))) {
				break
			}
			r.restartRedis()
		}
	}
	<-ctx.Done()
	t.Logf("chaos: attack time over after %v; waiting for the attackers to stop", time.Since(r.began).Round(time.Millisecond))
	done := make(chan struct{})
	go func() { bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		r.fail("the attackers did not stop within 60 s of the end (a client blocked on the gateway?)")
	}
	r.finish()
}

// chaosAuthorizer is the wsify authorizer webhook of the run. Its answer
// depends only on the call, so a seed replays it: a call that mentions
// "chaos-deny" gets 403, "chaos-fail" 500, "chaos-slow" an answer after
// the authorizer timeout, anything else 200.
func chaosAuthorizer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		switch {
		case bytes.Contains(body, []byte("chaos-deny")):
			w.WriteHeader(http.StatusForbidden)
		case bytes.Contains(body, []byte("chaos-fail")):
			w.WriteHeader(http.StatusInternalServerError)
		case bytes.Contains(body, []byte("chaos-slow")):
			select {
			case <-req.Context().Done():
			case <-time.After(chaosAuthorizerTimeout + time.Second):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// exited reports whether the gateway process has ended.
func (r *chaosRun) exited() bool {
	select {
	case <-r.proc.exited:
		return true
	default:
		return false
	}
}

// exitedWithin waits up to d for the process to end (a connection may see
// the death before the process is reaped).
func (r *chaosRun) exitedWithin(d time.Duration) bool {
	select {
	case <-r.proc.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// pause sleeps d or until the run ends; false when the run ended.
func (r *chaosRun) pause(d time.Duration) bool {
	if d <= 0 {
		return r.ctx.Err() == nil
	}
	select {
	case <-r.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// ---- what is watched ----

// healthy is one healthy native client (package client): echo on,
// subscribed to its own channel, it publishes a sequence number every
// chaosRoundTripEvery and waits for it to come back, and pings every
// chaosHealthyPingEvery. A round trip over the stall bound is a stall; one
// not back within chaosLostAfter (or answered by anything else) is a loss;
// a drop of its connection is a failure (the package then reconnects and
// resubscribes by itself).
func (r *chaosRun) healthy(i int, keyText string, ready chan struct{}) {
	channel := fmt.Sprintf("chaos-healthy-%d", i)
	type arrival struct {
		payload []byte
		at      time.Time
	}
	got := make(chan arrival, 64)
	opts := client.Options{Key: keyText, Echo: true, PingInterval: chaosHealthyPingEvery, ReadLimit: 1 << 20,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		OnState: func(st client.State, err error) {
			if st == client.Disconnected && r.ctx.Err() == nil && !r.exitedWithin(time.Second) {
				r.fail("healthy client %d: dropped: %v", i, err)
			}
		}}
	var c *client.Client
	for c == nil && r.ctx.Err() == nil {
		var err error
		if c, err = r.healthyConnect(opts, channel, func(p client.Publication) {
			select {
			case got <- arrival{p.Payload, time.Now()}:
			default: // nobody waits for this many: the round trip reports it
			}
		}); err != nil {
			if ready != nil {
				close(ready) // the first attempt is over
				ready = nil
			}
			if r.exited() {
				break // the node's death is reported once, by its watcher
			}
			r.fail("healthy client %d: connect: %v", i, err)
			r.pause(time.Second)
		}
	}
	if ready != nil {
		close(ready)
	}
	if c == nil {
		return
	}
	defer c.Close()
	for seq := int64(1); r.ctx.Err() == nil; seq++ {
		want := strconv.AppendInt(nil, seq, 10)
		start := time.Now()
		wctx, cancel := context.WithTimeout(context.Background(), chaosLostAfter)
		err := c.Publish(wctx, channel, want)
		var a arrival
		if err == nil {
			select {
			case a = <-got:
				if !bytes.Equal(a.payload, want) {
					err = fmt.Errorf("got Message(%q, %q) while waiting for %q", channel, a.payload, want)
				}
			case <-wctx.Done():
				err = wctx.Err()
			}
		}
		cancel()
		if err != nil {
			if r.ctx.Err() == nil && !r.exitedWithin(time.Second) {
				r.mu.Lock()
				r.lost++
				r.mu.Unlock()
				r.fail("healthy client %d: publish %d not back: %v", i, seq, err)
			}
			for len(got) > 0 { // a late arrival is not the next one's answer
				<-got
			}
			continue
		}
		rtt := a.at.Sub(start)
		r.mu.Lock()
		r.rtts = append(r.rtts, rtt)
		if rtt > r.cfg.stall {
			r.stalls = append(r.stalls, chaosStall{i, seq, start.Sub(r.began), rtt, r.recentKinds(start)})
		}
		r.mu.Unlock()
		r.pause(chaosRoundTripEvery)
	}
}

// healthyConnect dials and subscribes within waitFor.
func (r *chaosRun) healthyConnect(opts client.Options, channel string, handler client.Handler) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(r.ctx, waitFor)
	defer cancel()
	c, err := client.Dial(ctx, r.proc.ws, opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.Subscribe(ctx, channel, handler); err != nil {
		c.Close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return c, nil
}

// sampleRSS reads the process's VmRSS from /proc twice a second.
func (r *chaosRun) sampleRSS() {
	pid := r.proc.cmd.Process.Pid
	for {
		var rss int64
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err == nil {
			for line := range strings.SplitSeq(string(b), "\n") {
				if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
					rss = kb << 10
				}
			}
		}
		cpu := chaosCPU(pid)
		if rss > 0 {
			r.mu.Lock()
			r.rss = append(r.rss, chaosSample{time.Since(r.began), rss, cpu})
			r.mu.Unlock()
		}
		if !r.pause(250 * time.Millisecond) {
			return
		}
	}
}

// chaosCPU is the user and system CPU time pid used so far
// (/proc/<pid>/stat fields 14 and 15, in USER_HZ = 100 ticks per second).
func chaosCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	_, rest, _ := strings.Cut(string(b), ") ") // the command name may hold spaces
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	user, _ := strconv.ParseInt(f[11], 10, 64)
	sys, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(user+sys) * 10 * time.Millisecond
}

// chaosLateNoted: the harness notes when its own 5 ms sleeps overran by
// more than this: then the machine, not the gateway, may have stalled.
const chaosLateNoted = 20 * time.Millisecond

// watchSelf measures the harness's own scheduling delay.
func (r *chaosRun) watchSelf() {
	for {
		start := time.Now()
		if !r.pause(5 * time.Millisecond) {
			return
		}
		if late := time.Since(start) - 5*time.Millisecond; late > chaosLateNoted {
			r.mu.Lock()
			if len(r.late) < 10000 {
				r.late = append(r.late, chaosLate{start.Sub(r.began), late})
			}
			r.mu.Unlock()
		}
	}
}

// context is what else went on during a stall (r.mu held): the gateway's
// CPU use around it, in cores (-1: unknown), and the longest the harness
// itself was scheduled late meanwhile.
func (s chaosStall) context(r *chaosRun) (cpu float64, late time.Duration) {
	from, to := s.at-250*time.Millisecond, s.at+s.rtt+250*time.Millisecond
	cpu = -1
	if len(r.rss) > 1 {
		first, last := r.rss[0], r.rss[len(r.rss)-1]
		for _, x := range r.rss {
			if x.at <= from {
				first = x
			}
		}
		for _, x := range slices.Backward(r.rss) {
			if x.at >= to {
				last = x
			}
		}
		if last.at > first.at {
			cpu = float64(last.cpu-first.cpu) / float64(last.at-first.at)
		}
	}
	for _, l := range r.late {
		if l.at+l.late >= s.at && l.at <= s.at+s.rtt {
			late = max(late, l.late)
		}
	}
	return cpu, late
}

// machine reports whether the machine explains a stall: the harness itself
// was late by as much as the round trip passed the bound, while the gateway
// was not busy (under one core). A gateway that hogs the cores (and so
// also delays the harness) is not excused.
func (s chaosStall) machine(r *chaosRun) bool {
	cpu, late := s.context(r)
	return cpu >= 0 && cpu < 1 && late >= s.rtt-r.cfg.stall
}

func (s chaosStall) describe(r *chaosRun) string {
	cpu, late := s.context(r)
	verdict := "NOT explained by the machine"
	if s.machine(r) {
		verdict = "explained by the machine"
	}
	cpuText := "?"
	if cpu >= 0 {
		cpuText = fmt.Sprintf("%.0f%%", 100*cpu)
	}
	return fmt.Sprintf("client %d seq %d at %.1fs: %v; gateway CPU %s of a core around it; harness itself late by up to %v then (%s); attacks started in the second before: %s",
		s.client, s.seq, s.at.Seconds(), s.rtt.Round(time.Microsecond), cpuText, late.Round(time.Millisecond), verdict, s.before)
}

// scrapeMetrics reads /metrics every second: the panic counter and any
// loop-lag series.
func (r *chaosRun) scrapeMetrics() {
	for {
		start := time.Now()
		m, err := r.scrape()
		took := time.Since(start)
		r.mu.Lock()
		r.scrapeMax = max(r.scrapeMax, took)
		if err != nil {
			r.scrapeErr++
		}
		r.mu.Unlock()
		if err == nil {
			r.notePanicsAndLag(m)
		}
		if !r.pause(time.Second) {
			return
		}
	}
}

func (r *chaosRun) scrape() (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.proc.admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out, nil
}

// notePanicsAndLag keeps the panic counter and the largest loop lag. A lag
// series is any whose name has "loop_lag": a gauge or summary in seconds
// is read as is; of a histogram, the observations above the stall bound
// count (the lag is then reported as the smallest bucket bound above them).
func (r *chaosRun) notePanicsAndLag(m map[string]float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.panics = max(r.panics, m["gateway_handler_panics_total"])
	r.lastMetrics = m
	buckets := map[string][]chaosBucket{}
	for name, v := range m {
		base, _, _ := strings.Cut(name, "{")
		if !strings.Contains(base, "loop_lag") || strings.HasSuffix(base, "_count") || strings.HasSuffix(base, "_sum") ||
			strings.HasSuffix(base, "_total") {
			continue
		}
		if strings.HasSuffix(base, "_bucket") {
			le := chaosLabel(name, "le")
			bound, err := strconv.ParseFloat(le, 64)
			if le == "+Inf" {
				bound, err = 1e9, nil
			}
			if err == nil {
				key := strings.Replace(name, `le="`+le+`"`, "", 1)
				buckets[key] = append(buckets[key], chaosBucket{bound, v})
			}
			continue
		}
		if v > r.lagMax {
			r.lagMax, r.lagSeries = v, name
		}
	}
	stall := r.cfg.stall.Seconds()
	for key, bs := range buckets {
		slices.SortFunc(bs, func(a, b chaosBucket) int { return cmp.Compare(a.le, b.le) })
		var within float64
		for _, b := range bs {
			if b.le <= stall {
				within = b.n
			}
		}
		for _, b := range bs {
			if b.le > stall && b.n > within { // something above the stall bound
				if b.le > r.lagMax {
					r.lagMax, r.lagSeries = b.le, key+" (bucket bound)"
				}
				break
			}
		}
	}
}

type chaosBucket struct{ le, n float64 }

// chaosLabel is the value of label in a sample name{...}.
func chaosLabel(sample, label string) string {
	_, rest, ok := strings.Cut(sample, label+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// restartRedis kills Redis (SHUTDOWN NOSAVE), keeps it down for a couple
// of seconds and starts it again, empty, on the same port; the KOReader
// account lived there, so it is created again.
func (r *chaosRun) restartRedis() {
	r.count("redis-restart", 1)
	r.redisEvent("killed at " + r.since())
	faultKillRedis(r.t, r.redis)
	r.pause(3 * time.Second)
	r.redis.Restart(r.t)
	r.redisEvent("back at " + r.since())
	// Until the node sees Redis again the account cannot be made.
	for r.ctx.Err() == nil {
		if err := r.kosyncAccount(); err == nil {
			return
		}
		r.pause(200 * time.Millisecond)
	}
}

func (r *chaosRun) redisEvent(what string) {
	r.mu.Lock()
	r.redisEvts = append(r.redisEvts, what)
	r.mu.Unlock()
}

// kosyncAccount creates the KOReader account (or finds it) and fetches a
// JWT for it.
func (r *chaosRun) kosyncAccount() error {
	key := ksMD5(chaosKsPassword)
	body := fmt.Sprintf(`{"username":%q,"password":%q}`, chaosKsUser, key)
	if status, _, err := r.do(http.MethodPost, "http://"+r.mainAddr+"/users/create", body, nil); err != nil {
		return err
	} else if status != http.StatusCreated && status != http.StatusPaymentRequired {
		return fmt.Errorf("POST /users/create: %d", status)
	}
	status, jwt, err := r.do(http.MethodGet, "http://"+r.mainAddr+"/api/auth.jwt", "",
		map[string]string{"x-auth-user": chaosKsUser, "x-auth-key": key})
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET /api/auth.jwt: %d %s", status, jwt)
	}
	r.keyMu.Lock()
	r.ksKey, r.ksJWT = key, jwt
	r.keyMu.Unlock()
	return nil
}

// do makes an HTTP request with the run's client (no redirects) and returns
// status and body.
func (r *chaosRun) do(method, u, body string, header map[string]string) (int, string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/vnd.koreader.v1+json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// firehose publishes 32 KiB payloads on the native and the wsify fire
// channels through the admin API, 20 times a second each: what the
// never-readers fall behind on and what resets cut.
func (r *chaosRun) firehose() {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 2048)
	wsifyPayload := []byte(`"` + strings.Repeat("x", 32<<10) + `"`)
	for r.pause(50 * time.Millisecond) {
		_, _, _ = r.do(http.MethodPost, r.proc.admin+"/api/publish?channel="+chaosFireChannel, string(payload), nil)
		_, _, _ = r.do(http.MethodPost, r.proc.admin+"/api/publish?channel="+url.QueryEscape("#wsify:"+chaosFireChannel),
			string(wsifyPayload), nil)
	}
}

// listenWsify keeps a wsify member of the news channel (where bad UTF-8 is
// published) reading; each ending is counted and it reconnects.
func (r *chaosRun) listenWsify(i int) {
	r.listen("wsify", "ws://"+r.wsifyAddr+"/ws", []string{
		`{"command":"join","args":{"channel":"` + chaosNewsChannel + `"}}`,
		`{"command":"join","args":{"channel":"chaos-` + strconv.Itoa(i) + `"}}`,
	})
}

// listenHypothesis keeps a Hypothesis socket with a filter reading.
func (r *chaosRun) listenHypothesis() {
	r.listen("hypothesis", "ws://"+r.mainAddr+"/ws", []string{
		`{"messageType":"client_id","value":"0123456789abcdef0123456789abcdef"}`,
		`{"filter":{"match_policy":"include_any","clauses":[{"field":"/uri","operator":"one_of","value":["` + chaosHypURI + `"],"case_sensitive":false}],"actions":{}}}`,
		`{"type":"whoami","id":1}`,
	})
}

// listenKosync keeps a KOsync socket subscribed to its user's documents.
func (r *chaosRun) listenKosync() {
	for r.ctx.Err() == nil {
		r.keyMu.Lock()
		jwt := r.ksJWT
		r.keyMu.Unlock()
		r.listenOnce("kosync", "ws://"+r.mainAddr+"/api/ws/"+jwt, []string{`{"type":"pubsub","payload":{"topic":"user.documents"}}`})
	}
}

func (r *chaosRun) listen(what, u string, hello []string) {
	for r.ctx.Err() == nil {
		r.listenOnce(what, u, hello)
	}
}

// listenOnce connects, sends hello and reads until the connection ends or
// the run does; the ending is counted per protocol.
func (r *chaosRun) listenOnce(what, u string, hello []string) {
	ctx, cancel := context.WithTimeout(r.ctx, waitFor)
	c, _, err := websocket.Dial(ctx, u, nil)
	cancel()
	if err != nil {
		r.noteListener(what, "dial failed")
		r.pause(500 * time.Millisecond)
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 22)
	for _, m := range hello {
		if err := c.Write(r.ctx, websocket.MessageText, []byte(m)); err != nil {
			r.noteListener(what, chaosWSEnding(err))
			return
		}
	}
	for {
		if _, _, err := c.Read(r.ctx); err != nil {
			if r.ctx.Err() == nil {
				r.noteListener(what, chaosWSEnding(err))
				r.pause(200 * time.Millisecond)
			}
			return
		}
	}
}

func (r *chaosRun) noteListener(what, how string) {
	r.mu.Lock()
	r.listeners[what+" "+how]++
	r.mu.Unlock()
}

// chaosWSEnding names how a coder/websocket connection ended.
func chaosWSEnding(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return strconv.Itoa(int(ce.Code))
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return "reset"
	}
	return "no close frame"
}

// ---- raw connections ----

// chaosConn is a raw TCP connection of an attacker; every operation is
// bounded by chaosIOTimeout.
type chaosConn struct {
	nc  net.Conn
	br  *bufio.Reader
	rng *rand.Rand
}

func (r *chaosRun) dial(addr string, rng *rand.Rand) (*chaosConn, error) {
	return r.dialBuffer(addr, rng, 0)
}

// dialBuffer dials with SO_RCVBUF set before the connection exists (so the
// window it announces is small), when rcvbuf > 0.
func (r *chaosRun) dialBuffer(addr string, rng *rand.Rand, rcvbuf int) (*chaosConn, error) {
	d := net.Dialer{Timeout: chaosIOTimeout}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		r.sawClose("dial refused")
		return nil, err
	}
	return &chaosConn{nc: nc, br: bufio.NewReader(nc), rng: rng}, nil
}

func (c *chaosConn) write(b []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(chaosIOTimeout))
	_, err := c.nc.Write(b)
	return err
}

// reset closes with SO_LINGER 0: the peer gets an RST, whatever it was
// writing.
func (c *chaosConn) reset() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.nc.Close()
}

// end closes the connection one of three ways: FIN, RST, or a close frame
// then FIN (after an upgrade).
func (c *chaosConn) end(upgraded bool) {
	switch c.rng.IntN(3) {
	case 0:
		c.reset()
		return
	case 1:
		if upgraded {
			_ = c.write(chaosFrame(c.rng, true, 0, ws.OpClose, []byte{0x03, 0xe8}))
		}
	}
	_ = c.nc.Close()
}

// chaosAddr picks one of the three listeners.
func (r *chaosRun) chaosAddr(rng *rand.Rand) string {
	return []string{r.mainAddr, r.mainAddr, r.wsifyAddr, r.adminAddr}[rng.IntN(4)]
}

// httpAnswer reads what a listener answers a head: "http NNN", or how the
// connection ended.
func (c *chaosConn) httpAnswer(d time.Duration) string {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	line, err := c.br.ReadString('\n')
	if err != nil {
		return chaosEnding(err)
	}
	if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[0], "HTTP/") {
		return "http " + f[1]
	}
	return "not http"
}

// chaosEnding names a read error.
func chaosEnding(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "eof mid-frame"
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer"
	}
	msg := err.Error()
	return "error: " + msg[strings.LastIndex(msg, ": ")+1:] // without addresses
}

// upgradeHead is an upgrade request for path with extra header lines.
func (c *chaosConn) upgradeHead(host, path string, extra ...string) []byte {
	var k [16]byte
	for i := range k {
		k[i] = byte(c.rng.Uint32())
	}
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	b.WriteString("Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(k[:]) + "\r\nSec-WebSocket-Version: 13\r\n")
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// chaosUpgradeHeaders are headers an upgrade may carry, one in four
// upgrades one of them: browsers' and proxies' headers, subprotocols,
// extensions the gateway does not do.
var chaosUpgradeHeaders = []string{
	"Origin: https://evil.example", "Origin: null", "Sec-WebSocket-Protocol: kosync.rpc, kosync.pubsub",
	"Sec-WebSocket-Protocol: x, , y", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
	"X-Forwarded-For: 10.0.0.1, ::1", "Forwarded: for=unknown;proto=https", "Authorization: Bearer x.y.z",
	"Cookie: a=b", "Connection: keep-alive",
}

// upgrade sends an upgrade head for path (plus first, bytes sent in the
// same write) and reads the answer's status line and head; true on 101.
func (c *chaosConn) upgrade(r *chaosRun, host, path string, first []byte) bool {
	var extra []string
	if c.rng.IntN(4) == 0 {
		extra = append(extra, chaosPick(c.rng, chaosUpgradeHeaders...))
	}
	if c.write(append(c.upgradeHead(host, path, extra...), first...)) != nil {
		return false
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(chaosIOTimeout))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		r.sawClose("upgrade: " + chaosEnding(err))
		return false
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		r.sawStatus(resp.StatusCode)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		return false
	}
	return true
}

// readFrame reads one server frame (payloads over 4 MiB are an error).
func (c *chaosConn) readFrame() (ws.OpCode, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 4<<20 {
		return 0, nil, fmt.Errorf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(c.br, p)
	return ws.OpCode(h[0] & 0x0f), p, err
}

// outcome reads frames for up to d and names how the server ended the
// connection: "close NNNN", "eof" (no close frame), "reset", "open" (still
// open at the deadline).
func (c *chaosConn) outcome(d time.Duration) string {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	for {
		op, p, err := c.readFrame()
		if err != nil {
			if e := chaosEnding(err); e != "no answer" {
				return e
			}
			return "open"
		}
		if op == ws.OpClose {
			if len(p) < 2 {
				return "close (no code)"
			}
			return "close " + strconv.Itoa(int(binary.BigEndian.Uint16(p)))
		}
	}
}

// chaosFrame builds a client frame, masked with a key from rng.
func chaosFrame(rng *rand.Rand, fin bool, rsv byte, op ws.OpCode, payload []byte) []byte {
	return chaosFrameMask(rng, fin, rsv, op, payload, true)
}

func chaosFrameMask(rng *rand.Rand, fin bool, rsv byte, op ws.OpCode, payload []byte, masked bool) []byte {
	b0 := byte(op)&0x0f | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	var mask [4]byte
	binary.BigEndian.PutUint32(mask[:], rng.Uint32())
	out = append(out, mask[:]...)
	start := len(out)
	out = append(out, payload...)
	ws.Cipher(out[start:], mask, 0)
	return out
}

// ---- random input ----

func chaosPick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

func chaosRandomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// chaosBadUTF8 is a byte sequence that is not valid UTF-8.
func chaosBadUTF8(rng *rand.Rand) []byte {
	return []byte(chaosPick(rng,
		"\xff\xfe", "\xc3\x28", "\xa0\xa1", "\xe2\x28\xa1", "\xe2\x82", "\xf0\x28\x8c\xbc",
		"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xf8\x88\x80\x80\x80", "\x80"))
}

// chaosString is a random string: plain, unicode, control characters,
// invalid UTF-8, empty or long.
func chaosString(rng *rand.Rand) string {
	switch rng.IntN(9) {
	case 0:
		return ""
	case 1:
		return string(chaosBadUTF8(rng))
	case 2:
		return strings.Repeat("a", rng.IntN(70000))
	case 3:
		return "\x00\x01\x1f\x7f"
	case 4:
		return "日本語🙂\u202e\ufeff"
	case 5:
		return chaosPick(rng, "chaos-deny", "chaos-fail", "chaos-slow", "user:chaos-other", "server:x", "#kosync:chaos", "#hypothesis",
			"../../etc/passwd", "%s%n%x", "{{7*7}}", "<script>", chaosNewsChannel, chaosFireChannel)
	case 6:
		return string(chaosRandomBytes(rng, rng.IntN(40)))
	}
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789-_:./#"
	b := make([]byte, 1+rng.IntN(20))
	for i := range b {
		b[i] = letters[rng.IntN(len(letters))]
	}
	return string(b)
}

// chaosJSONValue is a random JSON value (as decoded by encoding/json).
func chaosJSONValue(rng *rand.Rand, depth int) any {
	switch rng.IntN(10) {
	case 0:
		return nil
	case 1:
		return rng.IntN(2) == 0
	case 2:
		return chaosPick(rng, 0.0, -1.0, 1e308, -1e-308, 4.5e15, 9007199254740993.0, 3.14)
	case 3, 4:
		return chaosString(rng)
	case 5, 6:
		if depth > 3 {
			return "deep"
		}
		a := make([]any, rng.IntN(5))
		for i := range a {
			a[i] = chaosJSONValue(rng, depth+1)
		}
		return a
	}
	if depth > 3 {
		return map[string]any{}
	}
	m := map[string]any{}
	for range rng.IntN(5) {
		m[chaosPick(rng, "channel", "content", "command", "args", "type", "id", "payload", "method", "arguments",
			"document", "topic", "filter", "value", chaosString(rng))] = chaosJSONValue(rng, depth+1)
	}
	return m
}

// chaosMutate turns a valid JSON message into a nearby invalid or unusual
// one: values replaced by random ones, keys dropped or added, and, at the
// byte level, truncation, bad UTF-8, lone surrogate escapes, duplicate
// keys, deep nesting, random bytes, huge numbers.
func chaosMutate(rng *rand.Rand, template string) []byte {
	var v any
	if err := json.Unmarshal([]byte(template), &v); err != nil {
		panic(fmt.Sprintf("chaos template %s: %v", template, err))
	}
	for range 1 + rng.IntN(3) {
		v = chaosMutateValue(rng, v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(template)
	}
	if rng.IntN(3) > 0 {
		return b
	}
	switch rng.IntN(10) {
	case 0:
		return b[:rng.IntN(len(b)+1)]
	case 1: // bad UTF-8 inside the first string
		if i := bytes.IndexByte(b, '"'); i >= 0 {
			return slices.Concat(b[:i+1], chaosBadUTF8(rng), b[i+1:])
		}
	case 2:
		return bytes.Replace(b, []byte(`"`), []byte(`"\ud800`), 2)
	case 3: // a key given twice
		if len(b) > 2 && b[0] == '{' {
			return slices.Concat([]byte(`{"type":"rpc","command":"join",`), b[1:])
		}
	case 4:
		n := rng.IntN(chaosMaxMessage / 2)
		return []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
	case 5:
		n := rng.IntN(chaosMaxMessage / 8)
		return []byte(strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n))
	case 6:
		return chaosRandomBytes(rng, rng.IntN(256))
	case 7:
		return []byte(`{"id":1` + strings.Repeat("0", 5000) + `,"value":-1e999999,"type":"ping"}`)
	case 8:
		return append(b, chaosPick(rng, " garbage", "}", "\x00", ",{}")...)
	}
	return bytes.ToUpper(b)
}

func chaosMutateValue(rng *rand.Rand, v any) any {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 || rng.IntN(4) == 0 {
			x[chaosString(rng)] = chaosJSONValue(rng, 1)
			return x
		}
		keys := slices.Sorted(maps.Keys(x))
		k := keys[rng.IntN(len(keys))]
		switch rng.IntN(4) {
		case 0:
			delete(x, k)
		case 1:
			x[k] = chaosJSONValue(rng, 1)
		default:
			x[k] = chaosMutateValue(rng, x[k])
		}
		return x
	case []any:
		if len(x) > 0 && rng.IntN(2) == 0 {
			i := rng.IntN(len(x))
			x[i] = chaosMutateValue(rng, x[i])
			return x
		}
		return append(x, chaosJSONValue(rng, 1))
	}
	if rng.IntN(2) == 0 {
		return chaosJSONValue(rng, 1)
	}
	return v
}

// ---- the attacks ----

// attackRawBytes: random bytes at a listener, sometimes after a valid
// request line or a valid upgrade head.
func (r *chaosRun) attackRawBytes(rng *rand.Rand) {
	r.count("raw-bytes", 1)
	c, err := r.dial(r.chaosAddr(rng), rng)
	if err != nil {
		return
	}
	defer c.end(false)
	var b []byte
	switch rng.IntN(3) {
	case 1:
		b = []byte("GET / HTTP/1.1\r\n")
	case 2:
		b = c.upgradeHead(r.mainAddr, chaosPick(rng, "/api/ws", "/ws", "/api/ws/x"))
	}
	b = append(b, chaosRandomBytes(rng, 1+rng.IntN(16<<10))...)
	if c.write(b) == nil {
		r.sawClose("raw: " + c.httpAnswer(time.Second))
	}
}

// chaosBadHeads are request heads no server should accept quietly.
var chaosBadHeads = []struct{ name, head string }{
	{"lf-only", "GET /api/ws HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n"},
	{"tls-hello", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + strings.Repeat("\x00", 32) + "\x00\x00\x20\xc0\x2b\xc0\x2f"},
	{"100-headers", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Chaos: "+strings.Repeat("a", 100)+"\r\n", 100) + "\r\n"},
	{"long-uri", "GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"no-key", "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"bad-key-v8", "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 8\r\n\r\n"},
	{"negative-length", "POST /api/ws HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"},
	{"huge-length", "POST /users/create HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}"},
	{"bad-chunk", "PUT /syncs/progress HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
	{"smuggle-cl-te", "POST /broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"},
	{"http-0.9", "GET /\r\n\r\n"},
	{"h2-preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	{"dot-segments", "GET /api/ws/../ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"double-slash", "GET //api//ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"bad-bytes-path", "GET /ws?\xff\xfe HTTP/1.1\r\nHost: \x00\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"connect", "CONNECT 127.0.0.1:6379 HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"binary-method", "\x00\x01\x02 / HTTP/1.1\r\n\r\n"},
	{"keepalive-then-upgrade", "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"duplicate-headers", "GET /api/ws HTTP/1.1\r\nHost: x\r\nHost: y\r\nUpgrade: websocket, h2c\r\nConnection: keep-alive, Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=0\r\nSec-WebSocket-Protocol: kosync.rpc, , \xff\r\nOrigin: null\r\n\r\n"},
	{"long-bearer", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + strings.Repeat("A", 6000) + "\r\n\r\n"},
	{"bad-forwarded", "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: \xff\r\nForwarded: for=\"[::1\r\n\r\n"},
	{"options-star", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"http-1.0-upgrade", "GET /api/ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"folded-header", "GET /api/ws HTTP/1.1\r\nHost: x\r\n folded: header\r\nUpgrade: websocket\r\n\r\n"},
}

// attackBadHead: a malformed or hostile request head at a listener.
func (r *chaosRun) attackBadHead(rng *rand.Rand) {
	r.count("bad-head", 1)
	c, err := r.dial(r.chaosAddr(rng), rng)
	if err != nil {
		return
	}
	defer c.end(false)
	bad := chaosPick(rng, chaosBadHeads...)
	head := []byte(bad.head)
	if rng.IntN(4) == 0 { // dribbled in pieces
		for len(head) > 0 && r.ctx.Err() == nil {
			n := min(len(head), 1+rng.IntN(64))
			if c.write(head[:n]) != nil {
				return
			}
			head = head[n:]
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		}
	} else if c.write(head) != nil {
		return
	}
	r.sawClose("head " + bad.name + ": " + c.httpAnswer(2*time.Second))
}

// wsTarget is a WebSocket endpoint an attacker upgrades to.
type chaosTarget struct {
	addr, path string
	protocol   string // native, kosync, hypothesis, wsify
}

// target picks an endpoint; jsonOnly leaves out native and the KOsync
// paths with a bad token (closed at once).
func (r *chaosRun) target(rng *rand.Rand, jsonOnly bool) chaosTarget {
	r.keyMu.Lock()
	jwt := r.ksJWT
	key := r.keyText[rng.IntN(len(r.keyText))]
	r.keyMu.Unlock()
	targets := []chaosTarget{
		{r.mainAddr, "/api/ws/" + jwt, "kosync"},
		{r.mainAddr, "/ws", "hypothesis"},
		{r.mainAddr, "/ws?access_token=" + key, "hypothesis"},
		{r.wsifyAddr, "/ws", "wsify"},
		{r.wsifyAddr, "/ws?chaos=1&x=%ff", "wsify"},
		{r.wsifyAddr, "/ws?x=" + chaosPick(rng, "chaos-deny", "chaos-fail", "chaos-slow"), "wsify"},
	}
	if !jsonOnly {
		targets = append(targets, chaosTarget{r.mainAddr, "/api/ws", "native"}, chaosTarget{r.mainAddr, "/api/ws", "native"},
			chaosTarget{r.mainAddr, "/api/ws/" + chaosPick(rng, "x", "e30.e30.e30", jwt[:len(jwt)/2], "%ff"), "kosync"})
	}
	return chaosPick(rng, targets...)
}

// attackBadFrames: after an upgrade to any endpoint (authenticated on
// native half the time), a burst of frames most of which break RFC 6455:
// reserved bits, unknown opcodes, unmasked, control frames too long or
// fragmented, orphan continuations, lengths that lie, bad close codes,
// text that is not UTF-8.
func (r *chaosRun) attackBadFrames(rng *rand.Rand) {
	r.count("ws-bad-frames", 1)
	tg := r.target(rng, false)
	c, err := r.dial(tg.addr, rng)
	if err != nil {
		return
	}
	defer c.end(true)
	var first []byte
	if tg.protocol == "native" && rng.IntN(2) == 0 {
		first = chaosFrame(rng, true, 0, ws.OpBinary, r.nativeAuth(rng))
	}
	if !c.upgrade(r, tg.addr, tg.path, first) {
		return
	}
	var burst []byte
	for range 1 + rng.IntN(6) {
		burst = append(burst, chaosBadFrame(rng)...)
	}
	if c.write(burst) == nil {
		r.sawClose(tg.protocol + " frames: " + c.outcome(time.Second))
	}
}

// chaosBadFrame is one frame, usually broken.
func chaosBadFrame(rng *rand.Rand) []byte {
	small := chaosRandomBytes(rng, rng.IntN(64))
	switch rng.IntN(16) {
	case 0:
		return chaosFrame(rng, true, byte(1+rng.IntN(7)), ws.OpBinary, small)
	case 1:
		return chaosFrame(rng, true, 0, ws.OpCode(chaosPick(rng, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15)), small)
	case 2:
		return chaosFrameMask(rng, true, 0, ws.OpText, []byte("{}"), false)
	case 3:
		return chaosFrame(rng, true, 0, ws.OpPing, chaosRandomBytes(rng, 126+rng.IntN(200)))
	case 4:
		return chaosFrame(rng, false, 0, ws.OpPing, small)
	case 5:
		return chaosFrame(rng, true, 0, ws.OpContinuation, small)
	case 6: // fragmented text, then a new data frame before the end
		return slices.Concat(chaosFrame(rng, false, 0, ws.OpText, []byte("{\"a\"")), chaosFrame(rng, true, 0, ws.OpBinary, small))
	case 7: // a length that lies: 2^63-ish
		return []byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}
	case 8:
		return []byte{0x82, 0xfe, 0x00, 0x05, 1, 2, 3, 4} // 126 form for 5 bytes, then too few
	case 9:
		return chaosFrame(rng, true, 0, ws.OpClose, binary.BigEndian.AppendUint16(nil, chaosPick[uint16](rng, 0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535)))
	case 10:
		return chaosFrame(rng, true, 0, ws.OpClose, append([]byte{0x03, 0xe8}, chaosBadUTF8(rng)...))
	case 11:
		return chaosFrame(rng, true, 0, ws.OpClose, []byte{0x03})
	case 12:
		return chaosFrame(rng, true, 0, ws.OpText, chaosBadUTF8(rng))
	case 13: // UTF-8 split over fragments, with a ping in between
		return slices.Concat(chaosFrame(rng, false, 0, ws.OpText, []byte("\xe2\x82")), chaosFrame(rng, true, 0, ws.OpPing, nil),
			chaosFrame(rng, true, 0, ws.OpContinuation, []byte(chaosPick(rng, "\xac", "\x28"))))
	case 14: // over the message size limit, fragmented
		return slices.Concat(chaosFrame(rng, false, 0, ws.OpBinary, make([]byte, chaosMaxMessage/2+1)),
			chaosFrame(rng, true, 0, ws.OpContinuation, make([]byte, chaosMaxMessage/2+1)))
	}
	return chaosRandomBytes(rng, 2+rng.IntN(32))
}

// nativeAuth is a native auth message: valid, or broken in one way.
func (r *chaosRun) nativeAuth(rng *rand.Rand) []byte {
	r.keyMu.Lock()
	text := r.keyText[rng.IntN(len(r.keyText))]
	r.keyMu.Unlock()
	key, _ := token.DecodeText(text)
	switch rng.IntN(8) {
	case 0:
		return packet.AppendAuth(nil, byte(1+rng.IntN(255)), key)
	case 1:
		return packet.AppendAuth(nil, packet.Version, chaosRandomBytes(rng, rng.IntN(300)))
	case 2:
		a := packet.AppendAuth(nil, packet.Version, key)
		return a[:rng.IntN(len(a))]
	case 3:
		a := packet.AppendAuth(nil, packet.Version, key)
		a[4+rng.IntN(len(key))] ^= 1
		return a
	}
	return packet.AppendAuth(nil, packet.Version, key)
}

// attackNativePackets: an authenticated native session (or one whose auth
// is broken) sends messages of random, truncated or hostile packets: bad
// settings, channels that are not UTF-8 or too long, forbidden channels,
// the subscription limit, a message full of Pings.
func (r *chaosRun) attackNativePackets(rng *rand.Rand) {
	r.count("native-packets", 1)
	c, err := r.dial(r.mainAddr, rng)
	if err != nil {
		return
	}
	defer c.end(true)
	if !c.upgrade(r, r.mainAddr, "/api/ws", chaosFrame(rng, true, 0, ws.OpBinary, r.nativeAuth(rng))) {
		return
	}
	var out []byte
	for range 1 + rng.IntN(8) {
		out = append(out, chaosFrame(rng, true, 0, chaosPick(rng, ws.OpBinary, ws.OpBinary, ws.OpBinary, ws.OpText),
			chaosNativeMessage(rng))...)
	}
	if c.write(out) == nil {
		r.sawClose("native packets: " + c.outcome(time.Second))
	}
}

func chaosNativeMessage(rng *rand.Rand) []byte {
	var m []byte
	for range 1 + rng.IntN(4) {
		switch rng.IntN(13) {
		case 0:
			m = packet.AppendPing(m)
		case 1:
			m = packet.AppendSettings(m, packet.Setting{ID: byte(rng.IntN(5)), Byte: int8(rng.IntN(256) - 128),
				Short: int16(rng.Uint32()), String: []byte(chaosNativeString(rng))})
		case 2:
			m = packet.AppendSubscribe(m, chaosNativeString(rng))
		case 3:
			m = packet.AppendUnsubscribe(m, chaosNativeString(rng))
		case 4:
			m = packet.AppendPublish(m, chaosNativeString(rng), chaosRandomBytes(rng, rng.IntN(1024)))
		case 5:
			m = packet.AppendPublish(m, chaosFireChannel, chaosRandomBytes(rng, rng.IntN(1024)))
		case 6:
			for i := range 130 {
				m = packet.AppendSubscribe(m, "chaos-many-"+strconv.Itoa(i))
			}
		case 7:
			m = append(m, bytes.Repeat([]byte{packet.PacketPing}, rng.IntN(max(1, chaosMaxMessage-len(m))))...)
		case 8: // a string length that lies
			m = append(m, packet.PacketSubscribe, 0x7f, 0xff, 'a')
		case 9:
			m = append(m, packet.PacketPublish, 0x00, 0x01, 'c', 0x80, 0x00, 0x00, 0x00)
		case 10:
			m = append(m, byte(5+rng.IntN(250)))
		case 11: // the longest string there is, of a character an error message must quote
			long := strings.Repeat(chaosPick(rng, "a", `"`, "\\", "\x01"), packet.MaxStringLen)
			m = chaosPick(rng, packet.AppendSubscribe, packet.AppendUnsubscribe)(m, long)
		default:
			m = append(m, chaosRandomBytes(rng, rng.IntN(64))...)
		}
	}
	if len(m) > chaosMaxMessage {
		m = m[:chaosMaxMessage]
	}
	return m
}

// chaosNativeString is a chaosString the native encoder can write (strings
// longer than packet.MaxStringLen are sent raw, as a lying length, elsewhere).
func chaosNativeString(rng *rand.Rand) string {
	s := chaosString(rng)
	return s[:min(len(s), packet.MaxStringLen)]
}

// chaosJSONTemplates are valid messages of each JSON protocol, the seeds
// of chaosMutate.
var chaosJSONTemplates = map[string][]string{
	"kosync": {
		`{"type":"rpc","payload":{"method":"documents.all"}}`,
		`{"type":"rpc","payload":{"method":"documents.update","arguments":{"document":{"id":"doc1","document":"doc1","progress":"/body/p[1]","percentage":0.5,"device":"chaos","device_id":"C","timestamp":1,"pretty_name":"Doc"}}}}`,
		`{"type":"pubsub","payload":{"topic":"user.documents"}}`,
		`{"type":"rpc","payload":{"method":"nope","arguments":{}}}`,
	},
	"hypothesis": {
		`{"messageType":"client_id","value":"0123456789abcdef0123456789abcdef"}`,
		`{"type":"whoami","id":1}`,
		`{"type":"ping","id":2}`,
		`{"filter":{"match_policy":"include_any","clauses":[{"field":"/uri","operator":"one_of","value":["https://example.com/a","urn:x-pdf:1"],"case_sensitive":false},{"field":"/group","value":"__world__"}],"actions":{}}}`,
		`{"type":"filter","id":7,"filter":{"match_policy":"include_any","clauses":[],"actions":{}}}`,
	},
	"wsify": {
		`{"command":"join","args":{"channel":"chaos-news"}}`,
		`{"command":"leave","args":{"channel":"chaos-news"}}`,
		`{"command":"broadcast","args":{"channel":"chaos-news","content":{"hello":"world","n":1}}}`,
		`{"command":"join","args":{"channel":"chaos-fire"}}`,
	},
}

// attackJSONMessages: a KOsync (valid token), Hypothesis or wsify socket
// gets a burst of mutated messages, as text (sometimes binary) frames,
// then either closes or goes away.
func (r *chaosRun) attackJSONMessages(rng *rand.Rand) {
	r.count("json-messages", 1)
	tg := r.target(rng, true)
	c, err := r.dial(tg.addr, rng)
	if err != nil {
		return
	}
	defer c.end(true)
	if !c.upgrade(r, tg.addr, tg.path, nil) {
		return
	}
	templates := chaosJSONTemplates[tg.protocol]
	var out []byte
	for range 1 + rng.IntN(10) {
		msg := chaosMutate(rng, chaosPick(rng, templates...))
		if len(msg) > chaosMaxMessage {
			msg = msg[:chaosMaxMessage]
		}
		out = append(out, chaosFrame(rng, true, 0, chaosPick(rng, ws.OpText, ws.OpText, ws.OpText, ws.OpBinary), msg)...)
	}
	// Large bursts are written while the server may answer: a reader keeps
	// the socket from filling up.
	go func() { _ = c.write(out) }()
	r.sawClose(tg.protocol + " json: " + c.outcome(time.Second))
}

// chaosHTTPRequest is one random HTTP request.
type chaosHTTPRequest struct {
	method, path, body string
	header             map[string]string
}

// attackKOReader: random requests at the KOReader sync API and the KOsync
// HTTP endpoints: every method on every path, good, bad and missing
// credentials, mutated and hostile bodies. The account itself is never
// deleted or given a new password.
func (r *chaosRun) attackKOReader(rng *rand.Rand) {
	r.count("koreader-http", 1)
	r.keyMu.Lock()
	key, jwt := r.ksKey, r.ksJWT
	r.keyMu.Unlock()
	path := chaosPick(rng, "/users/create", "/users/auth", "/syncs/progress", "/syncs/progress/doc1",
		"/syncs/progress/"+url.PathEscape(chaosString(rng)), "/users/me", "/users/password", "/api/documents.all",
		"/api/documents.update", "/api/auth.jwt", "/api/ws", "/healthcheck", "/syncs/progress/../../users/me", "/users//auth")
	method := chaosPick(rng, http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodOptions, "PATCH", "HEAD")
	header := map[string]string{}
	valid := false
	switch rng.IntN(5) {
	case 0:
		header["x-auth-user"], header["x-auth-key"] = chaosKsUser, key
		valid = true
	case 1:
		header["Authorization"] = "Bearer " + chaosPick(rng, jwt, jwt+"x", "e30.e30.", "")
		valid = true
	case 2:
		header["x-auth-user"], header["x-auth-key"] = chaosPick(rng, chaosKsUser, "nobody", ""), ksMD5(chaosString(rng))
	case 3:
		header["x-auth-user"], header["x-auth-key"] = chaosString(rng), chaosString(rng)
	}
	if valid && (strings.Contains(path, "/users/me") || strings.Contains(path, "password")) {
		delete(header, "x-auth-user")
		delete(header, "Authorization")
	}
	if rng.IntN(3) == 0 {
		header["Accept"] = chaosPick(rng, "*/*", "text/html", "application/vnd.koreader.v9+json", "", chaosString(rng))
	}
	body := ""
	switch rng.IntN(5) {
	case 0:
		body = string(chaosMutate(rng, `{"document":"doc1","progress":"/body/p[2]","percentage":0.25,"device":"chaos","device_id":"C"}`))
	case 1:
		body = string(chaosMutate(rng, `{"username":"chaos-u","password":"5f4dcc3b5aa765d61d8327deb882cf99"}`))
	case 2:
		body = string(chaosMutate(rng, `{"id":"doc2","document":"doc2","progress":"x","percentage":1,"timestamp":5,"pretty_name":"n"}`))
	case 3:
		body = string(chaosRandomBytes(rng, rng.IntN(4096)))
	}
	r.httpAttack("http://"+r.mainAddr, chaosHTTPRequest{method, path, body, header}, rng)
}

// httpAttack sends req to base, with a random Content-Type, over a raw
// connection when its bytes would not pass net/http's client checks (bad
// UTF-8 or control characters in the path or headers).
func (r *chaosRun) httpAttack(base string, req chaosHTTPRequest, rng *rand.Rand) {
	if req.header == nil {
		req.header = map[string]string{}
	}
	if _, ok := req.header["Content-Type"]; !ok && rng.IntN(2) == 0 {
		req.header["Content-Type"] = chaosPick(rng, "application/json", "text/plain", "application/json; charset=utf-8",
			"APPLICATION/JSON", "multipart/form-data; boundary=x")
	}
	hreq, err := http.NewRequestWithContext(r.ctx, req.method, base+req.path, strings.NewReader(req.body))
	if err == nil {
		for k, v := range req.header {
			hreq.Header.Set(k, v)
		}
		if rng.IntN(4) == 0 {
			hreq.Close = true
		}
		resp, err := r.http.Do(hreq)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<20))
			resp.Body.Close()
			r.sawStatus(resp.StatusCode)
			return
		}
		if r.ctx.Err() != nil || !strings.Contains(err.Error(), "invalid") {
			r.sawClose("http: " + chaosEnding(err))
			return
		}
	}
	// net/http refused to send it: send the bytes ourselves.
	c, err := r.dial(strings.TrimPrefix(base, "http://"), rng)
	if err != nil {
		return
	}
	defer c.end(false)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", req.method, req.path, len(req.body))
	for k, v := range req.header {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n" + req.body)
	if c.write([]byte(b.String())) == nil {
		r.sawClose("raw http: " + c.httpAnswer(2*time.Second))
	}
}

// attackWsifyBroadcast: POST /broadcast (and other methods and paths of
// the wsify listener) with random content types, keys and bodies,
// including content that is not UTF-8 and bodies over 1 MiB.
func (r *chaosRun) attackWsifyBroadcast(rng *rand.Rand) {
	r.count("wsify-broadcast", 1)
	path := chaosPick(rng, "/broadcast", "/broadcast?key="+url.QueryEscape(chaosString(rng)), "/broadcast?key=", "/", "/ws", "/nope")
	body := ""
	switch rng.IntN(5) {
	case 0, 1:
		body = string(chaosMutate(rng, `{"channel":"chaos-news","content":{"a":[1,2,{"b":null}]}}`))
	case 2:
		body = `{"channel":"chaos-news","content":"` + string(chaosBadUTF8(rng)) + `"}`
	case 3:
		body = `{"channel":"chaos-news","args":{"content":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}}`
	case 4:
		body = `{"channel":"chaos-news","content":"` + strings.Repeat("z", 1<<20+rng.IntN(100)) + `"}`
	}
	method := chaosPick(rng, http.MethodPost, http.MethodPost, http.MethodPost, http.MethodGet, http.MethodPut)
	r.httpAttack("http://"+r.wsifyAddr, chaosHTTPRequest{method, path, body, nil}, rng)
}

// attackAdmin: the admin API with hostile input: publishes on odd channels
// (reserved, personal, too long, empty, not UTF-8; wsify channels are
// bad-utf8-admin's) with odd bodies, revocations of garbage (never of a key
// in use: random subjects and ids), mutated Hypothesis events, unknown
// paths and methods.
func (r *chaosRun) attackAdmin(rng *rand.Rand) {
	r.count("admin-api", 1)
	var req chaosHTTPRequest
	switch rng.IntN(6) {
	case 0, 1:
		ch := chaosPick(rng, url.QueryEscape(chaosString(rng)), "%ff%fe", "", "%23kosync%3Achaos", "%23hypothesis",
			"user%3Achaos", "server%3Aall", chaosNewsChannel)
		body := chaosPick(rng, "", "x", string(chaosRandomBytes(rng, rng.IntN(2048))), strings.Repeat("y", chaosMaxMessage+1))
		req = chaosHTTPRequest{http.MethodPost, "/api/publish?channel=" + ch, body, nil}
	case 2:
		req = chaosHTTPRequest{http.MethodPost, "/api/revoke", string(chaosMutate(rng,
			`{"key":"`+base64.StdEncoding.EncodeToString(chaosRandomBytes(rng, 40))+`","id":"`+hex.EncodeToString(chaosRandomBytes(rng, 8))+`"}`)), nil}
	case 3:
		req = chaosHTTPRequest{http.MethodPost, "/api/revoke/subject", string(chaosMutate(rng, `{"subject":"zz-chaos-nobody"}`)), nil}
	case 4:
		req = chaosHTTPRequest{http.MethodPost, "/api/hypothesis/events", string(chaosMutate(rng,
			`{"action":"create","annotation":{"id":"Zx3k9aQqEe-3sR8y9mAb1g","uri":"`+chaosHypURI+`","user":"acct:alice@localhost","group":"__world__","permissions":{"read":["group:__world__"]},"text":"chaos","target":[{"source":"`+chaosHypURI+`"}]},"src_client_id":null,"equivalent_uris":[],"group_members":[],"moderators":[],"nipsa":false}`)), nil}
	default:
		req = chaosHTTPRequest{chaosPick(rng, http.MethodGet, http.MethodPost, http.MethodDelete, "TRACE"),
			chaosPick(rng, "/healthz", "/readyz", "/metrics", "/api/publish", "/api/revoke", "/nope", "/debug/pprof/goroutine?debug=2",
				"/debug/pprof/cmdline", "/api//publish?channel=x", "/api/publish/../revoke"), string(chaosRandomBytes(rng, rng.IntN(64))), nil}
	}
	r.httpAttack(r.proc.admin, req, rng)
}

// attackRedisPublish: what an outside Redis publisher may send on the
// gateway's own channels, in one transaction so the payloads land in the
// same batch of loop tasks: raw and broken envelopes on the native
// channels, mutated JSON on the KOsync and Hypothesis channels, garbage on
// the revocation feed.
func (r *chaosRun) attackRedisPublish(rng *rand.Rand) {
	r.count("redis-publish", 1)
	r.redisTx(func(ctx context.Context, p redis.Pipeliner) {
		for range 1 + rng.IntN(4) {
			switch rng.IntN(3) {
			case 0:
				p.Publish(ctx, "gateway:ch:"+chaosFireChannel, slices.Concat([]byte{0x00, 0x47, 0x01}, chaosRandomBytes(rng, rng.IntN(20))))
			case 1:
				p.Publish(ctx, "gateway:ch:"+chaosPick(rng, "#kosync:"+chaosKsUser, "#hypothesis"),
					chaosMutate(rng, `{"action":"create","annotation":{"id":"x"},"document":"doc1"}`))
			default:
				p.Publish(ctx, "gateway:revocations", chaosRandomBytes(rng, rng.IntN(64)))
			}
		}
	})
}

// attackRedisBadUTF8: an outside publisher on a wsify channel (its raw
// Redis name), as wsify users do: payloads that are not UTF-8 between
// valid ones in one transaction (issue 10, item 1), or random bytes.
func (r *chaosRun) attackRedisBadUTF8(rng *rand.Rand) {
	r.count("bad-utf8-redis", 1)
	r.redisTx(func(ctx context.Context, p redis.Pipeliner) {
		for range 1 + rng.IntN(4) {
			if rng.IntN(3) == 0 {
				p.Publish(ctx, chaosNewsChannel, chaosRandomBytes(rng, rng.IntN(512)))
				continue
			}
			p.Publish(ctx, chaosNewsChannel, `"ok"`)
			p.Publish(ctx, chaosNewsChannel, chaosBadUTF8(rng))
			p.Publish(ctx, chaosNewsChannel, `"after"`)
		}
	})
}

// redisTx runs fill in a MULTI/EXEC on the run's Redis.
func (r *chaosRun) redisTx(fill func(context.Context, redis.Pipeliner)) {
	ctx, cancel := context.WithTimeout(r.ctx, chaosIOTimeout)
	defer cancel()
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fill(ctx, p)
		return nil
	})
	if err != nil {
		r.sawClose("redis publish: failed (Redis down?)")
	}
}

// attackAdminBadUTF8: concurrent admin publishes on the wsify news channel,
// alternating valid bodies and bodies that are not UTF-8 (issue 10, item 1).
func (r *chaosRun) attackAdminBadUTF8(rng *rand.Rand) {
	n := 2 + rng.IntN(20)
	r.count("bad-utf8-admin", int64(n))
	var wg sync.WaitGroup
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = `"valid"`
		if i%2 == 1 {
			bodies[i] = string(chaosBadUTF8(rng))
		}
	}
	for _, body := range bodies {
		wg.Go(func() {
			status, _, err := r.do(http.MethodPost, r.proc.admin+"/api/publish?channel="+url.QueryEscape("#wsify:"+chaosNewsChannel), body, nil)
			if err == nil {
				r.sawStatus(status)
			}
		})
	}
	wg.Wait()
}

// attackHandshakeFlood: 50 to 150 upgrades at once at one endpoint, each
// then closed, reset or left half-open for a moment.
func (r *chaosRun) attackHandshakeFlood(rng *rand.Rand) {
	n := 50 + rng.IntN(100)
	r.count("handshake-flood", int64(n))
	tg := r.target(rng, false)
	var wg sync.WaitGroup
	for i := range n {
		sub := rand.New(rand.NewPCG(rng.Uint64(), uint64(i)))
		wg.Go(func() {
			c, err := r.dial(tg.addr, sub)
			if err != nil {
				return
			}
			switch sub.IntN(4) {
			case 0: // a connection that never says anything
				time.Sleep(time.Duration(sub.IntN(2000)) * time.Millisecond)
				c.reset()
				return
			case 1: // half a head
				_ = c.write(c.upgradeHead(tg.addr, tg.path)[:20])
				time.Sleep(time.Duration(sub.IntN(2000)) * time.Millisecond)
				c.end(false)
				return
			}
			var first []byte
			if tg.protocol == "native" {
				first = chaosFrame(sub, true, 0, ws.OpBinary, r.nativeAuth(sub))
			}
			if c.upgrade(r, tg.addr, tg.path, first) {
				r.sawClose("flood: upgraded")
			}
			c.end(true)
		})
	}
	wg.Wait()
}

// attackJoinFlood: one connection subscribes to as much as it can in one
// burst, then leaves: 1,000 to 5,000 wsify joins (paced), 200 native subscribes
// (the cap is 128), a Hypothesis filter of 1,500 rows (the cap is 1,000)
// and one of 1,000, or a KOsync subscribe sent 500 times.
func (r *chaosRun) attackJoinFlood(rng *rand.Rand) {
	r.count("join-flood", 1)
	var tg chaosTarget
	var out []byte
	switch rng.IntN(4) {
	case 0:
		r.wsifyJoinFlood(rng)
		return
	case 1:
		tg = chaosTarget{r.mainAddr, "/api/ws", "native"}
		out = chaosFrame(rng, true, 0, ws.OpBinary, packet.AppendAuth(nil, packet.Version, r.validKey(rng)))
		var m []byte
		for i := range 200 {
			m = packet.AppendSubscribe(m, "chaos-join-"+strconv.Itoa(i))
		}
		out = append(out, chaosFrame(rng, true, 0, ws.OpBinary, m)...)
	case 2:
		tg = chaosTarget{r.mainAddr, "/ws", "hypothesis"}
		for _, rows := range []int{1500, 1000} {
			uris := make([]string, rows)
			for i := range uris {
				uris[i] = fmt.Sprintf("https://example.com/join/%d", i)
			}
			f, _ := json.Marshal(map[string]any{"filter": map[string]any{"match_policy": "include_any", "actions": map[string]any{},
				"clauses": []any{map[string]any{"field": "/uri", "value": uris}}}})
			out = append(out, chaosFrame(rng, true, 0, ws.OpText, f)...)
		}
	default:
		r.keyMu.Lock()
		tg = chaosTarget{r.mainAddr, "/api/ws/" + r.ksJWT, "kosync"}
		r.keyMu.Unlock()
		for range 500 {
			out = append(out, chaosFrame(rng, true, 0, ws.OpText, []byte(`{"type":"pubsub","payload":{"topic":"user.documents"}}`))...)
		}
	}
	c, err := r.dial(tg.addr, rng)
	if err != nil {
		return
	}
	defer c.end(true)
	if !c.upgrade(r, tg.addr, tg.path, nil) {
		return
	}
	go func() { _ = c.write(out) }()
	r.sawClose(tg.protocol + " join flood: " + c.outcome(2*time.Second))
}

// wsifyJoinFlood joins 1,000 to 5,000 channels in batches of 50 (below
// the authorizer backlog of 64), one batch every 10 ms, then reads for a
// second to see whether the server ended the connection.
func (r *chaosRun) wsifyJoinFlood(rng *rand.Rand) {
	c, err := r.dial(r.wsifyAddr, rng)
	if err != nil {
		return
	}
	defer c.end(true)
	if !c.upgrade(r, r.wsifyAddr, "/ws", nil) {
		return
	}
	n := 1000 + rng.IntN(4000)
	for i := 0; i < n && r.ctx.Err() == nil; {
		var batch []byte
		for end := min(n, i+50); i < end; i++ {
			batch = append(batch, chaosFrame(rng, true, 0, ws.OpText,
				fmt.Appendf(nil, `{"command":"join","args":{"channel":"chaos-join-%d"}}`, i))...)
		}
		if c.write(batch) != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.sawClose("wsify join flood: " + c.outcome(time.Second))
}

// attackResetMidWrite: a client the server is writing to resets the
// connection (SO_LINGER 0): a firehose subscriber (native or wsify), a
// native session that asked for thousands of Pongs, a large HTTP answer
// (/metrics, documents.all) cut off.
func (r *chaosRun) attackResetMidWrite(rng *rand.Rand) {
	r.count("reset-mid-write", 1)
	switch rng.IntN(4) {
	case 0, 1:
		wsify := rng.IntN(2) == 0
		c, ok := r.fireSubscriber(rng, wsify, 0)
		if !ok {
			return
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(chaosIOTimeout))
		for range 1 + rng.IntN(20) {
			if _, _, err := c.readFrame(); err != nil {
				break
			}
		}
		c.reset()
	case 2:
		c, err := r.dial(r.mainAddr, rng)
		if err != nil {
			return
		}
		auth := chaosFrame(rng, true, 0, ws.OpBinary, packet.AppendAuth(nil, packet.Version, r.validKey(rng)))
		pings := chaosFrame(rng, true, 0, ws.OpBinary, bytes.Repeat([]byte{packet.PacketPing}, 60000))
		if c.upgrade(r, r.mainAddr, "/api/ws", slices.Concat(auth, pings)) {
			time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
		}
		c.reset()
	default:
		addr, path := r.adminAddr, "/metrics"
		if rng.IntN(2) == 0 {
			addr, path = r.mainAddr, "/api/documents.all"
		}
		c, err := r.dial(addr, rng)
		if err != nil {
			return
		}
		r.keyMu.Lock()
		key := r.ksKey
		r.keyMu.Unlock()
		_ = c.write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\nx-auth-user: " + chaosKsUser + "\r\nx-auth-key: " + key + "\r\n\r\n"))
		_ = c.nc.SetReadDeadline(time.Now().Add(chaosIOTimeout))
		_, _ = c.br.Peek(1)
		c.reset()
	}
}

func (r *chaosRun) validKey(rng *rand.Rand) []byte {
	r.keyMu.Lock()
	text := r.keyText[rng.IntN(len(r.keyText))]
	r.keyMu.Unlock()
	key, _ := token.DecodeText(text)
	return key
}

// fireSubscriber is a raw connection subscribed to the firehose: native
// (authenticated, subscribed; Subscribed awaited) or wsify (joined).
func (r *chaosRun) fireSubscriber(rng *rand.Rand, wsify bool, rcvbuf int) (*chaosConn, bool) {
	addr, path := r.mainAddr, "/api/ws"
	first := slices.Concat(chaosFrame(rng, true, 0, ws.OpBinary, packet.AppendAuth(nil, packet.Version, r.validKey(rng))),
		chaosFrame(rng, true, 0, ws.OpBinary, packet.AppendSubscribe(nil, chaosFireChannel)))
	if wsify {
		addr, path = r.wsifyAddr, "/ws"
		first = chaosFrame(rng, true, 0, ws.OpText, []byte(`{"command":"join","args":{"channel":"`+chaosFireChannel+`"}}`))
	}
	c, err := r.dialBuffer(addr, rng, rcvbuf)
	if err != nil {
		return nil, false
	}
	if !c.upgrade(r, addr, path, first) {
		c.reset()
		return nil, false
	}
	return c, true
}

// slowloris holds one connection at a time that sends a request head a
// byte every 50 to 500 ms, until the server gives up on it or 20 s pass.
func (r *chaosRun) slowloris(rng *rand.Rand) {
	for r.ctx.Err() == nil {
		r.count("slowloris", 1)
		addr := r.chaosAddr(rng)
		c, err := r.dial(addr, rng)
		if err != nil {
			r.pause(time.Second)
			continue
		}
		head := c.upgradeHead(addr, chaosPick(rng, "/api/ws", "/ws", "/users/auth"))
		ended := "open after 20s"
		for i, deadline := 0, time.Now().Add(20*time.Second); i < len(head) && time.Now().Before(deadline); i++ {
			if c.write(head[i:i+1]) != nil {
				ended = "write failed"
				break
			}
			if !r.pause(time.Duration(50+rng.IntN(450)) * time.Millisecond) {
				ended = ""
				break
			}
			_ = c.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.br.Peek(1); err == nil || chaosEnding(err) != "no answer" {
				ended = "answered"
				if err == nil {
					ended = c.httpAnswer(time.Second)
				}
				break
			}
		}
		if ended != "" {
			r.sawClose("slowloris: " + ended)
		}
		c.end(false)
	}
}

// neverRead holds a firehose subscriber with a small receive buffer that
// never reads, for 10 to 25 s, then reads what is left to see how the
// server ended it (a slow consumer: 1008).
func (r *chaosRun) neverRead(rng *rand.Rand) {
	for r.ctx.Err() == nil {
		r.count("never-read", 1)
		c, ok := r.fireSubscriber(rng, rng.IntN(2) == 0, 4096)
		if !ok {
			r.pause(time.Second)
			continue
		}
		r.pause(time.Duration(10+rng.IntN(15)) * time.Second)
		r.sawClose("never-read: " + c.outcome(2*time.Second))
		c.end(true)
	}
}

// ---- the end ----

// finish checks the node once more, then logs the figures and the
// failures.
func (r *chaosRun) finish() {
	t := r.t
	select {
	case <-r.proc.exited:
	default:
		if status, _, err := faultGet(r.proc.admin + "/healthz"); err != nil || status != http.StatusOK {
			r.fail("after the run /healthz answered %d %v", status, err)
		}
		if m, err := r.scrape(); err == nil {
			r.notePanicsAndLag(m)
		} else {
			r.fail("after the run /metrics failed: %v", err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	var fig strings.Builder
	fmt.Fprintf(&fig, "chaos figures (seed %d, %v, %d workers, stall bound %v)\n", r.cfg.seed, r.cfg.dur, r.cfg.workers, r.cfg.stall)
	fmt.Fprintf(&fig, "attacks sent:\n")
	var sum int64
	for _, k := range slices.Sorted(maps.Keys(r.attacks)) {
		fmt.Fprintf(&fig, "  %-18s %8d\n", k, r.attacks[k])
		sum += r.attacks[k]
	}
	fmt.Fprintf(&fig, "  %-18s %8d\n", "total", sum)
	fmt.Fprintf(&fig, "Redis: %s\n", strings.Join(r.redisEvts, ", "))
	rtts := slices.Clone(r.rtts)
	slices.Sort(rtts)
	pct := func(p float64) time.Duration {
		if len(rtts) == 0 {
			return 0
		}
		return rtts[min(len(rtts)-1, int(p*float64(len(rtts))))].Round(time.Microsecond)
	}
	var worst time.Duration
	if len(rtts) > 0 {
		worst = rtts[len(rtts)-1].Round(time.Microsecond)
	}
	var stalled []chaosStall // not explained by the machine
	var stalledWorst time.Duration
	for _, s := range r.stalls {
		if !s.machine(r) {
			stalled = append(stalled, s)
			stalledWorst = max(stalledWorst, s.rtt)
		}
	}
	fmt.Fprintf(&fig, "healthy round trips: %d (%d clients), p50 %v, p99 %v, max %v; over %v: %d (%d of them explained by a starved machine); lost: %d\n",
		len(rtts), chaosLoops, pct(0.50), pct(0.99), worst, r.cfg.stall, len(r.stalls), len(r.stalls)-len(stalled), r.lost)
	for i, s := range r.stalls {
		if i == 20 {
			fmt.Fprintf(&fig, "  ... %d more\n", len(r.stalls)-20)
			break
		}
		fmt.Fprintf(&fig, "  stall: %s\n", s.describe(r))
	}
	var start, peak, end int64
	if len(r.rss) > 0 {
		start, end = r.rss[0].rss, r.rss[len(r.rss)-1].rss
		for _, s := range r.rss {
			peak = max(peak, s.rss)
		}
	}
	first, last := chaosMedianRSS(r.rss, 0), chaosMedianRSS(r.rss, 2)
	fmt.Fprintf(&fig, "RSS: start %.1f MiB, peak %.1f MiB, end %.1f MiB; median first third %.1f MiB, last third %.1f MiB\n",
		mib(start), mib(peak), mib(end), mib(first), mib(last))
	if len(r.rss) > 1 {
		a, b := r.rss[0], r.rss[len(r.rss)-1]
		fmt.Fprintf(&fig, "gateway CPU: %.1f s in %.1f s (%.0f%% of one core); machine load average at the end: %s\n",
			(b.cpu - a.cpu).Seconds(), (b.at - a.at).Seconds(), 100*float64(b.cpu-a.cpu)/float64(b.at-a.at), chaosLoadAvg())
	}
	fmt.Fprintf(&fig, "gateway_handler_panics_total: %v\n", r.panics)
	if r.lagSeries != "" {
		fmt.Fprintf(&fig, "loop lag: max %.3fs (%s)\n", r.lagMax, r.lagSeries)
	} else {
		fmt.Fprintf(&fig, "loop lag: the node exports no loop_lag series\n")
	}
	fmt.Fprintf(&fig, "/metrics scrapes: %d failed, slowest %v\n", r.scrapeErr, r.scrapeMax.Round(time.Millisecond))
	fmt.Fprintf(&fig, "the node's own counts at the end:\n")
	for _, k := range slices.Sorted(maps.Keys(r.lastMetrics)) {
		if v := r.lastMetrics[k]; v != 0 && slices.ContainsFunc(chaosReported, func(p string) bool { return strings.HasPrefix(k, p) }) {
			fmt.Fprintf(&fig, "  %-100s %10g\n", k, v)
		}
	}
	fmt.Fprintf(&fig, "endings seen by attackers (close codes, HTTP answers to raw heads, resets):\n")
	for _, k := range slices.Sorted(maps.Keys(r.closes)) {
		fmt.Fprintf(&fig, "  %-40s %8d\n", k, r.closes[k])
	}
	fmt.Fprintf(&fig, "HTTP statuses:")
	for _, k := range slices.Sorted(maps.Keys(r.statuses)) {
		fmt.Fprintf(&fig, " %s×%d", k, r.statuses[k])
	}
	fmt.Fprintf(&fig, "\nlistening clients' endings (they reconnect):")
	for _, k := range slices.Sorted(maps.Keys(r.listeners)) {
		fmt.Fprintf(&fig, " [%s]×%d", k, r.listeners[k])
	}
	if len(r.listeners) == 0 {
		fmt.Fprintf(&fig, " none")
	}
	t.Log(fig.String())

	if r.panics > 0 {
		r.failures = append(r.failures, fmt.Sprintf("gateway_handler_panics_total = %v, want 0", r.panics))
	}
	if len(stalled) > 0 {
		r.failures = append(r.failures, fmt.Sprintf("%d healthy round trips over %v not explained by the machine (max %v): a loop stalled",
			len(stalled), r.cfg.stall, stalledWorst.Round(time.Microsecond)))
	}
	if n := len(r.stalls) - len(stalled); n > len(rtts)/100 {
		t.Logf("WARNING: %d round trips over %v were the machine's (the harness itself was as late): too busy a machine for this run to say much about stalls", n, r.cfg.stall)
	}
	if r.lagSeries != "" && r.lagMax > r.cfg.stall.Seconds() {
		r.failures = append(r.failures, fmt.Sprintf("loop lag %.3fs over %v (%s)", r.lagMax, r.cfg.stall, r.lagSeries))
	}
	if first > 0 && float64(last) > chaosRSSFactor*float64(first) {
		r.failures = append(r.failures, fmt.Sprintf("RSS grew: median %.1f MiB in the first third, %.1f MiB in the last (bound %.0fx)",
			mib(first), mib(last), chaosRSSFactor))
	}
	if len(rtts) == 0 {
		r.failures = append(r.failures, "no healthy round trip at all")
	}
	if len(r.failures) == 0 {
		return
	}
	for _, f := range r.failures {
		t.Errorf("chaos: %s", f)
	}
	t.Logf("gateway log lines about panics:\n%s", chaosPanicLines(r.proc.stderr.String()))
}

// chaosReported are the node's series the figures show (by prefix).
var chaosReported = []string{
	"gateway_slow_consumer_disconnects_total", "gateway_dropped_messages_total", "gateway_handshakes_total",
	"gateway_disconnects_total", "gateway_limit_refusals_total", "gateway_webhook_requests_total",
	"gateway_auth_failures_total", "gateway_broker_refusals_total", "gateway_redis_pubsub_reconnects_total",
	"gateway_connections{", "gateway_sessions", "go_goroutines", "go_memstats_heap_inuse_bytes",
}

// chaosLoadAvg is the first three fields of /proc/loadavg.
func chaosLoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// chaosMedianRSS is the median RSS of one third (0, 1, 2) of the samples.
func chaosMedianRSS(ss []chaosSample, third int) int64 {
	n := len(ss) / 3
	if n == 0 {
		return 0
	}
	part := make([]int64, 0, n)
	for _, s := range ss[third*n : (third+1)*n] {
		part = append(part, s.rss)
	}
	slices.Sort(part)
	return part[len(part)/2]
}

// chaosPanicLines picks from the gateway's log a fatal panic's trace
// (from "panic:" or "fatal error:" to the end) and each recovered panic
// (lines with a panic= field): the first of each panic value in full,
// with its stack, then how many times it recurred. Bounded.
func chaosPanicLines(log string) string {
	var out []string
	log = "\n" + log
	if i := strings.Index(log, "\npanic: "); i >= 0 {
		out = append(out, log[i+1:])
	} else if i := strings.Index(log, "\nfatal error: "); i >= 0 {
		out = append(out, log[i+1:])
	}
	seen := map[string]int{}
	var order []string
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.Contains(line, " panic=") {
			continue
		}
		_, v, _ := strings.Cut(line, ` panic=`)
		v, _, _ = strings.Cut(v, ` stack=`)
		if seen[v]++; seen[v] == 1 {
			order = append(order, v)
			out = append(out, strings.NewReplacer(`\n`, "\n", `\t`, "\t").Replace(line))
		}
	}
	for _, v := range order {
		out = append(out, fmt.Sprintf("recovered panic %s: %d times", v, seen[v]))
	}
	s := strings.Join(out, "\n")
	if len(s) > 64<<10 {
		s = s[:64<<10] + "\n... (cut)"
	}
	if s == "" {
		return "(none)"
	}
	return s
}

// TestChaosHelpers checks the harness's own judgement on made-up input
// (it runs in every `make test`; TestChaos itself only with GATEWAY_CHAOS):
// loop-lag series of each shape, panic lines from both kinds of log, RSS
// thirds, and which stalls the machine explains.
func TestChaosHelpers(t *testing.T) {
	r := &chaosRun{cfg: chaosConfig{stall: 100 * time.Millisecond}}
	r.notePanicsAndLag(map[string]float64{
		"gateway_handler_panics_total":                             2,
		"gateway_loop_lag_seconds":                                 0.02, // a gauge
		`gateway_loop_lag_hist_seconds_bucket{loop="0",le="0.05"}`: 10,
		`gateway_loop_lag_hist_seconds_bucket{loop="0",le="0.1"}`:  10,
		`gateway_loop_lag_hist_seconds_bucket{loop="0",le="0.25"}`: 11, // one over 100 ms
		`gateway_loop_lag_hist_seconds_bucket{loop="0",le="+Inf"}`: 11,
		"gateway_loop_lag_hist_seconds_count":                      11,
	})
	if r.panics != 2 || r.lagMax != 0.25 || !strings.Contains(r.lagSeries, "bucket") {
		t.Errorf("panics %v, lag %v (%s); want 2 and 0.25 from the histogram", r.panics, r.lagMax, r.lagSeries)
	}
	r = &chaosRun{cfg: chaosConfig{stall: 100 * time.Millisecond}}
	r.notePanicsAndLag(map[string]float64{`gateway_loop_lag_seconds{loop="1"}`: 0.3})
	if r.lagMax != 0.3 {
		t.Errorf("gauge lag %v, want 0.3", r.lagMax)
	}

	fatal := "time=x level=INFO msg=started\npanic: runtime error: slice bounds out of range\n\ngoroutine 7 [running]:\nmain.f()\n"
	if got := chaosPanicLines(fatal); !strings.HasPrefix(got, "panic: runtime error") || !strings.Contains(got, "main.f()") {
		t.Errorf("fatal panic: got %q", got)
	}
	recovered := `level=ERROR msg="x" panic="boom" stack="a\nb"` + "\n" + `level=ERROR msg="y" panic="boom" stack="c"` + "\n"
	if got := chaosPanicLines(recovered); !strings.Contains(got, "a\nb") || strings.Contains(got, `stack="c"`) ||
		!strings.Contains(got, `recovered panic "boom": 2 times`) {
		t.Errorf("recovered panics: got %q", got)
	}
	if got := chaosPanicLines("level=INFO msg=fine\n"); got != "(none)" {
		t.Errorf("no panic: got %q", got)
	}

	var ss []chaosSample
	for i, rss := range []int64{10, 30, 20, 40, 50, 60, 70, 90, 80} {
		ss = append(ss, chaosSample{at: time.Duration(i) * time.Second, rss: rss})
	}
	if a, b := chaosMedianRSS(ss, 0), chaosMedianRSS(ss, 2); a != 20 || b != 80 {
		t.Errorf("median RSS of the thirds: %d, %d; want 20, 80", a, b)
	}

	r = &chaosRun{cfg: chaosConfig{stall: 100 * time.Millisecond}}
	for i := range 9 { // the gateway at half a core, then at two cores
		cpu := time.Duration(i) * 125 * time.Millisecond
		if i > 4 {
			cpu = 500*time.Millisecond + time.Duration(i-4)*500*time.Millisecond
		}
		r.rss = append(r.rss, chaosSample{at: time.Duration(i) * 250 * time.Millisecond, cpu: cpu})
	}
	r.late = []chaosLate{{at: 500 * time.Millisecond, late: 150 * time.Millisecond}, {at: 1750 * time.Millisecond, late: 150 * time.Millisecond}}
	for _, c := range []struct {
		s    chaosStall
		want bool
	}{
		{chaosStall{at: 500 * time.Millisecond, rtt: 200 * time.Millisecond}, true},   // harness as late, gateway idle
		{chaosStall{at: 500 * time.Millisecond, rtt: 400 * time.Millisecond}, false},  // the harness was not late enough
		{chaosStall{at: 1000 * time.Millisecond, rtt: 150 * time.Millisecond}, false}, // the harness was on time
		{chaosStall{at: 1750 * time.Millisecond, rtt: 200 * time.Millisecond}, false}, // the gateway hogged the cores
	} {
		if got := c.s.machine(r); got != c.want {
			cpu, late := c.s.context(r)
			t.Errorf("stall at %v of %v (gateway %.2f cores, harness late %v): machine = %v, want %v", c.s.at, c.s.rtt, cpu, late, got, c.want)
		}
	}
}
