package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/gateway/token"
)

// The command line of the gateway binary: help, version, exit statuses,
// `key issue` never making up a secret, the client telling the truth, and
// the deployment examples' placeholder secrets refused.

// e2eDataDir returns a new data directory holding a random secret, as
// `gateway serve` would have generated it: `key issue` reads it.
func e2eDataDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	if err := os.WriteFile(filepath.Join(dir, token.SecretFileName), []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cliRunIn runs the gateway binary in dir to its end: stdout, stderr and
// the exit status.
func cliRunIn(t testing.TB, dir string, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	bin := e2eGatewayBinary(t)
	// Every command here ends by itself; one that serves instead is a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env, cmd.Dir = env, dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("gateway %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), 0
}

// cliCommands are the top-level commands `gateway --help` must list.
var cliCommands = []string{"serve", "key", "client", "wsify", "version", "help"}

// TestCLIHelp: --help, -h, -help and help exit 0 and list every command on
// stdout, nothing on stderr; every command and subcommand has its own
// --help (exit 0, its usage and flags on stdout), and `gateway help CMD`
// prints the same.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	env := e2eEnv()
	dir := t.TempDir()
	var top string
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"help"}, {"help", "help"}, {"help", "--help"}} {
		stdout, stderr, code := cliRunIn(t, dir, env, "", args...)
		if code != 0 || stderr != "" {
			t.Errorf("gateway %v: exit %d, stderr %q; want 0 and nothing", args, code, stderr)
		}
		if top == "" {
			top = stdout
		} else if stdout != top {
			t.Errorf("gateway %v printed another help than gateway --help:\n%s", args, stdout)
		}
	}
	_, commands, ok := strings.Cut(top, "\nCommands:\n")
	if !ok {
		t.Fatalf("gateway --help has no Commands section:\n%s", top)
	}
	for _, c := range cliCommands {
		if !regexp.MustCompile(`(?m)^  ` + c + ` +\S`).MatchString(commands) {
			t.Errorf("gateway --help does not list %q as a command:\n%s", c, top)
		}
	}
	for _, want := range []string{"key issue", "key revoke", "key revoke-subject", "Exit status: 0 success"} {
		if !strings.Contains(top, want) {
			t.Errorf("gateway --help does not mention %q", want)
		}
	}

	for _, c := range []struct {
		cmd  []string
		flag string // one of its flags the help must list
	}{
		{[]string{"serve"}, "-drain-window"},
		{[]string{"key"}, ""},
		{[]string{"key", "issue"}, "-subject"},
		{[]string{"key", "revoke"}, "-admin"},
		{[]string{"key", "revoke-subject"}, "-admin-token"},
		{[]string{"client"}, "-key"},
		{[]string{"wsify"}, "-listen-addr"},
		{[]string{"version"}, ""},
	} {
		name := strings.Join(c.cmd, " ")
		var first string
		for _, h := range []string{"--help", "-h", "-help"} {
			stdout, stderr, code := cliRunIn(t, dir, env, "", append(slices.Clone(c.cmd), h)...)
			if code != 0 || stderr != "" {
				t.Errorf("gateway %s %s: exit %d, stderr %q; want 0 and nothing", name, h, code, stderr)
			}
			if !strings.HasPrefix(stdout, "usage: gateway "+name) || !strings.Contains(stdout, "\nExit status: 0 ") {
				t.Errorf("gateway %s %s printed %q, want its usage and exit statuses", name, h, stdout)
			}
			if c.flag != "" && !strings.Contains(stdout, "\n  "+c.flag+" ") {
				t.Errorf("gateway %s %s does not list %s:\n%s", name, h, c.flag, stdout)
			}
			if first == "" {
				first = stdout
			} else if stdout != first {
				t.Errorf("gateway %s %s differs from --help", name, h)
			}
		}
		stdout, _, code := cliRunIn(t, dir, env, "", append([]string{"help"}, c.cmd...)...)
		if code != 0 || stdout != first {
			t.Errorf("gateway help %s: exit %d, %q; want exit 0 and what --help prints", name, code, stdout)
		}
	}
	// The client's help documents its own exit statuses.
	stdout, _, _ := cliRunIn(t, dir, env, "", "client", "--help")
	for _, want := range []string{"0 this client quit", "1 could not connect", "2 command-line error", "3 refused", "4 the session ended"} {
		if !strings.Contains(strings.Join(strings.Fields(stdout), " "), want) {
			t.Errorf("gateway client --help does not document exit status %q:\n%s", want, stdout)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("help wrote %d files in the working directory", len(entries))
	}
}

