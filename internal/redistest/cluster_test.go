package redistest

import (
	"strings"
	"testing"
	"time"
)

// TestStartClusterFailsOver: a cluster that requires a password (the
// other tests' clusters require none) starts with its replicas in sync
// (masterauth), and a replica takes over a killed master.
func TestStartClusterFailsOver(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, 3, 1, WithAuth(Auth{Password: "cluster-s3cret"}))
	if command(&Server{Addr: c.Masters[0].Addr}, "PING") != nil {
		t.Fatal("a master answers PING without AUTH")
	}
	t.Logf("cluster up in %v", time.Since(start))
	if o := c.Owner(0); o != c.Masters[0] {
		t.Fatalf("slot 0 owned by %v, want master 0", o)
	}
	if o := c.Owner(16383); o != c.Masters[2] {
		t.Fatalf("slot 16383 owned by %v, want master 2", o)
	}
	start = time.Now()
	c.Masters[1].Stop()
	waitUntil(t, "replica promoted", func() bool { return c.Owner(8000) == c.Replicas[1][0] })
	t.Logf("failover in %v", time.Since(start))
	if !strings.Contains(strings.Join(command(c.Replicas[1][0], "INFO replication"), ""), "role:master") {
		t.Fatal("replica not master")
	}
}
