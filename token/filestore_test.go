package token

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openFileStore(t *testing.T, dir string) *FileStore {
	t.Helper()
	s, err := OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func loadSet(t *testing.T, s Store) *Revoked {
	t.Helper()
	all, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := NewRevoked()
	r.Replace(all)
	return r
}

func TestFileStorePersists(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	now := time.Now()
	s := openFileStore(t, dir)
	bob := claims(7, "bob", now)
	alice := claims(8, "alice", now.Add(-time.Minute))
	for _, rv := range []Revocation{
		{Kind: KindID, ID: bob.ID, Expires: bob.Expires},
		{Kind: KindSubject, Subject: "alice", At: now},
	} {
		if err := s.Revoke(ctx, rv); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Revoke(ctx, Revocation{Kind: KindSubject, Subject: "", At: now}); err == nil {
		t.Error("empty subject accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, Revocation{Kind: KindID, ID: KeyID{1}}); err != ErrClosed {
		t.Errorf("Revoke after Close: %v", err)
	}

	fi, err := os.Stat(filepath.Join(dir, RevocationLogName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode %v", fi.Mode().Perm())
	}

	s2 := openFileStore(t, dir)
	set := loadSet(t, s2)
	if set.Len() != 2 || !set.Check(bob) || !set.Check(alice) {
		t.Errorf("after reopen: %+v", set.All())
	}
	if n, torn := s2.Skipped(); n != 0 || torn {
		t.Errorf("Skipped = %d, %v", n, torn)
	}
}

func writeLog(t *testing.T, dir string, lines ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, RevocationLogName), []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
}

func idLine(id KeyID, exp time.Time) string {
	return fmt.Sprintf(`{"kind":"id","id":%q,"at":1,"exp":%d}`+"\n", id.String(), exp.UnixMilli())
}

func TestFileStoreOpenRecovery(t *testing.T) {
	now := time.Now()
	live := idLine(KeyID{1}, now.Add(time.Hour))
	live2 := idLine(KeyID{2}, now.Add(time.Hour))
	expired := idLine(KeyID{3}, now.Add(-time.Second))
	sub := fmt.Sprintf(`{"kind":"subject","sub":"alice","at":%d,"exp":0}`+"\n", now.UnixMilli())
	oldSub := fmt.Sprintf(`{"kind":"subject","sub":"old","at":%d,"exp":0}`+"\n", now.Add(-MaxKeyTTL-time.Second).UnixMilli())
	for _, tc := range []struct {
		name      string
		lines     []string
		wantIDs   []KeyID
		wantSubs  []string
		malformed int
		torn      bool
	}{
		{"empty", nil, nil, nil, 0, false},
		{"clean", []string{live, sub}, []KeyID{{1}}, []string{"alice"}, 0, false},
		{"torn tail", []string{live, sub, live2[:20]}, []KeyID{{1}}, []string{"alice"}, 0, true},
		{"complete tail without newline", []string{live, strings.TrimSuffix(live2, "\n")}, []KeyID{{1}, {2}}, nil, 0, false},
		{"malformed middle lines", []string{live, "garbage\n", `{"kind":"nope"}` + "\n", live2}, []KeyID{{1}, {2}}, nil, 2, false},
		{"expired dropped", []string{expired, live, oldSub, sub}, []KeyID{{1}}, []string{"alice"}, 0, false},
		{"duplicates merged", []string{live, live, sub, sub}, []KeyID{{1}}, []string{"alice"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLog(t, dir, tc.lines...)
			s := openFileStore(t, dir)
			if n, torn := s.Skipped(); n != tc.malformed || torn != tc.torn {
				t.Errorf("Skipped = %d, %v; want %d, %v", n, torn, tc.malformed, tc.torn)
			}
			check := func(what string, all []Revocation) {
				var ids []KeyID
				var subs []string
				for _, rv := range all {
					if rv.Kind == KindID {
						ids = append(ids, rv.ID)
					} else {
						subs = append(subs, rv.Subject)
					}
				}
				if fmt.Sprint(ids) != fmt.Sprint(tc.wantIDs) || fmt.Sprint(subs) != fmt.Sprint(tc.wantSubs) {
					t.Errorf("%s: ids %v subs %v; want %v %v", what, ids, subs, tc.wantIDs, tc.wantSubs)
				}
			}
			all, err := s.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			check("Load", all)

			// The file was compacted: one well-formed line per live record,
			// no temp file left, and appends after a torn tail are readable.
			data, _ := os.ReadFile(s.Path())
			if n := bytes.Count(data, []byte("\n")); n != len(tc.wantIDs)+len(tc.wantSubs) {
				t.Errorf("compacted log has %d lines: %s", n, data)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("dir holds %d entries", len(entries))
			}
			if err := s.Revoke(context.Background(), Revocation{Kind: KindID, ID: KeyID{9}}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s2 := openFileStore(t, dir)
			if n, torn := s2.Skipped(); n != 0 || torn {
				t.Errorf("after compaction Skipped = %d, %v", n, torn)
			}
			all, _ = s2.Load(context.Background())
			if len(all) != len(tc.wantIDs)+len(tc.wantSubs)+1 {
				t.Errorf("reopened: %+v", all)
			}
		})
	}
}

func TestFileStoreConcurrentRevoke(t *testing.T) {
	dir := t.TempDir()
	s := openFileStore(t, dir)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 25 {
				rv := Revocation{Kind: KindID, ID: KeyID{byte(i), byte(j)}}
				if j%5 == 0 {
					rv = Revocation{Kind: KindSubject, Subject: fmt.Sprintf("user-%d-%d", i, j), At: time.Now()}
				}
				if err := s.Revoke(context.Background(), rv); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Load(context.Background()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s.Close()
	data, _ := os.ReadFile(filepath.Join(dir, RevocationLogName))
	if n := bytes.Count(data, []byte("\n")); n != 200 {
		t.Errorf("log has %d lines, want 200", n)
	}
	s2 := openFileStore(t, dir)
	if n, torn := s2.Skipped(); n != 0 || torn {
		t.Errorf("interleaved writes: Skipped = %d, %v", n, torn)
	}
	if all, _ := s2.Load(context.Background()); len(all) != 200 {
		t.Errorf("reloaded %d records, want 200", len(all))
	}
}
