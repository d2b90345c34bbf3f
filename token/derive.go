package token

import (
	"crypto/hmac"
	"crypto/sha256"
)

// Derive returns one key per secret, in order: HMAC-SHA256(secret, label).
// The first is derived from the signing secret, so callers sign (or MAC)
// with the first and accept all of them, which follows secret rotation.
// Derived keys serve other uses of the server secret (a JWT signing key, a
// cache MAC key) without revealing the secret itself; distinct labels give
// independent keys. The result is a fresh copy each call.
func (s *Secrets) Derive(label string) [][]byte {
	out := make([][]byte, len(s.list))
	for i, sec := range s.list {
		m := hmac.New(sha256.New, sec.key)
		m.Write([]byte(label))
		out[i] = m.Sum(nil)
	}
	return out
}
