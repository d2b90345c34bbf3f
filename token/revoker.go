package token

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// PruneInterval is how often a started Revoker drops expired records from
// its set.
const PruneInterval = time.Minute

// Resync retry back-off of a Revoker whose reload after a reconnect failed.
const (
	resyncRetryMin = 500 * time.Millisecond
	resyncRetryMax = 30 * time.Second
)

// watcher is a Store that announces revocations across nodes; *RedisStore
// is one.
type watcher interface {
	Watch(ctx context.Context, onRevoke func(Revocation), onResync func()) error
}

// Revoker ties a Store to the in-memory set: revoking persists, then
// updates the set, then tells the server (onRevoke) so it can close the
// sessions the record hits. With a shared store it also applies the other
// nodes' revocations and reloads after every reconnect. Safe for
// concurrent use.
type Revoker struct {
	store    Store
	set      *Revoked
	onRevoke func(Revocation)
	log      *slog.Logger

	// mu orders reloads against single updates: writers of single records
	// (local Revoke, announcements) hold it shared from the store write (or
	// receipt) to set.Add; a reload holds it exclusively from Load to
	// Replace, so a record can never be lost by a reload that started
	// before it was stored.
	mu sync.RWMutex

	reloads atomic.Int64 // successful reloads after (re)subscription; for tests

	startMu sync.Mutex
	started bool
	wg      sync.WaitGroup
	resync  chan struct{}
}

// NewRevoker returns a Revoker over store and set. onRevoke (may be nil) is
// called once for every record that changes the set, whichever node
// revoked, and for every record after a reload; it may run on any
// goroutine, never under a lock of the Revoker. logger may be nil.
func NewRevoker(store Store, set *Revoked, onRevoke func(Revocation), logger *slog.Logger) *Revoker {
	if set == nil {
		set = NewRevoked()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if onRevoke == nil {
		onRevoke = func(Revocation) {}
	}
	return &Revoker{store: store, set: set, onRevoke: onRevoke, log: logger, resync: make(chan struct{}, 1)}
}

// Set returns the in-memory set, for Check on the hot path.
func (v *Revoker) Set() *Revoked { return v.set }

// Start loads the store into the set and starts the background goroutines,
// which run until ctx is done (Wait waits for them):
//
//   - a pruner dropping expired records every PruneInterval;
//   - for a shared store (one with a Watch method like *RedisStore's), a
//     watcher applying other nodes' announcements (set.Add, then onRevoke
//     if the set changed) and, on every (re)subscription, a reload: Load,
//     set.Replace, then onRevoke for every record, retried with back-off
//     (0.5 s doubling to 30 s) until it succeeds.
//
// A load failure is returned for a local store. For a shared store it is
// only logged, since the store may be down at start: the set stays empty
// until the reload that follows the first successful subscription. Start
// may be called once.
func (v *Revoker) Start(ctx context.Context) error {
	v.startMu.Lock()
	defer v.startMu.Unlock()
	if v.started {
		return errors.New("token: revoker already started")
	}
	w, shared := v.store.(watcher)
	if fs, ok := v.store.(*FileStore); ok {
		if n, torn := fs.Skipped(); n > 0 || torn {
			v.log.Warn("revocation log had unreadable lines; dropped by compaction",
				"path", fs.Path(), "malformed", n, "torn_tail", torn)
		}
	}
	all, err := v.store.Load(ctx)
	switch {
	case err == nil:
		v.set.Replace(all)
		v.log.Info("revocations loaded", "count", len(all))
	case shared:
		v.log.Warn("revocations not loaded; will reload once the store answers", "err", err)
	default:
		return err
	}
	v.started = true

	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		v.pruneLoop(ctx)
	}()
	if shared {
		v.wg.Add(2)
		go func() {
			defer v.wg.Done()
			v.resyncLoop(ctx)
		}()
		go func() {
			defer v.wg.Done()
			if err := w.Watch(ctx, v.applyRemote, v.requestResync); err != nil {
				v.log.Error("revocation watch stopped", "err", err)
			}
		}()
	}
	return nil
}

// Wait blocks until the goroutines of Start have returned, after its ctx is
// done.
func (v *Revoker) Wait() { v.wg.Wait() }

func (v *Revoker) pruneLoop(ctx context.Context) {
	t := time.NewTicker(PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			v.set.Prune(now)
		}
	}
}

// applyRemote handles an announcement.
func (v *Revoker) applyRemote(rv Revocation) {
	v.mu.RLock()
	changed := v.set.Add(rv)
	v.mu.RUnlock()
	if changed {
		v.onRevoke(rv)
	}
}

func (v *Revoker) requestResync() {
	select {
	case v.resync <- struct{}{}:
	default: // one is pending already
	}
}

func (v *Revoker) resyncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.resync:
		}
		delay := resyncRetryMin
		for {
			err := v.reload(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			v.log.Warn("revocation reload failed; retrying", "err", err, "in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, resyncRetryMax)
		}
	}
}

// reload replaces the set with the store's content and reports every record
// to onRevoke.
func (v *Revoker) reload(ctx context.Context) error {
	v.mu.Lock()
	all, err := v.store.Load(ctx)
	if err == nil {
		v.set.Replace(all)
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	v.log.Info("revocations reloaded", "count", len(all))
	for _, rv := range all {
		v.onRevoke(rv)
	}
	v.reloads.Add(1)
	return nil
}

// Revoke persists rv in the store (which announces it to other nodes if
// shared), adds it to the set and, if that changed the set, calls onRevoke
// before returning. A record already expired is ignored. When the store fails, nothing changes locally and the
// error is returned.
func (v *Revoker) Revoke(ctx context.Context, rv Revocation) error {
	now := time.Now()
	rv, err := normalize(rv, now)
	if err != nil {
		return err
	}
	if !rv.Expires.After(now) {
		return nil // nothing left to revoke
	}
	v.mu.RLock()
	err = v.store.Revoke(ctx, rv)
	changed := err == nil && v.set.Add(rv)
	v.mu.RUnlock()
	if err != nil {
		return err
	}
	if changed {
		v.onRevoke(rv)
	}
	return nil
}

// RevokeKey revokes the key with claims c until it expires.
func (v *Revoker) RevokeKey(ctx context.Context, c Claims) error {
	return v.Revoke(ctx, Revocation{Kind: KindID, ID: c.ID, Expires: c.Expires})
}

// RevokeID revokes the key with id; its expiry being unknown, the record
// lives MaxKeyTTL.
func (v *Revoker) RevokeID(ctx context.Context, id KeyID) error {
	return v.Revoke(ctx, Revocation{Kind: KindID, ID: id})
}

// RevokeSubject revokes every key of subject issued at or before at (now
// when at is zero). Keys issued later stay valid.
func (v *Revoker) RevokeSubject(ctx context.Context, subject string, at time.Time) error {
	if at.IsZero() {
		at = time.Now()
	}
	return v.Revoke(ctx, Revocation{Kind: KindSubject, Subject: subject, At: at})
}
