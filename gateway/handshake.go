package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"

	"github.com/gobwas/httphead"
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
		ProtocolCustom: hs.selectProtocol,
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			return nil, l.accept()
		},
	}
}

// selectProtocol answers one Sec-WebSocket-Protocol header line: the first
// offered subprotocol the route lists; else, on a route with
// EchoLoneSubprotocol, the offer itself when the line offers exactly one.
// ok is false for a malformed line (400). gobwas stops calling it once a
// line selected one, so a second header line is ignored then.
func (hs *handshakeState) selectProtocol(line []byte) (selected string, ok bool) {
	if hs.route == nil {
		return "", true
	}
	var offers int
	var lone []byte
	ok = httphead.ScanTokens(line, func(offered []byte) bool {
		offers++
		lone = offered
		for _, p := range hs.route.Subprotocols {
			if string(offered) == p {
				selected = p
				return false
			}
		}
		return true
	})
	if ok && selected == "" && offers == 1 && hs.route.EchoLoneSubprotocol {
		selected = string(lone) // rare: only a client that offers one pays
	}
	return selected, ok
}

var (
	headerOrigin        = []byte("Origin")
	headerAuthorization = []byte("Authorization")
	headerXFF           = []byte("X-Forwarded-For")
	headerXFP           = []byte("X-Forwarded-Proto")
	headerUpgrade       = []byte("Upgrade")
	tokenWebSocket      = []byte("websocket")
)

// accept asks the route's protocol for a handler; the limits were checked
// when the head arrived (Conn.handshake).
func (l *Loop) accept() error {
	hs := &l.hs
	hs.req = Request{
		URI: hs.uri, Path: pathOf(hs.uri), Host: hs.host,
		Origin: nilIfEmpty(hs.origin), Authorization: nilIfEmpty(hs.auth),
		ForwardedFor: nilIfEmpty(hs.xff), ForwardedProto: nilIfEmpty(hs.xfp),
		Remote: hs.conn.remote, Authorized: hs.conn.more().authState, ID: hs.conn.ID(),
	}
	h, err := hs.route.Protocol.Accept(&hs.req)
	if err != nil {
		hs.result = resultRejected
		var he *HTTPError
		if errors.As(err, &he) {
			return ws.RejectConnectionError(ws.RejectionStatus(he.Status), ws.RejectionReason(he.Text))
		}
		return err
	}
	hs.handler = h
	return nil
}

func (l *Loop) resetHandshake(c *Conn) {
	hs := &l.hs
	hs.conn, hs.route, hs.handler, hs.result = c, nil, nil, resultBadRequest
	hs.uri, hs.host = hs.uri[:0], hs.host[:0]
	hs.origin, hs.auth, hs.xff, hs.xfp = hs.origin[:0], hs.auth[:0], hs.xff[:0], hs.xfp[:0]
}

