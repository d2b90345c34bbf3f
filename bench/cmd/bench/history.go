package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wsgateway/gateway/bench/loadgen"
)

// The history suite (issue 13): gateway only, each run on fresh processes
// of one set-up: one node alone, or two nodes sharing a redis-server the
// runner starts; with or without history on the channel. It writes
// history.json and history.md next to results.json.

// histSizeFlag is the nodes' --history-size: more than the recovery's
// publications, so that none has expired when the clients come back.
const histSizeFlag = "2000"

func expandHistory(names []string) []string {
	var out []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "history" {
			out = append(out, loadgen.HistoryOrder...)
			continue
		}
		out = append(out, n)
	}
	return out
}

func onlyHistory(names []string) bool {
	for _, n := range names {
		if loadgen.HistoryScenarios[n] == nil {
			return false
		}
	}
	return len(names) > 0
}

type setup struct {
	topo    string // alone, redis2
	history bool
}

func (s setup) label() string {
	if s.history {
		return s.topo + "+history"
	}
	return s.topo
}

// redisProc is a redis-server of the runner's own.
type redisProc struct {
	cmd  *exec.Cmd
	addr string // 127.0.0.1:port
	url  string
	done chan error
}

// startRedis starts a redis-server on a free port without persistence,
// with extra arguments (a cluster node's), and waits for its PONG.
func startRedis(tmp string, extra ...string) (*redisProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tmp, "redis-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir)
	cmd.Args = append(cmd.Args, extra...)
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	r := &redisProc{cmd: cmd, addr: addr, url: "redis://" + addr, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait(); logf.Close() }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("redis-server not answering on %d", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *redisProc) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// runSetup starts a set-up's processes, runs sc and stops them.
func runSetup(ctx context.Context, o options, st setup, name string, sc loadgen.HistoryScenario, p loadgen.Params, secret, tmp string, round int) *loadgen.Result {
	cl := loadgen.Cluster{Label: st.label(), History: st.history}
	var profiled chan struct{}
	if o.histProfile > 0 {
		profiled = make(chan struct{})
		cl.OnMeasure = func() {
			url := strings.TrimSuffix(cl.Nodes[0].MetricsURL, "/metrics") + fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(int(o.histProfile.Seconds()), 1))
			file := filepath.Join(o.out, fmt.Sprintf("%s-%s-r%d-cpu.pprof", name, cl.Label, round))
			go func() {
				defer close(profiled)
				if err := fetchTo(url, file); err != nil {
					fmt.Fprintln(os.Stderr, "bench: profile:", err)
				}
			}()
		}
	}
	var extra []string
	if st.history {
		extra = append(extra, "--history-size", histSizeFlag, "--history-channels", "hist.")
	}
	nodes := 1
	if st.topo == "redis2" {
		r, err := startRedis(tmp)
		if err != nil {
			return &loadgen.Result{Scenario: name, Server: cl.Label, Params: p, Error: err.Error()}
		}
		defer r.stop()
		cl.RedisPID = r.cmd.Process.Pid
		extra = append(extra, "--redis", r.url)
		nodes = 2
	}
	servers, err := startNodes(o, nodes, secret, tmp, extra...)
	if err != nil {
		return &loadgen.Result{Scenario: name, Server: cl.Label, Params: p, Error: err.Error()}
	}
	defer stopNodes(servers)
	for _, s := range servers {
		cl.Nodes = append(cl.Nodes, s.target)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	res := sc(sctx, cl, p)
	if profiled != nil && cl.OnMeasure != nil {
		select {
		case <-profiled:
		case <-time.After(o.histProfile + 10*time.Second):
		}
	}
	noteExited(servers, res)
	time.Sleep(500 * time.Millisecond)
	return res
}

// startNodes starts n gateway nodes with the extra flags; if one fails,
// those started are stopped.
func startNodes(o options, n int, secret, tmp string, extra ...string) ([]*server, error) {
	var servers []*server
	for range n {
		s, err := startServer(o, loadgen.Gateway, secret, tmp, extra...)
		if err != nil {
			stopNodes(servers)
			return nil, err
		}
		servers = append(servers, s)
	}
	return servers, nil
}

func stopNodes(servers []*server) {
	for _, s := range servers {
		s.stop()
	}
}

// noteExited sets res.Error (unless set) when a node exited during the run.
func noteExited(servers []*server, res *loadgen.Result) {
	for _, s := range servers {
		select {
		case err := <-s.done:
			s.done <- err
			if res.Error == "" {
				res.Error = fmt.Sprintf("a node exited during the run: %v", err)
			}
		default:
		}
	}
}

func runHistory(ctx context.Context, o options, names []string, secret, tmp string, rep *Report) error {
	topos := strings.Split(o.histSetups, ",")
	base := loadgen.Params{PayloadSize: o.payload, Timeout: o.timeout,
		Engine: loadgen.Config{SourceIPs: o.sourceIPs, FirstSourceIP: o.firstSourceIP, MaxInFlight: o.inFlight,
			DialRate: o.dialRate, EventLoops: o.clientLoops}}
	rep.Settings["history_subs"], rep.Settings["history_publishes"] = o.histSubs, o.histPublishes
	rep.Settings["recovery_clients"], rep.Settings["recovery_publications"] = o.recClients, o.recPublications
	rep.Settings["history_size"], rep.Settings["history_rounds"] = histSizeFlag, o.histRounds
	for _, name := range names {
		sc := loadgen.HistoryScenarios[name]
		p := base
		var setups []setup
		rounds := 1
		switch name {
		case "history-fanout":
			p.Subs, p.Publishes = o.histSubs, o.histPublishes
			for _, t := range topos {
				setups = append(setups, setup{strings.TrimSpace(t), false}, setup{strings.TrimSpace(t), true})
			}
			rounds = max(o.histRounds, 1)
		case "history-recovery":
			p.Subs, p.Publishes = o.recClients, o.recPublications
			for _, t := range topos {
				setups = append(setups, setup{strings.TrimSpace(t), true})
			}
		}
		for round := range rounds {
			for _, st := range setups {
				if ctx.Err() != nil {
					break
				}
				fmt.Printf("== %s on %s (round %d)\n", name, st.label(), round+1)
				res := runSetup(ctx, o, st, name, sc, p, secret, tmp, round+1)
				if res.Extra == nil {
					res.Extra = map[string]any{}
				}
				res.Extra["round"] = round + 1
				rep.Results = append(rep.Results, res)
				printBrief(res)
				if len(res.Extra) > 0 {
					b, _ := json.Marshal(res.Extra)
					fmt.Printf("   %s\n", b)
				}
			}
		}
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "history.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "history.md"), []byte(historyMarkdown(rep)), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", filepath.Join(o.out, "history.json"), filepath.Join(o.out, "history.md"))
	return ctx.Err()
}

func num(r *loadgen.Result, k string) float64 {
	switch v := r.Extra[k].(type) {
	case float64:
		return v
	case int:
		return float64(v)
	case int64:
		return float64(v)
	}
	return 0
}

func historyMarkdown(rep *Report) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "# History benchmark (issue 13)\n\n")
	fmt.Fprintf(&b, "Date: %s. Machine: %s CPUs, %s RAM, kernel %s, %s. Gateway %s. Load generator, nodes and Redis share the machine.\n\n",
		rep.Date, m["nproc"], m["memory"], m["kernel"], m["go"], m["gateway_version"])
	fmt.Fprintf(&b, "Settings: subscribers %v, publishes %v, recovery clients %v, publications missed %v, --history-size %v, payload %v B.\n",
		rep.Settings["history_subs"], rep.Settings["history_publishes"], rep.Settings["recovery_clients"],
		rep.Settings["recovery_publications"], rep.Settings["history_size"], rep.Settings["payload"])
	fmt.Fprintf(&b, "\n## history-fanout\n\nOne channel, subscribers spread over the nodes (Subscribe, or SubscribeFrom(ch, 0, 0) with history), one publisher on the first node, back to back. CPU = all nodes' user+system time from the first publish to the last delivery; Redis's apart.\n\n")
	fmt.Fprintf(&b, "| set-up | round | deliveries/s | delivered / expected | lost | dup | reord | refused | 503 retries | nodes' CPU s | CPU µs/delivery | Redis CPU s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		if r.Scenario != "history-fanout" {
			continue
		}
		fmt.Fprintf(&b, "| %s | %v | %.0f | %d / %d | %d | %d | %d | %v | %v | %.2f | %.2f | %.2f | %.0f | %.0f |\n", r.Server, r.Extra["round"],
			r.DeliveriesPS, r.Delivered, r.Expected, r.Lost, r.Duplicates, r.Reordered, r.Extra["refused_publishes"], r.Extra["subscribe_from_busy_retries"],
			r.CPU, r.CPUPM, num(r, "redis_cpu_seconds"), r.Latency.P50, r.Latency.P99)
	}
	fmt.Fprintf(&b, "\n## history-recovery\n\nClients subscribed with SubscribeFrom disconnect, the publications are made, then all reconnect at once (every dial in flight together) with SubscribeFrom from their last position. Per client: dial start to its SubscribedFrom (TCP, upgrade, auth and replay). CPU: all nodes over the reconnect.\n\n")
	fmt.Fprintf(&b, "| set-up | clients ok / reconnected | 503 retries | not recovered | missing | out of order | wrong offset | all done s | p50 ms | p99 ms | max ms | nodes' CPU s | CPU ms/client | CPU µs/replayed publication | Redis CPU s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		if r.Scenario != "history-recovery" {
			continue
		}
		fmt.Fprintf(&b, "| %s | %v / %d | %v | %v | %v | %v | %v | %.2f | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |\n", r.Server,
			r.Extra["clients_ok"], r.Conns, r.Extra["reconnect_busy_retries"], r.Extra["clients_not_recovered"], r.Extra["clients_missing_publications"],
			r.Extra["clients_out_of_order"], r.Extra["clients_wrong_offset"], num(r, "all_recovered_s"),
			r.Handshake.P50, r.Handshake.P99, r.Handshake.Max, r.CPU, num(r, "node_cpu_ms_per_client"),
			num(r, "node_cpu_us_per_replayed_publication"), num(r, "redis_cpu_seconds"))
	}
	fmt.Fprintf(&b, "\nThe same clients' first subscriptions (all at once too, SubscribeFrom(ch, 0, 0), nothing to replay), the point of comparison:\n\n")
	fmt.Fprintf(&b, "| set-up | all done s | p50 ms | p99 ms | nodes' CPU ms/client | 503 retries | reconnect / first: all done | p50 | CPU per client |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		f, _ := r.Extra["first_subscribe"].(map[string]any)
		if r.Scenario != "history-recovery" || f == nil {
			continue
		}
		all, _ := f["all_s"].(float64)
		cpu, _ := f["node_cpu_ms_per_client"].(float64)
		lat, _ := f["latency"].(loadgen.Latency)
		fmt.Fprintf(&b, "| %s | %.2f | %.0f | %.0f | %.2f | %v | %.1f× | %.1f× | %.1f× |\n", r.Server, all, lat.P50, lat.P99, cpu,
			r.Extra["first_subscribe_busy_retries"], num(r, "all_recovered_s")/all, r.Handshake.P50/lat.P50, num(r, "node_cpu_ms_per_client")/cpu)
	}
	for _, r := range rep.Results {
		if r.Error != "" || r.FirstError != "" || len(r.CloseCodes) > 0 {
			fmt.Fprintf(&b, "\n%s %s: error %q, first connect error %q (%d), unexpected closes %v\n", r.Scenario, r.Server,
				oneLine(r.Error), oneLine(r.FirstError), r.ConnectErrors, r.CloseCodes)
		}
	}
	return b.String()
}

// fetchTo writes the body of a GET to file.
func fetchTo(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
