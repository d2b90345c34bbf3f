package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
)

func TestDerive(t *testing.T) {
	a := bytes.Repeat([]byte("a"), MinSecretLen)
	b := bytes.Repeat([]byte("b"), MinSecretLen)
	s, err := NewSecrets(a, b)
	if err != nil {
		t.Fatal(err)
	}
	keys := s.Derive("label-v1")
	if len(keys) != 2 {
		t.Fatalf("got %d keys, want one per secret", len(keys))
	}
	for i, sec := range [][]byte{a, b} {
		m := hmac.New(sha256.New, sec)
		m.Write([]byte("label-v1"))
		if want := m.Sum(nil); !bytes.Equal(keys[i], want) {
			t.Errorf("key %d = %x, want HMAC-SHA256(secret, label) = %x", i, keys[i], want)
		}
	}
	if bytes.Equal(keys[0], keys[1]) {
		t.Error("different secrets derived the same key")
	}
	if other := s.Derive("label-v2"); bytes.Equal(other[0], keys[0]) {
		t.Error("different labels derived the same key")
	}
	// A fresh copy: changing it does not change later results.
	keys[0][0] ^= 0xff
	if again := s.Derive("label-v1"); bytes.Equal(again[0], keys[0]) {
		t.Error("Derive returned shared memory")
	}
}
