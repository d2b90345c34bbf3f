package token

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redismode"
	"github.com/wsgateway/gateway/internal/slot"
)

// RedisStore keeps revocations in Redis, shared by every node, and announces
// them on a pub/sub channel. Keys (prefix as given to NewRedisStore):
//
//	<prefix>revoked:id:<16 hex>   value: the key's expiry, unix ms
//	<prefix>revoked:sub:<subject> value: T, unix ms (only ever raised)
//	<prefix>revocations           the channel; messages are JSON records
//	<prefix>marker                a random value, written once (see Marker)
//
// On a Redis Cluster (a *redis.ClusterClient) the script that stores a
// revocation also publishes it, with SPUBLISH, which Redis allows only on
// a channel in the slot of the script's keys: every key then carries the
// channel's name as its hash tag, and all of them live on the shard that
// owns the channel (revocations are few and small):
//
//	<prefix>revoked:{<prefix>revocations}:id:<16 hex>
//	<prefix>revoked:{<prefix>revocations}:sub:<subject>
//	<prefix>marker:{<prefix>revocations}
//
// The marker thus watches the shard that holds the revocations it
// protects. Watch subscribes with SSUBSCRIBE there.
//
// Each revocation key expires (PEXPIREAT) with its record. Durability across
// a Redis crash is Redis's own (AOF/RDB configuration): run Redis with
// persistence. Marker lets nodes notice when it was lost anyway. Safe for
// concurrent use.
type RedisStore struct {
	client  redis.UniversalClient
	channel string
	// revoked starts every revocation key: <prefix>revoked: on a single
	// Redis, with the channel's hash tag on a cluster.
	revoked string
	marker  string
	// pub is the command revokeScript publishes with (redismode).
	pub string
}

// NewRedisStore returns a store using client, whose key names all start
// with prefix (for instance "gateway:"). The client stays the caller's:
// Close does not close it. client may be a *redis.ClusterClient (see
// RedisStore).
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	s := &RedisStore{client: client, channel: prefix + "revocations", pub: redismode.PublishCommand(client)}
	s.revoked, s.marker = prefix+"revoked:", prefix+"marker"
	if redismode.Cluster(client) {
		s.revoked = slot.Colocated(prefix+"revoked:", s.channel, ":")
		s.marker = slot.Colocated(prefix+"marker:", s.channel, "")
	}
	return s
}

// Channel returns the name of the pub/sub channel.
func (s *RedisStore) Channel() string { return s.channel }

func (s *RedisStore) idKey(id KeyID) string        { return s.revoked + "id:" + id.String() }
func (s *RedisStore) subKey(subject string) string { return s.revoked + "sub:" + subject }

