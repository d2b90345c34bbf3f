package wsify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/session"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// node is one real gateway with wsify on its own listener.
type node struct {
	srv  *gateway.Server
	p    *Protocol
	hub  *session.Hub
	addr string
}

// startNode starts a gateway with wsify configured by o, on a hub made by
// newHub (nil: a standalone hub).
func startNode(t *testing.T, o Options, newHub func() *session.Hub) *node {
	t.Helper()
	if newHub == nil {
		newHub = func() *session.Hub { return session.NewHub(nil) }
	}
	if o.Logger == nil {
		o.Logger = discard
	}
	var (
		hub *session.Hub
		p   *Protocol
	)
	// The wsify listener gets a fixed free port, not port 0: the gateway
	// maps an accepted connection to its listener by gnet's LocalAddr,
	// which is the configured address (port 0), so connections to a port-0
	// listener other than the main one reach the main listener's routes.
	var srv *gateway.Server
	for attempt := 0; ; attempt++ {
		hub = newHub()
		o.Hub = hub
		var err error
		if p, err = New(o); err != nil {
			t.Fatal(err)
		}
		srv = gateway.New(gateway.Options{Listen: "127.0.0.1:0", EventLoops: 2, Logger: discard}, hub)
		srv.AddListener("wsify", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		srv.Handle(p.Route("wsify"))
		p.RegisterHTTP(srv, "wsify")
		err = srv.Start()
		if err == nil {
			break
		}
		_ = hub.Close()
		if attempt == 5 {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return &node{srv: srv, p: p, hub: hub, addr: srv.ListenerAddr("wsify").String()}
}

// client is a WebSocket client whose frames are read into msgs by a
// goroutine; closed gets the read error that ended it.
type client struct {
	t      *testing.T
	c      *websocket.Conn
	msgs   chan []byte
	closed chan error
}

func dial(t *testing.T, addr, query string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := "ws://" + addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer x"}, "Cookie": {"sid=1"}},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetReadLimit(1 << 20)
	cl := &client{t: t, c: c, msgs: make(chan []byte, 1024), closed: make(chan error, 1)}
	go func() {
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				cl.closed <- err
				close(cl.msgs)
				return
			}
			if typ != websocket.MessageText {
				b = append([]byte("BINARY:"), b...)
			}
			cl.msgs <- b
		}
	}()
	t.Cleanup(func() { _ = c.CloseNow() })
	return cl
}

func (cl *client) send(s string) {
	cl.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		cl.t.Fatalf("write %q: %v", s, err)
	}
}

