package kosync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/redistest"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// md5hex is what KOReader sends as x-auth-key.
func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// httpBackend opens a fresh Store of one kind.
type httpBackend struct {
	name string
	open func(t *testing.T) Store
}

var httpBackends = []httpBackend{
	{"bolt", func(t *testing.T) Store {
		st, err := OpenBolt(filepath.Join(t.TempDir(), "kosync.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}},
	{"redis", func(t *testing.T) Store {
		srv := redistest.Start(t)
		opt, err := redis.ParseURL(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		client := redis.NewClient(opt)
		t.Cleanup(func() { client.Close() })
		return NewRedisStore(client, "t:")
	}},
}

// httpLoop is a session.Loop that runs tasks at once, under a lock (tasks
// come from HTTP handler goroutines).
type httpLoop struct{ mu sync.Mutex }

func (l *httpLoop) Run(fn func(any), arg any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fn(arg)
}

func (l *httpLoop) TryRun(fn func(any), arg any, _ int) bool { l.Run(fn, arg); return true }
func (l *httpLoop) Busy() bool                               { return false }
func (l *httpLoop) SinkPanicked(_ *session.Session, v any)   { panic(v) }

// httpSink records the payloads a session receives.
type httpSink struct {
	mu  sync.Mutex
	got []string
}

func (s *httpSink) Deliver(m *session.Message, _ *session.EncodeCache) {
	s.mu.Lock()
	s.got = append(s.got, m.Channel+" "+string(m.Payload))
	s.mu.Unlock()
}
func (s *httpSink) Subscribed(string)    {}
func (s *httpSink) Close(uint16, string) {}

func (s *httpSink) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := s.got
	s.got = nil
	return got
}

// httpEnv is a Service over a store, served by httptest.
type httpEnv struct {
	t      *testing.T
	svc    *Service
	srv    *httptest.Server
	client *http.Client // follows no redirect
	store  Store
	rev    *token.Revoker
	hub    *session.Hub
	loop   *httpLoop
	shard  *session.Shard
	start  time.Time // "<ts>" in expected bodies is a second since then
}

type envOpt struct {
	mod func(*Options)
	tls bool
}

func newHTTPEnv(t *testing.T, store Store, o envOpt) *httpEnv {
	t.Helper()
	fs, err := token.OpenFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	e := &httpEnv{t: t, store: store, hub: session.NewHub(nil), loop: &httpLoop{}, start: time.Now()}
	var svcMu sync.Mutex
	e.rev = token.NewRevoker(fs, nil, func(rv token.Revocation) {
		svcMu.Lock()
		svc := e.svc
		svcMu.Unlock()
		if svc != nil {
			svc.Revoked(rv)
		}
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); e.rev.Wait() })
	if err := e.rev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if e.shard, err = e.hub.NewShard(e.loop); err != nil {
		t.Fatal(err)
	}
	// Every request comes from loopback: the per-address limit is off
	// unless a test turns it on (throttle_test.go).
	opts := Options{Store: store, Secrets: testSecrets(t), Revoker: e.rev, Hub: e.hub, AuthFailuresPerMinute: -1}
	if o.mod != nil {
		o.mod(&opts)
	}
	svc, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	svcMu.Lock()
	e.svc = svc
	svcMu.Unlock()
	if o.tls {
		e.srv = httptest.NewTLSServer(svc.Handler())
	} else {
		e.srv = httptest.NewServer(svc.Handler())
	}
	t.Cleanup(e.srv.Close)
	e.client = e.srv.Client()
	e.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return e
}

// subscribe adds a session subscribed to user's announces.
func (e *httpEnv) subscribe(user string) *httpSink {
	sink := &httpSink{}
	sess := session.New(token.Claims{Subject: jwtSubject(user)}, sink)
	e.loop.Run(func(any) {
		e.shard.Add(sess)
		e.shard.Subscribe(sess, userChannel(user))
	}, nil)
	return sink
}

type resp struct {
	status int
	header http.Header
	body   string
}

// do sends one request; hdr values are set as given (an empty value is
// sent as an empty header).
func (e *httpEnv) do(method, path string, hdr map[string]string, body string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, string(b)}
}

// hdrs builds request headers: KOReader's Accept, then the auth pair when
// user or key is non-empty, then extra key/value pairs.
func hdrs(user, key string, extra ...string) map[string]string {
	h := map[string]string{"Accept": "application/vnd.koreader.v1+json"}
	if user != "" {
		h["x-auth-user"] = user
	}
	if key != "" {
		h["x-auth-key"] = key
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "<none>" {
			delete(h, extra[i])
			continue
		}
		h[extra[i]] = extra[i+1]
	}
	return h
}

// matchBody compares a body with want, where "<ts>" stands for a Unix
// second within [from, to].
func matchBody(got, want string, from, to int64) bool {
	if !strings.Contains(want, "<ts>") {
		return got == want
	}
	parts := strings.Split(want, "<ts>")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	m := regexp.MustCompile("^" + strings.Join(parts, `(\d+)`) + "$").FindStringSubmatch(got)
	if m == nil {
		return false
	}
	for _, s := range m[1:] {
		n, _ := strconv.ParseInt(s, 10, 64)
		if n < from || n > to {
			return false
		}
	}
	return true
}

// kRow is one KOReader API exchange.
type kRow struct {
	name         string
	method, path string
	hdr          map[string]string
	body         string
	status       int
	want         string // exact body; "<ts>" matches a current Unix second; "" skips
}

func (e *httpEnv) runRows(rows []kRow) {
	e.t.Helper()
	for _, r := range rows {
		from := e.start.Unix()
		got := e.do(r.method, r.path, r.hdr, r.body)
		to := time.Now().Unix()
		if got.status != r.status || (r.want != "" && !matchBody(got.body, r.want, from, to)) {
			e.t.Errorf("%s: %s %s\n got %d %s\nwant %d %s", r.name, r.method, r.path, got.status, got.body, r.status, r.want)
			continue
		}
		if r.want != "" && got.header.Get("Content-Type") != "application/json" {
			e.t.Errorf("%s: Content-Type %q, want application/json", r.name, got.header.Get("Content-Type"))
		}
	}
}

const (
	bUnauthorized = `{"code":2001,"message":"Unauthorized"}`
	bInvalid      = `{"code":2003,"message":"Invalid request"}`
	bNoDocument   = `{"code":2004,"message":"Field 'document' not provided."}`
	bBadJSON      = `{"code":103,"message":"Could not parse JSON in body."}`
	bNotHash      = `{"code":104,"message":"Body should be a JSON hash."}`
	bExists       = `{"code":2002,"message":"Username is already registered."}`
	bClosed       = `{"code":2005,"message":"User registration is disabled."}`
	bNotFound     = `{"code":2006,"message":"Account not found."}`
	bAccept100    = `{"code":100,"message":"Accept header not set."}`
	bAccept101    = `{"code":101,"message":"Invalid Accept header format."}`
	bAccept102    = `{"code":102,"message":"Unsupported version specified in the Accept header."}`
)

func TestKOReaderAPI(t *testing.T) {
	for _, b := range httpBackends {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			e := newHTTPEnv(t, store, envOpt{})
			testKOReaderTable(t, e)
			testKOReaderAccept(t, store)
			testPasswordRace(t, e)
		})
	}
}

