package kosync

// HTTP routes and the helpers the KOReader (http_koreader.go) and /api/*
// (http_api.go) handlers share.
//
// Routes are registered by path only and dispatch on the method
// themselves: a known path with another method answers 404 like an unknown
// route (the reference's router is per method and path; nginx answers 404),
// and the behaviour is the same whether the routes sit on the gateway's mux
// (which has a catch-all "/") or on Handler's own mux. GET routes also
// answer HEAD.
//
// Every route sends CORS headers and answers preflights (OPTIONS), the
// KOReader endpoints as well as /api/*: the original KOsync applied CORS to
// every route, and browser clients (Readest's web build on a LAN server)
// call the KOReader API directly. See cors.
//
// Request bodies are capped at maxBodyBytes. A larger KOReader body gets
// 413 with the body-framing error {"code":103,"message":"Could not parse
// JSON in body."}: the reference's nginx refuses large bodies with 413 too
// (its page is HTML), 413 is not 401 so a push is queued for retry rather
// than treated as bad credentials, and keeping code 103 keeps the
// code-to-message table of A.2 intact. The KOsync endpoint answers 413
// text/plain "Request Entity Too Large".

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
)

// maxBodyBytes caps request bodies. KOReader bodies are a few hundred bytes.
const maxBodyBytes = 64 << 10

// maxDocumentIDLen caps document ids (KOReader sends 32 hex characters).
// Longer ids get 403 2004 (HTTP) or the missing-id error (documents.update)
// rather than a store error that retrying could never fix (bbolt keys stop
// at 32 KiB).
const maxDocumentIDLen = 1024

// route is one HTTP endpoint.
type route struct {
	pattern string // path pattern for http.ServeMux, without method
	method  string // GET routes also answer HEAD
	h       http.HandlerFunc
}

func (s *Service) routes() []route {
	ws := s.wsURLBuilder()
	return []route{
		{"/healthcheck", http.MethodGet, s.handleHealthcheck},
		{"/users/create", http.MethodPost, s.handleCreateUser},
		{"/users/auth", http.MethodGet, s.handleAuthUser},
		{"/users/me", http.MethodDelete, s.handleDeleteUser},
		{"/users/password", http.MethodPut, s.handleSetPassword},
		{"/syncs/progress", http.MethodPut, s.handlePush},
		{"/syncs/progress/{document...}", http.MethodGet, s.handlePull},
		{"/api/documents.all", http.MethodGet, s.handleDocumentsAll},
		{"/api/documents.update", http.MethodPut, s.handleDocumentsUpdate},
		{"/api/auth.jwt", http.MethodGet, s.handleAuthJWT},
		{"/api/ws", http.MethodGet, ws.handle},
	}
}

// Handler returns every HTTP route of the service on a mux of its own.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.pattern, s.httpMetrics.instrument(rt.pattern, rt.wrap()))
	}
	return mux
}

// RegisterHTTP registers every route on srv (the gateway's main listener),
// by path pattern without method (see the file comment).
func (s *Service) RegisterHTTP(srv interface {
	HandleHTTP(pattern string, h http.Handler)
}) {
	for _, rt := range s.routes() {
		srv.HandleHTTP(rt.pattern, s.httpMetrics.instrument(rt.pattern, rt.wrap()))
	}
}

// wrap adds CORS and the method dispatch.
func (rt route) wrap() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cors(w.Header())
		if r.Method == http.MethodOptions {
			preflight(w, r)
			return
		}
		if r.Method != rt.method && !(rt.method == http.MethodGet && r.Method == http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		rt.h(w, r)
	})
}