func (cl *client) sendBinary(b []byte) {
	cl.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.c.Write(ctx, websocket.MessageBinary, b); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

func (cl *client) join(ch string) { cl.send(`{"command":"join","args":{"channel":"` + ch + `"}}`) }

func (cl *client) broadcast(ch, content string) {
	cl.send(`{"command":"broadcast","args":{"channel":"` + ch + `","content":` + content + `}}`)
}

// next returns the next frame, failing after timeout.
func (cl *client) next(timeout time.Duration) []byte {
	cl.t.Helper()
	select {
	case b, ok := <-cl.msgs:
		if !ok {
			cl.t.Fatalf("connection ended: %v", <-cl.closedErr())
		}
		return b
	case <-time.After(timeout):
		cl.t.Fatalf("no frame within %v", timeout)
	}
	return nil
}

func (cl *client) closedErr() chan error { return cl.closed }

// expect reads the next frames and compares them with want.
func (cl *client) expect(want ...string) {
	cl.t.Helper()
	for i, w := range want {
		if got := cl.next(5 * time.Second); string(got) != w {
			cl.t.Fatalf("frame %d: got %s, want %s", i, got, w)
		}
	}
}

// quiet checks that no frame arrives for d.
func (cl *client) quiet(d time.Duration) {
	cl.t.Helper()
	select {
	case b, ok := <-cl.msgs:
		if ok {
			cl.t.Fatalf("unexpected frame %s", b)
		}
	case <-time.After(d):
	}
}

// expectClose waits for the server's close and checks its code and reason.
func (cl *client) expectClose(code websocket.StatusCode, reason string) {
	cl.t.Helper()
	for {
		select {
		case b, ok := <-cl.msgs:
			if ok {
				cl.t.Fatalf("frame %s while waiting for close %d", b, code)
			}
			err := <-cl.closed
			var ce websocket.CloseError
			if !asCloseError(err, &ce) {
				cl.t.Fatalf("connection ended with %v, want close %d", err, code)
			}
			if ce.Code != code || (reason != "" && ce.Reason != reason) {
				cl.t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
			}
			return
		case <-time.After(5 * time.Second):
			cl.t.Fatalf("no close %d within 5s", code)
		}
	}
}

var seq struct {
	sync.Mutex
	n int
}

// sync makes sure everything the client sent before has run: it joins ch,
// broadcasts a unique marker there and waits for it. With a Redis broker a
// join takes effect once Redis made the SUBSCRIBE, and the client's own
// broadcasts come back through Redis, so a marker sent before may be lost:
// it sends a new one every 200 ms until one arrives, skipping the earlier
// ones (they would come before the last, in Redis's order).
func (cl *client) sync(ch string) {
	cl.t.Helper()
	seq.Lock()
	seq.n++
	base := seq.n
	seq.Unlock()
	cl.join(ch)
	sent := map[string]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for try := 0; ; try++ {
		m := fmt.Sprintf(`"sync-%d-%d"`, base, try)
		sent[m] = true
		cl.broadcast(ch, m)
		wait := time.After(200 * time.Millisecond)
	read:
		for {
			select {
			case b, ok := <-cl.msgs:
				if !ok {
					cl.t.Fatalf("connection ended: %v", <-cl.closedErr())
				}
				if string(b) == m {
					return
				}
				if !sent[string(b)] {
					cl.t.Fatalf("got %s while waiting for %s", b, m)
				}
			case <-wait:
				break read
			}
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("sync marker never came back on %q", ch)
		}
	}
}

// authorizer is a real webhook whose answer a test scripts.
type authorizer struct {
	srv *httptest.Server
	// decide returns the status for a call; it may block (on r's context).
	mu     sync.Mutex
	decide func(r *http.Request, body map[string]any) int
	bodies [][]byte
}

func newAuthorizer(t *testing.T, decide func(r *http.Request, body map[string]any) int) *authorizer {
	a := &authorizer{decide: decide}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(b, &body)
		a.mu.Lock()
		a.bodies = append(a.bodies, b)
		decide := a.decide
		a.mu.Unlock()
		status := 200
		if decide != nil {
			status = decide(r, body)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("ignored body"))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *authorizer) calls() [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]byte(nil), a.bodies...)
}

// bodiesOf returns the recorded bodies whose command is cmd, decoded.
func (a *authorizer) bodiesOf(cmd string) []map[string]any {
	var out []map[string]any
	for _, b := range a.calls() {
		var m map[string]any
		if json.Unmarshal(b, &m) == nil && m["command"] == cmd {
			out = append(out, m)
		}
	}
	return out
}

func command(body map[string]any) string { s, _ := body["command"].(string); return s }

func channelArg(body map[string]any) string {
	args, _ := body["args"].(map[string]any)
	s, _ := args["channel"].(string)
	return s
}

// hang blocks until the call is given up.
func hang(r *http.Request) int {
	<-r.Context().Done()
	return 200
}

// rawUpgrade sends an upgrade request over TCP and returns the answer.
func rawUpgrade(t *testing.T, addr, target string) (*http.Response, []byte) {
	t.Helper()
	return rawUpgradeWith(t, addr, target, "")
}

// rawUpgradeWith is rawUpgrade with extra header lines, each ending "\r\n".
func rawUpgradeWith(t *testing.T, addr, target, extra string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", target, addr, extra)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp, body
}

// counterValue reads one series of the protocol's collectors.
func counterValue(t *testing.T, p *Protocol, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(p.Collectors()...)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			if m.Histogram != nil {
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func httpDo(t *testing.T, method, url, ctype, body string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func asCloseError(err error, ce *websocket.CloseError) bool {
	return errors.As(err, ce)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
