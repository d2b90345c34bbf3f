package kosync

// The KOReader sync API (reference Part A), answered as koreader-sync-server
// does: JSON object bodies, errors exactly {"code","message"}, and the
// order of checks Accept → body framing → authentication → field
// validation → action (with the per-endpoint exceptions of A.3).
//
// Choices the reference leaves open, made here:
//   - Lenient Accept (the default) accepts any Accept header, or none,
//     including other vendor versions. StrictAccept applies the reference's
//     412 rows to every Part A route, /healthcheck included (the reference
//     checks Accept in its framework, before any route); a present but
//     empty Accept header is "invalid format" (101), only an absent one is
//     100. POST /users/create checks Accept before the 2005 of a closed
//     registration.
//   - A body of only white space is an empty body ({}).
//   - device_id of a type other than string or null is 403 2003, like the
//     other fields (KOReader always sends a string).
//   - progress sent as a JSON number is stored as its shortest decimal text
//     without exponent (strconv 'f', -1): 56 → "56", 56.0 → "56", 0.5 →
//     "0.5".
//   - percentage as a string: ASCII white space around it is ignored (as Lua
//     tonumber does), then it must be a decimal number
//     ([+-]digits[.digits][e[+-]digits]); hex, inf and nan are refused.
//     Values overflowing float64 are refused (2003).
//   - Document ids longer than maxDocumentIDLen get 403 2004.
//   - Usernames at registration must also fit a token subject ("kosync:"
//     + name at most 64 bytes, no control characters), else 403 2003: the
//     name is the JWT subject that revocation (deletion, password change)
//     names.
//   - JWT revocation failures after a successful delete or password change
//     are logged, not answered: the change is durable and retrying it
//     would fail.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wsgateway/gateway/token"
)

// Fixed KOReader response bodies.
var (
	koAcceptMissing   = []byte(`{"code":100,"message":"Accept header not set."}`)
	koAcceptInvalid   = []byte(`{"code":101,"message":"Invalid Accept header format."}`)
	koAcceptVersion   = []byte(`{"code":102,"message":"Unsupported version specified in the Accept header."}`)
	koBadJSON         = []byte(`{"code":103,"message":"Could not parse JSON in body."}`)
	koNotHash         = []byte(`{"code":104,"message":"Body should be a JSON hash."}`)
	koStoreDown       = []byte(`{"code":1000,"message":"Cannot connect to redis server."}`)
	koStoreError      = []byte(`{"code":2000,"message":"Unknown server error."}`)
	koUnauthorized    = []byte(`{"code":2001,"message":"Unauthorized"}`)
	koUserExists      = []byte(`{"code":2002,"message":"Username is already registered."}`)
	koInvalidRequest  = []byte(`{"code":2003,"message":"Invalid request"}`)
	koNoDocument      = []byte(`{"code":2004,"message":"Field 'document' not provided."}`)
	koRegistrationOff = []byte(`{"code":2005,"message":"User registration is disabled."}`)
	koAccountNotFound = []byte(`{"code":2006,"message":"Account not found."}`)
	// The gateway's own throttling answers (throttle.go); their codes are
	// the HTTP status, outside the reference's 1000/2000 ranges.
	koTooManyAttempts = []byte(`{"code":429,"message":"Too many failed attempts from your address. Try again later."}`)
	koBusy            = []byte(`{"code":503,"message":"Server busy. Try again later."}`)

	koHealthy    = []byte(`{"state":"OK"}`)
	koAuthorized = []byte(`{"authorized":"OK"}`)
	koDeleted    = []byte(`{"deleted":true}`)
	koUpdated    = []byte(`{"updated":true}`)
	koEmpty      = []byte(`{}`)
)

// acceptPattern is gin's ^application/vnd.koreader.v(%d+)(.*)+json$ (a Lua
// pattern: "+" after a capture is a literal, "." any character).
var acceptPattern = regexp.MustCompile(`^application/vnd.koreader.v(\d+)(.*)\+json$`)

// decimalPattern is a decimal number as Lua tonumber reads it, without hex.
var decimalPattern = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// checkAccept writes the 412 of a refused Accept header (strict mode only)
// and reports whether the request may go on.
func (s *Service) checkAccept(w http.ResponseWriter, r *http.Request) bool {
	if !s.opts.StrictAccept {
		return true
	}
	vals, ok := r.Header["Accept"]
	if !ok || len(vals) == 0 {
		writeJSON(w, http.StatusPreconditionFailed, koAcceptMissing)
		return false
	}
	m := acceptPattern.FindStringSubmatch(vals[0])
	if m == nil {
		writeJSON(w, http.StatusPreconditionFailed, koAcceptInvalid)
		return false
	}
	if v, err := strconv.Atoi(m[1]); err != nil || v != 1 {
		writeJSON(w, http.StatusPreconditionFailed, koAcceptVersion)
		return false
	}
	return true
}

