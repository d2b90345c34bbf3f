package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// MaxHeadSize caps an HTTP request head (request line and headers). A
// longer head is answered 431. gobwas's line reader has no limit of its own.
const MaxHeadSize = 8 << 10

var (
	response408 = []byte("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	response431 = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
	response503 = []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
)

// handshakeState is what the Upgrader hooks learn about the request being
// upgraded; one per loop, reused.
type handshakeState struct {
	conn                              *Conn
	route                             *Route
	handler                           Handler
	req                               Request
	uri, host, origin, auth, xff, xfp []byte
	result                            string // the metrics label when the upgrade fails
	admitted                          bool   // the limiter counted the connection
}

// appendWriter is the io.Writer the Upgrader answers into: it appends to the
// loop's out buffer, which OnTraffic writes once.
type appendWriter struct{ l *Loop }

func (w appendWriter) Write(p []byte) (int, error) {
	w.l.out = append(w.l.out, p...)
	return len(p), nil
}

// initUpgrader prepares the loop's Upgrader. Its hooks only copy into the
// loop's scratch state: no allocation, no lock.
func (l *Loop) initUpgrader() {
	hs := &l.hs
	l.upgrader = ws.Upgrader{
		ReadBufferSize:  MaxHeadSize,
		WriteBufferSize: 512,
		OnRequest: func(uri []byte) error {
			hs.uri = append(hs.uri[:0], uri...)
			hs.route = l.srv.match(l.srv.listeners[hs.conn.listener].name, pathOf(hs.uri))
			if hs.route == nil {
				hs.result = resultNotFound
				return ws.RejectConnectionError(ws.RejectionStatus(404))
			}
			return nil
		},
		OnHost: func(host []byte) error {
			hs.host = append(hs.host[:0], host...)
			return nil
		},
		OnHeader: func(key, value []byte) error {
			switch {
			case bytes.EqualFold(key, headerOrigin):
				hs.origin = append(hs.origin[:0], value...)
			case bytes.EqualFold(key, headerAuthorization):
				hs.auth = append(hs.auth[:0], value...)
			case bytes.EqualFold(key, headerXFF):
				hs.xff = append(hs.xff[:0], value...)
			case bytes.EqualFold(key, headerXFP):
				hs.xfp = append(hs.xfp[:0], value...)
			}
			return nil
		},
		Protocol: func(offered []byte) bool {
			if hs.route == nil {
				return false
			}
			for _, p := range hs.route.Subprotocols {
				if string(offered) == p {
					return true
				}
			}
			return false
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			return nil, l.accept()
		},
	}
}

var (
	headerOrigin        = []byte("Origin")
	headerAuthorization = []byte("Authorization")
	headerXFF           = []byte("X-Forwarded-For")
	headerXFP           = []byte("X-Forwarded-Proto")
	headerUpgrade       = []byte("Upgrade")
	tokenWebSocket      = []byte("websocket")
)

// accept checks the limits (origin, connection caps), then asks the
// route's protocol for a handler.
func (l *Loop) accept() error {
	hs := &l.hs
	lim := l.limiter()
	if lim != nil {
		result, err := lim.admit(hs.route, hs.origin, hs.conn.remote.Addr().Unmap())
		if err != nil {
			hs.result = result
			return err
		}
		hs.admitted = true
	}
	hs.req = Request{
		URI: hs.uri, Path: pathOf(hs.uri), Host: hs.host,
		Origin: nilIfEmpty(hs.origin), Authorization: nilIfEmpty(hs.auth),
		ForwardedFor: nilIfEmpty(hs.xff), ForwardedProto: nilIfEmpty(hs.xfp),
		Remote: hs.conn.remote, Authorized: hs.conn.authState,
	}
	h, err := hs.route.Protocol.Accept(&hs.req)
	if err != nil {
		hs.result = resultRejected
		l.unadmit()
		var he *HTTPError
		if errors.As(err, &he) {
			return ws.RejectConnectionError(ws.RejectionStatus(he.Status), ws.RejectionReason(he.Text))
		}
		return err
	}
	hs.handler = h
	return nil
}

// unadmit gives back the limiter's places of an upgrade that failed.
func (l *Loop) unadmit() {
	if l.hs.admitted {
		l.hs.admitted = false
		l.limiter().release(l.hs.conn.remote.Addr().Unmap())
	}
}

func (l *Loop) resetHandshake(c *Conn) {
	hs := &l.hs
	hs.admitted = false
	hs.conn, hs.route, hs.handler, hs.result = c, nil, nil, resultBadRequest
	hs.uri, hs.host = hs.uri[:0], hs.host[:0]
	hs.origin, hs.auth, hs.xff, hs.xfp = hs.origin[:0], hs.auth[:0], hs.xff[:0], hs.xfp[:0]
}

// handshake reads the request head. Until its end arrives it consumes
// nothing; then it upgrades on the loop, or hands a plain HTTP request to
// net/http. It returns the bytes consumed (the head) and the action.
func (c *Conn) handshake(buf []byte) (int, gnet.Action) {
	end := headEnd(buf, int(c.scanned))
	if end < 0 {
		if len(buf) > MaxHeadSize {
			return c.refuse(response431, resultTooLarge)
		}
		c.scanned = uint16(max(len(buf)-3, 0))
		return 0, gnet.None
	}
	if end > MaxHeadSize {
		return c.refuse(response431, resultTooLarge)
	}
	srv := c.loop.srv
	if srv.draining.Load() {
		return c.refuse(response503, resultShutdown)
	}
	head := buf[:end]
	if !isUpgrade(head) {
		srv.handOff(c.gc, c.listener, buf)
		return len(buf), gnet.Close
	}
	if a := c.headAuthorizer(head); a != nil {
		c.authorize(a, head)
		return end, gnet.None
	}
	return c.upgrade(head)
}

// headAuthorizer returns the HeadAuthorizer of the route the head asks for,
// if it has one.
func (c *Conn) headAuthorizer(head []byte) HeadAuthorizer {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	fields := bytes.Fields(line)
	if len(fields) < 2 {
		return nil
	}
	srv := c.loop.srv
	r := srv.match(srv.listeners[c.listener].name, pathOf(fields[1]))
	if r == nil {
		return nil
	}
	a, _ := r.Protocol.(HeadAuthorizer)
	return a
}

// authorize hands a copy of the head to the HeadAuthorizer off the loop;
// the decision comes back as a task. Later bytes wait in gnet's buffer.
func (c *Conn) authorize(a HeadAuthorizer, head []byte) {
	c.authorizing = true
	copied := append([]byte(nil), head...)
	l := c.loop
	go func() {
		state, err := a.AuthorizeHead(copied, c.remote)
		c.Run(l.authorizedFn, &authDecision{c, copied, state, err})
	}()
}

type authDecision struct {
	c     *Conn
	head  []byte
	state any
	err   error
}

// authorized runs on the loop with a HeadAuthorizer's decision: upgrade as
// if the head had just arrived, or refuse.
func (l *Loop) authorized(arg any) {
	d := arg.(*authDecision)
	c := d.c
	if c.state != stateHandshake {
		return // gone meanwhile
	}
	c.authorizing = false
	if d.err != nil {
		status := 403
		var he *HTTPError
		if errors.As(d.err, &he) {
			status = he.Status
		}
		l.srv.metrics.handshake(nil, resultRejected)
		c.sysWrite(fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status, http.StatusText(status)))
		c.closeNow()
		return
	}
	c.authState = d.state
	l.cur = c
	_, action := c.upgrade(d.head)
	l.cur = nil
	if len(l.out) > 0 {
		c.sysWrite(l.out)
		l.out = l.out[:0]
	}
	if action != gnet.None {
		c.closeNow()
		return
	}
	if c.state != stateClosed { // the 101's write may have failed
		_ = c.gc.Wake(nil) // frames that came behind the head
	}
}

