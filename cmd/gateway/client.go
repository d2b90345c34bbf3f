package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// clientPingEvery stays well inside the server's default 30 s ping timeout.
const clientPingEvery = 20 * time.Second

const clientHelp = `commands: sub CH | unsub CH | pub CH TEXT | echo 0|1 | name NAME | batch MS | ping | quit`

// client is a small interactive client of the native protocol: commands on
// stdin, one line per packet received on stdout.
func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	url := fs.String("url", "ws://127.0.0.1:8080/api/ws", "the gateway's native WebSocket URL")
	keyText := fs.String("key", "", "access key (base64), from `gateway key issue`")
	subs := fs.String("sub", "", "channels to subscribe at start, comma separated")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	key, err := token.DecodeText(*keyText)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ws, _, err := websocket.Dial(ctx, *url, nil)
	if err != nil {
		return err
	}
	ws.SetReadLimit(1 << 24)
	if err := clientAuth(ctx, ws, key); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "connected;", clientHelp)
	for ch := range strings.SplitSeq(*subs, ",") {
		if ch != "" {
			_ = ws.Write(ctx, websocket.MessageBinary, packet.AppendSubscribe(nil, ch))
		}
	}
	go clientPing(ctx, ws)
	go clientStdin(ctx, cancel, ws)
	return clientPrint(ctx, ws)
}

// clientAuth reads the hello and answers with the key.
func clientAuth(ctx context.Context, ws *websocket.Conn, key []byte) error {
	_, hello, err := ws.Read(ctx)
	if err != nil {
		return err
	}
	if string(hello) != string(packet.Hello) {
		return fmt.Errorf("unexpected hello % x", hello)
	}
	return ws.Write(ctx, websocket.MessageBinary, packet.AppendAuth(nil, packet.Version, key))
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

// clientStdin turns command lines into packets.
func clientStdin(ctx context.Context, cancel context.CancelFunc, ws *websocket.Conn) {
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
		if err := ws.Write(ctx, websocket.MessageBinary, msg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			break
		}
	}
	cancel() // first, so the reader takes what follows for the end it is
	_ = ws.Close(websocket.StatusNormalClosure, "bye")
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

// clientPrint prints every packet the server sends until the connection
// ends, then its close code.
func clientPrint(ctx context.Context, ws *websocket.Conn) error {
	for {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			if st := websocket.CloseStatus(err); st != -1 {
				fmt.Printf("closed %d\n", st)
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		d := packet.NewClientDecoder(msg)
		var p packet.ServerPacket
		for {
			ok, err := d.Next(&p)
			if err != nil {
				fmt.Printf("undecodable message (%v): % x\n", err, msg)
			}
			if !ok {
				break
			}
			printPacket(&p)
		}
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
