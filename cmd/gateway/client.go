package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// clientPingEvery stays well inside the server's default 30 s ping timeout.
const clientPingEvery = 20 * time.Second

// clientDialTimeout bounds the TCP connect and the HTTP upgrade.
const clientDialTimeout = 10 * time.Second

const clientHelp = `commands: sub CH | unsub CH | pub CH TEXT | echo 0|1 | name NAME | batch MS | ping | quit`

// Exit statuses of `gateway client` beyond exitOK, exitError (could not
// connect: dial or upgrade failed, or the endpoint is not the native
// protocol) and exitUsage.
const (
	clientExitRefused = 3 // the server closed the connection before authenticating it
	clientExitClosed  = 4 // the session ended without this client quitting: a close by the server, or lost
)

const clientAbout = `A native-protocol client on stdin/stdout, to try a node by hand: one command
per line on stdin (` + clientHelp + `),
one line per packet received on stdout (subscribed CH, message CH TEXT,
error CODE TEXT, pong MS).

The state goes to stderr as it happens: "connecting to URL", "connected"
once upgraded and greeted, "authenticated" only when the server has
confirmed the key (its Pong), and every close with its code and reason.`

const clientExitDoc = `0 this client quit ("quit" or end of input), 1 could not connect
(dial or upgrade failed, not a native endpoint), 2 command-line error,
3 refused: the server closed the connection before authenticating it (3001 bad,
expired or revoked key, 3002, 1013 try again later, ...), 4 the session ended
otherwise: closed by the server after authentication (3004 revoked, 1001 going
away, 1008, ...) or lost without a close frame.`

// client is a small interactive client of the native protocol: commands on
// stdin, one line per packet received on stdout, the connection's state on
// stderr. It says "authenticated" only after the server's Pong (PROTOCOL.md
// §3), prints every close with its code and reason, and exits non-zero when
// the server refused or ended the session (clientExitDoc).
func client(args []string) error {
	fs := newFlagSet("client")
	url := fs.String("url", "ws://127.0.0.1:8080/api/ws", "the gateway's native WebSocket URL")
	keyText := fs.String("key", "", "access key (base64), from gateway key issue (required)")
	subs := fs.String("sub", "", "channels to subscribe at start, comma separated")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *keyText == "" {
		return usageErr("client", errors.New("--key is required"))
	}
	key, err := token.DecodeText(*keyText)
	if err != nil {
		return usageErr("client", fmt.Errorf("--key: %w", err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fmt.Fprintf(os.Stderr, "connecting to %s\n", *url)
	ws, err := clientDial(ctx, *url)
	if err != nil {
		return err
	}
	ws.SetReadLimit(1 << 24)
	if err := clientAuth(ctx, ws, key); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, clientHelp)
	for ch := range strings.SplitSeq(*subs, ",") {
		if ch != "" {
			_ = ws.Write(ctx, websocket.MessageBinary, packet.AppendSubscribe(nil, ch))
		}
	}
	s := &clientSession{ws: ws, closed: make(chan struct{})}
	go clientPing(ctx, ws)
	go s.stdin(ctx)
	return s.print(ctx)
}

// clientDial upgrades; a refused upgrade names the HTTP status and the
// start of the body.
func clientDial(ctx context.Context, url string) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, clientDialTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(dctx, url, nil)
	if err == nil {
		return ws, nil
	}
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		var body []byte
		if resp.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 200))
		}
		return nil, fmt.Errorf("client: upgrade refused: HTTP %s %s", resp.Status, bytes.TrimSpace(body))
	}
	return nil, fmt.Errorf("client: %w", err)
}

// clientAuth reads the hello, sends the key and waits for the server's
// verdict: a Pong (authenticated) or a close (refused).
func clientAuth(ctx context.Context, ws *websocket.Conn, key []byte) error {
	_, hello, err := ws.Read(ctx)
	if err != nil {
		return clientEnded(err, false, "before its hello")
	}
	if !bytes.Equal(hello, packet.Hello) {
		_ = ws.Close(websocket.StatusProtocolError, "not the native protocol")
		return fmt.Errorf("client: not a native-protocol endpoint: the first message is % x, not the hello % x", hello, packet.Hello)
	}
	fmt.Fprintln(os.Stderr, "connected (upgraded, hello received); authenticating")
	if err := ws.Write(ctx, websocket.MessageBinary, packet.AppendAuth(nil, packet.Version, key)); err != nil {
		return clientEnded(err, false, "while sending the key")
	}
	_, msg, err := ws.Read(ctx)
	if err != nil {
		return clientEnded(err, false, "")
	}
	d := packet.NewClientDecoder(msg)
	var p packet.ServerPacket
	if ok, err := d.Next(&p); !ok || err != nil || p.ID != packet.PacketPong {
		_ = ws.Close(websocket.StatusProtocolError, "no Pong after auth")
		return fmt.Errorf("client: the server answered the key with % x, not a Pong", msg)
	}
	fmt.Fprintln(os.Stderr, "authenticated (the server accepted the key)")
	printPacket(&p)
	clientPrintRest(&d, msg)
	return nil
}

