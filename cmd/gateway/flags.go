package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit statuses of every command (README.md, "Commands"); client adds its
// own above these (clientExit*).
const (
	exitOK    = 0 // success, and --help / help / version
	exitError = 1 // the command failed: a refused configuration, I/O, an error answer
	exitUsage = 2 // the command line is wrong: unknown command, bad flag or value, missing argument
)

// errHelped: the help the user asked for has been printed on stdout; exit 0.
var errHelped = errors.New("help printed")

// usageError is a command-line mistake: main prints it, then the command's
// usage, on stderr, and exits with exitUsage.
type usageError struct {
	err   error
	usage string // the command's synopsis and description
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitCodeError is an error with its own exit status (client's refusals
// and closes).
type exitCodeError struct {
	err  error
	code int
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// commandDoc is what a command's --help says above its flags.
type commandDoc struct {
	synopsis string // after "usage: "
	about    string // a paragraph or two, wrapped
	env      bool   // its flags also read GATEWAY_<NAME>
}

// docs describes every flag set by name (flag.FlagSet.Name).
var docs = map[string]commandDoc{
	"serve": {synopsis: "gateway serve [flags]    (or gateway [flags])", env: true, about: `Runs a node: the native protocol, KOsync, Hypothesis and wsify on their
listeners, the admin listener (metrics, health, admin API), until SIGTERM or
SIGINT, then drains. The secret is GATEWAY_SECRET, else --secret-file, else
--data-dir/secret, generated there at the first start. A secret shorter than
32 bytes, or a secret or --admin-token copied from the deployment examples
(REPLACE-..., ...CHANGE-ME...), is refused at start. Redis passwords come from
GATEWAY_REDIS_PASSWORD (GATEWAY_REDIS_SENTINEL_PASSWORD: the Sentinels' own),
--redis-password-file or the URL; none is ever logged.`},
	"key issue": {synopsis: "gateway key issue --subject S [--ttl D] [--data-dir D | --secret-file F]", env: true, about: `Prints a new access key (base64url) on stdout, signed with the node's
secret: GATEWAY_SECRET, else --secret-file, else the secret the node generated
in --data-dir (it never makes one up: start the node first, or give the same
--data-dir, --secret-file or GATEWAY_SECRET as the node). Where the secret came
from, the key id and the expiry go to stderr.`},
	"key revoke": {synopsis: "gateway key revoke [--admin URL] [--admin-token T] KEY | --id ID", env: true, about: `Revokes one access key through a node's admin API (every node, with Redis):
its sessions are closed with 3004. Prints the admin API's JSON answer.`},
	"key revoke-subject": {synopsis: "gateway key revoke-subject [--admin URL] [--admin-token T] SUBJECT", env: true, about: `Revokes every key of SUBJECT issued until now through a node's admin API;
keys issued afterwards stay valid. Prints the admin API's JSON answer.`},
	"client": {synopsis: "gateway client --key KEY [--url URL] [--sub a,b] [--recover] [--no-reconnect]", env: true, about: clientAbout},
	"wsify": {synopsis: "gateway wsify [-listen-addr :3000] [-authorizer-url U] [-broker-driver memory|redis] [-broker-dsn D] ...", about: `Runs only the wsify protocol with wsify v3's own flag names: a drop-in
replacement that binds only -listen-addr and writes nothing; the admin listener
(-admin-listen) and a data directory (-data-dir) are opt-in. Its flags do not
read GATEWAY_<NAME>; GATEWAY_SECRET, when set, is checked and used.`},
	"key": {synopsis: "gateway key issue|revoke|revoke-subject [flags]", about: `Issues and revokes access keys:
  key issue --subject S [--ttl D]              print a new key signed with the node's secret
  key revoke [--admin URL] KEY | --id ID       revoke one key through the admin API
  key revoke-subject [--admin URL] SUBJECT     revoke every key of a subject
'gateway key <subcommand> --help' prints a subcommand's flags.`},
	"version": {synopsis: "gateway version    (or gateway --version)", about: `Prints the version, the commit it was built from (with "modified" when the
work tree had changes) and the Go version, one per line.`},
}

// parseFlags parses args, then fills every flag not given on the command
// line from GATEWAY_<NAME> (upper case, dashes as underscores).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	if err != nil {
		return usageErr(fs.Name(), err)
	}
	return nil
}

// parseArgs parses the command line alone. -h, -help and --help print the
// command's help on stdout (errHelped, exit 0); a bad flag is a usageError
// (exit 2). The flag package prints nothing itself.
func parseArgs(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		printHelp(os.Stdout, fs)
		return errHelped
	}
	return usageErr(fs.Name(), err)
}

// usageErr makes err a usage error of the named command.
func usageErr(name string, err error) error {
	d := docs[name]
	return &usageError{err: fmt.Errorf("%s: %w", name, err),
		usage: fmt.Sprintf("usage: %s\nRun 'gateway %s --help' for its flags, 'gateway help' for every command.", d.synopsis, name)}
}

// printHelp writes a command's help: synopsis, description, flags.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	d := docs[fs.Name()]
	fmt.Fprintf(w, "usage: %s\n\n%s\n", d.synopsis, d.about)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		if d.env {
			fmt.Fprintf(w, "\nFlags (each also read from GATEWAY_<NAME>, dashes as underscores; the command line wins):\n")
		} else {
			fmt.Fprintf(w, "\nFlags:\n")
		}
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fmt.Fprintf(w, "\nExit status: %s\n", exitStatusDoc(fs.Name()))
}

func exitStatusDoc(name string) string {
	if name == "client" {
		return clientExitDoc
	}
	return "0 success, 1 failure, 2 command-line error."
}

func envName(flagName string) string {
	return "GATEWAY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// newFlagSet makes a command's flag set; parseArgs does the printing.
func newFlagSet(name string) *flag.FlagSet {
	return flag.NewFlagSet(name, flag.ContinueOnError)
}
