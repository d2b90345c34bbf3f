package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/packet"
)

// A recovering subscription drops publications it already has: when a
// Subscribe and a reconnect's resubscribe both send SubscribeFrom, the
// server replays twice, and the handler must see each offset once.
func TestRecoveringSubscriptionDropsASecondReplay(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		_ = conn.Write(ctx, websocket.MessageBinary, packet.Hello)
		if _, _, err := conn.Read(ctx); err != nil {
			return
		}
		_ = conn.Write(ctx, websocket.MessageBinary, packet.AppendPong(nil, 1))
		for {
			_, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			d := packet.NewDecoder(msg)
			var p packet.Packet
			for {
				ok, err := d.Next(&p)
				if err != nil || !ok {
					break
				}
				switch p.ID {
				case packet.PacketSubscribeFrom:
					for range 2 { // the same replay twice, as two SubscribeFroms would get
						for o := int64(1); o <= 2; o++ {
							_ = conn.Write(ctx, websocket.MessageBinary, packet.AppendPublication(nil, "c", o, []byte(fmt.Sprint(o))))
						}
						_ = conn.Write(ctx, websocket.MessageBinary, packet.AppendSubscribedFrom(nil, "c", 7, 2, true))
					}
				case packet.PacketPing:
					_ = conn.Write(ctx, websocket.MessageBinary, packet.AppendPong(nil, 1))
				}
			}
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), Options{Key: "a2V5", NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var got []int64
	if _, err := c.Subscribe(ctx, "c", func(p Publication) { mu.Lock(); got = append(got, p.Offset); mu.Unlock() }, From(7, 0)); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "x", nil); err != nil { // a round trip: everything before it was handled
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("handler got offsets %v, want [1 2]", got)
	}
}