// TestCLIVersion: `gateway version` and `--version` print the version, the
// commit (the test binary is built with -buildvcs=false: unknown) and the
// Go version, and exit 0.
func TestCLIVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		stdout, stderr, code := cliRunIn(t, t.TempDir(), e2eEnv(), "", args...)
		lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
		if code != 0 || stderr != "" || len(lines) != 3 {
			t.Fatalf("gateway %v: exit %d, stdout %q, stderr %q; want 0 and three lines", args, code, stdout, stderr)
		}
		if v, ok := strings.CutPrefix(lines[0], "gateway "); !ok || v == "" || strings.Contains(v, " ") {
			t.Errorf("gateway %v: first line %q, want \"gateway VERSION\"", args, lines[0])
		}
		if lines[1] != "commit unknown (built without VCS information)" {
			t.Errorf("gateway %v: second line %q, want the unknown commit of a -buildvcs=false build", args, lines[1])
		}
		if want := "go " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH; lines[2] != want {
			t.Errorf("gateway %v: third line %q, want %q", args, lines[2], want)
		}
	}
}

// TestCLIUsageErrors: an unknown command or a bad flag exits 2 with the
// message and the usage on stderr, nothing on stdout; a failure that is not
// the command line's exits 1.
func TestCLIUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := e2eEnv()
	for _, c := range []struct {
		args       []string
		wantPrefix string // stderr's start
		wantUsage  string
	}{
		{[]string{"bogus"}, "gateway: unknown command \"bogus\"\n", "\nCommands:\n"},
		{[]string{"help", "bogus"}, "gateway: help: unknown command \"bogus\"\n", "\nCommands:\n"},
		{[]string{"serve", "--bogus"}, "gateway: serve: flag provided but not defined: -bogus\n", "usage: gateway serve"},
		{[]string{"--bogus"}, "gateway: serve: flag provided but not defined: -bogus\n", "usage: gateway serve"},
		{[]string{"serve", "--redis", "redis://127.0.0.1:1", "--redis-sentinel", "m@127.0.0.1:2"}, "gateway: serve: --redis, --redis-sentinel and --redis-cluster are exclusive: give one\n", "usage: gateway serve"},
		{[]string{"serve", "--redis", "redis://127.0.0.1:1", "--redis-cluster", "127.0.0.1:7000"}, "gateway: serve: --redis, --redis-sentinel and --redis-cluster are exclusive: give one\n", "usage: gateway serve"},
		{[]string{"serve", "--redis-sentinel", "m@127.0.0.1:2", "--redis-cluster", "127.0.0.1:7000"}, "gateway: serve: --redis, --redis-sentinel and --redis-cluster are exclusive: give one\n", "usage: gateway serve"},
		{[]string{"serve", "--redis-cluster", "127.0.0.1"}, "gateway: serve: --redis-cluster: seed node address \"127.0.0.1\": want host:port\n", "usage: gateway serve"},
		{[]string{"serve", "--redis-sentinel", "127.0.0.1:26379"}, "gateway: serve: --redis-sentinel \"127.0.0.1:26379\": want master-name@host:port[,host:port...] or redis://[user:password@]host:port[,host:port...]/master-name[/db]\n", "usage: gateway serve"},
		// A password in a URL is never repeated in an error.
		{[]string{"serve", "--redis", "redis://gw:s3cret@127.0.0.1:x/0"}, "gateway: serve: --redis \"redis://gw:xxxxx@127.0.0.1:x/0\": invalid port \":x\" after host\n", "usage: gateway serve"},
		{[]string{"serve", "--redis-cluster", "redis://gw:s3cret@127.0.0.1:7000/2"}, "gateway: serve: --redis-cluster \"redis://gw:xxxxx@127.0.0.1:7000/2\": a Redis Cluster has only database 0: want no path\n", "usage: gateway serve"},
		{[]string{"serve", "--redis-sentinel", "redis://gw:s3cret@127.0.0.1:26379"}, "gateway: serve: --redis-sentinel \"redis://gw:xxxxx@127.0.0.1:26379\": want the master's name as the path", "usage: gateway serve"},
		{[]string{"serve", "--redis-cluster", "redis://gw:s3cret@127.0.0.1:7000", "--redis-password-file", "/dev/null"}, "gateway: serve: --redis-cluster: the URL has a password and --redis-password-file /dev/null gives one too: give it once\n", "usage: gateway serve"},
		{[]string{"serve", "--redis-sentinel-username", "sn", "--redis-cluster", "127.0.0.1:7000"}, "gateway: serve: --redis-sentinel-username, GATEWAY_REDIS_SENTINEL_PASSWORD and --redis-sentinel-password-file need --redis-sentinel\n", "usage: gateway serve"},
		{[]string{"key"}, "gateway: key: want a subcommand: issue, revoke or revoke-subject\n", "usage: gateway key"},
		{[]string{"key", "bogus"}, "gateway: key: unknown subcommand \"bogus\"\n", "usage: gateway key"},
		{[]string{"key", "issue", "--bogus"}, "gateway: key issue: flag provided but not defined: -bogus\n", "usage: gateway key issue"},
		{[]string{"key", "issue"}, "gateway: key issue: --subject is required\n", "usage: gateway key issue"},
		{[]string{"key", "revoke"}, "gateway: key revoke: give one KEY argument or --id\n", "usage: gateway key revoke"},
		{[]string{"client", "--bogus"}, "gateway: client: flag provided but not defined: -bogus\n", "usage: gateway client"},
		{[]string{"client"}, "gateway: client: --key is required\n", "usage: gateway client"},
		{[]string{"wsify", "-bogus"}, "gateway: wsify: flag provided but not defined: -bogus\n", "usage: gateway wsify"},
		{[]string{"version", "extra"}, "gateway: version: unexpected argument \"extra\"\n", "usage: gateway version"},
		{[]string{"serve", "--ping-timeout", "xyz"}, "gateway: serve: invalid value \"xyz\" for flag -ping-timeout: parse error\n", "usage: gateway serve"},
	} {
		stdout, stderr, code := cliRunIn(t, dir, env, "", c.args...)
		if code != 2 || stdout != "" || !strings.HasPrefix(stderr, c.wantPrefix) || !strings.Contains(stderr, c.wantUsage) || strings.Contains(stderr, "s3cret") {
			t.Errorf("gateway %v: exit %d, stdout %q, stderr %q; want 2, nothing, and stderr %q... with %q",
				c.args, code, stdout, stderr, c.wantPrefix, c.wantUsage)
		}
	}
	// A value from the environment is the command line's too.
	_, stderr, code := cliRunIn(t, dir, e2eEnv("GATEWAY_PING_TIMEOUT=xyz"), "", "serve")
	if code != 2 || !strings.HasPrefix(stderr, `gateway: serve: GATEWAY_PING_TIMEOUT="xyz": parse error`) {
		t.Errorf("GATEWAY_PING_TIMEOUT=xyz: exit %d, stderr %q; want 2 naming the variable", code, stderr)
	}
	// Not the command line's fault: exit 1, no usage.
	_, stderr, code = cliRunIn(t, dir, env, "", "key", "revoke", "--admin", "http://"+e2eFreeAddr(t), "--id", "0123456789abcdef")
	if code != 1 || strings.Contains(stderr, "usage:") {
		t.Errorf("key revoke against nothing: exit %d, stderr %q; want 1 without usage", code, stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused command lines wrote %d files in the working directory", len(entries))
	}
}

