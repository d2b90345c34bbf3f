package token

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/redistest"
)

func TestRevokedPendingFailsClosed(t *testing.T) {
	r := NewPendingRevoked()
	good := claims(1, "alice", t0)
	if r.Known() || !r.Check(good) {
		t.Fatal("a pending set must report every key as revoked")
	}
	r.Add(Revocation{Kind: KindID, ID: KeyID{9}, Expires: t0.Add(time.Hour)})
	r.Prune(t0)
	if r.Known() || !r.Check(good) {
		t.Fatal("Add or Prune made a pending set known")
	}
	r.Replace([]Revocation{{Kind: KindID, ID: KeyID{9}, Expires: t0.Add(time.Hour)}})
	if !r.Known() || r.Check(good) || !r.Check(Claims{ID: KeyID{9}}) {
		t.Fatal("Replace did not make the set known and exact")
	}
	p := NewPendingRevoked()
	if allocs := testing.AllocsPerRun(100, func() { p.Check(good) }); allocs != 0 {
		t.Errorf("Check on a pending set allocates %v times", allocs)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", SnapshotName)
	now := time.Now()
	recs := []Revocation{
		{Kind: KindID, ID: KeyID{1}, At: now, Expires: now.Add(time.Hour)},
		{Kind: KindID, ID: KeyID{2}, Expires: now.Add(-time.Second)}, // expired: not read back
		{Kind: KindSubject, Subject: "alice", At: now, Expires: now.Add(MaxKeyTTL)},
	}
	for i, rv := range recs {
		recs[i], _ = normalize(rv, now)
	}
	if err := writeSnapshot(path, "m1", recs, now); err != nil {
		t.Fatal(err)
	}
	s, err := readSnapshot(path, now)
	if err != nil {
		t.Fatal(err)
	}
	if s.marker != "m1" || len(s.records) != 2 || s.records[0] != recs[0] || s.records[1] != recs[2] {
		t.Fatalf("read back %+v", s)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if _, err := readSnapshot(filepath.Join(dir, "none"), now); !isNotExist(err) {
		t.Errorf("missing snapshot: err = %v, want not-exist", err)
	}
	for _, bad := range []string{`{"version":1,"records":[{"kind":"id","id":"zz","exp":1}]}`, `{"version":2,"records":[]}`, `{"vers`} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readSnapshot(path, now); err == nil || isNotExist(err) {
			t.Errorf("snapshot %q: err = %v, want a parse error", bad, err)
		}
	}
}

func TestRedisStoreMarker(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	c := newClient(t, srv)
	s := NewRedisStore(c, "gateway:")
	m1, lost, err := s.Marker(ctx, "")
	if err != nil || lost || len(m1) != 32 {
		t.Fatalf("first Marker = %q, %v, %v", m1, lost, err)
	}
	if m, lost, err := NewRedisStore(newClient(t, srv), "gateway:").Marker(ctx, ""); m != m1 || lost || err != nil {
		t.Fatalf("second node's Marker = %q, %v, %v; want %q", m, lost, err, m1)
	}
	if m, lost, _ := s.Marker(ctx, m1); m != m1 || lost {
		t.Fatalf("Marker(known) = %q, %v", m, lost)
	}
	if ttl := c.PTTL(ctx, "gateway:marker").Val(); ttl != -1 {
		t.Errorf("marker TTL = %v, want none", ttl)
	}
	c.FlushAll(ctx)
	m2, lost, err := s.Marker(ctx, m1)
	if err != nil || !lost || m2 == m1 {
		t.Fatalf("Marker after FLUSHALL = %q, %v, %v; want a new marker and lost", m2, lost, err)
	}
	if m, lost, _ := s.Marker(ctx, m1); m != m2 || !lost {
		t.Errorf("a node that saw the old marker: %q, %v; want %q and lost", m, lost, m2)
	}
}

func TestRedisStoreRevokeAll(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	s := NewRedisStore(newClient(t, srv), "gateway:")
	w := startWatch(t, NewRedisStore(newClient(t, srv), "gateway:"))
	eventually(t, 5*time.Second, "subscription", func() bool { _, n := w.counts(); return n == 1 })
	now := time.Now()
	all := []Revocation{
		{Kind: KindID, ID: KeyID{1}, Expires: now.Add(time.Hour)},
		{Kind: KindID, ID: KeyID{2}, Expires: now.Add(-time.Hour)}, // expired: skipped
		{Kind: KindSubject, Subject: "bob", At: now},
	}
	if err := s.RevokeAll(ctx, all); err != nil {
		t.Fatal(err)
	}
	set := loadSet(t, s)
	if set.Len() != 2 || !set.Check(Claims{ID: KeyID{1}}) || !set.Check(claims(3, "bob", now)) {
		t.Fatalf("loaded %v", set.All())
	}
	eventually(t, 5*time.Second, "two announcements", func() bool { n, _ := w.counts(); return n == 2 })
}

// startDurable starts a Revoker over srv that keeps its snapshot at path
// and counts the data losses it reports.
func startDurable(t *testing.T, srv *redistest.Server, path string, mods ...func(*Revoker)) (*Revoker, *atomic.Int64, context.CancelFunc) {
	t.Helper()
	v := NewRevoker(NewRedisStore(newClient(t, srv), "gateway:"), NewRevoked(), nil, testLogger(t))
	v.KeepSnapshot(path)
	for _, m := range mods {
		m(v)
	}
	var lost atomic.Int64
	v.OnDataLost(func() { lost.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	if err := v.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := func() {
		cancel()
		v.Wait()
	}
	t.Cleanup(stop)
	return v, &lost, stop
}

// TestRevokerSnapshotWhenRedisDown: a node restarted while Redis is down
// starts from its saved set; one without a saved set refuses every key.
func TestRevokerSnapshotWhenRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), SnapshotName)
	now := time.Now()
	mine, theirs, good := claims(1, "alice", now), claims(2, "bob", now), claims(3, "carol", now)

	a, lost, stopA := startDurable(t, srv, path)
	eventually(t, 5*time.Second, "first reload", func() bool { return a.reloads.Load() >= 1 })
	if err := a.RevokeKey(ctx, mine); err != nil {
		t.Fatal(err)
	}
	// Another node's revocation reaches A through the feed.
	if err := NewRedisStore(newClient(t, srv), "gateway:").Revoke(ctx, Revocation{Kind: KindID, ID: theirs.ID}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "A applies the announcement", func() bool { return a.Set().Check(theirs) })
	// The snapshot is written right after the set changes.
	eventually(t, 5*time.Second, "the snapshot holds both", func() bool {
		saved, err := readSnapshot(path, time.Now())
		return err == nil && len(saved.records) == 2 && saved.marker != ""
	})
	stopA()

	srv.Stop()
	b, lostB, _ := startDurable(t, srv, path)
	if !b.Set().Known() || !b.Set().Check(mine) || !b.Set().Check(theirs) || b.Set().Check(good) {
		t.Fatalf("node restarted with Redis down: known=%v revoked(mine)=%v revoked(theirs)=%v revoked(good)=%v",
			b.Set().Known(), b.Set().Check(mine), b.Set().Check(theirs), b.Set().Check(good))
	}
	c, _, _ := startDurable(t, srv, filepath.Join(t.TempDir(), SnapshotName))
	if c.Set().Known() || !c.Set().Check(good) {
		t.Fatal("node without a snapshot and with Redis down must refuse every key")
	}

	// Redis comes back empty (no persistence): B notices, writes its set
	// back, and C, which knew nothing, learns it.
	srv.Restart(t)
	eventually(t, 15*time.Second, "C loads once Redis answers", func() bool { return c.Set().Known() })
	eventually(t, 15*time.Second, "B reports the loss", func() bool { return lostB.Load() == 1 && b.reloads.Load() >= 1 })
	if lost.Load() != 0 {
		t.Error("A reported a loss while Redis kept its data")
	}
	eventually(t, 15*time.Second, "C learns B's write-back", func() bool { return c.Set().Check(mine) && c.Set().Check(theirs) })
	if c.Set().Check(good) {
		t.Error("C refuses a good key once loaded")
	}
	back := loadSet(t, NewRedisStore(newClient(t, srv), "gateway:"))
	if !back.Check(mine) || !back.Check(theirs) || back.Check(good) {
		t.Errorf("Redis after the write-back: %v", back.All())
	}
}

