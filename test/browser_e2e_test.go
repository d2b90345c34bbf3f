package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Browser tests: real pages in Debian's Chromium, driven by
// test/browser/run.mjs through playwright-core. `make test` installs both
// (test/browser/install.sh, `make browser-deps`); where they are missing
// the tests skip, naming what is missing, except under CI=true, where they
// fail. Helpers are prefixed browser.
//
// Another test uses them in a few lines. To save a screenshot of a page
// (the admin status page, say) as a test artefact:
//
//	browserRun(t, browserPage{Name: "status", URL: adminURL(n) + "/status",
//		Wait: "load", Screenshot: browserArtefact(t, "status.png")})
//
// To run a page of its own that reports a result, put it in
// test/browser/pages (plain HTML and JS, lib.js's run() sets
// window.testResult), serve the directory with browserServePages (hooks
// let the page ask the test to act) and read browserRun's results.

// browserDir is the runner's directory, relative to the test package.
const browserDir = "browser"

// browserChromium is Debian's Chromium, which install.sh installs;
// GATEWAY_CHROMIUM overrides it.
func browserChromium() string {
	if p := os.Getenv("GATEWAY_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// browserRequire returns the node binary, or skips the test when Chromium,
// Node.js or playwright-core is missing, saying what to do; under CI=true
// it fails instead, because CI must run the browser tests.
func browserRequire(t testing.TB) string {
	t.Helper()
	var missing []string
	if fi, err := os.Stat(browserChromium()); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		missing = append(missing, "Chromium ("+browserChromium()+")")
	}
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "Node.js (node on PATH)")
	}
	lock, _ := os.ReadFile(filepath.Join(browserDir, "package-lock.json"))
	installed, err := os.ReadFile(filepath.Join(browserDir, "node_modules", ".installed-lock"))
	if err != nil || !bytes.Equal(lock, installed) {
		missing = append(missing, "playwright-core (test/browser/node_modules missing or from another package-lock.json)")
	}
	if len(missing) == 0 {
		return nodeBin
	}
	why := "BROWSER TEST NOT RUN: missing " + strings.Join(missing, ", ") +
		"; run `make browser-deps` (as root, with network) or `make test`"
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: the browser tests are required)")
	}
	fmt.Fprintln(os.Stderr, "*** "+t.Name()+": "+why)
	t.Skip(why)
	return ""
}

// browserPage is one page for browserRun (the runner's spec, run.mjs).
type browserPage struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Wait is "" to wait for the page's window.testResult, or "load" to
	// wait for the load event and an idle network (a page only looked at).
	Wait string `json:"wait,omitempty"`
	// Screenshot, when set, is the absolute path of a full-page PNG taken
	// after the wait.
	Screenshot string `json:"screenshot,omitempty"`
}

// browserResult is what the runner reports for a page.
type browserResult struct {
	Page string `json:"page"`
	// Result is the page's window.testResult; for a page waited for with
	// "load", {url, title, text}: its address after redirects and its
	// rendered text.
	Result json.RawMessage `json:"result"`
	// Error is why the runner got no result (a timeout, a navigation
	// error); empty otherwise.
	Error string `json:"error"`
	// Console holds what the page logged, its uncaught errors and failed
	// requests (Chromium logs CORS refusals there).
	Console []string `json:"console"`
	// MS is the page's time from its tab's opening to its result.
	MS int64 `json:"ms"`
}

// browserRunTimeout bounds one runner: Chromium's start, every page and
// its own shutdown.
const browserRunTimeout = 60 * time.Second

