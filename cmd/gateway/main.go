// Command gateway is the WebSocket gateway: `gateway serve` runs a node,
// `gateway key` issues and revokes access keys, `gateway client` talks the
// native protocol by hand, `gateway wsify` is a drop-in wsify, `gateway
// version` says which build this is. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/wsgateway/gateway/gateway"
)

const usage = `gateway: a WebSocket gateway (native protocol, KOReader sync, Hypothesis, wsify)

usage: gateway <command> [flags]

Commands:
  serve     run a node (the default: 'gateway --listen :9000' is 'gateway serve --listen :9000')
  key       access keys:
              key issue --subject S [--ttl D]              print a new key signed with the node's secret
              key revoke [--admin URL] KEY | --id ID       revoke one key through the admin API
              key revoke-subject [--admin URL] SUBJECT     revoke every key of a subject
  client    a native-protocol client on stdin/stdout, to try a node by hand
  wsify     only wsify, with wsify v3's flag names (a drop-in replacement)
  version   print the version, commit and Go version (also --version)
  help      print this; 'gateway help <command>' prints a command's flags

Every command takes --help. The flags of serve, key and client also read
GATEWAY_<NAME> (upper case, dashes as underscores); the command line wins.

Exit status: 0 success (and help, version), 1 failure, 2 command-line error
(unknown command, bad flag or value); client adds 3 and 4 (gateway client --help).`

func main() {
	err := run(os.Args[1:])
	switch {
	case err == nil, errors.Is(err, errHelped):
		os.Exit(exitOK)
	}
	fmt.Fprintln(os.Stderr, "gateway:", err)
	var ue *usageError
	var ce *exitCodeError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, ue.usage)
		os.Exit(exitUsage)
	case errors.As(err, &ce):
		os.Exit(ce.code)
	}
	os.Exit(exitError)
}

// run dispatches to a command. With no command, or a flag first, the
// command is serve (its flags follow), except for the top level's own -h,
// --help and --version.
func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			fmt.Println(usage)
			return nil
		case "-version", "--version":
			return version(nil)
		}
		if args[0] != "" && args[0][0] != '-' {
			cmd, args = args[0], args[1:]
		}
	}
	switch cmd {
	case "serve":
		return serve(args)
	case "key":
		return key(args)
	case "client":
		return client(args)
	case "wsify":
		return wsifyMain(args)
	case "version":
		return version(args)
	case "help":
		return help(args)
	}
	return &usageError{err: fmt.Errorf("unknown command %q", cmd), usage: usage}
}

// help prints the usage, or with a command name that command's help.
func help(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Println(usage)
		return nil
	}
	switch args[0] {
	case "help":
		fmt.Println(usage)
		return nil
	case "serve", "key", "client", "wsify", "version":
		return run(append(append([]string{args[0]}, args[1:]...), "--help"))
	}
	return &usageError{err: fmt.Errorf("help: unknown command %q", args[0]), usage: usage}
}

// version prints the build: version, commit, Go version.
func version(args []string) error {
	fs := newFlagSet("version")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("version", fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	bi, _ := debug.ReadBuildInfo()
	writeVersion(os.Stdout, bi)
	return nil
}

// writeVersion writes three lines: "gateway VERSION", "commit REV[
// (modified)]" or "commit unknown (...)", "go GOVERSION OS/ARCH".
func writeVersion(w io.Writer, bi *debug.BuildInfo) {
	fmt.Fprintf(w, "gateway %s\n", gateway.Version)
	rev, modified := gateway.VCSRevision(bi)
	switch {
	case rev == "":
		fmt.Fprintln(w, "commit unknown (built without VCS information)")
	case modified:
		fmt.Fprintf(w, "commit %s (modified)\n", rev)
	default:
		fmt.Fprintf(w, "commit %s\n", rev)
	}
	fmt.Fprintf(w, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
