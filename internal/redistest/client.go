package redistest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// NewClusterClient returns a go-redis cluster client seeded with every
// node of c, with the credentials c requires, closed when the test ends.
func (c *Cluster) NewClusterClient(t testing.TB) *redis.ClusterClient {
	a := c.Masters[0].auth
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Username: a.Username, Password: a.Password})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Holder returns the running node that holds key now, asked of each node
// directly (a node that does not serve the key's slot answers MOVED, not
// 1), or nil: a test's proof that a key lives on the shard it expects.
func (c *Cluster) Holder(t testing.TB, key string) *Server {
	t.Helper()
	for _, s := range c.nodes() {
		if s.cmd == nil {
			continue
		}
		pc := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, Username: s.auth.Username, Password: s.auth.Password})
		n, err := pc.Exists(context.Background(), key).Result()
		_ = pc.Close()
		if err == nil && n == 1 {
			return s
		}
	}
	return nil
}
