package kosync

// KOsync's HTTP endpoints under /api/ (reference B.1-B.3, B.8) and the
// document operations the WebSocket shares with them.
//
// Authentication: Authorization: Bearer <jwt> when that header carries the
// Bearer scheme (it alone decides: an invalid token is 401, with no
// fallback); otherwise the KOReader headers. An Authorization header of
// another scheme (Basic) is ignored. Failures are 401 text/plain
// "Unauthorized". Store failures are 503 text/plain "Service Unavailable"
// when the store is unreachable and 500 "Internal Server Error" otherwise
// (the reference fixes no status; both are retryable conditions).
//
// /api/ws builds <scheme>://<host><path prefix>/api/ws/<jwt>. With
// Options.PublicURL, its scheme (https → wss, else ws), host and path (a
// deployment under a sub-path) are used. Otherwise the scheme is wss when
// the request came over TLS (r.TLS) or from a trusted proxy whose
// X-Forwarded-Proto (first value) or Forwarded proto= (first element) is
// https or wss, and the host is X-Forwarded-Host (or Forwarded host=) from
// a trusted proxy, else the Host header. The gateway's main listener hands
// plain HTTP over without TLS state, so behind its own TLS (if any) or a
// TLS-terminating proxy, configure PublicURL or TrustedProxies.
//
// Issuing a JWT re-reads the user after signing: if the credentials
// changed since authentication, the request is refused. With the
// revocation made after every change, no token can outlive the
// credentials it was issued for.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// InputError is a documents.update input the reference refuses (B.6); its
// Message is the exact error text of the reply.
type InputError struct{ Message string }

func (e *InputError) Error() string { return e.Message }

// B.6 input errors.
var (
	errNotObject  = &InputError{"Invalid argument 'document': expected an object"}
	errDocumentID = &InputError{"Invalid argument 'document': missing or conflicting document id"}
)

func errWrongType(field string) *InputError {
	return &InputError{fmt.Sprintf("Invalid argument 'document': field '%s' has the wrong type", field)}
}

// AllDocuments returns the user's documents in the API shape, history as
// arrays, newest first (ties by id); an empty, non-nil slice if none.
func (s *Service) AllDocuments(ctx context.Context, user string) ([]APIDocument, error) {
	docs, err := s.opts.Store.Documents(ctx, user)
	if err != nil {
		return nil, err
	}
	out := make([]APIDocument, 0, len(docs))
	for _, d := range docs {
		out = append(out, toAPI(d, true))
	}
	sortNewestFirst(out)
	return out, nil
}

// UpdateDocument applies a documents.update input (raw: the 'document'
// argument or the PUT body) for user, atomically with the user's current
// credentials, announces it, and returns the stored document in the API
// shape with History nil. Bad input returns an *InputError; a deleted
// account (or credentials changed during the write) returns
// errUnauthorized; store failures are returned as they are.
func (s *Service) UpdateDocument(ctx context.Context, user string, raw json.RawMessage) (APIDocument, error) {
	return s.updateDocument(ctx, user, raw, nil)
}

// updateDocument is UpdateDocument with a hook for the WebSocket:
// beforeAnnounce (may be nil) gets the result after the commit and before
// the announce is published, under the user's write lock, so it must not
// block. Queue the RPC reply on the connection's loop there (Loop.Run) and
// the reply reaches the socket before the announce does (B.6); the
// returned values are the same as the hook's.
func (s *Service) updateDocument(ctx context.Context, user string, raw json.RawMessage, beforeAnnounce func(APIDocument)) (APIDocument, error) {
	id, f, ierr := parseUpdate(raw)
	if ierr != nil {
		return APIDocument{}, ierr
	}
	u, err := s.opts.Store.User(ctx, user)
	if errors.Is(err, ErrUserNotFound) {
		return APIDocument{}, errUnauthorized
	}
	if err != nil {
		return APIDocument{}, err
	}
	var hook func(*Document)
	if beforeAnnounce != nil {
		hook = func(d *Document) { beforeAnnounce(toAPI(d, false)) }
	}
	doc, err := s.update(ctx, u, id, f, hook)
	if err != nil {
		return APIDocument{}, err
	}
	return toAPI(doc, false), nil
}

// update writes f to u's document id with u's hash and announces it;
// ErrStale becomes errUnauthorized.
func (s *Service) update(ctx context.Context, u User, id string, f UpdateFields, beforeAnnounce func(*Document)) (*Document, error) {
	limit := s.opts.HistoryLimit
	doc, err := s.writeDocument(ctx, u.Name, u.Hash, id, func(cur *Document) (*Document, error) {
		return ApplyUpdate(cur, id, f, time.Now().Unix(), limit), nil
	}, beforeAnnounce)
	if errors.Is(err, ErrStale) || errors.Is(err, ErrUserNotFound) {
		return nil, errUnauthorized
	}
	return doc, err
}

