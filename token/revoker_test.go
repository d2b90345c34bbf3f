package token

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgateway/gateway/internal/redistest"
)

// callbacks records a Revoker's onRevoke calls.
type callbacks struct {
	mu   sync.Mutex
	seen []Revocation
}

func (cb *callbacks) onRevoke(rv Revocation) {
	cb.mu.Lock()
	cb.seen = append(cb.seen, rv)
	cb.mu.Unlock()
}

func (cb *callbacks) count(match func(Revocation) bool) int {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	n := 0
	for _, rv := range cb.seen {
		if match == nil || match(rv) {
			n++
		}
	}
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startRevoker starts a Revoker stopped (and waited for) at the end of t.
func startRevoker(t *testing.T, store Store) (*Revoker, *callbacks) {
	t.Helper()
	cb := &callbacks{}
	v := NewRevoker(store, NewRevoked(), cb.onRevoke, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	if err := v.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		v.Wait()
	})
	return v, cb
}

func TestRevokerFileStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fs := openFileStore(t, dir)
	now := time.Now()
	old := claims(1, "old", now)
	if err := fs.Revoke(ctx, Revocation{Kind: KindID, ID: old.ID, Expires: old.Expires}); err != nil {
		t.Fatal(err)
	}

	v, cb := startRevoker(t, fs)
	if !v.Set().Check(old) {
		t.Error("Start did not load the store")
	}
	if err := v.Start(ctx); err == nil {
		t.Error("second Start accepted")
	}

	alice := claims(2, "alice", now.Add(-time.Second))
	aliceLater := claims(3, "alice", now.Add(time.Second))
	if err := v.RevokeSubject(ctx, "alice", now); err != nil {
		t.Fatal(err)
	}
	if !v.Set().Check(alice) || v.Set().Check(aliceLater) {
		t.Error("subject revocation not applied as specified")
	}
	if err := v.RevokeSubject(ctx, "alice", now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	key := claims(4, "bob", now)
	if err := v.RevokeKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := v.RevokeKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := v.RevokeID(ctx, KeyID{5}); err != nil {
		t.Fatal(err)
	}
	if err := v.RevokeSubject(ctx, "", now); err == nil {
		t.Error("empty subject accepted")
	}
	// Callbacks: one per change, none for the repeats.
	if n := cb.count(nil); n != 3 {
		t.Errorf("%d callbacks, want 3: %+v", n, cb.seen)
	}
	if n := cb.count(func(rv Revocation) bool { return rv.Matches(alice) }); n != 1 {
		t.Errorf("alice callback %d times", n)
	}

	// Everything survives a restart of the node.
	fs.Close()
	fs2 := openFileStore(t, dir)
	v2, _ := startRevoker(t, fs2)
	for _, c := range []Claims{old, alice, key, {ID: KeyID{5}}} {
		if !v2.Set().Check(c) {
			t.Errorf("%+v not revoked after restart", c)
		}
	}
}

// failingStore fails every call.
type failingStore struct{}

func (failingStore) Revoke(context.Context, Revocation) error   { return errors.New("disk full") }
func (failingStore) Load(context.Context) ([]Revocation, error) { return nil, errors.New("unreadable") }
func (failingStore) Close() error                               { return nil }

func TestRevokerStoreErrors(t *testing.T) {
	v := NewRevoker(failingStore{}, nil, nil, nil)
	if err := v.Start(context.Background()); err == nil {
		t.Error("Start with an unreadable local store succeeded")
	}
	if err := v.RevokeID(context.Background(), KeyID{1}); err == nil {
		t.Error("Revoke with a failing store succeeded")
	}
	if v.Set().Len() != 0 {
		t.Error("failed revocation applied locally")
	}
}

