package kosync

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redismode"
	"github.com/wsgateway/gateway/internal/slot"
)

// DefaultRedisPrefix is the key prefix NewRedisStore uses when given "".
const DefaultRedisPrefix = "gateway:"

// redisMaxAttempts bounds the optimistic transactions of a RedisStore: a
// WATCHed key changed by another client makes EXEC fail and the whole
// read-modify-write is retried, at most this many times, with a short
// random backoff between attempts.
const redisMaxAttempts = 50

// redisMaxBackoff caps the random pause before a retry.
const redisMaxBackoff = 5 * time.Millisecond

// RedisStore is a Store in Redis, shared by every node of a cluster. Keys:
//
//	<prefix>kosync:user:<name>  string: the user's hash
//	<prefix>kosync:docs:<name>  hash: document id -> Document JSON
//
// Names are used verbatim in keys and never in a KEYS/SCAN pattern. Checks
// and writes are optimistic transactions (WATCH/MULTI/EXEC), retried on
// conflict; an UpdateDocument fn may therefore run more than once and must
// have no side effects.
//
// A transaction touches both keys of a user, so on a Redis Cluster (a
// *redis.ClusterClient) they share a hash tag, the user's name, and the
// users spread over the shards:
//
//	<prefix>kosync:user:{<name>}  <prefix>kosync:docs:{<name>}
//
// (slot.Colocated: a name with a brace becomes {<tag>}=<name>). On a
// single Redis the names stay as above, without the tag.
//
// Failures to reach Redis (connection refused, timeouts, a closed
// connection, pool exhaustion, the context ending) wrap ErrUnavailable;
// error replies from Redis do not.
type RedisStore struct {
	c      redis.UniversalClient
	prefix string
	// tagged: the keys carry the user's hash tag (a cluster).
	tagged bool
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store using client with key prefix prefix
// (DefaultRedisPrefix if ""). The store does not own the client: Close
// leaves it open.
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &RedisStore{c: client, prefix: prefix, tagged: redismode.Cluster(client)}
}

func (s *RedisStore) userKey(name string) string { return s.key("kosync:user:", name) }
func (s *RedisStore) docsKey(name string) string { return s.key("kosync:docs:", name) }

// key is the key of kind ("kosync:user:", "kosync:docs:") for a user.
func (s *RedisStore) key(kind, name string) string {
	if s.tagged {
		return slot.Colocated(s.prefix+kind, name, "")
	}
	return s.prefix + kind + name
}

// Close implements Store. It does not close the client, which belongs to
// the caller.
func (s *RedisStore) Close() error { return nil }

// CreateUser implements Store with SET NX.
func (s *RedisStore) CreateUser(ctx context.Context, name, hash string) error {
	ok, err := s.c.SetNX(ctx, s.userKey(name), hash, 0).Result()
	if err != nil {
		return redisErr(err)
	}
	if !ok {
		return ErrUserExists
	}
	return nil
}

// User implements Store.
func (s *RedisStore) User(ctx context.Context, name string) (User, error) {
	hash, err := s.c.Get(ctx, s.userKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return User{}, ErrUserNotFound
	}
	if err != nil {
		return User{}, redisErr(err)
	}
	return User{Name: name, Hash: hash}, nil
}

// UpdateDocument implements Store: WATCH the user's two keys, read the hash
// and the document, run fn, then MULTI HSET EXEC; retried if a watched key
// changed meanwhile.
func (s *RedisStore) UpdateDocument(ctx context.Context, user, hash, id string, fn func(cur *Document) (*Document, error)) (*Document, error) {
	uk, dk := s.userKey(user), s.docsKey(user)
	var out *Document
	err := s.watch(ctx, func(tx *redis.Tx) error {
		out = nil
		var get *redis.StringCmd
		var hget *redis.StringCmd
		// Both reads in one round trip; each command's error is checked
		// below (redis.Nil is an answer, not a failure).
		_, _ = tx.Pipelined(ctx, func(p redis.Pipeliner) error {
			get = p.Get(ctx, uk)
			hget = p.HGet(ctx, dk, id)
			return nil
		})
		cur, err := get.Result()
		switch {
		case errors.Is(err, redis.Nil):
			return ErrStale
		case err != nil:
			return redisErr(err)
		case cur != hash:
			return ErrStale
		}
		var old *Document
		v, err := hget.Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return redisErr(err)
		default:
			if old, err = decodeDocument(id, v); err != nil {
				return err
			}
		}
		next, b, err := applyFn(fn, id, old)
		if err != nil {
			return err
		}
		if _, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, dk, id, b)
			return nil
		}); err != nil {
			return redisErr(err)
		}
		out = next
		return nil
	}, uk, dk)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Document implements Store.
