package gateway

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// DefaultAdminListen keeps the admin listener on loopback: it can publish
// and revoke, so it is never exposed by default.
const DefaultAdminListen = "127.0.0.1:8081"

// maxAdminBody caps JSON bodies of the admin API that are not publishes.
const maxAdminBody = 16 << 10

// AdminOptions configure the admin listener. Zero values mean defaults.
type AdminOptions struct {
	// Listen: zero means DefaultAdminListen.
	Listen string
	// Secrets parse keys given to the revoke endpoint; required.
	Secrets *token.Secrets
	// Revoker revokes; required.
	Revoker *token.Revoker
	// Token, when set, must come as "Authorization: Bearer <Token>" on the
	// admin API and the profiler (the status page also takes it as
	// ?token= or from its form, then from a cookie: status.go); /metrics,
	// /healthz and /readyz stay open for probes and scrapers. Zero means no token (loopback binds only:
	// the node refuses another bind without one).
	Token string
	// Dependencies reports the optional dependencies that are down (Redis);
	// /readyz then says "degraded" but stays 200, because the node still
	// serves its own clients. Zero means none.
	Dependencies func() (down []string)
	// Forward carries an operator's disconnect to the other nodes (the
	// node publishes it on Redis) and returns how many other nodes got it;
	// an error means none did. Zero means no other nodes: a disconnect
	// acts on this node only.
	Forward func(ctx context.Context, d Disconnect) (otherNodes int, err error)
	// Cluster reports Redis and the other nodes for the status page. Zero
	// means a node alone, without Redis.
	Cluster func(ctx context.Context) ClusterStatus
	// Logger: zero means slog.Default().
	Logger *slog.Logger
}

// Admin is the operators' listener: /metrics, /healthz, /readyz, the JSON
// API (publish, revoke, disconnect) and the status page at / (status.go).
// It runs on net/http, off the event loops.
type Admin struct {
	tokenSum *[32]byte // SHA-256 of the token: compared in constant time
	refusals *ratelog.Logger
	srv      *Server
	opts     AdminOptions
	http     *http.Server
	ln       net.Listener
	mux      *http.ServeMux
	allowed  map[string]string // path -> method, for 405 answers

	statusCache statusCache // status.go
}

// Handle adds an endpoint to the admin listener (a protocol's event
// intake, say); it requires the token like the rest of the API. Call
// before Start.
func (a *Admin) Handle(method, path string, h http.Handler) {
	if open := path == "/metrics" || path == "/healthz" || path == "/readyz"; !open {
		h = a.requireToken(h)
	}
	a.mux.Handle(method+" "+path, h)
	a.allowed[path] = method
}

// bearer returns the token of an Authorization header of the Bearer scheme
// (its name is case-insensitive, RFC 9110 11.1).
func bearer(h string) (string, bool) {
	if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return "", false
	}
	return h[7:], true
}

