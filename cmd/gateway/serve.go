package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/hypothesis"
	"github.com/wsgateway/gateway/kosync"
	"github.com/wsgateway/gateway/native"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/session"
)

// serverFlags declares the flags that locate the secret; serve and key
// share them so `gateway key issue` signs with the server's secret.
func secretFlags(fs *flag.FlagSet, cfg *node.Config) {
	fs.StringVar(&cfg.DataDir, "data-dir", node.DefaultDataDir, "data directory (generated secret; revocations without Redis, the saved revoked set with it)")
	fs.StringVar(&cfg.SecretFile, "secret-file", "", "file of secrets, one per line, the first signs (default: GATEWAY_SECRET, else a secret generated in --data-dir)")
}

func serve(args []string) error {
	var cfg node.Config
	var logLevel, logFormat string
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", gateway.DefaultListen, "main listener: WebSocket and HTTP")
	fs.StringVar(&cfg.AdminListen, "admin-listen", gateway.DefaultAdminListen, "admin listener: metrics, health, admin API")
	secretFlags(fs, &cfg)
	fs.StringVar(&cfg.RedisURL, "redis", "", "redis://[user[:password]@]host:port[/db] URL for revocations, KOsync data and fan-out across nodes; run Redis with persistence (empty: run alone)")
	fs.StringVar(&cfg.RedisSentinel, "redis-sentinel", "", "master-name@host:port[,host:port...] or redis://[user[:password]@]host:port[,host:port...]/master-name[/db] (user and password: the master's): use the Redis master these Sentinels name and follow its failovers (instead of --redis)")
	fs.StringVar(&cfg.RedisCluster, "redis-cluster", "", "host:port[,host:port...] or redis://[user[:password]@]host:port[,host:port...]: seed nodes of a Redis Cluster to use instead of --redis: keys with hash tags, fan-out by sharded pub/sub (SPUBLISH), slot moves and failovers followed")
	fs.StringVar(&cfg.RedisUsername, "redis-username", "", "ACL user for the Redis servers (--redis, the Sentinels' master and replicas, the cluster nodes); its password: "+node.EnvRedisPassword+", --redis-password-file or the URL's (empty: the URL's user, else the default user)")
	fs.StringVar(&cfg.RedisPasswordFile, "redis-password-file", "", "file holding the Redis servers' password, instead of "+node.EnvRedisPassword+" or one in the URL (which ps shows); read again for every new connection, so a rotated password needs no restart")
	fs.StringVar(&cfg.RedisSentinelUsername, "redis-sentinel-username", "", "ACL user for the Sentinels themselves, apart from the master's; its password: "+node.EnvRedisSentinelPassword+" or --redis-sentinel-password-file")
	fs.StringVar(&cfg.RedisSentinelPasswordFile, "redis-sentinel-password-file", "", "file holding the Sentinels' own password (their requirepass), instead of "+node.EnvRedisSentinelPassword)
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", "gateway:", "prefix of every Redis key and channel")
	fs.DurationVar(&cfg.PingTimeout, "ping-timeout", native.DefaultPingTimeout, "close native clients silent this long (3003)")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", gateway.DefaultHandshakeTimeout, "TCP accept to authenticated")
	fs.IntVar(&cfg.MaxMessageSize, "max-message-size", gateway.DefaultMaxMessageSize, "largest inbound message in bytes (1009 past it)")
	fs.IntVar(&cfg.MaxOutbound, "max-outbound", gateway.DefaultMaxOutbound, "unsent bytes per connection before it is closed as a slow consumer (1008)")
	fs.IntVar(&cfg.MaxSubscriptions, "max-subscriptions", session.DefaultMaxSubscriptions, "channels one native or wsify connection may hold at once; past it native answers Error 429, wsify closes with 1008")
	fs.IntVar(&cfg.History.Size, "history-size", 0, "publications each channel with history keeps for SubscribeFrom recovery (PROTOCOL.md 5.1); 0: no history. Kept in Redis with --redis (shared by the nodes), else in memory")
	fs.DurationVar(&cfg.History.TTL, "history-ttl", history.DefaultTTL, "how long a kept publication stays recoverable")
	fs.Int64Var(&cfg.History.MaxBytes, "history-max-bytes", history.DefaultMaxBytes, "a node alone: memory its whole history may hold; past it the channels used least recently lose their history (and epoch) first")
	historyChannels := fs.String("history-channels", "", "comma-separated channel-name prefixes that keep history, e.g. 'chat:,game:' (empty: every channel but the reserved #...)")
	fs.IntVar(&cfg.SocketSendBuffer, "socket-send-buffer", gateway.DefaultSocketSendBuffer, "the kernel's send buffer per connection, SO_SNDBUF (-1: the kernel's autotuning)")
	fs.IntVar(&cfg.EventLoops, "event-loops", 0, "event loops (0: one per CPU)")
	fs.BoolVar(&cfg.ReusePort, "reuse-port", false, "SO_REUSEPORT: let several gateway processes share --listen")
	fs.DurationVar(&cfg.DrainWindow, "drain-window", gateway.DefaultDrainWindow, "on SIGTERM, sessions are closed with 1001 spread over this window (at least 1000 per second)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", gateway.DefaultShutdownTimeout, "on SIGTERM, the bound of the whole shutdown (raised to the drain window + 5s)")
	fs.StringVar(&cfg.EchoPath, "echo-path", "", "serve the echo protocol at this path, for RFC 6455 conformance suites such as Autobahn (empty: off)")
	fs.Float64Var(&cfg.Limits.MessageRate, "message-rate", 0, "messages (data and Pings) per second a connection may send on average; past it: close 1008 (0: no limit)")
	fs.IntVar(&cfg.Limits.MessageBurst, "message-burst", 0, "messages a connection may send back to back before --message-rate applies (0: 100)")
	fs.IntVar(&cfg.Limits.MaxConnsPerIP, "max-conns-per-ip", 0, "connections per remote IP, counted from accept (upgraded or still in the handshake); more get 429 and Retry-After at once (0: no limit)")
	fs.IntVar(&cfg.Limits.MaxConns, "max-conns", 0, "upgraded connections on this node; more get 503 and Retry-After (0: no limit)")
	fs.DurationVar(&cfg.Limits.RetryAfter, "retry-after", 0, "Retry-After of 429/503 refusals (0: 5s)")
	origins := fs.String("allowed-origins", "", "origins the browser protocols (KOsync, Hypothesis, wsify, echo) accept: scheme://host[:port], scheme://*.domain or *, comma separated; requests without Origin pass (empty: all)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token the admin API requires (needed for a non-loopback --admin-listen)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	logFormatFlag(fs, &logFormat)
	registration := fs.Bool("kosync-registration", true, "KOReader sync: allow POST /users/create")
	fs.BoolVar(&cfg.Kosync.StrictAccept, "kosync-strict-accept", false, "KOReader sync: answer 412 to a missing or foreign Accept header, as the reference server does; this locks out clients that send no application/vnd.koreader.v1+json Accept (Readest's proxy route, curl, most scripts), so leave it off unless every client is KOReader")
	fs.DurationVar(&cfg.Kosync.JWTTTL, "kosync-jwt-ttl", kosync.DefaultJWTTTL, "KOsync: lifetime of the JWTs /api/auth.jwt and /api/ws hand out")
	fs.IntVar(&cfg.Kosync.HistoryLimit, "kosync-history", kosync.DefaultHistoryLimit, "KOsync: earlier states kept per document")
	fs.IntVar(&cfg.Kosync.HashWorkers, "kosync-hash-workers", 0, "KOReader sync: password hashes (argon2id) run at once (0: one less than the CPUs, at least 1)")
	fs.IntVar(&cfg.Kosync.HashQueue, "kosync-hash-queue", 0, "KOReader sync: hashes that may wait for a worker; more get 503 and Retry-After (0: 32)")
	fs.Float64Var(&cfg.Kosync.AuthFailuresPerMinute, "kosync-auth-failures-per-minute", 0, "KOReader sync: failed logins (and registrations) per minute one address may make; more get 429 and Retry-After (0: 6; negative: no limit)")
	fs.IntVar(&cfg.Kosync.AuthFailureBurst, "kosync-auth-failure-burst", 0, "KOReader sync: failed logins one address may make back to back before the rate applies (0: 10)")
	fs.StringVar(&cfg.Kosync.PublicURL, "public-url", "", "the URL clients reach this node at (https://... makes /api/ws answer wss://); empty: from the request")
	fs.StringVar(&cfg.Hypothesis.Authority, "hypothesis-authority", "localhost", "Hypothesis: the authority of userids (acct:<subject>@<authority>)")
	fs.IntVar(&cfg.Hypothesis.MaxFilterRows, "hypothesis-max-filter-rows", hypothesis.DefaultMaxFilterRows, "Hypothesis: values one socket's filter may hold (after URI version expansion); a larger filter is refused with invalid_data")
	fs.StringVar(&cfg.WsifyListen, "wsify-listen", ":3000", "wsify's own listener (empty: no wsify)")
	fs.StringVar(&cfg.Wsify.AuthorizerURL, "wsify-authorizer-url", "", "wsify: authorizer webhook (empty: allow everything)")
	fs.DurationVar(&cfg.Wsify.AuthorizerTimeout, "wsify-authorizer-timeout", 5*time.Second, "wsify: timeout of each authorizer call")
	fs.StringVar(&cfg.Wsify.BroadcastingKey, "wsify-broadcasting-key", "", "wsify: key POST /broadcast?key= must give (empty: none)")
	fs.IntVar(&cfg.Wsify.MaxBacklog, "wsify-max-backlog", 0, "wsify: messages of one connection that may await the authorizer; one more closes it with 1008 (0: twice the channel cap, 256 by default)")
	fs.StringVar(&cfg.WsifyRedisPrefix, "wsify-redis-prefix", "", "wsify: prefix of its Redis channels (empty: the raw channel names, as wsify)")
	proxies := fs.String("trusted-proxies", "", "comma-separated IPs or CIDRs whose X-Forwarded-Proto/-Host and Forwarded headers are believed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg.Kosync.RegistrationClosed = !*registration
	cfg.RedisPassword = os.Getenv(node.EnvRedisPassword)
	cfg.RedisSentinelPassword = os.Getenv(node.EnvRedisSentinelPassword)
	if err := cfg.CheckRedis(); err != nil {
		return usageErr("serve", err)
	}
	cfg.History.Channels = history.ParseChannels(*historyChannels)
	if cfg.History.Size < 0 || cfg.History.Size > history.MaxSize {
		return usageErr("serve", fmt.Errorf("--history-size %d: want 0..%d", cfg.History.Size, history.MaxSize))
	}
	for o := range strings.SplitSeq(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.Limits.AllowedOrigins = append(cfg.Limits.AllowedOrigins, o)
		}
	}
	if err := cfg.Limits.Validate(); err != nil {
		return err
	}
	var err error
	if cfg.Kosync.TrustedProxies, err = parsePrefixes(*proxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	cfg.Secret = os.Getenv("GATEWAY_SECRET")
	return runNode(cfg, logLevel, logFormat)
}

// runNode starts a node and runs it until SIGTERM or SIGINT, then drains it.
func runNode(cfg node.Config, logLevel, logFormat string) error {
	var err error
	if cfg.Logger, err = newLogger(os.Stderr, logLevel, logFormat); err != nil {
		return err
	}
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	admin := "none"
	if a := n.AdminAddr(); a != nil {
		admin = "http://" + a.String()
	}
	cfg.Logger.Info("gateway listening", "listen", n.Addr().String(), "admin", admin, "redis", cfg.UsesRedis())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	cfg.Logger.Info("shutting down", "signal", s.String())
	signal.Stop(sig) // a second signal kills at once
	ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(cfg.ShutdownTimeout, gateway.DefaultShutdownTimeout)+5*time.Second)
	defer cancel()
	return n.Shutdown(ctx)
}

// Log formats of --log-format.
const (
	logFormatText = "text" // logfmt-like key=value lines (slog.TextHandler)
	logFormatJSON = "json" // one JSON object a line (slog.JSONHandler), for log shippers
)

// logFormatFlag declares --log-format.
func logFormatFlag(fs *flag.FlagSet, format *string) {
	fs.StringVar(format, "log-format", logFormatText, "text, or json (one object a line, for log shippers)")
}

// newLogger builds the process's logger on w from --log-level and
// --log-format.
func newLogger(w io.Writer, logLevel, logFormat string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch logFormat {
	case logFormatText:
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case logFormatJSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", logFormat)
}

// parsePrefixes reads "10.0.0.0/8, 127.0.0.1"; a bare address is a /32 or /128.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			a, err := netip.ParseAddr(item)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
