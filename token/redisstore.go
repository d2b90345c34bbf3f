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
)

// RedisStore keeps revocations in Redis, shared by every node, and announces
// them on a pub/sub channel. Keys (prefix as given to NewRedisStore):
//
//	<prefix>revoked:id:<16 hex>   value: the key's expiry, unix ms
//	<prefix>revoked:sub:<subject> value: T, unix ms (only ever raised)
//	<prefix>revocations           the channel; messages are JSON records
//	<prefix>marker                a random value, written once (see Marker)
//
// Each revocation key expires (PEXPIREAT) with its record. Durability across
// a Redis crash is Redis's own (AOF/RDB configuration): run Redis with
// persistence. Marker lets nodes notice when it was lost anyway. Safe for
// concurrent use.
type RedisStore struct {
	client  redis.UniversalClient
	prefix  string
	channel string
}

// NewRedisStore returns a store using client, whose key names all start
// with prefix (for instance "gateway:"). The client stays the caller's:
// Close does not close it.
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{client: client, prefix: prefix, channel: prefix + "revocations"}
}

// Channel returns the name of the pub/sub channel.
func (s *RedisStore) Channel() string { return s.channel }

func (s *RedisStore) idKey(id KeyID) string        { return s.prefix + "revoked:id:" + id.String() }
func (s *RedisStore) subKey(subject string) string { return s.prefix + "revoked:sub:" + subject }
func (s *RedisStore) markerKey() string            { return s.prefix + "marker" }

// revokeScript stores ARGV[1] in KEYS[1] unless the key already holds a
// number at least as large, sets its expiry to ARGV[2] (unix ms) when it
// stores, and always publishes ARGV[4] on channel ARGV[3]. It returns 1 if it
// stored.
var revokeScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '')
local stored = 0
if cur == nil or cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  stored = 1
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
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
	return key, []any{value, rv.Expires.UnixMilli(), s.channel, string(payload)}, nil
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
// none writes under <prefix>marker, without expiry, and every node
// remembers. known is the marker the caller saw before ("" if none). lost
// reports that Redis no longer holds it (the key is gone or was replaced):
// the Redis data was lost since, by a restart without persistence, a flush
// or a switch to another server. A new marker is then in place.
func (s *RedisStore) Marker(ctx context.Context, known string) (current string, lost bool, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	current, err = markerScript.Run(ctx, s.client, []string{s.markerKey()}, hex.EncodeToString(b[:])).Text()
	if err != nil {
		return "", false, fmt.Errorf("token: redis marker: %w", err)
	}
	return current, known != "" && current != known, nil
}

// PeekMarker returns the data marker without writing one: "" when there is
// none.
func (s *RedisStore) PeekMarker(ctx context.Context) (string, error) {
	m, err := s.client.Get(ctx, s.markerKey()).Result()
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
	pattern := escapeGlob(s.prefix) + "revoked:*"
	idPrefix, subPrefix := s.prefix+"revoked:id:", s.prefix+"revoked:sub:"
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
	ps := s.client.Subscribe(ctx, s.channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("token: redis watch: subscription closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" && onResync != nil {
					onResync()
				}
			case *redis.Message:
				rv, err := decodeRecord([]byte(m.Payload))
				if err == nil && onRevoke != nil {
					onRevoke(rv)
				}
			}
		}
	}
}

// Close does nothing: the client belongs to the caller.
func (s *RedisStore) Close() error { return nil }
