package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/internal/ratelog"
)

// askingHandler is a handler at info that counts how often it was asked
// about debug.
type askingHandler struct {
	slog.Handler
	asked int
}

func (h *askingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelDebug {
		h.asked++
	}
	return h.Handler.Enabled(ctx, l)
}

// TestLifecycleLinesFreeWithDebugOff: with debug off, the lifecycle lines
// (opened, authenticated, the peer's close reason, closed) allocate
// nothing: they ask the handler and build no attribute. With debug on the
// same calls write the lines, so the check is not vacuous.
func TestLifecycleLinesFreeWithDebugOff(t *testing.T) {
	l := echoLoop(nil)
	h := &askingHandler{Handler: slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})}
	l.srv.lifeLog = ratelog.NewBurst(slog.New(h), slog.LevelDebug, 0, lifecycleBurst)
	c := openEcho(t, l).ctx.(*Conn)
	c.byPeer, c.closeCode = true, 1000
	closePayload := []byte{0x03, 0xe8, 'b', 'y', 'e'}
	all := func() {
		c.logOpened()
		c.Authenticated("dave")
		c.peerReason(closePayload)
		c.logClosed()
	}
	if n := testing.AllocsPerRun(100, all); n != 0 {
		t.Errorf("the lifecycle lines cost %v allocations with debug off, want 0", n)
	}
	if h.asked == 0 {
		t.Fatal("debug was never asked about")
	}
	if c.closeReason() != "" {
		t.Errorf("the peer's reason was kept with debug off: %q", c.closeReason())
	}

	var buf bytes.Buffer
	l.srv.lifeLog = ratelog.NewBurst(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		slog.LevelDebug, 0, lifecycleBurst)
	all()
	id := c.ID().String()
	for _, want := range []string{
		`msg="connection opened" conn=` + id + ` protocol=echo remote=127.0.0.1` + "\n",
		`msg=authenticated conn=` + id + ` protocol=echo remote=127.0.0.1 subject=dave` + "\n",
		`msg="connection closed" conn=` + id + ` protocol=echo remote=127.0.0.1 code=1000 reason=bye by=peer` + "\n",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no %q in:\n%s", want, buf.String())
		}
	}
}

// TestClosedLineWhoAndCode: the closed line says who closed and with what:
// the server's code and reason, the peer's code (1005 for none), 1006 when
// the connection ended without a close frame.
func TestClosedLineWhoAndCode(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(c *Conn)
		want string
	}{
		{"server", func(c *Conn) { c.closeCode, c.more().closeReason = 3001, "invalid access key" },
			`code=3001 reason="invalid access key" by=server`},
		{"peer without a code", func(c *Conn) { c.byPeer = true }, `code=1005 reason="" by=peer`},
		{"lost", func(*Conn) {}, `code=1006 reason="connection lost" by=peer`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := echoLoop(nil)
			l.srv.lifeLog = ratelog.NewBurst(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
				slog.LevelDebug, 0, lifecycleBurst)
			c := openEcho(t, l).ctx.(*Conn)
			tt.set(c)
			c.logClosed()
			if !strings.Contains(buf.String(), tt.want+"\n") {
				t.Errorf("got %q, want %q", buf.String(), tt.want)
			}
		})
	}
}
