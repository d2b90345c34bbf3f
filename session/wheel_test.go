package session

import (
	"slices"
	"testing"
)

type item struct {
	name  string
	timer Timer[item]
}

func newItem(name string) *item {
	it := &item{name: name}
	it.timer.Init(it)
	return it
}

func TestWheelFiresInOrderOfDeadline(t *testing.T) {
	var w Wheel[item]
	a, b, c, far := newItem("a"), newItem("b"), newItem("c"), newItem("far")
	w.Set(&a.timer, 3)
	w.Set(&b.timer, 5)
	w.Set(&c.timer, 5)
	w.Set(&far.timer, 5+WheelSlots) // same slot as b and c, one lap later
	var fired []string
	fire := func(it *item) { fired = append(fired, it.name) }

	w.Advance(2, fire)
	if len(fired) != 0 {
		t.Fatalf("fired early: %v", fired)
	}
	w.Advance(4, fire)
	if !slices.Equal(fired, []string{"a"}) {
		t.Fatalf("after 4: %v", fired)
	}
	w.Advance(5, fire)
	slices.Sort(fired)
	if !slices.Equal(fired, []string{"a", "b", "c"}) {
		t.Fatalf("after 5: %v", fired)
	}
	w.Advance(5+WheelSlots, fire)
	if fired[len(fired)-1] != "far" || len(fired) != 4 {
		t.Fatalf("after a lap: %v", fired)
	}
	if a.timer.Deadline() != 0 {
		t.Fatal("a fired timer stays armed")
	}
}

func TestWheelRearmAndStop(t *testing.T) {
	var w Wheel[item]
	a, b := newItem("a"), newItem("b")
	w.Set(&a.timer, 2)
	w.Set(&a.timer, 10) // moved: must not fire at 2
	w.Set(&b.timer, 3)
	w.Stop(&b.timer)
	w.Stop(&b.timer) // stopping twice is a no-op
	var fired []string
	w.Advance(9, func(it *item) { fired = append(fired, it.name) })
	if len(fired) != 0 {
		t.Fatalf("fired %v before 10", fired)
	}
	w.Advance(10, func(it *item) { fired = append(fired, it.name) })
	if !slices.Equal(fired, []string{"a"}) {
		t.Fatalf("fired %v", fired)
	}
}

func TestWheelPastDeadlineFiresNext(t *testing.T) {
	var w Wheel[item]
	w.Advance(100, func(*item) {})
	a := newItem("a")
	w.Set(&a.timer, 50)
	fired := 0
	w.Advance(101, func(*item) { fired++ })
	if fired != 1 {
		t.Fatalf("a past deadline fired %d times at the next second", fired)
	}
}

func TestWheelFireMayRearm(t *testing.T) {
	var w Wheel[item]
	a := newItem("a")
	w.Set(&a.timer, 1)
	count := 0
	rearm := func(it *item) { count++; w.Set(&it.timer, w.Now()+1) }
	for now := uint32(1); now <= 200; now++ {
		w.Advance(now, rearm)
	}
	if count != 200 {
		t.Fatalf("fired %d times in 200 seconds, want 200", count)
	}
}

func TestWheelBigJump(t *testing.T) {
	var w Wheel[item]
	items := make([]*item, 300)
	for i := range items {
		items[i] = newItem("x")
		w.Set(&items[i].timer, uint32(i+1))
	}
	fired := 0
	w.Advance(1000, func(*item) { fired++ })
	if fired != len(items) {
		t.Fatalf("a jump past every slot fired %d of %d", fired, len(items))
	}
}

func BenchmarkWheelRearm(b *testing.B) {
	var w Wheel[item]
	items := make([]*item, 10000)
	for i := range items {
		items[i] = newItem("x")
		w.Set(&items[i].timer, uint32(30+i%30))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		it := items[i%len(items)]
		w.Set(&it.timer, uint32(30+(i/len(items))%64))
		i++
	}
}
