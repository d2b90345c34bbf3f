package test

import (
	"io"
	"net/http"
	"testing"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
)

// TestHypothesisOriginRefusalIsJSON: with --allowed-origins, an upgrade of
// Hypothesis's /ws from an origin not listed gets h's own 403 JSON
// (hypothesis/REFERENCE.md §1), while KOsync's /api/ws/ keeps the
// gateway's text/plain 403, and a listed origin still upgrades /ws.
func TestHypothesisOriginRefusalIsJSON(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) {
		c.Limits = gateway.Limits{AllowedOrigins: []string{"https://app.example.com"}}
	})
	refusal := func(path string) (*http.Response, string) {
		t.Helper()
		c := acDial(t, n.Addr().String(), nil)
		c.write(c.cfRequest(path, "Origin: https://evil.example.com"))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("%s: read the answer: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: read the body: %v", path, err)
		}
		c.expectEOF()
		return resp, string(body)
	}

	resp, body := refusal("/ws")
	const want = `{"ok": false, "error": "forbidden", "reason": "You are not allowed here. Are you connecting from an allowed origin?"}`
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/json" || body != want {
		t.Fatalf("/ws from a refused origin: %d %q %q, want 403 application/json %q",
			resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
	}

	resp, body = refusal("/api/ws/")
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || body != "origin not allowed\n" {
		t.Fatalf("/api/ws/ from a refused origin: %d %q %q, want the gateway's 403 text/plain",
			resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}

	c := acDial(t, n.Addr().String(), nil)
	c.write(c.cfRequest("/ws", "Origin: https://app.example.com"))
	limExpectStatus(t, c.cfResponse(), http.StatusSwitchingProtocols)
}
