package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// The RFC 6455 close codes the protocol uses; the 3000s come from package
// packet.
const (
	closeProtocolError = websocket.CloseProtocolError           // 1002
	closeUnsupported   = websocket.CloseUnsupportedData         // 1003
	closeInvalidUTF8   = websocket.CloseInvalidFramePayloadData // 1007
	closePolicy        = websocket.ClosePolicyViolation         // 1008
)

// client is one connection. Its handler goroutine reads and runs messages;
// the writer goroutine owns data writes. The fields after the channels
// belong to the reader goroutine.
type client struct {
	srv *server
	ws  *websocket.Conn

	// send holds *websocket.PreparedMessage (fan-out) or []byte (replies).
	send       chan any
	done       chan struct{} // closed by closeWith
	writerDone chan struct{}
	once       sync.Once
	closeCode  int // set before done is closed; 0: no close frame
	closeText  string

	in      bytes.Buffer // the message being read, reused
	authed  bool
	subject string
	expires time.Time
	echo    bool
	subs    map[string]struct{}
}

func newClient(s *server, ws *websocket.Conn) *client {
	return &client{
		srv:        s,
		ws:         ws,
		send:       make(chan any, s.opts.queue),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		subs:       make(map[string]struct{}),
	}
}

// serve runs the connection to its end.
func (c *client) serve() {
	c.ws.SetReadLimit(maxMessageSize) // gorilla closes with 1009 beyond it
	c.send <- helloMsg
	go c.writeLoop()
	c.readLoop()
	c.closeWith(0, "") // stop the writer if nothing else did
	c.srv.hub.leave(c, c.subs)
	<-c.writerDone // bounded by writeTimeout
	c.ws.Close()
}

// closeWith starts closing: the writer sends a close frame with code
// (none if 0) and stops, and the reader gets closeGrace to read the
// client's close frame. Only the first call counts; it reports whether it
// was the first. It never blocks, so any goroutine may call it.
func (c *client) closeWith(code int, text string) bool {
	first := false
	c.once.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.done)
		first = true
	})
	if first {
		c.ws.SetReadDeadline(time.Now().Add(closeGrace))
	}
	return first
}

func (c *client) closing() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// enqueue hands m to the writer without blocking; a full queue closes the
// connection as a slow consumer.
func (c *client) enqueue(m any) {
	select {
	case c.send <- m:
	default:
		if c.closeWith(closePolicy, "slow consumer: outbound buffer full") {
			metricSlow.Inc()
		}
	}
}

// reply queues a packet built for this connection only.
func (c *client) reply(b []byte) { c.enqueue(b) }

func (c *client) writeLoop() {
	defer close(c.writerDone)
	for {
		select {
		case m := <-c.send:
			if err := c.write(m); err != nil {
				c.closeWith(0, "")
				return
			}
		case <-c.done:
			c.writeClose()
			return
		}
	}
}

func (c *client) write(m any) error {
	c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	switch m := m.(type) {
	case *websocket.PreparedMessage:
		return c.ws.WritePreparedMessage(m)
	case []byte:
		return c.ws.WriteMessage(websocket.BinaryMessage, m)
	}
	panic(fmt.Sprintf("baseline: cannot send %T", m))
}

func (c *client) writeClose() {
	if c.closeCode == 0 {
		return
	}
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
	c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// readLoop reads until the connection fails or closes. Once closing, it
// only waits for the client's close frame, discarding data.
func (c *client) readLoop() {
	c.ws.SetReadDeadline(time.Now().Add(handshakeTimeout))
	for {
		mt, msg, err := c.read()
		if err != nil {
			c.readFailed(err)
			return
		}
		if !c.closing() {
			c.handle(mt, msg)
			c.extendDeadline()
		}
	}
}

// read returns the next message; binary ones are read into c.in.
func (c *client) read() (int, []byte, error) {
	mt, r, err := c.ws.NextReader()
	if err != nil || mt != websocket.BinaryMessage {
		return mt, nil, err
	}
	c.in.Reset()
	_, err = c.in.ReadFrom(r)
	return mt, c.in.Bytes(), err
}

// readFailed ends reading: a read deadline closes with a code; when
// gorilla has sent a close frame itself (1002, 1009) the rest of the
// client's data is drained so that closing TCP does not reset the
// connection before the client reads that frame.
func (c *client) readFailed(err error) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce): // the client closed; gorilla answered
	case errors.As(err, &ne):
		if ne.Timeout() && !c.closing() {
			c.closeWith(c.timeoutClose())
		}
	default:
		c.drain()
	}
}

