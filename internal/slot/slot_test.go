package slot

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

var names = []string{
	"", "a", "gateway:ch:news", "123456789", "{user1000}.following", "{user1000}.followers",
	"foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "a}b", "x{y", "{}", "日本語{チャンネル}",
}

func TestOfKnownValues(t *testing.T) {
	for _, c := range []struct {
		key  string
		want int
	}{
		{"123456789", 0x31C3 % Count}, // CRC-16/XMODEM check value
		{"{user1000}.following", Of("user1000")},
		{"foo{}{bar}", Of("foo{}{bar}")}, // empty first tag: whole key
		{"foo{{bar}}zap", Of("{bar")},
		{"foo{bar}{zap}", Of("bar")},
	} {
		if got := Of(c.key); got != c.want {
			t.Errorf("Of(%q) = %d, want %d", c.key, got, c.want)
		}
	}
}

// TestAgreesWithRedis checks Of, Colocated and InSlot against a real
// redis-server's CLUSTER KEYSLOT.
func TestAgreesWithRedis(t *testing.T) {
	srv := redistest.StartCluster(t, 1, 0)
	c := redis.NewClient(&redis.Options{Addr: srv.Masters[0].Addr})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	keyslot := func(k string) int {
		n, err := c.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	for _, n := range names {
		if got, want := Of(n), keyslot(n); got != want {
			t.Errorf("Of(%q) = %d, Redis says %d", n, got, want)
		}
		k := Colocated("gateway:history:", n, ":l")
		if got, want := keyslot(k), keyslot(n); got != want {
			t.Errorf("Colocated(%q) = %q in slot %d, name in %d", n, k, got, want)
		}
		if tag := Tag(n); strings.ContainsAny(tag, "{}") {
			t.Errorf("Tag(%q) = %q has a brace", n, tag)
		}
	}
	for _, s := range []int{0, 1, 5460, 5461, 10922, 16383} {
		if got := keyslot(InSlot("gateway:sync:7", s)); got != s {
			t.Errorf("InSlot(_, %d) is in slot %d", s, got)
		}
	}
}

func TestInSlotCoversEverySlot(t *testing.T) {
	for s := range Count {
		if got := Of(InSlot("b", s)); got != s {
			t.Fatalf("InSlot(b, %d) in slot %d", s, got)
		}
	}
}

func FuzzColocated(f *testing.F) {
	for _, n := range names {
		f.Add(n, Tag(""))
	}
	f.Fuzz(func(t *testing.T, name, other string) {
		if name != other && Colocated("p:", name, ":m") == Colocated("p:", other, ":m") {
			t.Fatalf("Colocated collides for %q and %q", name, other)
		}
		k := Colocated("p:", name, ":m")
		if Of(k) != Of(name) {
			t.Fatalf("Colocated(%q) = %q: slot %d, name's %d", name, k, Of(k), Of(name))
		}
		if k2 := Colocated("p:", name+"x", ":m"); k2 == k {
			t.Fatalf("Colocated collides for %q and %q", name, name+"x")
		}
	})
}

func BenchmarkOf(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = Of("gateway:ch:room:42")
	}
}
