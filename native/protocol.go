package native

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// Path is where the native protocol upgrades on the main listener.
const Path = "/api/ws"

// Defaults of Options; a zero field means its default.
const (
	// DefaultPingTimeout: a client that sends no Ping for this long is
	// closed with 3003.
	DefaultPingTimeout = 30 * time.Second
	// DefaultMaxSubscriptions caps one connection's channels (Error 429
	// past it): the session hub's default.
	DefaultMaxSubscriptions = session.DefaultMaxSubscriptions
)

// Limits of the protocol itself (PROTOCOL.md).
const (
	// MaxChannelLen is the longest channel name, in bytes.
	MaxChannelLen = 255
	// MaxClientName is the longest client name setting, in bytes.
	MaxClientName = 64
	// MaxBatchWindow is the largest batch window setting.
	MaxBatchWindow = 1000 * time.Millisecond
	// MaxPacketsPerMessage bounds the packets of one message, and so the
	// work and the replies one message can cause: a message with more is
	// refused whole (close 1008, nothing of it runs). A message of Ping
	// packets would otherwise turn 64 KiB into 65,536 Pong frames.
	MaxPacketsPerMessage = 1024
	// batchFlushBytes flushes a batch early once it holds this much.
	batchFlushBytes = 64 << 10
)

// tooManyPackets is the close reason past MaxPacketsPerMessage.
var tooManyPackets = fmt.Sprintf("too many packets in one message: more than %d", MaxPacketsPerMessage)

// encoding is the native Message frame's slot in the loops' encode caches.
const encoding session.Encoding = 0

// encodingPublication is the native Publication frame's slot.
const encodingPublication session.Encoding = 3

// Options configure the protocol. Zero values mean the documented defaults.
type Options struct {
	// Secrets verify access keys; required.
	Secrets *token.Secrets
	// Revoked is the revoked-key set checked at authentication; required.
	Revoked *token.Revoked
	// PingTimeout: zero means DefaultPingTimeout.
	PingTimeout time.Duration
	// HandshakeTimeout must equal the gateway's (the auth deadline it
	// reports in close reasons); zero means gateway.DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxSubscriptions caps the channels one connection subscribes to at
	// once; a Subscribe past it is answered with Error 429. Zero means
	// DefaultMaxSubscriptions (128).
	MaxSubscriptions int
	// Registerer receives the protocol's metrics; zero means none.
	Registerer prometheus.Registerer
	// Logger: zero means slog.Default().
	Logger *slog.Logger
}

// Protocol is the native protocol; register it with Route().
type Protocol struct {
	opts    Options
	metrics *metrics
	// refusals logs failed authentications (info, collapsed per reason).
	refusals *ratelog.Logger
}

// New returns the protocol.
func New(o Options) *Protocol {
	if o.PingTimeout == 0 {
		o.PingTimeout = DefaultPingTimeout
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = gateway.DefaultHandshakeTimeout
	}
	if o.MaxSubscriptions == 0 {
		o.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Protocol{opts: o, metrics: newMetrics(o.Registerer), refusals: ratelog.New(o.Logger, slog.LevelInfo, 0)}
}

// Route returns the gateway route of the protocol: binary only, on Path.
func (p *Protocol) Route() gateway.Route {
	return gateway.Route{Path: Path, Protocol: p, InternalError: packet.CloseServerError}
}

// Name implements gateway.Protocol.
func (p *Protocol) Name() string { return "native" }

// Accept implements gateway.Protocol: every upgrade is accepted, because
// authentication happens in the first message.
func (p *Protocol) Accept(*gateway.Request) (gateway.Handler, error) {
	return &conn{p: p}, nil
}
