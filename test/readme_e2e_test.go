package test

// The README's recipes, run as written: TestReadmeTryIt and
// TestReadmeSeveralNodes read the shell blocks of README.md's "Try it" and
// "Several nodes" sections (the README itself, never a copy, so the two
// cannot drift apart) and run them against the freshly built binary.
//
// How a block is run, and the only liberties taken with it:
//
//   - Each ```sh block of the section is one terminal: a fresh bash per line
//     that sees the variables the block's earlier lines assigned (exported
//     ones in its environment, the others as shell variables), in a working
//     directory laid out like a clone after `make build`: bin/gateway is the
//     binary e2eGatewayBinary built.
//   - `make run` runs the Makefile's own run recipe (read from the Makefile,
//     its variables expanded); its `build` prerequisite is that binary.
//   - Ports: every loopback port the README writes (8080, 8081, 3000 for
//     node 1 and the defaults, 8090, 8091, 3010 for node 2, 6379 for Redis)
//     is replaced by a free loopback port, Redis's by the test's own
//     redis-server; a port the README uses that this map lacks fails the
//     test. The binary's defaults (which `make run`, `gateway client` and
//     `gateway key revoke` rely on) are moved to the same free ports through
//     their environment variables (GATEWAY_LISTEN, GATEWAY_ADMIN_LISTEN,
//     GATEWAY_WSIFY_LISTEN, GATEWAY_URL, GATEWAY_ADMIN): nothing binds
//     outside loopback, and two nodes that forget --wsify-listen collide
//     here as they would on the README's ports.
//   - A line that starts a server or an interactive client (`make run`,
//     `gateway serve`, `gateway client` with nothing piped in) or ends with
//     `&` runs in the background, as in a terminal; after a server the test
//     waits until its /readyz answers 200, as a reader waits for it to
//     start. Every other line must exit 0 within readmeLineTimeout.
//   - A comment `# prints: X` says X appears on that command's standard
//     output; `# ... client ... prints: X` (alice's client, the client on
//     node 2) says it appears on the standard output of the interactive
//     client the section started last. The test waits for each, in order.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
)

// readmeLineTimeout bounds one command of a block that is not a server.
const readmeLineTimeout = 20 * time.Second

// readmePorts are the loopback ports the README's recipes write.
var readmePorts = []string{"8080", "8081", "3000", "8090", "8091", "3010", "6379"}

func TestReadmeTryIt(t *testing.T) {
	r := newReadmeRun(t, nil)
	r.section("Try it")
}

func TestReadmeSeveralNodes(t *testing.T) {
	srv := redistest.Start(t)
	r := newReadmeRun(t, srv)
	r.section("Several nodes")
}

// readmeRun runs the blocks of one README section.
type readmeRun struct {
	t      *testing.T
	dir    string            // the working directory: a clone after make build
	ports  map[string]string // README port -> free port
	redis  string            // the README's Redis URL prefix -> this one
	base   []string          // every line's environment
	client *readmeProc       // the interactive client started last
	procs  []*readmeProc
}

type readmeProc struct {
	line           string
	cmd            *exec.Cmd
	stdout, stderr *e2eLockedBuffer
	exited         chan struct{}
	err            error
}