// clientEnded turns the error that ended a read or write into the close
// line and the exit status: before authentication any close is a refusal.
// when says where a connection lost without a close frame was.
func clientEnded(err error, authenticated bool, when string) error {
	if when != "" {
		when = " " + when
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		if !authenticated {
			return &exitCodeError{code: clientExitRefused,
				err: fmt.Errorf("client: refused: the server closed the connection with %d %q before authenticating it", ce.Code, ce.Reason)}
		}
		return &exitCodeError{code: clientExitClosed, err: fmt.Errorf("client: closed by the server: %d %q", ce.Code, ce.Reason)}
	}
	return &exitCodeError{code: clientExitClosed,
		err: fmt.Errorf("client: connection lost%s without a close frame (1006): %v", when, err)}
}

func clientPing(ctx context.Context, ws *websocket.Conn) {
	t := time.NewTicker(clientPingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = ws.Write(ctx, websocket.MessageBinary, packet.AppendPing(nil))
		}
	}
}

// clientSession is an authenticated session: stdin writes, print reads.
type clientSession struct {
	ws       *websocket.Conn
	quitting atomic.Bool   // this client started the close (quit or end of input)
	closed   chan struct{} // closed once that close handshake is over
}

// stdin turns command lines into packets; "quit" or the end of input
// closes the connection with 1000.
func (s *clientSession) stdin(ctx context.Context) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		msg, err := clientCommand(sc.Text())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		if msg == nil {
			break
		}
		if err := s.ws.Write(ctx, websocket.MessageBinary, msg); err != nil {
			return // the connection is gone: print reports how
		}
	}
	// Flag first, so print takes the end of its read for the close it is.
	s.quitting.Store(true)
	_ = s.ws.Close(websocket.StatusNormalClosure, "bye")
	close(s.closed)
}

// clientCommand encodes one command line; nil means quit.
func clientCommand(line string) ([]byte, error) {
	verb, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch verb {
	case "sub":
		return packet.AppendSubscribe(nil, rest), nil
	case "unsub":
		return packet.AppendUnsubscribe(nil, rest), nil
	case "pub":
		ch, text, _ := strings.Cut(rest, " ")
		return packet.AppendPublish(nil, ch, []byte(text)), nil
	case "ping":
		return packet.AppendPing(nil), nil
	case "echo":
		v, err := strconv.ParseInt(rest, 10, 8)
		return packet.AppendSettings(nil, packet.Setting{ID: packet.SettingEcho, Byte: int8(v)}), err
	case "name":
		return packet.AppendSettings(nil, packet.Setting{ID: packet.SettingClientName, String: []byte(rest)}), nil
	case "batch":
		v, err := strconv.ParseInt(rest, 10, 16)
		return packet.AppendSettings(nil, packet.Setting{ID: packet.SettingBatchWindow, Short: int16(v)}), err
	case "quit", "exit":
		return nil, nil
	}
	return nil, errors.New(clientHelp)
}

// print prints every packet the server sends until the connection ends,
// then how it ended.
func (s *clientSession) print(ctx context.Context) error {
	for {
		_, msg, err := s.ws.Read(ctx)
		if err != nil {
			if s.quitting.Load() {
				<-s.closed
				fmt.Fprintln(os.Stderr, `closed: 1000 "bye" (this client quit)`)
				return nil
			}
			return clientEnded(err, true, "")
		}
		d := packet.NewClientDecoder(msg)
		clientPrintRest(&d, msg)
	}
}

// clientPrintRest prints the packets d has left of msg.
func clientPrintRest(d *packet.ClientDecoder, msg []byte) {
	var p packet.ServerPacket
	for {
		ok, err := d.Next(&p)
		if err != nil {
			fmt.Printf("undecodable message (%v): % x\n", err, msg)
		}
		if !ok {
			return
		}
		printPacket(&p)
	}
}

func printPacket(p *packet.ServerPacket) {
	switch p.ID {
	case packet.PacketPong:
		fmt.Printf("pong %d\n", p.Millis)
	case packet.PacketMessage:
		if utf8.Valid(p.Payload) {
			fmt.Printf("message %s %s\n", p.Channel, p.Payload)
		} else {
			fmt.Printf("message %s % x\n", p.Channel, p.Payload)
		}
	case packet.PacketError:
		fmt.Printf("error %d %s\n", p.Code, p.Text)
	case packet.PacketSubscribed:
		fmt.Printf("subscribed %s\n", p.Channel)
	}
}
