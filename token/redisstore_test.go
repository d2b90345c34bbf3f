package token

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wsgateway/gateway/internal/redistest"
)

func newClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRedisStoreRevokeLoad(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	c1, c2 := newClient(t, srv), newClient(t, srv)
	const prefix = "gw[1]*:" // glob characters must not leak into SCAN MATCH
	s1 := NewRedisStore(c1, prefix)
	s2 := NewRedisStore(c2, prefix)
	other := NewRedisStore(c2, "gw[2]x:")

	now := time.Now()
	bob := claims(7, "bob", now)
	T := now.Add(-time.Minute)
	for _, rv := range []Revocation{
		{Kind: KindID, ID: bob.ID, Expires: bob.Expires},
		{Kind: KindID, ID: KeyID{8}}, // expiry unknown
		{Kind: KindSubject, Subject: "alice:*?[x]", At: T},
	} {
		if err := s1.Revoke(ctx, rv); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Revoke(ctx, Revocation{Kind: KindID, ID: KeyID{9}}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Revoke(ctx, Revocation{Kind: KindID, ID: KeyID{10}, Expires: now.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}

	all, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Revocation{}
	for _, rv := range all {
		if rv.Kind == KindID {
			got[rv.ID.String()] = rv
		} else {
			got[rv.Subject] = rv
		}
	}
	if len(got) != 3 {
		t.Fatalf("Load = %+v", all)
	}
	ms := func(tm time.Time) time.Time { return tm.Truncate(time.Millisecond) }
	if rv := got[bob.ID.String()]; !rv.Expires.Equal(bob.Expires) {
		t.Errorf("id record %+v, want expiry %v", rv, bob.Expires)
	}
	if rv := got[KeyID{8}.String()]; rv.Expires.Sub(now) < MaxKeyTTL-time.Minute || rv.Expires.Sub(now) > MaxKeyTTL+time.Minute {
		t.Errorf("id record without expiry: %+v", rv)
	}
	if rv := got["alice:*?[x]"]; !rv.At.Equal(ms(T)) || !rv.Expires.Equal(ms(T).Add(MaxKeyTTL)) {
		t.Errorf("subject record %+v", rv)
	}

	// Every key carries its record's expiry.
	for key, want := range map[string]time.Time{
		prefix + "revoked:id:" + bob.ID.String(): bob.Expires,
		prefix + "revoked:sub:alice:*?[x]":       ms(T).Add(MaxKeyTTL),
	} {
		pttl, err := c2.PTTL(ctx, key).Result()
		if err != nil || pttl <= 0 {
			t.Fatalf("PTTL %s = %v, %v", key, pttl, err)
		}
		exp, err := c2.PExpireTime(ctx, key).Result()
		if err != nil || exp != time.Duration(want.UnixMilli())*time.Millisecond {
			t.Errorf("PEXPIRETIME %s = %v, want %v (%v)", key, exp, want.UnixMilli(), err)
		}
	}
}

func TestRedisStoreSubjectNeverLowered(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	c := newClient(t, srv)
	s := NewRedisStore(c, "gateway:")
	key := "gateway:revoked:sub:alice"
	T := time.Now().Truncate(time.Millisecond)
	for _, step := range []struct {
		at   time.Time
		want time.Time
	}{
		{T, T},
		{T.Add(-time.Hour), T},
		{T.Add(time.Second), T.Add(time.Second)},
		{T, T.Add(time.Second)},
	} {
		if err := s.Revoke(ctx, Revocation{Kind: KindSubject, Subject: "alice", At: step.at}); err != nil {
			t.Fatal(err)
		}
		v, err := c.Get(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if v != strconv.FormatInt(step.want.UnixMilli(), 10) {
			t.Errorf("after revoking at %v: T = %s, want %d", step.at, v, step.want.UnixMilli())
		}
		exp, _ := c.PExpireTime(ctx, key).Result()
		if exp != time.Duration(step.want.Add(MaxKeyTTL).UnixMilli())*time.Millisecond {
			t.Errorf("expiry %v does not follow T", exp)
		}
	}
	// Concurrent writers: the largest T wins.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			at := T.Add(time.Duration(i+2) * time.Second)
			if err := s.Revoke(ctx, Revocation{Kind: KindSubject, Subject: "carol", At: at}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if v, _ := c.Get(ctx, "gateway:revoked:sub:carol").Result(); v != strconv.FormatInt(T.Add(21*time.Second).UnixMilli(), 10) {
		t.Errorf("concurrent revocations left T = %s", v)
	}
}

// watchRecorder collects what Watch reports.
type watchRecorder struct {
	mu      sync.Mutex
	revs    []Revocation
	resyncs int
}

func (w *watchRecorder) onRevoke(rv Revocation) {
	w.mu.Lock()
	w.revs = append(w.revs, rv)
	w.mu.Unlock()
}

func (w *watchRecorder) onResync() {
	w.mu.Lock()
	w.resyncs++
	w.mu.Unlock()
}

func (w *watchRecorder) counts() (revs, resyncs int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.revs), w.resyncs
}

func startWatch(t *testing.T, s *RedisStore) *watchRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRecorder{}
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, w.onRevoke, w.onResync) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	return w
}

func TestRedisStoreWatch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	nodeA := NewRedisStore(newClient(t, srv), "gateway:")
	nodeB := NewRedisStore(newClient(t, srv), "gateway:")
	w := startWatch(t, nodeB)
	eventually(t, 5*time.Second, "first subscription", func() bool { _, n := w.counts(); return n == 1 })

	rv := Revocation{Kind: KindSubject, Subject: "alice", At: time.Now()}
	if err := nodeA.Revoke(ctx, rv); err != nil {
		t.Fatal(err)
	}
	// Garbage on the channel is ignored.
	newClient(t, srv).Publish(ctx, nodeA.Channel(), "not json")
	id := Revocation{Kind: KindID, ID: KeyID{3}}
	if err := nodeA.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "two announcements", func() bool { n, _ := w.counts(); return n == 2 })
	w.mu.Lock()
	got := w.revs
	w.mu.Unlock()
	want, _ := normalize(rv, time.Now())
	if got[0] != want || got[1].Kind != KindID || got[1].ID != id.ID {
		t.Errorf("announced %+v", got)
	}
}

func TestRedisStoreWatchResyncAfterRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	s := NewRedisStore(newClient(t, srv), "gateway:")
	w := startWatch(t, s)
	eventually(t, 5*time.Second, "first subscription", func() bool { _, n := w.counts(); return n == 1 })

	start := time.Now()
	srv.Restart(t)
	eventually(t, 15*time.Second, "resubscription after restart", func() bool { _, n := w.counts(); return n == 2 })
	t.Logf("resubscribed %v after the restart began", time.Since(start).Round(time.Millisecond))

	// Announcements flow again.
	other := NewRedisStore(newClient(t, srv), "gateway:")
	if err := other.Revoke(ctx, Revocation{Kind: KindID, ID: KeyID{1}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "announcement after restart", func() bool { n, _ := w.counts(); return n == 1 })
}

func TestRedisStoreDown(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	s := NewRedisStore(c, "gateway:")
	ctx := context.Background()
	if err := s.Revoke(ctx, Revocation{Kind: KindID, ID: KeyID{1}}); err == nil {
		t.Error("Revoke without Redis succeeded")
	}
	if _, err := s.Load(ctx); err == nil {
		t.Error("Load without Redis succeeded")
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := s.Watch(wctx, nil, nil); err != nil {
		t.Errorf("Watch = %v, want nil at ctx end", err)
	}
}
