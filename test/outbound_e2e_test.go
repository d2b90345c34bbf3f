package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestLargeEchoUnderDefaultBudget: with --max-message-size 16 MiB and the
// default --max-outbound (1 MiB), an 8 MiB binary and a 16 MiB text message
// (Autobahn 9.1.5/9.1.6, 9.2.5/9.2.6) come back whole to a client that
// reads, and the node warned at start that the two settings disagree.
func TestLargeEchoUnderDefaultBudget(t *testing.T) {
	t.Parallel()
	p := e2eServe(t, e2eEnv("GATEWAY_SECRET="+testSecret), "--data-dir", t.TempDir(),
		"--echo-path", "/echo", "--max-message-size", "16777216")
	if log := p.stderr.String(); !strings.Contains(log, "outbound budget is smaller than the message size limit") {
		t.Errorf("no start-up warning about --max-outbound < --max-message-size; log:\n%s", log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(p.ws, "/api/ws", "/echo", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(17 << 20)
	binary := make([]byte, 8<<20)
	_, _ = rand.Read(binary)
	text := bytes.Repeat([]byte("ünïcode "), 16<<20/10)
	for _, m := range []struct {
		typ     websocket.MessageType
		payload []byte
	}{{websocket.MessageBinary, binary}, {websocket.MessageText, text}, {websocket.MessageBinary, binary}} {
		if err := c.Write(ctx, m.typ, m.payload); err != nil {
			t.Fatalf("write %d bytes: %v", len(m.payload), err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read the echo of %d bytes: %v", len(m.payload), err)
		}
		if typ != m.typ || !bytes.Equal(got, m.payload) {
			t.Fatalf("echo of %d bytes (%v): got %d bytes (%v), not the same", len(m.payload), m.typ, len(got), typ)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
}
