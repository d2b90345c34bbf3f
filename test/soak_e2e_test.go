package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/client"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/packet"
)

// The soak: skipped unless GATEWAY_SOAK names a duration. `make soak` runs
//
//	GATEWAY_SOAK=10m go test -run Soak -timeout 20m ./test/
//
// Two `gateway serve` processes on one Redis; 200 subscribers of one
// channel, half on each node; a publisher on node A at 100 publishes per
// second with sequence numbers; a churn of about 50 connections per second
// (connect, authenticate, subscribe, close) on both nodes; one Redis
// restart in the middle. Helpers are prefixed soak.

const (
	soakSubscribers = 200
	soakPublishRate = 100 // per second
	soakChurnRate   = 50  // connections per second
	soakPingEvery   = 10 * time.Second
)

// soakSub is one subscriber's account of the sequence numbers it read.
type soakSub struct {
	node    string // "A" (the publisher's node: local) or "B" (through Redis)
	mu      sync.Mutex
	last    int64      // last sequence number read; -1 before the first
	missing [][2]int64 // gaps [from, to] of sequence numbers never read
	dups    int64      // a number read twice
	reorder int64      // a number lower than one read before (not a dup)
	seen    map[int64]bool
	err     error // how the connection ended, if it did before the end
}

func (s *soakSub) got(seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.seen[seq]:
		s.dups++
	case seq < s.last:
		s.reorder++
	case seq > s.last+1:
		s.missing = append(s.missing, [2]int64{s.last + 1, seq - 1})
	}
	s.seen[seq] = true
	s.last = max(s.last, seq)
}

func (s *soakSub) lastSeq() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// soakDial connects an ordinary client (package client) that pings every
// soakPingEvery and does not reconnect: a drop ends it, reported to
// onEnd with its cause (nil when the test closed it).
func soakDial(t testing.TB, url, keyText string, onEnd func(error)) *client.Client {
	t.Helper()
	c, err := client.Dial(testCtx(t), url, client.Options{Key: keyText, PingInterval: soakPingEvery, NoReconnect: true,
		OnState: func(st client.State, err error) {
			if st == client.Closed && err != nil {
				onEnd(err)
			}
		}})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// soakChurnOne connects to url, authenticates, subscribes to channel
// (Subscribed, or no answer while Redis is down: a Ping's Pong ends the
// wait) and closes normally.
func soakChurnOne(url string, key []byte, channel string) error {
	c, err := drainDial(url, key)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, packet.AppendSubscribe(nil, channel)); err != nil {
		return err
	}
	if err := c.Write(ctx, websocket.MessageBinary, packet.AppendPing(nil)); err != nil {
		return err
	}
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("waiting for Subscribed/Pong: %w", err)
		}
		d := packet.NewClientDecoder(msg)
		var p packet.ServerPacket
		for {
			ok, err := d.Next(&p)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			switch p.ID {
			case packet.PacketSubscribed:
			case packet.PacketPong:
				return c.Close(websocket.StatusNormalClosure, "bye")
			default:
				return fmt.Errorf("churn client got packet %#x", p.ID)
			}
		}
	}
}

