package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/node"
)

// Issue 12 item 9: the status page at / on the admin listener.

const stToken = "status-page-token-0123456789"

// stGet requests the admin listener's path without following redirects.
func stGet(t *testing.T, n *node.Node, method, path string, body io.Reader, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, adminURL(n)+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{Timeout: waitFor, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func stWantPage(t *testing.T, resp *http.Response, page string, status int) {
	t.Helper()
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("status %d %q, want %d text/html; charset=utf-8:\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), status, page)
	}
	if strings.Contains(page, stToken) {
		t.Fatalf("the page shows the admin token:\n%s", page)
	}
}

func stContains(t *testing.T, page string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Fatalf("page lacks %q:\n%s", w, page)
		}
	}
}

func TestStatusPage(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) {
		c.WsifyListen = "127.0.0.1:0"
		c.AdminToken = stToken
	})
	const evil = "<script>alert(1)</script>"
	for range 3 {
		subscribe(t, connect(t, n, "reader"), evil)
	}
	subscribe(t, connect(t, n, "other"), "room")
	dial(t, n) // a native connection that never authenticates: no session
	ks := ksDial(t, n.Addr().String(), ksJWT(t, ksBase(n), "alice", ksRegister(t, ksBase(n), "alice", "pw")))
	ksSubscribe(t, ks)
	bearer := http.Header{"Authorization": {"Bearer " + stToken}}
	bpJoined(t, n, "<i>x</i>", func(m string) {
		if r, b := stGet(t, n, http.MethodPost, "/api/publish?channel="+url.QueryEscape("#wsify:<i>x</i>"), strings.NewReader(m), bearer); r.StatusCode != http.StatusOK {
			t.Fatalf("admin publish: %d %s", r.StatusCode, b)
		}
	})
	resp, page := stGet(t, n, http.MethodGet, "/", nil, bearer)
	stWantPage(t, resp, page, http.StatusOK)
	stContains(t, page,
		`<meta http-equiv="refresh" content="5">`,
		`<td class="ok" id="ready">ready</td>`,
		`<tr><td>native</td><td class="n">5</td><td class="n">4</td></tr>`,
		`<tr><td>kosync</td><td class="n">1</td><td class="n">1</td></tr>`,
		`<tr><td>wsify</td><td class="n">1</td><td class="n">1</td></tr>`,
		`<tr><td>hypothesis</td><td class="n">0</td><td class="n">0</td></tr>`,
		`id="connections">7<`, `id="sessions">6<`, `<span id="channels">4</span>`,
		`<tr><td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td class="n">3</td>`,
		`<tr><td>#kosync:alice</td><td class="n">1</td>`,
		`<tr><td>#wsify:&lt;i&gt;x&lt;/i&gt;</td><td class="n">1</td>`,
		`<tr><td>room</td><td class="n">1</td>`,
		`No Redis: this node runs alone`,
		"<h1>gateway node "+fmt.Sprintf("%08x", n.Server.Tag())+"</h1>",
	)
	if strings.Contains(page, "<script") || strings.Contains(page, "<i>") {
		t.Fatalf("a channel name reached the page unescaped:\n%s", page)
	}
	// The busiest come first: the script channel (3) before the others (1).
	if strings.Index(page, "&lt;script&gt;") > strings.Index(page, "<td>room</td>") {
		t.Fatalf("busiest channels out of order:\n%s", page)
	}
	if !regexp.MustCompile(`build</th><td>version [^<]+, commit [^<]+, go1\.`).MatchString(page) {
		t.Fatalf("no build line:\n%s", page)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options", "Cache-Control"} {
		if resp.Header.Get(h) == "" {
			t.Fatalf("no %s header", h)
		}
	}

	// Without the token: 401 and the sign-in form, nothing of the status.
	resp, page = stGet(t, n, http.MethodGet, "/", nil, nil)
	stWantPage(t, resp, page, http.StatusUnauthorized)
	stContains(t, page, `<form method="post" action="/">`, "needs the admin token")
	if strings.Contains(page, "alert") || strings.Contains(page, "native") {
		t.Fatalf("the sign-in page shows status:\n%s", page)
	}
	resp, page = stGet(t, n, http.MethodGet, "/?token=wrong", nil, nil)
	stWantPage(t, resp, page, http.StatusUnauthorized)
	stContains(t, page, "Wrong admin token.")
	resp, page = stGet(t, n, http.MethodGet, "/", nil, http.Header{"Authorization": {"Bearer wrong"}})
	stWantPage(t, resp, page, http.StatusUnauthorized)

	// ?token= (a link, a browser harness) earns a cookie and a redirect to
	// / that takes the token out of the address bar; so does the form.
	for _, login := range []func() *http.Response{
		func() *http.Response {
			r, _ := stGet(t, n, http.MethodGet, "/?token="+url.QueryEscape(stToken), nil, nil)
			return r
		},
		func() *http.Response {
			r, _ := stGet(t, n, http.MethodPost, "/", strings.NewReader("token="+url.QueryEscape(stToken)),
				http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
			return r
		},
	} {
		resp = login()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Fatalf("sign-in: %d Location %q, want 303 /", resp.StatusCode, resp.Header.Get("Location"))
		}
		cookies := resp.Cookies()
		if len(cookies) != 1 || cookies[0].Name != "gateway_admin_status" || !cookies[0].HttpOnly ||
			cookies[0].SameSite != http.SameSiteStrictMode || strings.Contains(cookies[0].Value, stToken) || cookies[0].Value == "" {
			t.Fatalf("sign-in cookies %+v", cookies)
		}
		withCookie := http.Header{"Cookie": {cookies[0].Name + "=" + cookies[0].Value}}
		resp, page = stGet(t, n, http.MethodGet, "/", nil, withCookie)
		stWantPage(t, resp, page, http.StatusOK)
		stContains(t, page, `id="sessions">6<`)
		// The cookie opens the page only, never the API.
		r, b := stGet(t, n, http.MethodPost, "/api/disconnect", strings.NewReader(`{"subject":"reader"}`), withCookie)
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("API with the page's cookie: %d %s, want 401", r.StatusCode, b)
		}
	}
	resp, page = stGet(t, n, http.MethodGet, "/", nil, http.Header{"Cookie": {"gateway_admin_status=forged"}})
	stWantPage(t, resp, page, http.StatusUnauthorized)

	resp, page = stGet(t, n, http.MethodPut, "/", nil, bearer)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, POST" {
		t.Fatalf("PUT /: %d Allow %q %s", resp.StatusCode, resp.Header.Get("Allow"), page)
	}
}

