package token

import (
	"sync"
	"testing"
	"time"
)

func claims(id byte, subject string, issued time.Time) Claims {
	return Claims{ID: KeyID{id}, Subject: subject, IssuedAt: issued.Truncate(time.Millisecond), Expires: issued.Add(time.Hour).Truncate(time.Millisecond)}
}

func TestRevokedSemantics(t *testing.T) {
	T := t0.Truncate(time.Millisecond)
	alice1 := claims(1, "alice", T.Add(-time.Hour))
	aliceAtT := claims(2, "alice", T)
	aliceAfter := claims(3, "alice", T.Add(time.Millisecond))
	bob := claims(4, "bob", T.Add(-time.Hour))
	for _, tc := range []struct {
		name    string
		revs    []Revocation
		revoked []Claims
		valid   []Claims
	}{
		{"empty", nil, nil, []Claims{alice1, aliceAtT, aliceAfter, bob}},
		{
			"by id",
			[]Revocation{{Kind: KindID, ID: bob.ID, Expires: bob.Expires}},
			[]Claims{bob}, []Claims{alice1, aliceAtT, aliceAfter},
		},
		{
			"by subject: before and at T revoked, after T valid",
			[]Revocation{{Kind: KindSubject, Subject: "alice", At: T}},
			[]Claims{alice1, aliceAtT}, []Claims{aliceAfter, bob},
		},
		{
			"later T widens",
			[]Revocation{{Kind: KindSubject, Subject: "alice", At: T.Add(-time.Hour)}, {Kind: KindSubject, Subject: "alice", At: T}},
			[]Claims{alice1, aliceAtT}, []Claims{aliceAfter, bob},
		},
		{
			"earlier T never narrows",
			[]Revocation{{Kind: KindSubject, Subject: "alice", At: T}, {Kind: KindSubject, Subject: "alice", At: T.Add(-time.Hour)}},
			[]Claims{alice1, aliceAtT}, []Claims{aliceAfter, bob},
		},
		{
			"unknown kind ignored",
			[]Revocation{{Kind: 9, ID: bob.ID, Subject: "alice", At: T}},
			nil, []Claims{alice1, aliceAtT, aliceAfter, bob},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Through Add and through Replace, and Matches agrees with Check.
			added := NewRevoked()
			for _, rv := range tc.revs {
				added.Add(rv)
			}
			replaced := NewRevoked()
			replaced.Replace(tc.revs)
			for _, set := range []*Revoked{added, replaced} {
				for _, c := range tc.revoked {
					if !set.Check(c) {
						t.Errorf("%s/%v: not revoked", c.Subject, c.ID)
					}
				}
				for _, c := range tc.valid {
					if set.Check(c) {
						t.Errorf("%s/%v: revoked", c.Subject, c.ID)
					}
				}
			}
			for _, c := range append(tc.revoked, tc.valid...) {
				any := false
				for _, rv := range tc.revs {
					any = any || added.Matches(rv, c)
				}
				if any != added.Check(c) {
					t.Errorf("%s/%v: Matches %v, Check %v", c.Subject, c.ID, any, added.Check(c))
				}
			}
		})
	}
}

func TestRevokedAddChanged(t *testing.T) {
	r := NewRevoked()
	id := Revocation{Kind: KindID, ID: KeyID{1}, Expires: t0.Add(time.Hour)}
	sub := Revocation{Kind: KindSubject, Subject: "alice", At: t0}
	for i, step := range []struct {
		rv   Revocation
		want bool
	}{
		{id, true},
		{id, false},
		{Revocation{Kind: KindID, ID: KeyID{1}, Expires: t0.Add(2 * time.Hour)}, false}, // longer, same keys
		{sub, true},
		{sub, false},
		{Revocation{Kind: KindSubject, Subject: "alice", At: t0.Add(-time.Second)}, false},
		{Revocation{Kind: KindSubject, Subject: "alice", At: t0.Add(time.Second)}, true},
	} {
		if got := r.Add(step.rv); got != step.want {
			t.Errorf("step %d: Add = %v, want %v", i, got, step.want)
		}
	}
	if r.Len() != 2 {
		t.Errorf("Len = %d", r.Len())
	}
	all := r.All()
	if len(all) != 2 || !all[0].Expires.Equal(t0.Add(2*time.Hour).Truncate(time.Millisecond)) || !all[1].At.Equal(t0.Add(time.Second).Truncate(time.Millisecond)) {
		t.Errorf("All = %+v", all)
	}
}