// drain discards what the client sends until it closes, for closeGrace.
func (c *client) drain() {
	nc := c.ws.NetConn()
	nc.SetReadDeadline(time.Now().Add(closeGrace))
	io.Copy(io.Discard, nc)
}

func (c *client) timeoutClose() (int, string) {
	switch {
	case !c.authed:
		return int(packet.CloseTimeout), fmt.Sprintf("authentication timeout: no auth message within %v", handshakeTimeout)
	case !time.Now().Before(c.expires):
		return int(packet.CloseUnauthorized), "access key expired"
	default:
		return int(packet.CloseTimeout), fmt.Sprintf("read timeout: no message within %v", readTimeout)
	}
}

// extendDeadline gives an authenticated client readTimeout more, but no
// more than its key's life. A close started meanwhile keeps its grace.
func (c *client) extendDeadline() {
	if c.closing() || !c.authed {
		return
	}
	d := time.Now().Add(readTimeout)
	if c.expires.Before(d) {
		d = c.expires
	}
	c.ws.SetReadDeadline(d)
	if c.closing() { // closeWith ran between the checks: restore its grace
		c.ws.SetReadDeadline(time.Now().Add(closeGrace))
	}
}

func (c *client) handle(mt int, msg []byte) {
	switch {
	case mt != websocket.BinaryMessage:
		c.closeWith(closeUnsupported, "text messages are not accepted; send binary")
	case !c.authed:
		c.authenticate(msg)
	default:
		c.runMessage(msg)
	}
}

// authenticate checks the auth message (PROTOCOL.md §3) and answers a
// success with a Pong.
func (c *client) authenticate(msg []byte) {
	key, err := packet.ParseAuth(msg)
	switch {
	case errors.Is(err, packet.ErrAuthVersion):
		c.closeWith(int(packet.CloseVersionMismatch),
			fmt.Sprintf("unsupported protocol version %d; this server speaks %d", msg[2], packet.Version))
		return
	case err != nil:
		c.closeWith(int(packet.CloseUnauthorized), "malformed auth message: "+err.Error())
		return
	}
	now := time.Now()
	claims, err := c.srv.opts.secrets.Verify(key, now)
	switch {
	case errors.Is(err, token.ErrExpired):
		c.closeWith(int(packet.CloseUnauthorized), "access key expired")
		return
	case err != nil:
		c.closeWith(int(packet.CloseUnauthorized), "invalid access key")
		return
	}
	c.authed, c.subject, c.expires = true, claims.Subject, claims.Expires
	c.reply(packet.AppendPong(make([]byte, 0, 9), now.UnixMilli()))
}

// runMessage checks a whole message, then runs its packets in order.
func (c *client) runMessage(msg []byte) {
	if err := packet.Validate(msg); err != nil {
		c.closeMalformed(msg, err)
		return
	}
	d := packet.NewDecoder(msg)
	var pk packet.Packet
	for !c.closing() {
		if ok, _ := d.Next(&pk); !ok {
			return
		}
		c.runPacket(&pk)
	}
}

// closeMalformed closes with the error and its byte offset, as the
// gateway does.
func (c *client) closeMalformed(msg []byte, err error) {
	d := packet.NewDecoder(msg)
	var pk packet.Packet
	for ok, e := d.Next(&pk); ok && e == nil; ok, e = d.Next(&pk) {
	}
	code := closeProtocolError
	if errors.Is(err, packet.ErrInvalidUTF8) {
		code = closeInvalidUTF8
	}
	c.closeWith(code, fmt.Sprintf("%v at byte %d", err, d.Offset()))
}

