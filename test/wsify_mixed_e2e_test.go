package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
)

// Issue 11 item 2: a mixed cluster. Two gateway nodes and an original wsify
// v3 node share one Redis. The original node is played by go-redis doing
// exactly what wsify v3's Redis driver does: every joined client of it has
// its own SUBSCRIBE <channel> connection and gets each message's bytes as
// its text frame; a broadcast (WebSocket or POST /broadcast) is
// PUBLISH <channel> json.Marshal(content). On wsify's raw channels the
// gateway nodes must put exactly those bytes on Redis (no envelope), and
// every client of either kind must get every broadcast exactly once.

// mixedOrigClient is one client of the fake original wsify node: its own
// SUBSCRIBE connection, as wsify v3 opens per join.
type mixedOrigClient struct {
	ps   *redis.PubSub
	msgs <-chan *redis.Message
}

func mixedOrigJoin(t *testing.T, rc *redis.Client, channel string) *mixedOrigClient {
	t.Helper()
	ps := rc.Subscribe(testCtx(t), channel)
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(testCtx(t)); err != nil { // the subscribe reply
		t.Fatal(err)
	}
	return &mixedOrigClient{ps: ps, msgs: ps.Channel()}
}

// mixedOrigBroadcast publishes content as wsify v3 does: it decodes the
// client's content into any and PUBLISHes json.Marshal of it.
func mixedOrigBroadcast(t *testing.T, rc *redis.Client, channel, content string) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(content), &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(testCtx(t), channel, string(j)).Err(); err != nil {
		t.Fatal(err)
	}
}

// mixedWsClient is a wsify client of a gateway node whose frames a
// goroutine collects.
type mixedWsClient struct {
	name string
	c    *websocket.Conn
	mu   sync.Mutex
	got  []string
	err  error
}

func (m *mixedWsClient) frames() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.got), m.err
}

// mixedWsJoin dials n's wsify listener, joins channel and makes sure the
// join ran: it joins a channel of its own too and broadcasts a marker
// there until one comes back (a connection's messages run in order; a
// marker may be lost while its node's SUBSCRIBE is not made yet). Then a
// goroutine collects every frame.
func mixedWsJoin(t *testing.T, n *node.Node, name, channel string) *mixedWsClient {
	t.Helper()
	c := dialText(t, "ws://"+n.WsifyAddr().String()+"/ws")
	own := channel + "-sync-" + name
	writeText(t, c, `{"command":"join","args":{"channel":"`+channel+`"}}`)
	writeText(t, c, `{"command":"join","args":{"channel":"`+own+`"}}`)
	m := &mixedWsClient{name: name, c: c}
	frames := make(chan string, 64)
	go func() {
		synced := false
		for {
			_, msg, err := c.Read(context.Background())
			if err != nil {
				m.mu.Lock()
				m.err = err
				m.mu.Unlock()
				close(frames)
				return
			}
			if !synced {
				frames <- string(msg)
				synced = strings.HasPrefix(string(msg), `"done-`)
				continue
			}
			m.mu.Lock()
			m.got = append(m.got, string(msg))
			m.mu.Unlock()
		}
	}()
	deadline := time.Now().Add(waitFor)
	for try := 0; ; try++ {
		mark := fmt.Sprintf(`"sync-%d"`, try)
		writeText(t, c, `{"command":"broadcast","args":{"channel":"`+own+`","content":`+mark+`}}`)
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("%s: connection ended while joining", name)
			}
			if !strings.HasPrefix(f, `"sync-`) {
				t.Fatalf("%s: got %s while joining", name, f)
			}
			// A marker is back: the join of channel ran. Later markers
			// may still come; "done" comes after them (same node, same
			// channel: Redis order) and ends the sync phase.
			writeText(t, c, `{"command":"broadcast","args":{"channel":"`+own+`","content":"done-`+name+`"}}`)
			for f := range frames {
				if f == `"done-`+name+`"` {
					writeText(t, c, `{"command":"leave","args":{"channel":"`+own+`"}}`)
					return m
				}
				if !strings.HasPrefix(f, `"sync-`) {
					t.Fatalf("%s: got %s while joining", name, f)
				}
			}
			t.Fatalf("%s: connection ended while joining", name)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the join never took effect", name)
		}
	}
}

