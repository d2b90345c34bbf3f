package token

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/internal/slot"
)

// TestRedisStoreCluster runs a RedisStore on a 3-master Redis Cluster,
// for three prefixes whose revocation channels lie on the three masters
// (gateways sharing a cluster): Revoke and RevokeAll store each record in
// the channel's slot and SPUBLISH it to a Watch (SSUBSCRIBE) on another
// client, Load finds them all, the marker lives beside them.
func TestRedisStoreCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3, 0)
	owners := map[*redistest.Server]bool{}
	for i := 0; len(owners) < 3; i++ {
		prefix := fmt.Sprintf("gw%d:", i)
		owner := cl.Owner(slot.Of(prefix + "revocations"))
		if owners[owner] {
			continue
		}
		owners[owner] = true
		t.Run(prefix, func(t *testing.T) { testClusterStore(t, cl, prefix, owner) })
	}
}

func testClusterStore(t *testing.T, cl *redistest.Cluster, prefix string, owner *redistest.Server) {
	ctx := context.Background()
	s := NewRedisStore(cl.NewClusterClient(t), prefix)
	w := startWatch(t, NewRedisStore(cl.NewClusterClient(t), prefix))
	eventually(t, 5*time.Second, "first subscription", func() bool { _, n := w.counts(); return n == 1 })

	now := time.Now()
	recs := []Revocation{
		{Kind: KindID, ID: KeyID{1}, Expires: now.Add(time.Hour)},
		{Kind: KindSubject, Subject: "alice", At: now},
		{Kind: KindSubject, Subject: "a{b}*?", At: now}, // braces and glob characters in the key
	}
	for _, rv := range recs[:2] {
		if err := s.Revoke(ctx, rv); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeAll(ctx, recs[2:]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "three announcements", func() bool { n, _ := w.counts(); return n == 3 })

	all, err := s.Load(ctx)
	if err != nil || len(all) != 3 {
		t.Fatalf("Load = %+v, %v; want 3 records", all, err)
	}
	for i, rv := range all {
		if rv.Kind == KindID && rv.ID != recs[0].ID || rv.Kind == KindSubject && rv.Subject != "alice" && rv.Subject != "a{b}*?" {
			t.Errorf("Load[%d] = %+v", i, rv)
		}
	}
	for _, key := range []string{s.idKey(recs[0].ID), s.subKey("alice"), s.subKey("a{b}*?")} {
		if h := cl.Holder(t, key); h != owner {
			t.Errorf("%q held by %v, want the channel's master %v", key, h, owner)
		}
	}
	if want := prefix + "revoked:{" + prefix + "revocations}:sub:alice"; s.subKey("alice") != want {
		t.Errorf("subject key %q, want %q", s.subKey("alice"), want)
	}

	m, lost, err := s.Marker(ctx, "")
	if err != nil || m == "" || lost {
		t.Fatalf("Marker = %q, %v, %v", m, lost, err)
	}
	if again, lost, err := s.Marker(ctx, m); again != m || lost || err != nil {
		t.Fatalf("Marker again = %q, %v, %v; want %q", again, lost, err, m)
	}
	if peek, err := s.PeekMarker(ctx); peek != m || err != nil {
		t.Fatalf("PeekMarker = %q, %v", peek, err)
	}
	if h := cl.Holder(t, s.marker); h != owner {
		t.Errorf("marker held by %v, want %v", h, owner)
	}
}
