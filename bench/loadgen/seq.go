package loadgen

import (
	"encoding/binary"
	"sync/atomic"
	"time"
)

// PayloadHeader is the size of the header every benchmark payload starts
// with: an 8-byte sequence number, the 8-byte send time (Unix nanoseconds:
// sender and receiver run on one machine) and a 4-byte publisher id. The
// rest of the payload is padding.
const PayloadHeader = 20

// AppendPayload appends a payload of size bytes (at least PayloadHeader).
func AppendPayload(dst []byte, publisher uint32, seq uint64, sent time.Time, size int) []byte {
	size = max(size, PayloadHeader)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(sent.UnixNano()))
	dst = binary.BigEndian.AppendUint32(dst, publisher)
	for range size - PayloadHeader {
		dst = append(dst, 'x')
	}
	return dst
}

// ParsePayload reads a payload written by AppendPayload.
func ParsePayload(p []byte) (publisher uint32, seq uint64, sentNanos int64, ok bool) {
	if len(p) < PayloadHeader {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(p[16:20]), binary.BigEndian.Uint64(p[0:8]), int64(binary.BigEndian.Uint64(p[8:16])), true
}

// SeqTracker checks the deliveries of one receiver, per publisher stream
// (a publisher's sequence on one channel): it counts duplicates (a
// sequence seen before) and reorderings (a sequence below the highest
// seen, first time). Lost = expected - distinct. Not goroutine-safe: one
// tracker per receiving connection, used on its event loop.
type SeqTracker struct {
	streams map[uint32]*stream
}

type stream struct {
	seen     []uint64 // bitset of sequence numbers
	maxSeq   uint64
	any      bool
	distinct uint64
}

// SeqCounts are a tracker's (or a sum of trackers') counts.
type SeqCounts struct {
	Delivered  uint64 `json:"delivered"`
	Distinct   uint64 `json:"distinct"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
}

// Observe records sequence seq from stream id and says whether it was
// new, a duplicate, or new but out of order.
func (t *SeqTracker) Observe(id uint32, seq uint64) (dup, reordered bool) {
	if t.streams == nil {
		t.streams = make(map[uint32]*stream, 1)
	}
	s := t.streams[id]
	if s == nil {
		s = &stream{}
		t.streams[id] = s
	}
	w := seq / 64
	for uint64(len(s.seen)) <= w {
		s.seen = append(s.seen, 0)
	}
	bit := uint64(1) << (seq % 64)
	if s.seen[w]&bit != 0 {
		return true, false
	}
	s.seen[w] |= bit
	s.distinct++
	if s.any && seq < s.maxSeq {
		reordered = true
	}
	if !s.any || seq > s.maxSeq {
		s.maxSeq = seq
		s.any = true
	}
	return false, reordered
}

// Distinct is the number of distinct sequences seen over all streams.
func (t *SeqTracker) Distinct() uint64 {
	var n uint64
	for _, s := range t.streams {
		n += s.distinct
	}
	return n
}

// Gaps counts sequence numbers missing below the highest seen of each
// stream, assuming streams start at 0: losses that later deliveries
// prove, for receivers that do not know how many to expect.
func (t *SeqTracker) Gaps() uint64 {
	var n uint64
	for _, s := range t.streams {
		if s.any {
			n += s.maxSeq + 1 - s.distinct
		}
	}
	return n
}

// Deliveries aggregates delivery counts and latencies over many receivers.
type Deliveries struct {
	Latency    Histogram
	delivered  atomic.Uint64
	duplicates atomic.Uint64
	reordered  atomic.Uint64
	bad        atomic.Uint64
	distinct   atomic.Uint64
	first      atomic.Int64
	last       atomic.Int64
}

// Add records one delivery on tracker t (owned by the caller's
// connection) at now (Unix nanoseconds).
func (d *Deliveries) Add(t *SeqTracker, payload []byte, now int64) {
	pub, seq, sent, ok := ParsePayload(payload)
	if !ok {
		d.bad.Add(1)
		return
	}
	d.AddSeq(t, pub, seq, sent, now)
}

// AddSeq is Add with the payload already parsed.
func (d *Deliveries) AddSeq(t *SeqTracker, pub uint32, seq uint64, sent, now int64) {
	d.delivered.Add(1)
	dup, re := t.Observe(pub, seq)
	if dup {
		d.duplicates.Add(1)
	} else {
		d.distinct.Add(1)
	}
	if re {
		d.reordered.Add(1)
	}
	d.Latency.Record(now - sent)
	d.first.CompareAndSwap(0, now)
	for {
		l := d.last.Load()
		if now <= l || d.last.CompareAndSwap(l, now) {
			break
		}
	}
}

// Delivered is the number of deliveries so far (duplicates included).
func (d *Deliveries) Delivered() uint64 { return d.delivered.Load() }

// Last is the time of the last delivery (Unix nanoseconds), 0 if none.
func (d *Deliveries) Last() int64 { return d.last.Load() }

// Counts returns the totals.
func (d *Deliveries) Counts() SeqCounts {
	return SeqCounts{Delivered: d.delivered.Load(), Distinct: d.distinct.Load(), Duplicates: d.duplicates.Load(), Reordered: d.reordered.Load()}
}

// First is the time of the first delivery (Unix nanoseconds), 0 if none.
func (d *Deliveries) First() int64 { return d.first.Load() }

// Malformed counts payloads too short to carry a header.
func (d *Deliveries) Malformed() uint64 { return d.bad.Load() }
