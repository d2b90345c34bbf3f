package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// The log of a real `gateway serve --log-format json`: every line one JSON
// object, the fields README.md ("Logs") promises, floods collapsed with a
// count. GATEWAY_LOG_INTERVAL=1s lets the summaries come within seconds.
// Helpers are prefixed lg.

// lgLine is one parsed JSON log line.
type lgLine map[string]any

func (l lgLine) str(k string) string { s, _ := l[k].(string); return s }

// num reads a number field (JSON numbers decode as float64); -1 if absent.
func (l lgLine) num(k string) int {
	if f, ok := l[k].(float64); ok {
		return int(f)
	}
	return -1
}

// lgParse parses every line of a JSON log; a line that is not a JSON
// object fails the test.
func lgParse(t *testing.T, out string) []lgLine {
	t.Helper()
	var lines []lgLine
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		var l lgLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("not a JSON line: %q: %v", s, err)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if l.str(k) == "" {
				t.Fatalf("line without %q: %q", k, s)
			}
		}
		lines = append(lines, l)
	}
	return lines
}

// lgFind returns the lines with msg whose fields include want (values
// compared as their JSON text, so numbers match numbers).
func lgFind(lines []lgLine, msg string, want map[string]any) []lgLine {
	var out []lgLine
next:
	for _, l := range lines {
		if l.str("msg") != msg {
			continue
		}
		for k, v := range want {
			a, _ := json.Marshal(l[k])
			b, _ := json.Marshal(v)
			if string(a) != string(b) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// lgOne returns the single line lgFind finds, or fails.
func lgOne(t *testing.T, lines []lgLine, level, msg string, want map[string]any) lgLine {
	t.Helper()
	got := lgFind(lines, msg, want)
	if len(got) != 1 {
		t.Fatalf("%d lines %q with %v, want 1: %v", len(got), msg, want, got)
	}
	if got[0].str("level") != level {
		t.Fatalf("line %v: level %s, want %s", got[0], got[0].str("level"), level)
	}
	return got[0]
}

// lgAccounted is how many events lines stand for: one each, a summary
// its repeated count.
func lgAccounted(lines []lgLine) int {
	n := 0
	for _, l := range lines {
		if r := l.num("repeated"); r > 0 {
			n += r
		} else {
			n++
		}
	}
	return n
}

var lgConnID = regexp.MustCompile(`^[0-9a-f]{8}-[1-9][0-9]*$`)

// TestLogsJSON: a node with --log-format json --log-level debug logs a
// good client's lifecycle (opened, authenticated with its subject, closed
// by the peer with its code and reason), a bad key (info with the reason,
// closed by the server with 3001), a client closed for its message rate
// (info, 1008), each line naming the connection the same way; a flood of
// 200 bad keys gives a few lines whose counts add up to every attempt; no
// key appears.
func TestLogsJSON(t *testing.T) {
	t.Parallel()
	p := e2eServe(t, e2eEnv("GATEWAY_SECRET="+testSecret, ratelog.IntervalEnv+"=1s"), "--data-dir", t.TempDir(),
		"--log-format", "json", "--log-level", "debug", "--message-rate", "1", "--message-burst", "3")
	keys := faultKeys(t)
	aliceKey, _ := faultIssue(t, keys, "alice")
	bobKey, _ := faultIssue(t, keys, "bob")
	raw, _ := token.DecodeText(aliceKey)
	tampered := append([]byte(nil), raw...)
	tampered[len(tampered)-1] ^= 1
	secrets := []string{aliceKey, bobKey, token.EncodeText(tampered), testSecret}

	// A good client that closes with 1000 "bye".
	alice := e2eConnectURL(t, p.ws, aliceKey)
	if err := alice.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close: %v", err)
	}
	// A bad key.
	bad := e2eDialURL(t, p.ws)
	send(t, bad, packet.AppendAuth(nil, packet.Version, tampered))
	expectClose(t, bad, 3001, "invalid access key")
	// Over the message rate: the auth and the Pings pass the burst of 3.
	bob := e2eConnectURL(t, p.ws, bobKey)
	for range 10 {
		if err := bob.Write(testCtx(t), websocket.MessageBinary, packet.AppendPing(nil)); err != nil {
			break
		}
	}
	expectClose(t, bob, websocket.StatusPolicyViolation, "message rate exceeded")

	var lines []lgLine
	waitUntil(t, "the three clients' close lines", func() bool {
		lines = lgParse(t, p.stderr.String())
		return len(lgFind(lines, "connection closed", map[string]any{"protocol": "native"})) >= 3
	})

	// alice: opened, authenticated, closed by the peer.
	auth := lgOne(t, lines, "DEBUG", "authenticated", map[string]any{"protocol": "native", "subject": "alice", "remote": "127.0.0.1"})
	conn := auth.str("conn")
	if !lgConnID.MatchString(conn) {
		t.Fatalf("conn %q is not a ConnID", conn)
	}
	lgOne(t, lines, "DEBUG", "connection opened", map[string]any{"conn": conn, "protocol": "native", "remote": "127.0.0.1"})
	lgOne(t, lines, "DEBUG", "connection closed", map[string]any{"conn": conn, "protocol": "native", "remote": "127.0.0.1",
		"code": 1000, "reason": "bye", "by": "peer"})

	// The bad key: info with the reason (no subject: its signature failed),
	// and its close by the server.
	refused := lgOne(t, lines, "INFO", "authentication failed", map[string]any{"protocol": "native", "reason": "invalid",
		"remote": "127.0.0.1", "code": 3001})
	if _, ok := refused["subject"]; ok {
		t.Errorf("a key whose signature failed has a subject in the log: %v", refused)
	}
	conn = refused.str("conn")
	if !lgConnID.MatchString(conn) {
		t.Fatalf("conn %q is not a ConnID", conn)
	}
	lgOne(t, lines, "DEBUG", "connection opened", map[string]any{"conn": conn, "protocol": "native"})
	lgOne(t, lines, "DEBUG", "connection closed", map[string]any{"conn": conn, "code": 3001, "reason": "invalid access key", "by": "server"})

	// bob: closed for his message rate.
	auth = lgOne(t, lines, "DEBUG", "authenticated", map[string]any{"protocol": "native", "subject": "bob"})
	conn = auth.str("conn")
	lgOne(t, lines, "INFO", "connection closed: policy violation", map[string]any{"conn": conn, "protocol": "native",
		"remote": "127.0.0.1", "reason": "message rate exceeded", "code": 1008})
	lgOne(t, lines, "DEBUG", "connection closed", map[string]any{"conn": conn, "code": 1008, "reason": "message rate exceeded", "by": "server"})

	// The flood: 200 bad keys from 8 clients at once.
	const flood = 200
	floodStart := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, flood)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < flood; i += 8 {
				errs <- lgBadAuth(p.ws, tampered)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every attempt is accounted for once the last summary is out: the
	// first bad key and the flood.
	var failed, opened []lgLine
	waitUntil(t, "the flood's summaries", func() bool {
		lines = lgParse(t, p.stderr.String())
		failed = lgFind(lines, "authentication failed", map[string]any{"protocol": "native", "reason": "invalid"})
		opened = lgFind(lines, "connection opened", map[string]any{"protocol": "native"})
		return lgAccounted(failed) == flood+1 && lgAccounted(opened) == flood+3
	})
	// With a 1 s interval: per second at most one line of a refusal, and
	// ten lifecycle lines of a kind (gateway.lifecycleBurst), plus a summary.
	seconds := int(time.Since(floodStart)/time.Second) + 2
	if len(failed) > seconds+1 {
		t.Errorf("%d lines for %d failed authentications in about %d s, want them collapsed", len(failed), flood+1, seconds)
	}
	if len(opened) > 11*seconds+3 {
		t.Errorf("%d debug lines for %d connections in about %d s, want them collapsed", len(opened), flood+3, seconds)
	}
	t.Logf("%d attempts: %d refusal lines, %d \"connection opened\" lines in about %d s", flood+1, len(failed), len(opened), seconds)
	summaries := 0
	for _, l := range failed {
		if l.num("repeated") > 0 {
			summaries++
			if l.str("level") != "INFO" || l.str("remote") != "127.0.0.1" || !lgConnID.MatchString(l.str("conn")) {
				t.Errorf("summary without its fields: %v", l)
			}
		}
	}
	if summaries == 0 {
		t.Errorf("no summary line with repeated= among %v", failed)
	}

	// Every line naming a connection or a peer names them the same way.
	for _, l := range lines {
		if c, ok := l["conn"]; ok && !lgConnID.MatchString(fmt.Sprint(c)) {
			t.Errorf("conn %v is not a ConnID: %v", c, l)
		}
		if r, ok := l["remote"]; ok && r != "127.0.0.1" {
			t.Errorf("remote %v, want the bare address: %v", r, l)
		}
		for _, k := range []string{"addr", "ip", "peer", "user"} {
			if _, ok := l[k]; ok {
				t.Errorf("field %q instead of the common names: %v", k, l)
			}
		}
	}
	out := p.stderr.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("a credential appears in the log: %q", s)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

// lgBadAuth dials, sends a bad key and waits for its 3001.
func lgBadAuth(url string, key []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	if _, _, err := c.Read(ctx); err != nil { // the hello
		return err
	}
	if err := c.Write(ctx, websocket.MessageBinary, packet.AppendAuth(nil, packet.Version, key)); err != nil {
		return err
	}
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != 3001 {
		return fmt.Errorf("bad key: %v, want close 3001", err)
	}
	return nil
}

// waitUntil polls cond until it holds, for at most waitFor.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLogsRedisOutageCollapsed: while Redis is down, go-redis's dial
// failures (one or two a second from one node) are collapsed: with a 2 s
// interval, the first line of a kind at once, then one summary with its
// count per interval.
func TestLogsRedisOutageCollapsed(t *testing.T) {
	t.Parallel()
	const interval = 2 * time.Second
	srv := redistest.Start(t)
	p := e2eServe(t, e2eEnv("GATEWAY_SECRET="+testSecret, ratelog.IntervalEnv+"="+interval.String()), "--data-dir", t.TempDir(),
		"--log-format", "json", "--redis", srv.URL)
	srv.Stop()
	down := time.Now()
	var lines []lgLine
	waitUntil(t, "a summary of go-redis lines", func() bool {
		lines = nil
		for _, l := range lgParse(t, p.stderr.String()) {
			if l.str("from") == "go-redis" {
				lines = append(lines, l)
			}
		}
		for _, l := range lines {
			if l.num("repeated") > 0 {
				return true
			}
		}
		return false
	})
	elapsed := time.Since(down)
	kinds := map[string]int{}
	for _, l := range lines {
		if l.str("level") != "WARN" {
			t.Errorf("go-redis line not at warn: %v", l)
		}
		kinds[lgRedisKind(l.str("msg"))]++
	}
	written, accounted := len(lines), lgAccounted(lines)
	for kind, n := range kinds {
		if limit := int(elapsed/interval) + 2; n > limit {
			t.Errorf("%d lines %q in %v, want at most %d (the first, then one per %v)", n, kind, elapsed, limit, interval)
		}
	}
	if accounted <= written {
		t.Errorf("%d go-redis lines standing for %d failures, want counts", written, accounted)
	}
	t.Logf("%d go-redis lines for %d failures in %v: %v", written, accounted, elapsed.Round(time.Millisecond), kinds)
	if t.Failed() {
		t.Logf("log:\n%s", p.stderr.String())
	}
}

// lgRedisKind is a go-redis line's text without its variable tail, for
// the count of kinds.
func lgRedisKind(msg string) string {
	if i := strings.IndexAny(msg, "0123456789"); i >= 0 {
		return msg[:i]
	}
	return msg
}

// TestLogsLimitRefusals: the limits' refusals are logged at info as
// "connection refused" with the reason and the HTTP status: a foreign
// origin (403), the node's cap (503), the address's cap (429, refused at
// accept, so without a protocol).
func TestLogsLimitRefusals(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	n := startNode(t, func(c *node.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		c.Limits = gateway.Limits{MaxConns: 2, MaxConnsPerIP: 3, AllowedOrigins: []string{"https://ok.example"}}
		c.EventLoops = 1 // connections are opened in accept order
	})
	addr := n.Addr().String()
	dialStatus := func(url string, h http.Header) int {
		c, resp, err := websocket.Dial(testCtx(t), url, &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			_ = c.CloseNow()
			t.Fatalf("%s: upgraded, want a refusal", url)
		}
		if resp == nil {
			t.Fatalf("%s: %v", url, err)
		}
		return resp.StatusCode
	}
	if got := dialStatus("ws://"+addr+"/ws", http.Header{"Origin": {"https://evil.example"}}); got != 403 {
		t.Fatalf("foreign origin: %d, want 403", got)
	}
	dial(t, n)
	dial(t, n)
	if got := dialStatus(wsURL(n), nil); got != 503 {
		t.Fatalf("past --max-conns: %d, want 503", got)
	}
	// 127.0.0.2 holds its three places with connections in their
	// handshake; its fourth is refused at accept, before the request is
	// read: the answer may come before an HTTP client has sent its
	// request, so it is read raw.
	from2 := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	for range 3 {
		held, err := from2.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
	}
	over, err := from2.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(waitFor))
	status := make([]byte, 12)
	if _, err := io.ReadFull(over, status); err != nil || string(status) != "HTTP/1.1 429" {
		t.Fatalf("past --max-conns-per-ip: %q %v, want HTTP/1.1 429", status, err)
	}

	var lines []lgLine
	waitUntil(t, "three refusal lines", func() bool {
		lines = lgParse(t, logs.String())
		return len(lgFind(lines, "connection refused", nil)) >= 3
	})
	for _, want := range []map[string]any{
		{"protocol": "hypothesis", "reason": "origin_forbidden", "status": 403, "remote": "127.0.0.1"},
		{"protocol": "native", "reason": "max_conns", "status": 503, "remote": "127.0.0.1"},
		{"reason": "max_conns_per_ip", "status": 429, "remote": "127.0.0.2"},
	} {
		l := lgOne(t, lines, "INFO", "connection refused", want)
		if !lgConnID.MatchString(l.str("conn")) {
			t.Errorf("refusal without conn: %v", l)
		}
		if _, ok := want["protocol"]; !ok {
			if _, has := l["protocol"]; has {
				t.Errorf("a refusal at accept names a protocol: %v", l)
			}
		}
	}
}

// TestLogsWsifyJSON: `gateway wsify -log-format json -log-level debug`
// writes JSON lines, with its members' lifecycle under the common names;
// a bad --log-format is refused before anything starts.
func TestLogsWsifyJSON(t *testing.T) {
	t.Parallel()
	listen := e2eFreeAddr(t)
	cmd := exec.Command(e2eGatewayBinary(t), "wsify", "-listen-addr", listen, "-log-format", "json", "-log-level", "debug")
	cmd.Env = e2eEnv()
	stderr := &e2eLockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	member := wsifyMember(t, listen, exited)
	_ = member.Close(websocket.StatusGoingAway, "leaving")

	var lines []lgLine
	waitUntil(t, "the member's close line", func() bool {
		lines = lgParse(t, stderr.String())
		return len(lgFind(lines, "connection closed", map[string]any{"protocol": "wsify"})) > 0
	})
	auth := lgOne(t, lines, "DEBUG", "authenticated", map[string]any{"protocol": "wsify", "remote": "127.0.0.1"})
	if !strings.HasPrefix(auth.str("subject"), "wsify:") {
		t.Errorf("subject %q, want wsify:<id>", auth.str("subject"))
	}
	lgOne(t, lines, "DEBUG", "connection closed", map[string]any{"conn": auth.str("conn"), "protocol": "wsify",
		"code": 1001, "reason": "leaving", "by": "peer"})

	_, errOut, code := e2eRun(t, e2eEnv(), "wsify", "-listen-addr", e2eFreeAddr(t), "-log-format", "xml")
	if code == 0 || !strings.Contains(errOut, `--log-format "xml": want text or json`) {
		t.Errorf("-log-format xml: exit %d, stderr %q; want a refusal", code, errOut)
	}
}