func newReadmeRun(t *testing.T, srv *redistest.Server) *readmeRun {
	bin := e2eGatewayBinary(t)
	r := &readmeRun{t: t, dir: t.TempDir(), ports: map[string]string{}}
	if err := os.MkdirAll(filepath.Join(r.dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(r.dir, "bin", "gateway")); err != nil {
		t.Fatal(err)
	}
	for _, p := range readmePorts {
		_, port, _ := net.SplitHostPort(e2eFreeAddr(t))
		r.ports[p] = port
	}
	if srv != nil {
		u, err := url.Parse(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if host, port, _ := net.SplitHostPort(u.Host); host == "127.0.0.1" {
			r.ports["6379"] = port
		} else {
			r.redis = "redis://" + u.Host
		}
	}
	loop := func(p string) string { return "127.0.0.1:" + r.ports[p] }
	r.base = e2eEnv(
		"GATEWAY_LISTEN="+loop("8080"), "GATEWAY_ADMIN_LISTEN="+loop("8081"), "GATEWAY_WSIFY_LISTEN="+loop("3000"),
		"GATEWAY_URL=ws://"+loop("8080")+"/api/ws", "GATEWAY_ADMIN=http://"+loop("8081"),
	)
	t.Cleanup(r.stop)
	return r
}

// stop kills what the blocks left running (each in its own process group:
// make run's shell and its gateway, `serve ... &` lines).
func (r *readmeRun) stop() {
	for _, p := range r.procs {
		if p.cmd.Process != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
		<-p.exited
		if r.t.Failed() {
			r.t.Logf("%q\n--- stdout:\n%s--- stderr:\n%s", p.line, p.stdout.String(), p.stderr.String())
		}
	}
}

// section runs every shell block of the README section titled title.
func (r *readmeRun) section(title string) {
	blocks := readmeShellBlocks(r.t, title)
	if len(blocks) == 0 {
		r.t.Fatalf("README.md: no ```sh block under ## %s", title)
	}
	for i, b := range blocks {
		r.t.Logf("%s, block %d (a terminal of its own)", title, i+1)
		r.block(b)
	}
}

// readmeShellBlocks returns the ```sh blocks of a README section, one entry
// per command (continuation lines joined).
func readmeShellBlocks(t *testing.T, title string) [][]string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]string
	in, fence := false, false
	var cur []string
	pending := ""
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if !fence && strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == title
			continue
		}
		if !in {
			continue
		}
		switch {
		case !fence && strings.HasPrefix(line, "```sh"):
			fence, cur = true, nil
		case fence && strings.HasPrefix(line, "```"):
			fence = false
			blocks = append(blocks, cur)
		case fence:
			if strings.HasSuffix(line, "\\") {
				pending += strings.TrimSuffix(line, "\\") + " "
				continue
			}
			if l := strings.TrimSpace(pending + line); l != "" && !strings.HasPrefix(l, "#") {
				cur = append(cur, l)
			}
			pending = ""
		}
	}
	return blocks
}

