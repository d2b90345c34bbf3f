package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/token"
)

// The environment variables that carry the Redis passwords (cmd/gateway
// reads them into Config); errors name them, as they name the flags.
const (
	EnvRedisPassword         = "GATEWAY_REDIS_PASSWORD"
	EnvRedisSentinelPassword = "GATEWAY_REDIS_SENTINEL_PASSWORD"
)

// redisAuthCheckWait bounds the PING with which Start checks that Redis
// accepts the node's credentials. Past it Start goes on: only a refusal
// fails it, not a slow or absent Redis.
const redisAuthCheckWait = 3 * time.Second

// redisOptions is cfg's Redis settings as go-redis options: exactly one
// of the three is set (none without Redis).
type redisOptions struct {
	plain    *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// UsesRedis reports whether cfg names a Redis of any kind.
func (cfg Config) UsesRedis() bool {
	return cfg.RedisURL != "" || cfg.RedisSentinel != "" || cfg.RedisCluster != ""
}

// CheckRedis checks cfg's Redis settings without dialing or reading a
// file: at most one of RedisURL, RedisSentinel and RedisCluster, the one
// given well formed, each credential given in one place at most, the
// Sentinels' credentials only with RedisSentinel. Its errors name the
// flags and never hold a password, for a usage error.
func (cfg Config) CheckRedis() error {
	_, err := cfg.parseRedis()
	return err
}

// redisFlag names the flag that chose cfg's Redis ("" for none).
func (cfg Config) redisFlag() string {
	switch {
	case cfg.RedisCluster != "":
		return "--redis-cluster"
	case cfg.RedisSentinel != "":
		return "--redis-sentinel"
	case cfg.RedisURL != "":
		return "--redis"
	}
	return ""
}

// parseRedis parses cfg's Redis settings and checks them (CheckRedis),
// RedisUsername in place; the passwords given apart from the URL are left
// to redisClientOptions, which reads the files.
func (cfg Config) parseRedis() (redisOptions, error) {
	given := 0
	for _, v := range []string{cfg.RedisURL, cfg.RedisSentinel, cfg.RedisCluster} {
		if v != "" {
			given++
		}
	}
	if given > 1 {
		return redisOptions{}, errors.New("--redis, --redis-sentinel and --redis-cluster are exclusive: give one")
	}
	if err := cfg.checkCredentialSources(); err != nil {
		return redisOptions{}, err
	}
	var ro redisOptions
	var err error
	switch {
	case cfg.RedisCluster != "":
		ro.cluster, err = ParseRedisCluster(cfg.RedisCluster)
	case cfg.RedisSentinel != "":
		ro.failover, err = ParseRedisSentinel(cfg.RedisSentinel)
	case cfg.RedisURL != "":
		ro.plain, err = parseRedisURL(cfg.RedisURL)
	default:
		return ro, nil
	}
	if err != nil {
		return redisOptions{}, err
	}
	user, password, _ := ro.auth()
	return ro, cfg.mergeUser(user, *password != "")
}

// auth points at the data servers' user, password and credentials
// provider in whichever of ro's options is set (all nil for none).
func (ro redisOptions) auth() (user, password *string, provider *credentialsProvider) {
	switch {
	case ro.cluster != nil:
		return &ro.cluster.Username, &ro.cluster.Password, &ro.cluster.CredentialsProviderContext
	case ro.failover != nil:
		return &ro.failover.Username, &ro.failover.Password, &ro.failover.CredentialsProviderContext
	case ro.plain != nil:
		return &ro.plain.Username, &ro.plain.Password, &ro.plain.CredentialsProviderContext
	}
	return nil, nil, nil
}

// checkCredentialSources refuses credentials without the Redis they are
// for, and a password given both directly and as a file.
func (cfg Config) checkCredentialSources() error {
	switch {
	case cfg.RedisPassword != "" && cfg.RedisPasswordFile != "":
		return fmt.Errorf("%s and --redis-password-file are exclusive: give one", EnvRedisPassword)
	case cfg.RedisSentinelPassword != "" && cfg.RedisSentinelPasswordFile != "":
		return fmt.Errorf("%s and --redis-sentinel-password-file are exclusive: give one", EnvRedisSentinelPassword)
	case !cfg.UsesRedis() && cfg.RedisUsername+cfg.RedisPassword+cfg.RedisPasswordFile != "":
		return fmt.Errorf("--redis-username, %s and --redis-password-file need --redis, --redis-sentinel or --redis-cluster", EnvRedisPassword)
	case cfg.RedisSentinel == "" && cfg.RedisSentinelUsername+cfg.RedisSentinelPassword+cfg.RedisSentinelPasswordFile != "":
		return fmt.Errorf("--redis-sentinel-username, %s and --redis-sentinel-password-file need --redis-sentinel", EnvRedisSentinelPassword)
	case cfg.RedisSentinelUsername != "" && cfg.RedisSentinelPassword+cfg.RedisSentinelPasswordFile == "":
		return fmt.Errorf("--redis-sentinel-username needs a password: %s or --redis-sentinel-password-file", EnvRedisSentinelPassword)
	}
	return nil
}

// mergeUser puts RedisUsername into the URL's user (*user), which it may
// not contradict, and refuses a password given apart when the URL has one
// or a user with no password anywhere.
func (cfg Config) mergeUser(user *string, urlHasPassword bool) error {
	flag := cfg.redisFlag()
	if cfg.RedisUsername != "" {
		if *user != "" && *user != cfg.RedisUsername {
			return fmt.Errorf("%s: the URL's user %q and --redis-username %q differ: give one", flag, *user, cfg.RedisUsername)
		}
		*user = cfg.RedisUsername
	}
	apart := cfg.RedisPassword != "" || cfg.RedisPasswordFile != ""
	switch {
	case urlHasPassword && apart:
		return fmt.Errorf("%s: the URL has a password and %s gives one too: give it once", flag, cfg.passwordSource(false))
	case *user != "" && !urlHasPassword && !apart:
		return fmt.Errorf("%s: user %q has no password: give it in the URL, %s or --redis-password-file", flag, *user, EnvRedisPassword)
	}
	return nil
}

// passwordSource says where the data servers' password comes from, for
// errors: never the password itself.
func (cfg Config) passwordSource(urlHasPassword bool) string {
	switch {
	case cfg.RedisPassword != "":
		return EnvRedisPassword
	case cfg.RedisPasswordFile != "":
		return "--redis-password-file " + cfg.RedisPasswordFile
	case urlHasPassword:
		return "the URL"
	}
	return "none"
}

// sentinelPasswordSource is passwordSource for the Sentinels' own.
func (cfg Config) sentinelPasswordSource() string {
	switch {
	case cfg.RedisSentinelPassword != "":
		return EnvRedisSentinelPassword
	case cfg.RedisSentinelPasswordFile != "":
		return "--redis-sentinel-password-file " + cfg.RedisSentinelPasswordFile
	}
	return "none"
}

// client builds the client ro describes: a plain client for RedisURL, a
// failover client for RedisSentinel (both a *redis.Client), a
// *redis.ClusterClient for RedisCluster. The broker and the stores tell a
// cluster by that type. A probe client tries once (no retry, one dial
// attempt), on copies of the options: checkRedisAuth's, so that a Redis
// that is down does not make Start wait through go-redis's retries.
func (ro redisOptions) client(probe bool) redis.UniversalClient {
	switch {
	case ro.cluster != nil:
		o := *ro.cluster
		if probe {
			o.MaxRetries, o.DialerRetries = -1, 1
		}
		return redis.NewClusterClient(&o)
	case ro.failover != nil:
		o := *ro.failover
		if probe {
			o.MaxRetries, o.DialerRetries = -1, 1
		}
		return redis.NewFailoverClient(&o)
	}
	o := *ro.plain
	if probe {
		o.MaxRetries, o.DialerRetries = -1, 1
	}
	return redis.NewClient(&o)
}

// redisClientOptions is parseRedis with every credential in place, the
// password files read (here, once), and a description of the credentials
// for errors (never a password).
func (cfg Config) redisClientOptions() (ro redisOptions, creds string, err error) {
	if ro, err = cfg.parseRedis(); err != nil {
		return ro, "", err
	}
	pass, err := readPassword(cfg.RedisPassword, cfg.RedisPasswordFile, "--redis-password-file")
	if err != nil {
		return ro, "", err
	}
	user, password, provider := ro.auth()
	if user == nil {
		return ro, "", nil
	}
	if ro.failover != nil {
		ro.failover.SentinelUsername = cfg.RedisSentinelUsername
		if ro.failover.SentinelPassword, err = readPassword(cfg.RedisSentinelPassword, cfg.RedisSentinelPasswordFile, "--redis-sentinel-password-file"); err != nil {
			return ro, "", err
		}
	}
	creds = cfg.credentialsDoc(*user, *password != "")
	source := cfg.passwordSource(*password != "")
	*password = cmp.Or(*password, pass) // parseRedis refused a password in both
	if err := refusePlaceholder(source, *password); err != nil {
		return ro, "", err
	}
	if cfg.RedisPasswordFile != "" {
		*provider = fileCredentials(*user, cfg.RedisPasswordFile)
	}
	if ro.failover != nil {
		if err := refusePlaceholder(cfg.sentinelPasswordSource(), ro.failover.SentinelPassword); err != nil {
			return ro, "", err
		}
	}
	return ro, creds, nil
}

// refusePlaceholder refuses a password copied from the deployment
// examples (token.IsPlaceholder), as the secrets are refused: a Redis set
// up from the same example would accept it.
func refusePlaceholder(source, password string) error {
	if token.IsPlaceholder(password) {
		return fmt.Errorf("the Redis password from %s is a placeholder from the deployment examples, not a secret", source)
	}
	return nil
}

// credentialsProvider is go-redis's CredentialsProviderContext.
type credentialsProvider = func(context.Context) (username, password string, err error)

// fileCredentials reads the password file again for every new connection
// (go-redis's, and the sharded subscriber's), so a rotated password (a
// Kubernetes Secret volume updates its files in place; ACL SETUSER can
// give a user both passwords meanwhile) takes effect without a restart.
// The file was read once at Start: a file gone later fails the
// connection, not the node.
func fileCredentials(user, file string) credentialsProvider {
	return func(context.Context) (string, string, error) {
		p, err := readPassword("", file, "--redis-password-file")
		return user, p, err
	}
}

// readPassword returns direct, else the content of file (empty, or more
// than one line, is an error), else "": either without one trailing
// newline (a Kubernetes Secret made from a file puts the file's newline in
// the variable too).
func readPassword(direct, file, flag string) (string, error) {
	if direct != "" || file == "" {
		return withoutNewline(direct), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	p := withoutNewline(string(b))
	switch {
	case p == "":
		return "", fmt.Errorf("%s %s: the file is empty", flag, file)
	case strings.ContainsAny(p, "\r\n"):
		return "", fmt.Errorf("%s %s: more than one line; want the password alone", flag, file)
	}
	return p, nil
}

// withoutNewline is s without one trailing "\n" or "\r\n".
func withoutNewline(s string) string {
	return strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")
}

// checkRedisAuth pings Redis once with a probe client (bounded by
// redisAuthCheckWait): a refusal of the credentials (WRONGPASS, NOAUTH,
// NOPERM) is a mistake in the
// configuration and fails Start with an error that says where the password
// came from (creds), never the password. A Redis that does not answer does
// not fail Start: the node starts not ready and reconnects, as when Redis
// goes down later.
func checkRedisAuth(ro redisOptions, flag, creds string) error {
	probe := ro.client(true)
	defer probe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), redisAuthCheckWait)
	defer cancel()
	err := probe.Ping(ctx).Err()
	if err == nil || !isCredentialError(err) {
		return nil
	}
	return fmt.Errorf("%s: Redis refused the node's credentials (%s): %v", flag, creds, err)
}

