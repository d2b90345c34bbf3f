package test

import (
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
)

// TestMetricsDocumented keeps README.md's Metrics table and the binary in
// step: a node with every part on (Redis, KOsync, Hypothesis, wsify) is
// scraped, and every gateway_* family it registers (the registry's
// descriptors: a labelled family with no sample yet is absent from
// /metrics but exists) or exports on /metrics must be in the table, with
// the same label names, and every family the table lists must exist.
func TestMetricsDocumented(t *testing.T) {
	srv := redistest.Start(t)
	n := e2eRedisNode(t, srv, func(c *node.Config) { c.WsifyListen = "127.0.0.1:0" })

	// Some traffic, so that /metrics carries labelled families too.
	c := connect(t, n, "alice")
	subscribe(t, c, "room")
	resp, err := http.Get("http://" + n.Addr().String() + "/syncs/progress/abc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	registered := map[string]map[string]bool{} // family -> label names
	ch := make(chan *prometheus.Desc)
	go func() { n.Server.Registry().Describe(ch); close(ch) }()
	descName := regexp.MustCompile(`fqName: "([^"]+)"`)
	descConst := regexp.MustCompile(`constLabels: \{([^}]*)\}`)
	descVar := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	for d := range ch {
		s := d.String()
		m := descName.FindStringSubmatch(s)
		if m == nil || !strings.HasPrefix(m[1], "gateway_") {
			continue
		}
		labels := registered[m[1]]
		if labels == nil {
			labels = map[string]bool{}
			registered[m[1]] = labels
		}
		if c := descConst.FindStringSubmatch(s); c != nil {
			for kv := range strings.SplitSeq(c[1], ",") {
				if k, _, ok := strings.Cut(kv, "="); ok {
					labels[strings.TrimSpace(k)] = true
				}
			}
		}
		if v := descVar.FindStringSubmatch(s); v != nil {
			for k := range strings.SplitSeq(v[1], ",") {
				if k = strings.TrimSpace(k); k != "" {
					labels[k] = true
				}
			}
		}
	}

	resp, err = http.Get(adminURL(n) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (gateway_\w+) `).FindAllSubmatch(body, -1) {
		exported[string(m[1])] = true
	}
	for _, want := range []string{"gateway_redis_up", "gateway_kosync_http_requests_total", "gateway_connections"} {
		if !exported[want] {
			t.Errorf("/metrics lacks %s: the node is not the one this test means to scrape", want)
		}
	}
	for f := range exported {
		if registered[f] == nil {
			t.Errorf("/metrics exports %s, which no registered collector describes", f)
		}
	}

	documented := readmeMetrics(t)
	for _, f := range slices.Sorted(maps.Keys(registered)) {
		doc, ok := documented[f]
		if !ok {
			t.Errorf("README.md, Metrics: %s (labels %v) is exported but not documented", f, slices.Sorted(maps.Keys(registered[f])))
			continue
		}
		if got, want := slices.Sorted(maps.Keys(registered[f])), slices.Sorted(maps.Keys(doc)); !slices.Equal(got, want) {
			t.Errorf("README.md, Metrics: %s documented with labels %v, exported with %v", f, want, got)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(documented)) {
		if registered[f] == nil {
			t.Errorf("README.md, Metrics: %s is documented but the node exports no such family", f)
		}
	}
}

// readmeMetrics reads the series column of README.md's Metrics table:
// family -> label names ("`a_total{x,y}` / `b{x}`" documents two).
func readmeMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n## Metrics\n")
	if start < 0 {
		t.Fatal("README.md: no ## Metrics section")
	}
	text = text[start+1:]
	if end := strings.Index(text[3:], "\n## "); end >= 0 {
		text = text[:end+3]
	}
	series := regexp.MustCompile("`(gateway_[a-z0-9_]+)(?:\\{([a-z_,]*)\\})?`")
	out := map[string]map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range series.FindAllStringSubmatch(first, -1) {
			if out[m[1]] != nil {
				t.Errorf("README.md, Metrics: %s listed twice", m[1])
			}
			labels := map[string]bool{}
			for l := range strings.SplitSeq(m[2], ",") {
				if l != "" {
					labels[l] = true
				}
			}
			out[m[1]] = labels
		}
	}
	if len(out) < 10 {
		t.Fatalf("README.md, Metrics: only %d series found: %v", len(out), out)
	}
	return out
}

// TestKosyncHTTPMetrics: the KOReader HTTP API counts requests by route
// pattern (never the raw path, so the label's values stay bounded) and
// status code, and times them.
func TestKosyncHTTPMetrics(t *testing.T) {
	n := startNode(t)
	base := "http://" + n.Addr().String()
	do := func(method, path string, want int) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/vnd.koreader.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d", method, path, resp.StatusCode, want)
		}
	}
	do("GET", "/healthcheck", 200)
	do("GET", "/healthcheck", 200)
	do("POST", "/healthcheck", 404) // a known path with another method
	do("GET", "/syncs/progress/first-document", 401)
	do("GET", "/syncs/progress/second-document", 401)
	do("GET", "/users/auth", 401)
	do("OPTIONS", "/users/auth", 204) // a CORS preflight

	resp, err := http.Get(adminURL(n) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var got []string
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, "gateway_kosync_http_requests_total{") ||
			strings.HasPrefix(line, "gateway_kosync_http_request_duration_seconds_count{") {
			got = append(got, line)
		}
	}
	want := []string{
		`gateway_kosync_http_request_duration_seconds_count{route="/healthcheck"} 3`,
		`gateway_kosync_http_request_duration_seconds_count{route="/syncs/progress/{document...}"} 2`,
		`gateway_kosync_http_request_duration_seconds_count{route="/users/auth"} 2`,
		`gateway_kosync_http_requests_total{code="200",route="/healthcheck"} 2`,
		`gateway_kosync_http_requests_total{code="204",route="/users/auth"} 1`,
		`gateway_kosync_http_requests_total{code="401",route="/syncs/progress/{document...}"} 2`,
		`gateway_kosync_http_requests_total{code="401",route="/users/auth"} 1`,
		`gateway_kosync_http_requests_total{code="404",route="/healthcheck"} 1`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("/metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(string(body), "first-document") {
		t.Errorf("/metrics carries a raw request path")
	}
}