// requireToken answers 401 unless the request carries the admin token.
func (a *Admin) requireToken(h http.Handler) http.Handler {
	if a.tokenSum == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := bearer(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(given))
		if !ok || subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 {
			reason := "wrong_token"
			if !ok {
				reason = "missing_token"
			}
			ap, _ := netip.ParseAddrPort(r.RemoteAddr)
			a.refusals.Refused("authentication failed", "admin", reason, ap.Addr(), "")
			w.Header().Set("WWW-Authenticate", `Bearer realm="gateway-admin"`)
			writeError(w, http.StatusUnauthorized, "admin token required")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// NewAdmin returns the admin listener of srv.
func NewAdmin(srv *Server, o AdminOptions) *Admin {
	o.Listen = cmp.Or(o.Listen, DefaultAdminListen)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	a := &Admin{srv: srv, opts: o, refusals: ratelog.New(o.Logger, slog.LevelInfo, 0)}
	routes := []struct {
		method, path string
		h            http.Handler
	}{
		{"GET", "/metrics", promhttp.HandlerFor(srv.Registry(), promhttp.HandlerOpts{})},
		{"GET", "/healthz", http.HandlerFunc(a.healthz)},
		{"GET", "/readyz", http.HandlerFunc(a.readyz)},
		{"POST", "/api/publish", http.HandlerFunc(a.publish)},
		{"POST", "/api/revoke", http.HandlerFunc(a.revoke)},
		{"POST", "/api/revoke/subject", http.HandlerFunc(a.revokeSubject)},
		{"POST", "/api/disconnect", http.HandlerFunc(a.disconnect)},
		{"GET", "/api/history", http.HandlerFunc(a.historyPage)},
		{"GET", "/debug/pprof/", http.HandlerFunc(pprof.Index)},
		{"GET", "/debug/pprof/profile", http.HandlerFunc(pprof.Profile)},
		{"GET", "/debug/pprof/trace", http.HandlerFunc(pprof.Trace)},
		{"GET", "/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol)},
		{"GET", "/debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline)},
	}
	mux := http.NewServeMux()
	a.mux, a.allowed = mux, map[string]string{}
	if o.Token != "" {
		sum := sha256.Sum256([]byte(o.Token))
		a.tokenSum = &sum
	}
	allowed := a.allowed
	for _, r := range routes {
		a.Handle(r.method, r.path, r.h)
	}
	// The status page (status.go) checks the token itself: it also takes
	// it as ?token= or from its sign-in form, then from a cookie.
	mux.HandleFunc("GET /{$}", a.statusPage)
	mux.HandleFunc("POST /{$}", a.statusPage)
	allowed["/"] = "GET, POST"
	// The catch-all answers JSON: 405 with Allow on a known path, else 404.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, "use "+m)
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn)}
	return a
}

// Start binds the listener and serves in the background.
func (a *Admin) Start() error {
	ln, err := net.Listen("tcp", a.opts.Listen)
	if err != nil {
		return err
	}
	a.ln = ln
	go func() { _ = a.http.Serve(gatedListener{ln, a.srv.gate}) }()
	return nil
}

// Addr returns the bound address.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// Close stops the admin listener.
func (a *Admin) Close(ctx context.Context) error { return a.http.Shutdown(ctx) }

func (a *Admin) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is 503 while the server drains, and while it cannot accept new
// connections (out of file descriptors, say), so balancers stop sending;
// with an optional dependency down it stays 200 but says "degraded".
func (a *Admin) readyz(w http.ResponseWriter, _ *http.Request) {
	if a.srv.Draining() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if cause, paused := a.srv.AcceptPaused(); paused {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not_accepting", "error": cause})
		return
	}
	if a.opts.Dependencies != nil {
		if down := a.opts.Dependencies(); len(down) > 0 {
			writeJSON(w, http.StatusOK, map[string]any{"status": "degraded", "down": down})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// publish delivers the raw body on ?channel= to every subscriber of every
// node, bypassing the client channel policy (the server may publish on
// server: and user: channels).
func (a *Admin) publish(w http.ResponseWriter, r *http.Request) {
	channel := r.URL.Query().Get("channel")
	if channel == "" || len(channel) > 255 {
		writeError(w, http.StatusBadRequest, "query parameter channel is required (1 to 255 bytes)")
		return
	}
	if reservedChannel(channel) {
		writeError(w, http.StatusBadRequest, errReservedChannel)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(a.srv.opts.MaxMessageSize)))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body larger than the maximum message size")
		return
	}
	pos, err := a.srv.hub.PublishAt(r.Context(), channel, body)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	ans := map[string]any{"channel": channel, "bytes": len(body)}
	if pos.Epoch != 0 {
		ans["epoch"], ans["offset"] = strconv.FormatInt(pos.Epoch, 10), pos.Offset
	}
	writeJSON(w, http.StatusOK, ans)
}

// historyPage answers GET /api/history?channel=C[&limit=N]: the channel's
// position and its newest N kept publications (all without limit), in
// offset order, payloads in standard padded base64. The epoch is a decimal
// string: it may exceed 2^53.
func (a *Admin) historyPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	channel := q.Get("channel")
	if channel == "" || len(channel) > 255 {
		writeError(w, http.StatusBadRequest, "query parameter channel is required (1 to 255 bytes)")
		return
	}
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "limit must be a positive integer")
			return
		}
		limit = n
	}
	pos, pubs, err := a.srv.hub.History(r.Context(), channel, limit)
	switch {
	case errors.Is(err, session.ErrNoHistory):
		writeError(w, http.StatusBadRequest, "channel keeps no history")
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	type pub struct {
		Offset  int64  `json:"offset"`
		Payload []byte `json:"payload"` // encoding/json: standard padded base64
	}
	out := make([]pub, len(pubs))
	for i, p := range pubs {
		out[i] = pub{p.Offset, p.Payload}
	}
	writeJSON(w, http.StatusOK, map[string]any{"channel": channel, "epoch": strconv.FormatInt(pos.Epoch, 10),
		"offset": pos.Offset, "publications": out})
}