// TestCLIKeyIssueNeverCreatesSecret: `key issue` from a directory without a
// data dir refuses (exit 1), names the absolute path it looked at and the
// other sources, and creates nothing; with the node's data dir, a secret
// file or GATEWAY_SECRET it says on stderr which one signed.
func TestCLIKeyIssueNeverCreatesSecret(t *testing.T) {
	t.Parallel()
	cwd := t.TempDir()
	env := e2eEnv()
	for _, c := range []struct {
		args []string
		dir  string // the data dir it must name
	}{
		{nil, filepath.Join(cwd, "data")},
		{[]string{"--data-dir", "elsewhere/data"}, filepath.Join(cwd, "elsewhere", "data")},
	} {
		args := append([]string{"key", "issue", "--subject", "alice"}, c.args...)
		stdout, stderr, code := cliRunIn(t, cwd, env, "", args...)
		want := "gateway: key issue: no secret to sign with, and none is created here: GATEWAY_SECRET is unset, " +
			"--secret-file is not given, and " + filepath.Join(c.dir, "secret") + " does not exist."
		if code != 1 || stdout != "" || !strings.HasPrefix(stderr, want) {
			t.Errorf("gateway %v in an empty directory: exit %d, stdout %q, stderr %q; want 1, nothing, and %q",
				args, code, stdout, stderr, want)
		}
	}
	_ = filepath.WalkDir(cwd, func(path string, d fs.DirEntry, err error) error {
		if err == nil && path != cwd {
			t.Errorf("key issue created %s", path)
		}
		return err
	})

	// Each source, named on stderr.
	data := e2eDataDir(t)
	secretFile := filepath.Join(t.TempDir(), "secrets")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{env, []string{"--data-dir", data}, "gateway: signing with the secret in " + filepath.Join(data, "secret") + "\n"},
		{env, []string{"--secret-file", secretFile, "--data-dir", data}, "gateway: signing with the secret in " + secretFile + " (--secret-file)\n"},
		{e2eEnv("GATEWAY_SECRET=" + testSecret + "," + testSecret + "-old"), []string{"--data-dir", data},
			"gateway: signing with GATEWAY_SECRET (2 secret(s), the first signs)\n"},
	} {
		args := append([]string{"key", "issue", "--subject", "alice"}, c.args...)
		stdout, stderr, code := cliRunIn(t, cwd, c.env, "", args...)
		if code != 0 || !strings.HasPrefix(stderr, c.want) || strings.Count(stdout, "\n") != 1 {
			t.Errorf("gateway %v: exit %d, stdout %q, stderr %q; want 0, a key, and %q", args, code, stdout, stderr, c.want)
		}
	}
	// A secret file that does not exist is named, absolute.
	_, stderr, code := cliRunIn(t, cwd, env, "", "key", "issue", "--subject", "alice", "--secret-file", "nope")
	if code != 1 || !strings.Contains(stderr, filepath.Join(cwd, "nope")) {
		t.Errorf("key issue --secret-file nope: exit %d, stderr %q; want 1 naming %s", code, stderr, filepath.Join(cwd, "nope"))
	}
}