// CORS header values. Allowing any origin is safe: no authentication is
// ambient (no cookies, so never Access-Control-Allow-Credentials), every
// credential is an explicit header.
const (
	corsAllowOrigin = "*"
	// corsExposeHeaders lets a page read how long to wait after a 429 or
	// 503.
	corsExposeHeaders = "Retry-After"
	// corsAllowMethods covers every route's method (one list for all
	// routes; a method a route does not serve still answers 404).
	corsAllowMethods = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
	// corsAllowHeaders are the request headers the APIs read. Accept is
	// listed because browsers safelist it only when short and made of
	// safe characters.
	corsAllowHeaders = "Accept, Authorization, Content-Type, x-auth-user, x-auth-key"
	// corsMaxAge lets a browser cache a preflight for a day.
	corsMaxAge = "86400"
)

// cors sets the headers every answer carries.
func cors(h http.Header) {
	h.Set("Access-Control-Allow-Origin", corsAllowOrigin)
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
}

// preflight answers a CORS preflight: 204 with the allowed methods and
// headers. A page on a public origin calling a server on a private address
// is allowed too (Chrome's Private Network Access preflight).
func preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", corsAllowMethods)
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", corsMaxAge)
	if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		h.Set("Access-Control-Allow-Private-Network", "true")
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeJSON sends body as application/json.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeText sends body as text/plain.
func writeText(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// marshal encodes v as JSON without HTML escaping and without the
// encoder's trailing newline.
func marshal(v any) []byte {
	var b jsonBuffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only our own types are encoded; they always marshal.
		panic("kosync: marshal: " + err.Error())
	}
	return b.trimmed()
}

type jsonBuffer struct{ b []byte }

func (j *jsonBuffer) Write(p []byte) (int, error) { j.b = append(j.b, p...); return len(p), nil }
func (j *jsonBuffer) trimmed() []byte {
	if n := len(j.b); n > 0 && j.b[n-1] == '\n' {
		return j.b[:n-1]
	}
	return j.b
}

// readBody reads r's body up to maxBodyBytes; tooLarge reports a larger
// body.
func readBody(w http.ResponseWriter, r *http.Request) (body []byte, tooLarge bool, err error) {
	body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, true, err
	}
	return body, false, err
}

// validDocumentID reports whether id is usable: non-empty, no ':', at most
// maxDocumentIDLen bytes.
func validDocumentID(id string) bool {
	if id == "" || len(id) > maxDocumentIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] == ':' {
			return false
		}
	}
	return true
}

// userLock returns the lock that serialises a user's writes with their
// announces on this node, so that announces leave in commit order (B.7).
// Striped: users sharing a stripe only wait for each other. A lock is held
// only around one store write and one non-blocking publish, never nested.
func (s *Service) userLock(user string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = io.WriteString(h, user)
	return &s.userLocks[h.Sum32()%uint32(len(s.userLocks))]
}

// writeDocument runs a credential-checked read-modify-write of user's
// document id (Store.UpdateDocument with the hash the caller was
// authenticated with) and announces the result, under the user's lock so
// that this node's announces follow the commit order. The announce is
// published only after the commit. A publish the hub refuses (broker busy)
// is logged, not returned: the write is durable, subscribers resynchronise
// with documents.all after a reconnect, and failing the request would make
// KOReader retry a write that already happened.
//
// beforeAnnounce (may be nil) runs after the commit and before the publish,
// under the user's lock, so it must not block: the WebSocket queues its
// reply there, ahead of the announce on the same loop (B.6: a subscribed
// caller gets the reply first, then the announce).
func (s *Service) writeDocument(ctx context.Context, user, hash, id string, fn func(cur *Document) (*Document, error), beforeAnnounce func(*Document)) (*Document, error) {
	mu := s.userLock(user)
	mu.Lock()
	defer mu.Unlock()
	doc, err := s.opts.Store.UpdateDocument(ctx, user, hash, id, fn)
	if err != nil {
		return nil, err
	}
	if beforeAnnounce != nil {
		beforeAnnounce(doc)
	}
	if err := s.opts.Hub.Publish(userChannel(user), announceFrame(doc), 0); err != nil {
		s.warns.Log("announce", "kosync: announce not published", slog.String("protocol", "kosync"),
			slog.String("subject", user), slog.String("document", id), slog.String("err", err.Error()))
	}
	return doc, nil
}
