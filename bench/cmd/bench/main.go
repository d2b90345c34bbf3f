// Command bench runs the load-generator scenarios of bench/loadgen
// against the gateway and the baseline server in turn, on the same machine
// with the same settings, and writes results.json and results.md with the
// ratio gateway/baseline of every figure. Each scenario gets fresh server
// processes so memory figures are comparable. See bench/README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsgateway/gateway/bench/loadgen"
)

type options struct {
	gateway, baseline, out, scenarios string
	servers                           string
	conns, handshakeConns, pingConns  int
	pings, subs, publishes, payload   int
	channels, subsPerChannel, pubs    int
	channelPublishes, jsonSubs        int
	jsonPublishes                     int
	churnRate, dialRate, publishRate  float64
	duration, timeout                 time.Duration
	eventLoops, clientLoops           int
	sourceIPs, firstSourceIP          int
	inFlight                          int
	quick                             bool
	pacedPublishes                    int
	pacedRate                         float64
	attach, attachMetrics             string
	attachSecret, channel             string
	syncDir                           string
	pingInterval                      time.Duration
	publishAt                         int64
	histSubs, histPublishes           int
	recClients, recPublications       int
	histSetups                        string
	histRounds                        int
	histProfile                       time.Duration
	clChannels, clSubsPerChannel      int
	clPublishers, clPublishes         int
	clPacedPublishes                  int
	clPacedRate                       float64
	clSetups                          string
	clRounds                          int
}

