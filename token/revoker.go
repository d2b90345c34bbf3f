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

// markedStore is a shared store that can tell when it lost its data (see
// RedisStore.Marker).
type markedStore interface {
	Marker(ctx context.Context, known string) (current string, lost bool, err error)
	PeekMarker(ctx context.Context) (string, error)
}

// batchStore writes many records at once (RedisStore.RevokeAll).
type batchStore interface {
	RevokeAll(ctx context.Context, all []Revocation) error
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

	reloads atomic.Int64 // successful reloads after a (re)subscription; for tests

	// snap saves the set after every change (KeepSnapshot); nil: none.
	snap *snapshotter
	// marker is the shared store's data marker as last seen; guarded by mu.
	marker     string
	onDataLost func()

	startMu sync.Mutex
	started bool
	wg      sync.WaitGroup
	resync  chan struct{}
	// markerEvery: MarkerCheckInterval (shorter in tests).
	markerEvery time.Duration
	// saveKick wakes saveLoop; capacity 1.
	saveKick chan struct{}
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
	return &Revoker{store: store, set: set, onRevoke: onRevoke, log: logger,
		resync: make(chan struct{}, 1), saveKick: make(chan struct{}, 1), markerEvery: MarkerCheckInterval}
}

// Set returns the in-memory set, for Check on the hot path.
func (v *Revoker) Set() *Revoked { return v.set }

// KeepSnapshot makes a Revoker over a shared store keep its set in the file
// at path (normally SnapshotName in the node's data dir), read at Start and
// rewritten atomically and fsync'd after every change: before Revoke and a
// reload return, and for announcements of other nodes by a background
// writer that coalesces a burst into one write. A node whose shared store
// is unreachable at Start then starts from the last set it saw instead of
// refusing authentication, and the records it knows are written back to a
// store that lost them. It is ignored for a local store, which is its own
// durable copy. Call it before Start.
func (v *Revoker) KeepSnapshot(path string) {
	v.snap = &snapshotter{path: path, set: v.set}
}

// OnDataLost sets a function called (on any goroutine, never under a lock
// of the Revoker) each time a reload finds that the shared store lost its
// data since this Revoker last saw it (see RedisStore.Marker); the Revoker
// has already logged an error and written back the records it knows. Call
// it before Start.
func (v *Revoker) OnDataLost(fn func()) { v.onDataLost = fn }

// Start loads the store into the set and starts the background goroutines,
// which run until ctx is done (Wait waits for them):
//
//   - a pruner dropping expired records every PruneInterval;
//   - for a shared store (one with a Watch method like *RedisStore's), a
//     watcher applying other nodes' announcements (set.Add, then onRevoke
//     if the set changed) and, on every (re)subscription, a reload (the
//     data marker checked, Load, the records the store lacks written back,
//     the set replaced by the union, then onRevoke for every record),
//     also when the marker read every MarkerCheckInterval has changed
//     (a loss without a reconnect), retried with back-off
//     (0.5 s doubling to 30 s) until it succeeds;
//   - with KeepSnapshot and a shared store, the snapshot writer.
//
// A load failure is returned for a local store. For a shared store, which
// may be down at start, Start never fails: it starts from the snapshot
// (KeepSnapshot) if there is one, then reloads as above; if neither the
// store nor a snapshot gave a set, the set stays unknown (Revoked.Known is
// false, every key counts as revoked) until the first successful reload.
// Start may be called once.
func (v *Revoker) Start(ctx context.Context) error {
	v.startMu.Lock()
	defer v.startMu.Unlock()
	if v.started {
		return errors.New("token: revoker already started")
	}
	w, shared := v.store.(watcher)
	if shared {
		v.loadShared(ctx)
	} else if err := v.loadLocal(ctx); err != nil {
		return err
	}
	v.started = true

	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		v.pruneLoop(ctx)
	}()
	if shared && v.snap != nil {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			v.saveLoop(ctx)
		}()
	}
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

// loadLocal fills the set from a local store.
func (v *Revoker) loadLocal(ctx context.Context) error {
	if fs, ok := v.store.(*FileStore); ok {
		if n, torn := fs.Skipped(); n > 0 || torn {
			v.log.Warn("revocation log had unreadable lines; dropped by compaction",
				"path", fs.Path(), "malformed", n, "torn_tail", torn)
		}
	}
	all, err := v.store.Load(ctx)
	if err != nil {
		return err
	}
	v.set.Replace(all)
	v.log.Info("revocations loaded", "count", len(all))
	return nil
}

// loadShared fills the set from the snapshot, then from the shared store;
// what it cannot load stays unknown.
func (v *Revoker) loadShared(ctx context.Context) {
	v.set.markUnknown()
	v.restoreSnapshot()
	err := v.reload(ctx)
	switch {
	case err == nil:
	case v.set.Known():
		v.log.Warn("revocation store unreachable; using the saved revoked set until it answers",
			"count", v.set.Len(), "err", err)
	default:
		v.log.Error("revocation store unreachable and no saved revoked set: authentication is refused until it answers",
			"err", err)
	}
}

// restoreSnapshot loads the saved set, if any, into the set.
func (v *Revoker) restoreSnapshot() {
	if v.snap == nil {
		return
	}
	s, err := readSnapshot(v.snap.path, time.Now())
	switch {
	case isNotExist(err):
		return
	case err != nil:
		v.log.Error("saved revoked set unreadable; ignored", "path", v.snap.path, "err", err)
		return
	}
	v.mu.Lock()
	v.set.Replace(s.records)
	v.marker = s.marker
	v.mu.Unlock()
	v.snap.setMarker(s.marker)
	v.log.Info("saved revoked set restored", "path", v.snap.path, "count", len(s.records),
		"saved_at", s.savedAt.UTC().Format(time.RFC3339))
}

