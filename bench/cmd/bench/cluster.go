package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/bench/loadgen"
)

// The cluster scenario (issue 15, Scale): the same cross-node fan-out over
// many channels on two gateway nodes, once on one redis-server (--redis)
// and once on a Redis Cluster of N masters (--redis-cluster), with each
// shard's CPU per publish. It writes cluster.json and cluster.md.

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// redisSetup is the Redis behind the two nodes: one redis-server, or the
// masters of a cluster (no replicas: the bench measures load, not faults).
type redisSetup struct {
	label   string
	procs   []*redisProc
	clients []*redis.Client // one per process, for INFO and PUBSUB
	flag    []string        // the nodes' --redis or --redis-cluster
}

// parseSetup reads a -cluster-setups entry: redis1, or clusterN (N
// masters).
func parseSetup(name string) (shards int, cluster bool, err error) {
	switch {
	case name == "redis1":
		return 1, false, nil
	case strings.HasPrefix(name, "cluster"):
		n, err := strconv.Atoi(strings.TrimPrefix(name, "cluster"))
		if err != nil || n < 1 {
			return 0, false, fmt.Errorf("set-up %q: want clusterN with N ≥ 1", name)
		}
		return n, true, nil
	}
	return 0, false, fmt.Errorf("unknown set-up %q (redis1, clusterN)", name)
}

func startRedisSetup(ctx context.Context, tmp, name string) (*redisSetup, error) {
	shards, cluster, err := parseSetup(name)
	if err != nil {
		return nil, err
	}
	st := &redisSetup{label: name}
	var args []string
	if cluster {
		args = []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"}
	}
	for range shards {
		r, err := startRedis(tmp, args...)
		if err != nil {
			st.stop()
			return nil, err
		}
		st.procs = append(st.procs, r)
		st.clients = append(st.clients, redis.NewClient(&redis.Options{Addr: r.addr}))
	}
	if !cluster {
		st.flag = []string{"--redis", st.procs[0].url}
		return st, nil
	}
	if err := st.formCluster(ctx); err != nil {
		st.stop()
		return nil, err
	}
	addrs := make([]string, len(st.procs))
	for i, r := range st.procs {
		addrs[i] = r.addr
	}
	st.flag = []string{"--redis-cluster", strings.Join(addrs, ",")}
	return st, nil
}

// formCluster gives master i the i-th equal range of the hash slots,
// introduces every master to the first and waits until every one reports
// cluster_state:ok (all slots served, as each sees it).
func (st *redisSetup) formCluster(ctx context.Context) error {
	n := len(st.procs)
	for i, c := range st.clients {
		lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE on %s: %w", st.procs[i].addr, err)
		}
	}
	for _, r := range st.procs[1:] {
		host, port, _ := strings.Cut(r.addr, ":")
		if err := st.clients[0].Do(ctx, "CLUSTER", "MEET", host, port).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s: %w", r.addr, err)
		}
	}
	want := fmt.Sprintf("cluster_known_nodes:%d", n)
	for deadline := time.Now().Add(30 * time.Second); ; {
		ok := true
		for _, c := range st.clients {
			info, err := c.ClusterInfo(ctx).Result()
			ok = ok && err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, want)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster of %d masters is not ok after 30 s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (st *redisSetup) stop() {
	for _, c := range st.clients {
		_ = c.Close()
	}
	for _, r := range st.procs {
		r.stop()
	}
}

// cpu is each process's used_cpu_sys + used_cpu_user (INFO cpu).
func (st *redisSetup) cpu() ([]float64, error) {
	out := make([]float64, len(st.clients))
	for i, c := range st.clients {
		f, err := infoFields(c, "cpu")
		if err != nil {
			return nil, err
		}
		sys, err1 := strconv.ParseFloat(f["used_cpu_sys"], 64)
		usr, err2 := strconv.ParseFloat(f["used_cpu_user"], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("INFO cpu on %s: no used_cpu_sys/used_cpu_user", st.procs[i].addr)
		}
		out[i] = sys + usr
	}
	return out, nil
}

// infoFields is one INFO section as name → value.
func infoFields(c *redis.Client, section string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	f := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	return f, nil
}

// resetStats zeroes every shard's command statistics (CONFIG RESETSTAT)
// and returns how many pub/sub channels (classic and sharded) each has
// subscribers on.
func (st *redisSetup) resetStats() ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := make([]int, len(st.clients))
	for i, c := range st.clients {
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			return nil, err
		}
		classic, err := c.PubSubChannels(ctx, "*").Result()
		if err != nil {
			return nil, err
		}
		sharded, err := c.PubSubShardChannels(ctx, "*").Result()
		if err != nil {
			return nil, err
		}
		out[i] = len(classic) + len(sharded)
	}
	return out, nil
}

