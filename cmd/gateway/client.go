package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	gwclient "github.com/wsgateway/gateway/client"
	"github.com/wsgateway/gateway/token"
)

// clientMaxBackoff caps the wait between reconnect attempts: a person is
// watching, so it stays well below the package's default.
const clientMaxBackoff = 5 * time.Second

// clientCommandTimeout bounds the wait for the server's answer to one
// command, so that a Subscribe the server cannot confirm (its Redis is
// down: no Subscribed) does not hold up the commands typed after it.
const clientCommandTimeout = 10 * time.Second

const clientHelp = `commands: sub CH | unsub CH | pub CH TEXT | echo 0|1 | name NAME | batch MS | ping | quit`

// Exit statuses of `gateway client` beyond exitOK, exitError (could not
// connect: dial or upgrade failed, or the endpoint is not the native
// protocol) and exitUsage.
const (
	clientExitRefused = 3 // the server closed the connection before authenticating it the first time
	clientExitClosed  = 4 // the session ended without this client quitting: a close by the server, or lost
)

const clientAbout = `A native-protocol client on stdin/stdout, to try a node by hand: one command
per line on stdin (` + clientHelp + `),
one line per event on stdout: subscribed CH, message CH TEXT (hex when the
payload is not UTF-8 or holds control characters), error CODE TEXT (the server refused a command), pong MS
(the server's clock, after ping). Each command waits for the server's answer
(at most 10 s) before the next line is read.

The state goes to stderr as it happens: "connecting to URL", "connected"
once upgraded and greeted, "authenticated" only when the server has
confirmed the key (its Pong), and every close with its code and reason.

After a drop or a close that PROTOCOL.md says to reconnect after (1001, 1008,
1013, 3003, 3005, 3006, a connection lost without a close frame), it
reconnects with back-off (at most 5 s between attempts), printing each
attempt's states, and subscribes its channels again ("subscribed CH" once
more). After 3001, 3002 or 3004 it stops. --no-reconnect ends the session at
the first drop instead.

--recover subscribes from a position (SubscribeFrom): "subscribed CH epoch E
offset O recovered 1|0" each time a subscription becomes live, and "message CH
offset O TEXT"; a channel that keeps no history refuses it with "error 400".`

const clientExitDoc = `0 this client quit ("quit" or end of input), 1 could not connect
(dial or upgrade failed, not a native endpoint), 2 command-line error,
3 refused: the server closed the connection before authenticating it the first
time (3001 bad, expired or revoked key, 3002, 1013 try again later, ...),
4 the session ended otherwise: closed for good by the server after
authentication (3004 revoked, or 3001 on a reconnect), or, with
--no-reconnect, closed by the server (1001 going away, 1008, ...) or lost
without a close frame.`

// client is a small interactive client of the native protocol, on top of
// package client: commands on stdin, one line per event on stdout, the
// connection's state on stderr. It says "authenticated" only after the
// server's Pong (PROTOCOL.md §3), prints every close with its code and
// reason, reconnects as the package does, and exits non-zero when the
// server refused or ended the session (clientExitDoc).
func client(args []string) error {
	fs := newFlagSet("client")
	url := fs.String("url", "ws://127.0.0.1:8080/api/ws", "the gateway's native WebSocket URL")
	keyText := fs.String("key", "", "access key (base64), from gateway key issue (required)")
	subs := fs.String("sub", "", "channels to subscribe at start, comma separated")
	recoverFlag := fs.Bool("recover", false, "subscribe with recovery (SubscribeFrom): print epochs and offsets; the channels must keep history")
	noReconnect := fs.Bool("no-reconnect", false, "end the session (exit 4) at the first drop or close instead of reconnecting")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *keyText == "" {
		return usageErr("client", errors.New("--key is required"))
	}
	if _, err := token.DecodeText(*keyText); err != nil {
		return usageErr("client", fmt.Errorf("--key: %w", err))
	}
	s := &clientSession{url: *url, recover: *recoverFlag, out: os.Stdout, errOut: os.Stderr}
	c, err := gwclient.Dial(context.Background(), *url, gwclient.Options{
		Key: *keyText, NoReconnect: *noReconnect, MaxBackoff: clientMaxBackoff,
		OnState: s.onState, OnError: s.onError,
	})
	if err != nil {
		return s.dialFailed(err)
	}
	s.c = c
	ctx := context.Background()
	for ch := range strings.SplitSeq(*subs, ",") {
		if ch != "" {
			sctx, cancel := context.WithTimeout(ctx, clientCommandTimeout)
			s.subscribe(sctx, ch)
			cancel()
		}
	}
	ended := make(chan error, 1)
	go func() { ended <- c.Wait() }()
	quit := make(chan struct{})
	go func() { s.commands(ctx, os.Stdin); close(quit) }()
	connected := true
	select {
	case <-quit:
		connected = c.State() == gwclient.Connected
		_ = c.Close()
		err = <-ended
	case err = <-ended:
	}
	if errors.Is(err, gwclient.ErrClosed) {
		if connected {
			s.stateLine(`closed: 1000 "bye" (this client quit)`)
		} else {
			s.stateLine("closed (this client quit while not connected)")
		}
		return nil
	}
	return s.endedErr(err)
}

