// Command gateway is the WebSocket gateway: `gateway serve` runs a node,
// `gateway key` issues and revokes access keys, `gateway client` talks the
// native protocol by hand. See README.md.
package main

import (
	"fmt"
	"os"
)

const usage = `usage:
  gateway [serve] [flags]                      run a node (gateway serve -h for flags)
  gateway key issue --subject S [--ttl D]      print a new access key
  gateway key revoke [--admin URL] KEY|--id ID revoke a key through the admin API
  gateway key revoke-subject [--admin URL] S   revoke every key of a subject
  gateway client --key KEY [--url URL]         a native-protocol client on stdin/stdout
  gateway wsify [-listen-addr :3000 ...]       only wsify, with wsify v3's flag names (drop-in)
Every flag also reads GATEWAY_<NAME> (dashes become underscores).`

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "key":
		err = key(args)
	case "client":
		err = client(args)
	case "wsify":
		err = wsifyMain(args)
	case "help":
		fmt.Println(usage)
	default:
		err = fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}