func testKOReaderTable(t *testing.T, e *httpEnv) {
	k1, k2, kb := md5hex("alice-1"), md5hex("alice-2"), md5hex("bob")
	alice, bob := hdrs("alice", k1), hdrs("bob", kb)
	push := func(body string) string { return body }
	e.runRows([]kRow{
		{"healthcheck", "GET", "/healthcheck", nil, "", 200, `{"state":"OK"}`},
		{"create", "POST", "/users/create", hdrs("", ""), `{"username":"alice","password":"` + k1 + `"}`, 201, `{"username":"alice"}`},
		{"create taken", "POST", "/users/create", hdrs("", ""), `{"username":"alice","password":"other"}`, 402, bExists},
		{"create bob", "POST", "/users/create", nil, `{"username":"bob","password":"` + kb + `"}`, 201, `{"username":"bob"}`},
		{"create case-sensitive", "POST", "/users/create", nil, `{"username":"Alice","password":"x"}`, 201, `{"username":"Alice"}`},
		{"create no password", "POST", "/users/create", nil, `{"username":"carol"}`, 403, bInvalid},
		{"create empty username", "POST", "/users/create", nil, `{"username":"","password":"x"}`, 403, bInvalid},
		{"create colon", "POST", "/users/create", nil, `{"username":"ca:rol","password":"x"}`, 403, bInvalid},
		{"create username number", "POST", "/users/create", nil, `{"username":5,"password":"x"}`, 403, bInvalid},
		{"create empty password", "POST", "/users/create", nil, `{"username":"carol","password":""}`, 403, bInvalid},
		{"create password number", "POST", "/users/create", nil, `{"username":"carol","password":5}`, 403, bInvalid},
		{"create username too long for a subject", "POST", "/users/create", nil, `{"username":"` + strings.Repeat("x", 58) + `","password":"x"}`, 403, bInvalid},
		{"create empty body", "POST", "/users/create", nil, "", 403, bInvalid},
		{"create blank body", "POST", "/users/create", nil, " \n", 403, bInvalid},
		{"create bad JSON", "POST", "/users/create", nil, "{", 400, bBadJSON},
		{"create trailing garbage", "POST", "/users/create", nil, `{"a":1} x`, 400, bBadJSON},
		{"create array", "POST", "/users/create", nil, "[1]", 400, bNotHash},
		{"create string", "POST", "/users/create", nil, `"x"`, 400, bNotHash},
		{"create null", "POST", "/users/create", nil, `null`, 400, bNotHash},

		{"auth", "GET", "/users/auth", alice, "", 200, `{"authorized":"OK"}`},
		{"auth again (cached)", "GET", "/users/auth", alice, "", 200, `{"authorized":"OK"}`},
		{"auth no headers", "GET", "/users/auth", hdrs("", ""), "", 401, bUnauthorized},
		{"auth no key", "GET", "/users/auth", hdrs("alice", ""), "", 401, bUnauthorized},
		{"auth empty key", "GET", "/users/auth", hdrs("alice", "", "x-auth-key", ""), "", 401, bUnauthorized},
		{"auth empty user", "GET", "/users/auth", hdrs("", k1, "x-auth-user", ""), "", 401, bUnauthorized},
		{"auth colon user", "GET", "/users/auth", hdrs("ali:ce", k1), "", 401, bUnauthorized},
		{"auth unknown user", "GET", "/users/auth", hdrs("nobody", k1), "", 401, bUnauthorized},
		{"auth wrong key", "GET", "/users/auth", hdrs("alice", kb), "", 401, bUnauthorized},
		{"auth key case-sensitive", "GET", "/users/auth", hdrs("alice", strings.ToUpper(k1)), "", 401, bUnauthorized},
		{"auth wrong method", "POST", "/users/auth", alice, "", 404, ""},
		{"unknown route", "GET", "/nope", alice, "", 404, ""},

		// PUT /syncs/progress: framing, then auth, then fields.
		{"push bad JSON before auth", "PUT", "/syncs/progress", nil, "{", 400, bBadJSON},
		{"push array before auth", "PUT", "/syncs/progress", nil, "[]", 400, bNotHash},
		{"push no auth", "PUT", "/syncs/progress", nil, `{"document":"d","progress":"1","percentage":1,"device":"x"}`, 401, bUnauthorized},
		{"push auth before fields", "PUT", "/syncs/progress", hdrs("", ""), `{}`, 401, bUnauthorized},
		{"push no document", "PUT", "/syncs/progress", alice, `{"progress":"1","percentage":1,"device":"x"}`, 403, bNoDocument},
		{"push empty document", "PUT", "/syncs/progress", alice, `{"document":"","progress":"1","percentage":1,"device":"x"}`, 403, bNoDocument},
		{"push document number", "PUT", "/syncs/progress", alice, `{"document":5,"progress":"1","percentage":1,"device":"x"}`, 403, bNoDocument},
		{"push document null", "PUT", "/syncs/progress", alice, `{"document":null,"progress":"1","percentage":1,"device":"x"}`, 403, bNoDocument},
		{"push document colon", "PUT", "/syncs/progress", alice, `{"document":"a:b","progress":"1","percentage":1,"device":"x"}`, 403, bNoDocument},
		{"push document too long", "PUT", "/syncs/progress", alice, `{"document":"` + strings.Repeat("d", maxDocumentIDLen+1) + `","progress":"1","percentage":1,"device":"x"}`, 403, bNoDocument},
		{"push document checked first", "PUT", "/syncs/progress", alice, `{"percentage":"x"}`, 403, bNoDocument},
		{"push empty body", "PUT", "/syncs/progress", alice, ``, 403, bNoDocument},
		{"push no percentage", "PUT", "/syncs/progress", alice, `{"document":"d","progress":"1","device":"x"}`, 403, bInvalid},
		{"push percentage null", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":null,"progress":"1","device":"x"}`, 403, bInvalid},
		{"push percentage text", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":"abc","progress":"1","device":"x"}`, 403, bInvalid},
		{"push percentage hex", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":"0x10","progress":"1","device":"x"}`, 403, bInvalid},
		{"push percentage inf", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":"inf","progress":"1","device":"x"}`, 403, bInvalid},
		{"push percentage overflow", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1e999,"progress":"1","device":"x"}`, 403, bInvalid},
		{"push percentage bool", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":true,"progress":"1","device":"x"}`, 403, bInvalid},
		{"push no progress", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1,"device":"x"}`, 403, bInvalid},
		{"push progress null", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1,"progress":null,"device":"x"}`, 403, bInvalid},
		{"push progress object", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1,"progress":{},"device":"x"}`, 403, bInvalid},
		{"push no device", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1,"progress":"1"}`, 403, bInvalid},
		{"push device null", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1,"progress":"1","device":null}`, 403, bInvalid},
		{"push device number", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1,"progress":"1","device":5}`, 403, bInvalid},
		{"push device_id number", "PUT", "/syncs/progress", alice, `{"document":"d","percentage":1,"progress":"1","device":"x","device_id":5}`, 403, bInvalid},

		{"push", "PUT", "/syncs/progress", alice, push(`{"document":"doc-1.a","progress":"56","percentage":0.32,"device":"my kpw"}`), 200, `{"document":"doc-1.a","timestamp":<ts>}`},
		{"pull only stored keys", "GET", "/syncs/progress/doc-1.a", alice, "", 200, `{"document":"doc-1.a","percentage":0.32,"progress":"56","device":"my kpw","timestamp":<ts>}`},
		{"push string percentage, number progress, extras", "PUT", "/syncs/progress", alice,
			`{"document":"doc-1.a","progress":57,"percentage":"0.5","device":"my kpw","device_id":"DEV1","timestamp":1,"metadata":{"title":"T"},"identifiers":[{"type":"content","value":"x"}],"extra":true}`,
			200, `{"document":"doc-1.a","timestamp":<ts>}`},
		{"pull with device_id", "GET", "/syncs/progress/doc-1.a", alice, "", 200, `{"document":"doc-1.a","percentage":0.5,"progress":"57","device":"my kpw","device_id":"DEV1","timestamp":<ts>}`},
		{"push lower percentage, empty device, no device_id", "PUT", "/syncs/progress", alice, `{"document":"doc-1.a","progress":"/body/DocFragment[1]","percentage":0,"device":""}`, 200, `{"document":"doc-1.a","timestamp":<ts>}`},
		{"pull: last write wins, device_id kept", "GET", "/syncs/progress/doc-1.a", alice, "", 200, `{"document":"doc-1.a","percentage":0,"progress":"/body/DocFragment[1]","device":"","device_id":"DEV1","timestamp":<ts>}`},
		{"push device_id null, spaced percentage", "PUT", "/syncs/progress", alice, `{"document":"doc-1.a","progress":"9","percentage":" 1e-1 ","device":"kobo","device_id":null}`, 200, `{"document":"doc-1.a","timestamp":<ts>}`},
		{"pull device_id kept after null", "GET", "/syncs/progress/doc-1.a", alice, "", 200, `{"document":"doc-1.a","percentage":0.1,"progress":"9","device":"kobo","device_id":"DEV1","timestamp":<ts>}`},
		{"pull percent-encoded id, ids query ignored", "GET", "/syncs/progress/doc%2D1%2Ea?ids=content:abc,filename:x&x=1", alice, "", 200, `{"document":"doc-1.a","percentage":0.1,"progress":"9","device":"kobo","device_id":"DEV1","timestamp":<ts>}`},
		{"push number progress", "PUT", "/syncs/progress", alice, `{"document":"page","progress":12.0,"percentage":1.5,"device":"pdf"}`, 200, `{"document":"page","timestamp":<ts>}`},
		{"pull number progress as text", "GET", "/syncs/progress/page", alice, "", 200, `{"document":"page","percentage":1.5,"progress":"12","device":"pdf","timestamp":<ts>}`},
		{"push id with slash", "PUT", "/syncs/progress", alice, `{"document":"dir/book_1","progress":"1","percentage":0.01,"device":"d"}`, 200, `{"document":"dir/book_1","timestamp":<ts>}`},
		{"pull id with slash", "GET", "/syncs/progress/dir%2Fbook_1", alice, "", 200, `{"document":"dir/book_1","percentage":0.01,"progress":"1","device":"d","timestamp":<ts>}`},
		{"push id ..", "PUT", "/syncs/progress", alice, `{"document":"..","progress":"1","percentage":0.01,"device":"d"}`, 200, `{"document":"..","timestamp":<ts>}`},
		{"pull id .. percent-encoded", "GET", "/syncs/progress/%2E%2E", alice, "", 200, `{"document":"..","percentage":0.01,"progress":"1","device":"d","timestamp":<ts>}`},
		{"push id with spaces and unicode", "PUT", "/syncs/progress", alice, `{"document":"My Book é?#","progress":"1","percentage":0.01,"device":"d"}`, 200, `{"document":"My Book é?#","timestamp":<ts>}`},
		{"pull id with spaces and unicode", "GET", "/syncs/progress/My%20Book%20%C3%A9%3F%23", alice, "", 200, `{"document":"My Book é?#","percentage":0.01,"progress":"1","device":"d","timestamp":<ts>}`},
		{"pull unknown document", "GET", "/syncs/progress/unknown", alice, "", 200, `{}`},
		{"pull empty id", "GET", "/syncs/progress/", alice, "", 403, bNoDocument},
		{"pull colon id", "GET", "/syncs/progress/a%3Ab", alice, "", 403, bNoDocument},
		{"pull no auth", "GET", "/syncs/progress/doc-1.a", hdrs("", ""), "", 401, bUnauthorized},
		{"pull no auth, bad id: auth first", "GET", "/syncs/progress/a%3Ab", hdrs("", ""), "", 401, bUnauthorized},
		{"users are isolated", "GET", "/syncs/progress/doc-1.a", bob, "", 200, `{}`},

		// DELETE /users/me: syntax, existence, key.
		{"delete unknown user, any key", "DELETE", "/users/me", hdrs("nobody", "whatever"), "", 404, bNotFound},
		{"delete glob user", "DELETE", "/users/me", hdrs("*", "whatever"), "", 404, bNotFound},
		{"delete no headers", "DELETE", "/users/me", hdrs("", ""), "", 401, bUnauthorized},
		{"delete colon user", "DELETE", "/users/me", hdrs("a:b", "k"), "", 401, bUnauthorized},
		{"delete empty key", "DELETE", "/users/me", hdrs("bob", "", "x-auth-key", ""), "", 401, bUnauthorized},
		{"delete wrong key", "DELETE", "/users/me", hdrs("bob", k1), "", 401, bUnauthorized},

		// PUT /users/password: framing, syntax, field, key.
		{"password no headers", "PUT", "/users/password", hdrs("", ""), `{"password":"x"}`, 401, bUnauthorized},
		{"password array", "PUT", "/users/password", alice, `[]`, 400, bNotHash},
		{"password field before key", "PUT", "/users/password", hdrs("alice", "wrong"), `{}`, 403, bInvalid},
		{"password empty", "PUT", "/users/password", alice, `{"password":""}`, 403, bInvalid},
		{"password number", "PUT", "/users/password", alice, `{"password":5}`, 403, bInvalid},
		{"password wrong key", "PUT", "/users/password", hdrs("alice", kb), `{"password":"` + k2 + `"}`, 401, bUnauthorized},
		{"password unknown user", "PUT", "/users/password", hdrs("nobody", kb), `{"password":"` + k2 + `"}`, 401, bUnauthorized},
		{"password change", "PUT", "/users/password", alice, `{"password":"` + k2 + `"}`, 200, `{"updated":true}`},
		{"old key fails", "GET", "/users/auth", alice, "", 401, bUnauthorized},
		{"new key works", "GET", "/users/auth", hdrs("alice", k2), "", 200, `{"authorized":"OK"}`},
		{"documents kept", "GET", "/syncs/progress/page", hdrs("alice", k2), "", 200, `{"document":"page","percentage":1.5,"progress":"12","device":"pdf","timestamp":<ts>}`},
		{"push with old key", "PUT", "/syncs/progress", alice, `{"document":"page","progress":"1","percentage":1,"device":"x"}`, 401, bUnauthorized},

		{"delete", "DELETE", "/users/me", hdrs("alice", k2), "", 200, `{"deleted":true}`},
		{"deleted: auth fails", "GET", "/users/auth", hdrs("alice", k2), "", 401, bUnauthorized},
		{"deleted: delete again", "DELETE", "/users/me", hdrs("alice", k2), "", 404, bNotFound},
		{"recreate", "POST", "/users/create", nil, `{"username":"alice","password":"` + k1 + `"}`, 201, `{"username":"alice"}`},
		{"documents gone", "GET", "/syncs/progress/page", alice, "", 200, `{}`},
		{"documents gone 2", "GET", "/syncs/progress/doc-1.a", alice, "", 200, `{}`},
		{"other users untouched", "GET", "/users/auth", bob, "", 200, `{"authorized":"OK"}`},

		// Lenient Accept (the default).
		{"lenient: no Accept", "GET", "/users/auth", hdrs("bob", kb, "Accept", "<none>"), "", 200, `{"authorized":"OK"}`},
		{"lenient: */*", "GET", "/users/auth", hdrs("bob", kb, "Accept", "*/*"), "", 200, `{"authorized":"OK"}`},
		{"lenient: application/json", "GET", "/users/auth", hdrs("bob", kb, "Accept", "application/json"), "", 200, `{"authorized":"OK"}`},
		{"lenient: v2", "GET", "/users/auth", hdrs("bob", kb, "Accept", "application/vnd.koreader.v2+json"), "", 200, `{"authorized":"OK"}`},
	})

	// Body cap.
	big := `{"document":"d","progress":"` + strings.Repeat("p", maxBodyBytes) + `","percentage":1,"device":"x"}`
	if r := e.do("PUT", "/syncs/progress", bob, big); r.status != 413 || r.body != bBadJSON {
		t.Errorf("oversized body: %d %s", r.status, r.body)
	}
}