// TestCLIClientTellsTheTruth: against a real node, the client says
// "authenticated" only after the server accepted the key, prints every close
// with its code and reason, and exits 3 when refused, 4 when the server ends
// the session, 1 when the upgrade is refused, 0 when it quits.
func TestCLIClientTellsTheTruth(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	p := e2eServe(t, env, "--data-dir", dir)
	good := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	stranger := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", e2eDataDir(t))
	revoked := e2eKeyIssue(t, env, "--subject", "bob", "--data-dir", dir)
	if _, stderr, code := e2eRun(t, env, "key", "revoke", "--admin", p.admin, revoked); code != 0 {
		t.Fatalf("key revoke: exit %d: %s", code, stderr)
	}
	const (
		connecting    = "connecting to %s\n"
		connected     = "connected (upgraded, hello received); authenticating\n"
		authenticated = "authenticated (the server accepted the key)\n"
	)
	for _, c := range []struct {
		name, key, url string
		code           int
		stderr         []string // in order, exactly
	}{
		{"bad key", stranger, p.ws, 3, []string{connecting, connected,
			"gateway: client: refused: the server closed the connection with 3001 \"invalid access key\" before authenticating it\n"}},
		{"revoked key", revoked, p.ws, 3, []string{connecting, connected,
			"gateway: client: refused: the server closed the connection with 3001 \"access key revoked\" before authenticating it\n"}},
		{"upgrade refused", good, strings.Replace(p.ws, "/api/ws", "/nope", 1), 1, []string{connecting,
			"gateway: client: upgrade refused: HTTP 404 Not Found"}},
		{"quit", good, p.ws, 0, []string{connecting, connected, authenticated, clientHelpLine,
			"closed: 1000 \"bye\" (this client quit)\n"}},
	} {
		stdout, stderr, code := cliRunIn(t, t.TempDir(), env, "", "client", "--url", c.url, "--key", c.key)
		var want string
		for _, s := range c.stderr {
			if strings.Contains(s, "%s") {
				s = strings.Replace(s, "%s", c.url, 1)
			}
			want += s
		}
		if code != c.code || !strings.HasPrefix(stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", c.name, code, stderr, c.code, want)
		}
		if c.code != 0 && strings.Contains(stderr, "authenticated (") {
			t.Errorf("%s: claims authentication: %q", c.name, stderr)
		}
		if c.code == 3 && stdout != "" {
			t.Errorf("%s: stdout %q, want nothing", c.name, stdout)
		}
	}

	// Revoked during the session: authenticated, then closed with 3004, exit 4.
	cl := e2eStartClient(t, env, "--url", p.ws, "--key", good, "--sub", "room")
	cl.waitLine(t, "subscribed room")
	if _, stderr, code := e2eRun(t, env, "key", "revoke-subject", "--admin", p.admin, "alice"); code != 0 {
		t.Fatalf("key revoke-subject: exit %d: %s", code, stderr)
	}
	go func() {
		for range cl.lines {
		}
		cl.done <- cl.cmd.Wait()
	}()
	var err error
	select {
	case err = <-cl.done:
	case <-time.After(waitFor):
		t.Fatal("client still running after its key was revoked")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Errorf("client revoked during its session: %v, want exit status 4", err)
	}
	want := strings.Replace(connecting, "%s", p.ws, 1) + connected + authenticated + clientHelpLine +
		"gateway: client: closed by the server: 3004 \"access key revoked\"\n"
	if got := cl.stderr.String(); got != want {
		t.Errorf("client revoked during its session printed on stderr\n%q\nwant\n%q", got, want)
	}
}

