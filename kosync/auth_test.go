package kosync

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/token"
)

// atStore is an in-memory Store with just enough for the authenticator:
// users and their hashes. Document methods are not used by these tests.
type atStore struct {
	mu    sync.Mutex
	users map[string]string
	err   error // returned by User when set
	reads int
}

func newATStore() *atStore { return &atStore{users: map[string]string{}} }

func (s *atStore) CreateUser(_ context.Context, name, hash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[name]; ok {
		return ErrUserExists
	}
	s.users[name] = hash
	return nil
}

func (s *atStore) User(_ context.Context, name string) (User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.err != nil {
		return User{}, s.err
	}
	h, ok := s.users[name]
	if !ok {
		return User{}, ErrUserNotFound
	}
	return User{Name: name, Hash: h}, nil
}

func (s *atStore) SetHash(_ context.Context, name, oldHash, newHash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.users[name]
	if !ok {
		return ErrUserNotFound
	}
	if h != oldHash {
		return ErrStale
	}
	s.users[name] = newHash
	return nil
}

func (s *atStore) DeleteUser(_ context.Context, name, hash string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.users[name]
	if !ok {
		return ErrUserNotFound
	}
	if h != hash {
		return ErrStale
	}
	delete(s.users, name)
	return nil
}

func (s *atStore) UpdateDocument(context.Context, string, string, string, func(*Document) (*Document, error)) (*Document, error) {
	return nil, errors.New("atStore: no documents")
}
func (s *atStore) Document(context.Context, string, string) (*Document, error) { return nil, nil }
func (s *atStore) Documents(context.Context, string) ([]*Document, error)      { return nil, nil }
func (s *atStore) Close() error                                                { return nil }

