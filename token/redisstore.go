package token

import (
	"context"
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
//
// Each key expires (PEXPIREAT) with its record. Durability across a Redis
// crash is Redis's own (AOF/RDB configuration). Safe for concurrent use.
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
	payload, err := encodeRecord(rv)
	if err != nil {
		return err
	}
	var key string
	var value int64
	switch rv.Kind {
	case KindID:
		key, value = s.idKey(rv.ID), rv.Expires.UnixMilli()
	case KindSubject:
		key, value = s.subKey(rv.Subject), rv.At.UnixMilli()
	}
	err = revokeScript.Run(ctx, s.client, []string{key},
		value, rv.Expires.UnixMilli(), s.channel, string(payload)).Err()
	if err != nil {
		return fmt.Errorf("token: redis revoke: %w", err)
	}
	return nil
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
