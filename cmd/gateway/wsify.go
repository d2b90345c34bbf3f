package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/wsify"
)

// wsifyMain runs only the wsify protocol, with wsify v3's own flag names, as
// a drop-in replacement for the wsify binary:
//
//	gateway wsify -listen-addr :3000 -authorizer-url URL -broker-driver memory|redis -broker-dsn DSN -broadcasting-key K -max-channels N
func wsifyMain(args []string) error {
	var cfg node.Config
	var driver, dsn string
	fs := flag.NewFlagSet("wsify", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen-addr", ":3000", "HTTP listen address")
	fs.StringVar(&cfg.Wsify.AuthorizerURL, "authorizer-url", "", "authorizer webhook URL; empty allows everything")
	fs.StringVar(&driver, "broker-driver", "memory", "memory (one process) or redis")
	fs.StringVar(&dsn, "broker-dsn", "", "the Redis URL for -broker-driver redis, e.g. redis://localhost:6379/0")
	fs.StringVar(&cfg.Wsify.BroadcastingKey, "broadcasting-key", "", "key POST /broadcast?key= must give; empty: no key")
	fs.IntVar(&cfg.Wsify.MaxChannels, "max-channels", wsify.DefaultMaxChannels, "channels one connection may have joined at once; a join past it closes the connection with 1008 (wsify itself has no cap)")
	fs.StringVar(&cfg.AdminListen, "admin-listen", gateway.DefaultAdminListen, "admin listener: metrics, health")
	fs.StringVar(&cfg.DataDir, "data-dir", node.DefaultDataDir, "data directory (the generated secret)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch driver {
	case "memory":
	case "redis":
		if dsn == "" {
			return fmt.Errorf("-broker-driver redis needs -broker-dsn")
		}
		cfg.RedisURL = dsn
	default:
		return fmt.Errorf("-broker-driver %q: want memory or redis", driver)
	}
	cfg.Only = node.OnlyWsify
	cfg.Secret = os.Getenv("GATEWAY_SECRET")
	return runNode(cfg, "info")
}
