package kosync

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// Defaults of Options; a zero field means its default.
const (
	// DefaultJWTTTL is the lifetime of the JWTs /api/auth.jwt and /api/ws
	// hand out.
	DefaultJWTTTL = 6 * time.Hour
	// ServerName is what the WebSocket hello calls the server.
	ServerName = "KOsync"
)

// Options configure the KOsync service. Zero values mean defaults.
type Options struct {
	// Store keeps users and documents; required.
	Store Store
	// Secrets derive the JWT key; required.
	Secrets *token.Secrets
	// Revoker revokes JWTs (account deletion, password change) and its set
	// is checked on every JWT; required.
	Revoker *token.Revoker
	// Hub carries announces; required.
	Hub *session.Hub
	// RegistrationClosed refuses POST /users/create (402, code 2005); zero
	// means registration is open.
	RegistrationClosed bool
	// StrictAccept answers the reference's 412 codes 100-102 for a missing
	// or foreign Accept header; zero means lenient (any Accept).
	StrictAccept bool
	// JWTTTL: zero means DefaultJWTTTL.
	JWTTTL time.Duration
	// HistoryLimit: zero means DefaultHistoryLimit.
	HistoryLimit int
	// PublicURL ("https://sync.example.com") fixes the scheme and host of
	// the WebSocket URI /api/ws answers; zero means derive them from the
	// request.
	PublicURL string
	// TrustedProxies may set X-Forwarded-Proto / Forwarded / X-Forwarded-Host;
	// zero means none is trusted.
	TrustedProxies []netip.Prefix
	// Version is the server_version of the hello; zero means "dev".
	Version string
	// Logger: zero means slog.Default().
	Logger *slog.Logger
}

// Service is the KOsync part of a node: HTTP handlers, the WebSocket
// protocol, authentication and announces.
type Service struct {
	opts Options
	log  *slog.Logger
	auth *authenticator
	jwt  *jwtKeys

	userLocks [256]sync.Mutex // see userLock
}

// New checks the options and builds the service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Secrets == nil || o.Revoker == nil || o.Hub == nil {
		return nil, errors.New("kosync: Store, Secrets, Revoker and Hub are required")
	}
	if o.JWTTTL == 0 {
		o.JWTTTL = DefaultJWTTTL
	}
	if o.HistoryLimit == 0 {
		o.HistoryLimit = DefaultHistoryLimit
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Service{opts: o, log: o.Logger}
	s.auth = newAuthenticator(o.Store, o.Secrets)
	s.jwt = newJWTKeys(o.Secrets, o.JWTTTL)
	return s, nil
}

// Collectors returns the service's Prometheus series, for the admin
// listener's registry.
func (s *Service) Collectors() []prometheus.Collector {
	cache := func(result string, read func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "gateway_kosync_key_cache_requests_total",
			Help:        "KOReader key verifications by verified-key cache result (a miss costs an argon2id hash).",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(read()) })
	}
	return []prometheus.Collector{
		cache("hit", func() uint64 { h, _ := s.CacheStats(); return h }),
		cache("miss", func() uint64 { _, m := s.CacheStats(); return m }),
	}
}