// TestRevokerDataLost: after Redis restarts empty, every node that saw its
// marker reports the loss once and the union of their sets is back in
// Redis.
func TestRevokerDataLost(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	a, lostA, _ := startDurable(t, srv, filepath.Join(dir, "a"))
	b, lostB, _ := startDurable(t, srv, filepath.Join(dir, "b"))
	for _, v := range []*Revoker{a, b} {
		eventually(t, 5*time.Second, "first reload", func() bool { return v.reloads.Load() >= 1 })
	}
	now := time.Now()
	alice := claims(1, "alice", now)
	if err := a.RevokeSubject(ctx, "alice", now); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "B applies", func() bool { return b.Set().Check(alice) })
	if lostA.Load() != 0 || lostB.Load() != 0 {
		t.Fatal("data loss reported before any")
	}
	reloadsA, reloadsB := a.reloads.Load(), b.reloads.Load()

	srv.Restart(t)
	eventually(t, 15*time.Second, "both report the loss", func() bool { return lostA.Load() == 1 && lostB.Load() == 1 })
	eventually(t, 15*time.Second, "both reload", func() bool { return a.reloads.Load() > reloadsA && b.reloads.Load() > reloadsB })
	back := loadSet(t, NewRedisStore(newClient(t, srv), "gateway:"))
	if !back.Check(alice) || back.Len() != 1 {
		t.Fatalf("Redis after the loss: %v", back.All())
	}
	for _, v := range []*Revoker{a, b} {
		if !v.Set().Check(alice) {
			t.Error("a node forgot the revocation")
		}
	}
	// The new marker is the one both saved: no second report.
	srv.Restart(t) // empty again
	eventually(t, 15*time.Second, "second loss reported once each", func() bool { return lostA.Load() == 2 && lostB.Load() == 2 })
	time.Sleep(200 * time.Millisecond)
	if lostA.Load() != 2 || lostB.Load() != 2 {
		t.Errorf("losses reported %d and %d times, want 2 each", lostA.Load(), lostB.Load())
	}
}

