package token

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is the kind of a revocation.
type Kind uint8

const (
	// KindID revokes one key, by its KeyID.
	KindID Kind = 1
	// KindSubject revokes every key of a subject issued at or before At.
	KindSubject Kind = 2
)

// String returns "id", "subject" or "Kind(n)".
func (k Kind) String() string {
	switch k {
	case KindID:
		return "id"
	case KindSubject:
		return "subject"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Revocation is one revocation record.
//
// For KindID, ID names the key; At is when it was revoked (informational,
// zero when loaded from Redis, which keeps only the expiry) and Expires is
// the key's expiry if known, else At+MaxKeyTTL.
//
// For KindSubject, every key of Subject with IssuedAt <= At is revoked;
// Expires is always At+MaxKeyTTL, since no key issued before At outlives
// that.
//
// Times have millisecond precision once a store or Revoked has seen them.
type Revocation struct {
	Kind    Kind
	ID      KeyID
	Subject string
	At      time.Time
	Expires time.Time
}

// Matches reports whether rv revokes the key with claims c.
func (rv Revocation) Matches(c Claims) bool {
	switch rv.Kind {
	case KindID:
		return rv.ID == c.ID
	case KindSubject:
		return rv.Subject == c.Subject && c.IssuedAt.UnixMilli() <= rv.At.UnixMilli()
	}
	return false
}

// String describes the record for logs.
func (rv Revocation) String() string {
	switch rv.Kind {
	case KindID:
		return fmt.Sprintf("revoke id %s (until %s)", rv.ID, rv.Expires.UTC().Format(time.RFC3339))
	case KindSubject:
		return fmt.Sprintf("revoke subject %q issued at or before %s", rv.Subject, rv.At.UTC().Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("revocation of %v", rv.Kind)
}

// normalize checks rv, truncates its times to milliseconds and fills in
// Expires: for KindID, At+MaxKeyTTL when zero (At defaults to now); for
// KindSubject, always At+MaxKeyTTL.
func normalize(rv Revocation, now time.Time) (Revocation, error) {
	switch rv.Kind {
	case KindID:
		if rv.At.IsZero() {
			rv.At = now
		}
		rv.At = msTime(rv.At.UnixMilli())
		if rv.Expires.IsZero() {
			rv.Expires = rv.At.Add(MaxKeyTTL)
		}
		rv.Expires = msTime(rv.Expires.UnixMilli())
		rv.Subject = ""
	case KindSubject:
		if err := ValidSubject(rv.Subject); err != nil {
			return rv, err
		}
		if rv.At.IsZero() {
			return rv, errors.New("token: subject revocation without a time")
		}
		rv.At = msTime(rv.At.UnixMilli())
		rv.Expires = rv.At.Add(MaxKeyTTL)
		rv.ID = KeyID{}
	default:
		return rv, fmt.Errorf("token: unknown revocation kind %d", rv.Kind)
	}
	return rv, nil
}

// wireRecord is the JSON form of a Revocation, used in the FileStore log and
// on the Redis channel.
type wireRecord struct {
	Kind    string `json:"kind"`
	ID      string `json:"id,omitempty"`
	Subject string `json:"sub,omitempty"`
	At      int64  `json:"at"`
	Expires int64  `json:"exp"`
}

func encodeRecord(rv Revocation) ([]byte, error) {
	w, err := toWire(rv)
	if err != nil {
		return nil, err
	}
	return json.Marshal(w)
}

func toWire(rv Revocation) (wireRecord, error) {
	w := wireRecord{Kind: rv.Kind.String(), At: rv.At.UnixMilli(), Expires: rv.Expires.UnixMilli()}
	switch rv.Kind {
	case KindID:
		w.ID = rv.ID.String()
	case KindSubject:
		w.Subject = rv.Subject
	default:
		return wireRecord{}, fmt.Errorf("token: unknown revocation kind %d", rv.Kind)
	}
	if rv.At.IsZero() {
		w.At = 0
	}
	return w, nil
}

func decodeRecord(b []byte) (Revocation, error) {
	var w wireRecord
	if err := json.Unmarshal(b, &w); err != nil {
		return Revocation{}, err
	}
	return fromWire(w)
}

func fromWire(w wireRecord) (Revocation, error) {
	var rv Revocation
	switch w.Kind {
	case "id":
		id, err := ParseKeyID(w.ID)
		if err != nil {
			return Revocation{}, err
		}
		rv.Kind, rv.ID = KindID, id
		if w.Expires <= 0 {
			return Revocation{}, errors.New("token: revocation without expiry")
		}
		rv.Expires = msTime(w.Expires)
		if w.At != 0 {
			rv.At = msTime(w.At)
		}
	case "subject":
		if err := ValidSubject(w.Subject); err != nil {
			return Revocation{}, err
		}
		rv.Kind, rv.Subject = KindSubject, w.Subject
		rv.At = msTime(w.At)
		rv.Expires = rv.At.Add(MaxKeyTTL)
	default:
		return Revocation{}, fmt.Errorf("token: unknown revocation kind %q", w.Kind)
	}
	return rv, nil
}

// Revoked is the in-memory set of revocations. It is copy-on-write: Check
// reads an immutable snapshot through an atomic pointer, so it never blocks,
// allocates or does I/O; Add, Replace and Prune copy the set (O(n)) under a
// mutex. All methods are safe for concurrent use.
type Revoked struct {
	mu   sync.Mutex // serializes writers
	snap atomic.Pointer[revokedSnap]
}

type revokedSnap struct {
	ids  map[KeyID]idEntry
	subs map[string]subEntry
	// unknown: the set has not been loaded yet, so Check fails closed.
	unknown bool
}

type idEntry struct {
	at, expires int64 // unix ms; at is 0 when unknown
}

type subEntry struct {
	at, expires int64 // unix ms
}

// NewRevoked returns an empty set.
func NewRevoked() *Revoked {
	r := &Revoked{}
	r.snap.Store(&revokedSnap{ids: map[KeyID]idEntry{}, subs: map[string]subEntry{}})
	return r
}

// NewPendingRevoked returns a set that is not known yet: until the first
// Replace, Check reports every key as revoked (Known is false), so that a
// node that could not load its revocations refuses authentication rather
// than accept a revoked key.
func NewPendingRevoked() *Revoked {
	r := NewRevoked()
	r.markUnknown()
	return r
}

// markUnknown makes the set unknown again, until the next Replace; a
// Revoker over a shared store does it at Start.
func (r *Revoked) markUnknown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.snap.Load().clone()
	next.unknown = true
	r.snap.Store(next)
}

// Known reports whether the set has been loaded (see NewPendingRevoked).
// Protocols check it before Check to tell a client "try again later"
// rather than "revoked".
func (r *Revoked) Known() bool { return !r.snap.Load().unknown }

// merge adds rv to s in place and reports whether s now revokes more keys.
// A record only ever widens the set: a later expiry or a later subject time
// replaces an earlier one, never the reverse.
func (s *revokedSnap) merge(rv Revocation) bool {
	exp := rv.Expires.UnixMilli()
	switch rv.Kind {
	case KindID:
		var at int64
		if !rv.At.IsZero() {
			at = rv.At.UnixMilli()
		}
		old, ok := s.ids[rv.ID]
		if ok {
			if exp > old.expires {
				old.expires = exp
				s.ids[rv.ID] = old
			}
			return false
		}
		s.ids[rv.ID] = idEntry{at: at, expires: exp}
		return true
	case KindSubject:
		at := rv.At.UnixMilli()
		if rv.Expires.IsZero() {
			exp = at + MaxKeyTTL.Milliseconds()
		}
		old, ok := s.subs[rv.Subject]
		if ok && old.at >= at {
			return false
		}
		s.subs[rv.Subject] = subEntry{at: at, expires: max(exp, old.expires)}
		return true
	}
	return false
}

// wouldChange reports whether merge would widen s, without copying.
func (s *revokedSnap) wouldChange(rv Revocation) bool {
	switch rv.Kind {
	case KindID:
		old, ok := s.ids[rv.ID]
		return !ok || rv.Expires.UnixMilli() > old.expires
	case KindSubject:
		old, ok := s.subs[rv.Subject]
		return !ok || rv.At.UnixMilli() > old.at
	}
	return false
}

func (s *revokedSnap) clone() *revokedSnap {
	return &revokedSnap{ids: maps.Clone(s.ids), subs: maps.Clone(s.subs), unknown: s.unknown}
}

// Add adds rv to the set. changed is true when the set now revokes keys it
// did not before: a new key id, or a new or later subject time. Re-adding a
// known record (for instance the node's own announcement coming back over
// pub/sub) returns false. Records of an unknown kind are ignored.
func (r *Revoked) Add(rv Revocation) (changed bool) {
	if rv.Kind != KindID && rv.Kind != KindSubject {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snap.Load()
	if !cur.wouldChange(rv) {
		return false
	}
	next := cur.clone()
	changed = next.merge(rv)
	r.snap.Store(next)
	return changed
}

// Replace makes the set exactly all (merged), as after a reload from the
// store. The set is known from then on.
func (r *Revoked) Replace(all []Revocation) {
	next := &revokedSnap{ids: make(map[KeyID]idEntry), subs: make(map[string]subEntry)}
	for _, rv := range all {
		next.merge(rv)
	}
	r.mu.Lock()
	r.snap.Store(next)
	r.mu.Unlock()
}

// Check reports whether the key with claims c is revoked; every key is, while
// the set is not known (see Known). It is O(1), takes no lock, does not
// allocate and does no I/O. It does not look at expiry: the caller verifies
// the key first.
func (r *Revoked) Check(c Claims) bool {
	s := r.snap.Load()
	if s.unknown {
		return true
	}
	if len(s.ids) != 0 {
		if _, ok := s.ids[c.ID]; ok {
			return true
		}
	}
	if len(s.subs) != 0 {
		if e, ok := s.subs[c.Subject]; ok && c.IssuedAt.UnixMilli() <= e.at {
			return true
		}
	}
	return false
}

// Matches reports whether rv revokes the key with claims c; it is
// rv.Matches(c), here for callers holding the set.
func (r *Revoked) Matches(rv Revocation, c Claims) bool { return rv.Matches(c) }

// Prune drops the records that expire at or before now.
func (r *Revoked) Prune(now time.Time) {
	t := now.UnixMilli()
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snap.Load()
	stale := false
	for _, e := range cur.ids {
		if e.expires <= t {
			stale = true
			break
		}
	}
	if !stale {
		for _, e := range cur.subs {
			if e.expires <= t {
				stale = true
				break
			}
		}
	}
	if !stale {
		return
	}
	next := cur.clone()
	maps.DeleteFunc(next.ids, func(_ KeyID, e idEntry) bool { return e.expires <= t })
	maps.DeleteFunc(next.subs, func(_ string, e subEntry) bool { return e.expires <= t })
	r.snap.Store(next)
}

// Len returns the number of records.
func (r *Revoked) Len() int {
	s := r.snap.Load()
	return len(s.ids) + len(s.subs)
}

// All returns every record, ids first then subjects, each sorted.
func (r *Revoked) All() []Revocation {
	s := r.snap.Load()
	out := make([]Revocation, 0, len(s.ids)+len(s.subs))
	for _, id := range slices.SortedFunc(maps.Keys(s.ids), func(a, b KeyID) int { return strings.Compare(string(a[:]), string(b[:])) }) {
		e := s.ids[id]
		rv := Revocation{Kind: KindID, ID: id, Expires: msTime(e.expires)}
		if e.at != 0 {
			rv.At = msTime(e.at)
		}
		out = append(out, rv)
	}
	for _, sub := range slices.Sorted(maps.Keys(s.subs)) {
		e := s.subs[sub]
		out = append(out, Revocation{Kind: KindSubject, Subject: sub, At: msTime(e.at), Expires: msTime(e.expires)})
	}
	return out
}
