package history

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

func TestOptionsKeeps(t *testing.T) {
	for _, tc := range []struct {
		opts    Options
		channel string
		want    bool
	}{
		{Options{}, "chat", false},
		{Options{Size: 10}, "chat", true},
		{Options{Size: 10}, "#kosync:bob", false},
		{Options{Size: 10, Channels: []string{"chat:", "game:"}}, "chat:1", true},
		{Options{Size: 10, Channels: []string{"chat:", "game:"}}, "game:x", true},
		{Options{Size: 10, Channels: []string{"chat:", "game:"}}, "news", false},
		{Options{Size: 10, Channels: []string{"#"}}, "#wsify:x", false},
	} {
		if got := tc.opts.Keeps(tc.channel); got != tc.want {
			t.Errorf("%+v.Keeps(%q) = %v, want %v", tc.opts, tc.channel, got, tc.want)
		}
	}
	if got := ParseChannels(" chat:, ,game: ,"); fmt.Sprint(got) != "[chat: game:]" {
		t.Errorf("ParseChannels = %q", got)
	}
	o := Options{TTL: 48 * time.Hour}.WithDefaults()
	if o.MetaTTL != 48*time.Hour {
		t.Errorf("MetaTTL %v, want at least TTL", o.MetaTTL)
	}
}

// storeUnderTest is a store and a way to move its clock past TTL.
type storeUnderTest struct {
	Store
	ageOut func() // makes every kept publication older than TTL
}

func memoryStore(t *testing.T, size int) storeUnderTest {
	s := NewMemoryStore(Options{Size: size, TTL: time.Minute})
	var mu sync.Mutex
	now := time.Now()
	s.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	return storeUnderTest{s, func() { mu.Lock(); now = now.Add(2 * time.Minute); mu.Unlock() }}
}

func redisStore(t *testing.T, size int) (storeUnderTest, *redis.Client) {
	s, c := newRedisStore(t, size)
	return storeUnderTest{s, func() { time.Sleep(s.opts.TTL + 100*time.Millisecond) }}, c
}

func redisStoreB(b *testing.B) (*RedisStore, *redis.Client) { return newRedisStore(b, 1000) }

func newRedisStore(t testing.TB, size int) (*RedisStore, *redis.Client) {
	srv := redistest.Start(t)
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	ttl := 300 * time.Millisecond
	pfx := fmt.Sprintf("t%d:", time.Now().UnixNano()) // REDIS_URL may be shared
	return NewRedisStore(c, pfx, Options{Size: size, TTL: ttl, MetaTTL: time.Hour}), c
}

func eachStore(t *testing.T, size int, fn func(t *testing.T, s storeUnderTest)) {
	t.Run("memory", func(t *testing.T) { fn(t, memoryStore(t, size)) })
	t.Run("redis", func(t *testing.T) { s, _ := redisStore(t, size); fn(t, s) })
}

func appendN(t *testing.T, s Store, channel string, from, to int) Position {
	t.Helper()
	var pos Position
	for i := from; i <= to; i++ {
		var err error
		if pos, err = s.Append(context.Background(), channel, []byte(fmt.Sprintf("p%d", i))); err != nil {
			t.Fatal(err)
		}
		if pos.Offset != int64(i) || pos.Epoch == 0 {
			t.Fatalf("append %d: position %+v", i, pos)
		}
	}
	return pos
}