func testKOReaderAccept(t *testing.T, store Store) {
	strict := newHTTPEnv(t, store, envOpt{mod: func(o *Options) { o.StrictAccept = true; o.RegistrationClosed = true }})
	v1 := "application/vnd.koreader.v1+json"
	strict.runRows([]kRow{
		{"strict: no Accept", "GET", "/healthcheck", nil, "", 412, bAccept100},
		{"strict: empty Accept", "GET", "/healthcheck", map[string]string{"Accept": ""}, "", 412, bAccept101},
		{"strict: */*", "GET", "/healthcheck", map[string]string{"Accept": "*/*"}, "", 412, bAccept101},
		{"strict: application/json", "GET", "/healthcheck", map[string]string{"Accept": "application/json"}, "", 412, bAccept101},
		{"strict: v2", "GET", "/healthcheck", map[string]string{"Accept": "application/vnd.koreader.v2+json"}, "", 412, bAccept102},
		{"strict: v10", "GET", "/healthcheck", map[string]string{"Accept": "application/vnd.koreader.v10+json"}, "", 412, bAccept102},
		{"strict: v1", "GET", "/healthcheck", map[string]string{"Accept": v1}, "", 200, `{"state":"OK"}`},
		{"strict: v1 with suffix", "GET", "/healthcheck", map[string]string{"Accept": "application/vnd.koreader.v1.x+json"}, "", 200, `{"state":"OK"}`},
		{"strict: Accept before framing", "PUT", "/syncs/progress", nil, "{", 412, bAccept100},
		{"strict: Accept before auth", "GET", "/users/auth", map[string]string{"Accept": "*/*"}, "", 412, bAccept101},
		{"strict: Accept before closed registration", "POST", "/users/create", nil, `{"username":"z","password":"z"}`, 412, bAccept100},
		{"closed: bad body", "POST", "/users/create", map[string]string{"Accept": v1}, "{", 402, bClosed},
		{"closed: array body", "POST", "/users/create", map[string]string{"Accept": v1}, "[]", 402, bClosed},
		{"closed: valid body", "POST", "/users/create", map[string]string{"Accept": v1}, `{"username":"zed","password":"z"}`, 402, bClosed},
		{"strict: other routes work", "GET", "/syncs/progress/x", map[string]string{"Accept": v1}, "", 401, bUnauthorized},
	})
	closed := newHTTPEnv(t, store, envOpt{mod: func(o *Options) { o.RegistrationClosed = true }})
	closed.runRows([]kRow{
		{"closed lenient: no Accept, bad body", "POST", "/users/create", nil, "{", 402, bClosed},
		{"closed lenient: valid body", "POST", "/users/create", nil, `{"username":"zed","password":"z"}`, 402, bClosed},
	})
}

