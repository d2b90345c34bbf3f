package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/client"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// End-to-end tests of the Go client (package client) against real
// gateways: in-process nodes for the protocol, gateway processes for
// restarts and kill -9. Helpers start with "gc".

// gcRecorder collects what a client reports, for assertions.
type gcRecorder struct {
	mu     sync.Mutex
	states []string
	pubs   map[string][]string // channel -> payloads in order
	subbed []client.SubscribedEvent
	notify chan struct{}
}

func newRecorder() *gcRecorder {
	return &gcRecorder{pubs: map[string][]string{}, notify: make(chan struct{}, 1)}
}

func (r *gcRecorder) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *gcRecorder) onState(s client.State, err error) {
	r.mu.Lock()
	if err != nil {
		r.states = append(r.states, fmt.Sprintf("%s(%v)", s, err))
	} else {
		r.states = append(r.states, s.String())
	}
	r.mu.Unlock()
	r.poke()
}

func (r *gcRecorder) handler(p client.Publication) {
	r.mu.Lock()
	r.pubs[p.Channel] = append(r.pubs[p.Channel], string(p.Payload))
	r.mu.Unlock()
	r.poke()
}

func (r *gcRecorder) onSubscribed(ev client.SubscribedEvent) {
	r.mu.Lock()
	r.subbed = append(r.subbed, ev)
	r.mu.Unlock()
	r.poke()
}

// waitFor polls cond (under the recorder's lock) until it holds.
func (r *gcRecorder) waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("waiting for %s: states %v, publications %v, subscribed %+v", what, r.states, r.pubs, r.subbed)
		}
	}
}

