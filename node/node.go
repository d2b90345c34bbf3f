// Package node wires a whole gateway node: secrets, the revocation store,
// the session hub and its broker, the gnet server with its protocols, and
// the admin listener. cmd/gateway parses flags into a Config; tests start
// nodes in-process with it on port 0.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/hypothesis"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/internal/redismode"
	"github.com/wsgateway/gateway/kosync"
	"github.com/wsgateway/gateway/native"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
	"github.com/wsgateway/gateway/wsify"
)

// OnlyWsify is Config.Only for a node that speaks only wsify.
const OnlyWsify = "wsify"

// wsifyListener names wsify's own listener.
const wsifyListener = "wsify"

// DefaultDataDir holds the generated secret and, without Redis, the
// revocation log.
const DefaultDataDir = "./data"

// Config is a node's configuration; every zero value means the default of
// the part it configures (see each field).
type Config struct {
	// Listen: zero means gateway.DefaultListen (":8080").
	Listen string
	// AdminListen: zero means gateway.DefaultAdminListen ("127.0.0.1:8081").
	AdminListen string
	// DataDir: zero means DefaultDataDir.
	DataDir string
	// NoDataDir makes the node write nothing to disk (the drop-in mode of
	// `gateway wsify` without -data-dir): without Secret or SecretFile a
	// random secret lives in memory for the process's life; without Redis
	// revocations live in memory; with Redis no snapshot of the revoked
	// set is kept. It suits OnlyWsify, which has no keys and no KOsync
	// store. Zero (false) means DataDir is used.
	NoDataDir bool
	// NoAdmin runs the node without the admin listener (the drop-in mode
	// of `gateway wsify` without -admin-listen); zero (false) means it
	// listens on AdminListen.
	NoAdmin bool
	// RedisURL ("redis://[user[:password]@]host:port[/db]"): zero means
	// no Redis: the node runs alone, revocations persist in DataDir.
	RedisURL string
	// RedisSentinel runs every Redis use on the master that these
	// Sentinels name, and follows it when a replica is promoted:
	// "master-name@host:port[,host:port…]", or the URL form
	// "redis://[user[:password]@]host:port[,host:port…]/master-name[/db]"
	// whose user and password are the master's (ParseRedisSentinel).
	// Exclusive with RedisURL. Zero means no Sentinel (RedisURL decides).
	RedisSentinel string
	// RedisCluster runs every Redis use on a Redis Cluster:
	// "host:port[,host:port…]" (seed nodes), or the URL form
	// "redis://[user[:password]@]host:port[,host:port…]"
	// (ParseRedisCluster). Keys that one operation touches together share
	// a hash tag, publishes travel by sharded pub/sub (SPUBLISH/SSUBSCRIBE),
	// and the client follows slot moves and failovers. Exclusive with
	// RedisURL and RedisSentinel. Zero means no cluster.
	RedisCluster string
	// RedisUsername is the ACL user the node authenticates as to the Redis
	// servers that hold its data (the --redis server, the Sentinels'
	// master and its replicas, every cluster node). Zero means the URL's
	// user, else the default user. Given with a different URL user, it is
	// an error.
	RedisUsername string
	// RedisPassword (GATEWAY_REDIS_PASSWORD) is RedisUsername's password
	// (or requirepass, the default user's); one trailing newline is not
	// part of it, as in RedisPasswordFile. Zero means RedisPasswordFile,
	// else the URL's password, else no AUTH. Giving it in two of these
	// places is an error, so no password silently wins over another.
	RedisPassword string
	// RedisPasswordFile holds RedisPassword (one trailing newline is not
	// part of it): see RedisPassword. Read at Start, and again for every
	// new connection, so a rotated password needs no restart.
	RedisPasswordFile string
	// RedisSentinelUsername, RedisSentinelPassword
	// (GATEWAY_REDIS_SENTINEL_PASSWORD) and RedisSentinelPasswordFile are
	// the Sentinels' own credentials (their requirepass or ACL user),
	// apart from the master's; only with RedisSentinel. Zero means no AUTH
	// to the Sentinels.
	RedisSentinelUsername     string
	RedisSentinelPassword     string
	RedisSentinelPasswordFile string
	// RedisPrefix starts every Redis key and channel: zero means
	// session.DefaultRedisPrefix ("gateway:").
	RedisPrefix string
	// Secret is the content of GATEWAY_SECRET (secrets separated by
	// newlines or commas, the first signs). Zero means SecretFile, then a
	// secret generated once in DataDir.
	Secret string
	// SecretFile: see Secret.
	SecretFile string
	// PingTimeout: zero means native.DefaultPingTimeout (30 s).
	PingTimeout time.Duration
	// HandshakeTimeout: zero means gateway.DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration
	// MaxMessageSize: zero means gateway.DefaultMaxMessageSize (64 KiB).
	MaxMessageSize int
	// MaxOutbound: zero means gateway.DefaultMaxOutbound (1 MiB).
	MaxOutbound int
	// MaxSubscriptions caps the channels one native or wsify connection
	// holds at once (native: Error 429 past it; wsify: close 1008);
	// Wsify.MaxChannels, when set, overrides it for wsify. Zero means
	// session.DefaultMaxSubscriptions (128). Hypothesis filters have their
	// own cap, Hypothesis.MaxFilterRows; KOsync holds one channel.
	MaxSubscriptions int
	// History says which channels keep history for SubscribeFrom
	// (PROTOCOL.md §5.1): Size zero (the default) means none; TTL zero
	// means history.DefaultTTL (5m); Channels empty means every channel but
	// the reserved "#..." ones. A node alone keeps it in memory; with Redis
	// it lives in Redis, shared by every node (history.RedisStore).
	History history.Options
	// SocketSendBuffer: zero means gateway.DefaultSocketSendBuffer
	// (256 KiB); negative leaves the kernel's autotuning on.
	SocketSendBuffer int
	// EventLoops: zero means one per CPU.
	EventLoops int
	// ReusePort lets several processes share Listen (SO_REUSEPORT).
	ReusePort bool
	// DrainWindow: zero means gateway.DefaultDrainWindow (10 s).
	DrainWindow time.Duration
	// ShutdownTimeout: zero means gateway.DefaultShutdownTimeout (30 s).
	ShutdownTimeout time.Duration
	// Limits are the overload limits (message rate, connection caps,
	// allowed origins); zero values mean no limit (see gateway.Limits).
	Limits gateway.Limits
	// EchoPath serves the echo protocol there, for conformance suites;
	// zero means no echo endpoint.
	EchoPath string
	// AdminToken protects the admin API (Bearer). Zero means none, which
	// is refused unless AdminListen is a loopback address.
	AdminToken string
	// Kosync configures the KOReader sync server; its Store, Secrets,
	// Revoker, Hub and Logger are filled in by Start.
	Kosync kosync.Options
	// Hypothesis configures the Hypothesis Real Time API on /ws; its
	// Secrets, Revoked, VerifyJWT and Logger are filled in by Start.
	Hypothesis hypothesis.Options
	// WsifyListen is wsify's own listener; zero means no wsify listener
	// (the serve command's flag defaults to ":3000").
	WsifyListen string
	// Wsify configures wsify; its Hub and Logger are filled in by Start.
	Wsify wsify.Options
	// WsifyRedisPrefix prefixes wsify's Redis channels; zero means the raw
	// channel names, as wsify itself uses.
	WsifyRedisPrefix string
	// Only, when OnlyWsify, runs just wsify, on Listen (the drop-in mode of
	// `gateway wsify`); zero means every protocol.
	Only string
	// Logger: zero means slog.Default().
	Logger *slog.Logger
}