// testPasswordRace: two changes with the same current key; exactly one
// wins, and the winner's key is the one that works.
func testPasswordRace(t *testing.T, e *httpEnv) {
	old := md5hex("race-0")
	if r := e.do("POST", "/users/create", nil, `{"username":"racer","password":"`+old+`"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	keys := []string{md5hex("race-1"), md5hex("race-2")}
	statuses := make([]int, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			statuses[i] = e.do("PUT", "/users/password", hdrs("racer", old), `{"password":"`+keys[i]+`"}`).status
		})
	}
	wg.Wait()
	winner := -1
	for i, s := range statuses {
		switch s {
		case 200:
			if winner >= 0 {
				t.Fatalf("both changes won: %v", statuses)
			}
			winner = i
		case 401:
		default:
			t.Fatalf("statuses %v, want one 200 and one 401", statuses)
		}
	}
	if winner < 0 {
		t.Fatalf("statuses %v, want one 200 and one 401", statuses)
	}
	if r := e.do("GET", "/users/auth", hdrs("racer", keys[winner]), ""); r.status != 200 {
		t.Fatalf("winner's key: %d", r.status)
	}
	if r := e.do("GET", "/users/auth", hdrs("racer", keys[1-winner]), ""); r.status != 401 {
		t.Fatalf("loser's key: %d", r.status)
	}
}

// expectText checks a text/plain answer.
func expectText(t *testing.T, what string, r resp, status int, body string) {
	t.Helper()
	if r.status != status || r.body != body || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("%s: %d %q (%s), want %d %q text/plain", what, r.status, r.body, r.header.Get("Content-Type"), status, body)
	}
}

func TestKOsyncAPI(t *testing.T) {
	for _, b := range httpBackends {
		t.Run(b.name, func(t *testing.T) {
			e := newHTTPEnv(t, b.open(t), envOpt{})
			testKOsyncAPI(t, e)
		})
	}
}

func testKOsyncAPI(t *testing.T, e *httpEnv) {
	key := md5hex("ann")
	ann := hdrs("ann", key)
	if r := e.do("POST", "/users/create", nil, `{"username":"ann","password":"`+key+`"}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	sink := e.subscribe("ann")
	other := e.subscribe("bob")

	r := e.do("GET", "/api/documents.all", ann, "")
	if r.status != 200 || r.body != `[]` || r.header.Get("Content-Type") != "application/json" || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("empty documents.all: %d %q %v", r.status, r.body, r.header)
	}
	expectText(t, "documents.all without auth", e.do("GET", "/api/documents.all", nil, ""), 401, "Unauthorized")
	expectText(t, "documents.all wrong key", e.do("GET", "/api/documents.all", hdrs("ann", md5hex("x")), ""), 401, "Unauthorized")
	if r := e.do("GET", "/api/documents.all", nil, ""); r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Error("no CORS header on a 401")
	}

	// A name-only document.
	r = e.do("PUT", "/api/documents.update", ann, `{"document":"d1","pretty_name":"Book One","owner_id":"mallory","timestamp":5,"history":[1]}`)
	if r.status != 204 || r.body != "" {
		t.Fatalf("documents.update: %d %q", r.status, r.body)
	}
	checkAnnounce := func(what, user, id string, got []string) {
		t.Helper()
		d, err := e.store.Document(context.Background(), user, id)
		if err != nil || d == nil {
			t.Fatalf("%s: stored document: %v %v", what, d, err)
		}
		want := userChannel(user) + " " + string(announceFrame(d))
		if len(got) != 1 || got[0] != want {
			t.Fatalf("%s: announces\n got %q\nwant [%q]", what, got, want)
		}
	}
	checkAnnounce("documents.update", "ann", "d1", sink.take())
	r = e.do("GET", "/api/documents.all", ann, "")
	if want := `[{"id":"d1","progress":"","percentage":0,"device":"","device_id":"","document":"d1","timestamp":0,"pretty_name":"Book One","history":[]}]`; r.body != want {
		t.Fatalf("documents.all:\n got %s\nwant %s", r.body, want)
	}
	e.runRows([]kRow{{"KOReader pull of a name-only document", "GET", "/syncs/progress/d1", ann, "", 200, `{}`}})

	// KOReader pushes keep the name; history grows oldest first; a rename
	// alone adds no entry (each entry is the state before a progress write).
	e.runRows([]kRow{
		{"push 1", "PUT", "/syncs/progress", ann, `{"document":"d1","progress":"1","percentage":0.1,"device":"kindle","device_id":"K"}`, 200, `{"document":"d1","timestamp":<ts>}`},
	})
	checkAnnounce("KOReader push", "ann", "d1", sink.take())
	e.runRows([]kRow{
		{"push 2", "PUT", "/syncs/progress", ann, `{"document":"d1","progress":"2","percentage":0.2,"device":"kindle"}`, 200, `{"document":"d1","timestamp":<ts>}`},
	})
	checkAnnounce("KOReader push 2", "ann", "d1", sink.take())
	if r := e.do("PUT", "/api/documents.update", ann, `{"id":"d1","pretty_name":"Renamed"}`); r.status != 204 {
		t.Fatalf("rename: %d", r.status)
	}
	sink.take()
	if r := e.do("PUT", "/api/documents.update", ann, `{"document":"d1","id":"d1","progress":"3","percentage":"0.3","device":"web","pretty_name":""}`); r.status != 204 {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	sink.take()
	for _, id := range []string{"b0", "a0"} {
		if r := e.do("PUT", "/api/documents.update", ann, `{"document":"`+id+`"}`); r.status != 204 {
			t.Fatalf("create %s: %d", id, r.status)
		}
	}
	if got := sink.take(); len(got) != 2 {
		t.Fatalf("announces of two creations: %q", got)
	}
	if got := other.take(); len(got) != 0 {
		t.Fatalf("another user received announces: %q", got)
	}
	now := time.Now().Unix()
	r = e.do("GET", "/api/documents.all", ann, "")
	d1 := `{"id":"d1","progress":"3","percentage":0.3,"device":"web","device_id":"K","document":"d1","timestamp":<ts>,"pretty_name":"Renamed","history":[` +
		`{"progress":"1","percentage":0.1,"device":"kindle","device_id":"K","document":"d1","timestamp":<ts>,"pretty_name":"Book One"},` +
		`{"progress":"2","percentage":0.2,"device":"kindle","device_id":"K","document":"d1","timestamp":<ts>,"pretty_name":"Renamed"}]}`
	empty := func(id string) string {
		return `{"id":"` + id + `","progress":"","percentage":0,"device":"","device_id":"","document":"` + id + `","timestamp":0,"pretty_name":"","history":[]}`
	}
	if want := "[" + d1 + "," + empty("a0") + "," + empty("b0") + "]"; !matchBody(r.body, want, now-60, now) {
		t.Fatalf("documents.all (newest first, ties by id):\n got %s\nwant %s", r.body, want)
	}
	e.runRows([]kRow{{"KOReader pull after updates", "GET", "/syncs/progress/d1", ann, "", 200, `{"document":"d1","percentage":0.3,"progress":"3","device":"web","device_id":"K","timestamp":<ts>}`}})

	// Bad input.
	for _, body := range []string{"{", "[]", "5", "null", "", "{}", `{"document":"x","id":"y"}`, `{"document":"a:b"}`, `{"document":""}`, `{"document":5}`,
		`{"document":"x","percentage":"abc"}`, `{"document":"x","progress":true}`, `{"document":"x","device":5}`, `{"document":"x","device_id":[]}`, `{"document":"x","pretty_name":1}`} {
		expectText(t, "bad update "+body, e.do("PUT", "/api/documents.update", ann, body), 400, "Bad Request")
	}
	expectText(t, "bad update without auth", e.do("PUT", "/api/documents.update", nil, "{"), 401, "Unauthorized")
	expectText(t, "oversized update", e.do("PUT", "/api/documents.update", ann, `{"document":"x","progress":"`+strings.Repeat("p", maxBodyBytes)+`"}`), 413, "Request Entity Too Large")
	if got := sink.take(); len(got) != 0 {
		t.Fatalf("refused updates announced: %q", got)
	}

	// JWTs.
	r = e.do("GET", "/api/auth.jwt", ann, "")
	if r.status != 200 || !jwtShape.MatchString(r.body) || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("auth.jwt: %d %q %s", r.status, r.body, r.header.Get("Content-Type"))
	}
	tok := r.body
	if user, _, err := e.svc.VerifyJWT(tok); err != nil || user != "ann" {
		t.Fatalf("auth.jwt token: %q %v", user, err)
	}
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	if r := e.do("GET", "/api/documents.all", bearer, ""); r.status != 200 || !strings.HasPrefix(r.body, `[{"id":"d1"`) {
		t.Fatalf("documents.all with Bearer: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/api/documents.all", map[string]string{"Authorization": "bearer " + tok}, ""); r.status != 200 {
		t.Fatalf("lowercase bearer: %d", r.status)
	}
	if r := e.do("PUT", "/api/documents.update", bearer, `{"document":"viaJWT","pretty_name":"J"}`); r.status != 204 {
		t.Fatalf("update with Bearer: %d %s", r.status, r.body)
	}
	checkAnnounce("update with Bearer", "ann", "viaJWT", sink.take())
	badBearer := hdrs("ann", key, "Authorization", "Bearer "+tok[:len(tok)-2]+"xx")
	expectText(t, "bad Bearer does not fall back to headers", e.do("GET", "/api/documents.all", badBearer, ""), 401, "Unauthorized")
	expectText(t, "empty Bearer", e.do("GET", "/api/documents.all", hdrs("ann", key, "Authorization", "Bearer"), ""), 401, "Unauthorized")
	if r := e.do("GET", "/api/documents.all", hdrs("ann", key, "Authorization", "Basic eDp5"), ""); r.status != 200 {
		t.Fatalf("a Basic header falls back to the KOReader headers: %d", r.status)
	}
	// KOReader endpoints do not take JWTs.
	e.runRows([]kRow{{"Part A ignores Bearer", "GET", "/users/auth", bearer, "", 401, bUnauthorized}})

	// /api/ws
	r = e.do("GET", "/api/ws", ann, "")
	prefix := "ws://" + e.srv.Listener.Addr().String() + "/api/ws/"
	loc := r.header.Get("Location")
	if r.status != 303 || !strings.HasPrefix(loc, prefix) || r.body != loc || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") ||
		r.header.Get("Connection") != "" || r.header.Get("Upgrade") != "" {
		t.Fatalf("/api/ws: %d Location %q body %q headers %v", r.status, loc, r.body, r.header)
	}
	if user, _, err := e.svc.VerifyJWT(strings.TrimPrefix(loc, prefix)); err != nil || user != "ann" {
		t.Fatalf("/api/ws token: %q %v", user, err)
	}
	if r := e.do("GET", "/api/ws", bearer, ""); r.status != 303 {
		t.Fatalf("/api/ws with Bearer: %d", r.status)
	}
	expectText(t, "/api/ws unauthenticated", e.do("GET", "/api/ws", nil, ""), 401, "Unauthorized")

	// CORS preflight.
	r = e.do("OPTIONS", "/api/documents.update", map[string]string{"Origin": "https://web.example", "Access-Control-Request-Method": "PUT",
		"Access-Control-Request-Headers": "authorization,content-type"}, "")
	if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}
	methods, headers := r.header.Get("Access-Control-Allow-Methods"), strings.ToLower(r.header.Get("Access-Control-Allow-Headers"))
	for _, m := range []string{"GET", "PUT"} {
		if !strings.Contains(methods, m) {
			t.Errorf("preflight methods %q lack %s", methods, m)
		}
	}
	for _, h := range []string{"authorization", "content-type", "x-auth-user", "x-auth-key"} {
		if !strings.Contains(headers, h) {
			t.Errorf("preflight headers %q lack %s", headers, h)
		}
	}

	// A password change revokes the JWTs issued before it.
	newKey := md5hex("ann-2")
	if r := e.do("PUT", "/users/password", ann, `{"password":"`+newKey+`"}`); r.status != 200 {
		t.Fatalf("password change: %d %s", r.status, r.body)
	}
	expectText(t, "Bearer after password change", e.do("GET", "/api/documents.all", bearer, ""), 401, "Unauthorized")
	if _, _, err := e.svc.VerifyJWT(tok); err == nil {
		t.Fatal("a JWT survived the password change")
	}
	time.Sleep(2 * time.Millisecond)
	r = e.do("GET", "/api/auth.jwt", hdrs("ann", newKey), "")
	if r.status != 200 {
		t.Fatalf("auth.jwt with the new key: %d", r.status)
	}
	fresh := map[string]string{"Authorization": "Bearer " + r.body}
	if r := e.do("GET", "/api/documents.all", fresh, ""); r.status != 200 {
		t.Fatalf("a JWT issued after the change: %d", r.status)
	}
	// Deletion revokes too.
	if r := e.do("DELETE", "/users/me", hdrs("ann", newKey), ""); r.status != 200 {
		t.Fatalf("delete: %d", r.status)
	}
	expectText(t, "Bearer after deletion", e.do("GET", "/api/documents.all", fresh, ""), 401, "Unauthorized")
}