// clientSession prints what the client reports. Lines on stdout and
// stderr are written whole under mu, from the package's dispatcher (state,
// subscriptions, messages) and from the command loop (answers).
type clientSession struct {
	c       *gwclient.Client
	url     string
	recover bool

	mu            sync.Mutex
	out, errOut   io.Writer
	state         gwclient.State // the last one reported before Closed
	authenticated bool           // once, ever
	settings      gwclient.Settings
}

func (s *clientSession) printf(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.out, format+"\n", a...)
}

func (s *clientSession) stateLine(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.errOut, format+"\n", a...)
}

// onState prints each state change: every connection attempt, its
// authentication, and every drop with its close code and reason.
func (s *clientSession) onState(st gwclient.State, err error) {
	s.mu.Lock()
	prev, first := s.state, !s.authenticated
	if st != gwclient.Closed {
		s.state = st
	}
	if st == gwclient.Connected {
		s.authenticated = true
	}
	s.mu.Unlock()
	switch st {
	case gwclient.Connecting:
		s.stateLine("connecting to %s", s.url)
	case gwclient.Authenticating:
		s.stateLine("connected (upgraded, hello received); authenticating")
	case gwclient.Connected:
		s.stateLine("authenticated (the server accepted the key)")
		if first {
			s.stateLine("%s", clientHelp)
		}
	case gwclient.Disconnected:
		var ce *gwclient.CloseError
		switch {
		case prev == gwclient.Connected && errors.As(err, &ce):
			s.stateLine("closed by the server: %d %q; reconnecting", ce.Code, ce.Reason)
		case prev == gwclient.Connected:
			s.stateLine("connection lost without a close frame (1006): %v; reconnecting", err)
		case errors.As(err, &ce):
			s.stateLine("refused: the server closed the connection with %d %q before authenticating it; reconnecting", ce.Code, ce.Reason)
		default:
			s.stateLine("could not connect: %v; reconnecting", err)
		}
	}
	// Closed: client() prints why, once Wait has returned.
}

// onError prints an Error packet the server sent on its own.
func (s *clientSession) onError(se *gwclient.ServerError) {
	s.printf("error %d %s", se.Code, se.Text)
}

// dialFailed is the error and exit status of a first connection that
// never authenticated.
func (s *clientSession) dialFailed(err error) error {
	var ce *gwclient.CloseError
	var ue *gwclient.UpgradeError
	s.mu.Lock()
	upgraded := s.state == gwclient.Authenticating
	s.mu.Unlock()
	switch {
	case errors.As(err, &ce):
		return &exitCodeError{code: clientExitRefused,
			err: fmt.Errorf("client: refused: the server closed the connection with %d %q before authenticating it", ce.Code, ce.Reason)}
	case errors.As(err, &ue):
		return fmt.Errorf("client: upgrade refused: HTTP %s %s", ue.Status, ue.Body)
	case errors.Is(err, gwclient.ErrNotNative):
		return err
	case upgraded:
		return &exitCodeError{code: clientExitClosed,
			err: fmt.Errorf("client: the connection ended before authentication without a close frame: %v", err)}
	}
	return fmt.Errorf("client: %w", err)
}

// endedErr is the error and exit status of a session the server ended for
// good (or, with --no-reconnect, at all).
func (s *clientSession) endedErr(err error) error {
	s.mu.Lock()
	authenticated, connected := s.authenticated, s.state == gwclient.Connected
	s.mu.Unlock()
	code := clientExitClosed
	if !authenticated {
		code = clientExitRefused
	}
	var ce *gwclient.CloseError
	switch {
	case errors.As(err, &ce) && !connected:
		// Refused while authenticating again after a reconnect.
		err = fmt.Errorf("client: refused: the server closed the connection with %d %q before authenticating it again", ce.Code, ce.Reason)
	case errors.As(err, &ce):
		err = fmt.Errorf("client: closed by the server: %d %q", ce.Code, ce.Reason)
	default:
		err = fmt.Errorf("client: connection lost without a close frame (1006): %v", err)
	}
	return &exitCodeError{code: code, err: err}
}