func TestRevokedPrune(t *testing.T) {
	r := NewRevoked()
	r.Add(Revocation{Kind: KindID, ID: KeyID{1}, Expires: t0})
	r.Add(Revocation{Kind: KindID, ID: KeyID{2}, Expires: t0.Add(time.Hour)})
	r.Add(Revocation{Kind: KindSubject, Subject: "old", At: t0.Add(-MaxKeyTTL)})
	r.Add(Revocation{Kind: KindSubject, Subject: "new", At: t0})
	r.Prune(t0.Add(-time.Millisecond))
	if r.Len() != 4 {
		t.Fatalf("pruned too early: %d left", r.Len())
	}
	r.Prune(t0)
	if r.Len() != 2 {
		t.Fatalf("Len after prune = %d, want 2", r.Len())
	}
	if r.Check(claims(1, "x", t0.Add(-time.Hour))) || r.Check(claims(9, "old", t0.Add(-MaxKeyTTL))) {
		t.Error("expired records still match")
	}
	if !r.Check(claims(2, "x", t0)) || !r.Check(claims(9, "new", t0)) {
		t.Error("live records pruned")
	}
}

func TestRevokedCheckAllocs(t *testing.T) {
	r := NewRevoked()
	r.Add(Revocation{Kind: KindSubject, Subject: "alice", At: t0})
	r.Add(Revocation{Kind: KindID, ID: KeyID{1}, Expires: t0})
	c := claims(2, "alice", t0)
	if allocs := testing.AllocsPerRun(100, func() { r.Check(c) }); allocs != 0 {
		t.Errorf("Check allocates %v times", allocs)
	}
}

func TestRevokedConcurrent(t *testing.T) {
	r := NewRevoked()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				r.Add(Revocation{Kind: KindID, ID: KeyID{byte(i), byte(j)}, Expires: t0.Add(time.Duration(j) * time.Second)})
				r.Check(claims(byte(j), "alice", t0))
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			r.Prune(t0.Add(100 * time.Second))
			r.All()
		}
	})
	wg.Wait()
	r.Prune(t0.Add(100 * time.Second))
	if r.Len() != 4*99 { // j in 101..199
		t.Errorf("Len = %d, want 396", r.Len())
	}
}

func TestRecordWireRoundTrip(t *testing.T) {
	for _, rv := range []Revocation{
		{Kind: KindID, ID: KeyID{1, 2, 3}, At: t0, Expires: t0.Add(time.Hour)},
		{Kind: KindID, ID: KeyID{1, 2, 3}, Expires: t0.Add(time.Hour)},
		{Kind: KindSubject, Subject: "ä:*?b", At: t0},
	} {
		n, err := normalize(rv, t0)
		if err != nil {
			t.Fatal(err)
		}
		b, err := encodeRecord(n)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if back != n {
			t.Errorf("%s: got %+v, want %+v", b, back, n)
		}
	}
	for _, bad := range []string{"", "{}", `{"kind":"id","id":"zz","exp":1}`, `{"kind":"id","id":"0102030000000000"}`, `{"kind":"subject","sub":"","at":1}`, `{"kind":"x"}`, `[1]`} {
		if _, err := decodeRecord([]byte(bad)); err == nil {
			t.Errorf("decodeRecord(%s) accepted", bad)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	r := NewRevoked()
	for i := range 1000 {
		r.Add(Revocation{Kind: KindID, ID: KeyID{byte(i), byte(i >> 8)}, Expires: t0.Add(time.Hour)})
	}
	r.Add(Revocation{Kind: KindSubject, Subject: "alice", At: t0})
	c := claims(0, "alice", t0.Add(time.Second))
	c.ID = KeyID{0, 0, 1} // not among the revoked ids
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r.Check(c) {
				b.Fatal("revoked")
			}
		}
	})
}
