package test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway/kosync"
	"github.com/wsgateway/gateway/node"
)

// afClient is an HTTP client whose connections leave from local (a
// loopback address of its own: 127.0.0.1 and 127.0.0.2 are two clients to
// the node).
func afClient(local string, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: waitFor}
	return &http.Client{
		Timeout: waitFor,
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			MaxIdleConnsPerHost: conns,
		},
	}
}

// afGet makes a KOReader GET and returns the status, the body and the
// Retry-After header.
func afGet(ctx context.Context, c *http.Client, url, user, key string) (int, string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Accept", "application/vnd.koreader.v1+json")
	req.Header.Set("x-auth-user", user)
	req.Header.Set("x-auth-key", key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Retry-After"), err
}

// afLatencies times n cached-credential pulls by the good client; every one
// must be 200.
func afLatencies(t *testing.T, c *http.Client, url, user, key string, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		status, body, _, err := afGet(testCtx(t), c, url, user, key)
		if err != nil || status != http.StatusOK {
			t.Fatalf("good client: %d %s %v, want 200", status, body, err)
		}
		out = append(out, time.Since(start))
		time.Sleep(5 * time.Millisecond)
	}
	slices.Sort(out)
	return out
}

func afQuantile(d []time.Duration, q float64) time.Duration { return d[int(q*float64(len(d)-1))] }

// TestKosyncAuthFlood: one address floods bad KOReader credentials (wrong
// keys and unknown users) from many concurrent connections while another
// client keeps pulling its progress. The good client never fails and its
// latency stays close to its quiet baseline (the flooder's hashes run on
// the bounded pool, and past its burst it is answered 429 without
// hashing); the flooder gets 429 with Retry-After in KOReader's error
// shape; the metrics and the info log show it, with no key in the log.
func TestKosyncAuthFlood(t *testing.T) {
	logs := &lockedBuffer{}
	n := startNode(t, func(c *node.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		c.WsifyListen = ""
	})
	base := ksBase(n)
	const user = "reader"
	key := ksRegister(t, base, user, "good password")
	badKey := ksMD5("guess")
	ksPush(t, base, user, key, map[string]any{"document": "doc", "progress": "1", "percentage": 0.1, "device": "kobo"})

	good := afClient("127.0.0.1", 1)
	pull := base + "/syncs/progress/doc"
	quiet := afLatencies(t, good, pull, user, key, 40)

	flooder := afClient("127.0.0.2", 32)
	var stop atomic.Bool // checked between requests: every request sent is answered
	var wg sync.WaitGroup
	var sent, limited, unauthorized, other atomic.Int64
	var retryAfter, limitedBody atomic.Value
	for i := range 16 {
		wg.Go(func() {
			for j := 0; !stop.Load(); j++ {
				name := user // wrong key for a real user, or an unknown user
				if (i+j)%2 == 1 {
					name = "nobody" + strconv.Itoa(j)
				}
				status, body, ra, err := afGet(testCtx(t), flooder, base+"/users/auth", name, badKey)
				if err != nil {
					t.Errorf("flooder: %v", err)
					return
				}
				sent.Add(1)
				switch status {
				case http.StatusTooManyRequests:
					limited.Add(1)
					retryAfter.Store(ra)
					limitedBody.Store(body)
				case http.StatusUnauthorized:
					unauthorized.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // the flood is in full swing
	flooded := afLatencies(t, good, pull, user, key, 40)
	stop.Store(true)
	wg.Wait()

	t.Logf("good client, quiet: p50 %v p90 %v; during the flood: p50 %v p90 %v max %v",
		afQuantile(quiet, .5), afQuantile(quiet, .9), afQuantile(flooded, .5), afQuantile(flooded, .9), flooded[len(flooded)-1])
	t.Logf("flooder: %d requests, %d answered 401, %d 429, %d other", sent.Load(), unauthorized.Load(), limited.Load(), other.Load())

	// Generous bounds: the machine is shared, and the flooder's own HTTP
	// traffic competes for the same cores; an unbounded hash flood would
	// put every pull behind seconds of argon2id.
	if p50, limit := afQuantile(flooded, .5), afQuantile(quiet, .5)+100*time.Millisecond; p50 > limit {
		t.Errorf("median pull latency %v during the flood, want under %v", p50, limit)
	}
	if p90, limit := afQuantile(flooded, .9), afQuantile(quiet, .9)+300*time.Millisecond; p90 > limit {
		t.Errorf("p90 pull latency %v during the flood, want under %v", p90, limit)
	}
	if limited.Load() == 0 || unauthorized.Load() > int64(kosync.DefaultAuthFailureBurst+1) || other.Load() != 0 {
		t.Fatalf("flooder: %d 401, %d 429, %d other; want at most %d 401 (the burst), then 429 only",
			unauthorized.Load(), limited.Load(), other.Load(), kosync.DefaultAuthFailureBurst)
	}
	if ra, _ := strconv.Atoi(retryAfter.Load().(string)); ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q, want 1..60 seconds", retryAfter.Load())
	}
	if body := limitedBody.Load().(string); body != `{"code":429,"message":"Too many failed attempts from your address. Try again later."}` {
		t.Fatalf("429 body %s", body)
	}

	// The metrics moved.
	if v := limScrapeValue(t, n, "gateway_kosync_auth_rate_limited_total"); v != float64(limited.Load()) {
		t.Errorf("gateway_kosync_auth_rate_limited_total = %v, want %d", v, limited.Load())
	}
	// Hashes: the registration, and the flooder's burst at most
	// (concurrent identical failures share one): the 429s cost none.
	if v := limScrapeValue(t, n, "gateway_kosync_hash_wait_seconds_count"); v < 2 || v > float64(kosync.DefaultAuthFailureBurst+2) {
		t.Errorf("gateway_kosync_hash_wait_seconds_count = %v, want 2..%d", v, kosync.DefaultAuthFailureBurst+2)
	}
	if v := limScrapeValue(t, n, "gateway_kosync_hash_workers"); v != float64(kosync.DefaultHashWorkers()) {
		t.Errorf("gateway_kosync_hash_workers = %v, want %d", v, kosync.DefaultHashWorkers())
	}
	if v := limScrapeValue(t, n, "gateway_kosync_hash_queue_depth"); v != 0 {
		t.Errorf("gateway_kosync_hash_queue_depth = %v after the flood, want 0", v)
	}

	// The log: the refusals at info, from the flooder's address, collapsed,
	// and never a key.
	out := logs.String()
	for _, want := range []string{
		`msg="authentication failed" protocol=kosync remote=127.0.0.2 subject=reader reason=wrong_key`,
		`msg="authentication failed" protocol=kosync remote=127.0.0.2 subject=nobody`,
		`msg="request throttled" protocol=kosync remote=127.0.0.2 subject=`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log has no line with %q:\n%s", want, out)
		}
	}
	if lines := strings.Count(out, "reason=rate_limited"); lines == 0 || lines > 2 {
		t.Errorf("%d rate_limited lines for %d refusals, want them collapsed into 1 or 2", lines, limited.Load())
	}
	for _, secret := range []string{key, badKey} {
		if strings.Contains(out, secret) {
			t.Fatalf("a key appears in the log:\n%s", out)
		}
	}
}
