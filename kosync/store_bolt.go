package kosync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bolt layout: bucket "users" maps a user name to boltUser JSON; bucket
// "docs" holds one nested bucket per user name, mapping a document id to
// Document JSON. Keys are the raw bytes of names and ids.
var (
	boltUsersBucket = []byte("users")
	boltDocsBucket  = []byte("docs")
)

// DefaultBoltOpenTimeout bounds how long OpenBolt waits for the file lock
// held by another process.
const DefaultBoltOpenTimeout = 5 * time.Second

type boltUser struct {
	Hash string `json:"hash"`
}

// BoltStore is a Store in one bbolt file: a single node's storage. Every
// write is committed with fsync before it returns, so an acknowledged write
// survives a crash.
type BoltStore struct {
	db *bolt.DB
}

var _ Store = (*BoltStore)(nil)

// BoltOption configures OpenBolt.
type BoltOption func(*boltConfig)

type boltConfig struct {
	timeout time.Duration
}

// BoltOpenTimeout sets how long OpenBolt waits for the file's lock when
// another process holds it (default DefaultBoltOpenTimeout; d <= 0 keeps the
// default, bbolt's "wait forever" is not offered).
func BoltOpenTimeout(d time.Duration) BoltOption {
	return func(c *boltConfig) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// OpenBolt opens (creating it with mode 0600 if needed, and its directory
// with 0700) the bbolt database at path, e.g. <data-dir>/kosync.db. If
// another process holds the file, it fails after the open timeout with an
// error saying so.
func OpenBolt(path string, opts ...BoltOption) (*BoltStore, error) {
	cfg := boltConfig{timeout: DefaultBoltOpenTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("kosync: bolt: create directory: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: cfg.timeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("kosync: bolt: open %s: file is locked by another process (waited %v): %w", path, cfg.timeout, err)
		}
		return nil, fmt.Errorf("kosync: bolt: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(boltUsersBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(boltDocsBucket)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("kosync: bolt: init %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Close closes the database file.
func (s *BoltStore) Close() error {
	if err := s.db.Close(); err != nil {
		return boltErr(err)
	}
	return nil
}

// CreateUser implements Store.
func (s *BoltStore) CreateUser(ctx context.Context, name, hash string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(boltUsersBucket)
		if users.Get([]byte(name)) != nil {
			return ErrUserExists
		}
		b, err := json.Marshal(boltUser{Hash: hash})
		if err != nil {
			return err
		}
		if err := users.Put([]byte(name), b); err != nil {
			return err
		}
		// Documents of an earlier account of this name are gone already
		// (DeleteUser); drop any leftover anyway so a new account never
		// inherits data.
		return deleteBucketIfExists(tx.Bucket(boltDocsBucket), []byte(name))
	})
}

// User implements Store.
func (s *BoltStore) User(ctx context.Context, name string) (User, error) {
	if err := ctx.Err(); err != nil {
		return User{}, err
	}
	var u User
	err := s.view(func(tx *bolt.Tx) error {
		hash, ok, err := boltGetHash(tx, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrUserNotFound
		}
		u = User{Name: name, Hash: hash}
		return nil
	})
	return u, err
}

// UpdateDocument implements Store: the hash check, fn and the write run in
// one bbolt write transaction.
func (s *BoltStore) UpdateDocument(ctx context.Context, user, hash, id string, fn func(cur *Document) (*Document, error)) (*Document, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out *Document
	err := s.update(func(tx *bolt.Tx) error {
		cur, ok, err := boltGetHash(tx, user)
		if err != nil {
			return err
		}
		if !ok || cur != hash {
			return ErrStale
		}
		docs, err := tx.Bucket(boltDocsBucket).CreateBucketIfNotExists([]byte(user))
		if err != nil {
			return err
		}
		var old *Document
		if v := docs.Get([]byte(id)); v != nil {
			if old, err = decodeDocument(id, v); err != nil {
				return err
			}
		}
		next, b, err := applyFn(fn, id, old)
		if err != nil {
			return err
		}
		if err := docs.Put([]byte(id), b); err != nil {
			return err
		}
		out = next
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Document implements Store.
func (s *BoltStore) Document(ctx context.Context, user, id string) (*Document, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var d *Document
	err := s.view(func(tx *bolt.Tx) error {
		docs := tx.Bucket(boltDocsBucket).Bucket([]byte(user))
		if docs == nil {
			return nil
		}
		v := docs.Get([]byte(id))
		if v == nil {
			return nil
		}
		var err error
		d, err = decodeDocument(id, v)
		return err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Documents implements Store.
func (s *BoltStore) Documents(ctx context.Context, user string) ([]*Document, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*Document
	err := s.view(func(tx *bolt.Tx) error {
		docs := tx.Bucket(boltDocsBucket).Bucket([]byte(user))
		if docs == nil {
			return nil
		}
		return docs.ForEach(func(k, v []byte) error {
			if v == nil { // a nested bucket: none are written
				return nil
			}
			d, err := decodeDocument(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteUser implements Store.
func (s *BoltStore) DeleteUser(ctx context.Context, name, hash string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		cur, ok, err := boltGetHash(tx, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrUserNotFound
		}
		if cur != hash {
			return ErrStale
		}
		if err := tx.Bucket(boltUsersBucket).Delete([]byte(name)); err != nil {
			return err
		}
		return deleteBucketIfExists(tx.Bucket(boltDocsBucket), []byte(name))
	})
}

// SetHash implements Store.
func (s *BoltStore) SetHash(ctx context.Context, name, oldHash, newHash string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		cur, ok, err := boltGetHash(tx, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrUserNotFound
		}
		if cur != oldHash {
			return ErrStale
		}
		b, err := json.Marshal(boltUser{Hash: newHash})
		if err != nil {
			return err
		}
		return tx.Bucket(boltUsersBucket).Put([]byte(name), b)
	})
}

// update and view run fn in a transaction. The Store's sentinel errors and
// fn's own errors come back as they are; everything else is wrapped as a
// bolt error.
func (s *BoltStore) update(fn func(tx *bolt.Tx) error) error { return boltResult(s.db.Update(fn)) }
func (s *BoltStore) view(fn func(tx *bolt.Tx) error) error   { return boltResult(s.db.View(fn)) }

func boltResult(err error) error {
	var ue userErr
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ue):
		return ue.err
	case errors.Is(err, ErrUserExists), errors.Is(err, ErrUserNotFound), errors.Is(err, ErrStale), errors.Is(err, errNilDocument):
		return err
	default:
		return boltErr(err)
	}
}

func boltErr(err error) error { return fmt.Errorf("kosync: bolt: %w", err) }

// boltGetHash reads name's hash; ok is false if there is no such user.
func boltGetHash(tx *bolt.Tx, name string) (hash string, ok bool, err error) {
	v := tx.Bucket(boltUsersBucket).Get([]byte(name))
	if v == nil {
		return "", false, nil
	}
	var u boltUser
	if err := json.Unmarshal(v, &u); err != nil {
		return "", false, fmt.Errorf("decode user %q: %w", name, err)
	}
	return u.Hash, true, nil
}

func deleteBucketIfExists(parent *bolt.Bucket, name []byte) error {
	err := parent.DeleteBucket(name)
	if errors.Is(err, berrors.ErrBucketNotFound) {
		return nil
	}
	return err
}

// userErr carries an error returned by an UpdateDocument fn through the
// transaction, so that it is returned unwrapped.
type userErr struct{ err error }

func (e userErr) Error() string { return e.err.Error() }
func (e userErr) Unwrap() error { return e.err }

// applyFn runs an UpdateDocument fn on the stored document and encodes
// what it returns, the same way for every store.
func applyFn(fn func(cur *Document) (*Document, error), id string, old *Document) (*Document, []byte, error) {
	next, err := fn(old)
	if err != nil {
		return nil, nil, userErr{err}
	}
	if next == nil {
		return nil, nil, errNilDocument
	}
	next.ID = id
	b, err := json.Marshal(next)
	return next, b, err
}

// errNilDocument: an UpdateDocument fn returned no document and no error.
var errNilDocument = errors.New("kosync: UpdateDocument: fn returned a nil document")

// decodeDocument decodes a stored document; the storage key is its id.
func decodeDocument(id string, v []byte) (*Document, error) {
	d := new(Document)
	if err := json.Unmarshal(v, d); err != nil {
		return nil, fmt.Errorf("decode document %q: %w", id, err)
	}
	d.ID = id
	return d, nil
}