// commands runs command lines until "quit" or the end of input. Each
// command waits for the server's answer: an "error CODE TEXT" line when
// it refused, nothing more (or what the command prints) when it accepted.
func (s *clientSession) commands(ctx context.Context, in io.Reader) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if !s.command(ctx, sc.Text()) {
			return
		}
	}
}

// command runs one command line; false means quit.
func (s *clientSession) command(ctx context.Context, line string) bool {
	ctx, cancel := context.WithTimeout(ctx, clientCommandTimeout)
	defer cancel()
	verb, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	var err error
	switch verb {
	case "":
		return true
	case "sub":
		s.subscribe(ctx, rest)
		return true
	case "unsub":
		err = s.c.Unsubscribe(ctx, rest)
	case "pub":
		ch, text, _ := strings.Cut(rest, " ")
		err = s.c.Publish(ctx, ch, []byte(text))
	case "ping":
		var t time.Time
		if t, err = s.c.Ping(ctx); err == nil {
			s.printf("pong %d", t.UnixMilli())
		}
	case "echo", "name", "batch":
		err = s.set(ctx, verb, rest)
	case "quit", "exit":
		return false
	default:
		s.stateLine("%s", clientHelp)
		return true
	}
	s.answer(verb, err)
	return true
}

// set changes one setting; the package applies all of them again after
// every reconnect.
func (s *clientSession) set(ctx context.Context, verb, arg string) error {
	s.mu.Lock()
	next := s.settings
	s.mu.Unlock()
	switch verb {
	case "echo":
		switch arg {
		case "0", "1":
			next.Echo = arg == "1"
		default:
			return fmt.Errorf("takes 0 or 1, not %q", arg)
		}
	case "name":
		next.Name = arg
	case "batch":
		ms, err := strconv.ParseInt(arg, 10, 16)
		if err != nil {
			return fmt.Errorf("takes milliseconds: %w", err)
		}
		next.BatchWindow = time.Duration(ms) * time.Millisecond
	}
	if err := s.c.SetSettings(ctx, next); err != nil {
		return err
	}
	s.mu.Lock()
	s.settings = next
	s.mu.Unlock()
	return nil
}

// subscribe subscribes to ch; "subscribed ..." is printed by the
// subscription's OnSubscribed, each time it becomes live.
func (s *clientSession) subscribe(ctx context.Context, ch string) {
	opts := []gwclient.SubscribeOption{gwclient.OnSubscribed(s.onSubscribed)}
	if s.recover {
		opts = append(opts, gwclient.WithRecovery())
	}
	_, err := s.c.Subscribe(ctx, ch, s.onPublication, opts...)
	s.answer("sub", err)
}

func (s *clientSession) onSubscribed(ev gwclient.SubscribedEvent) {
	switch {
	case ev.Err != nil:
		s.answer("sub", ev.Err) // a resubscription refused: the subscription is gone
	case s.recover:
		recovered := 0
		if ev.Recovered {
			recovered = 1
		}
		s.printf("subscribed %s epoch %d offset %d recovered %d", ev.Channel, ev.Epoch, ev.Offset, recovered)
	default:
		s.printf("subscribed %s", ev.Channel)
	}
}

func (s *clientSession) onPublication(p gwclient.Publication) {
	text := string(p.Payload)
	if !printable(text) {
		text = fmt.Sprintf("% x", p.Payload)
	}
	if p.Offset > 0 {
		s.printf("message %s offset %d %s", p.Channel, p.Offset, text)
	} else {
		s.printf("message %s %s", p.Channel, text)
	}
}

// printable reports whether a payload prints as text: UTF-8 without
// control characters (a tab aside), which could forge lines of the
// output ("...\nsubscribed x") or drive the terminal (ESC sequences).
// Other payloads print in hex.
func printable(text string) bool {
	if !utf8.ValidString(text) {
		return false
	}
	for _, r := range text {
		if unicode.IsControl(r) && r != '\t' {
			return false
		}
	}
	return true
}

// answer prints a command's failure: the server's refusal on stdout as
// "error CODE TEXT", anything else (not sent: disconnected, closed, a bad
// argument) on stderr.
func (s *clientSession) answer(verb string, err error) {
	var se *gwclient.ServerError
	switch {
	case err == nil:
	case errors.As(err, &se):
		s.printf("error %d %s", se.Code, se.Text)
	case errors.Is(err, gwclient.ErrDisconnected):
		s.stateLine("%s: not done: disconnected (the client is reconnecting); try again once authenticated", verb)
	case errors.Is(err, context.DeadlineExceeded):
		s.stateLine("%s: no answer from the server within %v; not done", verb, clientCommandTimeout)
	default:
		s.stateLine("%s: %v", verb, err)
	}
}
