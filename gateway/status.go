package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"path"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wsgateway/gateway/session"
)

// The status page: GET / on the admin listener, server-rendered HTML that
// reloads itself (a meta refresh: no script, so it renders the same with
// JavaScript off). What it shows is gathered at most once per
// statusMaxAge whoever asks, so viewers cost the event loops one short
// task per loop per second at most.

// StatusRefresh is how often the status page reloads itself.
const StatusRefresh = 5 * time.Second

// statusMaxAge is how long a gathered status serves every viewer.
const statusMaxAge = time.Second

// statusWait bounds how long the page waits for the event loops; a loop
// that stalls longer is reported as such instead.
const statusWait = 2 * time.Second

// StatusTopChannels is how many of the busiest channels the page lists.
const StatusTopChannels = 10

// statusCookie carries the status page's credential: a value derived from
// the admin token (HMAC-SHA256 of a fixed label under the token), so the
// cookie opens the page only, never the API, and the token itself is not
// stored in the browser.
const statusCookie = "gateway_admin_status"

// ClusterStatus is what a node knows of Redis and the other nodes, for the
// status page.
type ClusterStatus struct {
	// Redis is the Redis address; empty when the node runs without Redis.
	Redis string
	// RedisUp: Redis answered the node's last PING.
	RedisUp bool
	// Nodes counts the nodes that listen on the cluster's control channel,
	// this one included, as Redis counts them (PUBSUB NUMSUB); -1 when
	// unknown, NodesErr then says why.
	Nodes    int
	NodesErr string
}

// statusProtocol is one protocol's line.
type statusProtocol struct {
	Name                  string
	Connections, Sessions int
}

// statusChannel is one of the busiest channels.
type statusChannel struct {
	Name        string
	Subscribers int
	Loops       int // event loops with subscribers of it
}

// statusData is what the page shows.
type statusData struct {
	At          string
	Node        string
	Listen      string
	Uptime      string
	Ready       string
	ReadyOK     bool
	Version     string
	Commit      string
	GoVersion   string
	Refresh     int
	TCP         int64
	Protocols   []statusProtocol
	Connections int
	Sessions    int
	Loops       int
	Channels    int
	Busiest     []statusChannel
	LoopsErr    string
	Cluster     ClusterStatus
}

// statusCache shares one gathered status between viewers.
type statusCache struct {
	mu   sync.Mutex
	at   time.Time
	data *statusData
}

