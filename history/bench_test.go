package history

import (
	"context"
	"testing"
)

// BenchmarkMemoryAppend: the cost a publish on a history channel adds on
// a node alone (one copy of the payload; the ring is full, so it
// overwrites).
func BenchmarkMemoryAppend(b *testing.B) {
	s := NewMemoryStore(Options{Size: 1000})
	payload := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		s.AppendFunc("c", payload, nil)
	}
}

// BenchmarkRedisAppend: one Lua round trip per publish (append, trim,
// expire, publish), against a local redis-server.
func BenchmarkRedisAppend(b *testing.B) {
	s, _ := redisStoreB(b)
	payload := make([]byte, 64)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.AppendPublish(ctx, "c", payload, "bench", []byte("HEAD")); err != nil {
			b.Fatal(err)
		}
	}
}