// readObject reads the body as a JSON object (body framing, A.1): an
// empty body is {}; invalid JSON is 400 103; another JSON value is 400
// 104; a body over maxBodyBytes is 413 103. It writes the error and
// returns ok=false.
func readObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, bool) {
	body, tooLarge, err := readBody(w, r)
	if tooLarge {
		writeJSON(w, http.StatusRequestEntityTooLarge, koBadJSON)
		return nil, false
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, koBadJSON)
		return nil, false
	}
	trimmed := strings.TrimSpace(string(body))
	if trimmed == "" {
		return map[string]json.RawMessage{}, true
	}
	if !json.Valid([]byte(trimmed)) {
		writeJSON(w, http.StatusBadRequest, koBadJSON)
		return nil, false
	}
	if trimmed[0] != '{' {
		writeJSON(w, http.StatusBadRequest, koNotHash)
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(trimmed), &m); err != nil {
		writeJSON(w, http.StatusBadRequest, koBadJSON)
		return nil, false
	}
	return m, true
}

// authHeaders returns x-auth-user and x-auth-key if they pass the syntax
// check: both non-empty, no ':' in the user.
func authHeaders(r *http.Request) (user, key string, ok bool) {
	user, key = r.Header.Get("X-Auth-User"), r.Header.Get("X-Auth-Key")
	if user == "" || key == "" || strings.Contains(user, ":") {
		return "", "", false
	}
	return user, key, true
}

// koAuth authenticates the KOReader headers, writing 401, 429, 503 or a
// store error on failure, and logging a refusal.
func (s *Service) koAuth(w http.ResponseWriter, r *http.Request) (User, bool) {
	user, key, ok := authHeaders(r)
	if !ok {
		s.logRefused(r, reasonNoCredentials, user)
		writeJSON(w, http.StatusUnauthorized, koUnauthorized)
		return User{}, false
	}
	u, err := s.auth.authenticate(r.Context(), user, key, s.clientAddr(r))
	if err != nil {
		s.logAuthError(r, user, err)
		s.koFail(w, err)
		return User{}, false
	}
	return u, true
}

// koFail answers a failed authentication or store call: 401 2001 for
// credentials (wrong, changed meanwhile, account gone), 429 or 503 with
// Retry-After when throttled, 502 1000 when the store is unreachable, 502
// 2000 otherwise.
func (s *Service) koFail(w http.ResponseWriter, err error) {
	if secs := retryAfterSeconds(err); secs > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		if errors.Is(err, errHashBusy) {
			writeJSON(w, http.StatusServiceUnavailable, koBusy)
		} else {
			writeJSON(w, http.StatusTooManyRequests, koTooManyAttempts)
		}
		return
	}
	switch {
	case errors.Is(err, errUnauthorized), errors.Is(err, ErrStale), errors.Is(err, ErrUserNotFound):
		writeJSON(w, http.StatusUnauthorized, koUnauthorized)
	case errors.Is(err, ErrUnavailable):
		s.warns.Log("store_unavailable", "kosync: store unavailable", slog.String("protocol", "kosync"), slog.String("err", err.Error()))
		writeJSON(w, http.StatusBadGateway, koStoreDown)
	default:
		s.errs.Log("store_error", "kosync: store error", slog.String("protocol", "kosync"), slog.String("err", err.Error()))
		writeJSON(w, http.StatusBadGateway, koStoreError)
	}
}