// parseUpdate validates a documents.update input (B.8, errors of B.6): a
// JSON object; the id from "document", else "id" (null counts as absent;
// both given must be equal strings); progress (string or number),
// percentage (number or decimal string), device, device_id and pretty_name
// (strings), each optional, null meaning absent. timestamp, history,
// owner_id and unknown keys are ignored.
func parseUpdate(raw json.RawMessage) (string, UpdateFields, *InputError) {
	var f UpdateFields
	trimmed := strings.TrimSpace(string(raw))
	if trimmed == "" || trimmed[0] != '{' {
		return "", f, errNotObject
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(trimmed), &m); err != nil {
		return "", f, errNotObject
	}
	docRaw, idRaw := m["document"], m["id"]
	var id string
	switch docGiven, idGiven := !jsonAbsent(docRaw), !jsonAbsent(idRaw); {
	case docGiven && idGiven:
		a, okA := jsonString(docRaw)
		b, okB := jsonString(idRaw)
		if !okA || !okB || a != b {
			return "", f, errDocumentID
		}
		id = a
	case docGiven:
		id, _ = jsonString(docRaw)
	case idGiven:
		id, _ = jsonString(idRaw)
	}
	if !validDocumentID(id) {
		return "", f, errDocumentID
	}
	if raw := m["progress"]; !jsonAbsent(raw) {
		v, ok := jsonProgress(raw)
		if !ok {
			return "", f, errWrongType("progress")
		}
		f.Progress = &v
	}
	if raw := m["percentage"]; !jsonAbsent(raw) {
		v, ok := jsonPercentage(raw)
		if !ok {
			return "", f, errWrongType("percentage")
		}
		f.Percentage = &v
	}
	for _, fld := range []struct {
		name string
		dst  **string
	}{{"device", &f.Device}, {"device_id", &f.DeviceID}} {
		if raw := m[fld.name]; !jsonAbsent(raw) {
			v, ok := jsonString(raw)
			if !ok {
				return "", f, errWrongType(fld.name)
			}
			*fld.dst = &v
		}
	}
	if raw := m["pretty_name"]; !jsonAbsent(raw) {
		v, ok := jsonString(raw)
		if !ok {
			return "", f, errWrongType("pretty_name")
		}
		f.PrettyName = v
	}
	return id, f, nil
}

// apiAuth authenticates an /api/ request (Bearer JWT or KOReader headers)
// and returns the user with its current hash; it writes the failure.
func (s *Service) apiAuth(w http.ResponseWriter, r *http.Request) (User, bool) {
	ctx := r.Context()
	if tok, ok := bearer(r); ok {
		name, _, err := s.VerifyJWT(tok)
		if err != nil {
			s.logAuthError(r, "", err)
			writeText(w, http.StatusUnauthorized, "Unauthorized")
			return User{}, false
		}
		u, err := s.opts.Store.User(ctx, name)
		if err != nil {
			s.apiFail(w, err)
			return User{}, false
		}
		return u, true
	}
	user, key, ok := authHeaders(r)
	if !ok {
		s.logRefused(r, reasonNoCredentials, user)
		writeText(w, http.StatusUnauthorized, "Unauthorized")
		return User{}, false
	}
	u, err := s.auth.authenticate(ctx, user, key, s.clientAddr(r))
	if err != nil {
		s.logAuthError(r, user, err)
		s.apiFail(w, err)
		return User{}, false
	}
	return u, true
}

// bearer returns the token of an Authorization header of the Bearer
// scheme; ok is false when there is no such header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 6 || !strings.EqualFold(h[:6], "bearer") || (len(h) > 6 && h[6] != ' ' && h[6] != '\t') {
		return "", false
	}
	return strings.TrimSpace(h[6:]), true
}

// apiFail answers a failed /api/ request in plain text.
func (s *Service) apiFail(w http.ResponseWriter, err error) {
	if secs := retryAfterSeconds(err); secs > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		if errors.Is(err, errHashBusy) {
			writeText(w, http.StatusServiceUnavailable, "Service Unavailable")
		} else {
			writeText(w, http.StatusTooManyRequests, "Too Many Requests")
		}
		return
	}
	var ie *InputError
	switch {
	case errors.As(err, &ie):
		writeText(w, http.StatusBadRequest, "Bad Request")
	case errors.Is(err, errUnauthorized), errors.Is(err, ErrStale), errors.Is(err, ErrUserNotFound):
		writeText(w, http.StatusUnauthorized, "Unauthorized")
	case errors.Is(err, ErrUnavailable):
		s.warns.Log("store_unavailable", "kosync: store unavailable", slog.String("protocol", "kosync"), slog.String("err", err.Error()))
		writeText(w, http.StatusServiceUnavailable, "Service Unavailable")
	default:
		s.errs.Log("store_error", "kosync: store error", slog.String("protocol", "kosync"), slog.String("err", err.Error()))
		writeText(w, http.StatusInternalServerError, "Internal Server Error")
	}
}

// GET /api/documents.all
func (s *Service) handleDocumentsAll(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiAuth(w, r)
	if !ok {
		return
	}
	docs, err := s.AllDocuments(r.Context(), u.Name)
	if err != nil {
		s.apiFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, marshal(docs))
}

