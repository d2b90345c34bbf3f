package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// The gateway binary, built once per test run (offline, from the module
// cache) into os.TempDir()/wsgateway-e2e-<pid>. There is no TestMain to
// remove it at the end of the run, so each build removes the directories
// of earlier runs whose process is gone.
var (
	e2eBinOnce sync.Once
	e2eBinPath string
	e2eBinErr  error
)

const e2eBinDirPrefix = "wsgateway-e2e-"

func e2eGatewayBinary(t testing.TB) string {
	t.Helper()
	e2eBinOnce.Do(func() {
		e2eRemoveStaleBinaries()
		dir := filepath.Join(os.TempDir(), e2eBinDirPrefix+strconv.Itoa(os.Getpid()))
		if e2eBinErr = os.MkdirAll(dir, 0o700); e2eBinErr != nil {
			return
		}
		goBin := filepath.Join(build.Default.GOROOT, "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		bin := filepath.Join(dir, "gateway")
		cmd := exec.Command(goBin, "build", "-o", bin, "github.com/wsgateway/gateway/cmd/gateway")
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly -buildvcs=false", "GOTOOLCHAIN=local")
		out, err := cmd.CombinedOutput()
		if err != nil {
			e2eBinErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		e2eBinPath = bin
	})
	if e2eBinErr != nil {
		t.Fatal(e2eBinErr)
	}
	return e2eBinPath
}

func e2eRemoveStaleBinaries() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), e2eBinDirPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), e2eBinDirPrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.RemoveAll(d)
		}
	}
}

// e2eEnv is the environment of a child: ours without any GATEWAY_
// variable, plus extra.
func e2eEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GATEWAY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// e2eLockedBuffer collects a child's output safely while it runs.
type e2eLockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *e2eLockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *e2eLockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// e2eRun runs the gateway binary to its end and returns stdout, stderr and
// the exit code.
func e2eRun(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	bin := e2eGatewayBinary(t) // may wait for the build
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("gateway %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// e2eKeyIssue runs `gateway key issue` and returns the key text.
func e2eKeyIssue(t testing.TB, env []string, args ...string) string {
	t.Helper()
	stdout, stderr, code := e2eRun(t, env, append([]string{"key", "issue"}, args...)...)
	if code != 0 {
		t.Fatalf("key issue %v: exit %d: %s", args, code, stderr)
	}
	text := strings.TrimSuffix(stdout, "\n")
	if strings.ContainsAny(text, "\n=+/ ") || text == "" {
		t.Fatalf("key issue printed %q, want one base64url line", stdout)
	}
	if !strings.Contains(stderr, "key id ") {
		t.Errorf("key issue stderr %q, want the key id", stderr)
	}
	return text
}

// e2eFreeAddr returns a loopback address free a moment ago.
func e2eFreeAddr(t testing.TB) string {
	t.Helper()
	return e2eFreeAddrs(t, 1)[0]
}

// e2eFreeAddrs returns n distinct loopback addresses free a moment ago:
// all are held open together while picked, so the kernel cannot hand out
// one port twice (one process's two listeners on one port fail its start).
func e2eFreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs[i] = l.Addr().String()
	}
	return addrs
}

// e2eProc is a running `gateway serve`.
type e2eProc struct {
	cmd       *exec.Cmd
	ws, admin string // ws URL, admin base URL
	stderr    *e2eLockedBuffer
	exited    chan struct{}
	err       error // Wait's result, once exited is closed
}

// e2eServe starts `gateway serve` on free ports with the given extra
// arguments and waits until /readyz answers 200. The process is killed at
// the end of the test if still running.
func e2eServe(t testing.TB, env []string, args ...string) *e2eProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		p, err := e2eTryServe(t, env, args...)
		if err == nil {
			return p
		}
		// A free port may be taken by someone else before we bind it.
		if attempt < 2 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		t.Fatal(err)
	}
}

