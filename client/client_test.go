package client

import (
	"testing"
	"time"
)

func TestBackoffFullJitter(t *testing.T) {
	c := &Client{opts: Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: 3 * time.Second}}
	for _, tc := range []struct {
		attempt int
		ceiling time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {4, 1600 * time.Millisecond}, {5, 3 * time.Second}, {40, 3 * time.Second}} {
		var lo, hi time.Duration = tc.ceiling, 0
		for range 2000 {
			d := c.backoff(tc.attempt)
			if d <= 0 || d > tc.ceiling {
				t.Fatalf("attempt %d: backoff %v outside (0, %v]", tc.attempt, d, tc.ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter spreads over the whole range, not near the ceiling.
		if lo > tc.ceiling/10 || hi < tc.ceiling*9/10 {
			t.Errorf("attempt %d: backoffs within [%v, %v] of (0, %v]", tc.attempt, lo, hi, tc.ceiling)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.setDefaults()
	if o.PingInterval != DefaultPingInterval || o.PongWait != DefaultPongWait || o.MinBackoff != DefaultMinBackoff ||
		o.MaxBackoff != DefaultMaxBackoff || o.QueueSize != DefaultQueueSize || o.ReadLimit != DefaultReadLimit ||
		o.DialTimeout != DefaultDialTimeout {
		t.Fatalf("defaults %+v", o)
	}
	o = Options{MinBackoff: time.Minute, MaxBackoff: time.Second}
	o.setDefaults()
	if o.MaxBackoff != time.Minute {
		t.Fatalf("MaxBackoff %v below MinBackoff", o.MaxBackoff)
	}
}

func TestCloseErrorPermanent(t *testing.T) {
	for code, want := range map[int]bool{3001: true, 3002: true, 3004: true, 1001: false, 1008: false, 1013: false, 3003: false, 3005: false, 3006: false} {
		if got := (&CloseError{Code: code}).Permanent(); got != want {
			t.Errorf("code %d: Permanent %v", code, got)
		}
	}
}

func TestStateNames(t *testing.T) {
	// Authenticating's value comes last, but it is its own state with its
	// own name; the others keep theirs.
	for s, want := range map[State]string{Connecting: "connecting", Authenticating: "authenticating", Connected: "connected",
		Disconnected: "disconnected", Closed: "closed", 0: "State(0)"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", int(s), got, want)
		}
	}
	if Connecting != 1 || Connected != 2 || Disconnected != 3 || Closed != 4 || Authenticating != 5 {
		t.Fatal("state values changed")
	}
}
