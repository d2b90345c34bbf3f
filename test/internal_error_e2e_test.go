package test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/session"
)

// faultyProtocol is a protocol with a bug: any message makes it panic.
type faultyProtocol struct{}

func (faultyProtocol) Name() string                                     { return "faulty" }
func (faultyProtocol) Accept(*gateway.Request) (gateway.Handler, error) { return faultyHandler{}, nil }

type faultyHandler struct{}

func (faultyHandler) OnOpen(*gateway.Conn)                       {}
func (faultyHandler) OnMessage(*gateway.Conn, ws.OpCode, []byte) { panic("a bug") }
func (faultyHandler) OnDeadline(c *gateway.Conn)                 { c.Close(1000, "") }
func (faultyHandler) OnClose(*gateway.Conn)                      {}

// TestInternalErrorCloses3005: a protocol handler that panics closes its own
// connection with the route's internal-error code (3005 for native-style
// routes), and the server goes on serving the next client.
func TestInternalErrorCloses3005(t *testing.T) {
	t.Parallel()
	srv := gateway.New(gateway.Options{Listen: "127.0.0.1:0", EventLoops: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, session.NewHub(nil))
	srv.Handle(gateway.Route{Path: "/faulty", Protocol: faultyProtocol{}, InternalError: packet.CloseServerError})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	for range 2 {
		ctx := testCtx(t)
		c, _, err := websocket.Dial(ctx, "ws://"+srv.Addr().String()+"/faulty", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Write(ctx, websocket.MessageBinary, []byte{0}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, c, 3005, "internal server error")
	}
}