// Node is a running gateway node.
type Node struct {
	Server  *gateway.Server
	Kosync  *kosync.Service
	Admin   *gateway.Admin
	Hub     *session.Hub
	Secrets *token.Secrets
	Revoker *token.Revoker

	cfg Config
	log *slog.Logger
	// revLog writes the revocations the node applies and the sessions
	// they close (info, collapsed per kind: a reload replays them all).
	revLog *ratelog.Logger
	redis  redis.UniversalClient
	store  token.Store
	docs   kosync.Store
	wsify  *wsify.Protocol
	cancel context.CancelFunc
	sweep  chan struct{}
	done   chan struct{}
	// sweeping: the sweep goroutine runs and stopParts must end it.
	sweeping bool
	redisUp  atomic.Bool
	broker   session.Broker
	// dataLost counts the times Redis came back without its data;
	// lastDataLost is when the last one was noticed (see redisDataLost).
	dataLost     atomic.Uint64
	lastDataLost atomic.Pointer[time.Time]

	// controlLive: the control channel's subscription is confirmed
	// (control.go).
	controlLive atomic.Bool
}

// brokerCollectors exports the Redis broker's counters.
func brokerCollectors(b *session.RedisBroker) []prometheus.Collector {
	counter := func(name, help string, labels prometheus.Labels, read func(session.BrokerStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(read(b.Stats())) })
	}
	return []prometheus.Collector{
		counter("gateway_redis_pubsub_reconnects_total", "Reconnects of the node's Redis pub/sub connection (publishes from other nodes may be lost at each).", nil,
			func(s session.BrokerStats) uint64 { return s.Reconnects }),
		counter("gateway_redis_errors_total", "Redis operations that failed, by operation.", prometheus.Labels{"op": "publish"},
			func(s session.BrokerStats) uint64 { return s.PublishErrors }),
		counter("gateway_redis_published_total", "Publishes handed to Redis for the other nodes.", nil,
			func(s session.BrokerStats) uint64 { return s.Published }),
		counter("gateway_redis_received_total", "Publishes received from other nodes or outside publishers through Redis.", nil,
			func(s session.BrokerStats) uint64 { return s.Received }),
	}
}

