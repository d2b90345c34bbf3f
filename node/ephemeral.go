package node

import (
	"context"
	"crypto/rand"
	"sync"

	"github.com/wsgateway/gateway/token"
)

// loadSecrets finds the node's secrets (token.LoadSecrets); with NoDataDir
// and none given, it makes a random one that lives in memory only: wsify
// has no keys, so nothing outlives the process that would need it.
func loadSecrets(cfg Config) (*token.Secrets, string, error) {
	if !cfg.NoDataDir || cfg.Secret != "" || cfg.SecretFile != "" {
		return token.LoadSecrets(cfg.Secret, cfg.SecretFile, cfg.DataDir)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s, err := token.NewSecrets(key)
	return s, "random, in memory (no data dir)", err
}

// memoryStore keeps revocations in memory: the token.Store of a node
// without Redis that writes nothing (NoDataDir). They end with the process.
type memoryStore struct {
	mu   sync.Mutex
	recs []token.Revocation
}

func (s *memoryStore) Revoke(_ context.Context, rv token.Revocation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, rv)
	return nil
}

func (s *memoryStore) Load(context.Context) ([]token.Revocation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]token.Revocation(nil), s.recs...), nil
}

func (s *memoryStore) Close() error { return nil }