// TestCLIClientReconnects: the gateway process is killed (-9) and
// restarted on the same addresses, then stopped with SIGTERM (1001) and
// restarted again; each time the client prints the drop with its cause,
// every state of the reconnect, subscribes again, and prints a publish made
// after the restart. It still quits with 0.
func TestCLIClientReconnects(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	free := e2eFreeAddrs(t, 3)
	listen, admin, wsify := free[0], free[1], free[2]
	serve := func() *e2eProc {
		t.Helper()
		p, err := e2eServeAt(t, env, listen, admin, wsify, "--data-dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := serve()
	key := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	cl := e2eStartClient(t, env, "--url", p.ws, "--key", key, "--sub", "room")
	cl.waitLine(t, "subscribed room")
	reconnected := "connecting to " + p.ws + "\nconnected (upgraded, hello received); authenticating\n" +
		"authenticated (the server accepted the key)\n"
	for round, c := range []struct {
		stop func(*e2eProc)
		drop string // the line that reports it
	}{
		{func(p *e2eProc) { _ = p.cmd.Process.Kill() }, "connection lost without a close frame (1006): "},
		{func(p *e2eProc) { _ = p.cmd.Process.Signal(syscall.SIGTERM) }, `closed by the server: 1001 "server shutting down"; reconnecting` + "\n"},
	} {
		mark := len(cl.stderr.String())
		c.stop(p)
		<-p.exited
		e2eWaitFor(t, "the drop on the client's stderr", func() bool { return strings.Contains(cl.stderr.String()[mark:], c.drop) })
		p = serve()
		cl.waitLine(t, "subscribed room")
		// stderr is another pipe: what the client wrote there before
		// "subscribed room" may reach the buffer a moment later.
		reported := func() bool {
			after := cl.stderr.String()[mark:]
			i := strings.Index(after, c.drop)
			return i >= 0 && strings.LastIndex(after, reconnected) > i
		}
		deadline := time.Now().Add(waitFor)
		for !reported() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: after the drop the client printed\n%s\nwant %q and then %q", round, cl.stderr.String()[mark:], c.drop, reconnected)
			}
			time.Sleep(20 * time.Millisecond)
		}
		status, b, _ := e2eDo(t, http.MethodPost, p.admin+"/api/publish?channel=room", "text/plain", []byte(fmt.Sprintf("after restart %d", round)))
		if status != http.StatusOK {
			t.Fatalf("admin publish: %d %s", status, b)
		}
		cl.waitLine(t, fmt.Sprintf("message room after restart %d", round))
	}
	if err := cl.quit(t); err != nil {
		t.Errorf("client exited with %v after quit; stderr %s", err, cl.stderr.String())
	}
	stderr := cl.stderr.String()
	t.Logf("client's stderr:\n%s", stderr)
	if n := strings.Count(stderr, clientHelpLine); n != 1 {
		t.Errorf("the help line printed %d times, want once (the first authentication):\n%s", n, stderr)
	}
	if !strings.HasSuffix(stderr, "closed: 1000 \"bye\" (this client quit)\n") || strings.Contains(stderr, "gateway: client:") {
		t.Errorf("stderr after quit:\n%s", stderr)
	}
}

