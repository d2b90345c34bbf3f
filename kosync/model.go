package kosync

import (
	"context"
	"errors"
)

// DefaultHistoryLimit is how many earlier states a document keeps; the
// oldest go first.
const DefaultHistoryLimit = 100

// Store errors.
var (
	// ErrUserExists: CreateUser for a name already registered.
	ErrUserExists = errors.New("kosync: user exists")
	// ErrUserNotFound: no such user.
	ErrUserNotFound = errors.New("kosync: user not found")
	// ErrStale: the user's key hash changed (or the user went) between the
	// check and the write; the request is unauthorized.
	ErrStale = errors.New("kosync: credentials changed")
	// ErrUnavailable wraps failures to reach the store (Redis down): the
	// KOReader API answers 502 code 1000 for them, 2000 for other errors.
	ErrUnavailable = errors.New("kosync: store unavailable")
)

// User is a registered account. Hash is the slow hash of the KOReader key
// (see auth.go); it also serves as the account's credential generation:
// writes carry the hash they were authorized with and fail with ErrStale if
// it changed.
type User struct {
	Name string
	Hash string
}

// Document is one document of one user as stored. Pointer fields are absent
// until first written: the KOReader API returns only the keys that are
// stored.
type Document struct {
	ID         string   `json:"id"`
	Progress   *string  `json:"progress,omitempty"`
	Percentage *float64 `json:"percentage,omitempty"`
	Device     *string  `json:"device,omitempty"`
	DeviceID   *string  `json:"device_id,omitempty"`
	// Timestamp is the Unix second of the last progress write; 0 = never.
	Timestamp  int64          `json:"timestamp,omitempty"`
	PrettyName string         `json:"pretty_name,omitempty"`
	History    []HistoryEntry `json:"history,omitempty"`
}

// HistoryEntry is a state a document had before a write, in the API shape
// (seven keys, always present).
type HistoryEntry struct {
	Progress   string  `json:"progress"`
	Percentage float64 `json:"percentage"`
	Device     string  `json:"device"`
	DeviceID   string  `json:"device_id"`
	Document   string  `json:"document"`
	Timestamp  int64   `json:"timestamp"`
	PrettyName string  `json:"pretty_name"`
}

// Store keeps users and documents. Every method is goroutine-safe and
// atomic; errors reaching the backend wrap ErrUnavailable.
type Store interface {
	// CreateUser registers name with hash; ErrUserExists if taken.
	CreateUser(ctx context.Context, name, hash string) error
	// User returns the account, or ErrUserNotFound.
	User(ctx context.Context, name string) (User, error)
	// UpdateDocument runs a read-modify-write of one document atomically
	// with a credential check: if the user is gone or its hash is no
	// longer hash, it returns ErrStale and writes nothing. fn gets the
	// current document (nil if none) and returns the one to store; an error
	// from fn aborts and is returned. The stored document is returned.
	UpdateDocument(ctx context.Context, user, hash, id string, fn func(cur *Document) (*Document, error)) (*Document, error)
	// Document returns one document, or nil (and no error) if none.
	Document(ctx context.Context, user, id string) (*Document, error)
	// Documents returns all the user's documents, in no particular order.
	Documents(ctx context.Context, user string) ([]*Document, error)
	// DeleteUser deletes the account and all its documents if its hash is
	// still hash: ErrUserNotFound if none, ErrStale if the hash changed.
	DeleteUser(ctx context.Context, name, hash string) error
	// SetHash replaces the account's hash oldHash with newHash: ErrStale
	// if the current hash is not oldHash, ErrUserNotFound if no account.
	SetHash(ctx context.Context, name, oldHash, newHash string) error
	// Close releases the store.
	Close() error
}