func e2eTryServe(t testing.TB, env []string, args ...string) (*e2eProc, error) {
	a := e2eFreeAddrs(t, 3)
	return e2eServeAt(t, env, a[0], a[1], a[2], args...)
}

// e2eServeAt starts `gateway serve` on the given main, admin and wsify
// addresses and waits until /readyz answers 200.
func e2eServeAt(t testing.TB, env []string, listen, admin, wsify string, args ...string) (*e2eProc, error) {
	all := append([]string{"serve", "--listen", listen, "--admin-listen", admin, "--event-loops", "1",
		"--wsify-listen", wsify}, args...)
	p := &e2eProc{
		cmd: exec.Command(e2eGatewayBinary(t), all...),
		ws:  "ws://" + listen + "/api/ws", admin: "http://" + admin,
		stderr: &e2eLockedBuffer{}, exited: make(chan struct{}),
	}
	p.cmd.Env = env
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("gateway serve stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("gateway serve exited before ready (%v): %s", p.err, p.stderr.String())
		default:
		}
		resp, err := client.Get(p.admin + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(b) == "{\"status\":\"ready\"}\n" {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("gateway serve not ready within 15 s: %s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// e2eWaitExit waits for the process to end and returns its exit code.
func (p *e2eProc) e2eWaitExit(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("gateway serve still running after %v", within)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait: %v", p.err)
	}
	return 0
}

// e2eDialURL upgrades to url and checks the hello.
func e2eDialURL(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ctx := testCtx(t)
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	typ, msg, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || !bytes.Equal(msg, packet.Hello) {
		t.Fatalf("hello: %v % x %v", typ, msg, err)
	}
	return c
}

// e2eFanOutAcross subscribes alice on node to and has bob publish on node
// from; alice must get it (the nodes share a Redis). It returns alice's
// connection, still subscribed to "room".
func e2eFanOutAcross(t testing.TB, env []string, from, to *e2eProc) *websocket.Conn {
	t.Helper()
	alice := e2eConnectURL(t, to.ws, e2eKeyIssue(t, env, "--subject", "alice"))
	bob := e2eConnectURL(t, from.ws, e2eKeyIssue(t, env, "--subject", "bob"))
	subscribe(t, alice, "room")
	send(t, bob, packet.AppendPublish(nil, "room", []byte("across")))
	e2eExpectMessage(t, alice, "room", []byte("across"))
	return alice
}

// e2eConnectURL dials and authenticates with the key text, expecting Pong.
func e2eConnectURL(t testing.TB, url, keyText string) *websocket.Conn {
	t.Helper()
	key, err := token.DecodeText(keyText)
	if err != nil {
		t.Fatalf("key %q: %v", keyText, err)
	}
	c := e2eDialURL(t, url)
	e2eAuth(t, c, key)
	if p := readOne(t, c); p.ID != packet.PacketPong {
		t.Fatalf("after auth got %s, want Pong", describe(p))
	}
	return c
}

// TestProcessServeIssueConnect: a key issued by the CLI with the same data
// dir (the secret `gateway serve` generated there) authenticates on it.
func TestProcessServeIssueConnect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := e2eEnv()
	p := e2eServe(t, env, "--data-dir", dir)
	text := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	raw, err := token.DecodeText(text)
	if err != nil || len(raw) != token.MinKeyLen+len("alice")-1 {
		t.Fatalf("issued key %q: %d bytes, %v", text, len(raw), err)
	}
	c := e2eConnectURL(t, p.ws, text)
	subscribe(t, c, "room")
	e2ePing(t, c)
	// A key issued with another data dir has another secret.
	stranger := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", e2eDataDir(t))
	s := e2eDialURL(t, p.ws)
	strangerRaw, _ := token.DecodeText(stranger)
	e2eAuth(t, s, strangerRaw)
	expectClose(t, s, websocket.StatusCode(packet.CloseUnauthorized), "invalid access key")
}

// TestProcessEnvConfig: GATEWAY_PING_TIMEOUT and GATEWAY_SECRET configure
// serve and key issue without flags.
func TestProcessEnvConfig(t *testing.T) {
	t.Parallel()
	env := e2eEnv("GATEWAY_SECRET=process-env-secret-0123456789-0123456789-xyz", "GATEWAY_PING_TIMEOUT=2s")
	// Different data dirs: only the shared GATEWAY_SECRET can make the key verify.
	text := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", t.TempDir())
	p := e2eServe(t, env, "--data-dir", t.TempDir())
	c := e2eConnectURL(t, p.ws, text)
	expectClose(t, c, websocket.StatusCode(packet.CloseTimeout), "ping timeout: no ping within 2s")
}

// TestProcessKeyRevoke: `gateway key revoke` and `key revoke-subject`
// through the admin API close the live sessions with 3004.
func TestProcessKeyRevoke(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	text := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	bobText := e2eKeyIssue(t, env, "--subject", "bob", "--data-dir", dir)
	p := e2eServe(t, env, "--data-dir", dir)
	alice := e2eConnectURL(t, p.ws, text)
	bob := e2eConnectURL(t, p.ws, bobText)

	stdout, stderr, code := e2eRun(t, env, "key", "revoke", "--admin", p.admin, text)
	if code != 0 {
		t.Fatalf("key revoke: exit %d: %s", code, stderr)
	}
	var ans map[string]any
	if err := json.Unmarshal([]byte(stdout), &ans); err != nil || ans["revoked"] != true || ans["subject"] != "alice" {
		t.Fatalf("key revoke printed %q (%v), want JSON with \"revoked\":true", stdout, err)
	}
	raw, _ := token.DecodeText(text)
	if id, _ := ans["id"].(string); len(id) != 16 || !strings.EqualFold(id, fmt.Sprintf("%x", raw[2:10])) {
		t.Fatalf("key revoke printed id %v, want the key's id %x", ans["id"], raw[2:10])
	}
	expectClose(t, alice, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	e2ePing(t, bob)

	stdout, stderr, code = e2eRun(t, env, "key", "revoke-subject", "--admin", p.admin, "bob")
	if code != 0 || !strings.Contains(stdout, `"revoked":true`) {
		t.Fatalf("key revoke-subject: exit %d: %q %s", code, stdout, stderr)
	}
	expectClose(t, bob, websocket.StatusCode(packet.CloseRevoked), "access key revoked")

	// The admin's refusal is an error exit with its message.
	_, stderr, code = e2eRun(t, env, "key", "revoke", "--admin", p.admin, "--id", "nothex")
	if code == 0 || !strings.Contains(stderr, "400") || !strings.Contains(stderr, "16 hex") {
		t.Fatalf("key revoke --id nothex: exit %d, stderr %q", code, stderr)
	}
}

// TestProcessSIGTERM: SIGTERM closes clients with 1001 and the process
// exits 0.
func TestProcessSIGTERM(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	text := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	p := e2eServe(t, env, "--data-dir", dir)
	c := e2eConnectURL(t, p.ws, text)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expectClose(t, c, websocket.StatusGoingAway, "server shutting down")
	if code := p.e2eWaitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr.String())
	}
}

// e2eClient is a running `gateway client`.
type e2eClient struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *e2eLockedBuffer
	seen   []string
	done   chan error
}

