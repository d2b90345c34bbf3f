package test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
)

// hrProxy is a TCP proxy between a node and Redis that can hold back
// Redis's answers on the node's command connections (those that have sent
// a script and never a SUBSCRIBE) while pub/sub connections and new
// connections flow: a history read can then be answered by Redis before
// an event and reach the node after it.
type hrProxy struct {
	addr   string
	target string

	mu      sync.Mutex
	conns   []*hrProxyConn
	release chan struct{} // closed by unhold; nil when nothing is held
}

type hrProxyConn struct {
	mu            sync.Mutex
	scripts, subs bool
	held          chan struct{} // answers wait for it to close
}

func hrStartProxy(t *testing.T, target string) *hrProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hrProxy{addr: ln.Addr().String(), target: target}
	var all []net.Conn
	var allMu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		p.unhold()
		allMu.Lock()
		for _, c := range all {
			c.Close()
		}
		allMu.Unlock()
	})
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				down.Close()
				continue
			}
			allMu.Lock()
			all = append(all, down, up)
			allMu.Unlock()
			pc := &hrProxyConn{}
			p.mu.Lock()
			p.conns = append(p.conns, pc)
			p.mu.Unlock()
			go func() { // node -> Redis: note what the connection is for
				defer up.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := down.Read(buf)
					if n > 0 {
						low := bytes.ToLower(buf[:n])
						pc.mu.Lock()
						pc.subs = pc.subs || bytes.Contains(low, []byte("subscribe"))
						pc.scripts = pc.scripts || bytes.Contains(low, []byte("eval"))
						pc.mu.Unlock()
						if _, err := up.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { // Redis -> node: held while asked
				defer down.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := up.Read(buf)
					if n > 0 {
						pc.mu.Lock()
						held := pc.held
						pc.mu.Unlock()
						if held != nil {
							<-held
						}
						if _, err := down.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// hold holds back Redis's answers on every command connection there is.
func (p *hrProxy) hold() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.release = make(chan struct{})
	n := 0
	for _, c := range p.conns {
		c.mu.Lock()
		if c.scripts && !c.subs {
			c.held = p.release
			n++
		}
		c.mu.Unlock()
	}
	return n
}

func (p *hrProxy) unhold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.release == nil {
		return
	}
	close(p.release)
	p.release = nil
	for _, c := range p.conns {
		c.mu.Lock()
		c.held = nil
		c.mu.Unlock()
	}
}

// TestHistoryPubSubReconnectDuringRead: a SubscribeFrom's history read is
// answered by Redis while the node's pub/sub connection is away, and the
// answer reaches the node only after the pub/sub connection came back
// (and the node checked its live positions). A publication made between
// the two is on no connection the node listens to: the subscription must
// still get it at once, as a live one would, not only when a later
// publication shows the gap.
func TestHistoryPubSubReconnectDuringRead(t *testing.T) {
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("kills every pub/sub connection of the Redis server and lowers its maxclients: needs a redis-server of its own (REDIS_URL is set)")
	}
	t.Parallel()
	srv := redistest.Start(t)
	px := hrStartProxy(t, srv.Addr)
	prefix := "hx" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	hist := func(c *node.Config) {
		c.History = history.Options{Size: 100, TTL: time.Minute, Channels: []string{"h:"}}
		c.RedisPrefix = prefix
	}
	a := e2eRedisNode(t, srv, hist, func(c *node.Config) { c.RedisURL = "redis://" + px.addr })
	b := e2eRedisNode(t, srv, hist)
	const ch = "h:race"
	s1 := connect(t, a, "alice")
	_, sf := hcSubscribeFrom(t, s1, ch, history.Position{})
	e := sf.Epoch
	if p := hiAdminPublish(t, b, ch, "1"); p != (history.Position{Epoch: e, Offset: 1}) {
		t.Fatalf("first publish at %+v", p)
	}
	hiExpect(t, s1, publication(ch, 1, "1"))
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			if resp, err := http.Get(adminURL(a) + "/api/history?channel=" + ch); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	s2 := connect(t, a, "bob")
	hrPubSubOutage(t, srv, func() {
		hiAdminPublish(t, b, ch, "2")
		if n := px.hold(); n == 0 {
			t.Fatal("no command connection of node A to hold")
		}
		send(t, s2, packet.AppendSubscribeFrom(nil, ch, e, 1))
		time.Sleep(200 * time.Millisecond) // Redis answers the read into the proxy
		hiAdminPublish(t, b, ch, "3")
	})
	// The pub/sub connections are back; let node A run its check.
	time.Sleep(300 * time.Millisecond)
	px.unhold()
	hiExpect(t, s1, publication(ch, 2, "2"), publication(ch, 3, "3"))
	// s2's read answered 2 (replayed) before 3 was published; 3 went out
	// while node A's pub/sub connection was away, so only the history has
	// it.
	want := []string{publication(ch, 2, "2"), subscribedFrom(ch, history.Position{Epoch: e, Offset: 2}, 1), publication(ch, 3, "3")}
	var got []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for len(got) < len(want) {
		_, msg, err := s2.Read(ctx)
		if err != nil {
			t.Fatalf("the late subscriber got\n  %s\nthen nothing for 5 s (%v); want\n  %s", strings.Join(got, "\n  "), err, strings.Join(want, "\n  "))
		}
		for _, p := range decodeAll(t, msg) {
			got = append(got, describe(p))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the late subscriber got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestHistoryPubSubSubscribeDuringOutage: a SubscribeFrom on a channel
// node A does not listen to yet, sent while A's pub/sub connection is
// away, is answered once the channel is live again, and a publication
// made meanwhile reaches it: as a replay or inside the position it is
// told, never as a gap left for the next publication to show.
func TestHistoryPubSubSubscribeDuringOutage(t *testing.T) {
	t.Parallel()
	const ch = "h:idle"
	srv, a, b, _, _, _, _, _ := hrPubSubNodes(t, 100, "h:busy")
	c := connect(t, a, "frank")
	var e int64
	hrPubSubOutage(t, srv, func() {
		send(t, c, packet.AppendSubscribeFrom(nil, ch, 0, 0))
		e = hiAdminPublish(t, b, ch, "1").Epoch
	})
	// From (0, 0): no replay; the position is the top when it went live.
	p := readOne(t, c)
	t.Logf("answered %s", describe(p))
	switch {
	case p.ID == packet.PacketSubscribedFrom && p.Offset == 1:
		hiAdminPublish(t, b, ch, "2")
		hiExpect(t, c, publication(ch, 2, "2"))
	case p.ID == packet.PacketSubscribedFrom && p.Offset == 0:
		// Answered before 1 was published: 1 must follow at once.
		hiExpect(t, c, publication(ch, 1, "1"))
	default:
		t.Fatalf("SubscribeFrom during the outage answered %s", describe(p))
	}
	if p.Epoch != e || p.Recovered != 1 {
		t.Fatalf("SubscribeFrom during the outage answered %s, epoch %d", describe(p), e)
	}
}
