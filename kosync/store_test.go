package kosync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

// testStore runs the Store contract against the stores open returns; each
// call must give an empty store of its own.
func testStore(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	push := func(id, progress string, pct float64) func(*Document) (*Document, error) {
		return func(cur *Document) (*Document, error) {
			return ApplyPush(cur, id, PushFields{Progress: progress, Percentage: pct, Device: "dev"}, time.Now().Unix(), 0), nil
		}
	}
	mustCreate := func(t *testing.T, s Store, name, hash string) {
		t.Helper()
		if err := s.CreateUser(ctx, name, hash); err != nil {
			t.Fatalf("CreateUser(%q): %v", name, err)
		}
	}
	mustPut := func(t *testing.T, s Store, user, hash, id string, d *Document) {
		t.Helper()
		if _, err := s.UpdateDocument(ctx, user, hash, id, func(*Document) (*Document, error) { return d, nil }); err != nil {
			t.Fatalf("UpdateDocument(%q, %q): %v", user, id, err)
		}
	}
	mustGet := func(t *testing.T, s Store, user, id string) *Document {
		t.Helper()
		d, err := s.Document(ctx, user, id)
		if err != nil {
			t.Fatalf("Document(%q, %q): %v", user, id, err)
		}
		return d
	}
	docIDs := func(t *testing.T, s Store, user string) []string {
		t.Helper()
		docs, err := s.Documents(ctx, user)
		if err != nil {
			t.Fatalf("Documents(%q): %v", user, err)
		}
		ids := make([]string, 0, len(docs))
		for _, d := range docs {
			ids = append(ids, d.ID)
		}
		sort.Strings(ids)
		return ids
	}

	t.Run("CreateUser", func(t *testing.T) {
		s := open(t)
		if _, err := s.User(ctx, "alice"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("User before create: %v, want ErrUserNotFound", err)
		}
		mustCreate(t, s, "alice", "h1")
		if err := s.CreateUser(ctx, "alice", "h2"); !errors.Is(err, ErrUserExists) {
			t.Fatalf("duplicate CreateUser: %v, want ErrUserExists", err)
		}
		u, err := s.User(ctx, "alice")
		if err != nil || u != (User{Name: "alice", Hash: "h1"}) {
			t.Fatalf("User = %+v, %v", u, err)
		}
		// Names are case-sensitive.
		if _, err := s.User(ctx, "Alice"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("User(Alice): %v, want ErrUserNotFound", err)
		}
		mustCreate(t, s, "Alice", "h3")
	})

	t.Run("UpdateDocument", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, "u", "h")
		var seen []*Document
		d, err := s.UpdateDocument(ctx, "u", "h", "doc1", func(cur *Document) (*Document, error) {
			seen = append(seen, cur)
			return push("doc1", "10", 0.1)(cur)
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen[len(seen)-1] != nil {
			t.Fatalf("fn got %+v for a new document, want nil", seen[len(seen)-1])
		}
		if d.ID != "doc1" || *d.Progress != "10" || d.Timestamp == 0 || len(d.History) != 0 {
			t.Fatalf("created %s", mtJSON(t, d))
		}
		d2, err := s.UpdateDocument(ctx, "u", "h", "doc1", func(cur *Document) (*Document, error) {
			if cur == nil || *cur.Progress != "10" {
				return nil, fmt.Errorf("fn got %s", mtJSON(t, cur))
			}
			return push("doc1", "20", 0.2)(cur)
		})
		if err != nil {
			t.Fatal(err)
		}
		if *d2.Progress != "20" || len(d2.History) != 1 || d2.History[0].Progress != "10" {
			t.Fatalf("updated %s", mtJSON(t, d2))
		}
		if got := mustGet(t, s, "u", "doc1"); !reflect.DeepEqual(got, d2) {
			t.Fatalf("read back %s, want %s", mtJSON(t, got), mtJSON(t, d2))
		}
	})

	t.Run("RoundTrip", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, "u", "h")
		full := &Document{
			ID: "full", Progress: mtStr("/body/DocFragment[1]/body/div/svg.0 ünïcode \"q\""), Percentage: mtF64(0.0033),
			Device: mtStr("Flatpak"), DeviceID: mtStr("BDD3C5BCA1624FE996EB00FC7948468E"),
			Timestamp: 1770653038, PrettyName: "A <b>Book</b> & co",
			History: []HistoryEntry{
				{Progress: "1", Percentage: 0, Device: "", DeviceID: "", Document: "full", Timestamp: 1, PrettyName: ""},
				{Progress: "2", Percentage: 0.5, Device: "d", DeviceID: "x", Document: "full", Timestamp: 2, PrettyName: "n"},
			},
		}
		zeroes := &Document{ID: "zeroes", Progress: mtStr(""), Percentage: mtF64(0), Device: mtStr(""), DeviceID: mtStr("")}
		sparse := &Document{ID: "sparse", Percentage: mtF64(0), Timestamp: 5}
		nameOnly := &Document{ID: "name", PrettyName: "only a name"}
		for _, d := range []*Document{full, zeroes, sparse, nameOnly} {
			mustPut(t, s, "u", "h", d.ID, d)
		}
		for _, want := range []*Document{full, zeroes, sparse, nameOnly} {
			got := mustGet(t, s, "u", want.ID)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip of %s:\n got  %s\n want %s", want.ID, mtJSON(t, got), mtJSON(t, want))
			}
		}
		if got := mustGet(t, s, "u", "sparse"); got.Progress != nil || got.Device != nil || got.DeviceID != nil || got.Percentage == nil {
			t.Errorf("absent vs present lost: %s", mtJSON(t, got))
		}
		if got := mustGet(t, s, "u", "name"); got.HasProgress() {
			t.Errorf("name-only document has progress: %s", mtJSON(t, got))
		}
		docs, err := s.Documents(ctx, "u")
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]*Document{}
		for _, d := range docs {
			byID[d.ID] = d
		}
		for _, want := range []*Document{full, zeroes, sparse, nameOnly} {
			if !reflect.DeepEqual(byID[want.ID], want) {
				t.Errorf("Documents: %s = %s, want %s", want.ID, mtJSON(t, byID[want.ID]), mtJSON(t, want))
			}
		}
		if len(docs) != 4 {
			t.Errorf("Documents: %d documents, want 4", len(docs))
		}
		// The store sets the id from its argument.
		mustPut(t, s, "u", "h", "other-id", &Document{ID: "wrong", Progress: mtStr("p")})
		if got := mustGet(t, s, "u", "other-id"); got == nil || got.ID != "other-id" {
			t.Errorf("stored id: %s", mtJSON(t, got))
		}
	})

	t.Run("DocumentUnknown", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, "u", "h")
		for _, user := range []string{"u", "nobody"} {
			d, err := s.Document(ctx, user, "nope")
			if d != nil || err != nil {
				t.Fatalf("Document(%q, unknown) = %v, %v; want nil, nil", user, d, err)
			}
			docs, err := s.Documents(ctx, user)
			if len(docs) != 0 || err != nil {
				t.Fatalf("Documents(%q) = %v, %v; want none", user, docs, err)
			}
		}
	})

	t.Run("DocumentsIsolation", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, "a", "ha")
		mustCreate(t, s, "b", "hb")
		for _, id := range []string{"x", "y", "z"} {
			mustPut(t, s, "a", "ha", id, &Document{Progress: mtStr("a-" + id)})
		}
		mustPut(t, s, "b", "hb", "x", &Document{Progress: mtStr("b-x")})
		if got := docIDs(t, s, "a"); !reflect.DeepEqual(got, []string{"x", "y", "z"}) {
			t.Fatalf("Documents(a) = %v", got)
		}
		if got := docIDs(t, s, "b"); !reflect.DeepEqual(got, []string{"x"}) {
			t.Fatalf("Documents(b) = %v", got)
		}
		if a, b := mustGet(t, s, "a", "x"), mustGet(t, s, "b", "x"); *a.Progress != "a-x" || *b.Progress != "b-x" {
			t.Fatalf("same id under two users: a=%s b=%s", mtJSON(t, a), mtJSON(t, b))
		}
		if d := mustGet(t, s, "b", "y"); d != nil {
			t.Fatalf("b sees a's document: %s", mtJSON(t, d))
		}
	})

	t.Run("UpdateDocumentStale", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, "u", "h")
		mustPut(t, s, "u", "h", "d", &Document{Progress: mtStr("orig")})
		called := false
		fn := func(cur *Document) (*Document, error) {
			called = true
			return &Document{Progress: mtStr("evil")}, nil
		}
		if _, err := s.UpdateDocument(ctx, "u", "wrong", "d", fn); !errors.Is(err, ErrStale) {
			t.Fatalf("wrong hash: %v, want ErrStale", err)
		}
		if _, err := s.UpdateDocument(ctx, "u", "wrong", "new", fn); !errors.Is(err, ErrStale) {
			t.Fatalf("wrong hash, new doc: %v, want ErrStale", err)
		}
		if _, err := s.UpdateDocument(ctx, "ghost", "h", "d", fn); !errors.Is(err, ErrStale) {
			t.Fatalf("unknown user: %v, want ErrStale", err)
		}
		if called {
			t.Error("fn was called despite a stale hash")
		}
		if d := mustGet(t, s, "u", "d"); *d.Progress != "orig" {
			t.Fatalf("written despite ErrStale: %s", mtJSON(t, d))
		}
		if d := mustGet(t, s, "u", "new"); d != nil {
			t.Fatalf("created despite ErrStale: %s", mtJSON(t, d))
		}
		if got := docIDs(t, s, "ghost"); len(got) != 0 {
			t.Fatalf("ghost user got documents %v", got)
		}
	})

	t.Run("UpdateDocumentFnError", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, "u", "h")
		mustPut(t, s, "u", "h", "d", &Document{Progress: mtStr("orig")})
		boom := errors.New("boom")
		for _, id := range []string{"d", "new"} {
			d, err := s.UpdateDocument(ctx, "u", "h", id, func(cur *Document) (*Document, error) {
				return &Document{Progress: mtStr("half")}, boom
			})
			if !errors.Is(err, boom) || d != nil {
				t.Fatalf("fn error on %q: %v, %v; want boom", id, d, err)
			}
			if errors.Is(err, ErrUnavailable) {
				t.Fatalf("fn error wrapped as unavailable: %v", err)
			}
		}
		if d := mustGet(t, s, "u", "d"); *d.Progress != "orig" {
			t.Fatalf("written despite fn error: %s", mtJSON(t, d))
		}
		if d := mustGet(t, s, "u", "new"); d != nil {
			t.Fatalf("created despite fn error: %s", mtJSON(t, d))
		}
		// A nil document without an error is refused too.
		if _, err := s.UpdateDocument(ctx, "u", "h", "new", func(*Document) (*Document, error) { return nil, nil }); err == nil {
			t.Fatal("fn returning nil, nil: no error")
		}
		if d := mustGet(t, s, "u", "new"); d != nil {
			t.Fatalf("created by a nil fn result: %s", mtJSON(t, d))
		}
	})

	t.Run("DeleteUser", func(t *testing.T) {
		s := open(t)
		if err := s.DeleteUser(ctx, "u", "h"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("delete unknown: %v, want ErrUserNotFound", err)
		}
		mustCreate(t, s, "u", "h")
		mustCreate(t, s, "v", "h")
		mustPut(t, s, "u", "h", "d1", &Document{Progress: mtStr("1")})
		mustPut(t, s, "u", "h", "d2", &Document{Progress: mtStr("2")})
		mustPut(t, s, "v", "h", "d1", &Document{Progress: mtStr("v")})
		if err := s.DeleteUser(ctx, "u", "wrong"); !errors.Is(err, ErrStale) {
			t.Fatalf("delete with wrong hash: %v, want ErrStale", err)
		}
		if got := docIDs(t, s, "u"); len(got) != 2 {
			t.Fatalf("stale delete removed documents: %v", got)
		}
		if err := s.DeleteUser(ctx, "u", "h"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.User(ctx, "u"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("User after delete: %v", err)
		}
		if got := docIDs(t, s, "u"); len(got) != 0 {
			t.Fatalf("documents after delete: %v", got)
		}
		if _, err := s.UpdateDocument(ctx, "u", "h", "d1", push("d1", "x", 0)); !errors.Is(err, ErrStale) {
			t.Fatalf("write after delete: %v, want ErrStale", err)
		}
		if err := s.DeleteUser(ctx, "u", "h"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("second delete: %v, want ErrUserNotFound", err)
		}
		// A new account of the same name starts empty.
		mustCreate(t, s, "u", "h")
		if got := docIDs(t, s, "u"); len(got) != 0 {
			t.Fatalf("re-created user sees old documents %v", got)
		}
		if d := mustGet(t, s, "u", "d1"); d != nil {
			t.Fatalf("re-created user sees old document %s", mtJSON(t, d))
		}
		if d := mustGet(t, s, "v", "d1"); d == nil || *d.Progress != "v" {
			t.Fatalf("other user's document lost: %s", mtJSON(t, d))
		}
	})

	t.Run("SetHash", func(t *testing.T) {
		s := open(t)
		if err := s.SetHash(ctx, "u", "h", "h2"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("SetHash unknown: %v, want ErrUserNotFound", err)
		}
		mustCreate(t, s, "u", "h")
		mustPut(t, s, "u", "h", "d", &Document{Progress: mtStr("kept")})
		if err := s.SetHash(ctx, "u", "wrong", "h2"); !errors.Is(err, ErrStale) {
			t.Fatalf("SetHash wrong old: %v, want ErrStale", err)
		}
		if err := s.SetHash(ctx, "u", "h", "h2"); err != nil {
			t.Fatal(err)
		}
		if u, err := s.User(ctx, "u"); err != nil || u.Hash != "h2" {
			t.Fatalf("User after SetHash: %+v, %v", u, err)
		}
		if _, err := s.UpdateDocument(ctx, "u", "h", "d", push("d", "x", 0)); !errors.Is(err, ErrStale) {
			t.Fatalf("write with the old hash: %v, want ErrStale", err)
		}
		if err := s.DeleteUser(ctx, "u", "h"); !errors.Is(err, ErrStale) {
			t.Fatalf("delete with the old hash: %v, want ErrStale", err)
		}
		if err := s.SetHash(ctx, "u", "h", "h3"); !errors.Is(err, ErrStale) {
			t.Fatalf("SetHash with the old hash: %v, want ErrStale", err)
		}
		if d := mustGet(t, s, "u", "d"); *d.Progress != "kept" {
			t.Fatalf("documents changed: %s", mtJSON(t, d))
		}
		if _, err := s.UpdateDocument(ctx, "u", "h2", "d", push("d", "new", 0)); err != nil {
			t.Fatalf("write with the new hash: %v", err)
		}
	})

	t.Run("SetHashRace", func(t *testing.T) {
		// Two changes made with the same current hash: one wins.
		s := open(t)
		mustCreate(t, s, "u", "h")
		const n = 8
		var wins, stale atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				switch err := s.SetHash(ctx, "u", "h", "new"+strconv.Itoa(i)); {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, ErrStale):
					stale.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 || stale.Load() != n-1 {
			t.Fatalf("wins %d stale %d, want 1 and %d", wins.Load(), stale.Load(), n-1)
		}
	})

	t.Run("GlobNames", func(t *testing.T) {
		s := open(t)
		names := []string{"a*", "a?", "[a]", "a", "ab", "a]", "*", "a\\*", "a b", "ü:/{x}"}
		for _, n := range names {
			mustCreate(t, s, n, "h")
			mustPut(t, s, n, "h", "doc", &Document{Progress: mtStr(n)})
		}
		for _, n := range []string{"a*", "a?", "[a]", "*"} {
			if err := s.DeleteUser(ctx, n, "h"); err != nil {
				t.Fatalf("DeleteUser(%q): %v", n, err)
			}
		}
		for _, n := range []string{"a", "ab", "a]", "a\\*", "a b", "ü:/{x}"} {
			if _, err := s.User(ctx, n); err != nil {
				t.Errorf("User(%q) after deleting glob names: %v", n, err)
			}
			if d := mustGet(t, s, n, "doc"); d == nil || *d.Progress != n {
				t.Errorf("document of %q after deleting glob names: %s", n, mtJSON(t, d))
			}
		}
		for _, n := range []string{"a*", "a?", "[a]", "*"} {
			if got := docIDs(t, s, n); len(got) != 0 {
				t.Errorf("%q still has documents %v", n, got)
			}
		}
	})

	t.Run("ConcurrentIncrements", func(t *testing.T) {
		s := open(t)
		mustCreate(t, s, "u", "h")
		const workers, each = 20, 10
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					_, err := s.UpdateDocument(ctx, "u", "h", "counter", func(cur *Document) (*Document, error) {
						n := 0
						if cur != nil && cur.Progress != nil {
							var err error
							if n, err = strconv.Atoi(*cur.Progress); err != nil {
								return nil, err
							}
						}
						return ApplyPush(cur, "counter", PushFields{Progress: strconv.Itoa(n + 1), Device: "d"}, 1, 5), nil
					})
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		d := mustGet(t, s, "u", "counter")
		if d == nil || *d.Progress != strconv.Itoa(workers*each) {
			t.Fatalf("counter = %s, want %d", mtJSON(t, d), workers*each)
		}
		if len(d.History) != 5 || d.History[4].Progress != strconv.Itoa(workers*each-1) {
			t.Fatalf("history %s", mtJSON(t, d.History))
		}
	})
}

