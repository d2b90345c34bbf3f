package loadgen

import (
	"context"
	"fmt"
	"math"
)

// Shards is what the cluster scenario needs of the Redis behind the nodes
// besides their pids: one entry per shard (a single Redis is one shard).
type Shards struct {
	// CPU returns every shard's CPU seconds so far, in shard order. The
	// runner reads INFO cpu (microseconds, where /proc/<pid>/stat counts
	// 10 ms ticks: too coarse for a few seconds of a shard's work).
	CPU func() ([]float64, error)
}

// nodeCounters are the nodes' counters that say where a loss happened:
// publishes node B handed to Redis, publishes node A received from it,
// node A's pub/sub reconnects (Redis drops a subscriber past its
// client-output-buffer-limit for pubsub), and the messages node A dropped
// (all reasons and protocols: an event loop past its backlog drops rather
// than queue without bound).
var nodeCounters = []struct {
	key    string
	node   int // 0: the subscribers' node A, 1: the publishers' node B
	metric string
}{
	{"node_pub_redis_published", 1, "gateway_redis_published_total"},
	{"node_sub_redis_received", 0, "gateway_redis_received_total"},
	{"node_sub_pubsub_reconnects", 0, "gateway_redis_pubsub_reconnects_total"},
	{"node_sub_dropped_messages", 0, "gateway_dropped_messages_total"},
}

// readNodeCounters reads nodeCounters, each summed over its series (NaN where a node has no
// metrics URL or the metric is missing).
func readNodeCounters(nodes []Target) []float64 {
	out := make([]float64, len(nodeCounters))
	for i, c := range nodeCounters {
		out[i] = math.NaN()
		if u := nodes[c.node].MetricsURL; u != "" {
			if v, err := SumMetric(u, c.metric); err == nil {
				out[i] = v
			}
		}
	}
	return out
}

// ClusterFanout is ManyChannels across two nodes: the Channels ×
// SubsPerChannel subscribers on the first node, the Publishers on the
// second, so that every delivery crosses Redis (one Redis or the shards
// of a Redis Cluster). It reports each node's CPU and each shard's over
// the publishes (first publish to last delivery) in Extra:
// node_sub_cpu_seconds, node_pub_cpu_seconds, gateway_cpu_us_per_delivery,
// node_sub_cpu_us_per_delivery, node_pub_cpu_us_per_publish,
// shard_cpu_seconds, shard_cpu_share, redis_cpu_us_per_publish (all shards
// together) and busiest_shard_cpu_us_per_publish (the busiest shard's CPU
// over all the publishes: what bounds the publish rate when one shard is
// saturated), and the nodeCounters' increments. CPU (the result's) is
// both nodes'.
func ClusterFanout(ctx context.Context, cl Cluster, sh Shards, p Params) *Result {
	rn, err := begin(ctx, "cluster-fanout", cl.Nodes[0], p)
	rn.r.Server = cl.Label
	if err != nil {
		return rn.finish(err)
	}
	if len(cl.Nodes) < 2 {
		return rn.finish(fmt.Errorf("cluster-fanout needs two nodes, has %d", len(cl.Nodes)))
	}
	sub, pub := cl.Nodes[0], cl.Nodes[1]
	var sub0, pub0 float64
	var shard0, counters0 []float64
	var serr error
	mark := func() {
		if cl.OnMeasure != nil {
			cl.OnMeasure()
		}
		shard0, serr = sh.CPU()
		sub0, pub0 = SampleProcess(sub.PID, "").CPU, SampleProcess(pub.PID, "").CPU
		counters0 = readNodeCounters(cl.Nodes)
	}
	err = rn.channels(sub.WSURL, pub.WSURL, mark)
	subCPU, pubCPU := SampleProcess(sub.PID, "").CPU-sub0, SampleProcess(pub.PID, "").CPU-pub0
	shard1, serr1 := sh.CPU()
	counters1 := readNodeCounters(cl.Nodes)
	res := rn.finish(err)
	for i, c := range nodeCounters {
		if counters0 == nil { // the measured phase never began
			break
		}
		if d := counters1[i] - counters0[i]; !math.IsNaN(d) {
			rn.extra(c.key, d)
		}
	}
	res.CPU = subCPU + pubCPU
	res.CPUPM = 0
	if res.Delivered > 0 {
		res.CPUPM = res.CPU / (float64(res.Delivered) / 1e6)
	}
	rn.extra("nodes", len(cl.Nodes))
	rn.extra("node_sub_cpu_seconds", subCPU)
	rn.extra("node_pub_cpu_seconds", pubCPU)
	perDelivery := func(s float64) float64 { return s * 1e6 / float64(max(res.Delivered, 1)) }
	perPublish := func(s float64) float64 { return s * 1e6 / float64(max(res.Publishes, 1)) }
	rn.extra("gateway_cpu_us_per_delivery", perDelivery(res.CPU))
	rn.extra("node_sub_cpu_us_per_delivery", perDelivery(subCPU))
	rn.extra("node_pub_cpu_us_per_publish", perPublish(pubCPU))
	if serr == nil {
		serr = serr1
	}
	if serr != nil {
		rn.extra("shard_cpu_error", serr.Error())
		return res
	}
	shards, total, busiest := make([]float64, len(shard1)), 0.0, 0.0
	for i := range shard1 {
		shards[i] = shard1[i] - shard0[i]
		total += shards[i]
		busiest = max(busiest, shards[i])
	}
	share := make([]float64, len(shards))
	for i, s := range shards {
		share[i] = s / max(total, 1e-9)
	}
	rn.extra("shard_cpu_seconds", shards)
	rn.extra("shard_cpu_share", share)
	rn.extra("redis_cpu_seconds", total)
	rn.extra("redis_cpu_us_per_publish", perPublish(total))
	rn.extra("busiest_shard_cpu_us_per_publish", perPublish(busiest))
	return res
}
