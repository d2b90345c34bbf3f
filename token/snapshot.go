package token

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// SnapshotName is the file, in a node's data dir, where a Revoker over a
// shared store keeps the last revoked set it saw (see Revoker.KeepSnapshot).
const SnapshotName = "revoked-snapshot.json"

// snapshotVersion is the format of the snapshot file.
const snapshotVersion = 1

// snapshotFile is the JSON form of a saved set: the records in the same
// form as the FileStore log and the Redis channel, and the data marker of
// the Redis the set came from (see RedisStore.Marker).
type snapshotFile struct {
	Version int          `json:"version"`
	Marker  string       `json:"marker,omitempty"`
	SavedAt int64        `json:"saved_at"` // unix ms
	Records []wireRecord `json:"records"`
}

// snapshot is a saved set as read back.
type snapshot struct {
	marker  string
	savedAt time.Time
	records []Revocation // unexpired ones only
}

// readSnapshot reads the snapshot at path. It returns fs.ErrNotExist (wrapped)
// when there is none and an error when the file is unreadable or malformed:
// a set that cannot be read whole is not known.
func readSnapshot(path string, now time.Time) (snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return snapshot{}, err
	}
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		return snapshot{}, fmt.Errorf("token: snapshot %s: %w", path, err)
	}
	if f.Version != snapshotVersion {
		return snapshot{}, fmt.Errorf("token: snapshot %s: unknown version %d", path, f.Version)
	}
	s := snapshot{marker: f.Marker, savedAt: msTime(f.SavedAt), records: make([]Revocation, 0, len(f.Records))}
	for _, w := range f.Records {
		rv, err := fromWire(w)
		if err != nil {
			return snapshot{}, fmt.Errorf("token: snapshot %s: %w", path, err)
		}
		if rv.Expires.After(now) {
			s.records = append(s.records, rv)
		}
	}
	return s, nil
}

// writeSnapshot replaces the file at path with records and marker,
// atomically: a temporary file in the same directory, fsync, rename, fsync
// of the directory. A crash leaves either the old file or the new one.
func writeSnapshot(path, marker string, records []Revocation, now time.Time) error {
	f := snapshotFile{Version: snapshotVersion, Marker: marker, SavedAt: now.UnixMilli(),
		Records: make([]wireRecord, 0, len(records))}
	for _, rv := range records {
		w, err := toWire(rv)
		if err != nil {
			return err
		}
		f.Records = append(f.Records, w)
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("token: snapshot: %w", err)
	}
	tmp, err := writeTemp(dir, ".revoked-snapshot-*", append(data, '\n'))
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("token: snapshot: %w", err)
	}
	return syncDir(dir)
}

// snapshotter saves a Revoked to a file after every change, coalescing
// concurrent saves: a caller that bumped the generation after its change
// returns once a file holding that generation (or a later one) is on disk.
// Safe for concurrent use.
type snapshotter struct {
	path string
	set  *Revoked

	gen atomic.Uint64 // bumped after every change to the set or marker

	mu     sync.Mutex // held while writing
	saved  uint64     // the generation on disk
	marker string     // guarded by mu
}

// changed records a change of the set (made before the call) and returns
// its generation, for save.
func (s *snapshotter) changed() uint64 { return s.gen.Add(1) }

// setMarker records a new data marker and returns the change's generation.
func (s *snapshotter) setMarker(m string) uint64 {
	s.mu.Lock()
	s.marker = m
	s.mu.Unlock()
	return s.changed()
}

// save writes the set unless a file of generation gen or later is already
// on disk. The generation is read before the set, so the file holds every
// change whose generation it claims.
func (s *snapshotter) save(gen uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saved >= gen {
		return nil
	}
	cur := s.gen.Load()
	now := time.Now()
	all := s.set.All()
	live := all[:0]
	for _, rv := range all {
		if rv.Expires.After(now) {
			live = append(live, rv)
		}
	}
	if err := writeSnapshot(s.path, s.marker, live, now); err != nil {
		return err
	}
	s.saved = cur
	return nil
}

// isNotExist reports whether err says that the snapshot does not exist.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