// redisCheckEvery is how often a node with Redis checks it answers.
const redisCheckEvery = time.Second

// watchRedis pings Redis until ctx ends, for /readyz and gateway_redis_up.
func (n *Node) watchRedis(ctx context.Context) {
	t := time.NewTicker(redisCheckEvery)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, redisCheckEvery/2)
		up := n.redis.Ping(pctx).Err() == nil
		cancel()
		if was := n.redisUp.Swap(up); was != up {
			n.log.Warn("redis reachability changed", "up", up)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// down lists the optional dependencies that are down or degraded, for
// /readyz: "redis" while Redis does not answer, "redis_data_lost" for
// DataLossDegradedFor after Redis came back without its data.
func (n *Node) down() []string {
	var down []string
	if n.redis != nil && !n.redisUp.Load() {
		down = append(down, "redis")
	}
	if n.recentDataLoss() {
		down = append(down, "redis_data_lost")
	}
	return down
}

// DataLossDegradedFor is how long /readyz says "degraded" (down:
// "redis_data_lost") after a node noticed that Redis came back without its
// data. The node serves on (the loss is Redis's, and the revocations it
// knew are written back); gateway_redis_data_lost_total keeps the count.
const DataLossDegradedFor = 15 * time.Minute

func (n *Node) recentDataLoss() bool {
	at := n.lastDataLost.Load()
	return at != nil && time.Since(*at) < DataLossDegradedFor
}

// redisDataLost is the Revoker's OnDataLost: Redis lost its data (a restart
// without persistence, a flush). The Revoker has written back the
// revocations; the KOReader accounts and progress are gone for good.
func (n *Node) redisDataLost() {
	now := time.Now() // keeps its monotonic reading for recentDataLoss
	n.lastDataLost.Store(&now)
	n.dataLost.Add(1)
	n.log.Error("Redis came back without its data (the node's marker key is gone): KOReader accounts and reading "+
		"progress stored there are lost, revocations known to this node were written back. "+
		"Run Redis with persistence (--appendonly yes)", "redis", redisAddr(n.redis))
}

// checkAdminBind refuses an admin listener reachable from other hosts
// without a token: it can publish and revoke. A token copied from the
// deployment examples (token.IsPlaceholder) is no token.
func checkAdminBind(addr, adminToken string) error {
	if token.IsPlaceholder(adminToken) {
		return errors.New("--admin-token (GATEWAY_ADMIN_TOKEN) is a placeholder from the deployment examples, not a secret; generate one with: head -c 32 /dev/urandom | base64")
	}
	if adminToken != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(cmp.Or(addr, gateway.DefaultAdminListen))
	if err != nil {
		return fmt.Errorf("--admin-listen: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--admin-listen %s is not a loopback address: set --admin-token (GATEWAY_ADMIN_TOKEN)", addr)
}

// Start builds and starts a node. On error nothing is left running.
func Start(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.NoDataDir && cfg.Only != OnlyWsify {
		return nil, errors.New("node: NoDataDir needs OnlyWsify (KOsync keeps its store in the data dir)")
	}
	if !cfg.NoAdmin {
		if err := checkAdminBind(cfg.AdminListen, cfg.AdminToken); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: cfg.Logger, revLog: ratelog.New(cfg.Logger, slog.LevelInfo, 0), cancel: cancel, sweep: make(chan struct{}, 1), done: make(chan struct{})}
	if err := n.start(ctx, cfg); err != nil {
		n.stopParts() // what started before the failure
		return nil, err
	}
	return n, nil
}

// start builds and starts the parts in order; Start undoes them on error.
func (n *Node) start(ctx context.Context, cfg Config) error {
	secrets, source, err := loadSecrets(cfg)
	if err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	n.Secrets = secrets
	n.log.Info("secret loaded", "source", source, "secrets", secrets.Len())

	broker, err := n.openStores(cfg)
	if err != nil {
		return err
	}
	n.broker = broker
	n.Hub = session.NewHub(broker)
	if err := n.Hub.SetHistory(cfg.History); err != nil {
		return fmt.Errorf("--history-size: %w", err)
	}
	if cfg.History.Size > 0 {
		go n.sweepHistory(ctx)
	}
	if n.redis != nil {
		n.redisUp.Store(true) // until the first check says otherwise
		go n.watchRedis(ctx)
	}
	n.Revoker = token.NewRevoker(n.store, token.NewRevoked(), n.revoked, n.log)
	if n.redis != nil && !cfg.NoDataDir {
		n.Revoker.KeepSnapshot(filepath.Join(cfg.DataDir, token.SnapshotName))
		n.Revoker.OnDataLost(n.redisDataLost)
	}
	// The KOsync service exists before the revoker calls back into it.
	if cfg.Only != OnlyWsify {
		if err := n.newKosync(cfg, secrets); err != nil {
			return err
		}
	}
	if err := n.Revoker.Start(ctx); err != nil {
		return fmt.Errorf("revocations: %w", err)
	}
	n.sweeping = true
	go n.sweepRevoked()

	n.Server = gateway.New(gateway.Options{
		Listen: cfg.Listen, EventLoops: cfg.EventLoops, ReusePort: cfg.ReusePort,
		HandshakeTimeout: cfg.HandshakeTimeout, MaxMessageSize: cfg.MaxMessageSize,
		MaxOutbound: cfg.MaxOutbound, SocketSendBuffer: cfg.SocketSendBuffer, DrainWindow: cfg.DrainWindow, ShutdownTimeout: cfg.ShutdownTimeout, Logger: n.log,
	}, n.Hub)
	ao := gateway.AdminOptions{
		Listen: cfg.AdminListen, Secrets: secrets, Revoker: n.Revoker, Logger: n.log,
		Token: cfg.AdminToken, Dependencies: n.down, Cluster: n.clusterStatus,
	}
	if n.redis != nil {
		ao.Forward = n.forwardDisconnect
		go n.watchControl(ctx)
	}
	if !cfg.NoAdmin {
		n.Admin = gateway.NewAdmin(n.Server, ao)
	}
	if err := cfg.Limits.Validate(); err != nil {
		return err
	}
	if err := validateCaps(cfg); err != nil {
		return err
	}
	n.Server.SetLimits(cfg.Limits)
	if err := n.addProtocols(cfg, secrets); err != nil {
		return err
	}
	if err := n.Server.Start(); err != nil {
		return n.listenError(err)
	}
	if n.wsify != nil && n.WsifyAddr() != nil {
		n.wsify.WarnIfOpen(n.WsifyAddr())
	}
	if n.Admin == nil {
		return nil
	}
	if err := n.Admin.Start(); err != nil {
		_ = n.Server.Shutdown(context.Background())
		return fmt.Errorf("admin listener (%s %s): %w", n.flagName("--admin-listen"), cmp.Or(cfg.AdminListen, gateway.DefaultAdminListen), err)
	}
	return nil
}

// addProtocols registers every protocol's routes, HTTP endpoints and
// metrics (only wsify's in the OnlyWsify mode).
func (n *Node) addProtocols(cfg Config, secrets *token.Secrets) error {
	reg := n.Server.Registry()
	wo := cfg.Wsify
	wo.Hub, wo.Logger = n.Hub, n.log
	if wo.MaxChannels == 0 {
		wo.MaxChannels = cfg.MaxSubscriptions
	}
	w, err := wsify.New(wo)
	if err != nil {
		return err
	}
	reg.MustRegister(w.Collectors()...)
	if rb, ok := n.broker.(*session.RedisBroker); ok {
		reg.MustRegister(brokerCollectors(rb)...)
	}
	if n.redis != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_redis_up", Help: "1 while the node's Redis answers PING (checked every second), else 0.",
		}, func() float64 {
			if n.redisUp.Load() {
				return 1
			}
			return 0
		}), prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gateway_redis_data_lost_total",
			Help: "Times the node found Redis back without its data (its marker key gone): KOReader data lost, revocations written back.",
		}, func() float64 { return float64(n.dataLost.Load()) }))
	}
	n.wsify = w
	if cfg.Only == OnlyWsify {
		n.Server.Handle(browser(w.Route(gateway.MainListener)))
		w.RegisterHTTP(n.Server, gateway.MainListener)
		return nil
	}
	if cfg.WsifyListen != "" {
		n.Server.AddListener(wsifyListener, cfg.WsifyListen)
		n.Server.Handle(browser(w.Route(wsifyListener)))
		w.RegisterHTTP(n.Server, wsifyListener)
	}

	nat := native.New(native.Options{
		Secrets: secrets, Revoked: n.Revoker.Set(), PingTimeout: cfg.PingTimeout,
		HandshakeTimeout: cfg.HandshakeTimeout, MaxSubscriptions: cfg.MaxSubscriptions,
		Registerer: reg, Logger: n.log,
	})
	n.Server.Handle(nat.Route())

	n.Kosync.RegisterHTTP(n.Server)
	reg.MustRegister(n.Kosync.Collectors()...)
	n.Server.Handle(browser(n.Kosync.Route()))
	if cfg.EchoPath != "" {
		n.Server.Handle(gateway.EchoRoute(cfg.EchoPath))
	}

	ho := cfg.Hypothesis
	ho.Secrets, ho.Revoked, ho.VerifyJWT, ho.Logger = secrets, n.Revoker.Set(), n.Kosync.VerifyJWT, n.log
	h, err := hypothesis.New(ho)
	if err != nil {
		return err
	}
	n.Server.Handle(browser(h.Route()))
	h.RegisterHTTP(n.Server)
	if n.Admin != nil {
		n.Admin.Handle("POST", "/api/hypothesis/events", h.EventHandler(n.Hub))
	}
	reg.MustRegister(h.Collectors()...)
	return nil
}