func TestWSRedirectScheme(t *testing.T) {
	store := httpBackends[0].open(t)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	cases := []struct {
		name string
		o    envOpt
		hdr  map[string]string
		want string // Location prefix; "<host>" is the test server's address
	}{
		{"plain", envOpt{}, nil, "ws://<host>/api/ws/"},
		{"TLS", envOpt{tls: true}, nil, "wss://<host>/api/ws/"},
		{"untrusted proxy headers ignored", envOpt{}, map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}, "ws://<host>/api/ws/"},
		{"proxy outside the trusted range", envOpt{mod: func(o *Options) { o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }},
			map[string]string{"X-Forwarded-Proto": "https"}, "ws://<host>/api/ws/"},
		{"trusted proxy", envOpt{mod: func(o *Options) { o.TrustedProxies = loopback }},
			map[string]string{"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "sync.example.org"}, "wss://sync.example.org/api/ws/"},
		{"trusted proxy, http", envOpt{mod: func(o *Options) { o.TrustedProxies = loopback }},
			map[string]string{"X-Forwarded-Proto": "http"}, "ws://<host>/api/ws/"},
		{"trusted proxy, bad host ignored", envOpt{mod: func(o *Options) { o.TrustedProxies = loopback }},
			map[string]string{"X-Forwarded-Host": "a b/c"}, "ws://<host>/api/ws/"},
		{"trusted proxy, Forwarded", envOpt{mod: func(o *Options) { o.TrustedProxies = loopback }},
			map[string]string{"Forwarded": `for=1.2.3.4;proto=https;host="fw.example:8443", for=5.6.7.8`}, "wss://fw.example:8443/api/ws/"},
		{"PublicURL https", envOpt{mod: func(o *Options) { o.PublicURL = "https://sync.example.com" }}, nil, "wss://sync.example.com/api/ws/"},
		{"PublicURL with a path", envOpt{mod: func(o *Options) { o.PublicURL = "https://example.com/kosync/" }}, nil, "wss://example.com/kosync/api/ws/"},
		{"PublicURL http", envOpt{mod: func(o *Options) { o.PublicURL = "http://sync.example.com:8080" }}, map[string]string{"X-Forwarded-Proto": "https"}, "ws://sync.example.com:8080/api/ws/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newHTTPEnv(t, store, c.o)
			tok, err := e.svc.IssueJWT("wsuser")
			if err != nil {
				t.Fatal(err)
			}
			if err := store.CreateUser(context.Background(), "wsuser", "h"); err != nil && !errors.Is(err, ErrUserExists) {
				t.Fatal(err)
			}
			hdr := map[string]string{"Authorization": "Bearer " + tok}
			for k, v := range c.hdr {
				hdr[k] = v
			}
			r := e.do("GET", "/api/ws", hdr, "")
			want := strings.ReplaceAll(c.want, "<host>", e.srv.Listener.Addr().String())
			if loc := r.header.Get("Location"); r.status != 303 || !strings.HasPrefix(loc, want) || r.body != loc {
				t.Fatalf("%d Location %q body %q, want prefix %q", r.status, loc, r.body, want)
			}
		})
	}
}