func main() {
	var o options
	flag.StringVar(&o.gateway, "gateway", "bin/gateway", "gateway binary")
	flag.StringVar(&o.baseline, "baseline", "", "baseline binary (default: go build ./bench/baseline into a temp dir)")
	flag.StringVar(&o.out, "out", "bench/results", "output directory for results.json and results.md")
	flag.StringVar(&o.scenarios, "scenarios", strings.Join(loadgen.Order, ","), "comma-separated scenarios")
	flag.StringVar(&o.servers, "servers", "gateway,baseline", "servers to run, in order")
	flag.IntVar(&o.conns, "conns", 10000, "idle: connections")
	flag.IntVar(&o.handshakeConns, "handshake-conns", 3000, "handshake: connections opened as fast as possible")
	flag.IntVar(&o.pingConns, "ping-conns", 1000, "ping: connections")
	flag.IntVar(&o.pings, "pings", 20, "ping: rounds (one Ping per connection each)")
	flag.IntVar(&o.subs, "fanout-subs", 10000, "fanout: subscribers of the channel (churn keeps a tenth, at least 100, as stable subscribers)")
	flag.IntVar(&o.publishes, "publishes", 200, "fanout: publishes")
	flag.IntVar(&o.pacedPublishes, "paced-publishes", 50, "fanout-paced: publishes")
	flag.Float64Var(&o.pacedRate, "paced-rate", loadgen.DefaultPacedRate, "fanout-paced: publishes per second")
	flag.IntVar(&o.payload, "payload", 100, "payload bytes of each publish")
	flag.IntVar(&o.channels, "channels", 100, "channels: channels")
	flag.IntVar(&o.subsPerChannel, "subs-per-channel", 20, "channels: subscribers per channel")
	flag.IntVar(&o.pubs, "publishers", 10, "channels: publisher connections")
	flag.IntVar(&o.channelPublishes, "channel-publishes", 1000, "channels: publishes per publisher (round robin over the channels)")
	flag.IntVar(&o.jsonSubs, "json-subs", 1000, "wsify-fanout, kosync-fanout: subscribers")
	flag.IntVar(&o.jsonPublishes, "json-publishes", 200, "wsify-fanout, kosync-fanout: publishes")
	flag.Float64Var(&o.churnRate, "churn-rate", 1000, "churn: new connections per second")
	flag.Float64Var(&o.dialRate, "dial-rate", 4000, "dial pacing per second (all scenarios but handshake); 0: in-flight bound only")
	flag.Float64Var(&o.publishRate, "publish-rate", 0, "publishes per second per publisher (0: back to back; churn: 200)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "idle: hold time; churn: duration")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "longest wait for deliveries")
	flag.IntVar(&o.eventLoops, "event-loops", 2, "gateway --event-loops")
	flag.IntVar(&o.clientLoops, "client-loops", 0, "load generator event loops (0: GOMAXPROCS)")
	flag.IntVar(&o.sourceIPs, "source-ips", 50, "loopback source addresses to rotate over")
	flag.IntVar(&o.firstSourceIP, "first-source-ip", 2, "first source address: 127.0.0.N (use distinct ranges for several load processes)")
	flag.IntVar(&o.inFlight, "in-flight", 500, "handshakes in flight at most")
	flag.BoolVar(&o.quick, "quick", false, "smoke run in seconds: tiny counts")
	flag.StringVar(&o.attach, "attach", "", "run against servers already running at this ws:// URL (a cluster: see README), starting none")
	flag.StringVar(&o.attachMetrics, "attach-metrics", "", "with -attach: a /metrics URL for heap figures")
	flag.StringVar(&o.attachSecret, "attach-secret", os.Getenv("GATEWAY_SECRET"), "with -attach: the servers' GATEWAY_SECRET (default: the environment's)")
	flag.StringVar(&o.channel, "channel", "", "fanout: channel (default bench.fanout; distinct per load process in a cluster run)")
	flag.Int64Var(&o.publishAt, "publish-at", 0, "fanout: Unix second at which to start publishing (several load processes together)")
	flag.StringVar(&o.syncDir, "sync-dir", "", "fanout: a directory shared by several load processes (bench/scale.sh): once connected, and again once the deliveries are counted, write <stage>.<channel> there with the figures so far and wait for the file <stage>.go (empty: no barrier)")
	flag.DurationVar(&o.pingInterval, "ping-interval", 0, "protocol Ping period of every connection (0: 25 s; below zero: no pinger)")
	flag.IntVar(&o.histSubs, "history-subs", 5000, "history-fanout: subscribers (spread over the nodes)")
	flag.IntVar(&o.histPublishes, "history-publishes", 200, "history-fanout: publishes back to back")
	flag.IntVar(&o.recClients, "recovery-clients", 1000, "history-recovery: clients that disconnect and reconnect at once")
	flag.IntVar(&o.recPublications, "recovery-publications", 1000, "history-recovery: publications made while they are away")
	flag.StringVar(&o.histSetups, "history-setups", "alone,redis2", "history scenarios: alone (one node, history in memory) and/or redis2 (two nodes and a redis-server)")
	flag.IntVar(&o.histRounds, "history-rounds", 1, "history-fanout: rounds of all four set-ups, interleaved (the shared machine is noisy)")
	flag.DurationVar(&o.histProfile, "history-profile", 0, "history scenarios: take a CPU profile of the first node (/debug/pprof/profile) this long from the start of the measured phase (first publish, reconnect), into <out>/<scenario>-<set-up>-r<round>-cpu.pprof (0: none)")
	flag.IntVar(&o.clChannels, "cluster-channels", 256, "cluster: channels (spread over the shards by their names' hash slots)")
	flag.IntVar(&o.clSubsPerChannel, "cluster-subs-per-channel", 20, "cluster: subscribers per channel, all on node A")
	flag.IntVar(&o.clPublishers, "cluster-publishers", 8, "cluster: publisher connections, all on node B")
	flag.IntVar(&o.clPublishes, "cluster-publishes", 8000, "cluster: publishes per publisher, round robin over the channels")
	flag.IntVar(&o.clPacedPublishes, "cluster-paced-publishes", 2000, "cluster: publishes per publisher of the paced run")
	flag.Float64Var(&o.clPacedRate, "cluster-paced-rate", 500, "cluster: publishes per second per publisher of the paced run, made after the back-to-back one on each set-up (0: no paced run)")
	flag.StringVar(&o.clSetups, "cluster-setups", "redis1,cluster3", "cluster: set-ups in each round: redis1 (one redis-server, --redis) and/or clusterN (a Redis Cluster of N masters, --redis-cluster)")
	flag.IntVar(&o.clRounds, "cluster-rounds", 2, "cluster: rounds of all set-ups, interleaved (the shared machine is noisy)")
	flag.Parse()
	if o.quick {
		o.conns, o.handshakeConns, o.pingConns, o.pings = 300, 300, 100, 5
		o.subs, o.publishes, o.channels, o.subsPerChannel, o.pubs, o.channelPublishes = 200, 50, 10, 10, 3, 100
		o.pacedPublishes = 10
		o.jsonSubs, o.jsonPublishes, o.churnRate, o.duration, o.timeout = 100, 20, 200, 2*time.Second, 20*time.Second
		o.histSubs, o.histPublishes, o.recClients, o.recPublications = 200, 50, 100, 100
		o.clChannels, o.clSubsPerChannel, o.clPublishers, o.clPublishes, o.clRounds = 32, 5, 2, 500, 1
		o.clPacedPublishes, o.clPacedRate = 100, 100
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Report is results.json.
type Report struct {
	Date     string            `json:"date"`
	Machine  map[string]string `json:"machine"`
	Settings map[string]any    `json:"settings"`
	Results  []*loadgen.Result `json:"results"`
}

func run(o options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	// The load generator holds one fd per connection in this process.
	maxConns := int(lim.Cur) - 300
	for _, n := range []*int{&o.conns, &o.handshakeConns, &o.pingConns, &o.subs, &o.jsonSubs} {
		if *n > maxConns {
			fmt.Fprintf(os.Stderr, "bench: %d connections exceed the open-file limit %d of one process; using %d (run several load processes to go further)\n", *n, lim.Cur, maxConns)
			*n = maxConns
		}
	}
	if _, err := os.Stat(o.gateway); err != nil && o.attach == "" {
		return fmt.Errorf("gateway binary: %w (build it: go build -o bin/gateway ./cmd/gateway)", err)
	}
	tmp, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	servers := strings.Split(o.servers, ",")
	if o.attach != "" {
		servers = []string{loadgen.Gateway}
	}
	names := expandHistory(strings.Split(o.scenarios, ","))
	cluster := len(names) == 1 && names[0] == "cluster"
	if o.baseline == "" && contains(servers, loadgen.Baseline) && !onlyHistory(names) && !cluster {
		o.baseline = filepath.Join(tmp, "baseline")
		fmt.Println("building ./bench/baseline ...")
		cmd := exec.Command("go", "build", "-o", o.baseline, "./bench/baseline")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the baseline: %w", err)
		}
	}
	secretRaw := make([]byte, 32)
	_, _ = rand.Read(secretRaw)
	secret := hex.EncodeToString(secretRaw)

	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(lim), Settings: settings(o)}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if onlyHistory(names) {
		return runHistory(ctx, o, names, secret, tmp, rep)
	}
	if cluster {
		return runCluster(ctx, o, secret, tmp, rep)
	}
	for _, name := range names {
		if loadgen.HistoryScenarios[name] != nil || name == "cluster" {
			return fmt.Errorf("run the history and cluster scenarios apart: -scenarios history, -scenarios cluster")
		}
		sc := loadgen.Scenarios[name]
		if sc == nil {
			return fmt.Errorf("unknown scenario %q (have %v)", name, loadgen.Order)
		}
		for _, kind := range servers {
			if ctx.Err() != nil {
				break
			}
			if kind == loadgen.Baseline && loadgen.GatewayOnly[name] {
				continue
			}
			fmt.Printf("== %s on %s\n", name, kind)
			res := runOne(ctx, o, kind, name, sc, secret, tmp)
			rep.Results = append(rep.Results, res)
			printBrief(res)
		}
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "results.md"), []byte(markdown(rep)), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", filepath.Join(o.out, "results.json"), filepath.Join(o.out, "results.md"))
	return ctx.Err()
}

func params(o options, name string) loadgen.Params {
	p := loadgen.Params{PayloadSize: o.payload, PublishRate: o.publishRate, Duration: o.duration, Timeout: o.timeout,
		Engine: loadgen.Config{SourceIPs: o.sourceIPs, FirstSourceIP: o.firstSourceIP, MaxInFlight: o.inFlight,
			DialRate: o.dialRate, EventLoops: o.clientLoops, PingInterval: o.pingInterval}}
	switch name {
	case "idle":
		p.Conns = o.conns
	case "handshake":
		p.Conns = o.handshakeConns
		p.Engine.DialRate = 0
	case "ping":
		p.Conns, p.Pings = o.pingConns, o.pings
	case "fanout", "churn", "burst-release":
		p.Subs, p.Publishes = o.subs, o.publishes
		p.ChurnRate = o.churnRate
		p.Channel = o.channel
		if o.publishAt > 0 {
			p.PublishAt = time.Unix(o.publishAt, 0)
		}
	case "fanout-paced":
		p.Subs, p.Publishes, p.PublishRate = o.subs, o.pacedPublishes, o.pacedRate
	case "channels":
		p.Channels, p.SubsPerChannel, p.Publishers, p.Publishes = o.channels, o.subsPerChannel, o.pubs, o.channelPublishes
	case "wsify-fanout", "kosync-fanout":
		p.Subs, p.Publishes = o.jsonSubs, o.jsonPublishes
	}
	return p
}

// server is a started server process.
type server struct {
	cmd    *exec.Cmd
	target loadgen.Target
	ready  string
	done   chan error
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startServer(o options, kind, secret, tmp string, extra ...string) (*server, error) {
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	main := fmt.Sprintf("127.0.0.1:%d", ports[0])
	admin := fmt.Sprintf("127.0.0.1:%d", ports[1])
	var cmd *exec.Cmd
	switch kind {
	case loadgen.Gateway:
		dataDir, err := os.MkdirTemp(tmp, "data-")
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(o.gateway, "serve", "--listen", main, "--admin-listen", admin, "--data-dir", dataDir,
			"--wsify-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--event-loops", fmt.Sprint(o.eventLoops),
			"--ping-timeout", "60s", "--log-level", "warn")
		cmd.Args = append(cmd.Args, extra...)
	case loadgen.Baseline:
		cmd = exec.Command(o.baseline, "-listen", main, "-metrics", admin)
	default:
		return nil, fmt.Errorf("unknown server %q", kind)
	}
	cmd.Env = append(os.Environ(), "GATEWAY_SECRET="+secret)
	logName := filepath.Join(tmp, fmt.Sprintf("%s-%d.log", kind, ports[0]))
	logf, err := os.Create(logName)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, ready: "http://" + admin + "/readyz", done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); logf.Close() }()
	s.target = loadgen.Target{Kind: kind, WSURL: "ws://" + main + "/api/ws", MetricsURL: "http://" + admin + "/metrics",
		PID: cmd.Process.Pid, Secret: secret}
	if kind == loadgen.Gateway {
		s.target.HTTPURL = "http://" + main
		s.target.WsifyURL = fmt.Sprintf("ws://127.0.0.1:%d/ws", ports[2])
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-s.done:
			log, _ := os.ReadFile(logName)
			return nil, fmt.Errorf("%s exited at start: %v\n%s", kind, err, log)
		default:
		}
		resp, err := http.Get(s.ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s not ready after 20 s", kind)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let start-up allocations settle before the empty sample
	return s, nil
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func runOne(ctx context.Context, o options, kind, name string, sc loadgen.Scenario, secret, tmp string) *loadgen.Result {
	p := params(o, name)
	if o.syncDir != "" {
		p.Barrier = fileBarrier(ctx, o.syncDir, o.channel+"."+strconv.Itoa(os.Getpid()))
	}
	if o.attach != "" {
		t := loadgen.Target{Kind: kind, WSURL: o.attach, MetricsURL: o.attachMetrics, Secret: o.attachSecret}
		return sc(ctx, t, p)
	}
	s, err := startServer(o, kind, secret, tmp)
	if err != nil {
		return &loadgen.Result{Scenario: name, Server: kind, Params: p, Error: err.Error()}
	}
	defer s.stop()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	res := sc(sctx, s.target, p)
	select {
	case err := <-s.done:
		s.done <- err
		if res.Error == "" {
			res.Error = fmt.Sprintf("server exited during the run: %v", err)
		}
	default:
	}
	// Let the sockets of this run leave the client side before the next.
	time.Sleep(500 * time.Millisecond)
	return res
}

func printBrief(r *loadgen.Result) {
	fmt.Printf("   conns %d (errors %d) handshakes/s %.0f", r.Conns, r.ConnectErrors, r.HandshakesPerS)
	if r.Expected > 0 {
		fmt.Printf(" delivered %d/%d lost %d dup %d reord %d deliveries/s %.0f p50 %.2fms p99 %.2fms p99.9 %.2fms",
			r.Delivered, r.Expected, r.Lost, r.Duplicates, r.Reordered, r.DeliveriesPS, r.Latency.P50, r.Latency.P99, r.Latency.P999)
	}
	if r.PingRTT.Count > 0 {
		fmt.Printf(" rtt p50 %.2fms p99 %.2fms", r.PingRTT.P50, r.PingRTT.P99)
	}
	fmt.Printf(" rss/conn %.0f heap/conn %.0f cpu %.2fs (%.1fs)\n", r.RSSPC, r.HeapPC, r.CPU, r.Seconds)
	if len(r.ErrorKinds) > 0 {
		fmt.Println("   connect errors by cause:", errorKinds(r.ErrorKinds))
	}
	if r.Error != "" {
		fmt.Println("   error:", r.Error)
	}
	if r.FirstError != "" {
		fmt.Println("   first connect error:", r.FirstError)
	}
	if len(r.CloseCodes) > 0 {
		fmt.Println("   unexpected closes:", r.CloseCodes)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if strings.TrimSpace(v) == s {
			return true
		}
	}
	return false
}

func settings(o options) map[string]any {
	return map[string]any{"conns": o.conns, "handshake_conns": o.handshakeConns, "ping_conns": o.pingConns, "pings": o.pings,
		"fanout_subs": o.subs, "publishes": o.publishes, "payload": o.payload, "channels": o.channels,
		"subs_per_channel": o.subsPerChannel, "publishers": o.pubs, "channel_publishes": o.channelPublishes,
		"json_subs": o.jsonSubs, "json_publishes": o.jsonPublishes, "churn_rate": o.churnRate, "dial_rate": o.dialRate,
		"publish_rate": o.publishRate, "duration": o.duration.String(), "gateway_event_loops": o.eventLoops,
		"client_event_loops": o.clientLoops, "source_ips": o.sourceIPs, "in_flight": o.inFlight, "quick": o.quick}
}

func machine(lim syscall.Rlimit) map[string]string {
	m := map[string]string{
		"nproc":      fmt.Sprint(runtime.NumCPU()),
		"go":         runtime.Version(),
		"ulimit_Hn":  fmt.Sprint(lim.Max),
		"ulimit_n":   fmt.Sprint(lim.Cur),
		"somaxconn":  readTrim("/proc/sys/net/core/somaxconn"),
		"port_range": strings.Join(strings.Fields(readTrim("/proc/sys/net/ipv4/ip_local_port_range")), "-"),
		"kernel":     readTrim("/proc/sys/kernel/osrelease"),
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				m["memory"] = strings.TrimSpace(rest)
			}
		}
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m["gateway_version"] = strings.TrimSpace(string(out))
	}
	return m
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// errorKinds formats Result.ErrorKinds as "cause=count ..." in a stable
// order.
func errorKinds(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// fileBarrier is Params.Barrier over files in dir, for several load
// processes started by one script: at each stage the process writes
// <stage>.<id> and waits until <stage>.go exists, which the script creates
// once every process has arrived (and it has sampled the nodes), or until
// ctx ends (SIGTERM, SIGINT). The file's first line is "name value" pairs
// (conns, errors, expected, delivered, lost, dup, reord, dps: deliveries/s,
// p50, p99, max: latency in ms, t: seconds since the start) for a script to
// sum; then one line "cause <step:cause> <count>" per kind of failed dial.
func fileBarrier(ctx context.Context, dir, id string) func(string, *loadgen.Result) {
	return func(stage string, r *loadgen.Result) {
		var b strings.Builder
		fmt.Fprintf(&b, "conns %d errors %d expected %d delivered %d lost %d dup %d reord %d dps %.0f p50 %.1f p99 %.1f max %.1f t %.1f\n",
			r.Conns, r.ConnectErrors, r.Expected, r.Delivered, r.Lost, r.Duplicates, r.Reordered, r.DeliveriesPS,
			r.Latency.P50, r.Latency.P99, r.Latency.Max, r.Seconds)
		for k, n := range r.ErrorKinds {
			fmt.Fprintf(&b, "cause %s %d\n", strings.ReplaceAll(k, " ", ""), n)
		}
		tmp := filepath.Join(dir, "."+stage+"."+id)
		if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
			_ = os.Rename(tmp, filepath.Join(dir, stage+"."+id))
		}
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(dir, stage+".go")); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