// revokeScript stores ARGV[1] in KEYS[1] unless the key already holds a
// number at least as large, sets its expiry to ARGV[2] (unix ms) when it
// stores, and always publishes ARGV[4] on channel ARGV[3] with the command
// ARGV[5] (PUBLISH, or SPUBLISH on a cluster). It returns 1 if it stored.
var revokeScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '')
local stored = 0
if cur == nil or cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  stored = 1
end
redis.call(ARGV[5], ARGV[3], ARGV[4])
return stored
`)

// Revoke stores rv (Expires filled in as described for Revocation) and
// publishes it, atomically, in one Lua script: a subject's T and a key id's
// expiry are only ever raised. A record already expired is neither stored
// nor published.
func (s *RedisStore) Revoke(ctx context.Context, rv Revocation) error {
	now := time.Now()
	rv, err := normalize(rv, now)
	if err != nil {
		return err
	}
	if !rv.Expires.After(now) {
		return nil
	}
	key, args, err := s.revokeArgs(rv)
	if err != nil {
		return err
	}
	if err := revokeScript.Run(ctx, s.client, []string{key}, args...).Err(); err != nil {
		return fmt.Errorf("token: redis revoke: %w", err)
	}
	return nil
}

// revokeArgs returns the key and arguments of revokeScript for rv, already
// normalized.
func (s *RedisStore) revokeArgs(rv Revocation) (key string, args []any, err error) {
	payload, err := encodeRecord(rv)
	if err != nil {
		return "", nil, err
	}
	var value int64
	switch rv.Kind {
	case KindID:
		key, value = s.idKey(rv.ID), rv.Expires.UnixMilli()
	case KindSubject:
		key, value = s.subKey(rv.Subject), rv.At.UnixMilli()
	}
	return key, []any{value, rv.Expires.UnixMilli(), s.channel, string(payload), s.pub}, nil
}

// RevokeAll stores and announces every unexpired record of all as Revoke
// does, in one pipeline: a node writes back with it the records Redis lost.
func (s *RedisStore) RevokeAll(ctx context.Context, all []Revocation) error {
	now := time.Now()
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, rv := range all {
			rv, err := normalize(rv, now)
			if err != nil {
				return err
			}
			if !rv.Expires.After(now) {
				continue
			}
			key, args, err := s.revokeArgs(rv)
			if err != nil {
				return err
			}
			revokeScript.Eval(ctx, p, []string{key}, args...)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("token: redis revoke: %w", err)
	}
	return nil
}

// markerScript returns the value of KEYS[1], first setting it to ARGV[1]
// if the key does not exist.
var markerScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// Marker returns the data marker: a random value the first node to find
// none writes under <prefix>marker (see RedisStore), without expiry, and every node
// remembers. known is the marker the caller saw before ("" if none). lost
// reports that Redis no longer holds it (the key is gone or was replaced):
// the Redis data was lost since, by a restart without persistence, a flush
// or a switch to another server. A new marker is then in place.
func (s *RedisStore) Marker(ctx context.Context, known string) (current string, lost bool, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	current, err = markerScript.Run(ctx, s.client, []string{s.marker}, hex.EncodeToString(b[:])).Text()
	if err != nil {
		return "", false, fmt.Errorf("token: redis marker: %w", err)
	}
	return current, known != "" && current != known, nil
}

// PeekMarker returns the data marker without writing one: "" when there is
// none.
func (s *RedisStore) PeekMarker(ctx context.Context) (string, error) {
	m, err := s.client.Get(ctx, s.marker).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("token: redis marker: %w", err)
	}
	return m, nil
}

// Load returns every unexpired revocation, found with SCAN (on every master
// of a cluster) and read with pipelined GETs.
func (s *RedisStore) Load(ctx context.Context) ([]Revocation, error) {
	var out []Revocation
	var err error
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			recs, err := s.loadFrom(ctx, c)
			mu.Lock()
			out = append(out, recs...)
			mu.Unlock()
			return err
		})
	} else {
		out, err = s.loadFrom(ctx, s.client)
	}
	if err != nil {
		return nil, fmt.Errorf("token: redis load: %w", err)
	}
	return out, nil
}

func (s *RedisStore) loadFrom(ctx context.Context, c redis.Cmdable) ([]Revocation, error) {
	var out []Revocation
	pattern := escapeGlob(s.revoked) + "*"
	idPrefix, subPrefix := s.revoked+"id:", s.revoked+"sub:"
	now := time.Now()
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return out, err
		}
		if len(keys) > 0 {
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Get(ctx, k)
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return out, err
			}
			for i, cmd := range cmds {
				v, err := cmd.(*redis.StringCmd).Result()
				if err != nil {
					continue // expired meanwhile
				}
				ms, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					continue
				}
				k := keys[i]
				var rv Revocation
				switch {
				case strings.HasPrefix(k, idPrefix):
					id, err := ParseKeyID(k[len(idPrefix):])
					if err != nil {
						continue
					}
					rv = Revocation{Kind: KindID, ID: id, Expires: msTime(ms)}
				case strings.HasPrefix(k, subPrefix):
					sub := k[len(subPrefix):]
					if ValidSubject(sub) != nil {
						continue
					}
					at := msTime(ms)
					rv = Revocation{Kind: KindSubject, Subject: sub, At: at, Expires: at.Add(MaxKeyTTL)}
				default:
					continue
				}
				if rv.Expires.After(now) {
					out = append(out, rv)
				}
			}
		}
		cursor = next
		if cursor == 0 {
			return out, nil
		}
	}
}

// escapeGlob escapes the characters SCAN MATCH treats specially.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\', '^', '-':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Watch subscribes to the revocation channel and calls onRevoke for every
// record announced (by any node, this one included; malformed messages are
// ignored) and onResync on every subscription confirmation: the first one
// and the one after each automatic reconnect. Announcements made while
// disconnected are lost, so onResync should reload with Load. Either
// callback may be nil. Callbacks run on Watch's goroutine, one at a time.
// Watch returns nil when ctx is done, or an error if the subscription is
// closed under it (the client was closed).
func (s *RedisStore) Watch(ctx context.Context, onRevoke func(Revocation), onResync func()) error {
	err := redismode.Listen(ctx, s.client, s.channel, func() {
		if onResync != nil {
			onResync()
		}
	}, func(payload string) {
		rv, err := decodeRecord([]byte(payload))
		if err == nil && onRevoke != nil {
			onRevoke(rv)
		}
	})
	if err != nil {
		return fmt.Errorf("token: redis watch: %w", err)
	}
	return nil
}

// Close does nothing: the client belongs to the caller.
func (s *RedisStore) Close() error { return nil }
