package token

import "context"

// Store persists revocations and, when shared by several nodes, propagates
// them. FileStore and RedisStore implement it.
type Store interface {
	// Revoke persists rv durably before returning (so an acknowledged
	// revocation survives a crash) and announces it to other nodes if the
	// store is shared.
	Revoke(ctx context.Context, rv Revocation) error
	// Load returns every unexpired revocation.
	Load(ctx context.Context) ([]Revocation, error)
	Close() error
}

var (
	_ Store = (*FileStore)(nil)
	_ Store = (*RedisStore)(nil)
)