// browserRun opens every page in one Chromium (each in its own tab, all
// at once) and returns the results by page name. It fails the test when
// the runner fails or a page is missing from its output; judging the
// results is the caller's.
func browserRun(t testing.TB, pages ...browserPage) map[string]browserResult {
	t.Helper()
	nodeBin := browserRequire(t)
	spec, err := json.Marshal(map[string]any{
		"chromium": browserChromium(), "timeout_ms": waitFor.Milliseconds() * 2, "pages": pages,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "run.mjs", string(spec))
	cmd.Dir = browserDir
	// Chromium's processes are the runner's children: a timeout kills
	// the whole group, not the runner alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	results := map[string]browserResult{}
	done := false
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var line struct {
			browserResult
			Done     bool  `json:"done"`
			LaunchMS int64 `json:"launch_ms"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("runner printed %q: %v", sc.Text(), err)
		}
		if line.Done {
			done = true
			var each []string
			for _, p := range pages {
				each = append(each, fmt.Sprintf("%s %d ms", p.Name, results[p.Name].MS))
			}
			t.Logf("browser: Chromium started in %d ms, then %s; runner %d ms, node included %v",
				line.LaunchMS, strings.Join(each, ", "), line.MS, time.Since(start).Round(time.Millisecond))
			continue
		}
		results[line.Page] = line.browserResult
	}
	if runErr != nil || !done {
		t.Fatalf("browser runner: %v (finished: %v)\nstderr:\n%s\nstdout:\n%s", runErr, done, stderr.String(), stdout.String())
	}
	for _, p := range pages {
		if _, ok := results[p.Name]; !ok {
			t.Fatalf("browser runner reported nothing for page %s", p.Name)
		}
	}
	return results
}

// browserArtefact is the path for an artefact of the test (a screenshot):
// under $GATEWAY_TEST_ARTEFACTS when set, else under the system's temp
// directory, in a folder named after the test; the path is logged.
func browserArtefact(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("GATEWAY_TEST_ARTEFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "wsgateway-artefacts")
	}
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("artefact: %s", p)
	return p
}

// browserHook is an action a page asks of the test (POST /hook/<name> on
// the page's own origin). It runs on an HTTP server goroutine, so it
// reports failure as an error (answered 500, which the page reports),
// never through t.
type browserHook func() (string, error)

// browserServePages serves test/browser/pages and the hooks on a loopback
// port of its own, and returns its origin (http://127.0.0.1:port): a
// different origin from every gateway listener, so the pages' calls to the
// gateway are cross-origin and CORS really applies.
func browserServePages(t testing.TB, hooks map[string]browserHook) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(filepath.Join(browserDir, "pages"))))
	mux.HandleFunc("POST /hook/{name}", func(w http.ResponseWriter, r *http.Request) {
		h, ok := hooks[r.PathValue("name")]
		if !ok {
			http.Error(w, "no such hook", http.StatusNotFound)
			return
		}
		out, err := h()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(out))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: waitFor}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// browserPost is a hook's POST: it checks the status and returns the body.
func browserPost(url, contentType, body string, want int) error {
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b := new(bytes.Buffer)
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: %d %s, want %d", url, resp.StatusCode, b, want)
	}
	return nil
}

// browserPacket is a client-bound native packet built by hand from
// PROTOCOL.md §2 and §4 (not with package packet): id, the channel as a
// string, then the payload as bytes when not nil.
func browserPacket(id byte, channel string, payload []byte) []byte {
	b := []byte{id}
	b = binary.BigEndian.AppendUint16(b, uint16(len(channel)))
	b = append(b, channel...)
	if payload != nil {
		b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
		b = append(b, payload...)
	}
	return b
}

// TestBrowser opens each protocol from a page in Chromium, the pages
// served from an origin of their own (the node's --allowed-origins lists
// it): the native binary protocol with ArrayBuffer frames, KOsync with
// the KOReader API through CORS and GET /api/ws answering JSON (issue 11
// items 5 and 6), Hypothesis as h's client speaks it, and wsify with a
// lone subprotocol echoed (item 1). Every payload is compared exactly.
func TestBrowser(t *testing.T) {
	t.Parallel()
	browserRequire(t)
	start := time.Now()

	var n *node.Node
	var goPub *websocket.Conn
	const (
		nativeChannel = "salle-é 1"
		wsifyChannel  = "room"
		hypClientID   = "0123456789abcdef0123456789abcdef"
		hypURI        = "https://example.com/page"
	)
	pagePayload := make([]byte, 258) // every byte value, then bytes no UTF-8 has
	for i := range 256 {
		pagePayload[i] = byte(i)
	}
	pagePayload[256], pagePayload[257] = 0xff, 0xfe
	goPayload := []byte("from go \x00\x01\x80\xff")
	annotation := func(id, user string) string {
		return `{"id":"` + id + `","uri":"http://EXAMPLE.com/page/","user":"` + user + `","group":"__world__",` +
			`"permissions":{"read":["group:__world__"]},"text":"Nice <b>&</b> café"}`
	}
	ownAnnotation := annotation("own-annotation-0000000", "acct:alice@localhost")
	otherAnnotation := annotation("Zx3k9aQqEe-3sR8y9mAb1g", "acct:bob@localhost")

	origin := browserServePages(t, map[string]browserHook{
		"native-publish": func() (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			return "", goPub.Write(ctx, websocket.MessageBinary, packet.AppendPublish(nil, nativeChannel, goPayload))
		},
		// The first event comes from the page's own client id: h sends
		// it to every socket but the one whose client made it.
		"hypothesis-events": func() (string, error) {
			events := adminURL(n) + "/api/hypothesis/events"
			if err := browserPost(events, "application/json",
				`{"action":"create","annotation":`+ownAnnotation+`,"src_client_id":"`+hypClientID+`"}`, http.StatusAccepted); err != nil {
				return "", err
			}
			return "", browserPost(events, "application/json",
				`{"action":"create","annotation":`+otherAnnotation+`,"src_client_id":"another-client"}`, http.StatusAccepted)
		},
		"wsify-broadcast": func() (string, error) {
			return "", browserPost("http://"+n.WsifyAddr().String()+"/broadcast", "application/json",
				`{"channel":"`+wsifyChannel+`","content":{"b":2,"a":"<1>"}}`, http.StatusCreated)
		},
	})
	n = startNode(t, func(c *node.Config) {
		c.WsifyListen = "127.0.0.1:0"
		c.Limits = gateway.Limits{AllowedOrigins: []string{origin}}
	})
	addr := n.Addr().String()
	goPub = connect(t, n, "carol")
	keyText := func(subject string) string { return token.EncodeText(issueKey(t, n, subject, time.Hour)) }
	kosyncKey := ksMD5("web-pw")

	q := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return "?" + v.Encode()
	}
	res := browserRun(t,
		browserPage{Name: "native", URL: origin + "/native.html" + q("ws", "ws://"+addr+"/api/ws",
			"key_a", keyText("alice"), "key_b", keyText("bob"), "channel", nativeChannel, "payload", hex.EncodeToString(pagePayload))},
		browserPage{Name: "kosync", URL: origin + "/kosync.html" + q("base", "http://"+addr,
			"user", "webuser", "key", kosyncKey, "document", "0123abcd")},
		browserPage{Name: "hypothesis", URL: origin + "/hypothesis.html" + q("ws", "ws://"+addr+"/ws?access_token="+keyText("alice"),
			"client_id", hypClientID, "uri", hypURI)},
		browserPage{Name: "wsify", URL: origin + "/wsify.html" + q("ws", "ws://"+n.WsifyAddr().String()+"/ws", "channel", wsifyChannel)},
	)

	// result decodes a page's result, failing with what the page and
	// the browser said when the page did not finish.
	result := func(t *testing.T, name string, into any) bool {
		t.Helper()
		r := res[name]
		var base struct {
			Origin string `json:"origin"`
			Error  string `json:"error"`
		}
		if err := json.Unmarshal(r.Result, &base); err != nil || r.Error != "" || base.Error != "" {
			t.Errorf("page %s did not finish: runner: %s\npage: %s\nresult: %s\nconsole:\n  %s",
				name, r.Error, base.Error, r.Result, strings.Join(r.Console, "\n  "))
			return false
		}
		if base.Origin != origin {
			t.Errorf("page %s ran on origin %q, want %q", name, base.Origin, origin)
		}
		if err := json.Unmarshal(r.Result, into); err != nil {
			t.Errorf("page %s result %s: %v", name, r.Result, err)
			return false
		}
		return true
	}
	t.Run("native", func(t *testing.T) { browserCheckNative(t, result, start, nativeChannel, pagePayload, goPayload) })
	t.Run("kosync", func(t *testing.T) { browserCheckKosync(t, result, addr, "0123abcd") })
	t.Run("hypothesis", func(t *testing.T) {
		var r struct{ Protocol, Whoami, Notification, Pong string }
		if !result(t, "hypothesis", &r) {
			return
		}
		want := map[string][2]string{
			"protocol": {r.Protocol, ""},
			"whoami":   {r.Whoami, `{"type":"whoyouare","userid":"acct:alice@localhost","ok":true,"reply_to":1}`},
			"notification (the page's own annotation is not sent back)": {r.Notification,
				`{"type":"annotation-notification","options":{"action":"create"},"payload":[` + otherAnnotation + `]}`},
			"pong": {r.Pong, `{"type":"pong","ok":true,"reply_to":2}`},
		}
		for what, gw := range want {
			if gw[0] != gw[1] {
				t.Errorf("hypothesis %s:\n got %s\nwant %s", what, gw[0], gw[1])
			}
		}
	})
	t.Run("wsify", func(t *testing.T) {
		var r struct {
			AProtocol string   `json:"a_protocol"`
			BProtocol string   `json:"b_protocol"`
			A         []string `json:"a"`
			B         []string `json:"b"`
		}
		if !result(t, "wsify", &r) {
			return
		}
		if r.AProtocol != "chat" || r.BProtocol != "" {
			t.Errorf("ws.protocol %q offering [\"chat\"] and %q offering none, want \"chat\" and \"\"", r.AProtocol, r.BProtocol)
		}
		fromGo := `{"a":"\u003c1\u003e","b":2}`
		if want := []string{`{"from":"page","n":1}`, `"two"`, fromGo}; !equalStrings(r.A, want) {
			t.Errorf("wsify socket A (subprotocol chat) got %q, want %q", r.A, want)
		}
		if want := []string{`"two"`, fromGo}; !equalStrings(r.B, want) {
			t.Errorf("wsify socket B got %q, want %q", r.B, want)
		}
	})
}

// browserResultFunc decodes a page's result into a value, or reports
// why the page did not finish.
type browserResultFunc func(t *testing.T, name string, into any) bool

func equalStrings(a, b []string) bool {
	return len(a) == len(b) && strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// browserCheckNative checks the native page: hellos, auth Pongs,
// Subscribed and both Messages byte for byte, every frame an ArrayBuffer,
// and the page's own decoding of them.
func browserCheckNative(t *testing.T, result browserResultFunc, start time.Time, channel string, pagePayload, goPayload []byte) {
	type decoded struct {
		Hex    string `json:"hex"`
		Packet struct {
			ID      string `json:"id"`
			Millis  int64  `json:"millis"`
			Channel string `json:"channel"`
			Payload string `json:"payload"`
		} `json:"packet"`
	}
	var r struct {
		AHello         string  `json:"a_hello"`
		BHello         string  `json:"b_hello"`
		AAuth          decoded `json:"a_auth"`
		BAuth          decoded `json:"b_auth"`
		Subscribed     decoded `json:"subscribed"`
		FromPage       decoded `json:"from_page"`
		FromGo         decoded `json:"from_go"`
		NotArrayBuffer string  `json:"not_array_buffer"`
	}
	if !result(t, "native", &r) {
		return
	}
	if r.NotArrayBuffer != "" {
		t.Errorf("a binary frame reached the page as %s, want an ArrayBuffer", r.NotArrayBuffer)
	}
	if r.AHello != "6d73" || r.BHello != "6d73" {
		t.Errorf("hellos %s and %s, want 6d73", r.AHello, r.BHello)
	}
	for who, p := range map[string]decoded{"A": r.AAuth, "B": r.BAuth} {
		raw, _ := hex.DecodeString(p.Hex)
		if len(raw) != 9 || raw[0] != 0 || p.Packet.ID != "pong" ||
			int64(binary.BigEndian.Uint64(raw[1:])) != p.Packet.Millis ||
			p.Packet.Millis < start.Add(-time.Second).UnixMilli() || p.Packet.Millis > time.Now().Add(time.Second).UnixMilli() {
			t.Errorf("socket %s's answer to its auth: %s (%+v), want a Pong with the server's Unix milliseconds", who, p.Hex, p.Packet)
		}
	}
	if want := hex.EncodeToString(browserPacket(0x03, channel, nil)); r.Subscribed.Hex != want ||
		r.Subscribed.Packet.ID != "subscribed" || r.Subscribed.Packet.Channel != channel {
		t.Errorf("after subscribe: %s (%+v), want Subscribed %s", r.Subscribed.Hex, r.Subscribed.Packet, want)
	}
	for what, m := range map[string]struct {
		got     decoded
		payload []byte
	}{"the page's publish": {r.FromPage, pagePayload}, "the Go client's publish": {r.FromGo, goPayload}} {
		want := hex.EncodeToString(browserPacket(0x01, channel, m.payload))
		if m.got.Hex != want {
			t.Errorf("%s reached the page as\n %s\nwant\n %s", what, m.got.Hex, want)
		}
		if m.got.Packet.ID != "message" || m.got.Packet.Channel != channel || m.got.Packet.Payload != hex.EncodeToString(m.payload) {
			t.Errorf("the page decoded %s as %+v", what, m.got.Packet)
		}
	}
}

// browserCheckKosync checks the KOsync page: each KOReader call made
// through CORS, GET /api/ws's JSON and the socket it names, and the
// announce of the page's own push.
func browserCheckKosync(t *testing.T, result browserResultFunc, addr, doc string) {
	type answer struct {
		Status int
		Type   string
		Body   string
	}
	var r struct {
		Create, Auth, Push answer
		APIWS              answer `json:"api_ws"`
		Hello              string
		Subscribed         string
		Announce           string
	}
	if !result(t, "kosync", &r) {
		return
	}
	check := func(what string, a answer, status int, body string) {
		t.Helper()
		if a.Status != status || !strings.HasPrefix(a.Type, "application/json") || !ksJSONEqual([]byte(a.Body), []byte(body)) {
			t.Errorf("%s from the page: %d %s %s, want %d application/json %s", what, a.Status, a.Type, a.Body, status, body)
		}
	}
	check("POST /users/create", r.Create, http.StatusCreated, `{"username":"webuser"}`)
	check("GET /users/auth", r.Auth, http.StatusOK, `{"authorized":"OK"}`)

	var wsAnswer map[string]string
	prefix := "ws://" + addr + "/api/ws/"
	if err := json.Unmarshal([]byte(r.APIWS.Body), &wsAnswer); err != nil || r.APIWS.Status != http.StatusOK ||
		r.APIWS.Type != "application/json" || len(wsAnswer) != 1 || !strings.HasPrefix(wsAnswer["url"], prefix) ||
		len(wsAnswer["url"]) == len(prefix) {
		t.Errorf("GET /api/ws asking for JSON: %d %q %s, want 200 application/json {\"url\": %q + jwt}", r.APIWS.Status, r.APIWS.Type, r.APIWS.Body, prefix)
	}
	ksCheckHello(t, []byte(r.Hello))
	if r.Subscribed != ksSubscribedMsg {
		t.Errorf("subscribe answered %s, want %s", r.Subscribed, ksSubscribedMsg)
	}

	var pushed struct {
		Document  string `json:"document"`
		Timestamp int64  `json:"timestamp"`
	}
	if err := json.Unmarshal([]byte(r.Push.Body), &pushed); err != nil || r.Push.Status != http.StatusOK || pushed.Document != doc {
		t.Fatalf("PUT /syncs/progress from the page: %d %s", r.Push.Status, r.Push.Body)
	}
	want := ksAnnounce(ksDoc(doc, "/body/DocFragment[7]", 0.25, "web", "WEB1", pushed.Timestamp, "", "null"))
	if r.Announce != want {
		t.Errorf("the socket got\n %s\nwant\n %s", r.Announce, want)
	}
}