func e2eStartClient(t testing.TB, env []string, args ...string) *e2eClient {
	t.Helper()
	bin := e2eGatewayBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c := &e2eClient{
		cmd:   exec.CommandContext(ctx, bin, append([]string{"client"}, args...)...),
		lines: make(chan string, 100), stderr: &e2eLockedBuffer{}, done: make(chan error, 1),
	}
	c.cmd.Env = env
	c.cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	return c
}

// waitLine reads stdout lines until want; only "pong N" lines may come
// before it.
func (c *e2eClient) waitLine(t testing.TB, want string) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("client output ended before %q; got %q; stderr %s", want, c.seen, c.stderr.String())
			}
			c.seen = append(c.seen, l)
			if l == want {
				return
			}
			if !strings.HasPrefix(l, "pong ") {
				t.Fatalf("client printed %q while waiting for %q", l, want)
			}
		case <-timeout:
			t.Fatalf("client did not print %q; got %q; stderr %s", want, c.seen, c.stderr.String())
		}
	}
}

// quit types "quit" and returns the exit error (nil for exit 0) once the
// client has ended.
func (c *e2eClient) quit(t testing.TB) error {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "quit\n"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range c.lines { // drain so the client never blocks on stdout
		}
		c.done <- c.cmd.Wait()
	}()
	select {
	case err := <-c.done:
		return err
	case <-time.After(waitFor):
		t.Fatal("client still running after quit")
	}
	return nil
}

