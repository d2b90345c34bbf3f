package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/token"
)

// The TypeScript client (sdk/js) against real gateways: TestSDKJS builds
// the package with tsc and runs its node:test suites once, with what the
// integration tests need in SDKJS_E2E (JSON):
//
//   - ws, keys: an in-process node and keys for it (alice, bob, carol, and
//     a bad one);
//   - keepalive.ws, keepalive.key: a node whose ping timeout is one second;
//   - proc.ws, proc.keys: a `gateway serve` process on fixed addresses
//     (dave, erin);
//   - control: the base URL of a small HTTP server of this test, through
//     which a Node test asks it to act: POST /revoke-carol revokes carol's
//     key on the node (the session ends with 3004); POST /restart-kill and
//     /restart-term stop the process with SIGKILL or SIGTERM and start it
//     again on the same addresses, answering once it is ready;
//   - history.ws, history.key: a `gateway serve` process on fixed addresses
//     with history on channels "h:", on a Redis this test starts, beside a
//     second process on the same Redis: POST /history-kill kills the first
//     with SIGKILL, publishes "2", "3" and "4" on h:ts through the second
//     one's admin API while it is down, and starts it again on the same
//     addresses (the epoch is Redis's, so a client recovers them there).
//
// The control server is the simplest robust way for a test in one process
// to drive another: the Node test waits for the answer, so there is no
// polling of files, and a failure comes back as an HTTP 500 the Node test
// reports. The suites also hold the codec's tests against
// testdata/packets.json and the bundle size budget; the test fails on any
// failed or skipped Node test. Without node, npm or sdk/js/node_modules
// (`make js-deps`) it skips, and fails under CI=true.

// sdkjsDir is the package, relative to the test package.
const sdkjsDir = "../sdk/js"

// sdkjsRequire returns the node and npm binaries, or skips the test when
// they or the package's devDependencies are missing; under CI=true it
// fails instead.
func sdkjsRequire(t testing.TB) (nodeBin, npmBin string) {
	t.Helper()
	var missing []string
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "Node.js (node on PATH)")
	}
	npmBin, err = exec.LookPath("npm")
	if err != nil {
		missing = append(missing, "npm")
	}
	lock, _ := os.ReadFile(filepath.Join(sdkjsDir, "package-lock.json"))
	installed, err := os.ReadFile(filepath.Join(sdkjsDir, "node_modules", ".installed-lock"))
	if err != nil || !bytes.Equal(lock, installed) {
		missing = append(missing, "sdk/js/node_modules (missing or from another package-lock.json)")
	}
	if len(missing) == 0 {
		return nodeBin, npmBin
	}
	why := "TYPESCRIPT CLIENT TEST NOT RUN: missing " + strings.Join(missing, ", ") + "; run `make js-deps` or `make test`"
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: the TypeScript client's tests are required)")
	}
	fmt.Fprintln(os.Stderr, "*** "+t.Name()+": "+why)
	t.Skip(why)
	return "", ""
}

// sdkjsBuild runs `npm run build` (tsc into sdk/js/dist) once per test
// run, for every test that needs the package built.
var (
	sdkjsBuildOnce sync.Once
	sdkjsBuildErr  error
)

func sdkjsBuild(t testing.TB, npmBin string) {
	t.Helper()
	sdkjsBuildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, npmBin, "run", "--silent", "build")
		build.Dir = sdkjsDir
		if out, err := build.CombinedOutput(); err != nil {
			sdkjsBuildErr = fmt.Errorf("npm run build in sdk/js: %v\n%s", err, out)
		}
	})
	if sdkjsBuildErr != nil {
		t.Fatal(sdkjsBuildErr)
	}
}