func TestUpdateDocumentInput(t *testing.T) {
	e := newHTTPEnv(t, httpBackends[0].open(t), envOpt{})
	ctx := context.Background()
	if err := e.store.CreateUser(ctx, "u", "h"); err != nil {
		t.Fatal(err)
	}
	sink := e.subscribe("u")
	const (
		notObject = "Invalid argument 'document': expected an object"
		badID     = "Invalid argument 'document': missing or conflicting document id"
	)
	wrong := func(f string) string { return "Invalid argument 'document': field '" + f + "' has the wrong type" }
	for _, c := range []struct{ in, want string }{
		{`5`, notObject}, {`"x"`, notObject}, {`[]`, notObject}, {`null`, notObject}, {``, notObject}, {`{`, notObject},
		{`{}`, badID}, {`{"document":""}`, badID}, {`{"document":"a:b"}`, badID}, {`{"document":1}`, badID},
		{`{"document":"a","id":"b"}`, badID}, {`{"document":"a","id":1}`, badID}, {`{"id":""}`, badID},
		{`{"document":null,"id":null}`, badID},
		{`{"document":"a","progress":[]}`, wrong("progress")},
		{`{"document":"a","percentage":"x"}`, wrong("percentage")},
		{`{"document":"a","percentage":{}}`, wrong("percentage")},
		{`{"document":"a","device":1}`, wrong("device")},
		{`{"document":"a","device_id":true}`, wrong("device_id")},
		{`{"document":"a","pretty_name":2}`, wrong("pretty_name")},
	} {
		_, err := e.svc.UpdateDocument(ctx, "u", json.RawMessage(c.in))
		var ie *InputError
		if !errors.As(err, &ie) || ie.Message != c.want || err.Error() != c.want {
			t.Errorf("UpdateDocument(%s) = %v, want InputError %q", c.in, err, c.want)
		}
	}
	if got := sink.take(); len(got) != 0 {
		t.Fatalf("refused input announced: %q", got)
	}

	got, err := e.svc.UpdateDocument(ctx, "u", json.RawMessage(`{"id":"doc","progress":7,"percentage":"0.25","device":"d","device_id":null,"owner_id":"x","timestamp":1,"history":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "doc" || got.Document != "doc" || got.Progress != "7" || got.Percentage != 0.25 || got.Device != "d" || got.History != nil ||
		got.Timestamp < time.Now().Unix()-60 {
		t.Fatalf("result %+v", got)
	}
	d, _ := e.store.Document(ctx, "u", "doc")
	if b, _ := json.Marshal(got); string(announceFrame(d)) != `{"type":"pubsub","payload":{"for_topic":"user.documents","data":`+string(b)+`}}` {
		t.Fatalf("the reply differs from the announce: %s vs %s", b, announceFrame(d))
	}
	if ann := sink.take(); len(ann) != 1 || ann[0] != userChannel("u")+" "+string(announceFrame(d)) {
		t.Fatalf("announces %q", ann)
	}
	all, err := e.svc.AllDocuments(ctx, "u")
	if err != nil || len(all) != 1 || all[0].History == nil {
		t.Fatalf("AllDocuments = %+v, %v (history must be an array)", all, err)
	}
	if _, err := e.svc.UpdateDocument(ctx, "gone", json.RawMessage(`{"document":"x"}`)); !errors.Is(err, errUnauthorized) {
		t.Fatalf("unknown user: %v, want errUnauthorized", err)
	}
	if docs, err := e.svc.AllDocuments(ctx, "nobody"); err != nil || docs == nil || len(docs) != 0 {
		t.Fatalf("AllDocuments of nobody = %#v, %v; want an empty non-nil slice", docs, err)
	}
}

// TestAnnounceOrder: one user's announces leave in commit order, however
// many writers there are.
func TestAnnounceOrder(t *testing.T) {
	e := newHTTPEnv(t, httpBackends[0].open(t), envOpt{})
	ctx := context.Background()
	if err := e.store.CreateUser(ctx, "o", "h"); err != nil {
		t.Fatal(err)
	}
	sink := e.subscribe("o")
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := e.svc.UpdateDocument(ctx, "o", json.RawMessage(`{"document":"d","progress":"`+strconv.Itoa(i)+`"}`)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got := sink.take()
	if len(got) != 20 {
		t.Fatalf("%d announces, want 20", len(got))
	}
	// Each announce's document has one more history entry than the
	// previous one: the order of commits.
	d, _ := e.store.Document(ctx, "o", "d")
	var states []string
	for _, h := range d.History {
		states = append(states, h.Progress)
	}
	states = append(states, *d.Progress)
	if len(states) != 20 {
		t.Fatalf("%d states stored, want 20", len(states))
	}
	for i, a := range got {
		var f struct {
			Payload struct {
				Data APIDocument `json:"data"`
			} `json:"payload"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(a, userChannel("o")+" ")), &f); err != nil {
			t.Fatal(err)
		}
		if f.Payload.Data.Progress != states[i] {
			t.Fatalf("announce %d carries progress %q; commit %d was %q", i, f.Payload.Data.Progress, i, states[i])
		}
	}
}