// TestRevokerDataLostWithoutReconnect: a FLUSHALL breaks no connection;
// the periodic marker read notices it and the node writes back.
func TestRevokerDataLostWithoutReconnect(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	ctx := context.Background()
	fast := func(v *Revoker) { v.markerEvery = 50 * time.Millisecond }
	a, lost, _ := startDurable(t, srv, filepath.Join(t.TempDir(), SnapshotName), fast)
	eventually(t, 5*time.Second, "first reload", func() bool { return a.reloads.Load() >= 1 })
	if err := a.RevokeID(ctx, KeyID{7}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // several checks: nothing moved
	if lost.Load() != 0 {
		t.Fatal("loss reported while Redis kept its data")
	}
	c := newClient(t, srv)
	c.FlushAll(ctx)
	eventually(t, 5*time.Second, "the loss noticed", func() bool { return lost.Load() == 1 })
	eventually(t, 5*time.Second, "the record written back", func() bool {
		return c.Exists(ctx, "gateway:revoked:id:"+KeyID{7}.String()).Val() == 1
	})
	time.Sleep(200 * time.Millisecond)
	if lost.Load() != 1 {
		t.Errorf("loss reported %d times, want once", lost.Load())
	}
}

// BenchmarkSnapshotSave: one atomic, fsync'd rewrite of a set of 10,000
// records (what a reload or a local revocation costs with KeepSnapshot).
func BenchmarkSnapshotSave(b *testing.B) {
	b.ReportAllocs()
	set := NewRevoked()
	now := time.Now()
	all := make([]Revocation, 10000)
	for i := range all {
		all[i] = Revocation{Kind: KindID, ID: KeyID{byte(i), byte(i >> 8)}, Expires: now.Add(time.Hour)}
	}
	set.Replace(all)
	s := &snapshotter{path: filepath.Join(b.TempDir(), SnapshotName), set: set}
	for b.Loop() {
		if err := s.save(s.changed()); err != nil {
			b.Fatal(err)
		}
	}
}
