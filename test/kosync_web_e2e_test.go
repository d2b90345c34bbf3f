package test

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/node"
)

// End-to-end tests of what a web page needs from the KOReader and KOsync
// HTTP APIs (issue 11, items 5 and 6): CORS on every route, and GET
// /api/ws answering JSON to a fetch. Helpers are prefixed kw.

// kwDo sends one request with exactly the headers given ("Name: value"),
// as a browser's fetch would, and returns the answer.
func kwDo(t testing.TB, method, url, body string, headers ...string) ksResp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testCtx(t), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := ksHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return ksResp{resp.StatusCode, b, resp.Header}
}

// kwCORS is every Access-Control-* header of h.
func kwCORS(h http.Header) map[string]string {
	m := map[string]string{}
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			m[k] = strings.Join(v, "\n")
		}
	}
	return m
}

// kwWantCORS checks that r carries exactly the CORS headers want.
func kwWantCORS(t testing.TB, what string, r ksResp, want map[string]string) {
	t.Helper()
	if got := kwCORS(r.header); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: CORS headers %v, want exactly %v (status %d %s)", what, got, want, r.status, r.body)
	}
}

const kwOrigin = "Origin: https://web.readest.example"

var (
	// kwPreflightCORS is the preflight answer's CORS headers, on every
	// route.
	kwPreflightCORS = map[string]string{
		"Access-Control-Allow-Origin":   "*",
		"Access-Control-Expose-Headers": "Retry-After",
		"Access-Control-Allow-Methods":  "GET, HEAD, POST, PUT, DELETE, OPTIONS",
		"Access-Control-Allow-Headers":  "Accept, Authorization, Content-Type, x-auth-user, x-auth-key",
		"Access-Control-Max-Age":        "86400",
	}
	// kwSimpleCORS is every other answer's CORS headers.
	kwSimpleCORS = map[string]string{
		"Access-Control-Allow-Origin":   "*",
		"Access-Control-Expose-Headers": "Retry-After",
	}
)