func TestSDKJS(t *testing.T) {
	t.Parallel()
	nodeBin, npmBin := sdkjsRequire(t)

	sdkjsBuild(t, npmBin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The in-process node and its keys; a second node with a ping timeout
	// of one second for the keepalive test.
	n := startNode(t)
	short := startNode(t, func(c *node.Config) { c.PingTimeout = time.Second })
	key := func(subject string) string { return token.EncodeText(issueKey(t, n, subject, time.Hour)) }
	carol := issueKey(t, n, "carol", time.Hour)
	carolClaims, err := n.Secrets.Verify(carol, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// The gateway process, restarted on the same addresses when asked.
	env := e2eEnv("GATEWAY_SECRET=sdkjs-e2e-secret-0123456789-0123456789-0123")
	dir := t.TempDir()
	free := e2eFreeAddrs(t, 3)
	listen, admin, wsify := free[0], free[1], free[2]
	var procMu sync.Mutex
	proc, err := e2eServeAt(t, env, listen, admin, wsify, "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	keysDir := filepath.Join(dir, "keys")
	dave := e2eKeyIssue(t, env, "--subject", "dave", "--data-dir", keysDir)
	erin := e2eKeyIssue(t, env, "--subject", "erin", "--data-dir", keysDir)
	restart := func(sig syscall.Signal) (string, error) {
		procMu.Lock()
		defer procMu.Unlock()
		if err := proc.cmd.Process.Signal(sig); err != nil {
			return "", err
		}
		select {
		case <-proc.exited:
		case <-time.After(waitFor):
			return "", fmt.Errorf("gateway did not exit within %v of %v", waitFor, sig)
		}
		p, err := e2eServeAt(t, env, listen, admin, wsify, "--data-dir", dir)
		if err != nil {
			return "", err
		}
		proc = p
		return "restarted", nil
	}

	// The history processes on Redis: the client's, restarted by
	// history-kill, and the publisher.
	rdb := redistest.Start(t)
	histArgs := []string{"--history-size", "100", "--history-channels", "h:", "--redis", rdb.URL,
		"--redis-prefix", "sdkjs" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"}
	histListen, histAdmin, histWsify, histDir := e2eFreeAddr(t), e2eFreeAddr(t), e2eFreeAddr(t), t.TempDir()
	histProc, err := e2eServeAt(t, env, histListen, histAdmin, histWsify, append([]string{"--data-dir", histDir}, histArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	histPub, err := e2eServeAt(t, env, e2eFreeAddr(t), e2eFreeAddr(t), e2eFreeAddr(t), append([]string{"--data-dir", t.TempDir()}, histArgs...)...)
	if err != nil {
		t.Fatal(err)
	}
	hana := e2eKeyIssue(t, env, "--subject", "hana", "--data-dir", keysDir)
	historyKill := func() (string, error) {
		procMu.Lock()
		defer procMu.Unlock()
		_ = histProc.cmd.Process.Kill()
		select {
		case <-histProc.exited:
		case <-time.After(waitFor):
			return "", fmt.Errorf("history gateway did not exit within %v of SIGKILL", waitFor)
		}
		var answers []string
		for _, payload := range []string{"2", "3", "4"} {
			resp, err := http.Post(histPub.admin+"/api/publish?channel=h:ts", "text/plain", strings.NewReader(payload))
			if err != nil {
				return "", err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("publish %s through the other node: %d %s", payload, resp.StatusCode, b)
			}
			answers = append(answers, strings.TrimSpace(string(b)))
		}
		p, err := e2eServeAt(t, env, histListen, histAdmin, histWsify, append([]string{"--data-dir", histDir}, histArgs...)...)
		if err != nil {
			return "", err
		}
		histProc = p
		return strings.Join(answers, " "), nil
	}

	// The control server.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]func() (string, error){
		"revoke-carol": func() (string, error) {
			return "revoked", browserPost(adminURL(n)+"/api/revoke", "application/json",
				fmt.Sprintf(`{"id":%q}`, carolClaims.ID.String()), http.StatusOK)
		},
		"restart-kill": func() (string, error) { return restart(syscall.SIGKILL) },
		"restart-term": func() (string, error) { return restart(syscall.SIGTERM) },
		"history-kill": historyKill,
	}
	var logMu sync.Mutex
	var controlLog []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{action}", func(w http.ResponseWriter, r *http.Request) {
		act, ok := actions[r.PathValue("action")]
		if !ok {
			http.Error(w, "no such action", http.StatusNotFound)
			return
		}
		out, err := act()
		logMu.Lock()
		controlLog = append(controlLog, fmt.Sprintf("%s: %q %v", r.PathValue("action"), out, err))
		logMu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(out))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: waitFor}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	spec, err := json.Marshal(map[string]any{
		"ws": wsURL(n),
		"keys": map[string]string{
			"alice": key("alice"), "bob": key("bob"), "carol": token.EncodeText(carol),
			// Well-formed base64 of the right length, but no key: 3001.
			"bad": token.EncodeText([]byte("\x00\x00not-a-key-at-all-but-long-enough-to-parse")),
		},
		"keepalive": map[string]string{"ws": wsURL(short), "key": token.EncodeText(issueKey(t, short, "gina", time.Hour))},
		"proc":      map[string]any{"ws": proc.ws, "keys": map[string]string{"dave": dave, "erin": erin}},
		"control":   "http://" + ln.Addr().String(),
		"history":   map[string]string{"ws": histProc.ws, "key": hana},
	})
	if err != nil {
		t.Fatal(err)
	}

	files, err := filepath.Glob(filepath.Join(sdkjsDir, "test", "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files in sdk/js/test: %v", err)
	}
	for i, f := range files {
		files[i] = strings.TrimPrefix(f, sdkjsDir+"/")
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, nodeBin, append([]string{"--test", "--test-reporter=tap"}, files...)...)
	cmd.Dir = sdkjsDir
	cmd.Env = append(os.Environ(), "SDKJS_E2E="+string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, runErr := cmd.CombinedOutput()
	elapsed := time.Since(start).Round(time.Millisecond)

	counts, bundle := sdkjsSummary(out)
	logMu.Lock()
	defer logMu.Unlock()
	if runErr != nil || counts["fail"] != 0 || counts["skipped"] != 0 || counts["cancelled"] != 0 || counts["pass"] < 10 ||
		counts["pass"] != counts["tests"] {
		t.Fatalf("node --test in sdk/js: %v; counts %v; control %q\n%s", runErr, counts, controlLog, out)
	}
	t.Logf("sdk/js: %d tests passed in %v (node --test); %s; control %q", counts["pass"], elapsed, bundle, controlLog)
}

// sdkjsSummary reads the TAP summary (# tests N, # pass N, ...) and the
// size test's line from node's output.
func sdkjsSummary(out []byte) (map[string]int, string) {
	counts := map[string]int{}
	bundle := "no bundle size reported"
	re := regexp.MustCompile(`^# (tests|pass|fail|skipped|cancelled|todo) (\d+)$`)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := re.FindStringSubmatch(line); m != nil {
			counts[m[1]], _ = strconv.Atoi(m[2])
		}
		if strings.HasPrefix(line, "# bundle: ") {
			bundle = strings.TrimPrefix(line, "# ")
		}
	}
	return counts, bundle
}

// TestSDKJSChat runs the example chat page (sdk/js/examples/chat.html,
// the built package beside it) in two Chromium tabs against a node: each
// page joins the room from its URL fragment, learns of the other through
// the presence messages, says its line, and reports once it shows both
// lines. A screenshot of one page is kept as an artefact.
func TestSDKJSChat(t *testing.T) {
	t.Parallel()
	browserRequire(t)
	_, npmBin := sdkjsRequire(t)
	sdkjsBuild(t, npmBin)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(sdkjsDir)), ReadHeaderTimeout: waitFor}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	n := startNode(t)
	page := func(name, say string) string {
		v := url.Values{}
		v.Set("url", wsURL(n))
		v.Set("key", token.EncodeText(issueKey(t, n, name, time.Hour)))
		v.Set("channel", "lobby")
		v.Set("name", name)
		v.Set("say", say)
		v.Set("expect", "2")
		return "http://" + ln.Addr().String() + "/examples/chat.html#" + v.Encode()
	}
	res := browserRun(t,
		browserPage{Name: "ann", URL: page("ann", "hello from ann"), Screenshot: browserArtefact(t, "chat.png")},
		browserPage{Name: "ben", URL: page("ben", "hello from ben")},
	)
	type message struct{ From, Text string }
	for _, who := range [][2]string{{"ann", "ben"}, {"ben", "ann"}} {
		r := res[who[0]]
		var got struct {
			Name     string
			State    string
			Members  []string
			Messages []message
		}
		if r.Error != "" || json.Unmarshal(r.Result, &got) != nil {
			t.Errorf("page %s did not finish: %s\nresult: %s\nconsole:\n  %s", who[0], r.Error, r.Result, strings.Join(r.Console, "\n  "))
			continue
		}
		want := map[message]bool{{who[0], "hello from " + who[0]}: true, {who[1], "hello from " + who[1]}: true}
		if got.Name != who[0] || got.State != "connected" || !equalStrings(got.Members, []string{who[1]}) ||
			len(got.Messages) != 2 || !want[got.Messages[0]] || !want[got.Messages[1]] || got.Messages[0] == got.Messages[1] {
			t.Errorf("page %s: %+v, want connected, %s here, and both lines", who[0], got, who[1])
		}
	}
}