// publishes is each shard's PUBLISH + SPUBLISH calls since resetStats.
func (st *redisSetup) publishes() ([]int64, error) {
	out := make([]int64, len(st.clients))
	for i, c := range st.clients {
		f, err := infoFields(c, "commandstats")
		if err != nil {
			return nil, err
		}
		for _, cmd := range []string{"cmdstat_publish", "cmdstat_spublish"} {
			for kv := range strings.SplitSeq(f[cmd], ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					out[i] += n
				}
			}
		}
	}
	return out, nil
}

// runClusterSetup runs the scenario once on fresh processes: the Redis of
// the set-up and two gateway nodes on it.
func runClusterSetup(ctx context.Context, o options, setupName string, p loadgen.Params, secret, tmp string) *loadgen.Result {
	fail := func(err error) *loadgen.Result {
		return &loadgen.Result{Scenario: "cluster-fanout", Server: setupName, Params: p, Error: err.Error(), Extra: map[string]any{}}
	}
	st, err := startRedisSetup(ctx, tmp, setupName)
	if err != nil {
		return fail(err)
	}
	defer st.stop()
	servers, err := startNodes(o, 2, secret, tmp, st.flag...)
	if err != nil {
		return fail(err)
	}
	defer stopNodes(servers)
	cl := loadgen.Cluster{Label: setupName}
	for _, s := range servers {
		cl.Nodes = append(cl.Nodes, s.target)
	}
	var channels []int
	var resetErr error
	cl.OnMeasure = func() { channels, resetErr = st.resetStats() }
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	res := loadgen.ClusterFanout(sctx, cl, loadgen.Shards{CPU: st.cpu}, p)
	pubs, pubErr := st.publishes()
	if res.Extra == nil {
		res.Extra = map[string]any{}
	}
	res.Extra["shards"] = len(st.procs)
	if resetErr == nil && pubErr == nil {
		res.Extra["shard_channels"], res.Extra["shard_publishes"] = channels, pubs
	} else {
		res.Extra["shard_stats_error"] = fmt.Sprint(resetErr, pubErr)
	}
	noteExited(servers, res)
	time.Sleep(500 * time.Millisecond)
	return res
}

func runCluster(ctx context.Context, o options, secret, tmp string, rep *Report) error {
	b2b := loadgen.Params{PayloadSize: o.payload, Timeout: o.timeout, Channels: o.clChannels,
		SubsPerChannel: o.clSubsPerChannel, Publishers: o.clPublishers, Publishes: o.clPublishes,
		Engine: loadgen.Config{SourceIPs: o.sourceIPs, FirstSourceIP: o.firstSourceIP, MaxInFlight: o.inFlight,
			DialRate: o.dialRate, EventLoops: o.clientLoops}}
	modes := []loadgen.Params{b2b}
	if o.clPacedRate > 0 {
		paced := b2b
		paced.Publishes, paced.PublishRate = o.clPacedPublishes, o.clPacedRate
		modes = append(modes, paced)
	}
	for k, v := range map[string]any{"cluster_channels": o.clChannels, "cluster_subs_per_channel": o.clSubsPerChannel,
		"cluster_publishers": o.clPublishers, "cluster_publishes_per_publisher": o.clPublishes,
		"cluster_paced_publishes_per_publisher": o.clPacedPublishes, "cluster_paced_rate": o.clPacedRate,
		"cluster_rounds": o.clRounds, "cluster_setups": o.clSetups} {
		rep.Settings[k] = v
	}
	for round := range max(o.clRounds, 1) {
		for _, name := range strings.Split(o.clSetups, ",") {
			for _, p := range modes {
				name = strings.TrimSpace(name)
				if ctx.Err() != nil {
					break
				}
				fmt.Printf("== cluster-fanout on %s, %s (round %d)\n", name, modeLabel(p), round+1)
				res := runClusterSetup(ctx, o, name, p, secret, tmp)
				res.Extra["round"], res.Extra["mode"] = round+1, modeLabel(p)
				rep.Results = append(rep.Results, res)
				printBrief(res)
				b, _ := json.Marshal(res.Extra)
				fmt.Printf("   %s\n", b)
			}
		}
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "cluster.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "cluster.md"), []byte(clusterMarkdown(rep)), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", filepath.Join(o.out, "cluster.json"), filepath.Join(o.out, "cluster.md"))
	return ctx.Err()
}