// TestSoak: see the comment at the top of the file. Asserts: no duplicate
// and no reordering for any subscriber; no loss at all on node A (local
// delivery); on node B, losses only of numbers published around the Redis
// restart (counted and logged); no churn failure; goroutines and heap of
// both processes at the end near their level at the start.
func TestSoak(t *testing.T) {
	spec := os.Getenv("GATEWAY_SOAK")
	if spec == "" {
		t.Skip("soak: set GATEWAY_SOAK=10m (a duration) to run it; `make soak` does")
	}
	dur, err := time.ParseDuration(spec)
	if err != nil || dur <= 0 {
		dur = 10 * time.Minute
	}
	if dur < 30*time.Second {
		dur = 30 * time.Second
	}
	t.Logf("soak for %v", dur)

	srv := redistest.Start(t)
	env := e2eEnv("GATEWAY_SECRET=" + testSecret)
	keys := faultKeys(t)
	a := e2eServe(t, env, "--data-dir", t.TempDir(), "--redis", srv.URL)
	b := e2eServe(t, env, "--data-dir", t.TempDir(), "--redis", srv.URL)
	nodes := map[string]*e2eProc{"A": a, "B": b}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var bg sync.WaitGroup
	t.Cleanup(bg.Wait)
	t.Cleanup(stop)

	// Subscribers.
	subs := make([]*soakSub, soakSubscribers)
	for i := range subs {
		name := "A"
		if i%2 == 1 {
			name = "B"
		}
		text, _ := faultIssue(t, keys, fmt.Sprintf("sub%d", i))
		s := &soakSub{node: name, last: -1, seen: map[int64]bool{}}
		subs[i] = s
		c := soakDial(t, nodes[name].ws, text, func(err error) {
			if ctx.Err() == nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
		})
		// Subscribe returns once Subscribed arrived: the Redis
		// subscription is live.
		if _, err := c.Subscribe(testCtx(t), "seq", func(p client.Publication) {
			if n, err := strconv.ParseInt(string(p.Payload), 10, 64); err == nil {
				s.got(n)
			}
		}); err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
	}

	// The publisher.
	pubText, _ := faultIssue(t, keys, "publisher")
	var published atomic.Int64 // next sequence number
	var pubErr atomic.Value
	var pubErrors atomic.Int64
	pub := soakDial(t, a.ws, pubText, func(err error) {
		if ctx.Err() == nil {
			pubErr.Store(fmt.Errorf("connection ended: %w", err)) // one type for atomic.Value
		}
	})
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(time.Second / soakPublishRate)
		defer tick.Stop()
		for {
			select {
			case <-pubCtx.Done():
				return
			case <-tick.C:
			}
			n := published.Load()
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := pub.Publish(wctx, "seq", strconv.AppendInt(nil, n, 10))
			cancel()
			// A refusal (an Error packet) is counted; the number is
			// spent all the same, as when the publish was written.
			var se *client.ServerError
			if errors.As(err, &se) {
				pubErrors.Add(1)
			} else if err != nil {
				pubErr.Store(fmt.Errorf("publish %d: %w", n, err))
				return
			}
			published.Add(1)
		}
	}()

	// The churn.
	var churned, churnFailed atomic.Int64
	var churnErrMu sync.Mutex
	var churnErr error
	churnCtx, stopChurn := context.WithCancel(ctx)
	var churnWG sync.WaitGroup
	const churnWorkers = 5
	for w := range churnWorkers {
		churnWG.Go(func() {
			tick := time.NewTicker(time.Second * churnWorkers / soakChurnRate)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-churnCtx.Done():
					return
				case <-tick.C:
				}
				p := a
				if (w+i)%2 == 1 {
					p = b
				}
				raw, _, err := keys.Issue(fmt.Sprintf("churn%d-%d", w, i), time.Hour, time.Now())
				if err == nil {
					err = soakChurnOne(p.ws, raw, fmt.Sprintf("churn-%d-%d", w, i%50))
				}
				churned.Add(1)
				if err != nil {
					churnFailed.Add(1)
					churnErrMu.Lock()
					if churnErr == nil {
						churnErr = err
					}
					churnErrMu.Unlock()
				}
			}
		})
	}

	// Warm up, then the starting point of the resource checks.
	time.Sleep(10 * time.Second)
	startA, startB := faultReadRuntime(t, a.admin), faultReadRuntime(t, b.admin)
	t.Logf("start: A %v goroutines %.1f MiB heap, B %v goroutines %.1f MiB heap",
		startA.goroutines, startA.heap/(1<<20), startB.goroutines, startB.heap/(1<<20))

	began := time.Now()
	time.Sleep(dur/2 - 10*time.Second)
	// The Redis restart.
	seqKill := published.Load()
	faultKillRedis(t, srv)
	time.Sleep(3 * time.Second)
	seqRestart := published.Load()
	srv.Restart(t)
	for _, p := range []*e2eProc{a, b} {
		// The new redis-server starts empty (no persistence here): the
		// nodes say so for 15 minutes (TestRevocationRedisRestartedEmpty).
		faultWaitReadyz(t, p.admin, `{"status":"degraded","down":["redis_data_lost"]}`)
	}
	// Recovered once every subscriber of B read a number published after
	// Redis came back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		behind := 0
		for _, s := range subs {
			if s.node == "B" && s.lastSeq() <= seqRestart {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers of B got nothing published after the Redis restart within 30 s", behind)
		}
		time.Sleep(50 * time.Millisecond)
	}
	seqRecovered := published.Load()
	t.Logf("Redis restart: killed at seq %d, back at seq %d, B recovered by seq %d", seqKill, seqRestart, seqRecovered)

	if d := time.Until(began.Add(dur - 10*time.Second)); d > 0 {
		time.Sleep(d)
	}
	stopChurn()
	churnWG.Wait()
	stopPub()
	<-pubDone
	if err, _ := pubErr.Load().(error); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	total := published.Load()
	// Every subscriber reads up to the last number (or stops early: loss).
	deadline = time.Now().Add(30 * time.Second)
	for {
		done := 0
		for _, s := range subs {
			if s.lastSeq() == total-1 {
				done++
			}
		}
		if done == len(subs) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Sequence numbers.
	var lostA, lostB, lostBOutside, dups, reorders int64
	var firstBad string
	for i, s := range subs {
		s.mu.Lock()
		if s.err != nil && firstBad == "" {
			firstBad = fmt.Sprintf("subscriber %d on %s ended: %v", i, s.node, s.err)
		}
		if s.last < total-1 {
			s.missing = append(s.missing, [2]int64{s.last + 1, total - 1})
		}
		dups += s.dups
		reorders += s.reorder
		for _, g := range s.missing {
			n := g[1] - g[0] + 1
			if s.node == "A" {
				lostA += n
				continue
			}
			lostB += n
			// The window: from a second of publishes before the kill
			// (in flight) to the recovery.
			lo, hi := max(g[0], seqKill-soakPublishRate), min(g[1], seqRecovered)
			inside := max(hi-lo+1, 0)
			lostBOutside += n - inside
			if n-inside > 0 && firstBad == "" {
				firstBad = fmt.Sprintf("subscriber %d on B lost %d..%d, outside the Redis restart window %d..%d",
					i, g[0], g[1], seqKill-soakPublishRate, seqRecovered)
			}
		}
		s.mu.Unlock()
	}
	t.Logf("published %d; %d subscribers (%d deliveries expected); lost: A %d, B %d (%d outside the restart window); duplicates %d; reordered %d",
		total, len(subs), total*int64(len(subs)), lostA, lostB, lostBOutside, dups, reorders)
	t.Logf("churn: %d connections, %d failed (first: %v); publisher Error packets: %d",
		churned.Load(), churnFailed.Load(), churnErr, pubErrors.Load())
	if dups != 0 || reorders != 0 {
		t.Errorf("%d duplicated and %d reordered deliveries, want none", dups, reorders)
	}
	if lostA != 0 {
		t.Errorf("%d local deliveries (node A) lost, want none", lostA)
	}
	if lostBOutside != 0 || firstBad != "" {
		t.Errorf("%d cross-node deliveries lost outside the Redis restart; %s", lostBOutside, firstBad)
	}
	if churnFailed.Load() != 0 {
		t.Errorf("%d of %d churn connections failed, e.g. %v", churnFailed.Load(), churned.Load(), churnErr)
	}

	// Resources: back near the start once the churn has stopped.
	endA := faultWaitFlat(t, "node A", a.admin, startA, 100)
	endB := faultWaitFlat(t, "node B", b.admin, startB, 100)
	t.Logf("end: A %v goroutines %.1f MiB heap, B %v goroutines %.1f MiB heap",
		endA.goroutines, endA.heap/(1<<20), endB.goroutines, endB.heap/(1<<20))
}