func openTestBolt(t testing.TB, path string) *BoltStore {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBoltStore(t *testing.T) {
	t.Parallel()
	testStore(t, func(t *testing.T) Store {
		s := openTestBolt(t, filepath.Join(t.TempDir(), "kosync.db"))
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestBoltStoreReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "data", "kosync.db")
	s := openTestBolt(t, path)
	if err := s.CreateUser(ctx, "u", "h"); err != nil {
		t.Fatal(err)
	}
	want, err := s.UpdateDocument(ctx, "u", "h", "d", func(cur *Document) (*Document, error) {
		return ApplyPush(cur, "d", PushFields{Progress: "42", Percentage: 0.42, Device: "kpw", DeviceID: mtStr("id")}, 1770653038, 0), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second process (here: a second open of the file) fails clearly
	// instead of hanging.
	start := time.Now()
	if s2, err := OpenBolt(path, BoltOpenTimeout(100*time.Millisecond)); err == nil {
		_ = s2.Close()
		t.Fatal("second OpenBolt on a locked file succeeded")
	} else if !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second OpenBolt: unclear error %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second OpenBolt took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestBolt(t, path)
	defer s.Close()
	u, err := s.User(ctx, "u")
	if err != nil || u.Hash != "h" {
		t.Fatalf("user after reopen: %+v, %v", u, err)
	}
	got, err := s.Document(ctx, "u", "d")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("document after reopen: %s, %v; want %s", mtJSON(t, got), err, mtJSON(t, want))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v; want 0600", fi.Mode(), err)
	}
}

// redisStoreSeq gives every store of one Redis its own key prefix.
var redisStoreSeq atomic.Int64

func newTestRedisStore(t testing.TB, url string) (*RedisStore, *redis.Client) {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	prefix := fmt.Sprintf("kosynctest%d-%d:", time.Now().UnixNano(), redisStoreSeq.Add(1))
	return NewRedisStore(c, prefix), c
}

func TestRedisStore(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	testStore(t, func(t *testing.T) Store {
		s, _ := newTestRedisStore(t, srv.URL)
		return s
	})

	t.Run("Keys", func(t *testing.T) {
		ctx := context.Background()
		opt, _ := redis.ParseURL(srv.URL)
		c := redis.NewClient(opt)
		defer c.Close()
		s := NewRedisStore(c, "")
		if err := s.CreateUser(ctx, "k*y", "h"); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.DeleteUser(ctx, "k*y", "h") }()
		if _, err := s.UpdateDocument(ctx, "k*y", "h", "doc", func(*Document) (*Document, error) {
			return &Document{Progress: mtStr("p")}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if h, err := c.Get(ctx, "gateway:kosync:user:k*y").Result(); err != nil || h != "h" {
			t.Fatalf("user key: %q, %v", h, err)
		}
		if v, err := c.HGet(ctx, "gateway:kosync:docs:k*y", "doc").Result(); err != nil || !strings.Contains(v, `"progress":"p"`) {
			t.Fatalf("docs key: %q, %v", v, err)
		}
	})

	t.Run("WatchRetries", func(t *testing.T) {
		// The concurrent increments of the suite, counting the EXECs that
		// failed because a watched key changed, then forced conflicts.
		ctx := context.Background()
		s, c := newTestRedisStore(t, srv.URL)
		var conflicts atomic.Int64
		c.AddHook(txFailCounter{&conflicts})
		if err := s.CreateUser(ctx, "u", "h"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				for range 10 {
					if _, err := s.UpdateDocument(ctx, "u", "h", "c", func(cur *Document) (*Document, error) {
						n := 0
						if cur != nil {
							n, _ = strconv.Atoi(*cur.Progress)
						}
						return &Document{Progress: mtStr(strconv.Itoa(n + 1))}, nil
					}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		d, err := s.Document(ctx, "u", "c")
		if err != nil || *d.Progress != "200" {
			t.Fatalf("counter %s, %v; want 200", mtJSON(t, d), err)
		}
		t.Logf("%d conflicting transactions retried", conflicts.Load())

		// A deterministic conflict: another client writes the document
		// while fn runs; EXEC fails and the update is redone on the new value.
		conflicts.Store(0)
		calls := 0
		d, err = s.UpdateDocument(ctx, "u", "h", "c", func(cur *Document) (*Document, error) {
			calls++
			if calls == 1 {
				if err := c.HSet(ctx, s.docsKey("u"), "c", `{"progress":"1000"}`).Err(); err != nil {
					return nil, err
				}
			}
			n, _ := strconv.Atoi(*cur.Progress)
			return &Document{Progress: mtStr(strconv.Itoa(n + 1))}, nil
		})
		if err != nil || *d.Progress != "1001" || calls != 2 || conflicts.Load() != 1 {
			t.Fatalf("after a conflict: %s, %v, fn calls %d, conflicts %d; want 1001, 2 calls, 1 conflict",
				mtJSON(t, d), err, calls, conflicts.Load())
		}

		// A hash change during fn is a conflict too; the retry sees ErrStale.
		calls = 0
		_, err = s.UpdateDocument(ctx, "u", "h", "c", func(cur *Document) (*Document, error) {
			calls++
			if err := c.Set(ctx, s.userKey("u"), "other", 0).Err(); err != nil {
				return nil, err
			}
			return &Document{Progress: mtStr("lost")}, nil
		})
		if !errors.Is(err, ErrStale) || calls != 1 {
			t.Fatalf("hash changed during fn: %v (fn calls %d), want ErrStale", err, calls)
		}
		if d, _ := s.Document(ctx, "u", "c"); *d.Progress != "1001" {
			t.Fatalf("written despite the hash change: %s", mtJSON(t, d))
		}
	})

	t.Run("ErrorReplyIsNotUnavailable", func(t *testing.T) {
		ctx := context.Background()
		s, c := newTestRedisStore(t, srv.URL)
		// A user key of the wrong type makes Redis answer WRONGTYPE.
		if err := c.HSet(ctx, s.userKey("w"), "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
		_, err := s.User(ctx, "w")
		if err == nil || errors.Is(err, ErrUnavailable) {
			t.Fatalf("WRONGTYPE: %v; want an error that is not ErrUnavailable", err)
		}
		if _, err := s.UpdateDocument(ctx, "w", "h", "d", func(*Document) (*Document, error) { return &Document{}, nil }); err == nil || errors.Is(err, ErrUnavailable) {
			t.Fatalf("UpdateDocument WRONGTYPE: %v", err)
		}
	})
}

// txFailCounter is a go-redis hook counting transactions whose EXEC failed
// because a watched key changed.
type txFailCounter struct{ n *atomic.Int64 }

func (h txFailCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h txFailCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h txFailCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if errors.Is(err, redis.TxFailedErr) {
			h.n.Add(1)
		}
		return err
	}
}

func TestRedisStoreUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	s := NewRedisStore(c, "")
	fn := func(*Document) (*Document, error) { return &Document{}, nil }
	_, errUser := s.User(ctx, "u")
	_, errUpdate := s.UpdateDocument(ctx, "u", "h", "d", fn)
	_, errDoc := s.Document(ctx, "u", "d")
	_, errDocs := s.Documents(ctx, "u")
	for name, err := range map[string]error{
		"CreateUser":     s.CreateUser(ctx, "u", "h"),
		"User":           errUser,
		"UpdateDocument": errUpdate,
		"Document":       errDoc,
		"Documents":      errDocs,
		"DeleteUser":     s.DeleteUser(ctx, "u", "h"),
		"SetHash":        s.SetHash(ctx, "u", "h", "h2"),
	} {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with Redis down: %v; want ErrUnavailable", name, err)
		}
	}

	// A context that ends is a failure to reach the store too.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.User(cctx, "u"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("cancelled context: %v", err)
	}
}

func BenchmarkBoltUpdateDocument(b *testing.B) {
	s := openTestBolt(b, filepath.Join(b.TempDir(), "kosync.db"))
	defer s.Close()
	benchUpdateDocument(b, s)
}

func BenchmarkRedisUpdateDocument(b *testing.B) {
	srv := redistest.Start(b)
	s, _ := newTestRedisStore(b, srv.URL)
	benchUpdateDocument(b, s)
}

func benchUpdateDocument(b *testing.B, s Store) {
	ctx := context.Background()
	if err := s.CreateUser(ctx, "u", "h"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		_, err := s.UpdateDocument(ctx, "u", "h", "0123456789abcdef0123456789abcdef", func(cur *Document) (*Document, error) {
			return ApplyPush(cur, "0123456789abcdef0123456789abcdef", PushFields{
				Progress: "/body/DocFragment[" + strconv.Itoa(i) + "]/body/p[3]/text().17", Percentage: float64(i%100) / 100,
				Device: "Kobo Libra 2", DeviceID: mtStr("BDD3C5BCA1624FE996EB00FC7948468E"),
			}, int64(i), 0), nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// TestRedisStoreCluster runs the Store contract on a 3-master Redis
// Cluster, then proves the per-user hash tag: many users' transactions
// succeed, each user's two keys on one master, the users over all three.
func TestRedisStoreCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3, 0)
	c := cl.NewClusterClient(t)
	testStore(t, func(t *testing.T) Store {
		return NewRedisStore(c, fmt.Sprintf("kosynctest%d:", redisStoreSeq.Add(1)))
	})

	t.Run("UsersOverAllShards", func(t *testing.T) {
		ctx := context.Background()
		s := NewRedisStore(c, "")
		masters := map[*redistest.Server]bool{}
		for i := range 24 {
			name := fmt.Sprintf("reader%d", i)
			if i == 0 {
				name = "a{b}c" // a brace in the name: a tag of its slot
			}
			if err := s.CreateUser(ctx, name, "h"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.UpdateDocument(ctx, name, "h", "doc", func(*Document) (*Document, error) {
				return &Document{Progress: mtStr(name)}, nil
			}); err != nil {
				t.Fatalf("UpdateDocument(%q): %v", name, err)
			}
			if d, err := s.Document(ctx, name, "doc"); err != nil || d == nil || *d.Progress != name {
				t.Fatalf("Document(%q): %+v, %v", name, d, err)
			}
			m := cl.Holder(t, s.userKey(name))
			if m == nil || cl.Holder(t, s.docsKey(name)) != m {
				t.Fatalf("%q: user key on %v, docs key on %v", name, m, cl.Holder(t, s.docsKey(name)))
			}
			masters[m] = true
			if err := s.SetHash(ctx, name, "h", "h2"); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteUser(ctx, name, "h2"); err != nil {
				t.Fatal(err)
			}
			if cl.Holder(t, s.docsKey(name)) != nil {
				t.Fatalf("%q: docs key left after DeleteUser", name)
			}
		}
		if len(masters) != 3 {
			t.Fatalf("users on %d masters, want 3", len(masters))
		}
		if got := s.userKey("alice"); got != "gateway:kosync:user:{alice}" {
			t.Errorf("user key %q, want gateway:kosync:user:{alice}", got)
		}
	})
}
