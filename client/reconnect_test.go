package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/packet"
)

// A server that takes the key and then closes at once with a code the
// client reconnects after (1013 try again later: a node shedding load, a
// replay that makes the session a slow consumer, ...) must see the
// back-off grow: a connection that did not stay up is a failed attempt,
// not a reason to start again from MinBackoff.
func TestReconnectBackoffGrowsWhenConnectionsDropAtOnce(t *testing.T) {
	var accepted atomic.Int32
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
		accepted.Add(1)
		_ = conn.Close(websocket.StatusTryAgainLater, "busy")
	}))
	defer srv.Close()
	c, err := Dial(t.Context(), "ws"+strings.TrimPrefix(srv.URL, "http"),
		Options{Key: "a2V5", MinBackoff: 10 * time.Millisecond, MaxBackoff: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	c.Close()
	// With back-off growing from 10 ms the waits are at most 10, 20, 40,
	// ..., 640 ms: about 7 connections in a second, far fewer on average.
	// Starting from 10 ms every time gives a hundred or more.
	if n := accepted.Load(); n > 20 {
		t.Fatalf("%d connections in 1 s: the back-off does not grow", n)
	}
}