func testSecrets(t testing.TB, fill ...byte) *token.Secrets {
	t.Helper()
	if len(fill) == 0 {
		fill = []byte{'s'}
	}
	var list [][]byte
	for _, b := range fill {
		list = append(list, bytes.Repeat([]byte{b}, token.MinSecretLen))
	}
	s, err := token.NewSecrets(list...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// addUser registers name with key's hash and returns the hash.
func addUser(t testing.TB, a *authenticator, st *atStore, name, key string) string {
	t.Helper()
	h, err := a.hashKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(context.Background(), name, h); err != nil {
		t.Fatal(err)
	}
	return h
}

const (
	keyA = "5ebe2294ecd0e0f08eab7690d2a6ee69" // md5("secret")
	keyB = "0d107d09f5bbe40cade3de5c71e9e9b7" // md5("letmein")
)

func TestHashRoundTrip(t *testing.T) {
	a := newTestAuthenticator(t, newATStore())
	h, err := a.hashKey(keyA)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q: want the PHC argon2id form with m=19456,t=2,p=1", h)
	}
	p, ok := parseHash(h)
	if !ok || len(p.salt) != 16 || len(p.sum) != 32 {
		t.Fatalf("parseHash(%q) = %+v, %v", h, p, ok)
	}
	if !verifies(a, h, keyA) {
		t.Fatal("the key does not verify against its own hash")
	}
	if verifies(a, h, keyB) || verifies(a, h, strings.ToUpper(keyA)) || verifies(a, h, "") {
		t.Fatal("another key verified (the comparison is exact and case-sensitive)")
	}
	if h2, _ := a.hashKey(keyA); h2 == h {
		t.Fatal("two hashes of one key are equal: the salt is not random")
	}
	if _, ok := parseHash(fakeHash); !ok {
		t.Fatal("fakeHash does not parse: unknown users would be answered faster than known ones")
	}
	for _, bad := range []string{
		"", keyA, "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=18$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=0,p=1$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2$c2FsdHNhbHRzYWx0$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2,p=1$!!$" + strings.Repeat("A", 43),
		"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAA",
	} {
		if _, ok := parseHash(bad); ok {
			t.Errorf("parseHash(%q) accepted a malformed or out-of-bounds hash", bad)
		}
		if verifies(a, bad, keyA) {
			t.Errorf("verifyHash(%q) matched", bad)
		}
	}
}

func TestAuthenticateCache(t *testing.T) {
	st := newATStore()
	a := newTestAuthenticator(t, st)
	ctx := context.Background()
	hashA := addUser(t, a, st, "alice", keyA)

	runs := a.argonRuns.Load()
	u, err := a.authenticate(ctx, "alice", keyA, noAddr)
	if err != nil || u.Name != "alice" || u.Hash != hashA {
		t.Fatalf("authenticate = %+v, %v", u, err)
	}
	if got := a.argonRuns.Load() - runs; got != 1 {
		t.Fatalf("first verification ran argon2 %d times, want 1", got)
	}
	if hits, misses := a.stats(); hits != 0 || misses != 1 {
		t.Fatalf("stats = %d hits, %d misses; want 0, 1", hits, misses)
	}
	for range 3 {
		if _, err := a.authenticate(ctx, "alice", keyA, noAddr); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.argonRuns.Load() - runs; got != 1 {
		t.Fatalf("cached verifications ran argon2 (%d runs in all)", got)
	}
	if hits, misses := a.stats(); hits != 3 || misses != 1 {
		t.Fatalf("stats = %d hits, %d misses; want 3, 1", hits, misses)
	}
	// The cache keeps no key: only MACs.
	a.mu.Lock()
	for k, e := range a.cache {
		if bytes.Contains(k[:], []byte(keyA)) || strings.Contains(e.hash+e.user, keyA) {
			t.Error("the cache holds the key")
		}
	}
	a.mu.Unlock()

	// Wrong keys fail every time (failures are not cached).
	for range 2 {
		if _, err := a.authenticate(ctx, "alice", keyB, noAddr); !errors.Is(err, errUnauthorized) {
			t.Fatalf("wrong key: %v, want errUnauthorized", err)
		}
	}

	// A password change (made on any node: here straight in the store)
	// makes the cached entry worthless although it is still there.
	hashB, _ := a.hashKey(keyB)
	if err := st.SetHash(ctx, "alice", hashA, hashB); err != nil {
		t.Fatal(err)
	}
	if _, err := a.authenticate(ctx, "alice", keyA, noAddr); !errors.Is(err, errUnauthorized) {
		t.Fatalf("old key after SetHash: %v, want errUnauthorized", err)
	}
	if u, err := a.authenticate(ctx, "alice", keyB, noAddr); err != nil || u.Hash != hashB {
		t.Fatalf("new key: %+v, %v", u, err)
	}

	// Expiry.
	now := time.Now()
	a.now = func() time.Time { return now.Add(defaultCacheTTL + time.Second) }
	runs = a.argonRuns.Load()
	if _, err := a.authenticate(ctx, "alice", keyB, noAddr); err != nil {
		t.Fatal(err)
	}
	if a.argonRuns.Load() == runs {
		t.Fatal("an expired entry was used")
	}
	a.now = time.Now

	// Eviction.
	a.evictUser("alice")
	a.mu.Lock()
	n, idx := len(a.cache), len(a.byUser)
	a.mu.Unlock()
	if n != 0 || idx != 0 {
		t.Fatalf("after evictUser: %d entries, %d index users", n, idx)
	}
	runs = a.argonRuns.Load()
	if _, err := a.authenticate(ctx, "alice", keyB, noAddr); err != nil {
		t.Fatal(err)
	}
	if a.argonRuns.Load() == runs {
		t.Fatal("no verification after eviction")
	}

	// Store errors come back as they are.
	st.err = ErrUnavailable
	if _, err := a.authenticate(ctx, "alice", keyB, noAddr); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("store down: %v, want ErrUnavailable", err)
	}
}

func TestAuthenticateSingleflight(t *testing.T) {
	st := newATStore()
	a := newTestAuthenticator(t, st)
	addUser(t, a, st, "bob", keyA)
	runs := a.argonRuns.Load()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() {
			<-start
			_, err := a.authenticate(context.Background(), "bob", keyA, noAddr)
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := a.argonRuns.Load() - runs; got != 1 {
		t.Fatalf("10 concurrent identical verifications ran argon2 %d times, want 1", got)
	}
}

func TestAuthenticateUnknownUser(t *testing.T) {
	st := newATStore()
	a := newTestAuthenticator(t, st)
	runs := a.argonRuns.Load()
	if _, err := a.authenticate(context.Background(), "nobody", keyA, noAddr); !errors.Is(err, errUnauthorized) {
		t.Fatalf("unknown user: %v, want errUnauthorized", err)
	}
	if got := a.argonRuns.Load() - runs; got != 1 {
		t.Fatalf("unknown user ran argon2 %d times, want 1 (against the fake hash)", got)
	}
	a.mu.Lock()
	n := len(a.cache)
	a.mu.Unlock()
	if n != 0 {
		t.Fatal("an unknown user was cached")
	}
}

func TestCacheBounded(t *testing.T) {
	a := newTestAuthenticator(t, newATStore())
	a.max = 3
	for i := range 10 {
		user := string(rune('a' + i%4))
		a.remember(a.mac(user, strings.Repeat("k", i+1)), user, "h")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) > 3 {
		t.Fatalf("%d entries, bound 3", len(a.cache))
	}
	n := 0
	for user, set := range a.byUser {
		for k := range set {
			if e, ok := a.cache[k]; !ok || e.user != user {
				t.Fatalf("index entry of %q not in the cache", user)
			}
			n++
		}
	}
	if n != len(a.cache) {
		t.Fatalf("index has %d entries, cache %d", n, len(a.cache))
	}
}

// noAddr is the client address of unit tests: no address, never limited.
var noAddr netip.Addr

// newTestAuthenticator is the authenticator of st with default bounds.
func newTestAuthenticator(t testing.TB, st Store) *authenticator {
	t.Helper()
	var o Options
	if err := o.applyHashDefaults(); err != nil {
		t.Fatal(err)
	}
	return newAuthenticator(st, testSecrets(t), o)
}

// verifies is verifyHash for tests, which never fill the pool.
func verifies(a *authenticator, encoded, key string) bool {
	ok, err := verifyHash(a, encoded, key)
	if err != nil {
		panic(err)
	}
	return ok
}
