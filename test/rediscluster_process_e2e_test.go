package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
	"github.com/wsgateway/gateway/packet"
)

// TestProcessRedisCluster: two `gateway serve --redis-cluster` processes
// on a 3-master Redis Cluster that requires an ACL user, each seeded with
// one master only (go-redis learns the others). Node A has the whole URL,
// password included, from GATEWAY_REDIS_CLUSTER (nothing on its command
// line); node B has the user on the command line and the password in
// --redis-password-file. A publish on A reaches a subscriber on B (sharded
// pub/sub: B's SSUBSCRIBE connections authenticate too); a subject revoked
// through A closes its session on B (the revoke script SPUBLISHes), and the
// revocation is stored under its cluster name on the master of the
// revocation channel's slot. Neither node's log holds the password; a
// node given a wrong one exits 1 at once, saying so, without it.
func TestProcessRedisCluster(t *testing.T) {
	t.Parallel()
	const user, password = "gateway", "cluster-s3cret"
	cl := redistest.StartCluster(t, 3, 0, redistest.WithAuth(redistest.Auth{Username: user, Password: password}))
	secret := "GATEWAY_SECRET=" + strings.Repeat("cluster-auth-test-secret-", 2)
	pwFile := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := e2eServe(t, e2eEnv(secret, "GATEWAY_REDIS_CLUSTER=redis://"+user+":"+password+"@"+cl.Masters[0].Addr), "--data-dir", t.TempDir())
	b := e2eServe(t, e2eEnv(secret), "--data-dir", t.TempDir(),
		"--redis-cluster", cl.Masters[2].Addr, "--redis-username", user, "--redis-password-file", pwFile)
	env := e2eEnv(secret)
	alice := e2eFanOutAcross(t, env, a, b)

	stdout, stderr, code := e2eRun(t, env, "key", "revoke-subject", "--admin", a.admin, "alice")
	if code != 0 || !strings.Contains(stdout, `"revoked":true`) {
		t.Fatalf("key revoke-subject: exit %d: %q %s", code, stdout, stderr)
	}
	expectClose(t, alice, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	key := "gateway:revoked:{gateway:revocations}:sub:alice"
	if h, want := cl.Holder(t, key), cl.Owner(slot.Of("gateway:revocations")); h == nil || h != want {
		t.Fatalf("%s held by %v, want %v", key, h, want)
	}
	for name, p := range map[string]*e2eProc{"A": a, "B": b} {
		if log := p.stderr.String(); strings.Contains(log, password) || !strings.Contains(log, "gateway listening") {
			t.Errorf("node %s's log holds the password, or not its start:\n%s", name, log)
		}
	}

	// A wrong password: exit 1 before listening, naming where it came from.
	addrs := e2eFreeAddrs(t, 3)
	_, stderr, code = e2eRun(t, e2eEnv(secret, "GATEWAY_REDIS_PASSWORD=wrong-s3cret"), "serve", "--data-dir", t.TempDir(),
		"--listen", addrs[0], "--admin-listen", addrs[1], "--wsify-listen", addrs[2],
		"--redis-cluster", "redis://"+user+"@"+cl.Masters[1].Addr)
	const want = `gateway: --redis-cluster: Redis refused the node's credentials (user "gateway", password from GATEWAY_REDIS_PASSWORD): ` +
		"WRONGPASS invalid username-password pair or user is disabled.\n"
	if code != 1 || !strings.HasSuffix(stderr, want) || strings.Contains(stderr, "s3cret") || strings.Contains(stderr, "gateway listening") {
		t.Fatalf("wrong password: exit %d, stderr:\n%s\nwant exit 1 and stderr ending %q", code, stderr, want)
	}
}