// e2eWaitFor polls cond until it holds, within waitFor.
func e2eWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCLIClientNoReconnect: with --no-reconnect, the first close ends the
// client with exit 4 and the close's code and reason, and nothing is
// retried.
func TestCLIClientNoReconnect(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	p := e2eServe(t, env, "--data-dir", dir)
	key := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	cl := e2eStartClient(t, env, "--url", p.ws, "--key", key, "--sub", "room", "--no-reconnect")
	cl.waitLine(t, "subscribed room")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range cl.lines {
		}
		cl.done <- cl.cmd.Wait()
	}()
	var err error
	select {
	case err = <-cl.done:
	case <-time.After(waitFor):
		t.Fatal("client with --no-reconnect still running after the server closed")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Errorf("client: %v, want exit status 4", err)
	}
	want := "connecting to " + p.ws + "\nconnected (upgraded, hello received); authenticating\n" +
		"authenticated (the server accepted the key)\n" + clientHelpLine +
		"gateway: client: closed by the server: 1001 \"server shutting down\"\n"
	if got := cl.stderr.String(); got != want {
		t.Errorf("stderr\n%q\nwant\n%q", got, want)
	}
}

// TestCLIClientCommands: every command through the package: refusals come
// back as the server's "error CODE TEXT" lines and the session goes on;
// echo, ping, unsub and a payload that is not UTF-8 (printed in hex);
// --recover on a channel without history prints the server's refusal.
func TestCLIClientCommands(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	p := e2eServe(t, env, "--data-dir", dir)
	key := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)

	cl := e2eStartClient(t, env, "--url", p.ws, "--key", key)
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(cl.stdin, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	say("sub room")
	cl.waitLine(t, "subscribed room")
	say("echo 1")
	say("pub room hi")
	cl.waitLine(t, "message room hi")
	say("pub server:news x")
	cl.waitLine(t, `error 403 publish "server:news": server: channels are read-only for clients`)
	say("sub user:bob")
	cl.waitLine(t, `error 403 subscribe "user:bob": personal channel of another subject`)
	say("batch 2000")
	cl.waitLine(t, "error 400 setting batch window: 2000 ms is outside 0..1000")
	say("name alice's terminal")
	say("ping")
	select {
	case l := <-cl.lines:
		ms, err := strconv.ParseInt(strings.TrimPrefix(l, "pong "), 10, 64)
		if !strings.HasPrefix(l, "pong ") || err != nil || time.UnixMilli(ms).Before(time.Now().Add(-time.Hour)) {
			t.Fatalf("after ping: %q, want pong and the server's clock in ms", l)
		}
	case <-time.After(waitFor):
		t.Fatal("no pong")
	}
	status, b, _ := e2eDo(t, http.MethodPost, p.admin+"/api/publish?channel=room", "application/octet-stream", []byte{0xff, 0x00, 'a'})
	if status != http.StatusOK {
		t.Fatalf("admin publish: %d %s", status, b)
	}
	cl.waitLine(t, "message room ff 00 61")
	say("unsub room")
	say("sub marker")
	cl.waitLine(t, "subscribed marker")
	for _, ch := range []string{"room", "marker"} {
		if status, b, _ := e2eDo(t, http.MethodPost, p.admin+"/api/publish?channel="+ch, "text/plain", []byte("after unsub")); status != http.StatusOK {
			t.Fatalf("admin publish: %d %s", status, b)
		}
	}
	cl.waitLine(t, "message marker after unsub") // and nothing on room before it
	say("bogus")
	if err := cl.quit(t); err != nil {
		t.Errorf("client exited with %v after quit; stderr %s", err, cl.stderr.String())
	}
	if stderr := cl.stderr.String(); strings.Count(stderr, clientHelpLine) != 2 {
		t.Errorf("an unknown command did not print the commands:\n%s", stderr)
	}

	// --recover: the server keeps no history yet, so every SubscribeFrom is
	// refused with its Error 400, printed, and the client goes on.
	stdout, stderr, code := cliRunIn(t, t.TempDir(), env, "sub other\nping\n", "client", "--url", p.ws, "--key", key, "--sub", "room", "--recover")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 0 || len(lines) != 3 || lines[0] != `error 400 subscribe from "room": channel keeps no history` ||
		lines[1] != `error 400 subscribe from "other": channel keeps no history` || !strings.HasPrefix(lines[2], "pong ") {
		t.Errorf("--recover on channels without history: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// clientHelpLine is what the client prints once authenticated.
const clientHelpLine = "commands: sub CH | unsub CH | pub CH TEXT | echo 0|1 | name NAME | batch MS | ping | quit\n"

// deployPlaceholders extracts every placeholder secret the deployment
// examples ship, from the files themselves: values of GATEWAY_SECRET,
// GATEWAY_ADMIN_TOKEN and any other GATEWAY_*SECRET/TOKEN/KEY in env files
// (commented-out ones too), their ${VAR:-default} in compose, the stringData
// of k8s Secrets, and any word that reads REPLACE-... or ...CHANGE-ME...
// anywhere (Grafana's own password default is not the gateway's concern).
// It returns value -> the files it was found in.
func deployPlaceholders(t *testing.T) map[string][]string {
	t.Helper()
	envLine := regexp.MustCompile(`^\s*#?\s*(?:export\s+)?(GATEWAY_[A-Z0-9_]*(?:SECRET|TOKEN|KEY))=(.*)$`)
	composeDefault := regexp.MustCompile(`\$\{GATEWAY_[A-Z0-9_]*(?:SECRET|TOKEN|KEY):?-([^}]*)\}`)
	word := regexp.MustCompile(`(?i)\bREPLACE[A-Za-z0-9_-]*|[A-Za-z0-9_-]*CHANGE-?ME[A-Za-z0-9_-]*`)
	found := map[string][]string{}
	add := func(v, file string) {
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		if v == "" || strings.HasPrefix(v, "$") {
			return // a command substitution or a reference, not a value
		}
		if !slices.Contains(found[v], file) {
			found[v] = append(found[v], file)
		}
	}
	err := filepath.WalkDir("../deploy", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".json") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		inStringData := false
		for line := range strings.SplitSeq(string(b), "\n") {
			if m := envLine.FindStringSubmatch(line); m != nil {
				add(m[2], rel)
			}
			for _, m := range composeDefault.FindAllStringSubmatch(line, -1) {
				add(m[1], rel)
			}
			for _, w := range word.FindAllString(line, -1) {
				if strings.Contains(w, "-") { // a value, not the English word "replace"
					add(w, rel)
				}
			}
			// stringData: of a Secret; its entries are indented below it.
			switch {
			case strings.HasPrefix(line, "stringData:"):
				inStringData = true
			case inStringData && strings.HasPrefix(line, "  ") && !strings.HasPrefix(strings.TrimSpace(line), "#"):
				if _, v, ok := strings.Cut(line, ":"); ok {
					add(v, rel)
				}
			case !strings.HasPrefix(line, " "):
				inStringData = false
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The extraction must keep finding what the examples are known to hold.
	for _, file := range []string{"deploy/k8s/secret.example.yaml", "deploy/example.env", "deploy/systemd/gateway.env.example"} {
		n := 0
		for _, files := range found {
			if slices.Contains(files, file) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no placeholder extracted from %s: the extraction is broken", file)
		}
	}
	return found
}

// TestDeployPlaceholderSecretsRefused: every placeholder in deploy/ is
// refused at start as GATEWAY_SECRET (serve, key issue, wsify), in a secret
// file (serve), as --admin-token and as GATEWAY_REDIS_PASSWORD (serve),
// with a message naming where it came from; the process exits 1 and
// listens on nothing.
func TestDeployPlaceholderSecretsRefused(t *testing.T) {
	t.Parallel()
	found := deployPlaceholders(t)
	if len(found) < 4 {
		t.Fatalf("only %d placeholders found in deploy/: %v", len(found), found)
	}
	t.Logf("placeholders in deploy/: %v", found)
	const refused = "is a placeholder from the deployment examples, not a secret"
	for p, files := range found {
		data := t.TempDir()
		secretFile := filepath.Join(t.TempDir(), "secrets")
		if err := os.WriteFile(secretFile, []byte(p+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		addrs := []string{"--listen", e2eFreeAddr(t), "--admin-listen", e2eFreeAddr(t), "--wsify-listen", "", "--data-dir", data}
		for _, c := range []struct {
			name  string
			env   []string
			args  []string
			where string // the source the message must name
		}{
			{"serve GATEWAY_SECRET", e2eEnv("GATEWAY_SECRET=" + p), append([]string{"serve"}, addrs...), "GATEWAY_SECRET: "},
			{"serve rotation list", e2eEnv("GATEWAY_SECRET=" + testSecret + "," + p), append([]string{"serve"}, addrs...), "GATEWAY_SECRET: "},
			{"serve --secret-file", e2eEnv(), append([]string{"serve", "--secret-file", secretFile}, addrs...), secretFile},
			{"serve --admin-token", e2eEnv("GATEWAY_SECRET=" + testSecret), append([]string{"serve", "--admin-token", p}, addrs...), "--admin-token (GATEWAY_ADMIN_TOKEN) "},
			{"serve GATEWAY_ADMIN_TOKEN", e2eEnv("GATEWAY_SECRET="+testSecret, "GATEWAY_ADMIN_TOKEN="+p), append([]string{"serve"}, addrs...), "--admin-token (GATEWAY_ADMIN_TOKEN) "},
			{"serve GATEWAY_REDIS_PASSWORD", e2eEnv("GATEWAY_SECRET="+testSecret, "GATEWAY_REDIS_PASSWORD="+p), append([]string{"serve", "--redis-cluster", "127.0.0.1:1"}, addrs...), "the Redis password from GATEWAY_REDIS_PASSWORD "},
			{"key issue", e2eEnv("GATEWAY_SECRET=" + p), []string{"key", "issue", "--subject", "alice", "--data-dir", data}, "GATEWAY_SECRET: "},
			{"wsify", e2eEnv("GATEWAY_SECRET=" + p), []string{"wsify", "-listen-addr", e2eFreeAddr(t)}, "GATEWAY_SECRET: "},
		} {
			stdout, stderr, code := cliRunIn(t, t.TempDir(), c.env, "", c.args...)
			if code != 1 || stdout != "" || !strings.Contains(stderr, c.where) || !strings.Contains(stderr, refused) ||
				strings.Contains(stderr, "listening") {
				t.Errorf("placeholder %q (from %v), %s: exit %d, stdout %q, stderr %q; want exit 1 and a refusal naming %q",
					p, files, c.name, code, stdout, stderr, c.where)
			}
		}
		if entries, _ := os.ReadDir(data); len(entries) != 0 {
			t.Errorf("placeholder %q: the refused commands wrote %d files in the data dir", p, len(entries))
		}
	}
}