// TestKosyncCORS: the KOReader endpoints answer preflights and send the
// same CORS headers as /api/* (issue 11 item 5), never credentials, in the
// lenient and the strict Accept mode alike.
func TestKosyncCORS(t *testing.T) {
	t.Parallel()
	for _, strict := range []bool{false, true} {
		n := startNode(t, func(c *node.Config) { c.Kosync.StrictAccept = strict })
		base := ksBase(n)
		mode := map[bool]string{false: "lenient", true: "strict"}[strict]
		key := ksRegister(t, base, "alice", "alice-pw")

		preflights := []struct{ path, method, headers string }{
			{"/users/create", "POST", "content-type"},
			{"/users/auth", "GET", "x-auth-user,x-auth-key"},
			{"/users/me", "DELETE", "x-auth-user,x-auth-key"},
			{"/users/password", "PUT", "content-type,x-auth-user,x-auth-key"},
			{"/syncs/progress", "PUT", "content-type,x-auth-user,x-auth-key"},
			{"/syncs/progress/0123abcd", "GET", "x-auth-user,x-auth-key"},
			{"/healthcheck", "GET", ""},
			{"/api/documents.update", "PUT", "authorization,content-type"},
			{"/api/ws", "GET", "authorization"},
		}
		for _, p := range preflights {
			what := mode + " OPTIONS " + p.path
			hdr := []string{kwOrigin, "Access-Control-Request-Method: " + p.method}
			if p.headers != "" {
				hdr = append(hdr, "Access-Control-Request-Headers: "+p.headers)
			}
			r := kwDo(t, http.MethodOptions, base+p.path, "", hdr...)
			if r.status != http.StatusNoContent || len(r.body) != 0 {
				t.Errorf("%s: %d %q, want 204 and no body", what, r.status, r.body)
			}
			kwWantCORS(t, what, r, kwPreflightCORS)
		}

		// Chrome's Private Network Access preflight (a public page calling
		// a LAN server) is allowed.
		pna := kwDo(t, http.MethodOptions, base+"/syncs/progress", "", kwOrigin, "Access-Control-Request-Method: PUT",
			"Access-Control-Request-Private-Network: true")
		wantPNA := map[string]string{"Access-Control-Allow-Private-Network": "true"}
		for k, v := range kwPreflightCORS {
			wantPNA[k] = v
		}
		kwWantCORS(t, mode+" private network preflight", pna, wantPNA)

		// Simple and actual requests from an Origin, successes and errors.
		accept := "Accept: application/vnd.koreader.v1+json"
		auth := []string{kwOrigin, accept, "x-auth-user: alice", "x-auth-key: " + key}
		r := kwDo(t, http.MethodGet, base+"/users/auth", "", auth...)
		ksWantJSON(t, mode+" GET /users/auth from an Origin", r, http.StatusOK, `{"authorized":"OK"}`)
		kwWantCORS(t, mode+" GET /users/auth", r, kwSimpleCORS)

		r = kwDo(t, http.MethodGet, base+"/users/auth", "", kwOrigin, accept, "x-auth-user: alice", "x-auth-key: "+ksMD5("wrong"))
		ksWantJSON(t, mode+" GET /users/auth, wrong key", r, http.StatusUnauthorized, `{"code":2001,"message":"Unauthorized"}`)
		kwWantCORS(t, mode+" 401", r, kwSimpleCORS)

		r = kwDo(t, http.MethodPut, base+"/syncs/progress", `{"document":"0123abcd","progress":"5","percentage":0.5,"device":"web"}`,
			append(auth, "Content-Type: application/json")...)
		if r.status != http.StatusOK {
			t.Fatalf("%s PUT /syncs/progress from an Origin: %d %s", mode, r.status, r.body)
		}
		kwWantCORS(t, mode+" PUT /syncs/progress", r, kwSimpleCORS)

		r = kwDo(t, http.MethodGet, base+"/syncs/progress/0123abcd", "", auth...)
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"progress":"5"`) {
			t.Fatalf("%s GET /syncs/progress from an Origin: %d %s", mode, r.status, r.body)
		}
		kwWantCORS(t, mode+" GET /syncs/progress", r, kwSimpleCORS)

		r = kwDo(t, http.MethodGet, base+"/healthcheck", "", kwOrigin, accept)
		ksWantJSON(t, mode+" GET /healthcheck", r, http.StatusOK, `{"state":"OK"}`)
		kwWantCORS(t, mode+" GET /healthcheck", r, kwSimpleCORS)

		r = kwDo(t, http.MethodGet, base+"/api/documents.all", "", kwOrigin, "x-auth-user: alice", "x-auth-key: "+key)
		if r.status != http.StatusOK {
			t.Fatalf("%s GET /api/documents.all: %d %s", mode, r.status, r.body)
		}
		kwWantCORS(t, mode+" GET /api/documents.all", r, kwSimpleCORS)

		if strict {
			// A fetch without the vendor Accept is refused, and the page can
			// read why.
			r = kwDo(t, http.MethodGet, base+"/users/auth", "", kwOrigin, "x-auth-user: alice", "x-auth-key: "+key)
			ksWantJSON(t, "strict GET /users/auth without Accept", r, http.StatusPreconditionFailed, `{"code":100,"message":"Accept header not set."}`)
			kwWantCORS(t, "strict 412", r, kwSimpleCORS)
		}
	}
}

// TestKosyncWSJSON: GET /api/ws answers 200 {"url": <the ws:// URI>} when
// Accept prefers application/json, and keeps its 303 otherwise (issue 11
// item 6); the URI opens the KOsync WebSocket.
func TestKosyncWSJSON(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	base, addr := ksBase(n), n.Addr().String()
	key := ksRegister(t, base, "alice", "alice-pw")
	creds := []string{"x-auth-user: alice", "x-auth-key: " + key}
	prefix := "ws://" + addr + "/api/ws/"

	for _, accept := range []string{"application/json", "application/json, */*;q=0.1", "application/*", "text/plain;q=0.5, application/json;q=0.9"} {
		what := "GET /api/ws, Accept: " + accept
		r := kwDo(t, http.MethodGet, base+"/api/ws", "", append([]string{kwOrigin, "Accept: " + accept}, creds...)...)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" || r.header.Get("Location") != "" {
			t.Fatalf("%s: %d %q Content-Type %q Location %q, want 200 application/json and no Location",
				what, r.status, r.body, r.header.Get("Content-Type"), r.header.Get("Location"))
		}
		if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Vary") != "Accept" {
			t.Errorf("%s: Cache-Control %q Vary %q, want no-store and Accept", what, r.header.Get("Cache-Control"), r.header.Get("Vary"))
		}
		kwWantCORS(t, what, r, kwSimpleCORS)
		var answer map[string]string
		if err := json.Unmarshal(r.body, &answer); err != nil || len(answer) != 1 {
			t.Fatalf("%s: body %s, want exactly {\"url\": ...}", what, r.body)
		}
		uri := answer["url"]
		if !strings.HasPrefix(uri, prefix) || len(uri) == len(prefix) || strings.ContainsAny(uri[len(prefix):], "/?# ") {
			t.Fatalf("%s: url %q, want %s<jwt>", what, uri, prefix)
		}
		c, _, err := websocket.Dial(testCtx(t), uri, nil)
		if err != nil {
			t.Fatalf("%s: dial %s: %v", what, uri, err)
		}
		ksCheckHello(t, ksRead(t, c))
		_ = c.Close(websocket.StatusNormalClosure, "")
	}

	// Every other Accept keeps the 303 (a tie with text/plain included).
	for _, accept := range []string{"", "*/*", "application/json, text/plain, */*", "application/json;q=0.5, */*",
		"application/vnd.koreader.v1+json", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"} {
		hdr := append([]string{kwOrigin}, creds...)
		if accept != "" {
			hdr = append(hdr, "Accept: "+accept)
		}
		r := kwDo(t, http.MethodGet, base+"/api/ws", "", hdr...)
		loc := r.header.Get("Location")
		if r.status != http.StatusSeeOther || !strings.HasPrefix(loc, prefix) || string(r.body) != loc ||
			!strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || r.header.Get("Vary") != "Accept" {
			t.Fatalf("GET /api/ws, Accept %q: %d %q Location %q Vary %q, want the 303", accept, r.status, r.body, loc, r.header.Get("Vary"))
		}
		kwWantCORS(t, "303, Accept "+accept, r, kwSimpleCORS)
	}

	// Unauthenticated: 401 whatever Accept says.
	r := kwDo(t, http.MethodGet, base+"/api/ws", "", kwOrigin, "Accept: application/json")
	if r.status != http.StatusUnauthorized || string(r.body) != "Unauthorized" {
		t.Fatalf("unauthenticated GET /api/ws asking for JSON: %d %q, want 401 Unauthorized", r.status, r.body)
	}
}