// statusPage serves GET /: the page, or a sign-in form when the admin
// token is required and missing; with ?token= (or the form's POST) it sets
// the page's cookie and redirects to / so the token leaves the address bar
// and the history.
func (a *Admin) statusPage(w http.ResponseWriter, r *http.Request) {
	switch ok, given := a.statusAuth(w, r); {
	case ok && given:
		http.SetCookie(w, &http.Cookie{Name: statusCookie, Value: a.statusCookieValue(), Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	case !ok:
		a.refuseStatus(w, r, given)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	data := a.status(r.Context())
	securePageHeaders(w)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if err := statusTemplate.Execute(w, data); err != nil {
		a.opts.Logger.Warn("status page", "err", err)
	}
}

// statusAuth reports whether r may see the page, and whether it brought
// the token as ?token= or a form field (given), which earns the cookie.
// Without a token configured every request may.
func (a *Admin) statusAuth(w http.ResponseWriter, r *http.Request) (ok, given bool) {
	if a.tokenSum == nil {
		return true, false
	}
	if h, isBearer := bearer(r.Header.Get("Authorization")); isBearer {
		return a.tokenMatches(h), false
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return a.tokenMatches(t), true
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		if t := r.PostFormValue("token"); t != "" {
			return a.tokenMatches(t), true
		}
	}
	if c, err := r.Cookie(statusCookie); err == nil {
		want := a.statusCookieValue()
		return subtle.ConstantTimeCompare([]byte(c.Value), []byte(want)) == 1, false
	}
	return false, false
}

func (a *Admin) tokenMatches(t string) bool {
	sum := sha256.Sum256([]byte(t))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) == 1
}

// statusCookieValue is the page's credential, derived from the token.
func (a *Admin) statusCookieValue() string {
	m := hmac.New(sha256.New, a.tokenSum[:])
	m.Write([]byte("gateway admin status page"))
	return hex.EncodeToString(m.Sum(nil))
}

// refuseStatus answers 401 with the sign-in form.
func (a *Admin) refuseStatus(w http.ResponseWriter, r *http.Request, given bool) {
	reason := "missing_token"
	if given || r.Header.Get("Authorization") != "" {
		reason = "wrong_token"
	}
	if _, err := r.Cookie(statusCookie); err == nil && reason == "missing_token" {
		reason = "wrong_token"
	}
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	a.refusals.Refused("authentication failed", "admin", reason, ap.Addr(), "")
	securePageHeaders(w)
	w.Header().Set("WWW-Authenticate", `Bearer realm="gateway-admin"`)
	w.WriteHeader(http.StatusUnauthorized)
	_ = signInTemplate.Execute(w, struct{ Wrong bool }{reason == "wrong_token"})
}

// securePageHeaders: an HTML page of the admin listener runs no script,
// loads nothing, is never framed nor cached.
func securePageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// status returns the node's status, gathered at most once per statusMaxAge.
func (a *Admin) status(ctx context.Context) *statusData {
	a.statusCache.mu.Lock()
	defer a.statusCache.mu.Unlock()
	if d := a.statusCache.data; d != nil && time.Since(a.statusCache.at) < statusMaxAge {
		return d
	}
	d := a.gatherStatus(ctx)
	a.statusCache.data, a.statusCache.at = d, time.Now()
	return d
}

func (a *Admin) gatherStatus(ctx context.Context) *statusData {
	s := a.srv
	now := time.Now()
	d := &statusData{
		At: now.UTC().Format(time.RFC3339), Node: fmt.Sprintf("%08x", s.tag),
		Uptime:  time.Since(s.epoch).Truncate(time.Second).String(),
		Version: Version, Commit: buildCommit(), GoVersion: runtime.Version(),
		Refresh: int(StatusRefresh / time.Second), TCP: s.conns.Load(),
		Channels: s.hub.Channels(), Sessions: s.hub.Sessions(),
	}
	if addr := s.Addr(); addr != nil {
		d.Listen = addr.String()
	}
	d.Ready, d.ReadyOK = a.readiness()
	if a.opts.Cluster != nil {
		cctx, cancel := context.WithTimeout(ctx, statusWait)
		d.Cluster = a.opts.Cluster(cctx)
		cancel()
	}

	loops := s.allLoops()
	d.Loops = len(loops)
	sessions, busiest, err := gatherLoops(ctx, loops)
	if err != nil {
		d.LoopsErr = err.Error()
	}
	d.Busiest = busiest
	for _, p := range s.protocols() {
		row := statusProtocol{Name: p.Name(), Connections: gaugeValue(s.metrics.connections, p.Name()), Sessions: sessions[p.Name()]}
		delete(sessions, p.Name())
		d.Connections += row.Connections
		d.Protocols = append(d.Protocols, row)
	}
	for name, n := range sessions { // sessions of a sink outside a registered protocol
		d.Protocols = append(d.Protocols, statusProtocol{Name: name, Sessions: n})
	}
	return d
}

// readiness is /readyz's verdict as words, and whether it is 200.
func (a *Admin) readiness() (string, bool) {
	if a.srv.Draining() {
		return "draining", false
	}
	if cause, paused := a.srv.AcceptPaused(); paused {
		return "not accepting: " + cause, false
	}
	if a.opts.Dependencies != nil {
		if down := a.opts.Dependencies(); len(down) > 0 {
			return "degraded: " + strings.Join(down, ", ") + " down", true
		}
	}
	return "ready", true
}

// gaugeValue reads one child of a gauge vector (the connections of a
// protocol, kept by the gateway on every upgrade and close).
func gaugeValue(v *prometheus.GaugeVec, label string) int {
	g, err := v.GetMetricWithLabelValues(label)
	if err != nil {
		return 0
	}
	var m dto.Metric
	if g.Write(&m) != nil {
		return 0
	}
	return int(m.GetGauge().GetValue())
}

// loopStatus is what one loop reports in the first round.
type loopStatus struct {
	sessions map[string]int
	top      []statusChannel // its StatusTopChannels busiest, by subscribers on the loop
}

// gatherLoops asks every loop, in one task each, for its sessions by
// protocol and its busiest channels, then, in a second task each, for the
// subscribers of the candidates on every loop, so that the counts shown
// are exact node-wide. The busiest are chosen among each loop's busiest:
// a channel spread thinly over many loops may be missing, never
// miscounted. Each task costs O(sessions + channels of its loop).
func gatherLoops(ctx context.Context, loops []*Loop) (map[string]int, []statusChannel, error) {
	ctx, cancel := context.WithTimeout(ctx, statusWait)
	defer cancel()
	first := make([]loopStatus, len(loops))
	err := onEveryLoop(ctx, loops, func(i int, l *Loop) {
		first[i] = loopStatus{sessions: map[string]int{}, top: loopTop(l.shard)}
		countSessions(l.shard, first[i].sessions)
	})
	if err != nil {
		return map[string]int{}, nil, err
	}
	sessions := map[string]int{}
	var candidates []string
	for _, st := range first {
		for name, n := range st.sessions {
			sessions[name] += n
		}
		for _, c := range st.top {
			candidates = append(candidates, c.Name)
		}
	}
	slices.Sort(candidates)
	candidates = slices.Compact(candidates)
	counts := make([][]int, len(loops))
	err = onEveryLoop(ctx, loops, func(i int, l *Loop) {
		counts[i] = make([]int, len(candidates))
		for j, c := range candidates {
			counts[i][j] = l.shard.Subscribers(c)
		}
	})
	if err != nil {
		return sessions, nil, err
	}
	busiest := make([]statusChannel, len(candidates))
	for j, c := range candidates {
		busiest[j].Name = c
		for i := range loops {
			if n := counts[i][j]; n > 0 {
				busiest[j].Subscribers += n
				busiest[j].Loops++
			}
		}
	}
	sortChannels(busiest)
	if len(busiest) > StatusTopChannels {
		busiest = busiest[:StatusTopChannels]
	}
	return sessions, busiest, nil
}

// sortChannels orders by subscribers, most first, then by name.
func sortChannels(cs []statusChannel) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Subscribers != cs[j].Subscribers {
			return cs[i].Subscribers > cs[j].Subscribers
		}
		return cs[i].Name < cs[j].Name
	})
}