// listenError names the listener, and the flag that sets it, in a failure
// to bind. gateway.Server reports only "listen tcp :3000: bind: address
// already in use", and a node has up to three ports: two nodes started on
// one machine with the defaults collide on wsify's :3000 although their
// --listen differ, and the bare message sends the operator to the wrong
// flag. A port in use also gets the way out.
func (n *Node) listenError(err error) error {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "listen" || oe.Addr == nil {
		return err
	}
	type port struct{ what, flag, addr string }
	ports := []port{{"main listener", n.flagName("--listen"), cmp.Or(n.cfg.Listen, gateway.DefaultListen)}}
	if n.cfg.Only == OnlyWsify {
		ports[0].what = "wsify listener"
	} else if n.cfg.WsifyListen != "" {
		ports = append(ports, port{"wsify listener", "--wsify-listen", n.cfg.WsifyListen})
	}
	for _, p := range ports {
		if !sameTCPAddr(p.addr, oe.Addr) {
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			hint := "choose another port with " + p.flag
			if p.flag == "--wsify-listen" {
				hint += ` (each node on one machine needs its own; --wsify-listen "" runs no wsify)`
			}
			return fmt.Errorf("%s (%s %s): %w: another process listens there; %s", p.what, p.flag, p.addr, err, hint)
		}
		return fmt.Errorf("%s (%s %s): %w", p.what, p.flag, p.addr, err)
	}
	return err
}

