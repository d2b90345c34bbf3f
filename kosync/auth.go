package kosync

// Authentication of KOReader keys.
//
// The x-auth-key header is the hex MD5 of the user's password and arrives on
// every sync call: it is password-equivalent, so the store keeps only an
// argon2id hash of it (the 32-character string is the password). Hashing
// costs tens of milliseconds and 19 MiB, and KOReader times progress calls
// out after 5 s, so successful verifications are cached for a few minutes
// (the verified-key cache):
//
//   - the cache key is HMAC-SHA256(derived server secret, user ‖ 0x00 ‖ key):
//     the key itself is never kept;
//   - the value is the stored hash the key was verified against. A hit
//     counts only while that hash is still the user's current one, which the
//     store is asked for on every call (a cheap read). A password change or
//     a deletion therefore invalidates the entries on every node at once,
//     without eviction messages; local eviction (evictUser) only frees
//     memory early;
//   - concurrent misses for the same user, key and hash verify once
//     (singleflight).
//
// An unknown user still costs one verification against a fixed fake hash
// (caddy's fakePassword), so response times do not tell which names exist.
// Every hash runs on the bounded hash pool, and every verification that may
// fail is charged to the client's address first (throttle.go).

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/argon2"
	"golang.org/x/sync/singleflight"

	"github.com/wsgateway/gateway/token"
)

// errUnauthorized is every authentication failure that is the client's:
// unknown user, wrong key, credentials changed meanwhile. Store failures are
// returned as they are.
var errUnauthorized = errors.New("kosync: unauthorized")

// The reasons of errUnauthorized that authentication itself finds (logged,
// never answered: every one is the same 401).
var (
	errUnknownUser = fmt.Errorf("%w: unknown user", errUnauthorized)
	errWrongKey    = fmt.Errorf("%w: wrong key", errUnauthorized)
)

// Argon2id parameters of new hashes (OWASP's minimum: m = 19 MiB, t = 2,
// p = 1). Verification reads the parameters from each hash, so they can be
// raised later without invalidating stored hashes.
const (
	argonMemory  = 19 * 1024 // KiB
	argonTime    = 2
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// Bounds on the parameters verify accepts from a stored hash, so that a
// corrupted or hostile store entry cannot make one verification allocate
// gigabytes or run for minutes.
const (
	maxArgonMemory  = 256 * 1024 // KiB
	maxArgonTime    = 16
	maxArgonThreads = 16
)

// Defaults of the verified-key cache.
const (
	// defaultCacheTTL is how long a verification is trusted.
	defaultCacheTTL = 5 * time.Minute
	// defaultCacheSize bounds the entries; past it an arbitrary entry (Go
	// map order) is evicted, expired ones first when found.
	defaultCacheSize = 100_000
)

// fakeHash is verified against for unknown users: a well-formed hash of the
// current parameters that no key matches in practice, so the failure takes
// as long as a real one.
const fakeHash = "$argon2id$v=19$m=19456,t=2,p=1$a29zeW5jLWZha2Utc2FsdA$tRnW1Jg3t4zf0hQ0m7wLJnyPp5n0n7b2l5Pp0oJqQ0c"

// authenticator verifies KOReader keys against the store, with the
// verified-key cache. Goroutine-safe.
type authenticator struct {
	store  Store
	macKey []byte
	pool   *hashPool
	limit  *addrLimiter // nil: no per-address limit
	sf     singleflight.Group
	ttl    time.Duration
	max    int
	now    func() time.Time

	mu     sync.Mutex
	cache  map[[sha256.Size]byte]cacheEntry
	byUser map[string]map[[sha256.Size]byte]struct{}

	hits, misses atomic.Uint64
	rateLimited  prometheus.Counter
	// argonRuns counts argon2 computations (hashes and verifications); a
	// test hook and a cost indicator.
	argonRuns atomic.Uint64
}

type cacheEntry struct {
	user    string
	hash    string // the stored hash the key was verified against
	expires time.Time
}

// newAuthenticator returns the authenticator of store, with the hashing
// bounds of o (defaults applied). The cache MAC key is derived from the
// signing secret (the cache lives in memory only, so rotation does not
// matter to it).
func newAuthenticator(store Store, secrets *token.Secrets, o Options) *authenticator {
	return &authenticator{
		store:  store,
		macKey: secrets.Derive("kosync-keycache-v1")[0],
		pool:   newHashPool(o.HashWorkers, o.HashQueue),
		limit:  newAddrLimiter(o.AuthFailuresPerMinute, o.AuthFailureBurst, o.AuthLimiterSlots),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_kosync_auth_rate_limited_total",
			Help: "KOReader requests answered 429 because their address made too many failed attempts.",
		}),
		ttl:    defaultCacheTTL,
		max:    defaultCacheSize,
		now:    time.Now,
		cache:  make(map[[sha256.Size]byte]cacheEntry),
		byUser: make(map[string]map[[sha256.Size]byte]struct{}),
	}
}