// loopTop returns the shard's busiest channels, on its loop.
func loopTop(sh *session.Shard) []statusChannel {
	if sh == nil {
		return nil
	}
	top := make([]statusChannel, 0, StatusTopChannels+1)
	sh.EachTopic(func(channel string, n int) {
		if len(top) == StatusTopChannels && n <= top[len(top)-1].Subscribers {
			return
		}
		top = append(top, statusChannel{Name: channel, Subscribers: n})
		sortChannels(top)
		if len(top) > StatusTopChannels {
			top = top[:StatusTopChannels]
		}
	})
	return top
}

// countSessions adds the shard's sessions by protocol, on its loop. A
// session does not say its protocol; its Sink's package does (native,
// kosync, hypothesis, wsify), which is each protocol's Name.
func countSessions(sh *session.Shard, into map[string]int) {
	if sh == nil {
		return
	}
	var lastType reflect.Type
	var lastName string
	sh.Each(func(s *session.Session) {
		t := reflect.TypeOf(s.Sink)
		if t != lastType {
			lastType, lastName = t, sinkProtocol(t)
		}
		into[lastName]++
	})
}

func sinkProtocol(t reflect.Type) string {
	if t == nil {
		return "unknown"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if p := t.PkgPath(); p != "" {
		return path.Base(p)
	}
	return t.String()
}

// onEveryLoop runs fn on every loop, as one task each, and waits for all
// of them or ctx. fn(i, l) may write the i-th slot of the caller's
// results: after an error the caller must not read them (late tasks still
// run).
func onEveryLoop(ctx context.Context, loops []*Loop, fn func(i int, l *Loop)) error {
	done := make(chan struct{}, len(loops))
	for i, l := range loops {
		l.Run(func(any) {
			defer func() { done <- struct{}{} }()
			fn(i, l)
		}, nil)
	}
	for range loops {
		select {
		case <-done:
		case <-ctx.Done():
			return errors.New("an event loop did not answer within " + statusWait.String() + " (stalled or overloaded)")
		}
	}
	return nil
}

// buildCommit is the VCS revision the binary was built from, from its
// build info; "unknown" when the build recorded none (go test, go run, a
// build outside a repository).
func buildCommit() string {
	bi, _ := debug.ReadBuildInfo()
	rev, dirty := VCSRevision(bi)
	if rev == "" {
		return "unknown"
	}
	if dirty {
		rev += " (modified)"
	}
	return rev
}

var statusTemplate = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<title>gateway {{.Node}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#070}.bad{color:#b00}.muted{color:#777}
</style>
</head>
<body>
<h1>gateway node {{.Node}}</h1>
<p class="muted">{{.At}}; reloads every {{.Refresh}} s</p>
<table>
<tr><th>readiness</th><td class="{{if .ReadyOK}}ok{{else}}bad{{end}}" id="ready">{{.Ready}}</td></tr>
<tr><th>listening</th><td>{{.Listen}}</td></tr>
<tr><th>uptime</th><td>{{.Uptime}}</td></tr>
<tr><th>build</th><td>version {{.Version}}, commit {{.Commit}}, {{.GoVersion}}</td></tr>
<tr><th>event loops</th><td>{{.Loops}}</td></tr>
<tr><th>TCP connections</th><td id="tcp">{{.TCP}}</td></tr>
</table>

<h2>Protocols</h2>
<table id="protocols">
<tr><th>protocol</th><th class="n">connections</th><th class="n">sessions</th></tr>
{{range .Protocols}}<tr><td>{{.Name}}</td><td class="n">{{.Connections}}</td><td class="n">{{.Sessions}}</td></tr>
{{end}}<tr><th>total</th><th class="n" id="connections">{{.Connections}}</th><th class="n" id="sessions">{{.Sessions}}</th></tr>
</table>
<p class="muted">Connections are upgraded WebSockets; sessions are the authenticated ones (a native client before its auth message, a KOsync socket refused, an anonymous Hypothesis socket have none).</p>

<h2>Channels</h2>
<p><span id="channels">{{.Channels}}</span> channels with subscribers on this node.</p>
{{if .LoopsErr}}<p class="bad">{{.LoopsErr}}</p>{{end}}
{{if .Busiest}}<table id="busiest">
<tr><th>busiest channels</th><th class="n">subscribers</th><th class="n">event loops</th></tr>
{{range .Busiest}}<tr><td>{{.Name}}</td><td class="n">{{.Subscribers}}</td><td class="n">{{.Loops}}</td></tr>
{{end}}</table>
<p class="muted">The ten with most subscribers on this node, chosen among each event loop's ten busiest.</p>{{end}}

<h2>Cluster</h2>
{{with .Cluster}}{{if .Redis}}<table>
<tr><th>Redis</th><td>{{.Redis}}: <span id="redis" class="{{if .RedisUp}}ok">up{{else}}bad">down{{end}}</span></td></tr>
<tr><th>nodes</th><td id="nodes">{{if ge .Nodes 0}}{{.Nodes}} listening on the control channel, this one included{{else}}unknown: {{.NodesErr}}{{end}}</td></tr>
</table>
<p class="muted">Other nodes are known by count only (Redis counts the subscribers of the control channel); their own status pages show the rest.</p>
{{else}}<p id="redis">No Redis: this node runs alone; it knows no other nodes.</p>{{end}}{{end}}
</body>
</html>
`))

var signInTemplate = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>gateway admin</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:1.5em}</style></head>
<body>
<h1>gateway admin</h1>
<p>{{if .Wrong}}Wrong admin token.{{else}}This page needs the admin token (--admin-token).{{end}}</p>
<form method="post" action="/">
<label>admin token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">show status</button>
</form>
</body>
</html>
`))
