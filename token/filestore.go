package token

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// RevocationLogName is the FileStore's log file inside its directory.
const RevocationLogName = "revocations.log"

// ErrClosed is returned by a store used after Close.
var ErrClosed = errors.New("token: store closed")

// FileStore keeps revocations in an append-only log, one JSON object per
// line, in a directory of a single node. It does not propagate revocations
// to other nodes. Safe for concurrent use.
type FileStore struct {
	dir  string
	path string

	mu     sync.Mutex
	f      *os.File // opened O_APPEND
	recs   *revokedSnap
	closed bool

	malformed int
	tornTail  bool
}

// OpenFileStore opens (creating it, mode 0700, if needed) the store in dir.
// It reads dir/revocations.log, ignores a torn last line (a crash in the
// middle of an append), skips malformed lines (see Skipped), drops expired
// records, and rewrites the log compacted, atomically (temporary file, fsync,
// rename, fsync of the directory), before opening it for appending.
func OpenFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("token: revocation store: %w", err)
	}
	s := &FileStore{
		dir:  dir,
		path: filepath.Join(dir, RevocationLogName),
		recs: &revokedSnap{ids: map[KeyID]idEntry{}, subs: map[string]subEntry{}},
	}
	data, err := os.ReadFile(s.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("token: revocation store: %w", err)
	}
	now := time.Now()
	lines := bytes.Split(data, []byte{'\n'})
	for i, line := range lines {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		rv, err := decodeRecord(line)
		if err != nil {
			if i == len(lines)-1 {
				// No newline after it: an append cut short.
				s.tornTail = true
			} else {
				s.malformed++
			}
			continue
		}
		if !rv.Expires.After(now) {
			continue
		}
		s.recs.merge(rv)
	}
	if err := s.compact(); err != nil {
		return nil, err
	}
	s.f, err = os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("token: revocation store: %w", err)
	}
	return s, nil
}

// compact writes the current records to a new log and renames it into place.
func (s *FileStore) compact() error {
	var buf bytes.Buffer
	for _, rv := range snapRecords(s.recs) {
		line, err := encodeRecord(rv)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	tmp, err := writeTemp(s.dir, ".revocations-*", buf.Bytes())
	if err != nil {
		return fmt.Errorf("token: revocation store: compact: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("token: revocation store: compact: %w", err)
	}
	return syncDir(s.dir)
}

// Skipped reports what OpenFileStore left out of the log: the number of
// malformed lines (other than the last) and whether the last line was torn.
// Both are dropped by the compaction; the server may log them.
func (s *FileStore) Skipped() (malformed int, tornTail bool) {
	return s.malformed, s.tornTail
}

// Path returns the log file's path.
func (s *FileStore) Path() string { return s.path }

// Revoke appends rv to the log and fsyncs it before returning. Expires is
// filled in as described for Revocation. A record already expired is not
// written.
func (s *FileStore) Revoke(ctx context.Context, rv Revocation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	rv, err := normalize(rv, now)
	if err != nil {
		return err
	}
	if !rv.Expires.After(now) {
		return nil
	}
	line, err := encodeRecord(rv)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, err := s.f.Write(line); err != nil {
		return fmt.Errorf("token: revocation store: append: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("token: revocation store: fsync: %w", err)
	}
	s.recs.merge(rv)
	return nil
}

// Load returns every unexpired revocation.
func (s *FileStore) Load(ctx context.Context) ([]Revocation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	all := snapRecords(s.recs)
	out := all[:0]
	for _, rv := range all {
		if rv.Expires.After(now) {
			out = append(out, rv)
		}
	}
	return out, nil
}

// Close closes the log. Later calls return ErrClosed.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	return s.f.Close()
}

// snapRecords lists the records of s.
func snapRecords(s *revokedSnap) []Revocation {
	r := &Revoked{}
	r.snap.Store(s)
	return r.All()
}
