package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestRedisSetupCluster forms the bench's 3-master cluster from real
// redis-server processes: the slots are split over the three, a sharded
// publish on each master's slot range is counted on that master alone,
// and every master reports its CPU.
func TestRedisSetupCluster(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not on PATH")
		}
		t.Skip("redis-server not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := startRedisSetup(ctx, t.TempDir(), "cluster3")
	if err != nil {
		t.Fatal(err)
	}
	defer st.stop()
	if len(st.procs) != 3 || st.flag[0] != "--redis-cluster" {
		t.Fatalf("%d processes, flag %v", len(st.procs), st.flag)
	}
	if _, err := st.resetStats(); err != nil {
		t.Fatal(err)
	}
	// "a", "b" and "c" hash to slots 15495, 3300 and 7365: the third,
	// first and second master's ranges (0-5460, 5461-10921, 10922-16383).
	for i, ch := range []string{"b", "c", "a"} {
		if err := st.clients[i].SPublish(ctx, ch, "x").Err(); err != nil {
			t.Fatalf("SPUBLISH %s on master %d: %v", ch, i+1, err)
		}
	}
	if err := st.clients[0].SPublish(ctx, "a", "x").Err(); err == nil {
		t.Fatal("SPUBLISH a on the first master: no MOVED")
	}
	pubs, err := st.publishes()
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := st.cpu()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if pubs[i] != 1 || cpu[i] <= 0 {
			t.Fatalf("publishes %v, CPU %v", pubs, cpu)
		}
	}
	if _, _, err := parseSetup("cluster0"); err == nil {
		t.Fatal("cluster0 accepted")
	}
}