// refuse answers the request head with a fixed response and closes.
func (c *Conn) refuse(response []byte, result string) (int, gnet.Action) {
	c.loop.srv.metrics.handshake(nil, result)
	c.sysWrite(response)
	return 0, gnet.Close
}

// upgrade runs gobwas's Upgrader over exactly the head bytes; frames that
// came with them stay in gnet's buffer for the frame parser.
func (c *Conn) upgrade(head []byte) (int, gnet.Action) {
	l := c.loop
	l.resetHandshake(c)
	l.headReader.Reset(head)
	rw := struct {
		io.Reader
		io.Writer
	}{&l.headReader, appendWriter{l}}
	if _, err := l.upgrader.Upgrade(rw); err != nil {
		l.unadmit()
		l.srv.metrics.handshake(protocolOf(l.hs.route), l.hs.result)
		return 0, gnet.Close // gobwas wrote the error response into l.out
	}
	c.route, c.handler = l.hs.route, l.hs.handler
	c.admitted, l.hs.admitted = l.hs.admitted, false
	c.authState = nil // Accept has taken what it needs
	l.hs.conn, l.hs.handler, l.hs.route = nil, nil, nil
	c.state = stateOpen
	l.srv.metrics.upgraded(c.route.Protocol, l.srv.sinceEpoch()-c.accept)
	c.handler.OnOpen(c)
	return len(head), gnet.None
}

func protocolOf(r *Route) Protocol {
	if r == nil {
		return nil
	}
	return r.Protocol
}

// headEnd returns the length of the request head including its blank line,
// or -1; the search restarts from a few bytes before where it stopped.
func headEnd(buf []byte, from int) int {
	from = min(from, len(buf))
	i := bytes.Index(buf[from:], []byte("\r\n\r\n"))
	if i < 0 {
		return -1
	}
	return from + i + 4
}

// isUpgrade reports whether the head asks for a WebSocket upgrade: an
// Upgrade header naming websocket. Everything else goes to net/http, which
// answers plain requests (and 426 on WebSocket paths).
func isUpgrade(head []byte) bool {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(name), headerUpgrade) {
			return containsFold(value, tokenWebSocket)
		}
	}
	return false
}

func containsFold(s, sub []byte) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if bytes.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func pathOf(uri []byte) []byte {
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		return uri[:i]
	}
	return uri
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func addrPort(a any) netip.AddrPort {
	type addrPorter interface{ AddrPort() netip.AddrPort }
	if ap, ok := a.(addrPorter); ok {
		return ap.AddrPort()
	}
	return netip.AddrPort{}
}