// modeLabel names a run's publishing: back to back, or paced at a rate
// per publisher.
func modeLabel(p loadgen.Params) string {
	if p.PublishRate > 0 {
		return fmt.Sprintf("paced %g/s per publisher", p.PublishRate)
	}
	return "back to back"
}

// carriedPublishesPS is publishes over the time from the first publish to
// the last delivery (the time deliveries/s is taken over).
func carriedPublishesPS(r *loadgen.Result) float64 {
	if r.Delivered == 0 || r.DeliveriesPS == 0 {
		return 0
	}
	return float64(r.Publishes) / (float64(r.Delivered) / r.DeliveriesPS)
}

func floats(r *loadgen.Result, k string) []float64 {
	v, _ := r.Extra[k].([]float64)
	return v
}

func clusterMarkdown(rep *Report) string {
	var b strings.Builder
	m, s := rep.Machine, rep.Settings
	fmt.Fprintf(&b, "# Cluster benchmark (issue 15, Scale)\n\n")
	fmt.Fprintf(&b, "Date: %s. Machine: %s CPUs, %s RAM, kernel %s, %s. Gateway %s. Load generator, both nodes and every redis-server share the machine.\n\n",
		rep.Date, m["nproc"], m["memory"], m["kernel"], m["go"], m["gateway_version"])
	fmt.Fprintf(&b, "Two gateway nodes; %v channels × %v subscribers on node A, %v publishers on node B, round robin over the channels, payload %v B: every delivery crosses Redis. Back to back: %v publishes per publisher; paced: %v per publisher at %v/s each. Set-ups: `redis1` (one redis-server, `--redis`) and `clusterN` (N masters, slots split evenly, no replicas, `--redis-cluster`). Fresh processes for every run.\n\n",
		s["cluster_channels"], s["cluster_subs_per_channel"], s["cluster_publishers"], s["payload"], s["cluster_publishes_per_publisher"],
		s["cluster_paced_publishes_per_publisher"], s["cluster_paced_rate"])
	fmt.Fprintf(&b, "CPU is taken from the first publish to the last delivery: nodes from /proc/<pid>/stat, Redis from INFO cpu (used_cpu_sys + used_cpu_user). publishes/s = publishes over that time; busiest shard = the busiest shard's CPU over all publishes.\n\n")
	fmt.Fprintf(&b, "| set-up | publishing | round | deliveries/s | publishes/s | offered publishes/s | delivered / expected | lost | dup | reord | refused | p50 ms | p99 ms | gateway CPU µs/delivery | node A µs/delivery | node B µs/publish | Redis CPU µs/publish (all shards) | busiest shard µs/publish |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		if r.Error != "" && r.Delivered == 0 {
			continue // in the errors below
		}
		fmt.Fprintf(&b, "| %s | %v | %v | %.0f | %.0f | %.0f | %d / %d | %d | %d | %d | %v | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", r.Server, r.Extra["mode"], r.Extra["round"],
			r.DeliveriesPS, carriedPublishesPS(r), r.OfferedPerS, r.Delivered, r.Expected, r.Lost, r.Duplicates, r.Reordered, r.Extra["refused_publishes"],
			r.Latency.P50, r.Latency.P99, num(r, "gateway_cpu_us_per_delivery"), num(r, "node_sub_cpu_us_per_delivery"),
			num(r, "node_pub_cpu_us_per_publish"), num(r, "redis_cpu_us_per_publish"), num(r, "busiest_shard_cpu_us_per_publish"))
	}
	fmt.Fprintf(&b, "\n## Per shard\n\nchannels: pub/sub channels (classic and sharded) with a subscriber on the shard; publishes: its PUBLISH + SPUBLISH calls (INFO commandstats).\n\n")
	fmt.Fprintf(&b, "| set-up | publishing | round | shard | channels | publishes (share) | CPU s | CPU share | CPU µs per publish it served |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		cpu, share := floats(r, "shard_cpu_seconds"), floats(r, "shard_cpu_share")
		chans, _ := r.Extra["shard_channels"].([]int)
		pubs, _ := r.Extra["shard_publishes"].([]int64)
		var total int64
		for _, n := range pubs {
			total += n
		}
		for i := range cpu {
			var ch int
			var pb int64
			if i < len(chans) && i < len(pubs) {
				ch, pb = chans[i], pubs[i]
			}
			fmt.Fprintf(&b, "| %s | %v | %v | %d | %d | %d (%.0f%%) | %.3f | %.0f%% | %.2f |\n", r.Server, r.Extra["mode"], r.Extra["round"], i+1, ch, pb,
				100*float64(pb)/float64(max(total, 1)), cpu[i], 100*share[i], cpu[i]*1e6/float64(max(pb, 1)))
		}
	}
	fmt.Fprintf(&b, "\n## Through Redis\n\nThe nodes' counters over the measured phase: publishes node B handed to Redis (`gateway_redis_published_total`), publishes node A received from it (`gateway_redis_received_total`; each is delivered to its channel's subscribers), node A's pub/sub reconnects (Redis closes a subscriber that passes its `client-output-buffer-limit pubsub`; what was sent meanwhile is lost) and the messages node A dropped (`gateway_dropped_messages_total`, all series: an event loop past its backlog drops deliveries rather than queue without bound).\n\n")
	fmt.Fprintf(&b, "| set-up | publishing | round | publishes | B → Redis | Redis → A | A's pub/sub reconnects | A dropped | lost deliveries |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		if r.Error != "" && r.Delivered == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s | %v | %v | %d | %v | %v | %v | %v | %d |\n", r.Server, r.Extra["mode"], r.Extra["round"], r.Publishes,
			r.Extra["node_pub_redis_published"], r.Extra["node_sub_redis_received"], r.Extra["node_sub_pubsub_reconnects"],
			r.Extra["node_sub_dropped_messages"], r.Lost)
	}
	fmt.Fprintf(&b, "\n## Ratios, cluster / one Redis (same round, same publishing)\n\n| round | publishing | set-up | deliveries/s | publishes/s | gateway CPU per delivery | Redis CPU per publish (all shards) | busiest shard's CPU per publish |\n|---:|---|---|---:|---:|---:|---:|---:|\n")
	for _, c := range rep.Results {
		if c.Server == "redis1" || c.Error != "" {
			continue
		}
		for _, one := range rep.Results {
			if one.Server != "redis1" || one.Extra["round"] != c.Extra["round"] || one.Extra["mode"] != c.Extra["mode"] || one.Error != "" {
				continue
			}
			ratio := func(a, b float64) float64 { return a / max(b, 1e-12) }
			fmt.Fprintf(&b, "| %v | %v | %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", c.Extra["round"], c.Extra["mode"], c.Server,
				ratio(c.DeliveriesPS, one.DeliveriesPS), ratio(carriedPublishesPS(c), carriedPublishesPS(one)),
				ratio(num(c, "gateway_cpu_us_per_delivery"), num(one, "gateway_cpu_us_per_delivery")),
				ratio(num(c, "redis_cpu_us_per_publish"), num(one, "redis_cpu_us_per_publish")),
				ratio(num(c, "busiest_shard_cpu_us_per_publish"), num(one, "busiest_shard_cpu_us_per_publish")))
		}
	}
	for _, r := range rep.Results {
		if r.Error != "" || r.FirstError != "" || len(r.CloseCodes) > 0 || r.Extra["shard_cpu_error"] != nil || r.Extra["shard_stats_error"] != nil {
			fmt.Fprintf(&b, "\n%s, %v, round %v: error %q, first connect error %q (%d), unexpected closes %v, shard CPU error %v, shard stats error %v\n", r.Server, r.Extra["mode"], r.Extra["round"],
				oneLine(r.Error), oneLine(r.FirstError), r.ConnectErrors, r.CloseCodes, r.Extra["shard_cpu_error"], r.Extra["shard_stats_error"])
		}
	}
	return b.String()
}