// background returns a context for work that must finish once a change is
// committed, even if the client has gone.
func background(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// revokeUser revokes the user's JWTs issued until now (which also evicts
// the user from every node's cache through Revoked); failures are logged.
func (s *Service) revokeUser(ctx context.Context, user string) {
	ctx, cancel := background(ctx)
	defer cancel()
	if err := s.opts.Revoker.RevokeSubject(ctx, jwtSubject(user), time.Now()); err != nil {
		s.log.Error("kosync: revoking the user's tokens failed", "protocol", "kosync", "subject", user, "err", err)
	}
}

// GET /healthcheck
func (s *Service) handleHealthcheck(w http.ResponseWriter, r *http.Request) {
	if !s.checkAccept(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, koHealthy)
}

// POST /users/create
func (s *Service) handleCreateUser(w http.ResponseWriter, r *http.Request) {
	if !s.checkAccept(w, r) {
		return
	}
	if s.opts.RegistrationClosed {
		writeJSON(w, http.StatusPaymentRequired, koRegistrationOff)
		return
	}
	m, ok := readObject(w, r)
	if !ok {
		return
	}
	user, okU := jsonString(m["username"])
	key, okK := jsonString(m["password"])
	if !okU || !okK || user == "" || key == "" || strings.Contains(user, ":") || token.ValidSubject(jwtSubject(user)) != nil {
		writeJSON(w, http.StatusForbidden, koInvalidRequest)
		return
	}
	ctx := r.Context()
	// Refuse a taken name before spending a hash on it.
	switch _, err := s.opts.Store.User(ctx, user); {
	case err == nil:
		writeJSON(w, http.StatusPaymentRequired, koUserExists)
		return
	case !errors.Is(err, ErrUserNotFound):
		s.koFail(w, err)
		return
	}
	// A registration costs a hash: it counts as an attempt of its address.
	hash, err := s.auth.chargedHash(s.clientAddr(r), key)
	if err != nil {
		s.logAuthError(r, user, err)
		s.koFail(w, err)
		return
	}
	if err := s.opts.Store.CreateUser(ctx, user, hash); err != nil {
		if errors.Is(err, ErrUserExists) {
			writeJSON(w, http.StatusPaymentRequired, koUserExists)
			return
		}
		s.koFail(w, err)
		return
	}
	// The client authorizes right after registering: spare it a hash.
	s.auth.remember(s.auth.mac(user, key), user, hash)
	writeJSON(w, http.StatusCreated, marshal(struct {
		Username string `json:"username"`
	}{user}))
}

// GET /users/auth
func (s *Service) handleAuthUser(w http.ResponseWriter, r *http.Request) {
	if !s.checkAccept(w, r) {
		return
	}
	if _, ok := s.koAuth(w, r); !ok {
		return
	}
	writeJSON(w, http.StatusOK, koAuthorized)
}

// DELETE /users/me: syntax (401), existence (404 whatever the key), key
// (401), then delete atomically with the key check.
func (s *Service) handleDeleteUser(w http.ResponseWriter, r *http.Request) {
	if !s.checkAccept(w, r) {
		return
	}
	user, key, ok := authHeaders(r)
	if !ok {
		s.logRefused(r, reasonNoCredentials, user)
		writeJSON(w, http.StatusUnauthorized, koUnauthorized)
		return
	}
	ctx := r.Context()
	u, err := s.opts.Store.User(ctx, user)
	if errors.Is(err, ErrUserNotFound) {
		s.logRefused(r, reasonUnknownUser, user)
		writeJSON(w, http.StatusNotFound, koAccountNotFound)
		return
	}
	if err != nil {
		s.koFail(w, err)
		return
	}
	if err := s.auth.checkKey(u, key, s.clientAddr(r)); err != nil {
		s.logAuthError(r, user, err)
		s.koFail(w, err)
		return
	}
	mu := s.userLock(user) // no announce of this user may follow the deletion
	mu.Lock()
	err = s.opts.Store.DeleteUser(ctx, user, u.Hash)
	mu.Unlock()
	if errors.Is(err, ErrUserNotFound) {
		writeJSON(w, http.StatusNotFound, koAccountNotFound)
		return
	}
	if err != nil {
		s.koFail(w, err)
		return
	}
	s.auth.evictUser(user)
	s.revokeUser(ctx, user)
	writeJSON(w, http.StatusOK, koDeleted)
}

// PUT /users/password: syntax (401), field (403 2003), key (401), then an
// atomic check-and-set of the hash.
func (s *Service) handleSetPassword(w http.ResponseWriter, r *http.Request) {
	if !s.checkAccept(w, r) {
		return
	}
	m, ok := readObject(w, r)
	if !ok {
		return
	}
	user, key, ok := authHeaders(r)
	if !ok {
		s.logRefused(r, reasonNoCredentials, user)
		writeJSON(w, http.StatusUnauthorized, koUnauthorized)
		return
	}
	newKey, ok := jsonString(m["password"])
	if !ok || newKey == "" {
		writeJSON(w, http.StatusForbidden, koInvalidRequest)
		return
	}
	ctx := r.Context()
	u, err := s.auth.authenticate(ctx, user, key, s.clientAddr(r))
	if err != nil {
		s.logAuthError(r, user, err)
		s.koFail(w, err)
		return
	}
	// A password change costs a hash too, charged like a registration:
	// authenticating through the key cache charged nothing.
	hash, err := s.auth.chargedHash(s.clientAddr(r), newKey)
	if err != nil {
		s.logAuthError(r, user, err)
		s.koFail(w, err)
		return
	}
	if err := s.opts.Store.SetHash(ctx, user, u.Hash, hash); err != nil {
		s.koFail(w, err) // ErrStale (a concurrent change won) and ErrUserNotFound are 401
		return
	}
	// Entries of the old key are dead already (a hit needs the current
	// hash); drop them, revoke the tokens issued so far (every node evicts
	// on that revocation too), then cache the new key.
	s.auth.evictUser(user)
	s.revokeUser(ctx, user)
	s.auth.remember(s.auth.mac(user, newKey), user, hash)
	writeJSON(w, http.StatusOK, koUpdated)
}

// PUT /syncs/progress
func (s *Service) handlePush(w http.ResponseWriter, r *http.Request) {
	if !s.checkAccept(w, r) {
		return
	}
	m, ok := readObject(w, r)
	if !ok {
		return
	}
	u, ok := s.koAuth(w, r)
	if !ok {
		return
	}
	id, f, errBody := parsePush(m)
	if errBody != nil {
		writeJSON(w, http.StatusForbidden, errBody)
		return
	}
	limit := s.opts.HistoryLimit
	doc, err := s.writeDocument(r.Context(), u.Name, u.Hash, id, func(cur *Document) (*Document, error) {
		return ApplyPush(cur, id, f, time.Now().Unix(), limit), nil
	}, nil)
	if err != nil {
		s.koFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, marshal(struct {
		Document  string `json:"document"`
		Timestamp int64  `json:"timestamp"`
	}{doc.ID, doc.Timestamp}))
}

// parsePush validates a push body; errBody is the 403 body on failure.
func parsePush(m map[string]json.RawMessage) (id string, f PushFields, errBody []byte) {
	id, ok := jsonString(m["document"])
	if !ok || !validDocumentID(id) {
		return "", f, koNoDocument
	}
	pct, ok := jsonPercentage(m["percentage"])
	if !ok {
		return "", f, koInvalidRequest
	}
	progress, ok := jsonProgress(m["progress"])
	if !ok {
		return "", f, koInvalidRequest
	}
	device, ok := jsonString(m["device"])
	if !ok {
		return "", f, koInvalidRequest
	}
	f = PushFields{Progress: progress, Percentage: pct, Device: device}
	if raw := m["device_id"]; !jsonAbsent(raw) {
		v, ok := jsonString(raw)
		if !ok {
			return "", f, koInvalidRequest
		}
		f.DeviceID = &v
	}
	return id, f, nil
}

// GET /syncs/progress/{document}
func (s *Service) handlePull(w http.ResponseWriter, r *http.Request) {
	if !s.checkAccept(w, r) {
		return
	}
	u, ok := s.koAuth(w, r)
	if !ok {
		return
	}
	id := r.PathValue("document")
	if !validDocumentID(id) {
		writeJSON(w, http.StatusForbidden, koNoDocument)
		return
	}
	doc, err := s.opts.Store.Document(r.Context(), u.Name, id)
	if err != nil {
		s.koFail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pullBody(doc, id))
}

// pullBody is the GET answer: only the stored keys, and document only
// along with another key.
func pullBody(d *Document, id string) []byte {
	if d == nil || (!d.HasProgress() && d.Timestamp == 0) {
		return koEmpty
	}
	var ts *int64
	if d.Timestamp != 0 {
		ts = &d.Timestamp
	}
	return marshal(struct {
		Document   string   `json:"document"`
		Percentage *float64 `json:"percentage,omitempty"`
		Progress   *string  `json:"progress,omitempty"`
		Device     *string  `json:"device,omitempty"`
		DeviceID   *string  `json:"device_id,omitempty"`
		Timestamp  *int64   `json:"timestamp,omitempty"`
	}{id, d.Percentage, d.Progress, d.Device, d.DeviceID, ts})
}

// JSON value helpers. raw is nil for an absent key.

// jsonAbsent reports an absent key or null.
func jsonAbsent(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// jsonString decodes a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// jsonNumber decodes a JSON number that fits a float64.
func jsonNumber(raw json.RawMessage) (float64, bool) {
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

// jsonPercentage decodes a percentage: a JSON number, or a string holding
// a decimal number.
func jsonPercentage(raw json.RawMessage) (float64, bool) {
	if f, ok := jsonNumber(raw); ok {
		return f, true
	}
	s, ok := jsonString(raw)
	if !ok {
		return 0, false
	}
	s = strings.Trim(s, " \t\n\r\f\v")
	if !decimalPattern.MatchString(s) {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

// jsonProgress decodes a progress: a string, or a number stored as its
// decimal text.
func jsonProgress(raw json.RawMessage) (string, bool) {
	if s, ok := jsonString(raw); ok {
		return s, true
	}
	if f, ok := jsonNumber(raw); ok {
		return strconv.FormatFloat(f, 'f', -1, 64), true
	}
	return "", false
}
