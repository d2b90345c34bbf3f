package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
)

// TestRedisCredentials: where the data servers' and the Sentinels'
// credentials may come from (the URL, RedisUsername, RedisPassword,
// a password file), how they reach go-redis's options, and the mistakes
// refused before anything is dialed; no error holds a password.
func TestRedisCredentials(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pwFile, crlfFile := file("pw", "s3cret-file\n"), file("crlf", "s3cret-crlf\r\n")
	emptyFile, twoLines := file("empty", "\n"), file("two", "s3cret\nmore\n")
	missing := filepath.Join(dir, "missing")
	type creds struct{ user, pass, sentinelUser, sentinelPass string }
	for _, tc := range []struct {
		cfg     Config
		want    creds
		doc     string
		wantErr string
	}{
		{cfg: Config{RedisCluster: "a:1"}, doc: `user "default", password from none`},
		{cfg: Config{RedisCluster: "redis://gw:s3cret@a:1"}, want: creds{user: "gw", pass: "s3cret"},
			doc: `user "gw", password from the URL`},
		{cfg: Config{RedisCluster: "a:1", RedisUsername: "gw", RedisPassword: "s3cret"}, want: creds{user: "gw", pass: "s3cret"},
			doc: `user "gw", password from GATEWAY_REDIS_PASSWORD`},
		{cfg: Config{RedisCluster: "redis://gw@a:1", RedisPasswordFile: pwFile}, want: creds{user: "gw", pass: "s3cret-file"},
			doc: `user "gw", password from --redis-password-file ` + pwFile},
		{cfg: Config{RedisCluster: "redis://gw@a:1", RedisUsername: "gw", RedisPasswordFile: crlfFile}, want: creds{user: "gw", pass: "s3cret-crlf"}},
		{cfg: Config{RedisURL: "redis://a:1/2", RedisPassword: "s3cret"}, want: creds{pass: "s3cret"},
			doc: `user "default", password from GATEWAY_REDIS_PASSWORD`},
		{cfg: Config{RedisURL: "redis://gw:s3cret@a:1/2"}, want: creds{user: "gw", pass: "s3cret"}},
		{cfg: Config{RedisSentinel: "redis://gw:s3cret@a:1/m/2", RedisSentinelUsername: "sn", RedisSentinelPassword: "s3cret-sn"},
			want: creds{"gw", "s3cret", "sn", "s3cret-sn"},
			doc:  `master: user "gw", password from the URL; Sentinels: user "sn", password from GATEWAY_REDIS_SENTINEL_PASSWORD`},
		{cfg: Config{RedisSentinel: "m@a:1", RedisPassword: "s3cret", RedisSentinelPasswordFile: pwFile},
			want: creds{pass: "s3cret", sentinelPass: "s3cret-file"}},

		{cfg: Config{RedisCluster: "redis://gw:s3cret@a:1", RedisPassword: "s3cret2"},
			wantErr: "--redis-cluster: the URL has a password and GATEWAY_REDIS_PASSWORD gives one too: give it once"},
		{cfg: Config{RedisURL: "redis://:s3cret@a:1", RedisPasswordFile: pwFile},
			wantErr: "--redis: the URL has a password and --redis-password-file " + pwFile + " gives one too: give it once"},
		{cfg: Config{RedisCluster: "a:1", RedisPassword: "s3cret", RedisPasswordFile: pwFile},
			wantErr: "GATEWAY_REDIS_PASSWORD and --redis-password-file are exclusive: give one"},
		{cfg: Config{RedisSentinel: "m@a:1", RedisSentinelPassword: "s3cret", RedisSentinelPasswordFile: pwFile},
			wantErr: "GATEWAY_REDIS_SENTINEL_PASSWORD and --redis-sentinel-password-file are exclusive: give one"},
		{cfg: Config{RedisCluster: "redis://gw:s3cret@a:1", RedisUsername: "other"},
			wantErr: `--redis-cluster: the URL's user "gw" and --redis-username "other" differ: give one`},
		{cfg: Config{RedisCluster: "a:1", RedisUsername: "gw"},
			wantErr: `--redis-cluster: user "gw" has no password: give it in the URL, GATEWAY_REDIS_PASSWORD or --redis-password-file`},
		{cfg: Config{RedisSentinel: "redis://gw@a:1/m"},
			wantErr: `--redis-sentinel: user "gw" has no password: give it in the URL, GATEWAY_REDIS_PASSWORD or --redis-password-file`},
		{cfg: Config{RedisPassword: "s3cret"},
			wantErr: "--redis-username, GATEWAY_REDIS_PASSWORD and --redis-password-file need --redis, --redis-sentinel or --redis-cluster"},
		{cfg: Config{RedisCluster: "a:1", RedisSentinelPassword: "s3cret"},
			wantErr: "--redis-sentinel-username, GATEWAY_REDIS_SENTINEL_PASSWORD and --redis-sentinel-password-file need --redis-sentinel"},
		{cfg: Config{RedisSentinel: "m@a:1", RedisSentinelUsername: "sn"},
			wantErr: "--redis-sentinel-username needs a password: GATEWAY_REDIS_SENTINEL_PASSWORD or --redis-sentinel-password-file"},
		{cfg: Config{RedisURL: "redis://gw:s3cret@a:x/0"},
			wantErr: `--redis "redis://gw:xxxxx@a:x/0": invalid port ":x" after host`},
		{cfg: Config{RedisURL: "redis://gw:s3cret@a:1/x"},
			wantErr: `--redis "redis://gw:xxxxx@a:1/x": redis: invalid database number: "x"`},
	} {
		err := tc.cfg.CheckRedis()
		what := redisSettings(tc.cfg)
		if tc.wantErr != "" {
			if errString(err) != tc.wantErr {
				t.Errorf("%s: CheckRedis = %v, want %q", what, err, tc.wantErr)
			}
			continue
		}
		ro, doc, err := tc.cfg.redisClientOptions()
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		var got creds
		switch {
		case ro.cluster != nil:
			got = creds{user: ro.cluster.Username, pass: ro.cluster.Password}
		case ro.failover != nil:
			got = creds{ro.failover.Username, ro.failover.Password, ro.failover.SentinelUsername, ro.failover.SentinelPassword}
		default:
			got = creds{user: ro.plain.Username, pass: ro.plain.Password}
		}
		if got != tc.want || (tc.doc != "" && doc != tc.doc) || strings.Contains(doc, "s3cret") {
			t.Errorf("%s: got %+v, %q; want %+v, %q", what, got, doc, tc.want, tc.doc)
		}
	}

	// Password files are read at Start (not by CheckRedis): a file that
	// is missing, empty or of two lines fails it, naming the flag and file;
	// so does a placeholder password.
	for _, tc := range []struct {
		cfg     Config
		wantErr string
	}{
		{Config{RedisCluster: "a:1", RedisPasswordFile: missing}, "--redis-password-file: open " + missing + ": no such file or directory"},
		{Config{RedisCluster: "a:1", RedisPasswordFile: emptyFile}, "--redis-password-file " + emptyFile + ": the file is empty"},
		{Config{RedisSentinel: "m@a:1", RedisSentinelPasswordFile: twoLines}, "--redis-sentinel-password-file " + twoLines + ": more than one line; want the password alone"},
		// A placeholder from the deployment examples is refused, as a secret is.
		{Config{RedisCluster: "redis://:REPLACE-ME@a:1"}, "the Redis password from the URL is a placeholder from the deployment examples, not a secret"},
		{Config{RedisSentinel: "m@a:1", RedisSentinelPassword: "REPLACE-ME"}, "the Redis password from GATEWAY_REDIS_SENTINEL_PASSWORD is a placeholder from the deployment examples, not a secret"},
	} {
		if err := tc.cfg.CheckRedis(); err != nil {
			t.Errorf("%s: CheckRedis = %v, want nil", redisSettings(tc.cfg), err)
		}
		tc.cfg.Listen, tc.cfg.NoAdmin, tc.cfg.DataDir = "127.0.0.1:0", true, t.TempDir()
		if _, err := Start(tc.cfg); errString(err) != tc.wantErr {
			t.Errorf("%s: Start = %v, want %q", redisSettings(tc.cfg), err, tc.wantErr)
		}
	}
}

