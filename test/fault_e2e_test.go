package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Fault-injection tests against real processes (`gateway serve`): Redis
// going away and coming back, a data dir that cannot be written, kill -9 in
// the middle of writes. Helpers are prefixed fault.

// faultHTTP has a timeout longer than any answer the gateway should need,
// also while a dependency is down.
var faultHTTP = &http.Client{Timeout: 30 * time.Second}

// faultGet GETs url and returns the status and body; err only when there
// was no answer at all.
func faultGet(url string) (int, string, error) {
	resp, err := faultHTTP.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// faultScrape returns the samples of the /metrics of the admin listener at
// base, name{labels} -> value.
func faultScrape(t testing.TB, base string) map[string]float64 {
	t.Helper()
	status, body, err := faultGet(base + "/metrics")
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %v", base, status, err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// faultMetric is one sample of faultScrape that must exist.
func faultMetric(t testing.TB, base, name string) float64 {
	t.Helper()
	v, ok := faultScrape(t, base)[name]
	if !ok {
		t.Fatalf("%s/metrics has no %s", base, name)
	}
	return v
}

// faultWaitReadyz polls base/readyz until it answers 200 with exactly body
// (as JSON values, within 20 s); every answer on the way must be a 200 (a Redis outage
// never makes the node unready).
func faultWaitReadyz(t testing.TB, base, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var status int
	var body string
	var err error
	for time.Now().Before(deadline) {
		status, body, err = faultGet(base + "/readyz")
		if err == nil && status != http.StatusOK {
			t.Fatalf("GET %s/readyz: %d %q while waiting for %q: want 200 throughout", base, status, body, want)
		}
		if err == nil && ksJSONEqual([]byte(body), []byte(want)) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s/readyz: %d %q (%v) after 20 s, want 200 %s", base, status, body, err, want)
}

const (
	faultReady    = `{"status":"ready"}`
	faultDegraded = `{"status":"degraded","down":["redis"]}`
)

// faultKeys issues keys signed with testSecret, the GATEWAY_SECRET of the
// processes of these tests.
func faultKeys(t testing.TB) *token.Secrets {
	t.Helper()
	s, err := token.ParseSecrets(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func faultIssue(t testing.TB, s *token.Secrets, subject string) (string, token.Claims) {
	t.Helper()
	raw, claims, err := s.Issue(subject, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return token.EncodeText(raw), claims
}

// faultPost posts a JSON body to an admin URL and returns status and body.
func faultPost(t testing.TB, url, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := faultHTTP.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// faultKillRedis makes the redis-server of srv exit (SHUTDOWN NOSAVE) and
// waits until its port refuses connections: a clean exit, where srv.Stop
// kills the process. srv.Restart then starts a new one on the same port.
func faultKillRedis(t testing.TB, srv *redistest.Server) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer rc.Close()
	_ = rc.ShutdownNoSave(context.Background()).Err() // the connection just ends
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", srv.Addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s still accepts connections 15 s after SHUTDOWN", srv.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// faultRuntime is the go_goroutines and go_memstats_heap_alloc_bytes of a
// process.
type faultRuntime struct{ goroutines, heap float64 }

func faultReadRuntime(t testing.TB, base string) faultRuntime {
	t.Helper()
	m := faultScrape(t, base)
	g, ok1 := m["go_goroutines"]
	h, ok2 := m["go_memstats_heap_alloc_bytes"]
	if !ok1 || !ok2 {
		t.Fatalf("%s/metrics lacks go_goroutines or go_memstats_heap_alloc_bytes", base)
	}
	return faultRuntime{g, h}
}

// faultWaitFlat polls a process's runtime metrics (up to 20 s: goroutines
// of closed connections take a moment to end) until goroutines <
// before+maxGoroutines and heap < 2*before+16 MiB. The heap is read without
// a forced GC, hence the generous bound.
func faultWaitFlat(t testing.TB, what, base string, before faultRuntime, maxGoroutines float64) faultRuntime {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		now := faultReadRuntime(t, base)
		if now.goroutines < before.goroutines+maxGoroutines && now.heap < 2*before.heap+16<<20 {
			return now
		}
		if time.Now().After(deadline) {
			t.Errorf("LEAK? %s: goroutines %v -> %v (bound +%v), heap %.1f MiB -> %.1f MiB (bound 2x+16 MiB)",
				what, before.goroutines, now.goroutines, maxGoroutines, before.heap/(1<<20), now.heap/(1<<20))
			return now
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// faultReadUntilMarker publishes markers on channel through pub every
// 100 ms until sub reads one (Redis resubscription after a restart takes a
// moment; earlier markers may be lost). The first message sub reads must be
// a marker: nothing stale, nothing else.
func faultReadUntilMarker(t testing.TB, pub, sub *websocket.Conn, channel, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			if pub.Write(ctx, websocket.MessageBinary, packet.AppendPublish(nil, channel, fmt.Appendf(nil, "marker-%d", i))) != nil {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	typ, msg, err := sub.Read(ctx)
	if err != nil {
		t.Fatalf("%s: no publish came through within 20 s of the Redis restart: %v", what, err)
	}
	ps := decodeAll(t, msg)
	if typ != websocket.MessageBinary || len(ps) != 1 || ps[0].ID != packet.PacketMessage ||
		string(ps[0].Channel) != channel || !bytes.HasPrefix(ps[0].Payload, []byte("marker-")) {
		t.Fatalf("%s: first message after the restart is %v %d packets %+v, want one marker Message", what, typ, len(ps), ps)
	}
	cancel()
	// Markers published before cancel may still be on their way: drain
	// until a Ping's Pong proves the queue empty.
	send(t, sub, packet.AppendPing(nil))
	for {
		p := readOne(t, sub)
		if p.ID == packet.PacketPong {
			return
		}
		if p.ID != packet.PacketMessage || !bytes.HasPrefix(p.Payload, []byte("marker-")) {
			t.Fatalf("%s: after the marker got %s", what, describe(p))
		}
	}
}

// TestFaultRedisOutage: two `gateway serve` processes on one Redis, which
// is shut down and later restarted on the same port (empty). While it is down
// both nodes say 200 degraded on /readyz and gateway_redis_up 0, local
// pub/sub keeps working on each node, and a revocation is refused with 503
// (nothing revoked: the key still authenticates). Once it is back: ready
// again, cross-node fan-out resumes both ways, the revocation refused during
// the outage now succeeds and closes its session on the other node with
// 3004, and so does a new one; goroutines and heap of both processes are
// back near their level before the outage.
func TestFaultRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	env := e2eEnv("GATEWAY_SECRET=" + testSecret)
	keys := faultKeys(t)
	a := e2eServe(t, env, "--data-dir", t.TempDir(), "--redis", srv.URL)
	b := e2eServe(t, env, "--data-dir", t.TempDir(), "--redis", srv.URL)
	for _, p := range []*e2eProc{a, b} {
		if v := faultMetric(t, p.admin, "gateway_redis_up"); v != 1 {
			t.Fatalf("gateway_redis_up = %v before the outage, want 1", v)
		}
	}
	conn := func(p *e2eProc, subject string) *websocket.Conn {
		text, _ := faultIssue(t, keys, subject)
		return e2eConnectURL(t, p.ws, text)
	}

	// Cross-node both ways, and a local pair on each node.
	subB, pubA := conn(b, "bob"), conn(a, "alice")
	subscribe(t, subB, "room")
	subA, pubB := conn(a, "carol"), conn(b, "dave")
	subscribe(t, subA, "room2")
	localSubA, localPubA := conn(a, "erin"), conn(a, "frank")
	subscribe(t, localSubA, "localA")
	localSubB, localPubB := conn(b, "grace"), conn(b, "heidi")
	subscribe(t, localSubB, "localB")
	send(t, pubA, packet.AppendPublish(nil, "room", []byte("before")))
	e2eExpectMessage(t, subB, "room", []byte("before"))
	send(t, pubB, packet.AppendPublish(nil, "room2", []byte("before")))
	e2eExpectMessage(t, subA, "room2", []byte("before"))
	// victim1's revocation is attempted during the outage, victim2's after.
	k1, c1 := faultIssue(t, keys, "victim1")
	k2, c2 := faultIssue(t, keys, "victim2")
	victim1, victim2 := e2eConnectURL(t, b.ws, k1), e2eConnectURL(t, b.ws, k2)

	beforeA, beforeB := faultReadRuntime(t, a.admin), faultReadRuntime(t, b.admin)

	faultKillRedis(t, srv)
	stopped := time.Now()
	for _, p := range []*e2eProc{a, b} {
		faultWaitReadyz(t, p.admin, faultDegraded)
		if v := faultMetric(t, p.admin, "gateway_redis_up"); v != 0 {
			t.Fatalf("gateway_redis_up = %v while Redis is down, want 0", v)
		}
		if status, body, err := faultGet(p.admin + "/healthz"); err != nil || status != http.StatusOK {
			t.Fatalf("healthz while Redis is down: %d %q %v", status, body, err)
		}
	}

	// Local traffic goes on: every publish, in order, exactly once.
	for i := range 20 {
		send(t, localPubA, packet.AppendPublish(nil, "localA", fmt.Appendf(nil, "a-%d", i)))
		send(t, localPubB, packet.AppendPublish(nil, "localB", fmt.Appendf(nil, "b-%d", i)))
	}
	for i := range 20 {
		e2eExpectMessage(t, localSubA, "localA", fmt.Appendf(nil, "a-%d", i))
		e2eExpectMessage(t, localSubB, "localB", fmt.Appendf(nil, "b-%d", i))
	}
	e2ePing(t, localSubA)
	e2ePing(t, localSubB)
	// A new connection authenticates and a subscription made now gets the
	// local publishes (no Subscribed while Redis cannot confirm it).
	fresh := conn(a, "ivan")
	send(t, fresh, packet.AppendSubscribe(nil, "freshA"))
	e2ePing(t, fresh)
	send(t, localPubA, packet.AppendPublish(nil, "freshA", []byte("fresh")))
	e2eExpectMessage(t, fresh, "freshA", []byte("fresh"))
	_ = fresh.CloseNow()

	// A revocation cannot be made durable: 503, nothing revoked.
	status, body := faultPost(t, a.admin+"/api/revoke", fmt.Sprintf(`{"id":%q}`, c1.ID))
	if status != http.StatusServiceUnavailable || body != `{"error":"revocation store unavailable; nothing was revoked"}`+"\n" {
		t.Fatalf("revoke while Redis is down: %d %q, want 503 revocation store unavailable", status, body)
	}
	e2ePing(t, victim1)
	victim1OnA := e2eConnectURL(t, a.ws, k1) // not revoked on A either
	// Keep Redis down a few seconds: the reconnect loops spin meanwhile.
	if d := time.Until(stopped.Add(3 * time.Second)); d > 0 {
		time.Sleep(d)
	}

	srv.Restart(t)
	for _, p := range []*e2eProc{a, b} {
		// The new redis-server starts empty (no persistence here): the
		// nodes notice (TestRevocationRedisRestartedEmpty).
		faultWaitReadyz(t, p.admin, `{"status":"degraded","down":["redis_data_lost"]}`)
		if v := faultMetric(t, p.admin, "gateway_redis_up"); v != 1 {
			t.Fatalf("gateway_redis_up = %v after the restart, want 1", v)
		}
	}
	faultReadUntilMarker(t, pubA, subB, "room", "A to B")
	faultReadUntilMarker(t, pubB, subA, "room2", "B to A")

	// The refused revocation, made again, and a new one both close their
	// sessions on the other node.
	status, body = faultPost(t, a.admin+"/api/revoke", fmt.Sprintf(`{"id":%q}`, c1.ID))
	if status != http.StatusOK {
		t.Fatalf("revoke after the restart: %d %q", status, body)
	}
	expectClose(t, victim1, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	expectClose(t, victim1OnA, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	status, body = faultPost(t, a.admin+"/api/revoke", fmt.Sprintf(`{"key":%q}`, k2))
	if status != http.StatusOK || !strings.Contains(body, c2.ID.String()) {
		t.Fatalf("revoke after the restart: %d %q", status, body)
	}
	expectClose(t, victim2, websocket.StatusCode(packet.CloseRevoked), "access key revoked")
	for _, p := range []*e2eProc{a, b} {
		c := e2eDialURL(t, p.ws)
		raw, _ := token.DecodeText(k2)
		e2eAuth(t, c, raw)
		expectClose(t, c, websocket.StatusCode(packet.CloseUnauthorized), "access key revoked")
	}
	// Nothing stray reached the local subscribers.
	e2ePing(t, localSubA)
	e2ePing(t, localSubB)

	// The outage left no goroutines or memory behind (the connections are
	// those of before, minus the victims).
	afterA := faultWaitFlat(t, "node A", a.admin, beforeA, 50)
	afterB := faultWaitFlat(t, "node B", b.admin, beforeB, 50)
	t.Logf("goroutines A %v -> %v, B %v -> %v; heap A %.1f -> %.1f MiB, B %.1f -> %.1f MiB",
		beforeA.goroutines, afterA.goroutines, beforeB.goroutines, afterB.goroutines,
		beforeA.heap/(1<<20), afterA.heap/(1<<20), beforeB.heap/(1<<20), afterB.heap/(1<<20))
}

// TestFaultRedisDownAtStart: a node whose Redis URL points at a closed
// port starts, says 200 degraded on /readyz (never 503) and
// gateway_redis_up 0, and serves its own clients. (Bringing a Redis up on
// that very port afterwards is TestFaultRedisOutage's restart: redistest
// cannot choose a port.) The node has a saved revoked set: without one it
// refuses every key until Redis answers (TestRevocationFailClosedRedisDown).
func TestFaultRedisDownAtStart(t *testing.T) {
	t.Parallel()
	n := durNodeRedisDown(t)
	first, firstBody, err := faultGet(adminURL(n) + "/readyz")
	if err != nil || first != http.StatusOK {
		t.Fatalf("first readyz: %d %q %v", first, firstBody, err)
	}
	if !ksJSONEqual([]byte(firstBody), []byte(faultDegraded)) {
		// Start assumes Redis is up until its first PING fails.
		t.Logf("note: the first /readyz right after Start said %q, not degraded", firstBody)
	}
	faultWaitReadyz(t, adminURL(n), faultDegraded)
	if v := faultMetric(t, adminURL(n), "gateway_redis_up"); v != 0 {
		t.Fatalf("gateway_redis_up = %v, want 0", v)
	}
	sub, pub := connect(t, n, "bob"), connect(t, n, "alice")
	send(t, sub, packet.AppendSubscribe(nil, "room"))
	e2ePing(t, sub)
	send(t, pub, packet.AppendPublish(nil, "room", []byte("local")))
	e2eExpectMessage(t, sub, "room", []byte("local"))
	// A revocation is refused with 503; the key still works.
	raw, claims := e2eIssue(t, n, "victim")
	status, body := faultPost(t, adminURL(n)+"/api/revoke", fmt.Sprintf(`{"id":%q}`, claims.ID))
	if status != http.StatusServiceUnavailable {
		t.Fatalf("revoke with Redis down: %d %q, want 503", status, body)
	}
	e2ePing(t, e2eConnectKey(t, n, raw))
}

// TestFaultDataDirUnusable: a data dir the node cannot use is a clear
// start error naming the path, never a panic. The test runs as root in CI,
// where chmod cannot make a directory read-only, so read-only is checked
// only when not root; a data dir that is a file and a kosync.db that is a
// directory fail for root too.
func TestFaultDataDirUnusable(t *testing.T) {
	t.Parallel()
	try := func(what, dir, want string) {
		t.Helper()
		cfg := node.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", Secret: testSecret, EventLoops: 1,
			DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		var n *node.Node
		var err error
		panicked := false
		func() {
			defer func() {
				if r := recover(); r != nil {
					panicked = true
					t.Errorf("BUG: %s: node.Start panicked instead of returning an error: %v", what, r)
				}
			}()
			n, err = node.Start(cfg)
		}()
		if panicked {
			return
		}
		if err == nil {
			_ = n.Shutdown(context.Background())
			t.Errorf("%s: node.Start succeeded, want an error", what)
			return
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not name %s", what, err, want)
			return
		}
		t.Logf("%s: %v", what, err)
	}

	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	try("data dir is a file", file, file)

	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "kosync.db"), 0o700); err != nil {
		t.Fatal(err)
	}
	try("kosync.db is a directory", dir, filepath.Join(dir, "kosync.db"))

	if os.Geteuid() == 0 {
		t.Log("running as root: chmod cannot make the data dir read-only; that case is skipped (see TestFaultDiskFull for writes that fail)")
		return
	}
	ro := t.TempDir()
	if err := os.Chmod(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(ro, 0o700) })
	try("read-only data dir", ro, ro)
}

// faultKosyncUser creates a KOReader user on the process at base.
func faultKosyncUser(t testing.TB, base, user string) string {
	t.Helper()
	return ksRegister(t, base, user, user+"-pw")
}

// faultPut is one KOReader progress push; it returns the status (0 when
// there was no answer) and the body.
func faultPut(client *http.Client, base, user, key, doc, progress string) (int, string) {
	body := ksJSON(map[string]any{"document": doc, "progress": progress, "percentage": 0.5, "device": "fault", "device_id": "F00D"})
	req, err := http.NewRequest(http.MethodPut, base+"/syncs/progress", strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Accept", "application/vnd.koreader.v1+json")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-auth-user", user)
	req.Header.Set("x-auth-key", key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// faultDocState reads a document: "" when unknown ({}), else its progress;
// any other field value is a corruption.
func faultDocState(t testing.TB, base, user, key, doc string) string {
	t.Helper()
	r := ksDo(t, http.MethodGet, base+"/syncs/progress/"+doc, user, key, "")
	var got map[string]any
	if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil {
		t.Fatalf("GET /syncs/progress/%s: %d %s", doc, r.status, r.body)
	}
	if len(got) == 0 {
		return ""
	}
	p, _ := got["progress"].(string)
	if got["document"] != doc || got["percentage"] != 0.5 || got["device"] != "fault" || p == "" {
		t.Fatalf("GET /syncs/progress/%s = %s: a half-written document", doc, r.body)
	}
	return p
}

// TestFaultKill9MidWrites: 200 KOReader pushes on distinct documents from
// 8 goroutines; SIGKILL once about 100 are acknowledged. The process
// restarted on the same data dir opens the store cleanly (ready), every
// acknowledged document is there with its exact progress, and any other
// document is either absent or whole.
func TestFaultKill9MidWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := e2eEnv("GATEWAY_SECRET=" + testSecret)
	p := e2eServe(t, env, "--data-dir", dir)
	base := "http://" + ksProcAddr(p)
	key := faultKosyncUser(t, base, "reader")

	const total, workers = 200, 8
	progress := func(i int) string { return fmt.Sprintf("/body/DocFragment[%d]/body/p[%d]/text().%d", i, i*7, i*13) }
	doc := func(i int) string { return fmt.Sprintf("doc%04d", i) }
	var (
		mu      sync.Mutex
		acked   = map[int]bool{}
		nAcked  atomic.Int64
		next    atomic.Int64
		killed  = make(chan struct{})
		badMu   sync.Mutex
		badResp []string
	)
	client := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				status, body := faultPut(client, base, "reader", key, doc(i), progress(i))
				switch {
				case status == http.StatusOK:
					mu.Lock()
					acked[i] = true
					mu.Unlock()
					nAcked.Add(1)
				case status == 0:
					select {
					case <-killed: // the kill cut it: not acknowledged
					default:
						badMu.Lock()
						badResp = append(badResp, fmt.Sprintf("%s: no answer before the kill: %s", doc(i), body))
						badMu.Unlock()
					}
				default:
					badMu.Lock()
					badResp = append(badResp, fmt.Sprintf("%s: %d %s", doc(i), status, body))
					badMu.Unlock()
				}
			}
		})
	}
	deadline := time.Now().Add(60 * time.Second)
	for nAcked.Load() < total/2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(killed) // first: a push cut by the kill must not count as a failure
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	wg.Wait()
	if len(badResp) > 0 {
		t.Fatalf("%d pushes failed before the kill, e.g. %s", len(badResp), badResp[0])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no push was acknowledged before the kill")
	}

	q := e2eServe(t, env, "--data-dir", dir) // waits for /readyz ready
	qbase := "http://" + ksProcAddr(q)
	present := 0
	for i := range total {
		got := faultDocState(t, qbase, "reader", key, doc(i))
		switch {
		case acked[i] && got != progress(i):
			t.Errorf("acknowledged %s lost after kill -9: progress %q, want %q", doc(i), got, progress(i))
		case got != "" && got != progress(i):
			t.Errorf("%s after kill -9: progress %q, want %q or nothing", doc(i), got, progress(i))
		}
		if got != "" {
			present++
		}
	}
	t.Logf("%d pushes acknowledged before the kill, %d documents present after the restart", len(acked), present)
	// The store takes writes again.
	if status, body := faultPut(client, qbase, "reader", key, "after", "x"); status != http.StatusOK {
		t.Fatalf("push after the restart: %d %s", status, body)
	}
	if strings.Contains(q.stderr.String(), "panic") {
		t.Fatalf("restarted process logged a panic:\n%s", q.stderr.String())
	}
}

// TestFaultDiskFull: the disk "fills" under a running process (its
// RLIMIT_FSIZE is lowered to the current size of kosync.db, so the store
// cannot grow: EFBIG, like ENOSPC for the writer). Pushes then fail with a
// clear 5xx, the process keeps serving (reads, /healthz), and after a
// restart without the limit the store opens cleanly with every acknowledged
// write. A process started with no room at all (limit 0) exits with a
// clear error, no panic. (A real full tmpfs needs mount privileges this
// test does not assume.)
func TestFaultDiskFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := e2eEnv("GATEWAY_SECRET=" + testSecret)
	p := e2eServe(t, env, "--data-dir", dir)
	base := "http://" + ksProcAddr(p)
	key := faultKosyncUser(t, base, "reader")
	client := &http.Client{Timeout: 30 * time.Second}
	big := strings.Repeat("p", 2000) // documents fill pages fast
	progress := func(i int) string { return fmt.Sprintf("%d/%s", i, big) }
	acked := map[int]bool{}
	for i := range 5 {
		if status, body := faultPut(client, base, "reader", key, fmt.Sprintf("d%04d", i), progress(i)); status != http.StatusOK {
			t.Fatalf("push before the limit: %d %s", status, body)
		}
		acked[i] = true
	}
	st, err := os.Stat(filepath.Join(dir, "kosync.db"))
	if err != nil {
		t.Fatal(err)
	}
	pid := p.cmd.Process.Pid
	lim := &unix.Rlimit{Cur: uint64(st.Size()), Max: unix.RLIM_INFINITY}
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, lim, nil); err != nil {
		t.Skipf("cannot lower the file size limit of the gateway process: %v", err)
	}
	var failStatus int
	var failBody string
	for i := 5; i < 2000; i++ {
		status, body := faultPut(client, base, "reader", key, fmt.Sprintf("d%04d", i), progress(i))
		if status == http.StatusOK {
			acked[i] = true
			continue
		}
		failStatus, failBody = status, body
		break
	}
	if failStatus == 0 && failBody == "" {
		t.Fatalf("2000 pushes succeeded with kosync.db capped at %d bytes", st.Size())
	}
	if failStatus < 500 || failStatus > 599 || failBody == "" {
		t.Fatalf("push on a full disk answered %d %q, want a clear 5xx", failStatus, failBody)
	}
	t.Logf("push on a full disk: %d %s (after %d acknowledged)", failStatus, strings.TrimSpace(failBody), len(acked))
	// Still alive, still reading.
	if status, body, err := faultGet(p.admin + "/healthz"); err != nil || status != http.StatusOK {
		t.Fatalf("healthz on a full disk: %d %q %v", status, body, err)
	}
	faultWantDoc2 := func(base string, i int) {
		t.Helper()
		if got := faultDocState(t, base, "reader", key, fmt.Sprintf("d%04d", i)); got != progress(i) {
			t.Fatalf("acknowledged d%04d: progress %.20q..., want %.20q...", i, got, progress(i))
		}
	}
	faultWantDoc2(base, 0)
	// A second failing push fails the same way (no wedged store).
	if status, _ := faultPut(client, base, "reader", key, "d9999", progress(9999)); status < 500 {
		t.Fatalf("second push on a full disk: %d, want 5xx", status)
	}
	select {
	case <-p.exited:
		t.Fatalf("the process died on a full disk: %v\n%s", p.err, p.stderr.String())
	default:
	}
	if strings.Contains(p.stderr.String(), "panic") {
		t.Fatalf("panic logged on a full disk:\n%s", p.stderr.String())
	}

	// Room again: writes resume on the same process.
	unlimited := &unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, unlimited, nil); err != nil {
		t.Fatal(err)
	}
	if status, body := faultPut(client, base, "reader", key, "d9998", progress(9998)); status != http.StatusOK {
		t.Errorf("push after room was made again: %d %s, want 200", status, body)
	} else {
		acked[9998] = true
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited

	q := e2eServe(t, env, "--data-dir", dir)
	qbase := "http://" + ksProcAddr(q)
	for i := range acked {
		faultWantDoc2(qbase, i)
	}
	if got := faultDocState(t, qbase, "reader", key, "d9999"); got != "" && got != progress(9999) {
		t.Fatalf("refused push left a corrupt document: %.40q", got)
	}

	// No room at all at start: a clear error exit, no panic.
	full := t.TempDir()
	cmd := exec.Command("sh", "-c", `ulimit -f 0 && exec "$0" "$@"`, e2eGatewayBinary(t), "serve",
		"--listen", e2eFreeAddr(t), "--admin-listen", e2eFreeAddr(t), "--wsify-listen", e2eFreeAddr(t),
		"--event-loops", "1", "--data-dir", full)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("serve with no disk room: %v, want an error exit; stderr %s", err, stderr.String())
		}
		if ee.ExitCode() == 2 && strings.Contains(stderr.String(), "goroutine ") || strings.Contains(stderr.String(), "panic") {
			t.Fatalf("BUG: serve with no disk room panicked instead of an error exit:\n%s", stderr.String())
		}
		if !strings.Contains(stderr.String(), full) {
			t.Errorf("serve with no disk room: stderr %q does not name the data dir %s", stderr.String(), full)
		}
		t.Logf("serve with no disk room: %v: %s", err, strings.TrimSpace(stderr.String()))
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("serve with no disk room still running after 30 s; stderr %s", stderr.String())
	}
}
