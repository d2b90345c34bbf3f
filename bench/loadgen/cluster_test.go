package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
)

// startRedisNode is startNode on a shared Redis.
func startRedisNode(t *testing.T, redisURL string) Target {
	t.Helper()
	_, tg := startNodeWith(t, func(c *node.Config) { c.RedisURL = redisURL })
	return tg
}

// TestClusterFanoutSmoke runs the cluster scenario through the real engine
// against two in-process nodes on one Redis: every delivery crosses Redis
// (subscribers on the first node, publishers on the second), and the
// shard figures come from the Shards sampler.
func TestClusterFanoutSmoke(t *testing.T) {
	r := redistest.Start(t)
	cl := Cluster{Label: "redis1", Nodes: []Target{startRedisNode(t, r.URL), startRedisNode(t, r.URL)}}
	samples := 0
	cpu := func() ([]float64, error) {
		samples++
		return []float64{float64(samples), 0}, nil // shard 1 uses a second between samples
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := smallParams() // 4 channels x 5 subscribers, 3 publishers x 10 publishes
	res := ClusterFanout(ctx, cl, Shards{CPU: cpu}, p)
	checkClean(t, res, 5*30)
	if res.Conns != 20 || res.Publishes != 30 || res.Extra["refused_publishes"] != int64(0) {
		t.Fatalf("conns %d publishes %d extra %v", res.Conns, res.Publishes, res.Extra)
	}
	share, _ := res.Extra["shard_cpu_share"].([]float64)
	if samples != 2 || len(share) != 2 || share[0] != 1 || share[1] != 0 || res.Extra["redis_cpu_us_per_publish"] != 1e6/30.0 {
		t.Fatalf("samples %d, extra %v", samples, res.Extra)
	}
}