// authenticate checks user's key, for a request from the address from: the
// user's record is read from the store every time, then the key is checked
// against its hash (cache first). It returns the user (with the hash the
// key matched, for atomic writes), errUnknownUser or errWrongKey (both
// errUnauthorized), a *rateLimitedError, errHashBusy, or a store error.
func (a *authenticator) authenticate(ctx context.Context, user, key string, from netip.Addr) (User, error) {
	u, err := a.store.User(ctx, user)
	if errors.Is(err, ErrUserNotFound) {
		if err := a.fakeVerify(user, key, from); err != nil {
			return User{}, err
		}
		return User{}, errUnknownUser
	}
	if err != nil {
		return User{}, err
	}
	if err := a.checkKey(u, key, from); err != nil {
		return User{}, err
	}
	return u, nil
}

// fakeVerify spends the time of a real verification for an unknown user;
// the attempt is charged to from. The error is the limiter's or the
// pool's.
func (a *authenticator) fakeVerify(user, key string, from netip.Addr) error {
	if err := a.takeAttempt(from); err != nil {
		return err
	}
	if _, err := a.verifyShared(a.mac(user, key), fakeHash, key); err != nil {
		a.limit.refund(from) // not an attempt: nothing was checked
		return err
	}
	return nil
}

// checkKey checks that key is u's key: a cache hit for u's current hash,
// or a verification (once for concurrent identical calls) charged to from
// beforehand and refunded on success, whose success is cached. It returns
// nil, errWrongKey, a *rateLimitedError or errHashBusy.
func (a *authenticator) checkKey(u User, key string, from netip.Addr) error {
	k := a.mac(u.Name, key)
	now := a.now()
	a.mu.Lock()
	e, ok := a.cache[k]
	a.mu.Unlock()
	if ok && e.hash == u.Hash && now.Before(e.expires) {
		a.hits.Add(1)
		return nil
	}
	a.misses.Add(1)
	if err := a.takeAttempt(from); err != nil {
		return err
	}
	match, err := a.verifyShared(k, u.Hash, key)
	if err != nil || match {
		a.limit.refund(from)
	}
	if err != nil {
		return err
	}
	if !match {
		return errWrongKey
	}
	a.remember(k, u.Name, u.Hash)
	return nil
}

// takeAttempt charges an attempt that may hash to from's bucket; a
// *rateLimitedError (counted) when it is empty.
func (a *authenticator) takeAttempt(from netip.Addr) error {
	err := a.limit.take(from)
	if err != nil {
		a.rateLimited.Inc()
	}
	return err
}

