package test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

// TestProcessSentinelAuth: two `gateway serve --redis-sentinel` processes
// on a master that requires an ACL user (its replica authenticates with
// masteruser/masterauth) and a Sentinel that requires its own password.
// Node A has the URL, the master's password and database 3 included, from
// GATEWAY_REDIS_SENTINEL and the Sentinel's password from
// GATEWAY_REDIS_SENTINEL_PASSWORD; node B has the URL without password on
// the command line and both passwords in files. A publish on A reaches a
// subscriber on B, the nodes' keys are in database 3, and neither log
// holds a password. A wrong Sentinel password, and a wrong master
// password, each make a node exit 1 at once, saying which, without it.
func TestProcessSentinelAuth(t *testing.T) {
	t.Parallel()
	const user, password, sentinelPassword = "gateway", "master-s3cret", "sentinel-s3cret"
	auth := redistest.Auth{Username: user, Password: password}
	master := redistest.StartLocal(t, redistest.WithAuth(auth))
	master.StartReplica(t)
	sn := redistest.StartSentinel(t, "m", master, redistest.WithAuth(redistest.Auth{Password: sentinelPassword}))
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := "GATEWAY_SECRET=" + strings.Repeat("sentinel-auth-test-secret-", 2)
	a := e2eServe(t, e2eEnv(secret, "GATEWAY_REDIS_SENTINEL=redis://"+user+":"+password+"@"+sn.Addr+"/m/3",
		"GATEWAY_REDIS_SENTINEL_PASSWORD="+sentinelPassword), "--data-dir", t.TempDir())
	b := e2eServe(t, e2eEnv(secret), "--data-dir", t.TempDir(), "--redis-sentinel", "redis://"+user+"@"+sn.Addr+"/m/3",
		"--redis-password-file", file("master", password), "--redis-sentinel-password-file", file("sentinel", sentinelPassword))
	e2eFanOutAcross(t, e2eEnv(secret), a, b)

	for db, want := range map[int]bool{0: false, 3: true} {
		c := redis.NewClient(&redis.Options{Addr: master.Addr, Username: user, Password: password, DB: db})
		n, err := c.DBSize(context.Background()).Result()
		_ = c.Close()
		if err != nil || (n > 0) != want {
			t.Errorf("database %d holds %d keys (%v), want some: %v", db, n, err, want)
		}
	}
	for name, p := range map[string]*e2eProc{"A": a, "B": b} {
		if log := p.stderr.String(); strings.Contains(log, "s3cret") || !strings.Contains(log, "gateway listening") {
			t.Errorf("node %s's log holds a password, or not its start:\n%s", name, log)
		}
	}

	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"GATEWAY_REDIS_SENTINEL_PASSWORD=wrong-s3cret", "GATEWAY_REDIS_PASSWORD=" + password},
			`gateway: --redis-sentinel: Redis refused the node's credentials (master: user "gateway", password from GATEWAY_REDIS_PASSWORD; ` +
				`Sentinels: user "default", password from GATEWAY_REDIS_SENTINEL_PASSWORD): ` +
				"redis: all sentinels specified in configuration are unreachable: WRONGPASS invalid username-password pair or user is disabled.\n"},
		{[]string{"GATEWAY_REDIS_SENTINEL_PASSWORD=" + sentinelPassword, "GATEWAY_REDIS_PASSWORD=wrong-s3cret"},
			`gateway: --redis-sentinel: Redis refused the node's credentials (master: user "gateway", password from GATEWAY_REDIS_PASSWORD; ` +
				`Sentinels: user "default", password from GATEWAY_REDIS_SENTINEL_PASSWORD): ` +
				"WRONGPASS invalid username-password pair or user is disabled.\n"},
	} {
		addrs := e2eFreeAddrs(t, 3)
		_, stderr, code := e2eRun(t, e2eEnv(append(tc.env, secret)...), "serve", "--data-dir", t.TempDir(),
			"--listen", addrs[0], "--admin-listen", addrs[1], "--wsify-listen", addrs[2],
			"--redis-sentinel", "redis://"+user+"@"+sn.Addr+"/m/3")
		if code != 1 || !strings.HasSuffix(stderr, tc.want) || strings.Contains(stderr, "s3cret") || strings.Contains(stderr, "gateway listening") {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant exit 1 and stderr ending %q", tc.env, code, stderr, tc.want)
		}
	}
}