// redisSettings shows cfg's Redis settings alone, for failures.
func redisSettings(cfg Config) string {
	return fmt.Sprintf("redis %q sentinel %q cluster %q user %q password %q file %q sentinel user %q password %q file %q",
		cfg.RedisURL, cfg.RedisSentinel, cfg.RedisCluster, cfg.RedisUsername, cfg.RedisPassword, cfg.RedisPasswordFile,
		cfg.RedisSentinelUsername, cfg.RedisSentinelPassword, cfg.RedisSentinelPasswordFile)
}

// TestRedisPasswordFileRotation: the password file is read again for every
// new connection: after Redis's password changes and the file follows,
// the node's cut connections come back with the new one, without a
// restart (a static password would get WRONGPASS).
func TestRedisPasswordFileRotation(t *testing.T) {
	t.Parallel()
	srv := redistest.StartLocal(t, redistest.WithAuth(redistest.Auth{Password: "old-s3cret"}))
	file := filepath.Join(t.TempDir(), "redis-password")
	write := func(p string) {
		if err := os.WriteFile(file, []byte(p+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("old-s3cret")
	n, err := Start(Config{Listen: "127.0.0.1:0", NoAdmin: true, DataDir: t.TempDir(), RedisURL: srv.URL, RedisPasswordFile: file})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: "old-s3cret"})
	t.Cleanup(func() { _ = admin.Close() })

	if err := admin.ConfigSet(ctx, "requirepass", "new-s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	write("new-s3cret")
	for _, typ := range []string{"normal", "pubsub"} { // every connection of the node; not admin's own
		if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", typ).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Revoker.RevokeSubject(ctx, "alice", time.Time{}); err != nil {
		t.Fatalf("revoke after the rotation: %v", err)
	}
	if got, err := admin.Exists(ctx, "gateway:revoked:sub:alice").Result(); got != 1 || err != nil {
		t.Fatalf("revocation in Redis: %d, %v", got, err)
	}
}

// TestRedisCredentialRefusals: Start fails, saying where the password came
// from, when Redis requires a password and none is given (a wrong one:
// the process tests in test/). A password given to a Redis without one is
// not refused: Redis 6 and later accept any password for a nopass user.
func TestRedisCredentialRefusals(t *testing.T) {
	t.Parallel()
	locked := redistest.StartLocal(t, redistest.WithAuth(redistest.Auth{Password: "s3cret"}))
	cfg := Config{RedisURL: locked.URL, Listen: "127.0.0.1:0", NoAdmin: true, DataDir: t.TempDir()}
	const want = `--redis: Redis refused the node's credentials (user "default", password from none): NOAUTH Authentication required.`
	if n, err := Start(cfg); errString(err) != want {
		if n != nil {
			_ = n.Shutdown(context.Background())
		}
		t.Errorf("Start = %v, want %q", err, want)
	}
}

// TestRedisErrorsHideUnencodedPasswords: a password written into a URL
// without percent-encoding its / ? # (a base64 password has /) is cut by
// url.Parse into the host, port, path, query or fragment, which the
// parsers' errors quote, or parses into an address of password digits.
// No error, and no accepted address, holds any piece of it; the short
// forms, given a user and password without redis://, do not quote them.
func TestRedisErrorsHideUnencodedPasswords(t *testing.T) {
	const notEncoded = "not a valid URL: percent-encode / ? # @ % and spaces in the password (%2F %3F %23 %40 %25 %20)"
	for _, tc := range []struct {
		cfg     Config
		wantErr string
	}{
		{Config{RedisURL: "redis://:Abc/Def@h:6379"}, `--redis "redis://:xxxxx@h:6379": ` + notEncoded},
		{Config{RedisURL: "redis://gw:Abc?Def@h:6379"}, `--redis "redis://gw:xxxxx@h:6379": ` + notEncoded},
		{Config{RedisURL: "redis://gw:4242/Qz@h:6379/0"}, `--redis "redis://gw:xxxxx@h:6379/0": ` + notEncoded},
		{Config{RedisURL: "redis://gw:4242?Qz@h:6379"}, `--redis "redis://gw:xxxxx@h:6379": ` + notEncoded},
		{Config{RedisURL: "redis://gw:4242#Qz@h:6379"}, `--redis "redis://gw:xxxxx@h:6379": ` + notEncoded},
		{Config{RedisURL: "redis://gw:Ab%zzCd@h:6379"}, `--redis "redis://gw:xxxxx@h:6379": ` + notEncoded},
		{Config{RedisCluster: "gw:Abc4242@a:1,b:2"},
			"--redis-cluster: a seed node address holds a user or password: use the URL form redis://user:password@host:port,..."},
		{Config{RedisSentinel: "m@gw:Abc4242@a:1"},
			"--redis-sentinel: a sentinel address holds a user or password: use the URL form redis://user:password@host:port,..."},
	} {
		err := tc.cfg.CheckRedis()
		if errString(err) != tc.wantErr {
			t.Errorf("%s: CheckRedis = %v, want %q", redisSettings(tc.cfg), err, tc.wantErr)
		}
	}
	// Well encoded, the same passwords are taken whole.
	o, err := parseRedisURL("redis://gw:4242%2FQz%3F%23@h:6379/0")
	if err != nil || o.Password != "4242/Qz?#" || o.Addr != "h:6379" {
		t.Errorf("encoded password: %+v, %v", o, err)
	}
}

// TestRedisPasswordVariableNewline: a password variable filled from a
// Kubernetes Secret made from a file (kubectl create secret
// --from-file) ends with that file's newline; the password file's rule
// applies (one trailing newline or CRLF is not part of the password), as
// GATEWAY_SECRET's does. The newline used to reach AUTH: WRONGPASS at
// start.
func TestRedisPasswordVariableNewline(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		user string
		pass string
	}{
		{Config{RedisCluster: "a:1", RedisUsername: "gw", RedisPassword: "s3cret\n"}, "gw", "s3cret"},
		{Config{RedisURL: "redis://a:1/0", RedisPassword: "s3cret\r\n"}, "", "s3cret"},
	} {
		ro, _, err := tc.cfg.redisClientOptions()
		if err != nil {
			t.Fatalf("%s: %v", redisSettings(tc.cfg), err)
		}
		var user, pass string
		switch {
		case ro.cluster != nil:
			user, pass = ro.cluster.Username, ro.cluster.Password
		default:
			user, pass = ro.plain.Username, ro.plain.Password
		}
		if user != tc.user || pass != tc.pass {
			t.Errorf("%s: user %q password %q, want %q %q", redisSettings(tc.cfg), user, pass, tc.user, tc.pass)
		}
	}
	cfg := Config{RedisSentinel: "m@a:1", RedisSentinelPassword: "s3cret-sn\n"}
	ro, _, err := cfg.redisClientOptions()
	if err != nil || ro.failover.SentinelPassword != "s3cret-sn" {
		t.Errorf("%s: Sentinel password %q (%v), want %q", redisSettings(cfg), ro.failover.SentinelPassword, err, "s3cret-sn")
	}
}
