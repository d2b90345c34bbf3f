package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/wsgateway/gateway/bench/loadgen"
)

type row struct {
	label  string
	get    func(r *loadgen.Result) float64
	unit   string // printf verb and unit
	always bool   // print even when zero for every server
	deliv  bool   // print (even zero) when the scenario has deliveries
}

const mib = 1 << 20

var rows = []row{
	{"connections", func(r *loadgen.Result) float64 { return float64(r.Conns) }, "%.0f", true, false},
	{"connect errors", func(r *loadgen.Result) float64 { return float64(r.ConnectErrors) }, "%.0f", true, false},
	{"handshakes/s", func(r *loadgen.Result) float64 { return r.HandshakesPerS }, "%.0f", false, false},
	{"handshake p50 (ms)", func(r *loadgen.Result) float64 { return r.Handshake.P50 }, "%.2f", false, false},
	{"handshake p99 (ms)", func(r *loadgen.Result) float64 { return r.Handshake.P99 }, "%.2f", false, false},
	{"RSS empty (MiB)", func(r *loadgen.Result) float64 { return float64(r.Empty.RSS) / mib }, "%.1f", false, false},
	{"RSS after (MiB)", func(r *loadgen.Result) float64 { return float64(r.After.RSS) / mib }, "%.1f", false, false},
	{"RSS per conn (KiB)", func(r *loadgen.Result) float64 { return r.RSSPC / 1024 }, "%.2f", false, false},
	{"Go heap after (MiB)", func(r *loadgen.Result) float64 { return float64(max(r.After.Heap, 0)) / mib }, "%.1f", false, false},
	{"Go heap per conn (KiB)", func(r *loadgen.Result) float64 { return r.HeapPC / 1024 }, "%.2f", false, false},
	{"publishes", func(r *loadgen.Result) float64 { return float64(r.Publishes) }, "%.0f", false, false},
	{"offered publishes/s", func(r *loadgen.Result) float64 { return r.OfferedPerS }, "%.0f", false, false},
	{"expected deliveries", func(r *loadgen.Result) float64 { return float64(r.Expected) }, "%.0f", false, false},
	{"delivered", func(r *loadgen.Result) float64 { return float64(r.Delivered) }, "%.0f", false, false},
	{"lost", func(r *loadgen.Result) float64 { return float64(r.Lost) }, "%.0f", false, true},
	{"duplicated", func(r *loadgen.Result) float64 { return float64(r.Duplicates) }, "%.0f", false, true},
	{"reordered", func(r *loadgen.Result) float64 { return float64(r.Reordered) }, "%.0f", false, true},
	{"deliveries/s", func(r *loadgen.Result) float64 { return r.DeliveriesPS }, "%.0f", false, false},
	{"latency p50 (ms)", func(r *loadgen.Result) float64 { return r.Latency.P50 }, "%.2f", false, false},
	{"latency p99 (ms)", func(r *loadgen.Result) float64 { return r.Latency.P99 }, "%.2f", false, false},
	{"latency p99.9 (ms)", func(r *loadgen.Result) float64 { return r.Latency.P999 }, "%.2f", false, false},
	{"latency max (ms)", func(r *loadgen.Result) float64 { return r.Latency.Max }, "%.2f", false, false},
	{"ping RTT p50 (ms)", func(r *loadgen.Result) float64 { return r.PingRTT.P50 }, "%.2f", false, false},
	{"ping RTT p99 (ms)", func(r *loadgen.Result) float64 { return r.PingRTT.P99 }, "%.2f", false, false},
	{"ping RTT p99.9 (ms)", func(r *loadgen.Result) float64 { return r.PingRTT.P999 }, "%.2f", false, false},
	{"pings/s", func(r *loadgen.Result) float64 { return r.PingsPerS }, "%.0f", false, false},
	{"server CPU (s)", func(r *loadgen.Result) float64 { return r.CPU }, "%.2f", false, false},
	{"CPU s per M deliveries", func(r *loadgen.Result) float64 { return r.CPUPM }, "%.2f", false, false},
	{"handshakes per server CPU s", handshakesPerCPU, "%.0f", false, false},
}

// handshakesPerCPU is the handshake scenario's server efficiency: with the
// load generator on the same two cores, the wall-clock rate is bounded by
// the client, while the server's CPU per handshake is not.
func handshakesPerCPU(r *loadgen.Result) float64 {
	if r.Scenario != "handshake" || r.CPU <= 0 {
		return 0
	}
	return float64(r.Conns) / r.CPU
}