func TestStatusPageCluster(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, _ := e2eRedisNode(t, srv), e2eRedisNode(t, srv)
	dcWaitNodes(t, srv, 2)
	resp, page := stGet(t, a, http.MethodGet, "/", nil, nil)
	stWantPage(t, resp, page, http.StatusOK)
	stContains(t, page, srv.Addr+": ", `<span id="redis" class="ok">up</span>`,
		`<td id="nodes">2 listening on the control channel, this one included</td>`)
}

// TestStatusPageInChromium: the page as a browser shows it. Signing in
// with ?token= redirects to / with a cookie, so the token leaves the
// address bar; the rendered text holds the counts and the escaped channel
// name as text; the page logs nothing (its CSP forbids every script, and
// it has none). The screenshot is kept as a test artefact
// (GATEWAY_TEST_ARTEFACTS, else $TMPDIR/wsgateway-artefacts).
func TestStatusPageInChromium(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.AdminToken = stToken })
	const evil = "<script>alert(1)</script>"
	subscribe(t, connect(t, n, "reader"), evil)
	subscribe(t, connect(t, n, "reader"), evil)
	subscribe(t, connect(t, n, "other"), "room")
	shot := browserArtefact(t, "status.png")
	res := browserRun(t, browserPage{Name: "status", URL: adminURL(n) + "/?token=" + stToken, Wait: "load", Screenshot: shot})["status"]
	if res.Error != "" || len(res.Console) != 0 {
		t.Fatalf("status page in Chromium: error %q, console %q", res.Error, res.Console)
	}
	var seen struct{ URL, Title, Text string }
	if err := json.Unmarshal(res.Result, &seen); err != nil {
		t.Fatalf("result %s: %v", res.Result, err)
	}
	if seen.URL != adminURL(n)+"/" {
		t.Fatalf("address after sign-in %q, want %q (the token must leave the address bar)", seen.URL, adminURL(n)+"/")
	}
	for _, want := range []string{"ready", "native\t3\t3", evil + "\t2", "room\t1", "No Redis: this node runs alone"} {
		if !strings.Contains(seen.Text, want) {
			t.Fatalf("rendered text lacks %q:\n%s", want, seen.Text)
		}
	}
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}
