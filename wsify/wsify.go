package wsify

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/session"
)

// Defaults and fixed limits.
const (
	// Path is the WebSocket endpoint, as in wsify.
	Path = "/ws"
	// BroadcastPath is the server-side publish endpoint, as in wsify.
	BroadcastPath = "/broadcast"
	// DefaultAuthorizerTimeout bounds one authorizer call when
	// Options.AuthorizerTimeout is zero.
	DefaultAuthorizerTimeout = 5 * time.Second
	// BacklogPerChannel sets the default backlog: when Options.MaxBacklog
	// is zero, a connection may have BacklogPerChannel × MaxChannels
	// messages waiting for (or in) an authorizer call, 256 with the
	// default 128 channels, so a client that joins as many channels as
	// it may at once on connect fits, with as much again of headroom for
	// its broadcasts; one more message closes the connection with 1008.
	BacklogPerChannel = 2
	// DefaultMaxBacklog is the backlog with the default channel cap.
	DefaultMaxBacklog = BacklogPerChannel * DefaultMaxChannels
	// DefaultMaxChannels is how many channels one connection may have
	// joined at once when Options.MaxChannels is zero: the session hub's
	// default cap.
	DefaultMaxChannels = session.DefaultMaxSubscriptions
	// MaxChannelName is the longest channel name a join may hold, in
	// bytes (after trimming); a longer one closes the connection with
	// 1008. Upstream has no cap; without one, 128 joins of 64 KiB names
	// would pin 8 MiB per connection in the hub.
	MaxChannelName = 1024
	// MaxBroadcastBody caps the body of POST /broadcast; a longer one is
	// answered 413 with an empty body.
	MaxBroadcastBody = 1 << 20
	// ChannelPrefix starts the hub channel of every wsify channel: the
	// wsify channel "hello" is the hub channel "#wsify:hello". Hub channels
	// starting with '#' are reserved for protocols, so no other protocol's
	// channel can be reached from wsify.
	ChannelPrefix = "#wsify:"

	// pingEvery: an open socket is pinged this often.
	pingEvery = 30 * time.Second
	// idleLimit: a socket silent this long (not even a Pong) is closed
	// with 1001.
	idleLimit = 60 * time.Second
	// encoding is wsify's slot in the loops' encode caches (native 0,
	// kosync 1).
	encoding session.Encoding = 2
	// maxAuthorizerConns bounds the connections to the authorizer of the
	// default HTTP client; calls past it wait for one (within their
	// timeout).
	maxAuthorizerConns = 256
	// maxAuthorizerIdle is how many idle connections to the authorizer
	// the default client keeps.
	maxAuthorizerIdle = 64
)

// Options configures the wsify protocol. Every field's zero value is usable
// except Hub.
type Options struct {
	// Hub carries publishes; required.
	Hub *session.Hub
	// AuthorizerURL is the authorizer webhook (wsify's -authorizer-url);
	// zero means every connection and every message is allowed, and no
	// call is made at all.
	AuthorizerURL string
	// AuthorizerTimeout bounds each authorizer call, the connect call
	// included; a timeout counts as "authorizer down". Zero means
	// DefaultAuthorizerTimeout (5 s). Keep it below the gateway's
	// HandshakeTimeout, or a slow connect call ends with the handshake's
	// 408 instead of 403.
	AuthorizerTimeout time.Duration
	// BroadcastingKey is the key POST /broadcast?key= must give (wsify's
	// -broadcasting-key); zero means no key: the endpoint is open (see
	// WarnIfOpen).
	BroadcastingKey string
	// MaxBacklog is the most messages of one connection that may be
	// unprocessed at once with an authorizer configured (the one being
	// authorized included); one more closes the connection with 1008.
	// Zero means BacklogPerChannel × MaxChannels (DefaultMaxBacklog, 256,
	// with the default MaxChannels): room to join every channel at once
	// on connect, and headroom.
	MaxBacklog int
	// MaxChannels caps the channels one connection has joined at once; a
	// join of one more closes the connection with 1008 (upstream has no
	// cap and no error message to refuse with). Zero means
	// DefaultMaxChannels (128).
	MaxChannels int
	// DisableConnIdentity leaves out the "conn" key the gateway adds to
	// every authorizer payload (connection id, and the connect query on
	// message calls); zero (false) means it is added.
	DisableConnIdentity bool
	// HTTPClient makes the authorizer calls; zero means a client with
	// AuthorizerTimeout as its timeout, no redirects followed, and a
	// bounded pool (256 connections, 64 idle). A client given here should
	// not follow redirects either: a redirect answer is a refusal.
	HTTPClient *http.Client
	// Logger receives warnings and debug lines; zero means slog.Default().
	Logger *slog.Logger
}

// Protocol is wsify v3 on the gateway. It is goroutine-safe: every loop
// calls Accept, and AuthorizeHead runs on goroutines of its own.
type Protocol struct {
	hub        *session.Hub
	authURL    string
	timeout    time.Duration
	key        string
	maxBacklog int
	maxJoins   int
	identity   bool
	client     *http.Client
	log        *slog.Logger
	metrics    *metrics
	// refusals logs denied calls and bad broadcasting keys (info,
	// collapsed per reason); warns logs failures of the authorizer and
	// the broker (warn, collapsed per kind).
	refusals, warns *ratelog.Logger

	// route is what Route hands the gateway: the Protocol itself when an
	// authorizer is configured (it then is a gateway.HeadAuthorizer),
	// otherwise a view without AuthorizeHead, so the gateway upgrades at
	// once without a goroutine per connect.
	route gateway.Protocol
	// encodeFn is encode stored once: EncodeCache.Get takes it without
	// allocating.
	encodeFn func([]byte, *session.Message) []byte
}