func TestWsifyMixedCluster(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := protoNode(t, srv), protoNode(t, srv)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rc.Close() })
	channel := "mixed-" + strings.ReplaceAll(t.Name(), "/", "-") // a raw Redis name

	// Clients of the original node (each its own SUBSCRIBE) and of both
	// gateway nodes.
	orig := []*mixedOrigClient{mixedOrigJoin(t, rc, channel), mixedOrigJoin(t, rc, channel)}
	ws := []*mixedWsClient{
		mixedWsJoin(t, a, "a1", channel), mixedWsJoin(t, a, "a2", channel),
		mixedWsJoin(t, b, "b1", channel), mixedWsJoin(t, b, "b2", channel),
	}
	// Two gateway nodes and the original node's two clients.
	if n, err := rc.PubSubNumSub(testCtx(t), channel).Result(); err != nil || n[channel] != 4 {
		t.Fatalf("Redis subscribers of %q: %v %v, want 4 (one per gateway node, one per original client)", channel, n, err)
	}

	// Broadcasts from every source, interleaved: a gateway client on each
	// node (the senders have joined: they get their own, as in wsify),
	// POST /broadcast on each node, and the original node. The content is
	// re-encoded as wsify does: sorted keys, numbers through float64, <>&
	// escaped.
	const rounds = 5
	var want []string
	for i := range rounds {
		for _, src := range []struct {
			name string
			send func(content string)
		}{
			{"ws-a1", func(c string) {
				writeText(t, ws[0].c, `{"command":"broadcast","args":{"channel":"`+channel+`","content":`+c+`}}`)
			}},
			{"ws-b1", func(c string) {
				writeText(t, ws[2].c, `{"command":"broadcast","args":{"channel":"`+channel+`","content":`+c+`}}`)
			}},
			{"post-a", func(c string) { mixedPost(t, a, channel, c) }},
			{"post-b", func(c string) { mixedPost(t, b, channel, c) }},
			{"orig", func(c string) { mixedOrigBroadcast(t, rc, channel, c) }},
		} {
			src.send(fmt.Sprintf(`{"src":%q,"n":%d.0,"html":"<b>&"}`, src.name, i))
			want = append(want, fmt.Sprintf(`{"html":"\u003cb\u003e\u0026","n":%d,"src":%q}`, i, src.name))
		}
	}

	// Every client of either kind gets every broadcast once; every node
	// delivers in Redis's one order, so they all see the same sequence.
	var orders [][]string
	names := []string{}
	for i, o := range orig {
		var got []string
		for len(got) < len(want) {
			select {
			case m := <-o.msgs:
				got = append(got, m.Payload)
			case <-time.After(waitFor):
				t.Fatalf("original client %d got %d of %d messages: %q", i, len(got), len(want), got)
			}
		}
		orders = append(orders, got)
		names = append(names, fmt.Sprintf("original client %d", i))
	}
	for _, c := range ws {
		deadline := time.Now().Add(waitFor)
		for {
			got, err := c.frames()
			if len(got) >= len(want) {
				break
			}
			if err != nil || time.Now().After(deadline) {
				t.Fatalf("%s got %d of %d frames (%v): %q", c.name, len(got), len(want), err, got)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Stray duplicates would come right after: wait a little for them.
	time.Sleep(300 * time.Millisecond)
	for i, o := range orig {
		select {
		case m := <-o.msgs:
			t.Fatalf("original client %d got an extra message %q", i, m.Payload)
		default:
		}
	}
	for _, c := range ws {
		got, err := c.frames()
		if err != nil {
			t.Fatalf("%s: connection ended: %v", c.name, err)
		}
		orders = append(orders, got)
		names = append(names, c.name)
	}
	sorted := slices.Sorted(slices.Values(want))
	for i, got := range orders {
		if s := slices.Sorted(slices.Values(got)); !slices.Equal(s, sorted) {
			t.Fatalf("%s received (sorted)\n%q\nwant each exactly once\n%q", names[i], s, sorted)
		}
		if !slices.Equal(got, orders[0]) {
			t.Fatalf("%s received\n%q\nin another order than %s\n%q", names[i], got, names[0], orders[0])
		}
	}
}

// mixedPost is POST /broadcast on n's wsify listener.
func mixedPost(t *testing.T, n *node.Node, channel, content string) {
	t.Helper()
	if code, body := post(t, "http://"+n.WsifyAddr().String()+"/broadcast", "application/json",
		`{"channel":"`+channel+`","content":`+content+`}`); code != http.StatusCreated || body != "" {
		t.Fatalf("POST /broadcast: %d %q, want 201 and an empty body", code, body)
	}
}