// flagName is a serve flag's name as the running command spells it:
// `gateway wsify` has wsify v3's own single-dash flags.
func (n *Node) flagName(serveFlag string) string {
	if n.cfg.Only != OnlyWsify {
		return serveFlag
	}
	switch serveFlag {
	case "--listen":
		return "-listen-addr"
	case "--admin-listen":
		return "-admin-listen"
	}
	return serveFlag
}

// sameTCPAddr reports whether a configured address ("host:port", host
// possibly empty or a name) is the one a listen error names.
func sameTCPAddr(configured string, got net.Addr) bool {
	want, err := net.ResolveTCPAddr("tcp", configured)
	if err != nil {
		return false
	}
	g, ok := got.(*net.TCPAddr)
	return ok && g.Port == want.Port && (g.IP.Equal(want.IP) || len(g.IP) == 0 && len(want.IP) == 0)
}

// validateCaps refuses negative subscription caps: zero is the default,
// and there is no "no cap".
func validateCaps(cfg Config) error {
	for _, c := range []struct {
		name string
		v    int
	}{
		{"--max-subscriptions", cfg.MaxSubscriptions},
		{"wsify channels cap", cfg.Wsify.MaxChannels},
		{"--hypothesis-max-filter-rows", cfg.Hypothesis.MaxFilterRows},
	} {
		if c.v < 0 {
			return fmt.Errorf("%s: %d is negative (0 means the default)", c.name, c.v)
		}
	}
	return nil
}

