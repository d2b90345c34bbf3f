package node

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/redistest"
)

func TestParseRedisCluster(t *testing.T) {
	for _, tc := range []struct {
		in         string
		addrs      []string
		user, pass string
		wantErr    string
	}{
		{in: "127.0.0.1:7000", addrs: []string{"127.0.0.1:7000"}},
		{in: "a:1,b:2, c:3 ,", addrs: []string{"a:1", "b:2", "c:3"}},
		{in: "[::1]:7000", addrs: []string{"[::1]:7000"}},
		{in: "redis://a:1,[::1]:2", addrs: []string{"a:1", "[::1]:2"}},
		{in: "redis://gw:s3cret@a:1,b:2/", addrs: []string{"a:1", "b:2"}, user: "gw", pass: "s3cret"},
		{in: "redis://:s3cret@a:1/0", addrs: []string{"a:1"}, pass: "s3cret"},
		{in: "redis://gw@a:1", addrs: []string{"a:1"}, user: "gw"},
		{in: "redis://gw:p%40ss@a:1", addrs: []string{"a:1"}, user: "gw", pass: "p@ss"},
		{in: "", wantErr: "want host:port[,host:port...]"},
		{in: " , ", wantErr: "want host:port[,host:port...]"},
		{in: "127.0.0.1", wantErr: `seed node address "127.0.0.1": want host:port`},
		{in: ":7000", wantErr: `":7000": want host:port`},
		{in: "a:0", wantErr: "port must be 1..65535"},
		{in: "a:65536", wantErr: "port must be 1..65535"},
		{in: "a:1,b", wantErr: `"b": want host:port`},
		{in: "redis://gw:s3cret@", wantErr: `"redis://gw:xxxxx@": want host:port[,host:port...] or redis://`},
		{in: "redis://gw:s3cret@a:1,b", wantErr: `"b": want host:port`},
		{in: "redis://gw:s3cret@a:1/2", wantErr: `"redis://gw:xxxxx@a:1/2": a Redis Cluster has only database 0`},
		{in: "redis://gw:s3cret@a:1?addr=b:2", wantErr: "no query or fragment is understood"},
		{in: "rediss://gw:s3cret@a:1", wantErr: "rediss:// (TLS) is not supported here yet"},
		{in: "unix://gw:s3cret@a:1", wantErr: "want a redis:// URL"},
	} {
		o, err := ParseRedisCluster(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "--redis-cluster") ||
				strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%q: err %v, want one starting --redis-cluster, containing %q, without the password", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(o.Addrs, tc.addrs) || o.Username != tc.user || o.Password != tc.pass {
			t.Errorf("%q: got %+v %v, want %q user %q pass %q", tc.in, o, err, tc.addrs, tc.user, tc.pass)
		}
	}
}

// TestCheckRedis: at most one Redis setting, the one given well formed;
// Start refuses the same before dialing anything.
func TestCheckRedis(t *testing.T) {
	const exclusive = "--redis, --redis-sentinel and --redis-cluster are exclusive: give one"
	for _, tc := range []struct {
		cfg     Config
		wantErr string
	}{
		{Config{}, ""},
		{Config{RedisURL: "redis://127.0.0.1:1"}, ""},
		{Config{RedisSentinel: "m@127.0.0.1:2"}, ""},
		{Config{RedisCluster: "127.0.0.1:3,127.0.0.1:4"}, ""},
		{Config{RedisURL: "redis://127.0.0.1:1", RedisSentinel: "m@127.0.0.1:2"}, exclusive},
		{Config{RedisURL: "redis://127.0.0.1:1", RedisCluster: "127.0.0.1:3"}, exclusive},
		{Config{RedisSentinel: "m@127.0.0.1:2", RedisCluster: "127.0.0.1:3"}, exclusive},
		{Config{RedisCluster: "127.0.0.1"}, `--redis-cluster: seed node address "127.0.0.1": want host:port`},
		{Config{RedisSentinel: "127.0.0.1:2"}, "--redis-sentinel \"127.0.0.1:2\": want master-name@"},
	} {
		err := tc.cfg.CheckRedis()
		if got := errString(err); got != tc.wantErr && !(tc.wantErr != "" && strings.HasPrefix(got, tc.wantErr)) {
			t.Errorf("%+v: CheckRedis = %q, want %q", tc.cfg, got, tc.wantErr)
		}
		if tc.wantErr == "" {
			continue
		}
		tc.cfg.Listen, tc.cfg.NoAdmin, tc.cfg.DataDir = "127.0.0.1:0", true, t.TempDir()
		if _, err := Start(tc.cfg); errString(err) != errString(tc.cfg.CheckRedis()) {
			t.Errorf("%+v: Start = %v, want CheckRedis's error", tc.cfg, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestNodesOnRedisCluster: two nodes on a 3-master Redis Cluster share
// revocations (SPUBLISH in the revoke script, SSUBSCRIBE) and the control
// channel (a forwarded disconnect reaches the other node; the status page
// counts both nodes with PUBSUB SHARDNUMSUB).
func TestNodesOnRedisCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3, 0)
	seeds := strings.Join(cl.Addrs(), ",")
	start := func() *Node {
		n, err := Start(Config{Listen: "127.0.0.1:0", NoAdmin: true, DataDir: t.TempDir(), RedisCluster: seeds})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
		return n
	}
	a, b := start(), start()
	ctx := context.Background()
	waitFor(t, "both control subscriptions", func() bool { return a.controlLive.Load() && b.controlLive.Load() })

	if err := a.Revoker.RevokeSubject(ctx, "alice", time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation on node b", func() bool { return b.Revoker.Set().Len() == 1 })

	got, err := a.forwardDisconnect(ctx, gateway.Disconnect{Subject: "alice", Code: 4000, Reason: "bye"})
	if err != nil || got != 1 {
		t.Fatalf("forwardDisconnect = %d, %v; want the other node reached", got, err)
	}
	if st := a.clusterStatus(ctx); st.Nodes != 2 || st.Redis != seeds || st.NodesErr != "" {
		t.Fatalf("clusterStatus = %+v, want 2 nodes on %s", st, seeds)
	}
}

// waitFor polls cond every 10 ms for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