// PUT /api/documents.update
func (s *Service) handleDocumentsUpdate(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiAuth(w, r)
	if !ok {
		return
	}
	body, tooLarge, err := readBody(w, r)
	if tooLarge {
		writeText(w, http.StatusRequestEntityTooLarge, "Request Entity Too Large")
		return
	}
	if err != nil {
		writeText(w, http.StatusBadRequest, "Bad Request")
		return
	}
	id, f, ierr := parseUpdate(body)
	if ierr != nil {
		writeText(w, http.StatusBadRequest, "Bad Request")
		return
	}
	if _, err := s.update(r.Context(), u, id, f, nil); err != nil {
		s.apiFail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// issueFor issues a JWT for u, then checks that u's credentials did not
// change meanwhile (see the file comment); it writes the failure.
func (s *Service) issueFor(w http.ResponseWriter, r *http.Request, u User) (string, bool) {
	tok, err := s.IssueJWT(u.Name)
	if err != nil {
		s.apiFail(w, err)
		return "", false
	}
	now, err := s.opts.Store.User(r.Context(), u.Name)
	if err == nil && now.Hash != u.Hash {
		err = errUnauthorized
	}
	if err != nil {
		s.apiFail(w, err)
		return "", false
	}
	return tok, true
}

// GET /api/auth.jwt
func (s *Service) handleAuthJWT(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiAuth(w, r)
	if !ok {
		return
	}
	tok, ok := s.issueFor(w, r, u)
	if !ok {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeText(w, http.StatusOK, tok)
}

// wsURLs builds the WebSocket URIs of /api/ws.
type wsURLs struct {
	s       *Service
	public  *url.URL // nil: derive from the request
	trusted []netip.Prefix
}

func (s *Service) wsURLBuilder() *wsURLs {
	b := &wsURLs{s: s, trusted: s.opts.TrustedProxies}
	if p := s.opts.PublicURL; p != "" {
		u, err := url.Parse(p)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			s.log.Error("kosync: PublicURL ignored: want http(s)://host[/path]", "public_url", p)
		} else {
			b.public = u
		}
	}
	return b
}

// GET /api/ws: 303 to the WebSocket URI with a fresh JWT (also the
// text/plain body), or 200 {"url": <the URI>} when Accept prefers
// application/json to text/plain (prefersJSON).
func (b *wsURLs) handle(w http.ResponseWriter, r *http.Request) {
	s := b.s
	u, ok := s.apiAuth(w, r)
	if !ok {
		return
	}
	tok, ok := s.issueFor(w, r, u)
	if !ok {
		return
	}
	uri := b.base(r) + "/api/ws/" + tok
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Accept")
	if prefersJSON(r) {
		// A page's fetch follows a 303 to ws:// and fails: it asks for
		// JSON and opens the URI itself.
		writeJSON(w, http.StatusOK, marshal(wsURLAnswer{uri}))
		return
	}
	h.Set("Location", uri)
	writeText(w, http.StatusSeeOther, uri)
}

// wsURLAnswer is GET /api/ws's JSON answer.
type wsURLAnswer struct {
	URL string `json:"url"`
}

// base returns "<scheme>://<host>[<path prefix>]".
func (b *wsURLs) base(r *http.Request) string {
	if p := b.public; p != nil {
		scheme := "ws"
		if p.Scheme == "https" {
			scheme = "wss"
		}
		return scheme + "://" + p.Host + strings.TrimRight(p.EscapedPath(), "/")
	}
	trusted := b.fromTrustedProxy(r)
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	host := r.Host
	if trusted {
		proto, fwdHost := forwarded(r)
		if p := strings.ToLower(proto); p == "https" || p == "wss" {
			scheme = "wss"
		}
		if fwdHost != "" && validHost(fwdHost) {
			host = fwdHost
		}
	}
	return scheme + "://" + host
}

// fromTrustedProxy reports whether the peer is in TrustedProxies.
func (b *wsURLs) fromTrustedProxy(r *http.Request) bool {
	if len(b.trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range b.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// forwarded returns the proto and host a proxy reports: X-Forwarded-Proto
// and X-Forwarded-Host (first values), else the first element of
// Forwarded.
func forwarded(r *http.Request) (proto, host string) {
	first := func(v string) string {
		v, _, _ = strings.Cut(v, ",")
		return strings.TrimSpace(v)
	}
	proto = first(r.Header.Get("X-Forwarded-Proto"))
	host = first(r.Header.Get("X-Forwarded-Host"))
	if f := first(r.Header.Get("Forwarded")); f != "" {
		for _, pair := range strings.Split(f, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok {
				continue
			}
			v = strings.Trim(v, `"`)
			switch strings.ToLower(k) {
			case "proto":
				if proto == "" {
					proto = v
				}
			case "host":
				if host == "" {
					host = v
				}
			}
		}
	}
	return proto, host
}

// validHost accepts host[:port] made of the characters a host may have, so
// a proxy header cannot inject anything into the URI.
func validHost(h string) bool {
	if len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-:[]_", c) >= 0) {
			return false
		}
	}
	return true
}
