package hypothesis

import (
	"fmt"
	"log/slog"
	"testing"
)

// countingSink stands for a connection in the dispatch benchmark.
type countingSink struct{ frames int }

func (c *countingSink) Open() bool        { return true }
func (c *countingSink) SendFrames([]byte) { c.frames++ }

// benchLoop builds a loop index of n sockets of which match follow the
// event's URI; the others each follow a URI of their own.
func benchLoop(tb testing.TB, n, match int) (*loopState, []byte, *countingSink) {
	p := &Protocol{opts: Options{MaxFilterRows: DefaultMaxFilterRows}, log: slog.New(slog.DiscardHandler)}
	st := &loopState{p: p, index: make(map[row]map[*socket]struct{}), members: make(map[string]struct{})}
	sink := &countingSink{}
	for i := range n {
		s := &socket{p: p, out: sink, st: st}
		uri := fmt.Sprintf("https://example.com/page/%d", i)
		if i < match {
			uri = "https://example.com/page"
		}
		st.setRows(s, []row{{fieldURI, Normalize(uri)}, {fieldGroup, fmt.Sprintf("group-%d", i)}})
	}
	in := EventInput{Action: "create", Annotation: []byte(`{"id":"Zx3k9aQqEe-3sR8y9mAb1g","user":"acct:alice@localhost",` +
		`"uri":"http://example.com/page","group":"__world__","text":"Nice","permissions":{"read":["group:__world__"]},` +
		`"moderation_status":"APPROVED","target":[{"source":"https://example.com/page"}]}`)}
	payload, err := buildWireEvent(&in)
	if err != nil {
		tb.Fatal(err)
	}
	return st, payload, sink
}

func TestNewRequiresSecretsAndRevoked(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New accepted no secrets")
	}
}

func TestDispatchSendsToMatchesOnly(t *testing.T) {
	st, payload, sink := benchLoop(t, 1000, 10)
	st.dispatch(payload)
	if sink.frames != 10 {
		t.Fatalf("sent %d frames, want 10", sink.frames)
	}
	// Closing sockets empties the index.
	for _, set := range st.index {
		for s := range set {
			st.setRows(s, nil)
		}
	}
	if len(st.index) != 0 {
		t.Fatalf("index keeps %d rows", len(st.index))
	}
}

// BenchmarkDispatch: one event against a loop holding 1,000 or 10,000
// sockets of which 10 match. The cost follows the 10, not the loop.
func BenchmarkDispatch(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("sockets=%d/matching=10", n), func(b *testing.B) {
			st, payload, sink := benchLoop(b, n, 10)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				st.dispatch(payload)
			}
			if sink.frames != 10*b.N {
				b.Fatalf("sent %d frames for %d events", sink.frames, b.N)
			}
		})
	}
}