// verifyShared runs verifyHash once for concurrent calls with the same
// cache key and hash; the error is errHashBusy.
func (a *authenticator) verifyShared(k [sha256.Size]byte, hash, key string) (bool, error) {
	v, err, _ := a.sf.Do(string(k[:])+hash, func() (any, error) {
		return verifyHash(a, hash, key)
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// remember caches that key (as its MAC k) of user matches hash.
func (a *authenticator) remember(k [sha256.Size]byte, user, hash string) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cache[k]; !ok && len(a.cache) >= a.max {
		a.evictSomeLocked(now)
	}
	a.cache[k] = cacheEntry{user: user, hash: hash, expires: now.Add(a.ttl)}
	set := a.byUser[user]
	if set == nil {
		set = make(map[[sha256.Size]byte]struct{}, 1)
		a.byUser[user] = set
	}
	set[k] = struct{}{}
}

// evictSomeLocked makes room: it drops expired entries among the first few
// it looks at (in Go's randomised map order), or else one arbitrary entry.
// a.mu is held.
func (a *authenticator) evictSomeLocked(now time.Time) {
	const look = 16
	n, dropped := 0, false
	var first [sha256.Size]byte
	for k, e := range a.cache {
		if n == 0 {
			first = k
		}
		if !now.Before(e.expires) {
			a.dropLocked(k, e.user)
			dropped = true
		}
		if n++; n == look {
			break
		}
	}
	if !dropped && n > 0 {
		a.dropLocked(first, a.cache[first].user)
	}
}

func (a *authenticator) dropLocked(k [sha256.Size]byte, user string) {
	delete(a.cache, k)
	if set := a.byUser[user]; set != nil {
		delete(set, k)
		if len(set) == 0 {
			delete(a.byUser, user)
		}
	}
}

// evictUser drops the cached verifications of user (account deleted,
// password changed). Stale entries could not authenticate anyway, since a
// hit needs the current hash; this frees them early.
func (a *authenticator) evictUser(user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.byUser[user] {
		delete(a.cache, k)
	}
	delete(a.byUser, user)
}

// mac is the cache key of (user, key).
func (a *authenticator) mac(user, key string) [sha256.Size]byte {
	m := hmac.New(sha256.New, a.macKey)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(key))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// stats returns the cache hits and misses so far.
func (a *authenticator) stats() (hits, misses uint64) { return a.hits.Load(), a.misses.Load() }

// CacheStats returns the verified-key cache's hits and misses so far (the
// gateway_kosync_key_cache_requests_total metric).
func (s *Service) CacheStats() (hits, misses uint64) { return s.auth.stats() }

// argon runs argon2id on the hash pool; errHashBusy when its queue is
// full.
func (a *authenticator) argon(key string, salt []byte, t, m uint32, p uint8, n uint32) ([]byte, error) {
	var sum []byte
	err := a.pool.run(func() {
		a.argonRuns.Add(1)
		sum = argon2.IDKey([]byte(key), salt, t, m, p, n)
	})
	return sum, err
}

// chargedHash hashes a new key (a registration, a password change) after
// charging the attempt to from's bucket: every hash a client can ask for
// at will is limited per address, not only failed logins. A hash the pool
// refused (busy) gives the attempt back.
func (a *authenticator) chargedHash(from netip.Addr, key string) (string, error) {
	if err := a.takeAttempt(from); err != nil {
		return "", err
	}
	hash, err := a.hashKey(key)
	if err != nil {
		a.limit.refund(from)
	}
	return hash, err
}

// hashKey returns the encoded argon2id hash of a KOReader key:
// "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>", base64 without padding
// (the PHC string format).
func (a *authenticator) hashKey(key string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("kosync: salt: %w", err)
	}
	sum, err := a.argon(key, salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(sum)), nil
}

// verifyHash reports whether key matches the encoded hash, comparing in
// constant time. A malformed hash matches nothing. The error is
// errHashBusy.
func verifyHash(a *authenticator, encoded, key string) (bool, error) {
	p, ok := parseHash(encoded)
	if !ok {
		return false, nil
	}
	sum, err := a.argon(key, p.salt, p.t, p.m, p.p, uint32(len(p.sum)))
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(sum, p.sum) == 1, nil
}

type argonParams struct {
	m, t      uint32
	p         uint8
	salt, sum []byte
}

// parseHash decodes "$argon2id$v=19$m=M,t=T,p=P$salt$hash" within the
// accepted bounds.
func parseHash(s string) (argonParams, bool) {
	var ap argonParams
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return ap, false
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return ap, false
	}
	var vals [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		v, ok := strings.CutPrefix(params[i], name)
		if !ok {
			return ap, false
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return ap, false
		}
		vals[i] = n
	}
	if vals[0] < 8 || vals[0] > maxArgonMemory || vals[1] < 1 || vals[1] > maxArgonTime || vals[2] < 1 || vals[2] > maxArgonThreads {
		return ap, false
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return ap, false
	}
	sum, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(sum) < 16 || len(sum) > 64 {
		return ap, false
	}
	ap.m, ap.t, ap.p, ap.salt, ap.sum = uint32(vals[0]), uint32(vals[1]), uint8(vals[2]), salt, sum
	return ap, true
}