// wsifyChannelPrefix starts the hub channels of wsify (wsify.ChannelPrefix;
// gateway cannot import wsify).
const wsifyChannelPrefix = "#wsify:"

// errReservedChannel answers a publish on a reserved channel.
const errReservedChannel = "channels starting with '#' are reserved for the gateway's protocols; " +
	"of those only #wsify:NAME may be published here"

// reservedChannel reports whether the admin API refuses to publish on
// channel. Hub channels starting with '#' carry the protocols' own frames
// (KOsync announces on #kosync:<user> are whole pubsub frames, Hypothesis
// events on #hypothesis go through POST /api/hypothesis/events): a raw body
// there would reach those sockets as a frame their protocol does not have.
// #wsify:<name> is the exception, a documented internal API: a wsify member
// receives a publish's payload verbatim as a text frame, so a raw body is
// exactly what an outside Redis publisher on a wsify channel sends
// (payloads that are not UTF-8 are dropped and counted, as from Redis), and
// on a node without Redis it is the only way to reach wsify members
// verbatim.
func reservedChannel(channel string) bool {
	return strings.HasPrefix(channel, "#") && (!strings.HasPrefix(channel, wsifyChannelPrefix) || len(channel) == len(wsifyChannelPrefix))
}

// revoke revokes one key, given whole ({"key": text}) or by id ({"id": hex}).
func (a *Admin) revoke(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Key string `json:"key"`
		ID  string `json:"id"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	ctx := r.Context()
	switch {
	case req.Key != "" && req.ID == "":
		raw, err := token.DecodeText(req.Key)
		if err != nil {
			writeError(w, http.StatusBadRequest, "key is not base64")
			return
		}
		claims, err := a.opts.Secrets.Verify(raw, time.Now())
		if err != nil && !errors.Is(err, token.ErrExpired) {
			writeError(w, http.StatusBadRequest, "not a key of this server")
			return
		}
		a.finishRevoke(w, a.opts.Revoker.RevokeKey(ctx, claims), map[string]any{"id": claims.ID.String(), "subject": claims.Subject})
	case req.ID != "" && req.Key == "":
		id, err := token.ParseKeyID(req.ID)
		if err != nil {
			writeError(w, http.StatusBadRequest, "id must be 16 hex digits")
			return
		}
		a.finishRevoke(w, a.opts.Revoker.RevokeID(ctx, id), map[string]any{"id": id.String()})
	default:
		writeError(w, http.StatusBadRequest, `give exactly one of "key" or "id"`)
	}
}

// revokeSubject revokes every key of a subject issued until now.
func (a *Admin) revokeSubject(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Subject string `json:"subject"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if err := token.ValidSubject(req.Subject); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	at := time.Now()
	a.finishRevoke(w, a.opts.Revoker.RevokeSubject(r.Context(), req.Subject, at),
		map[string]any{"subject": req.Subject, "issued_before": at.UnixMilli()})
}

