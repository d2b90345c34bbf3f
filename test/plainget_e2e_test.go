package test

import (
	"io"
	"net/http"
	"testing"
)

// TestPlainGetOfWebSocketPaths pins PROTOCOL.md §1: a plain GET (no
// Upgrade) of /api/ws is KOsync's (401 text/plain Unauthorized without
// credentials, not the native protocol's and not a 426), one of KOsync's
// upgrade path /api/ws/<jwt> gets the gateway's 426 JSON, and one of /ws
// Hypothesis's 400 bad_handshake JSON. A native upgrade of /api/ws still
// works on the same node.
func TestPlainGetOfWebSocketPaths(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base := "http://" + n.Addr().String()
	for _, tc := range []struct {
		path, contentType, body string
		status                  int
	}{
		{"/api/ws", "text/plain; charset=utf-8", "Unauthorized", http.StatusUnauthorized},
		{"/api/ws/x", "application/json", `{"error":"this path speaks WebSocket: send an Upgrade request"}` + "\n", http.StatusUpgradeRequired},
		{"/ws", "application/json", `{"ok": false, "error": "bad_handshake", "reason": "Handshake failed. Are you a WebSocket client?"}`, http.StatusBadRequest},
	} {
		resp, err := e2eHTTP.Get(base + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: read the body: %v", tc.path, err)
		}
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.contentType || string(body) != tc.body {
			t.Errorf("GET %s: %d %q %q, want %d %q %q", tc.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), body, tc.status, tc.contentType, tc.body)
		}
	}
	connect(t, n, "native") // fails the test unless the upgrade and the auth answer
}