// persist saves the set after a change, if a snapshot is kept.
func (v *Revoker) persist(gen uint64) {
	if v.snap == nil {
		return
	}
	if err := v.snap.save(gen); err != nil {
		v.log.Error("revoked set not saved", "path", v.snap.path, "err", err)
	}
}

// persistSoon asks the saver goroutine to save the set after a change: a
// burst of announcements costs one write, not one per record, and never
// holds up the feed.
func (v *Revoker) persistSoon() {
	if v.snap == nil {
		return
	}
	v.snap.changed()
	select {
	case v.saveKick <- struct{}{}:
	default: // a save is pending already and will see this change
	}
}

// saveLoop saves the set whenever persistSoon asks, and once more at the
// end if a change is still unsaved.
func (v *Revoker) saveLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			v.persist(v.snap.gen.Load())
			return
		case <-v.saveKick:
			v.persist(v.snap.gen.Load())
		}
	}
}

// changed returns the generation of a change just made to the set, for
// persist.
func (v *Revoker) changed() uint64 {
	if v.snap == nil {
		return 0
	}
	return v.snap.changed()
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
		v.persistSoon()
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
	var check <-chan time.Time // the marker check, for a marked store
	if _, ok := v.store.(markedStore); ok {
		t := time.NewTicker(v.markerEvery)
		defer t.Stop()
		check = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-check:
			if !v.markerMoved(ctx) {
				continue
			}
		case <-v.resync:
		}
		delay := resyncRetryMin
		for {
			err := v.reload(ctx)
			if err == nil {
				v.reloads.Add(1)
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

// MarkerCheckInterval is how often a Revoker over a marked store (Redis)
// reads the data marker between reconnects, to notice a loss that came
// without one (FLUSHALL, a failover to an empty replica).
const MarkerCheckInterval = 10 * time.Second

// markerMoved reports whether the store's data marker is no longer the one
// last seen (one GET); a failed read is left to the reconnect logic.
func (v *Revoker) markerMoved(ctx context.Context) bool {
	m := v.store.(markedStore)
	v.mu.RLock()
	known := v.marker
	v.mu.RUnlock()
	if known == "" {
		return false // never seen one: the next reload sets it
	}
	cur, err := m.PeekMarker(ctx)
	return err == nil && cur != known
}

// reload makes the set the union of the store's content and its own,
// writing back to the store the records it lacks, saves the snapshot and
// reports every record to onRevoke. A store that lost its data is reported
// (error log, OnDataLost) even when the rest of the reload fails.
func (v *Revoker) reload(ctx context.Context) error {
	v.mu.Lock()
	r, err := v.reconcile(ctx)
	v.mu.Unlock()
	if r.lost {
		v.log.Error("the revocation store lost its data since this node last saw it (its data marker is gone); "+
			"writing back the revocations this node knows", "count", len(r.missing))
		if v.onDataLost != nil {
			v.onDataLost()
		}
	}
	if err != nil {
		return err
	}
	if !r.lost && len(r.missing) > 0 {
		v.log.Warn("revocations missing from the store written back", "count", len(r.missing))
	}
	v.persist(v.changed())
	v.log.Info("revocations reloaded", "count", v.set.Len())
	for _, rv := range r.all {
		v.onRevoke(rv)
	}
	return nil
}

// reconciled is what reconcile did.
type reconciled struct {
	all     []Revocation // the set now: the store's records, then missing
	missing []Revocation // the set's records the store lacked, written back
	lost    bool         // the store's data marker was gone
}

// reconcile checks the store's data marker, loads the store, writes back
// the records of the set it lacks and replaces the set with the union. The
// caller holds v.mu exclusively.
func (v *Revoker) reconcile(ctx context.Context) (reconciled, error) {
	var r reconciled
	if m, ok := v.store.(markedStore); ok {
		cur, lost, err := m.Marker(ctx, v.marker)
		if err != nil {
			return r, err
		}
		r.lost = lost
		if cur != v.marker {
			v.marker = cur
			if v.snap != nil {
				v.snap.setMarker(cur)
			}
		}
	}
	stored, err := v.store.Load(ctx)
	if err != nil {
		return r, err
	}
	r.missing = missingFrom(v.set.All(), stored, time.Now())
	if len(r.missing) > 0 {
		if err := v.writeBack(ctx, r.missing); err != nil {
			return r, err
		}
	}
	r.all = append(stored, r.missing...)
	v.set.Replace(r.all)
	return r, nil
}

// missingFrom returns the unexpired records of have that stored does not
// cover (a record of stored covers one of have when it revokes at least as
// much, until at least as late).
func missingFrom(have, stored []Revocation, now time.Time) []Revocation {
	if len(have) == 0 {
		return nil
	}
	in := &revokedSnap{ids: make(map[KeyID]idEntry, len(stored)), subs: make(map[string]subEntry)}
	for _, rv := range stored {
		in.merge(rv)
	}
	var out []Revocation
	for _, rv := range have {
		if rv.Expires.After(now) && in.wouldChange(rv) {
			out = append(out, rv)
		}
	}
	return out
}

// writeBack stores records the shared store lost.
func (v *Revoker) writeBack(ctx context.Context, recs []Revocation) error {
	if b, ok := v.store.(batchStore); ok {
		return b.RevokeAll(ctx, recs)
	}
	for _, rv := range recs {
		if err := v.store.Revoke(ctx, rv); err != nil {
			return err
		}
	}
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
		v.persist(v.changed())
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