func (s *RedisStore) Document(ctx context.Context, user, id string) (*Document, error) {
	v, err := s.c.HGet(ctx, s.docsKey(user), id).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, redisErr(err)
	}
	return decodeDocument(id, v)
}

// Documents implements Store.
func (s *RedisStore) Documents(ctx context.Context, user string) ([]*Document, error) {
	m, err := s.c.HGetAll(ctx, s.docsKey(user)).Result()
	if err != nil {
		return nil, redisErr(err)
	}
	out := make([]*Document, 0, len(m))
	for id, v := range m {
		d, err := decodeDocument(id, []byte(v))
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// DeleteUser implements Store: WATCH both keys, check the hash, MULTI DEL.
func (s *RedisStore) DeleteUser(ctx context.Context, name, hash string) error {
	uk, dk := s.userKey(name), s.docsKey(name)
	return s.watch(ctx, func(tx *redis.Tx) error {
		if err := checkHash(ctx, tx, uk, hash); err != nil {
			return err
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, uk, dk)
			return nil
		})
		return redisErr(err)
	}, uk, dk)
}

// SetHash implements Store: WATCH the user key, check, MULTI SET.
func (s *RedisStore) SetHash(ctx context.Context, name, oldHash, newHash string) error {
	uk := s.userKey(name)
	return s.watch(ctx, func(tx *redis.Tx) error {
		if err := checkHash(ctx, tx, uk, oldHash); err != nil {
			return err
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, uk, newHash, 0)
			return nil
		})
		return redisErr(err)
	}, uk)
}

// checkHash reads the hash at uk inside tx: ErrUserNotFound if none,
// ErrStale if it is not want.
func checkHash(ctx context.Context, tx *redis.Tx, uk, want string) error {
	cur, err := tx.Get(ctx, uk).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return ErrUserNotFound
	case err != nil:
		return redisErr(err)
	case cur != want:
		return ErrStale
	}
	return nil
}

// watch runs fn in an optimistic transaction on keys, retrying while EXEC
// fails because a watched key changed. fn returns classified errors (or
// redis.TxFailedErr); errors from WATCH itself are classified here.
func (s *RedisStore) watch(ctx context.Context, fn func(tx *redis.Tx) error, keys ...string) error {
	for attempt := 1; ; attempt++ {
		ran := false
		err := s.c.Watch(ctx, func(tx *redis.Tx) error {
			ran = true
			return fn(tx)
		}, keys...)
		if err == nil {
			return nil
		}
		var ue userErr
		if errors.As(err, &ue) {
			return ue.err
		}
		if !errors.Is(err, redis.TxFailedErr) {
			if ran {
				return err
			}
			return redisErr(err)
		}
		if attempt == redisMaxAttempts {
			return fmt.Errorf("kosync: redis: gave up after %d conflicting transactions on %q: %w", attempt, keys[0], err)
		}
		// Contention: pause a little, at random, so that the racers spread.
		pause := time.Duration(attempt) * 200 * time.Microsecond
		if pause > redisMaxBackoff {
			pause = redisMaxBackoff
		}
		t := time.NewTimer(rand.N(pause) + 1)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		case <-t.C:
		}
	}
}

// redisErr classifies an error from a Redis command: redis.Nil and
// redis.TxFailedErr come back as they are, an error reply from Redis is
// wrapped plainly, and anything else (the network, the pool, the context)
// wraps ErrUnavailable.
func redisErr(err error) error {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, redis.TxFailedErr) {
		return err
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		return fmt.Errorf("kosync: redis: %w", err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
