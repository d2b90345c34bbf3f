package kosync

import (
	"cmp"
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/internal/ratelog"
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
	// HashWorkers is how many KOReader key hashes (argon2id) may run at
	// once; zero means DefaultHashWorkers(), one less than the CPUs.
	HashWorkers int
	// HashQueue is how many hashes may wait for a worker; past it a
	// request is answered 503 with Retry-After. Zero means
	// DefaultHashQueue.
	HashQueue int
	// AuthFailuresPerMinute is the sustained rate of failed key
	// verifications (and registrations) one client address may make; past
	// it, and past AuthFailureBurst, requests that would hash get 429 with
	// Retry-After. Zero means DefaultAuthFailuresPerMinute; negative means
	// no limit.
	AuthFailuresPerMinute float64
	// AuthFailureBurst is how many such attempts may come back to back;
	// zero means DefaultAuthFailureBurst.
	AuthFailureBurst int
	// AuthLimiterSlots is the size of the per-address table (8 bytes a
	// cell, fixed); zero means DefaultAuthLimiterSlots.
	AuthLimiterSlots int
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
	// refusals logs failed authentications and throttled requests (info,
	// collapsed).
	refusals *ratelog.Logger
	// httpMetrics counts and times the HTTP requests by route.
	httpMetrics *httpMetrics
	// warns and errs log failures of the store and the broker, collapsed:
	// during an outage every request fails the same way.
	warns, errs *ratelog.Logger

	userLocks [256]sync.Mutex // see userLock

	// subscribers holds each loop's subscribed sockets, for
	// closeSubscribers: *session.Shard → socketSet, a set touched only on
	// that shard's loop.
	subscribers sync.Map
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
	if err := o.applyHashDefaults(); err != nil {
		return nil, err
	}
	s := &Service{opts: o, log: o.Logger, refusals: ratelog.New(o.Logger, slog.LevelInfo, 0), httpMetrics: newHTTPMetrics(),
		warns: ratelog.New(o.Logger, slog.LevelWarn, 0), errs: ratelog.New(o.Logger, slog.LevelError, 0)}
	s.auth = newAuthenticator(o.Store, o.Secrets, o)
	s.jwt = newJWTKeys(o.Secrets, o.JWTTTL)
	o.Hub.OnReconnect(s.closeSubscribers)
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
	return append([]prometheus.Collector{
		cache("hit", func() uint64 { h, _ := s.CacheStats(); return h }),
		cache("miss", func() uint64 { _, m := s.CacheStats(); return m }),
	}, append(s.auth.throttleCollectors(), s.httpMetrics.collectors()...)...)
}

// applyHashDefaults fills in the zero hashing bounds and refuses negative
// ones.
func (o *Options) applyHashDefaults() error {
	if o.HashWorkers < 0 || o.HashQueue < 0 || o.AuthFailureBurst < 0 || o.AuthLimiterSlots < 0 ||
		math.IsNaN(o.AuthFailuresPerMinute) || math.IsInf(o.AuthFailuresPerMinute, 0) {
		return errors.New("kosync: HashWorkers, HashQueue, AuthFailureBurst and AuthLimiterSlots must not be negative, AuthFailuresPerMinute must be a number")
	}
	o.HashWorkers = cmp.Or(o.HashWorkers, DefaultHashWorkers())
	o.HashQueue = cmp.Or(o.HashQueue, DefaultHashQueue)
	if o.AuthFailuresPerMinute == 0 {
		o.AuthFailuresPerMinute = DefaultAuthFailuresPerMinute
	}
	o.AuthFailureBurst = cmp.Or(o.AuthFailureBurst, DefaultAuthFailureBurst)
	o.AuthLimiterSlots = cmp.Or(o.AuthLimiterSlots, DefaultAuthLimiterSlots)
	return nil
}