// browser marks a route whose clients are web pages, so that
// --allowed-origins applies to it (the native protocol's clients are apps).
func browser(r gateway.Route) gateway.Route {
	r.Browser = true
	return r
}

// WsifyAddr is the address of wsify's listener, or nil without one.
func (n *Node) WsifyAddr() net.Addr {
	if n.cfg.Only == OnlyWsify {
		return n.Addr()
	}
	return n.Server.ListenerAddr(wsifyListener)
}

// newKosync opens the KOsync store (bbolt in the data dir, or Redis) and
// builds the service.
func (n *Node) newKosync(cfg Config, secrets *token.Secrets) error {
	if n.redis != nil {
		n.docs = kosync.NewRedisStore(n.redis, cmp.Or(cfg.RedisPrefix, session.DefaultRedisPrefix))
	} else {
		bolt, err := kosync.OpenBolt(filepath.Join(cfg.DataDir, kosyncDBName))
		if err != nil {
			return fmt.Errorf("kosync store: %w", err)
		}
		n.docs = bolt
	}
	o := cfg.Kosync
	o.Store, o.Secrets, o.Revoker, o.Hub, o.Logger = n.docs, secrets, n.Revoker, n.Hub, n.log
	o.Version = cmp.Or(o.Version, gateway.Version)
	svc, err := kosync.New(o)
	if err != nil {
		return err
	}
	n.Kosync = svc
	return nil
}

// kosyncDBName is the KOsync store's file in the data dir.
const kosyncDBName = "kosync.db"

// openStores picks where revocations live and how publishes cross nodes:
// Redis when configured, else the data dir and a standalone broker.
func (n *Node) openStores(cfg Config) (session.Broker, error) {
	if err := cfg.CheckRedis(); err != nil {
		return nil, err
	}
	if !cfg.UsesRedis() && cfg.NoDataDir {
		n.store = &memoryStore{}
		return &session.Standalone{}, nil
	}
	if !cfg.UsesRedis() {
		fs, err := token.OpenFileStore(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("revocation log: %w", err)
		}
		n.store = fs
		return &session.Standalone{}, nil
	}
	ro, creds, err := cfg.redisClientOptions()
	if err != nil {
		return nil, err
	}
	routeRedisLogs(n.log)
	if err := checkRedisAuth(ro, cfg.redisFlag(), creds); err != nil {
		return nil, err
	}
	n.redis = ro.client(false)
	prefix := cmp.Or(cfg.RedisPrefix, session.DefaultRedisPrefix)
	n.store = token.NewRedisStore(n.redis, prefix)
	name := wsify.RedisChannelName(cfg.WsifyRedisPrefix, prefix)
	b := session.NewRedisBroker(session.RedisBrokerOptions{
		Client: n.redis, Prefix: prefix, Logger: n.log,
		ChannelName: name,
		Raw:         wsify.RedisChannelRaw(cfg.WsifyRedisPrefix, prefix),
	})
	if cfg.History.Size > 0 {
		o := cfg.History
		o.RedisChannel = name // a cluster keeps a channel's history in its pub/sub channel's slot
		b.EnableHistory(history.NewRedisStore(n.redis, prefix, o))
	}
	return b, nil
}

// revoked is the Revoker's callback, from any goroutine: it asks for a
// sweep. Bursts (a reload calls it once per record) coalesce into one pass.
func (n *Node) revoked(rv token.Revocation) {
	if n.revLog.Enabled() {
		attrs := []slog.Attr{slog.String("kind", rv.Kind.String())}
		if rv.Kind == token.KindID {
			attrs = append(attrs, slog.String("id", rv.ID.String()))
		} else {
			attrs = append(attrs, slog.String("subject", ratelog.Truncate(rv.Subject, ratelog.MaxSubjectLen)))
		}
		n.revLog.Log("applied\x00"+rv.Kind.String(), "revocation applied", attrs...)
	}
	if n.Kosync != nil {
		n.Kosync.Revoked(rv) // evicts the user's verified keys
	}
	select {
	case n.sweep <- struct{}{}:
	default:
	}
}