// handshake reads the request head. Until its end arrives it consumes
// nothing; then it upgrades on the loop, or hands a plain HTTP request to
// net/http. It returns the bytes consumed (the head) and the action. Heads
// that cannot be HTTP (a TLS ClientHello, LF-only line ends) and paths with
// dot segments are refused with 400 at once. The limits (origin, the
// server's connection cap) are checked before any HeadAuthorizer call or
// any work of the upgrade itself.
func (c *Conn) handshake(buf []byte) (int, gnet.Action) {
	scanned := 0
	if c.cold != nil {
		scanned = int(c.cold.scanned)
	}
	end, refusal := scanHead(buf, scanned)
	if refusal != nil {
		return c.refuse(refusal, resultBadRequest)
	}
	if end < 0 {
		if len(buf) > MaxHeadSize {
			return c.refuse(response431, resultTooLarge)
		}
		c.more().scanned = uint16(len(buf))
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
	path := pathOf(requestTarget(head))
	if !cleanPath(path) {
		return c.refuse(response400Path, resultBadRequest)
	}
	if !isUpgrade(head) {
		if !c.handOff(buf) {
			c.sysWrite(response503HandOff)
			return 0, gnet.Close
		}
		return len(buf), gnet.Close
	}
	route := srv.match(srv.listeners[c.listener].name, path)
	if route == nil {
		return c.upgrade(head) // gobwas answers: 404, or what is wrong first
	}
	if lim := srv.limits; lim != nil {
		result, response := lim.admit(route, headerValue(head, headerOrigin))
		if response != nil {
			srv.metrics.handshake(route.Protocol, result)
			c.logRefused(route.Protocol.Name(), lim.refusalReason(result), responseStatus(response))
			c.sysWrite(response)
			return 0, gnet.Close
		}
		c.admitted = true
	}
	if a, ok := route.Protocol.(HeadAuthorizer); ok {
		if !c.authorize(a, head) {
			srv.metrics.handshake(route.Protocol, resultAuthorizerBusy)
			c.logRefused(route.Protocol.Name(), refusedAuthorizing, http.StatusServiceUnavailable)
			c.sysWrite(response503Authorizing)
			return 0, gnet.Close
		}
		return end, gnet.None
	}
	return c.upgrade(head)
}

// response503Authorizing answers an upgrade past Options.MaxAuthorizing.
var response503Authorizing = fixedResponse(http.StatusServiceUnavailable,
	"too many upgrades waiting for authorization", "Retry-After: 1")

// authorize hands a copy of the head to the HeadAuthorizer off the loop;
// the decision comes back as a task (authorized). Later bytes wait in
// gnet's buffer. If the connection closes meanwhile, closed cancels the
// call and leaves the connection's limit places to authorized, so that
// an address cannot have more calls running than its cap of connections.
// It reports false, starting nothing, when Options.MaxAuthorizing calls
// run already.
func (c *Conn) authorize(a HeadAuthorizer, head []byte) bool {
	srv := c.loop.srv
	if srv.authorizing.Add(1) > int64(srv.opts.MaxAuthorizing) {
		srv.authorizing.Add(-1)
		return false
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), connIDKey{}, c.ID()))
	c.authorizing, c.more().cancelAuth = true, cancel
	copied := append([]byte(nil), head...)
	l := c.loop
	go func() {
		var state any
		var err error = errAuthorizerFailed // what a panic below leaves
		defer func() {
			if v := recover(); v != nil {
				srv.panickedOffLoop(c, "head authorizer", v)
			}
			srv.authorizing.Add(-1)
			c.Run(l.authorizedFn, &authDecision{c, copied, state, err})
		}()
		state, err = a.AuthorizeHead(ctx, copied, c.remote)
	}()
	return true
}

// errAuthorizerFailed is the decision of a HeadAuthorizer that panicked.
var errAuthorizerFailed = &HTTPError{Status: http.StatusInternalServerError, Text: "authorizer failed"}

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
	c.authorizing = false
	c.cold.cancelAuth() // frees the context; the call is over
	c.cold.cancelAuth = nil
	if c.state != stateHandshake {
		if c.state == stateClosed {
			c.releaseLimits() // closed left them for now
		}
		return // gone meanwhile
	}
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
	c.more().authState = d.state
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

// refuseAtAccept answers a connection refused before its request is read
// (over its address's cap), then ends it as a WebSocket close does: FIN
// after the answer, whatever the client sends is read and dropped, and the
// TCP connection ends when the client closes or after the close grace.
// Closing at once would reset the connection if its request were already
// queued in the kernel, and the client might never read the answer. It
// runs in OnOpen.
func (c *Conn) refuseAtAccept(response []byte) {
	c.state = stateClosing // before the write: one that fails closes, for good
	c.discard = true
	c.shutWR = true
	c.loop.wheel.Set(&c.timer, c.loop.srv.clock()+closeGraceSeconds)
	c.sysWrite(response)
	c.halfClose()
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
		l.srv.metrics.handshake(protocolOf(l.hs.route), l.hs.result)
		return 0, gnet.Close // gobwas wrote the error response into l.out
	}
	c.route, c.handler = l.hs.route, l.hs.handler
	l.hs.conn, l.hs.handler, l.hs.route = nil, nil, nil
	c.state = stateOpen
	x := c.more()
	l.srv.metrics.upgraded(c.route.Protocol, l.srv.sinceEpoch()-x.accept)
	// The handshake is over (Accept has taken the authorizer's state):
	// an idle connection keeps no cold part.
	x.accept, x.scanned, x.authState = 0, 0, nil
	c.shedCold()
	c.logOpened()
	c.handler.OnOpen(c)
	return len(head), gnet.None
}

func protocolOf(r *Route) Protocol {
	if r == nil {
		return nil
	}
	return r.Protocol
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