func recoverOK(t *testing.T, s Store, channel string, since Position) Recovery {
	t.Helper()
	r, err := s.Recover(context.Background(), channel, since)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// describe writes a recovery as "top E/O recovered R: offsets=payloads".
func describe(r Recovery, epoch int64) string {
	var b bytes.Buffer
	same := "same"
	if r.Top.Epoch != epoch {
		same = "other"
	}
	fmt.Fprintf(&b, "%s epoch, top %d, recovered %v:", same, r.Top.Offset, r.Recovered)
	for _, p := range r.Publications {
		fmt.Fprintf(&b, " %d=%s", p.Offset, p.Payload)
	}
	return b.String()
}

func TestStoreRecovery(t *testing.T) { eachStore(t, 3, testRecovery) }

func testRecovery(t *testing.T, s storeUnderTest) {
	top := appendN(t, s, "c", 1, 5) // keeps 3, 4, 5
	e := top.Epoch
	for _, tc := range []struct {
		since Position
		want  string
	}{
		{Position{}, "same epoch, top 5, recovered true:"},
		{Position{e, 5}, "same epoch, top 5, recovered true:"},
		{Position{e, 4}, "same epoch, top 5, recovered true: 5=p5"},
		{Position{e, 2}, "same epoch, top 5, recovered true: 3=p3 4=p4 5=p5"},
		{Position{e, 1}, "same epoch, top 5, recovered false:"}, // 2 was trimmed
		{Position{e, 0}, "same epoch, top 5, recovered false:"},
		{Position{e, 6}, "same epoch, top 5, recovered false:"}, // above the top
		{Position{e + 1, 4}, "same epoch, top 5, recovered false:"},
	} {
		if got := describe(recoverOK(t, s, "c", tc.since), e); got != tc.want {
			t.Errorf("Recover(%+v) = %s, want %s", tc.since, got, tc.want)
		}
	}
	// Aged out: nothing is recoverable but the top; the epoch stays.
	s.ageOut()
	if got := describe(recoverOK(t, s, "c", Position{e, 4}), e); got != "same epoch, top 5, recovered false:" {
		t.Errorf("after TTL: %s", got)
	}
	if got := describe(recoverOK(t, s, "c", Position{e, 5}), e); got != "same epoch, top 5, recovered true:" {
		t.Errorf("after TTL, at the top: %s", got)
	}
	if pos, _ := s.Append(context.Background(), "c", []byte("p6")); pos != (Position{e, 6}) {
		t.Errorf("append after TTL: %+v, want epoch kept and offset 6", pos)
	}
	if got := describe(recoverOK(t, s, "c", Position{e, 5}), e); got != "same epoch, top 6, recovered true: 6=p6" {
		t.Errorf("after TTL and a new publish: %s", got)
	}
}

// A channel asked for before its first publish gets its epoch then, and
// the first publish is offset 1 of that epoch.
func TestStoreEpochBeforeFirstPublish(t *testing.T) { eachStore(t, 10, testEpochBeforeFirstPublish) }

func testEpochBeforeFirstPublish(t *testing.T, s storeUnderTest) {
	r := recoverOK(t, s, "new", Position{})
	if r.Top.Epoch == 0 || r.Top.Offset != 0 || !r.Recovered {
		t.Fatalf("Recover on a new channel: %+v", r)
	}
	if pos := appendN(t, s, "new", 1, 1); pos.Epoch != r.Top.Epoch {
		t.Fatalf("first publish in epoch %d, recovery gave %d", pos.Epoch, r.Top.Epoch)
	}
	if got := describe(recoverOK(t, s, "new", r.Top), r.Top.Epoch); got != "same epoch, top 1, recovered true: 1=p1" {
		t.Fatalf("Recover from the empty top: %s", got)
	}
	// Channels are independent.
	if other := appendN(t, s, "other", 1, 1); other.Epoch == r.Top.Epoch {
		t.Fatalf("two channels share epoch %d", other.Epoch)
	}
}

func TestStoreConcurrentAppends(t *testing.T) { eachStore(t, 1000, testConcurrentAppends) }

func testConcurrentAppends(t *testing.T, s storeUnderTest) {
	const writers, each = 8, 50
	var wg sync.WaitGroup
	offsets := make(chan int64, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				pos, err := s.Append(context.Background(), "c", []byte(fmt.Sprintf("w%d-%d", w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				offsets <- pos.Offset
			}
		})
	}
	wg.Wait()
	close(offsets)
	seen := map[int64]bool{}
	for o := range offsets {
		if seen[o] || o < 1 || o > writers*each {
			t.Fatalf("offset %d repeated or out of range", o)
		}
		seen[o] = true
	}
	r := recoverOK(t, s, "c", Position{})
	r = recoverOK(t, s, "c", Position{r.Top.Epoch, 0})
	if !r.Recovered || len(r.Publications) != writers*each {
		t.Fatalf("recovered %v with %d publications", r.Recovered, len(r.Publications))
	}
	for i, p := range r.Publications {
		if p.Offset != int64(i+1) {
			t.Fatalf("publication %d has offset %d", i, p.Offset)
		}
	}
}

func TestStoreRead(t *testing.T) { eachStore(t, 3, testRead) }

func testRead(t *testing.T, s storeUnderTest) {
	top := appendN(t, s, "c", 1, 5)
	for _, tc := range []struct {
		limit int
		want  string
	}{{0, "3 4 5"}, {-1, "3 4 5"}, {2, "4 5"}, {1, "5"}, {10, "3 4 5"}} {
		pos, pubs, err := s.Read(context.Background(), "c", tc.limit)
		if err != nil || pos != top {
			t.Fatalf("Read(%d): %+v, %v; want top %+v", tc.limit, pos, err, top)
		}
		var got []string
		for _, p := range pubs {
			if string(p.Payload) != fmt.Sprintf("p%d", p.Offset) {
				t.Fatalf("Read(%d): offset %d holds %q", tc.limit, p.Offset, p.Payload)
			}
			got = append(got, fmt.Sprint(p.Offset))
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("Read(%d) = %s, want %s", tc.limit, g, tc.want)
		}
	}
	s.ageOut()
	if pos, pubs, err := s.Read(context.Background(), "c", 0); err != nil || pos != top || len(pubs) != 0 {
		t.Fatalf("Read after TTL: %+v %d %v", pos, len(pubs), err)
	}
}

func TestMemoryStoreSweep(t *testing.T) {
	s := NewMemoryStore(Options{Size: 4, TTL: time.Minute, MetaTTL: time.Hour})
	now := time.Now()
	s.now = func() time.Time { return now }
	appendN(t, s, "a", 1, 2)
	recoverOK(t, s, "b", Position{})
	now = now.Add(30 * time.Minute)
	if n := s.Sweep(); n != 2 {
		t.Fatalf("Sweep kept %d channels within MetaTTL, want 2", n)
	}
	now = now.Add(31 * time.Minute)
	if n := s.Sweep(); n != 0 {
		t.Fatalf("Sweep kept %d channels past MetaTTL, want 0", n)
	}
	// A forgotten channel starts a new epoch.
	if pos := appendN(t, s, "a", 1, 1); pos.Offset != 1 {
		t.Fatalf("after Sweep: %+v", pos)
	}
}

// The ring grows to Size and then overwrites the oldest: 1..Size+k keeps
// exactly the last Size.
func TestMemoryStoreRing(t *testing.T) {
	for _, size := range []int{1, 2, 16, 17, 40} {
		s := NewMemoryStore(Options{Size: size})
		top := appendN(t, s, "c", 1, 3*size+1)
		r := recoverOK(t, s, "c", Position{top.Epoch, top.Offset - int64(size)})
		if !r.Recovered || len(r.Publications) != size || r.Publications[0].Offset != top.Offset-int64(size)+1 {
			t.Fatalf("size %d: %s", size, describe(r, top.Epoch))
		}
		if r := recoverOK(t, s, "c", Position{top.Epoch, top.Offset - int64(size) - 1}); r.Recovered {
			t.Fatalf("size %d: recovered past the ring", size)
		}
	}
}

// Redis restarted empty: the epoch changes and offsets start again at 1;
// the old position cannot be recovered.
func TestRedisStoreRestartedEmpty(t *testing.T) {
	s, c := redisStore(t, 10)
	old := appendN(t, s, "c", 1, 3)
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	r := recoverOK(t, s, "c", old)
	if r.Recovered || r.Top.Epoch == old.Epoch || r.Top.Offset != 0 {
		t.Fatalf("after FLUSHALL: %+v", r)
	}
	if pos := appendN(t, s, "c", 1, 1); pos.Epoch != r.Top.Epoch {
		t.Fatalf("publish after FLUSHALL in epoch %d, recovery gave %d", pos.Epoch, r.Top.Epoch)
	}
}

// AppendPublish publishes head | epoch | offset | payload, in offset order.
func TestRedisStoreAppendPublish(t *testing.T) {
	s, c := redisStore(t, 10)
	ctx := context.Background()
	sub := c.Subscribe(ctx, "ps")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	rs := s.Store.(*RedisStore)
	var positions []Position
	for i := range 3 {
		pos, err := rs.AppendPublish(ctx, "c", []byte{byte('a' + i)}, "ps", []byte("HEAD"))
		if err != nil {
			t.Fatal(err)
		}
		positions = append(positions, pos)
	}
	for i, pos := range positions {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []byte("HEAD")
		want = binary.BigEndian.AppendUint64(want, uint64(pos.Epoch))
		want = binary.BigEndian.AppendUint64(want, uint64(i+1))
		want = append(want, byte('a'+i))
		if m.Payload != string(want) {
			t.Fatalf("message %d: % x, want % x", i, m.Payload, want)
		}
	}
}

func TestRedisStoreUnavailable(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	s := NewRedisStore(c, "x:", Options{Size: 3})
	if _, err := s.Append(context.Background(), "c", []byte("x")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append with Redis down: %v", err)
	}
	if _, err := s.Recover(context.Background(), "c", Position{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Recover with Redis down: %v", err)
	}
}

// A Sweep that forgets a channel while a publish has already looked it up
// (between MemoryStore.channel and the channel's lock) must not let that
// publish land in the forgotten channel: its position would be of an epoch
// nobody can read or recover any more, and publishers racing on both
// copies would interleave two epochs.
func TestMemoryStoreSweepRacingAppend(t *testing.T) {
	s := NewMemoryStore(Options{Size: 4, TTL: time.Minute, MetaTTL: time.Hour})
	now := time.Now()
	sweepNext, sweeping := false, false
	s.now = func() time.Time {
		if sweepNext && !sweeping {
			// A Sweep runs now, after AppendFunc found the channel.
			sweepNext, sweeping = false, true
			s.Sweep()
			sweeping = false
		}
		return now
	}
	appendN(t, s, "a", 1, 1)
	now = now.Add(2 * time.Hour) // "a" is idle past MetaTTL: the Sweep forgets it
	sweepNext = true
	pos, _ := s.Append(context.Background(), "a", []byte("x"))
	top, pubs, _ := s.Read(context.Background(), "a", 0)
	if top != pos || len(pubs) != 1 || string(pubs[0].Payload) != "x" {
		t.Fatalf("Append answered %+v, but the store holds %+v with %d publications", pos, top, len(pubs))
	}
}

// recoverWithin is the bounded recovery both stores offer.
type recoverWithin interface {
	RecoverWithin(ctx context.Context, channel string, since Position, overhead, limit int64) (Recovery, error)
}

// A recovery over the caller's bound answers Recovered false with nothing,
// whichever store: the Redis store must not build (and ship) the whole
// tail of a large history for a replay the node then refuses; within the
// bound it answers as Recover does.
func TestRecoverWithinBound(t *testing.T) {
	for name, mk := range map[string]func(t *testing.T) Store{
		"memory": func(t *testing.T) Store { return memoryStore(t, 200).Store },
		"redis":  func(t *testing.T) Store { s, _ := redisStore(t, 200); return s.Store },
	} {
		t.Run(name, func(t *testing.T) { testRecoverWithinBound(t, mk(t)) })
	}
}

func testRecoverWithinBound(t *testing.T, s Store) {
	rw, ok := s.(recoverWithin)
	if !ok {
		t.Fatalf("%T has no RecoverWithin", s)
	}
	top := appendN(t, s, "c", 1, 150) // payloads "p1".."p150": 2 to 4 bytes
	since := Position{Epoch: top.Epoch, Offset: 100}
	// 50 publications of 4 bytes + 10 overhead: 700 bytes.
	r, err := rw.RecoverWithin(context.Background(), "c", since, 10, 699)
	if err != nil || r.Recovered || len(r.Publications) != 0 || r.Top != top {
		t.Fatalf("over the bound: %s, %v", describe(r, top.Epoch), err)
	}
	r, err = rw.RecoverWithin(context.Background(), "c", since, 10, 700)
	if err != nil || !r.Recovered || len(r.Publications) != 50 || r.Publications[0].Offset != 101 || string(r.Publications[49].Payload) != "p150" {
		t.Fatalf("within the bound: %s, %v", describe(r, top.Epoch), err)
	}
	r, err = rw.RecoverWithin(context.Background(), "c", since, 10, 0)
	if err != nil || !r.Recovered || len(r.Publications) != 50 {
		t.Fatalf("no bound: %s, %v", describe(r, top.Epoch), err)
	}
}

// bytesHeld recomputes what the store holds, to check its running count.
func bytesHeld(s *MemoryStore) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, c := range s.channels {
		c.mu.Lock()
		n += memChannelOverhead
		for i := range c.n {
			n += entryBytes(c.at(i))
		}
		c.mu.Unlock()
	}
	return n
}

// TestMemoryStoreBudget: past MaxBytes the least recently used channels
// are forgotten whole (a later recovery of them: another epoch), the
// channel appended to and the recently used ones are kept, and the running
// count matches what is held through trims, expiry and Sweep.
func TestMemoryStoreBudget(t *testing.T) {
	const perChannel = memChannelOverhead + 3*(100+memEntryOverhead)
	s := NewMemoryStore(Options{Size: 3, TTL: time.Minute, MetaTTL: time.Minute, MaxBytes: 10 * perChannel})
	now := time.Now()
	s.now = func() time.Time { return now }
	payload := make([]byte, 100)
	first := map[string]Position{}
	for i := range 20 {
		name := fmt.Sprintf("c%d", i)
		for range 5 { // 5 appends, 3 kept: trims counted too
			first[name], _ = s.Append(context.Background(), name, payload)
		}
		if got, want := s.bytes.Load(), bytesHeld(s); got != want {
			t.Fatalf("after c%d: counted %d, held %d", i, got, want)
		}
		if s.bytes.Load() > 10*perChannel {
			t.Fatalf("after c%d: %d bytes held, budget %d", i, s.bytes.Load(), 10*perChannel)
		}
	}
	// The newest ten first (a read of a forgotten one makes a channel,
	// which may push others out in turn).
	for i := 19; i >= 0; i-- {
		name := fmt.Sprintf("c%d", i)
		r := recoverOK(t, s, name, Position{Epoch: first[name].Epoch, Offset: 2})
		kept := i >= 10
		if kept != (r.Recovered && len(r.Publications) == 3) || kept != (r.Top.Epoch == first[name].Epoch) {
			t.Errorf("%s: recovered %v with %d publications, same epoch %v; want kept=%v", name, r.Recovered, len(r.Publications), r.Top.Epoch == first[name].Epoch, kept)
		}
	}
	now = now.Add(2 * time.Minute)
	s.Sweep()
	if got := s.bytes.Load(); got != bytesHeld(s) || got != 0 {
		t.Fatalf("after expiry and Sweep: counted %d, held %d", got, bytesHeld(s))
	}
}
