package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/packet"
)

// fakeServer speaks just enough of the native protocol: the hello, a Pong
// for the key, and for each later message a Pong per Ping in it, after
// Subscribed for a Subscribe. onSubscribe runs once the Subscribed is sent.
func fakeServer(t *testing.T, onSubscribe func(ctx context.Context, conn *websocket.Conn)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		if conn.Write(ctx, websocket.MessageBinary, packet.Hello) != nil {
			return
		}
		if _, _, err := conn.Read(ctx); err != nil {
			return
		}
		if conn.Write(ctx, websocket.MessageBinary, packet.AppendPong(nil, 1)) != nil {
			return
		}
		for {
			_, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			d := packet.NewDecoder(msg)
			var p packet.Packet
			var out []byte
			subscribed := false
			for {
				ok, err := d.Next(&p)
				if err != nil || !ok {
					break
				}
				switch p.ID {
				case packet.PacketSubscribe:
					out = packet.AppendSubscribed(out, string(p.Channel))
					subscribed = true
				case packet.PacketPing:
					out = packet.AppendPong(out, 1)
				}
			}
			if conn.Write(ctx, websocket.MessageBinary, out) != nil {
				return
			}
			if subscribed && onSubscribe != nil {
				go onSubscribe(ctx, conn)
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// A handler may call the client's methods (doc.go), also when more
// publications wait than the dispatcher's queue holds: the reader must
// still take the Pong that answers the handler's request, or the handler,
// the dispatcher and the reader wait for each other for good.
func TestHandlerPublishesWhileTheQueueIsFull(t *testing.T) {
	const queue = 2
	url := fakeServer(t, func(ctx context.Context, conn *websocket.Conn) {
		for i := range 3 * queue {
			_ = conn.Write(ctx, websocket.MessageBinary, packet.AppendMessage(nil, "c", []byte(fmt.Sprint(i))))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, Options{Key: "a2V5", QueueSize: queue, NoReconnect: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	replied := make(chan error, 3*queue)
	first := true
	if _, err := c.Subscribe(ctx, "c", func(p Publication) {
		if first {
			first = false
			time.Sleep(200 * time.Millisecond) // the other publications fill the queue
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer rcancel()
		replied <- c.Publish(rctx, "reply", p.Payload)
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 * queue {
		select {
		case err := <-replied:
			if err != nil {
				t.Fatalf("reply %d: %v", i, err)
			}
		case <-ctx.Done():
			t.Fatalf("reply %d: no answer", i)
		}
	}
}