// TestProcessClient: the interactive client subscribes, prints a publish
// and ends on "quit".
func TestProcessClient(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	text := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	p := e2eServe(t, env, "--data-dir", dir)

	c := e2eStartClient(t, env, "--url", p.ws, "--key", text, "--sub", "room")
	c.waitLine(t, "subscribed room")
	status, b, _ := e2eDo(t, http.MethodPost, p.admin+"/api/publish?channel=room", "text/plain", []byte("hello"))
	if status != http.StatusOK {
		t.Fatalf("admin publish: %d %s", status, b)
	}
	c.waitLine(t, "message room hello")
	if err := c.quit(t); err != nil {
		t.Errorf("BUG: client exited with %v after quit; stderr %s", err, c.stderr.String())
	}
}

// TestProcessClientQuitExitsZero: "quit" is a normal end, exit status 0,
// every time (the quit races the client's reader, so try several times).
func TestProcessClientQuitExitsZero(t *testing.T) {
	t.Parallel()
	dir := e2eDataDir(t)
	env := e2eEnv()
	text := e2eKeyIssue(t, env, "--subject", "alice", "--data-dir", dir)
	p := e2eServe(t, env, "--data-dir", dir)
	const runs = 40
	var failures []string
	for range runs {
		c := e2eStartClient(t, env, "--url", p.ws, "--key", text, "--sub", "room")
		c.waitLine(t, "subscribed room")
		if err := c.quit(t); err != nil {
			failures = append(failures, fmt.Sprintf("%v: %s", err, strings.TrimSpace(c.stderr.String())))
		}
	}
	if len(failures) > 0 {
		t.Fatalf("BUG: %d of %d clients exited non-zero after quit, e.g. %s", len(failures), runs, failures[0])
	}
}

// TestProcessBadFlag: a bad flag value, on the command line or in the
// environment, is an error exit with a message, not a panic.
func TestProcessBadFlag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag", e2eEnv(), []string{"serve", "--ping-timeout=xyz", "--data-dir", t.TempDir()}, "ping-timeout"},
		{"env", e2eEnv("GATEWAY_PING_TIMEOUT=xyz"), []string{"serve", "--data-dir", t.TempDir()}, "GATEWAY_PING_TIMEOUT"},
		{"implicit serve", e2eEnv(), []string{"--ping-timeout=xyz", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, "ping-timeout"},
	} {
		stdout, stderr, code := e2eRun(t, c.env, c.args...)
		if code == 0 || code == 2 && strings.Contains(stderr, "goroutine ") {
			t.Errorf("%s: exit %d, want an error exit", c.name, code)
		}
		if !strings.Contains(stderr, c.want) || !strings.Contains(stderr, "xyz") ||
			strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
			t.Errorf("%s: stderr %q, want a message naming %s and xyz, no panic", c.name, stderr, c.want)
		}
		if strings.Contains(stdout, "listening") {
			t.Errorf("%s: stdout %q", c.name, stdout)
		}
	}
}
