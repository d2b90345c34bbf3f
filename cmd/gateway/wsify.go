package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/wsgateway/gateway/node"
)

// wsifyMain runs only the wsify protocol, with wsify v3's own flag names, as
// a drop-in replacement for the wsify binary:
//
//	gateway wsify -listen-addr :3000 -authorizer-url URL -broker-driver memory|redis -broker-dsn DSN -broadcasting-key K
//	              [-max-channels N] [-max-backlog N] [-admin-listen ADDR] [-data-dir DIR]
//	              [-log-level LEVEL] [-log-format text|json]
//
// With only wsify's own flags it binds -listen-addr alone and writes
// nothing: the admin listener and the data directory are opt-in.
func wsifyMain(args []string) error {
	var cfg node.Config
	var driver, dsn, logLevel, logFormat string
	fs := newFlagSet("wsify")
	fs.StringVar(&cfg.Listen, "listen-addr", ":3000", "HTTP listen address")
	fs.StringVar(&cfg.Wsify.AuthorizerURL, "authorizer-url", "", "authorizer webhook URL; empty allows everything")
	fs.StringVar(&driver, "broker-driver", "memory", "memory (one process) or redis")
	fs.StringVar(&dsn, "broker-dsn", "", "the Redis URL for -broker-driver redis, e.g. redis://localhost:6379/0")
	fs.StringVar(&cfg.Wsify.BroadcastingKey, "broadcasting-key", "", "key POST /broadcast?key= must give; empty: no key")
	fs.IntVar(&cfg.Wsify.MaxChannels, "max-channels", 0, "channels one connection may have joined at once; a join past it closes the connection with 1008 (0: 128; wsify itself has no cap)")
	fs.IntVar(&cfg.Wsify.MaxBacklog, "max-backlog", 0, "messages of one connection that may await the authorizer; one more closes it with 1008 (0: twice -max-channels, 256 by default)")
	adminListen := fs.String("admin-listen", "", "admin listener (metrics, health, admin API), e.g. 127.0.0.1:8081; empty: none, as wsify")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory (the generated secret; revocations without Redis); empty: nothing is written, a random secret lives in memory")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	logFormatFlag(fs, &logFormat)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	switch driver {
	case "memory":
	case "redis":
		if dsn == "" {
			return usageErr("wsify", errors.New("-broker-driver redis needs -broker-dsn"))
		}
		cfg.RedisURL = dsn
	default:
		return usageErr("wsify", fmt.Errorf("-broker-driver %q: want memory or redis", driver))
	}
	cfg.Only = node.OnlyWsify
	cfg.AdminListen, cfg.NoAdmin = *adminListen, *adminListen == ""
	cfg.NoDataDir = cfg.DataDir == ""
	cfg.Secret = os.Getenv("GATEWAY_SECRET")
	return runNode(cfg, logLevel, logFormat)
}