func gcDial(t testing.TB, url, key string, r *gcRecorder, mods ...func(*client.Options)) *client.Client {
	t.Helper()
	o := client.Options{Key: key, OnState: r.onState, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	for _, m := range mods {
		m(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func gcKey(t testing.TB, n *node.Node, subject string) string {
	return token.EncodeText(issueKey(t, n, subject, time.Hour))
}

func wantServerError(t testing.TB, err error, code int16, text string) {
	t.Helper()
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != code || se.Text != text {
		t.Fatalf("got %v, want ServerError(%d, %q)", err, code, text)
	}
}

func TestGoClientProtocol(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ctx := testCtx(t)
	ra, rb := newRecorder(), newRecorder()
	alice := gcDial(t, wsURL(n), gcKey(t, n, "alice"), ra)
	bob := gcDial(t, wsURL(n), gcKey(t, n, "bob"), rb, func(o *client.Options) { o.Name = "bob's client" })

	// A refused key: Dial returns the close code and reason.
	_, err := client.Dial(ctx, wsURL(n), client.Options{Key: token.EncodeText([]byte("\x00\x00not-a-key-at-all-but-long-enough-to-parse"))})
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != int(packet.CloseUnauthorized) || ce.Reason != "invalid access key" || !ce.Permanent() {
		t.Fatalf("Dial with a bad key: %v, want CloseError 3001", err)
	}

	if _, err := bob.Subscribe(ctx, "room", rb.handler, client.OnSubscribed(rb.onSubscribed)); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Subscribe(ctx, "room", rb.handler); !errors.Is(err, client.ErrSubscribed) {
		t.Fatalf("second Subscribe: %v", err)
	}
	for i := range 3 {
		if err := alice.Publish(ctx, "room", []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	rb.waitFor(t, "three publications", 5*time.Second, func() bool { return len(rb.pubs["room"]) == 3 })
	if got := fmt.Sprint(rb.pubs["room"]); got != "[m0 m1 m2]" {
		t.Fatalf("bob got %s", got)
	}
	if ev := rb.subbed[0]; ev.Channel != "room" || ev.Resubscribed || !ev.Recovered {
		t.Fatalf("OnSubscribed %+v", ev)
	}

	// Refusals come back from the call that caused them, and the session
	// goes on.
	wantServerError(t, alice.Publish(ctx, "server:news", []byte("x")), packet.ErrorForbidden, `publish "server:news": server: channels are read-only for clients`)
	_, err = alice.Subscribe(ctx, "user:bob", ra.handler)
	wantServerError(t, err, packet.ErrorForbidden, `subscribe "user:bob": personal channel of another subject`)
	wantServerError(t, alice.SetSettings(ctx, client.Settings{BatchWindow: 2 * time.Second}), packet.ErrorBadRequest, "setting batch window: 2000 ms is outside 0..1000")
	_, err = alice.Subscribe(ctx, "room", ra.handler, client.WithRecovery())
	wantServerError(t, err, packet.ErrorBadRequest, `subscribe from "room": channel keeps no history`)

	// Echo: alice sees her own publish once she asks for it.
	if _, err := alice.Subscribe(ctx, "echo-room", ra.handler); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetSettings(ctx, client.Settings{Echo: true}); err != nil {
		t.Fatal(err)
	}
	if err := alice.Publish(ctx, "echo-room", []byte("mine")); err != nil {
		t.Fatal(err)
	}
	ra.waitFor(t, "the echo", 5*time.Second, func() bool { return len(ra.pubs["echo-room"]) == 1 })

	// Unsubscribe: nothing more arrives; a later publish on another
	// channel of bob's proves the first did not.
	if err := bob.Unsubscribe(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Subscribe(ctx, "marker", rb.handler); err != nil {
		t.Fatal(err)
	}
	_ = alice.Publish(ctx, "room", []byte("after"))
	_ = alice.Publish(ctx, "marker", []byte("m"))
	rb.waitFor(t, "the marker", 5*time.Second, func() bool { return len(rb.pubs["marker"]) == 1 })
	if got := fmt.Sprint(rb.pubs["room"]); got != "[m0 m1 m2]" {
		t.Fatalf("after Unsubscribe bob got %s", got)
	}

	// Close: the state ends Closed, requests fail with ErrClosed.
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bob.Wait(); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
	if err := bob.Publish(ctx, "room", nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	rb.waitFor(t, "closed", 5*time.Second, func() bool { return len(rb.states) > 0 && rb.states[len(rb.states)-1] == "closed" })
	if got := fmt.Sprint(rb.states); got != "[connecting authenticating connected closed]" {
		t.Fatalf("states %s", got)
	}
}

// TestGoClientRevoked: 3004 stops the client for good, with the reason.
func TestGoClientRevoked(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	raw := issueKey(t, n, "carol", time.Hour)
	r := newRecorder()
	c := gcDial(t, wsURL(n), token.EncodeText(raw), r)
	claims, err := n.Secrets.Verify(raw, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e2eAdminJSON(t, n, "/api/revoke", fmt.Sprintf(`{"id":%q}`, claims.ID.String()), 200)
	err = c.Wait()
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != int(packet.CloseRevoked) || ce.Reason != "access key revoked" {
		t.Fatalf("Wait: %v, want CloseError 3004", err)
	}
	r.waitFor(t, "closed", 5*time.Second, func() bool { return len(r.states) == 4 })
	if got := fmt.Sprint(r.states); got != "[connecting authenticating connected closed(closed by the server: 3004 access key revoked)]" {
		t.Fatalf("states %s", got)
	}
}

// TestGoClientReconnects: the gateway process is killed (-9) and restarted
// on the same address, then stopped with SIGTERM (1001) and restarted
// again; each time the client reconnects by itself, resubscribes and
// receives what is published after.
func TestGoClientReconnects(t *testing.T) {
	t.Parallel()
	env := e2eEnv("GATEWAY_SECRET=go-client-e2e-secret-0123456789-0123456789")
	dir := t.TempDir()
	free := e2eFreeAddrs(t, 3)
	listen, admin, wsify := free[0], free[1], free[2]
	serve := func() *e2eProc {
		t.Helper()
		p, err := e2eServeAt(t, env, listen, admin, wsify, "--data-dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := serve()
	key := e2eKeyIssue(t, env, "--subject", "dave", "--data-dir", filepath.Join(dir, "keys"))
	pubKey := e2eKeyIssue(t, env, "--subject", "erin", "--data-dir", filepath.Join(dir, "keys"))
	r := newRecorder()
	c := gcDial(t, p.ws, key, r)
	ctx := testCtx(t)
	if _, err := c.Subscribe(ctx, "live", r.handler, client.OnSubscribed(r.onSubscribed)); err != nil {
		t.Fatal(err)
	}

	for round, stop := range []func(*e2eProc){
		func(p *e2eProc) { _ = p.cmd.Process.Kill() },
		func(p *e2eProc) { _ = p.cmd.Process.Signal(syscall.SIGTERM) },
	} {
		stop(p)
		<-p.exited
		r.waitFor(t, "disconnected", 5*time.Second, func() bool {
			return len(r.states) > 0 && r.states[len(r.states)-1] != "connected"
		})
		p = serve()
		r.waitFor(t, "resubscribed", 10*time.Second, func() bool { return len(r.subbed) == round+2 })
		if ev := r.subbed[round+1]; !ev.Resubscribed || ev.Channel != "live" {
			t.Fatalf("round %d: OnSubscribed %+v", round, ev)
		}
		pub := gcDial(t, p.ws, pubKey, newRecorder())
		if err := pub.Publish(ctx, "live", []byte(fmt.Sprintf("after restart %d", round))); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, "the publish after the restart", 5*time.Second, func() bool { return len(r.pubs["live"]) == round+1 })
	}
	if got := fmt.Sprint(r.pubs["live"]); got != "[after restart 0 after restart 1]" {
		t.Fatalf("publications %s", got)
	}
	if c.State() != client.Connected {
		t.Fatalf("state %v", c.State())
	}
	_ = os.Remove(dir)
}

// TestGoClientKeepalive: with a ping interval inside the server's ping
// timeout the session outlives several timeouts; the client's dead-peer
// detection drops a connection that stays silent.
func TestGoClientKeepalive(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.PingTimeout = time.Second })
	r := newRecorder()
	c := gcDial(t, wsURL(n), gcKey(t, n, "frank"), r, func(o *client.Options) { o.PingInterval = 200 * time.Millisecond })
	time.Sleep(2500 * time.Millisecond)
	if c.State() != client.Connected {
		t.Fatalf("state %v after 2.5 ping timeouts", c.State())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := fmt.Sprint(r.states); got != "[connecting authenticating connected]" {
		t.Fatalf("states %s: the session dropped", got)
	}
}

// TestGoClientPingAndClose: Ping returns the server's clock from its Pong;
// Close ends the session with the 1000 handshake, which the node counts
// as a client's 1000.
func TestGoClientPingAndClose(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	r := newRecorder()
	c := gcDial(t, wsURL(n), gcKey(t, n, "gina"), r)
	before := time.Now().Add(-time.Hour)
	at, err := c.Ping(testCtx(t))
	if err != nil || at.Before(before) || at.After(time.Now().Add(time.Hour)) {
		t.Fatalf("Ping: %v, %v; want the server's clock", at, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Wait: %v", err)
	}
	if _, err := c.Ping(testCtx(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}
	const sample = `gateway_disconnects_total{code="1000",initiator="client",protocol="native"}`
	deadline := time.Now().Add(waitFor)
	for {
		samples, _ := e2eScrape(t, n)
		if samples[sample] == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want 1: Close did not end with the 1000 handshake", sample, samples[sample])
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wait returned after every callback: the states are complete.
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := fmt.Sprint(r.states); got != "[connecting authenticating connected closed]" {
		t.Fatalf("states %s", got)
	}
}

// TestGoClientDialErrors: a failed first attempt says why with a typed
// error, its states show how far it got (Authenticating only once the
// hello arrived), every OnState callback has run when Dial returns, and
// DialTimeout bounds a server that accepts and says nothing.
func TestGoClientDialErrors(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	dial := func(url, key string, mods ...func(*client.Options)) (error, []string) {
		t.Helper()
		r := newRecorder()
		o := client.Options{Key: key, OnState: r.onState}
		for _, m := range mods {
			m(&o)
		}
		done := make(chan error, 1)
		go func() {
			c, err := client.Dial(context.Background(), url, o)
			if c != nil {
				c.Close()
			}
			done <- err
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(waitFor):
			t.Fatalf("Dial %s still running after %v", url, waitFor)
		}
		r.mu.Lock() // no waiting: Dial returned after its callbacks
		defer r.mu.Unlock()
		return err, slices.Clone(r.states)
	}
	key := gcKey(t, n, "hank")

	// A refused key: upgraded and greeted, then closed with 3001.
	stranger := token.EncodeText([]byte("\x00\x00not-a-key-at-all-but-long-enough-to-parse"))
	err, states := dial(wsURL(n), stranger)
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != int(packet.CloseUnauthorized) {
		t.Fatalf("bad key: %v", err)
	}
	if got := fmt.Sprint(states); got != "[connecting authenticating closed(closed by the server: 3001 invalid access key)]" {
		t.Fatalf("bad key: states %s", got)
	}

	// A wrong path: the upgrade's HTTP answer.
	err, states = dial(strings.Replace(wsURL(n), "/api/ws", "/nope", 1), key)
	var ue *client.UpgradeError
	if !errors.As(err, &ue) || ue.StatusCode != 404 || ue.Status != "404 Not Found" {
		t.Fatalf("wrong path: %v, want an UpgradeError 404", err)
	}
	if len(states) != 2 || states[0] != "connecting" || !strings.HasPrefix(states[1], "closed(client: upgrade refused: HTTP 404 Not Found") {
		t.Fatalf("wrong path: states %q", states)
	}

	// A WebSocket endpoint of another protocol.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"hello":"json"}`))
		_, _, _ = c.Read(r.Context())
	}))
	defer other.Close()
	err, states = dial("ws"+strings.TrimPrefix(other.URL, "http"), key)
	if !errors.Is(err, client.ErrNotNative) {
		t.Fatalf("other protocol: %v, want ErrNotNative", err)
	}
	if len(states) != 2 || states[0] != "connecting" || !strings.HasPrefix(states[1], "closed(client: not a native-protocol endpoint") {
		t.Fatalf("other protocol: states %q", states)
	}

	// A listener that accepts TCP and never answers the upgrade.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	err, _ = dial("ws://"+silent.Addr().String()+"/api/ws", key, func(o *client.Options) { o.DialTimeout = 300 * time.Millisecond })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent server: %v, want the DialTimeout's deadline", err)
	}
}