func TestRevokerRedisTwoNodes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	old := Revocation{Kind: KindID, ID: KeyID{1}}
	if err := NewRedisStore(newClient(t, srv), "gateway:").Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	a, cbA := startRevoker(t, NewRedisStore(newClient(t, srv), "gateway:"))
	b, cbB := startRevoker(t, NewRedisStore(newClient(t, srv), "gateway:"))
	for _, v := range []*Revoker{a, b} {
		if !v.Set().Check(Claims{ID: old.ID}) {
			t.Fatal("Start did not load Redis")
		}
		eventually(t, 5*time.Second, "first reload", func() bool { return v.reloads.Load() >= 1 })
	}
	// The reload after subscribing reports existing records.
	isOld := func(rv Revocation) bool { return rv.Kind == KindID && rv.ID == old.ID }
	if cbA.count(isOld) < 1 || cbB.count(isOld) < 1 {
		t.Error("reload did not report existing records")
	}

	now := time.Now()
	alice := claims(2, "alice", now)
	isAlice := func(rv Revocation) bool { return rv.Matches(alice) }
	if err := a.RevokeSubject(ctx, "alice", now); err != nil {
		t.Fatal(err)
	}
	if !a.Set().Check(alice) || cbA.count(isAlice) != 1 {
		t.Fatal("revocation not applied locally before Revoke returned")
	}
	eventually(t, 5*time.Second, "node B applies A's revocation", func() bool { return b.Set().Check(alice) })
	eventually(t, 5*time.Second, "node B's callback", func() bool { return cbB.count(isAlice) == 1 })

	// A's own announcement comes back to A without a second callback. A
	// barrier: once B has seen a later record, A has received the earlier.
	if err := b.RevokeID(ctx, KeyID{9}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "node A applies B's revocation", func() bool { return a.Set().Check(Claims{ID: KeyID{9}}) })
	time.Sleep(100 * time.Millisecond)
	if n, m := cbA.count(isAlice), cbB.count(isAlice); n != 1 || m != 1 {
		t.Errorf("alice reported %d times on A and %d on B, want once each", n, m)
	}

	// After Redis restarts (losing its data), both nodes resubscribe and
	// reload; revocations flow again.
	srv.Restart(t)
	for _, v := range []*Revoker{a, b} {
		eventually(t, 15*time.Second, "reload after restart", func() bool { return v.reloads.Load() >= 2 })
	}
	bob := claims(3, "bob", time.Now())
	if err := a.RevokeKey(ctx, bob); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "B applies a revocation after the restart", func() bool { return b.Set().Check(bob) })
}

func TestRevokerRedisDownAtStart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	var down atomic.Bool
	down.Store(true)
	client := redis.NewClient(&redis.Options{
		Addr:       srv.Addr,
		MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if down.Load() {
				return nil, errors.New("redis is down (test)")
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	})
	t.Cleanup(func() { client.Close() })

	v, cb := startRevoker(t, NewRedisStore(client, "gateway:"))
	if v.Set().Len() != 0 {
		t.Fatal("set not empty")
	}
	// Without a snapshot the set is unknown: every key counts as revoked.
	if v.Set().Known() || !v.Set().Check(claims(3, "carol", time.Now())) {
		t.Fatal("a set never loaded must fail closed")
	}
	if err := v.RevokeID(ctx, KeyID{1}); err == nil {
		t.Error("Revoke while Redis is down succeeded")
	}

	// Another node revokes while this one cannot reach Redis.
	alice := claims(2, "alice", time.Now())
	if err := NewRedisStore(newClient(t, srv), "gateway:").Revoke(ctx, Revocation{Kind: KindSubject, Subject: "alice", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	eventually(t, 15*time.Second, "reload once Redis answers", func() bool { return v.Set().Known() })
	if !v.Set().Check(alice) || v.Set().Check(claims(3, "carol", time.Now())) {
		t.Fatal("the set loaded once Redis answers is wrong")
	}
	eventually(t, 5*time.Second, "callback for the reloaded record", func() bool {
		return cb.count(func(rv Revocation) bool { return rv.Matches(alice) }) >= 1
	})
}