// New checks o and returns the protocol.
func New(o Options) (*Protocol, error) {
	if o.Hub == nil {
		return nil, errors.New("wsify: Options.Hub is required")
	}
	if o.AuthorizerTimeout < 0 {
		return nil, errors.New("wsify: negative authorizer timeout")
	}
	if o.MaxBacklog < 0 {
		return nil, errors.New("wsify: negative MaxBacklog")
	}
	if o.MaxChannels < 0 {
		return nil, errors.New("wsify: negative MaxChannels")
	}
	if o.AuthorizerURL != "" {
		u, err := url.Parse(o.AuthorizerURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("wsify: authorizer URL %q: want an absolute http(s) URL", o.AuthorizerURL)
		}
	}
	if o.AuthorizerTimeout == 0 {
		o.AuthorizerTimeout = DefaultAuthorizerTimeout
	}
	if o.MaxChannels == 0 {
		o.MaxChannels = DefaultMaxChannels
	}
	if o.MaxBacklog == 0 {
		o.MaxBacklog = BacklogPerChannel * o.MaxChannels
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxConnsPerHost = maxAuthorizerConns
		t.MaxIdleConns = maxAuthorizerIdle
		t.MaxIdleConnsPerHost = maxAuthorizerIdle
		t.ResponseHeaderTimeout = o.AuthorizerTimeout
		o.HTTPClient = &http.Client{
			Transport: t,
			Timeout:   o.AuthorizerTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	p := &Protocol{
		hub:        o.Hub,
		authURL:    o.AuthorizerURL,
		timeout:    o.AuthorizerTimeout,
		key:        o.BroadcastingKey,
		maxBacklog: o.MaxBacklog,
		maxJoins:   o.MaxChannels,
		identity:   !o.DisableConnIdentity,
		client:     o.HTTPClient,
		log:        o.Logger.With("protocol", "wsify"),
		metrics:    newMetrics(),
		refusals:   ratelog.New(o.Logger, slog.LevelInfo, 0),
		warns:      ratelog.New(o.Logger.With("protocol", "wsify"), slog.LevelWarn, time.Second),
	}
	p.encodeFn = p.encode
	if p.authURL != "" {
		p.route = p
	} else {
		p.route = openProtocol{p}
	}
	return p, nil
}

// Name implements gateway.Protocol.
func (p *Protocol) Name() string { return "wsify" }

// Route returns the WebSocket route of wsify (GET /ws, text and binary
// messages) on the named listener. A lone offered subprotocol is echoed,
// as wsify does (see doc.go).
func (p *Protocol) Route(listener string) gateway.Route {
	return gateway.Route{Listener: listener, Path: Path, Protocol: p.route, Text: true, EchoLoneSubprotocol: true}
}

// Accept implements gateway.Protocol. It never refuses: the connect
// authorizer has decided already (AuthorizeHead).
func (p *Protocol) Accept(r *gateway.Request) (gateway.Handler, error) {
	id, _ := r.Authorized.(*identity)
	if id == nil {
		id = &identity{id: newConnID()}
	}
	return &conn{p: p, id: id}, nil
}

// openProtocol is the Protocol without an authorizer: not a
// gateway.HeadAuthorizer, so upgrades need no goroutine.
type openProtocol struct{ p *Protocol }

func (o openProtocol) Name() string { return o.p.Name() }

func (o openProtocol) Accept(r *gateway.Request) (gateway.Handler, error) { return o.p.Accept(r) }

// Collectors returns wsify's metrics for a registry.
func (p *Protocol) Collectors() []prometheus.Collector { return p.metrics.collectors() }

// WarnIfOpen logs a warning, and reports true, when POST /broadcast needs
// no key and addr (the listener's bound address) is not loopback: anyone
// who reaches the port may publish. Call it once the listener is bound.
func (p *Protocol) WarnIfOpen(addr net.Addr) bool {
	if p.key != "" {
		return false
	}
	if a, ok := addr.(*net.TCPAddr); ok && a.IP.IsLoopback() {
		return false
	}
	p.log.Warn("wsify: POST /broadcast needs no key and the listener is not loopback: anyone who reaches it may publish; set the broadcasting key",
		"listen", fmt.Sprint(addr))
	return true
}

// channelTooLong is the close reason of a join past MaxChannelName.
var channelTooLong = fmt.Sprintf("channel name longer than %d bytes", MaxChannelName)

// tooManyChannels is the close reason of a join past MaxChannels.
func (p *Protocol) tooManyChannels() string {
	return fmt.Sprintf("too many channels joined: more than %d", p.maxJoins)
}

// hubChannel returns the hub channel of a wsify channel.
func hubChannel(name string) string { return ChannelPrefix + name }

// newConnID returns an opaque connection id: "c-" and 16 hex digits.
func newConnID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "c-" + hex.EncodeToString(b[:])
}