// finishRevoke answers a revocation: 200 once it is durable (the store
// acknowledged it), 503 when the store failed and nothing was revoked.
func (a *Admin) finishRevoke(w http.ResponseWriter, err error, body map[string]any) {
	if err != nil {
		a.opts.Logger.Error("revocation failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "revocation store unavailable; nothing was revoked")
		return
	}
	body["revoked"] = true
	writeJSON(w, http.StatusOK, body)
}

// DisconnectWait bounds how long POST /api/disconnect waits for the event
// loops to do their part: a loop that stalls longer still does it, later.
const DisconnectWait = 5 * time.Second

// disconnect closes connections without revoking anything: every session
// of a subject on every node, or one connection by the id the logs show
// (only the node it names acts). The request goes to the other nodes first
// (Forward): if it cannot, nothing is closed anywhere.
func (a *Admin) disconnect(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Subject *string `json:"subject"`
		Conn    *string `json:"conn"`
		Code    *int    `json:"code"`
		Reason  *string `json:"reason"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	d := Disconnect{Code: DefaultDisconnectCode, Reason: DefaultDisconnectReason}
	switch {
	case req.Subject != nil && req.Conn == nil:
		if err := token.ValidSubject(*req.Subject); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		d.Subject = *req.Subject
	case req.Conn != nil && req.Subject == nil:
		id, err := ParseConnID(*req.Conn)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		d.Conn = id
	default:
		writeError(w, http.StatusBadRequest, `give exactly one of "subject" or "conn"`)
		return
	}
	if req.Code != nil {
		if *req.Code < 3000 || *req.Code > 4999 {
			writeError(w, http.StatusBadRequest, "code must be 3000 to 4999 (the application close codes of RFC 6455)")
			return
		}
		d.Code = uint16(*req.Code)
	}
	if req.Reason != nil {
		if len(*req.Reason) > MaxCloseReason || !utf8.ValidString(*req.Reason) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("reason must be UTF-8 of at most %d bytes", MaxCloseReason))
			return
		}
		d.Reason = *req.Reason
	}
	ctx, cancel := context.WithTimeout(r.Context(), DisconnectWait)
	defer cancel()
	forwarded, others := false, 0
	if (d.Subject != "" || d.Conn.Node != a.srv.Tag()) && a.opts.Forward != nil {
		n, err := a.opts.Forward(ctx, d)
		if err != nil {
			a.opts.Logger.Error("disconnect not forwarded", "err", err)
			writeError(w, http.StatusServiceUnavailable, "cannot reach the other nodes through Redis; nothing was closed")
			return
		}
		forwarded, others = true, n
	}
	result := make(chan int, 1)
	a.srv.Disconnect(d, func(closed int) { result <- closed })
	select {
	case closed := <-result:
		a.opts.Logger.Info("operator disconnect", "subject", d.Subject, "conn", connLabel(d.Conn), "code", d.Code,
			"reason", d.Reason, "closed", closed, "forwarded", forwarded)
		writeJSON(w, http.StatusOK, map[string]any{"closed": closed, "forwarded": forwarded, "other_nodes": others})
	case <-ctx.Done():
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("the event loops did not answer within %v; they close the connections when they do", DisconnectWait))
	}
}

// connLabel is a ConnID for the logs, empty for none.
func connLabel(id ConnID) string {
	if id == (ConnID{}) {
		return ""
	}
	return id.String()
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "body must be a JSON object: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// RevokeSessions closes, on their loops, the live sessions rv matches, with
// code and reason. Wire it as the Revoker's callback.
func RevokeSessions(hub *session.Hub, rv token.Revocation, code uint16, reason string) {
	hub.EachShard(func(sh *session.Shard) {
		sh.Each(func(s *session.Session) {
			if rv.Matches(s.Claims) {
				s.Sink.Close(code, reason)
			}
		})
	})
}