// failStore fails User with err.
type failStore struct {
	Store
	err error
}

func (f failStore) User(context.Context, string) (User, error) { return User{}, f.err }

func TestStoreErrors(t *testing.T) {
	base := newATStore()
	for _, c := range []struct {
		err       error
		koStatus  int
		koBody    string
		apiStatus int
		apiBody   string
	}{
		{fmt.Errorf("dial: %w", ErrUnavailable), 502, `{"code":1000,"message":"Cannot connect to redis server."}`, 503, "Service Unavailable"},
		{errors.New("disk on fire"), 502, `{"code":2000,"message":"Unknown server error."}`, 500, "Internal Server Error"},
	} {
		e := newHTTPEnv(t, failStore{base, c.err}, envOpt{mod: func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) }})
		e.runRows([]kRow{
			{"auth", "GET", "/users/auth", hdrs("u", "k"), "", c.koStatus, c.koBody},
			{"push", "PUT", "/syncs/progress", hdrs("u", "k"), `{"document":"d","progress":"1","percentage":1,"device":"x"}`, c.koStatus, c.koBody},
			{"create", "POST", "/users/create", nil, `{"username":"u","password":"k"}`, c.koStatus, c.koBody},
			{"delete", "DELETE", "/users/me", hdrs("u", "k"), "", c.koStatus, c.koBody},
		})
		expectText(t, "documents.all", e.do("GET", "/api/documents.all", hdrs("u", "k"), ""), c.apiStatus, c.apiBody)
	}
}

