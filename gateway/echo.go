package gateway

import (
	"time"

	"github.com/gobwas/ws"
)

// Echo is a protocol that sends every message back as it came: text as
// text, binary as binary. It exists so that external RFC 6455 conformance
// suites, which need an echo server, can test the gateway's frame layer:
// the same parser, validation (UTF-8 checked incrementally across
// fragments, 1007), size limit (1009), close handshake and limits serve it
// as every other protocol. It is off unless a route is registered
// (gateway serve --echo-path).
//
// Pointing the Autobahn TestSuite at it, from a machine that has it (it
// does not install on the gateway's build machines):
//
//	gateway serve --echo-path /echo --max-message-size 16777216
//
// (16 MiB lets the 9.x performance cases through; with the default 64 KiB
// they end in 1009, which is the limit working, not a failure).
// --max-outbound stays at its default: an echo larger than the budget
// still goes out whole to a client that reads it (outbound.go), so the
// start-up warning that the budget is smaller than the message size limit
// is expected here. Then a fuzzingclient.json such as
//
//	{"outdir": "./reports/servers",
//	 "servers": [{"agent": "wsgateway", "url": "ws://GATEWAY-HOST:8080/echo"}],
//	 "cases": ["*"], "exclude-cases": []}
//
// (nothing needs excluding: 12.x and 13.x test permessage-deflate, which
// the gateway declines, and come out UNIMPLEMENTED), and run
//
//	docker run -it --rm -v "$PWD:/config" -v "$PWD/reports:/reports" \
//	    crossbario/autobahn-testsuite wstest -m fuzzingclient -s /config/fuzzingclient.json
//
// Keep --allowed-origins empty or include the suite's origin, and leave
// --message-rate off: 9.x sends messages far faster than a client should.
// The in-repo equivalent is test/conformance_e2e_test.go.
type Echo struct{}

// EchoIdleTimeout closes an echo connection silent this long (1001).
const EchoIdleTimeout = 2 * time.Minute

// EchoRoute returns the echo protocol's route at path on the main listener:
// text and binary, a browser protocol (its upgrades are checked against
// Limits.AllowedOrigins).
func EchoRoute(path string) Route {
	return Route{Path: path, Protocol: Echo{}, Text: true, Browser: true}
}

// Name implements Protocol.
func (Echo) Name() string { return "echo" }

// Accept implements Protocol: every upgrade is accepted.
func (Echo) Accept(*Request) (Handler, error) { return echoConn{}, nil }

// echoConn holds no state: the connection's own is enough.
type echoConn struct{}

func (echoConn) OnOpen(c *Conn) { c.SetDeadline(time.Now().Add(EchoIdleTimeout)) }

func (echoConn) OnMessage(c *Conn, op ws.OpCode, payload []byte) { c.Send(op, payload) }

// OnDeadline closes a connection silent for EchoIdleTimeout. It sends no
// Pings of its own, so conformance suites see only their own traffic.
func (echoConn) OnDeadline(c *Conn) {
	idleUntil := c.LastActive().Add(EchoIdleTimeout)
	if !time.Now().Before(idleUntil) {
		c.Close(CloseGoingAway, "idle")
		return
	}
	c.SetDeadline(idleUntil)
}

func (echoConn) OnClose(*Conn) {}
