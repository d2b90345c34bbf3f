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
	"github.com/wsgateway/gateway/token"
)

// TestProcessRedisCluster: two `gateway serve --redis-cluster` processes
// on a 3-master Redis Cluster, each seeded with one master only (go-redis
// learns the others). A subject revoked through node A closes its session
// on node B (the revoke script SPUBLISHes, B listens with SSUBSCRIBE), and
// the revocation is stored under its cluster name on the master of the
// revocation channel's slot.
func TestProcessRedisCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3, 0)
	env := e2eEnv()
	dirA, dirB := e2eDataDir(t), t.TempDir()
	secret, err := os.ReadFile(filepath.Join(dirA, token.SecretFileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, token.SecretFileName), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	a := e2eServe(t, env, "--data-dir", dirA, "--redis-cluster", cl.Masters[0].Addr)
	b := e2eServe(t, env, "--data-dir", dirB, "--redis-cluster", cl.Masters[2].Addr)
	alice := e2eConnectURL(t, b.ws, e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dirA))

	stdout, stderr, code := e2eRun(t, env, "key", "revoke-subject", "--admin", a.admin, "alice")
	if code != 0 || !strings.Contains(stdout, `"revoked":true`) {
		t.Fatalf("key revoke-subject: exit %d: %q %s", code, stdout, stderr)
	}
	expectClose(t, alice, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	key := "gateway:revoked:{gateway:revocations}:sub:alice"
	if h, want := cl.Holder(t, key), cl.Owner(slot.Of("gateway:revocations")); h == nil || h != want {
		t.Fatalf("%s held by %v, want %v", key, h, want)
	}
}
