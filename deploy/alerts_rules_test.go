package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
)

// nodeState is what a real node exported at one moment: its /readyz
// answer and its /metrics samples (series text -> value).
type nodeState struct {
	name    string
	ready   int    // /readyz status code
	body    string // /readyz body
	samples map[string]float64
}

// TestAlertRulesAgainstRealNode checks the alert rules against what the
// binary really answers: a node with its own redis-server is scraped while
// Redis answers, while it is down and after it came back empty (data lost),
// and `promtool test rules` replays those values, ten minutes per state, to
// check which alerts fire. The point of it: /readyz stays 200 "degraded"
// while Redis is unreachable, so the readiness probe alone (GatewayNotReady)
// never fires for a node cut off from Redis; GatewayRedisUnreachable must.
func TestAlertRulesAgainstRealNode(t *testing.T) {
	bin := promtool(t)
	srv := redistest.Start(t)
	n, err := node.Start(node.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", WsifyListen: "127.0.0.1:0",
		DataDir: t.TempDir(), Secret: "alert-rules-test-secret-0123456789-0123456789",
		RedisURL: srv.URL, EventLoops: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	admin := "http://" + n.AdminAddr().String()

	ready := scrapeState(t, admin, "ready", func(code int, down []string) bool { return code == 200 && len(down) == 0 })
	srv.Stop()
	degraded := scrapeState(t, admin, "redis down", func(code int, down []string) bool { return slices.Contains(down, "redis") })
	srv.Restart(t) // empty: redistest keeps no data
	lost := scrapeState(t, admin, "redis back without its data", func(code int, down []string) bool {
		return slices.Equal(down, []string{"redis_data_lost"})
	})

	// What the binary answered, which the alerts below rely on.
	if ready.samples[`gateway_redis_up`] != 1 || degraded.samples[`gateway_redis_up`] != 0 {
		t.Fatalf("gateway_redis_up: %v while Redis answers, %v while it is down; want 1 and 0",
			ready.samples[`gateway_redis_up`], degraded.samples[`gateway_redis_up`])
	}
	if degraded.ready != http.StatusOK {
		t.Logf("note: /readyz answered %d while Redis was down", degraded.ready)
	}
	if lost.samples[`gateway_redis_data_lost_total`] < 1 {
		t.Fatalf("gateway_redis_data_lost_total = %v after Redis came back empty", lost.samples[`gateway_redis_data_lost_total`])
	}

	dir := t.TempDir()
	rules := rulesWithoutAnnotations(t, dir)
	states := []nodeState{ready, degraded, lost}
	const minutesPer = 10
	test := map[string]any{
		"rule_files":          []string{rules},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval":     "1m",
			"input_series": inputSeries(t, states, minutesPer),
			"alert_rule_test": []any{
				// Ready: nothing fires.
				expect("GatewayRedisUnreachable", 9),
				expect("GatewayNotReady", 9),
				expect("GatewayRedisDataLost", 9),
				expect("GatewayDown", 9),
				// Redis down for 4 minutes: /readyz is still 200, so the probe
				// alert stays silent and the metric alert fires.
				expect("GatewayRedisUnreachable", 14, "critical"),
				expect("GatewayNotReady", 14),
				expect("GatewayRedisDataLost", 14),
				// Redis back without its data.
				expect("GatewayRedisDataLost", 25, "critical"),
				expect("GatewayRedisUnreachable", 25),
				expect("GatewayNotReady", 25),
				expect("GatewayRedisReconnects", 25),
			},
		}},
	}
	data, err := yaml.Marshal(test)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "alerts_test.yml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "test", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n--- test file:\n%s", err, out, data)
	}
	t.Logf("promtool test rules: %s", strings.TrimSpace(string(out)))
}

// expect is one alert_rule_test entry: the alert fires at minute m for the
// node with this severity, or (no severity) does not fire.
func expect(alert string, m int, severity ...string) map[string]any {
	var alerts []any
	for _, s := range severity {
		alerts = append(alerts, map[string]any{"exp_labels": map[string]string{"instance": "node", "severity": s}})
	}
	return map[string]any{"eval_time": fmt.Sprintf("%dm", m), "alertname": alert, "exp_alerts": alerts}
}

// rulesWithoutAnnotations writes alerts.yml without its annotations, whose
// templated text promtool would otherwise compare too; expressions, for:
// and labels, which decide what fires, are unchanged.
func rulesWithoutAnnotations(t *testing.T, dir string) string {
	t.Helper()
	doc := yamlDoc(t, "prometheus/alerts.yml")
	for _, g := range list(doc, "groups") {
		for _, r := range list(g, "rules") {
			delete(r.(map[string]any), "annotations")
		}
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "alerts.yml")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// inputSeries turns the states into promtool input series, minutesPer
// samples each, labelled as Prometheus would scrape the node (job="gateway",
// instance="node"), plus up and the blackbox probe of /readyz.
func inputSeries(t *testing.T, states []nodeState, minutesPer int) []any {
	t.Helper()
	names := map[string]bool{}
	for _, s := range states {
		for k := range s.samples {
			names[k] = true
		}
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	values := func(get func(nodeState) (float64, bool)) string {
		var v []string
		for _, s := range states {
			x, ok := get(s)
			for range minutesPer {
				if ok {
					v = append(v, strconv.FormatFloat(x, 'f', -1, 64))
				} else {
					v = append(v, "_")
				}
			}
		}
		return strings.Join(v, " ")
	}
	var series []any
	add := func(name, vals string) { series = append(series, map[string]string{"series": name, "values": vals}) }
	for _, k := range keys {
		add(withLabels(k, `job="gateway",instance="node"`), values(func(s nodeState) (float64, bool) {
			v, ok := s.samples[k]
			return v, ok
		}))
	}
	add(`up{job="gateway",instance="node"}`, values(func(nodeState) (float64, bool) { return 1, true }))
	add(`probe_success{job="gateway-readyz",instance="node"}`, values(func(s nodeState) (float64, bool) {
		if s.ready == http.StatusOK {
			return 1, true
		}
		return 0, true
	}))
	return series
}

// withLabels adds labels to a series written as name or name{...}.
func withLabels(series, labels string) string {
	if name, rest, ok := strings.Cut(series, "{"); ok {
		return name + "{" + labels + "," + rest
	}
	return series + "{" + labels + "}"
}

// scrapeState waits until /readyz says what ok wants, then reads /metrics.
func scrapeState(t *testing.T, admin, name string, ok func(code int, down []string) bool) nodeState {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(admin + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var r struct {
				Down []string `json:"down"`
			}
			_ = json.Unmarshal(body, &r)
			if ok(resp.StatusCode, r.Down) {
				st := nodeState{name: name, ready: resp.StatusCode, body: strings.TrimSpace(string(body)), samples: scrape(t, c, admin)}
				t.Logf("state %q: /readyz %d %s", name, st.ready, st.body)
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("state %q not reached within 30 s: /readyz %d %s", name, resp.StatusCode, body)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("state %q: /readyz: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$`)

// scrape reads the gateway_* samples of /metrics (Prometheus text format).
func scrape(t *testing.T, c *http.Client, admin string) map[string]float64 {
	t.Helper()
	resp, err := c.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "gateway_") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("/metrics: cannot read %q", line)
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("/metrics: %q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out
}