// sweepRevoked closes, on each loop, every session whose key the revoked
// set now covers: 3004 for the native protocol.
func (n *Node) sweepRevoked() {
	defer close(n.done)
	set := n.Revoker.Set()
	for range n.sweep {
		if !set.Known() {
			// An announcement before the first load: no session holds a
			// key yet, and Check would hit the keyless ones (wsify).
			continue
		}
		n.Hub.EachShard(func(sh *session.Shard) {
			sh.Each(func(s *session.Session) {
				if set.Check(s.Claims) {
					n.logRevokedSession(s.Claims)
					s.Sink.Close(packet.CloseRevoked, "access key revoked")
				}
			})
		})
	}
}

// historySweepEvery is how often a node forgets the channels whose
// history expired (session.Hub.SweepHistory).
const historySweepEvery = time.Minute

func (n *Node) sweepHistory(ctx context.Context) {
	t := time.NewTicker(historySweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.Hub.SweepHistory()
		}
	}
}

// logRevokedSession writes a session closed by the sweep (info,
// collapsed); its connection's debug line follows with code 3004.
func (n *Node) logRevokedSession(c token.Claims) {
	if !n.revLog.Enabled() {
		return
	}
	attrs := []slog.Attr{slog.String("subject", ratelog.Truncate(c.Subject, ratelog.MaxSubjectLen))}
	if c.ID != (token.KeyID{}) {
		attrs = append(attrs, slog.String("id", c.ID.String()))
	}
	n.revLog.Log("closed", "session closed: access key revoked", append(attrs, slog.Int("code", int(packet.CloseRevoked)))...)
}

// Addr is the main listener's address.
func (n *Node) Addr() net.Addr { return n.Server.Addr() }

// AdminAddr is the admin listener's address, or nil without one
// (Config.NoAdmin).
func (n *Node) AdminAddr() net.Addr {
	if n.Admin == nil {
		return nil
	}
	return n.Admin.Addr()
}

// Shutdown drains the node (sessions closed with 1001) and stops it.
func (n *Node) Shutdown(ctx context.Context) error {
	err := n.Server.Shutdown(ctx)
	if n.Admin != nil {
		err = errors.Join(err, n.Admin.Close(ctx))
	}
	n.stopParts()
	return err
}

func (n *Node) stopParts() {
	n.cancel()
	if n.Revoker != nil {
		n.Revoker.Wait()
	}
	if n.sweeping { // nothing calls revoked any more
		close(n.sweep)
		<-n.done
		n.sweeping = false
	}
	if n.store != nil {
		_ = n.store.Close()
	}
	if n.docs != nil {
		_ = n.docs.Close()
	}
	if n.redis != nil {
		_ = n.redis.Close()
	}
}

// redisLogs is where go-redis's own log lines go. go-redis has one logger
// per process: the first node that uses Redis sets it, and its logger
// wins.
var redisLogs struct {
	once sync.Once
	to   atomic.Pointer[ratelog.Logger]
}

// routeRedisLogs sends go-redis's own log lines (dial failures while Redis
// is down) to the node's logger, at warn with from=go-redis, instead of
// stderr; collapsed per kind of line (ratelog): while Redis is down, its
// dial failures (about one a second per client and pub/sub connection)
// make one line per kind per interval, with a count (repeated=N). The
// warnings of redismode.Listen's sharded subscriptions (the control
// channel's, the revocations') go there too, with from=redismode.
func routeRedisLogs(l *slog.Logger) {
	redisLogs.to.CompareAndSwap(nil, ratelog.New(l.With("from", "go-redis"), slog.LevelWarn, 0))
	redisLogs.once.Do(func() { redis.SetLogger(redisLogger{}) })
	redismode.SetLogger(l.With("from", "redismode"))
}

type redisLogger struct{}

// Printf collapses lines per format string: go-redis's formats are
// constants, a closed set, while the text varies (attempt counts, conn
// numbers), so a flood of one kind of failure is one line per interval.
func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if to := redisLogs.to.Load(); to.Enabled() {
		to.Log(format, strings.TrimSpace(fmt.Sprintf(format, v...)))
	}
}