func (c *client) runPacket(pk *packet.Packet) {
	switch pk.ID {
	case packet.PacketPing:
		c.reply(packet.AppendPong(make([]byte, 0, 9), time.Now().UnixMilli()))
	case packet.PacketSettings:
		c.settings(pk.Settings)
	case packet.PacketSubscribe:
		c.subscribe(pk.Channel)
	case packet.PacketUnsubscribe:
		c.unsubscribe(pk.Channel)
	case packet.PacketPublish:
		c.publish(pk.Channel, pk.Payload)
	}
}

// settings applies a Settings packet all or nothing. Only echo has an
// effect; the client name and batch window are checked, then ignored.
func (c *client) settings(raw []byte) {
	echo := c.echo
	r := packet.NewSettingsReader(raw)
	var s packet.Setting
	for r.Next(&s) {
		if why := checkSetting(&s); why != "" {
			c.sendError(packet.ErrorBadRequest, why)
			return
		}
		if s.ID == packet.SettingEcho {
			echo = s.Byte == 1
		}
	}
	c.echo = echo
}

func checkSetting(s *packet.Setting) string {
	switch {
	case s.ID == packet.SettingEcho && s.Byte != 0 && s.Byte != 1:
		return fmt.Sprintf("setting echo: value %d is not 0 or 1", s.Byte)
	case s.ID == packet.SettingClientName && len(s.String) > maxClientName:
		return fmt.Sprintf("setting client name: longer than %d bytes", maxClientName)
	case s.ID == packet.SettingBatchWindow && (s.Short < 0 || s.Short > maxBatchWindow):
		return fmt.Sprintf("setting batch window: %d ms is outside 0..%d", s.Short, maxBatchWindow)
	}
	return ""
}

func (c *client) subscribe(channel []byte) {
	if code, why := checkChannel(channel, c.subject, false); code != 0 {
		c.sendError(code, fmt.Sprintf("subscribe %q: %s", channel, why))
		return
	}
	if _, ok := c.subs[string(channel)]; !ok {
		if len(c.subs) >= maxSubscriptions {
			c.sendError(packet.ErrorTooMany, fmt.Sprintf("subscribe %q: more than %d subscriptions", channel, maxSubscriptions))
			return
		}
		name := string(channel)
		c.subs[name] = struct{}{}
		c.srv.hub.subscribe(name, c)
	}
	c.reply(packet.AppendSubscribedBytes(make([]byte, 0, 3+len(channel)), channel))
}

func (c *client) unsubscribe(channel []byte) {
	if _, ok := c.subs[string(channel)]; !ok {
		return
	}
	name := string(channel)
	delete(c.subs, name)
	c.srv.hub.unsubscribe(name, c)
}

func (c *client) publish(channel, payload []byte) {
	if code, why := checkChannel(channel, c.subject, true); code != 0 {
		c.sendError(code, fmt.Sprintf("publish %q: %s", channel, why))
		return
	}
	c.srv.hub.publish(channel, payload, c, c.echo)
}

func (c *client) sendError(code int16, text string) {
	c.reply(packet.AppendError(nil, code, text))
}

// checkChannel applies the channel rules of PROTOCOL.md §5: a valid name,
// '#' reserved, user:S personal to subject S, server: read-only.
func checkChannel(channel []byte, subject string, publish bool) (int16, string) {
	if len(channel) == 0 || len(channel) > maxChannelLen {
		return packet.ErrorBadRequest, "channel names are 1 to 255 bytes"
	}
	if bytes.ContainsFunc(channel, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return packet.ErrorBadRequest, "channel names have no control characters"
	}
	switch {
	case channel[0] == '#':
		return packet.ErrorForbidden, "channels starting with '#' are reserved"
	case bytes.HasPrefix(channel, []byte("user:")):
		owner, _, _ := bytes.Cut(channel[len("user:"):], []byte(":"))
		if string(owner) != subject {
			return packet.ErrorForbidden, "personal channel of another subject"
		}
	case publish && bytes.HasPrefix(channel, []byte("server:")):
		return packet.ErrorForbidden, "server: channels are read-only for clients"
	}
	return 0, ""
}