// isCredentialError tells a refusal of the credentials from an outage. A
// password given to a Redis that has none is accepted by Redis 6 and later
// (a nopass user takes any password); Redis 5 refuses it with "no password
// is set" (not covered by the tests, which run Redis 7).
func isCredentialError(err error) bool {
	return redis.IsAuthError(err) || redis.IsPermissionError(err) ||
		strings.Contains(err.Error(), "no password is set")
}

// credentialsDoc describes the credentials given, for errors: the users
// and where the passwords come from, never a password.
func (cfg Config) credentialsDoc(user string, urlHasPassword bool) string {
	doc := fmt.Sprintf("user %q, password from %s", cmp.Or(user, "default"), cfg.passwordSource(urlHasPassword))
	if cfg.RedisSentinel != "" {
		doc = fmt.Sprintf("master: %s; Sentinels: user %q, password from %s", doc,
			cmp.Or(cfg.RedisSentinelUsername, "default"), cfg.sentinelPasswordSource())
	}
	return doc
}

// parseRedisURL parses a --redis value (redis.ParseURL); its errors never
// hold the password (url.Parse's repeat the whole URL, and a password
// with an unescaped / ? or # is cut into the host, port, path or query,
// which the errors of url.Parse and go-redis quote).
func parseRedisURL(v string) (*redis.Options, error) {
	opt, err := redis.ParseURL(v)
	raw, hasPassword := urlPassword(v)
	if err == nil {
		if !hasPassword || opt.Password == unescaped(raw) {
			return opt, nil
		}
		// The password went, in part, elsewhere (the address, a fragment).
		err = errNotEncoded
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var escape url.EscapeError // quotes the bad %XX, maybe the password's
	if hasPassword && (errors.As(err, &escape) || revealsPart(err.Error(), raw)) {
		err = errNotEncoded
	}
	return nil, fmt.Errorf("--redis %q: %v", redactURL(v), err)
}

// errNotEncoded stands for an error about a URL that would quote a part
// of its password.
var errNotEncoded = errors.New("not a valid URL: percent-encode / ? # @ % and spaces in the password (%2F %3F %23 %40 %25 %20)")

// unescaped is s percent-decoded, s itself if it is not well encoded.
func unescaped(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// revealsPart reports whether msg holds a piece of the raw password pw
// as a URL parser cuts it (at / ? # % @).
func revealsPart(msg, pw string) bool {
	for piece := range strings.FieldsFuncSeq(pw, func(r rune) bool { return strings.ContainsRune("/?#%@", r) }) {
		if strings.Contains(msg, piece) {
			return true
		}
	}
	return false
}

// urlPassword returns the raw (still percent-encoded) password of a URL,
// everything between the user's : and the last @ (see redactURL).
func urlPassword(v string) (raw string, ok bool) {
	_, userinfo, _, isURL := splitUserinfo(v)
	if !isURL {
		return "", false
	}
	_, raw, ok = strings.Cut(userinfo, ":")
	return raw, ok
}

// splitUserinfo cuts a URL with a user at its last @: ok false if v is
// not a URL or has no @.
func splitUserinfo(v string) (scheme, userinfo, after string, ok bool) {
	scheme, rest, isURL := strings.Cut(v, "://")
	at := strings.LastIndex(rest, "@")
	if !isURL || at < 0 {
		return "", "", "", false
	}
	return scheme, rest[:at], rest[at+1:], true
}

// redactURL returns v with the password of a URL in it replaced by
// "xxxxx" (as url.URL.Redacted does), for errors. Everything up to the
// last @ counts as the user and password, so a password with an
// unescaped / or @ is hidden whole.
func redactURL(v string) string {
	scheme, userinfo, after, ok := splitUserinfo(v)
	user, _, hasPassword := strings.Cut(userinfo, ":")
	if !ok || !hasPassword {
		return v
	}
	return scheme + "://" + user + ":xxxxx@" + after
}

// listURL is the URL form of --redis-sentinel and --redis-cluster,
// "redis://[user[:password]@]host:port[,host:port…][/path]", split.
type listURL struct {
	user, password string
	hosts          string // the comma-separated list
	path           string // after the hosts' slash
}

// splitListURL splits v if it is a URL (isURL false: the short form).
// The user and password are percent-decoded, as in --redis; everything up
// to the last @ is them. Errors never hold the password.
func splitListURL(flag, v string) (u listURL, isURL bool, err error) {
	scheme, rest, isURL := strings.Cut(v, "://")
	if !isURL {
		return u, false, nil
	}
	switch scheme {
	case "redis":
	case "rediss":
		return u, true, fmt.Errorf("%s %q: rediss:// (TLS) is not supported here yet: use redis://", flag, redactURL(v))
	default:
		return u, true, fmt.Errorf("%s %q: want a redis:// URL", flag, redactURL(v))
	}
	if _, userinfo, after, ok := splitUserinfo(v); ok {
		user, password, _ := strings.Cut(userinfo, ":")
		u.user, err = url.PathUnescape(user)
		if err == nil {
			u.password, err = url.PathUnescape(password)
		}
		if err != nil {
			return u, true, fmt.Errorf("%s %q: the user or password is not percent-encoded (write %% as %%25, @ as %%40, : in the user as %%3A)", flag, redactURL(v))
		}
		rest = after
	}
	if strings.ContainsAny(rest, "?#") {
		return u, true, fmt.Errorf("%s %q: no query or fragment is understood", flag, redactURL(v))
	}
	u.hosts, u.path, _ = strings.Cut(rest, "/")
	return u, true, nil
}

// ParseRedisSentinel parses a RedisSentinel value into the options of a
// failover client: "master-name@host:port[,host:port…]", or
// "redis://[user[:password]@]host:port[,host:port…]/master-name[/db]" whose
// user and password are the master's and its replicas' (the Sentinels'
// own are apart: Config.RedisSentinelUsername). An empty name, no
// address, an address that is not host:port with a port, or a bad
// database number is an error naming the flag.
func ParseRedisSentinel(v string) (*redis.FailoverOptions, error) {
	const flag = "--redis-sentinel"
	u, isURL, err := splitListURL(flag, v)
	if err != nil {
		return nil, err
	}
	o := &redis.FailoverOptions{Username: u.user, Password: u.password}
	list := ""
	if isURL {
		name, db, hasDB := strings.Cut(u.path, "/")
		if name == "" {
			return nil, fmt.Errorf("%s %q: want the master's name as the path: redis://[user:password@]host:port[,host:port...]/master-name[/db]", flag, redactURL(v))
		}
		if hasDB && db != "" {
			if o.DB, err = strconv.Atoi(db); err != nil || o.DB < 0 {
				return nil, fmt.Errorf("%s %q: database number %q: want 0 or more", flag, redactURL(v), db)
			}
		}
		o.MasterName, list = name, u.hosts
	} else {
		name, hosts, ok := strings.Cut(v, "@")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s %q: want master-name@host:port[,host:port...] or redis://[user:password@]host:port[,host:port...]/master-name[/db]", flag, v)
		}
		o.MasterName, list = name, hosts
	}
	if o.SentinelAddrs, err = parseAddrs(flag, "sentinel", list); err != nil {
		return nil, err
	}
	if len(o.SentinelAddrs) == 0 {
		return nil, fmt.Errorf("%s %q: no sentinel address", flag, redactURL(v))
	}
	return o, nil
}

// ParseRedisCluster parses a RedisCluster value into the options of a
// cluster client: "host:port[,host:port…]" (seed nodes), or
// "redis://[user[:password]@]host:port[,host:port…]". No address, an
// address that is not host:port with a port, or a path other than the
// only database, 0, is an error naming the flag.
func ParseRedisCluster(v string) (*redis.ClusterOptions, error) {
	const flag = "--redis-cluster"
	u, isURL, err := splitListURL(flag, v)
	if err != nil {
		return nil, err
	}
	list := v
	if isURL {
		if u.path != "" && u.path != "0" {
			return nil, fmt.Errorf("%s %q: a Redis Cluster has only database 0: want no path", flag, redactURL(v))
		}
		list = u.hosts
	}
	addrs, err := parseAddrs(flag, "seed node", list)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("%s %q: want host:port[,host:port...] or redis://[user:password@]host:port[,host:port...]", flag, redactURL(v))
	}
	if err != nil {
		return nil, err
	}
	return &redis.ClusterOptions{Addrs: addrs, Username: u.user, Password: u.password}, nil
}

// parseAddrs splits a comma-separated list of host:port addresses
// (blanks around them and empty items skipped); errors name flag and what
// an address is.
func parseAddrs(flag, what, list string) ([]string, error) {
	var addrs []string
	for a := range strings.SplitSeq(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if strings.Contains(a, "@") {
			// Not quoted: a user and password written without the
			// redis:// the short forms take none.
			return nil, fmt.Errorf("%s: a %s address holds a user or password: use the URL form redis://user:password@host:port,...", flag, what)
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return nil, fmt.Errorf("%s: %s address %q: want host:port", flag, what, a)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s: %s address %q: port must be 1..65535", flag, what, a)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// redisAddr names the Redis a client reaches, for logs and the status
// page: the address of a plain or failover client (go-redis gives
// "FailoverClient" for the latter), the seed nodes of a cluster client.
// Never credentials.
func redisAddr(c redis.UniversalClient) string {
	if cc, ok := c.(*redis.ClusterClient); ok {
		return strings.Join(cc.Options().Addrs, ",")
	}
	return c.(*redis.Client).Options().Addr
}