// TestUpdateDocumentHook: the WebSocket's hook runs after the commit and
// before the announce, with the result.
func TestUpdateDocumentHook(t *testing.T) {
	e := newHTTPEnv(t, httpBackends[0].open(t), envOpt{})
	ctx := context.Background()
	if err := e.store.CreateUser(ctx, "w", "h"); err != nil {
		t.Fatal(err)
	}
	sink := e.subscribe("w")
	var hooked APIDocument
	got, err := e.svc.updateDocument(ctx, "w", json.RawMessage(`{"document":"x","progress":"1"}`), func(d APIDocument) {
		if stored, _ := e.store.Document(ctx, "w", "x"); stored == nil {
			t.Error("hook ran before the commit")
		}
		if n := len(sink.take()); n != 0 {
			t.Errorf("hook ran after %d announce(s)", n)
		}
		hooked = d
	})
	if err != nil {
		t.Fatal(err)
	}
	if hooked.ID != "x" || hooked.Progress != "1" || hooked.History != nil || hooked.Timestamp != got.Timestamp {
		t.Fatalf("hook got %+v, result %+v", hooked, got)
	}
	if n := len(sink.take()); n != 1 {
		t.Fatalf("%d announces after the hook, want 1", n)
	}
	if _, err := e.svc.updateDocument(ctx, "w", json.RawMessage(`{}`), func(APIDocument) { t.Error("hook ran for refused input") }); err == nil {
		t.Fatal("refused input accepted")
	}
}
