package session

// WheelSlots is the number of one-second slots in a Wheel. Deadlines further
// out than this wrap around and are re-checked when their slot comes up.
const WheelSlots = 64

// Timer is a deadline kept in a Wheel, embedded in the owner it belongs to
// (intrusive links: no allocation and no runtime timer per connection).
type Timer[T any] struct {
	owner      *T
	deadline   uint32 // in the wheel's seconds; 0 = not armed
	prev, next *Timer[T]
}

// Init ties the timer to its owner, once.
func (t *Timer[T]) Init(owner *T) { t.owner = owner }

// Deadline returns the armed deadline, or 0.
func (t *Timer[T]) Deadline() uint32 { return t.deadline }

// Wheel is a hashed timing wheel with one-second slots, one per event loop
// (Varghese and Lauck). Arming, re-arming and stopping are O(1); advancing
// costs the timers in the slots passed. It runs on its loop.
type Wheel[T any] struct {
	slots   [WheelSlots]*Timer[T] // heads of doubly linked lists
	now     uint32
	expired []*Timer[T] // scratch, reused by Advance
}

// Now returns the second the wheel was last advanced to.
func (w *Wheel[T]) Now() uint32 { return w.now }

// Set arms t to fire at deadline (in the wheel's seconds; values not after
// Now fire at the next Advance). Re-arming to a deadline in the same slot
// only updates the deadline.
func (w *Wheel[T]) Set(t *Timer[T], deadline uint32) {
	if deadline <= w.now { // already due: the next Advance fires it
		deadline = w.now + 1
	}
	if t.deadline != 0 && t.deadline%WheelSlots == deadline%WheelSlots {
		t.deadline = deadline
		return
	}
	w.Stop(t)
	t.deadline = deadline
	head := &w.slots[deadline%WheelSlots]
	t.next = *head
	if *head != nil {
		(*head).prev = t
	}
	*head = t
}

// Stop disarms t; stopping a disarmed timer is a no-op.
func (w *Wheel[T]) Stop(t *Timer[T]) {
	if t.deadline == 0 {
		return
	}
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		w.slots[t.deadline%WheelSlots] = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	t.prev, t.next, t.deadline = nil, nil, 0
}

// Advance moves the wheel to now and calls fire for each timer whose
// deadline is not after now, disarmed first so fire may re-arm it. Timers
// further out stay where they are.
func (w *Wheel[T]) Advance(now uint32, fire func(*T)) {
	if now <= w.now {
		return
	}
	from := w.now + 1
	if now-w.now > WheelSlots {
		from = now - WheelSlots + 1
	}
	w.now = now
	w.expired = w.expired[:0]
	for sec := from; sec <= now; sec++ {
		for t := w.slots[sec%WheelSlots]; t != nil; t = t.next {
			if t.deadline <= now {
				w.expired = append(w.expired, t)
			}
		}
	}
	for _, t := range w.expired {
		w.Stop(t)
	}
	for i, t := range w.expired {
		w.expired[i] = nil
		fire(t.owner)
	}
}

// Each calls fn for every armed timer's owner. fn must not arm or stop
// timers of this wheel; collect the owners first when it needs to.
func (w *Wheel[T]) Each(fn func(*T)) {
	for _, t := range w.slots {
		for ; t != nil; t = t.next {
			fn(t.owner)
		}
	}
}