func markdown(rep *Report) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "# Gateway vs baseline benchmark\n\n")
	fmt.Fprintf(&b, "Date: %s. Machine: %s CPUs, %s RAM, kernel %s, %s, open files %s (hard %s), somaxconn %s, ports %s. Gateway %s.\n\n",
		rep.Date, m["nproc"], m["memory"], m["kernel"], m["go"], m["ulimit_n"], m["ulimit_Hn"], m["somaxconn"], m["port_range"], m["gateway_version"])
	fmt.Fprintf(&b, "Load generator, gateway and baseline share the machine (loopback). Ratio = gateway / baseline (lower is better for memory, latency and CPU; higher for rates). ")
	fmt.Fprintf(&b, "RSS per conn = (RSS with the connections open − RSS of the idle process) / connections; it excludes kernel socket memory (about 9 KiB per loopback pair). CPU is the server's user+system time over the scenario.\n\n")
	keys := make([]string, 0, len(rep.Settings))
	for k := range rep.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var set []string
	for _, k := range keys {
		set = append(set, fmt.Sprintf("%s=%v", k, rep.Settings[k]))
	}
	fmt.Fprintf(&b, "Settings: %s.\n", strings.Join(set, ", "))

	byScenario := map[string]map[string]*loadgen.Result{}
	var order []string
	for _, r := range rep.Results {
		if byScenario[r.Scenario] == nil {
			byScenario[r.Scenario] = map[string]*loadgen.Result{}
			order = append(order, r.Scenario)
		}
		byScenario[r.Scenario][r.Server] = r
	}
	for _, name := range order {
		g, bl := byScenario[name][loadgen.Gateway], byScenario[name][loadgen.Baseline]
		hasDeliveries := g != nil && g.Expected > 0 || bl != nil && bl.Expected > 0
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", name, describe[name])
		fmt.Fprintf(&b, "| figure | gateway | baseline | gateway/baseline |\n|---|---:|---:|---:|\n")
		for _, rw := range rows {
			gv, bv := val(g, rw), val(bl, rw)
			if rw.deliv && !hasDeliveries {
				continue
			}
			if !rw.always && !rw.deliv && (gv == nil || *gv == 0) && (bv == nil || *bv == 0) {
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", rw.label, fmtv(gv, rw.unit), fmtv(bv, rw.unit), ratio(gv, bv))
		}
		for _, r := range []*loadgen.Result{g, bl} {
			if r == nil {
				continue
			}
			if r.Error != "" {
				fmt.Fprintf(&b, "\n**%s error:** %s\n", r.Server, oneLine(r.Error))
			}
			if r.FirstError != "" {
				fmt.Fprintf(&b, "\n%s: first connect error: %s\n", r.Server, oneLine(r.FirstError))
			}
			if len(r.CloseCodes) > 0 {
				fmt.Fprintf(&b, "\n%s: unexpected close codes: %v\n", r.Server, r.CloseCodes)
			}
			if len(r.Extra) > 0 {
				ks := make([]string, 0, len(r.Extra))
				for k := range r.Extra {
					ks = append(ks, k)
				}
				sort.Strings(ks)
				var parts []string
				for _, k := range ks {
					v := r.Extra[k]
					if l, ok := v.(loadgen.Latency); ok {
						v = fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", l.P50, l.P99)
					} else if f, ok := v.(float64); ok {
						v = fmt.Sprintf("%.0f", f)
					}
					parts = append(parts, fmt.Sprintf("%s %v", k, v))
				}
				fmt.Fprintf(&b, "\n%s: %s.\n", r.Server, strings.Join(parts, "; "))
			}
		}
	}
	return b.String()
}

var describe = map[string]string{
	"idle":          "Connect, authenticate (hello, auth, Pong), hold with the 25 s pinger running, then one Ping per connection must be answered (all sent at once: the RTT is that of a burst).",
	"handshake":     "TCP connect + upgrade + hello + auth until Pong, as fast as the in-flight bound allows; handshakes/s = completed / elapsed.",
	"ping":          "Rounds of one protocol Ping per connection; a round starts when every Pong of the previous one is back.",
	"fanout":        "One channel, every subscriber confirmed (Subscribed); one publisher connection publishes back to back. deliveries/s = deliveries / (first publish → last delivery). Latency here is mostly queueing: the publishes go out in milliseconds and wait for the fan-out before them.",
	"fanout-paced":  "The same fan-out at a steady publish rate (-paced-rate per second): publish-to-delivery latency when the server keeps up. On loopback each delivery is a write(2) whose cost includes the receiving side's TCP processing, on the same 2 cores as the load generator.",
	"channels":      "Each channel has the same number of subscribers; each publisher publishes round robin over the channels, all publishers at once.",
	"churn":         "Stable subscribers and one publisher (fixed rate) on a channel while new connections (auth + subscribe) arrive at the churn rate and close cleanly after their lifetime. Lost/dup/reorder: the stable subscribers (dup/reorder also for the churned ones).",
	"wsify-fanout":  "The fan-out through the wsify adapter: members join a channel (probes until every member receives), one WebSocket member broadcasts back to back. Gateway only: the baseline does not speak wsify.",
	"kosync-fanout": "The fan-out through KOsync: sockets of one user subscribed to user.documents; sequential PUT /syncs/progress (each a durable bbolt commit). Gateway only.",
}

func val(r *loadgen.Result, rw row) *float64 {
	if r == nil {
		return nil
	}
	v := rw.get(r)
	return &v
}

func fmtv(v *float64, unit string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(unit, *v)
}

func ratio(g, b *float64) string {
	if g == nil || b == nil || *b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *g / *b)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