var (
	readmeAssign  = regexp.MustCompile(`^(export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)
	readmeLoop    = regexp.MustCompile(`(127\.0\.0\.1|localhost):(\d+)`)
	readmeAnyPort = regexp.MustCompile(`:(\d{2,5})\b`)
	readmeAdmin   = regexp.MustCompile(`--admin-listen[ =](\S+)`)
	readmePrints  = regexp.MustCompile(`^(.*?)\bprints:\s*(.+)$`)
)

// block runs one terminal's commands.
func (r *readmeRun) block(lines []string) {
	t := r.t
	exported := map[string]string{}
	shellVars := map[string]string{}
	for _, raw := range lines {
		code, comment := readmeSplitComment(raw)
		code = r.substitute(code)
		background := strings.HasSuffix(code, "&")
		code = strings.TrimSpace(strings.TrimSuffix(code, "&"))
		server := code == "make run" || regexp.MustCompile(`(^|/)gateway serve\b`).MatchString(code)
		interactive := regexp.MustCompile(`(^|/)gateway client\b`).MatchString(code) && !strings.Contains(code, "|")
		if code == "make run" {
			code = readmeMakeRecipe(t, "run")
		}
		background = background || server || interactive

		env := slices.Clone(r.base)
		for k, v := range exported {
			env = append(env, k+"="+v)
		}
		var script strings.Builder
		script.WriteString("set -e\n")
		for k, v := range shellVars {
			fmt.Fprintf(&script, "%s='%s'\n", k, strings.ReplaceAll(v, "'", `'\''`))
		}
		if m := readmeAssign.FindStringSubmatch(code); m != nil && !background {
			fmt.Fprintf(&script, "%s\nprintf '%%s' \"$%s\"\n", code, m[2])
			out := r.run(raw, script.String(), env)
			if m[1] != "" {
				exported[m[2]] = out
			} else {
				shellVars[m[2]] = out
			}
			continue
		}
		script.WriteString(code + "\n")
		var p *readmeProc
		if background {
			p = r.start(raw, script.String(), env)
			if server {
				admin := envValue(env, "GATEWAY_ADMIN_LISTEN")
				if m := readmeAdmin.FindStringSubmatch(code); m != nil {
					admin = m[1]
				}
				r.waitReady(p, admin)
			}
			if interactive {
				r.client = p
			}
		} else {
			out := r.run(raw, script.String(), env)
			p = &readmeProc{stdout: &e2eLockedBuffer{}}
			_, _ = p.stdout.Write([]byte(out))
		}
		if m := readmePrints.FindStringSubmatch(comment); m != nil {
			target := p
			if strings.Contains(m[1], "client") {
				if r.client == nil {
					t.Fatalf("%q: a client prints, but no interactive client was started before", raw)
				}
				target = r.client
			}
			r.waitOutput(raw, target, strings.TrimSpace(m[2]))
		}
	}
}

// substitute moves the README's ports to the test's free ones.
func (r *readmeRun) substitute(code string) string {
	code = readmeLoop.ReplaceAllStringFunc(code, func(s string) string {
		m := readmeLoop.FindStringSubmatch(s)
		free, ok := r.ports[m[2]]
		if !ok {
			r.t.Fatalf("README.md uses port %s in %q: add it to readmePorts", m[2], code)
		}
		return m[1] + ":" + free
	})
	if r.redis != "" { // a REDIS_URL elsewhere than loopback
		code = strings.ReplaceAll(code, "redis://127.0.0.1:"+r.ports["6379"], r.redis)
	}
	for _, m := range readmeAnyPort.FindAllStringSubmatch(code, -1) {
		if !slices.Contains(slices.Collect(mapValues(r.ports)), m[1]) && !strings.Contains(r.redis, ":"+m[1]) {
			r.t.Fatalf("README.md: %q listens or connects on port %s outside loopback or the test's map", code, m[1])
		}
	}
	return code
}

func mapValues(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// readmeSplitComment cuts a shell line at its first # outside quotes that
// starts a word.
func readmeSplitComment(line string) (code, comment string) {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
		}
	}
	return strings.TrimSpace(line), ""
}

// readmeMakeRecipe returns a Makefile target's recipe as one shell script,
// its variables expanded; the target's prerequisites must be `build` only,
// which the test's binary stands for.
func readmeMakeRecipe(t *testing.T, target string) string {
	t.Helper()
	data, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	assign := regexp.MustCompile(`^([A-Z_]+)\s*(?::=|\?=|=)\s*(.*)$`)
	var recipe []string
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if m := assign.FindStringSubmatch(line); m != nil {
			vars[m[1]] = strings.TrimSpace(m[2])
			continue
		}
		if pre, ok := strings.CutPrefix(line, target+":"); ok {
			if f := strings.Fields(pre); !slices.Equal(f, []string{"build"}) {
				t.Fatalf("Makefile: %s's prerequisites are %v; the test stands its binary for `build` only", target, f)
			}
			in = true
			continue
		}
		if in {
			if !strings.HasPrefix(line, "\t") {
				break
			}
			recipe = append(recipe, strings.TrimPrefix(strings.TrimPrefix(line, "\t"), "@"))
		}
	}
	if len(recipe) == 0 {
		t.Fatalf("Makefile: no recipe for %s", target)
	}
	ref := regexp.MustCompile(`\$\(([A-Z_]+)\)`)
	script := strings.Join(recipe, "\n")
	for range 3 { // variables defined through others
		script = ref.ReplaceAllStringFunc(script, func(s string) string {
			name := ref.FindStringSubmatch(s)[1]
			v, ok := vars[name]
			if !ok {
				t.Fatalf("Makefile: %s uses $(%s), which the test cannot expand", target, name)
			}
			return v
		})
	}
	if vars["BIN"] != "bin/gateway" {
		t.Fatalf("Makefile: BIN is %q; the README and this test expect bin/gateway", vars["BIN"])
	}
	return strings.ReplaceAll(script, "$$", "$")
}

// run runs a command to its end and returns its standard output.
func (r *readmeRun) run(line, script string, env []string) string {
	ctx, cancel := context.WithTimeout(context.Background(), readmeLineTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir, cmd.Env = r.dir, env
	stdout, stderr := &e2eLockedBuffer{}, &e2eLockedBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		r.t.Fatalf("README line %q: %v\nstdout: %s\nstderr: %s", line, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// start runs a command in the background, in a process group of its own.
func (r *readmeRun) start(line, script string, env []string) *readmeProc {
	p := &readmeProc{line: line, stdout: &e2eLockedBuffer{}, stderr: &e2eLockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command("bash", "-c", script)
	p.cmd.Dir, p.cmd.Env = r.dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// An interactive client reads commands: give it a stdin that stays open.
	pr, pw, err := os.Pipe()
	if err != nil {
		r.t.Fatal(err)
	}
	p.cmd.Stdin = pr
	if err := p.cmd.Start(); err != nil {
		r.t.Fatalf("README line %q: %v", line, err)
	}
	pr.Close()
	r.procs = append(r.procs, p)
	go func() { p.err = p.cmd.Wait(); pw.Close(); close(p.exited) }()
	return p
}

// waitReady waits for a server line's /readyz to answer 200.
func (r *readmeRun) waitReady(p *readmeProc, admin string) {
	deadline := time.Now().Add(15 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-p.exited:
			r.t.Fatalf("README line %q exited before ready (%v):\n%s", p.line, p.err, p.stderr.String())
		default:
		}
		if resp, err := c.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("README line %q: /readyz on %s not 200 within 15 s:\n%s", p.line, admin, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitOutput waits for want on a line p printed: standard output or
// error, both of which the reader's terminal shows.
func (r *readmeRun) waitOutput(line string, p *readmeProc, want string) {
	deadline := time.Now().Add(waitFor)
	for {
		for l := range strings.SplitSeq(p.stdout.String()+"\n"+p.stderr.String(), "\n") {
			if strings.Contains(l, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("README line %q says %q is printed; within %v the output was:\n%s\n--- stderr:\n%s", line, want, waitFor, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestListenerInUseNamesFlag: a port already taken names the listener and
// its flag, so the operator of two nodes on one machine changes the right
// one (both default to wsify's :3000).
func TestListenerInUseNamesFlag(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		cfg        func(*node.Config, string)
	}{
		{"wsify", "wsify listener (--wsify-listen %s): listen tcp %s: bind: address already in use: another process listens there; choose another port with --wsify-listen",
			func(c *node.Config, a string) { c.WsifyListen = a }},
		{"main", "main listener (--listen %s): listen tcp %s: bind: address already in use",
			func(c *node.Config, a string) { c.Listen = a }},
		{"admin", "admin listener (--admin-listen %s): listen tcp %s: bind: address already in use",
			func(c *node.Config, a string) { c.AdminListen = a }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			addr := l.Addr().String()
			cfg := node.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: t.TempDir(),
				Secret: testSecret, EventLoops: 1, WsifyListen: "127.0.0.1:0",
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			tc.cfg(&cfg, addr)
			n, err := node.Start(cfg)
			if err == nil {
				_ = n.Shutdown(context.Background())
				t.Fatalf("node started on %s, which another socket listens on", addr)
			}
			if want := fmt.Sprintf(tc.want, addr, addr); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q\nwant it to contain %q", err, want)
			}
		})
	}
}
