package kosync

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// newJWTService returns a service over an in-memory user store with a
// started revoker; its Revoked is the revoker's callback.
func newJWTService(t *testing.T, secrets *token.Secrets) (*Service, *token.Revoker) {
	t.Helper()
	fs, err := token.OpenFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	var svc *Service
	rev := token.NewRevoker(fs, nil, func(rv token.Revocation) {
		if svc != nil {
			svc.Revoked(rv)
		}
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); rev.Wait() })
	if err := rev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	svc, err = New(Options{Store: newATStore(), Secrets: secrets, Revoker: rev, Hub: session.NewHub(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return svc, rev
}

var jwtShape = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)

func TestJWTRoundTrip(t *testing.T) {
	svc, _ := newJWTService(t, testSecrets(t))
	tok, err := svc.IssueJWT("alice")
	if err != nil {
		t.Fatal(err)
	}
	if !jwtShape.MatchString(tok) {
		t.Fatalf("token %q is not three base64url segments (it must fit a URL path)", tok)
	}
	user, c, err := svc.VerifyJWT(tok)
	if err != nil || user != "alice" {
		t.Fatalf("VerifyJWT = %q, %v", user, err)
	}
	if c.Subject != "kosync:alice" || c.IssuedAt.IsZero() {
		t.Fatalf("claims %+v", c)
	}
	// exp is rounded up to a whole second: the token lives at least the TTL.
	if life := c.Expires.Sub(c.IssuedAt); life < DefaultJWTTTL+jwtLeeway || life >= DefaultJWTTTL+jwtLeeway+time.Second {
		t.Fatalf("claims %+v: life %v", c, life)
	}
	// The payload: the claims the contract names, jti as 16 lowercase hex,
	// iat and exp as JSON integers, iat_ms the exact issue time.
	seg, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	var payload map[string]any
	if err := json.Unmarshal(seg, &payload); err != nil {
		t.Fatal(err)
	}
	if payload["sub"] != "kosync:alice" || payload["username"] != "alice" || payload["jti"] != hex.EncodeToString(c.ID[:]) {
		t.Fatalf("payload %s", seg)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(payload["jti"].(string)) {
		t.Fatalf("jti %v", payload["jti"])
	}
	dec := json.NewDecoder(bytes.NewReader(seg))
	dec.UseNumber()
	var nums map[string]any
	if err := dec.Decode(&nums); err != nil {
		t.Fatal(err)
	}
	ints := map[string]int64{}
	for _, k := range []string{"iat", "exp", "iat_ms"} {
		n, ok := nums[k].(json.Number)
		if !ok || !regexp.MustCompile(`^[0-9]+$`).MatchString(n.String()) {
			t.Fatalf("%s is %v in %s, want a JSON integer", k, nums[k], seg)
		}
		ints[k], _ = n.Int64()
	}
	if ints["iat"] != c.IssuedAt.Unix() || ints["iat_ms"] != c.IssuedAt.UnixMilli() ||
		ints["exp"] != c.Expires.Add(-jwtLeeway).Unix() {
		t.Fatalf("dates %v in %s, claims %+v", ints, seg, c)
	}
	if jwt.TimePrecision != time.Second {
		t.Fatalf("jwt.TimePrecision = %v: kosync must not change golang-jwt's process-wide setting", jwt.TimePrecision)
	}
	head, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if !strings.Contains(string(head), `"alg":"HS256"`) {
		t.Fatalf("header %s", head)
	}
}

// signRaw signs claims with key (HS256) for forged-token tests.
func signRaw(t *testing.T, claims jwt.Claims, key []byte) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTRejects(t *testing.T) {
	secrets := testSecrets(t)
	svc, _ := newJWTService(t, secrets)
	key := secrets.Derive("kosync-jwt-v1")[0]
	good, err := svc.IssueJWT("alice")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	now := time.Now()
	claims := func(mod func(*kosyncClaims)) *kosyncClaims {
		c := &kosyncClaims{Username: "alice", RegisteredClaims: jwt.RegisteredClaims{
			Subject: "kosync:alice", ID: "0123456789abcdef",
		}, IssuedAtMs: &msDate{now.UnixMilli()}, ExpiresMs: &msDate{now.Add(time.Hour).UnixMilli()}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	if _, _, err := svc.VerifyJWT(signRaw(t, claims(nil), key)); err != nil {
		t.Fatalf("the control token fails: %v", err)
	}
	other := testSecrets(t, 'o').Derive("kosync-jwt-v1")[0]
	cases := map[string]string{
		"empty":             "",
		"garbage":           "not.a.jwt",
		"alg none":          b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".",
		"empty signature":   parts[0] + "." + parts[1] + ".",
		"tampered payload":  parts[0] + "." + b64([]byte(`{"sub":"kosync:bob","username":"bob","jti":"0123456789abcdef","iat":1,"exp":9999999999}`)) + "." + parts[2],
		"other secret":      signRaw(t, claims(nil), other),
		"HS512":             mustSign(t, jwt.SigningMethodHS512, claims(nil), key),
		"expired":           signRaw(t, claims(func(c *kosyncClaims) { c.ExpiresMs = &msDate{now.Add(-time.Minute).UnixMilli()} }), key),
		"no exp":            signRaw(t, claims(func(c *kosyncClaims) { c.ExpiresMs = nil }), key),
		"no iat":            signRaw(t, claims(func(c *kosyncClaims) { c.IssuedAtMs = nil }), key),
		"no jti":            signRaw(t, claims(func(c *kosyncClaims) { c.ID = "" }), key),
		"uppercase jti":     signRaw(t, claims(func(c *kosyncClaims) { c.ID = "0123456789ABCDEF" }), key),
		"sub mismatch":      signRaw(t, claims(func(c *kosyncClaims) { c.Subject = "kosync:bob" }), key),
		"foreign sub":       signRaw(t, claims(func(c *kosyncClaims) { c.Subject = "alice" }), key),
		"no username":       signRaw(t, claims(func(c *kosyncClaims) { c.Username = ""; c.Subject = "kosync:" }), key),
		"iat_ms off iat":    signRaw(t, claims(func(c *kosyncClaims) { ms := c.IssuedAtMs.ms + 1000; c.IssuedAtExact = &ms }), key),
		"negative iat_ms":   signRaw(t, claims(func(c *kosyncClaims) { ms := int64(-1); c.IssuedAtExact = &ms }), key),
		"not yet valid nbf": signRaw(t, claims(func(c *kosyncClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }), key),
	}
	for name, tok := range cases {
		if user, _, err := svc.VerifyJWT(tok); err == nil {
			t.Errorf("%s: accepted as %q", name, user)
		}
	}
	// Within the leeway.
	leeway := signRaw(t, claims(func(c *kosyncClaims) { c.ExpiresMs = &msDate{now.Add(-10 * time.Second).UnixMilli()} }), key)
	if _, _, err := svc.VerifyJWT(leeway); err != nil {
		t.Errorf("expired 10 s ago (leeway 30 s): %v", err)
	}
}

func mustSign(t *testing.T, m jwt.SigningMethod, c jwt.Claims, key []byte) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTRevocation(t *testing.T) {
	svc, rev := newJWTService(t, testSecrets(t))
	ctx := context.Background()
	a1, _ := svc.IssueJWT("alice")
	a2, _ := svc.IssueJWT("alice")
	b1, _ := svc.IssueJWT("bob")

	_, c1, err := svc.VerifyJWT(a1)
	if err != nil {
		t.Fatal(err)
	}
	if err := rev.RevokeID(ctx, c1.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.VerifyJWT(a1); !errors.Is(err, errRevokedJWT) {
		t.Fatalf("revoked by jti: %v", err)
	}
	if _, _, err := svc.VerifyJWT(a2); err != nil {
		t.Fatalf("another token of the user: %v", err)
	}

	// Cache eviction through Revoked.
	svc.auth.remember(svc.auth.mac("alice", keyA), "alice", "h")
	time.Sleep(2 * time.Millisecond)
	if err := rev.RevokeSubject(ctx, "kosync:alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.VerifyJWT(a2); !errors.Is(err, errRevokedJWT) {
		t.Fatalf("revoked by subject: %v", err)
	}
	if _, _, err := svc.VerifyJWT(b1); err != nil {
		t.Fatalf("another user's token: %v", err)
	}
	svc.auth.mu.Lock()
	n := len(svc.auth.byUser["alice"])
	svc.auth.mu.Unlock()
	if n != 0 {
		t.Fatal("a subject revocation did not evict the user from the key cache")
	}
	// Tokens issued after the revocation (a millisecond later) pass.
	time.Sleep(2 * time.Millisecond)
	a3, _ := svc.IssueJWT("alice")
	if _, _, err := svc.VerifyJWT(a3); err != nil {
		t.Fatalf("token issued after the subject revocation: %v", err)
	}
}

func TestJWTRotation(t *testing.T) {
	old, _ := newJWTService(t, testSecrets(t, 'a'))
	rotated, _ := newJWTService(t, testSecrets(t, 'b', 'a'))
	retired, _ := newJWTService(t, testSecrets(t, 'b'))
	tokOld, _ := old.IssueJWT("alice")
	tokNew, _ := rotated.IssueJWT("alice")
	if _, _, err := rotated.VerifyJWT(tokOld); err != nil {
		t.Fatalf("a token of the previous secret after rotation: %v", err)
	}
	if _, _, err := retired.VerifyJWT(tokNew); err != nil {
		t.Fatalf("the new signing secret: %v", err)
	}
	if _, _, err := retired.VerifyJWT(tokOld); err == nil {
		t.Fatal("a token of a removed secret verified")
	}
	if _, _, err := old.VerifyJWT(tokNew); err == nil {
		t.Fatal("a token of an unknown secret verified")
	}
}

func TestJWTUnusableUsername(t *testing.T) {
	svc, _ := newJWTService(t, testSecrets(t))
	if _, err := svc.IssueJWT(strings.Repeat("x", 58)); err == nil {
		t.Fatal("a subject over 64 bytes was issued")
	}
	if _, err := svc.IssueJWT(strings.Repeat("x", 57)); err != nil {
		t.Fatal(err)
	}
}

func TestJWTIssuedAtExact(t *testing.T) {
	base := time.Now().UnixMilli()
	for ms := base; ms < base+2000; ms++ {
		b, _ := msDate{ms}.MarshalJSON()
		var d msDate
		if err := d.UnmarshalJSON(b); err != nil || d.ms != ms {
			t.Fatalf("%s decoded as %d, want %d", b, d.ms, ms)
		}
	}
	var d msDate
	if err := d.UnmarshalJSON([]byte("1770653038")); err != nil || d.ms != 1770653038000 {
		t.Fatalf("integer seconds: %d %v", d.ms, err)
	}
	if err := d.UnmarshalJSON([]byte("1.770653038504e9")); err != nil || d.ms != 1770653038504 {
		t.Fatalf("exponent form: %d %v", d.ms, err)
	}

	// A token issued one millisecond after a subject revocation passes
	// (iat is the same whole second; iat_ms tells them apart); one issued
	// in the same millisecond does not.
	svc, rev := newJWTService(t, testSecrets(t))
	at := time.Now().Add(-time.Minute).Truncate(time.Second).Add(500 * time.Millisecond)
	if err := rev.RevokeSubject(context.Background(), "kosync:carol", at); err != nil {
		t.Fatal(err)
	}
	svc.jwt.now = func() time.Time { return at }
	same, _ := svc.IssueJWT("carol")
	svc.jwt.now = func() time.Time { return at.Add(time.Millisecond) }
	after, _ := svc.IssueJWT("carol")
	svc.jwt.now = time.Now
	if _, _, err := svc.VerifyJWT(same); !errors.Is(err, errRevokedJWT) {
		t.Fatalf("issued at the revocation's millisecond: %v", err)
	}
	if _, _, err := svc.VerifyJWT(after); err != nil {
		t.Fatalf("issued 1 ms after the revocation: %v", err)
	}

	// A token issued before iat_ms existed (fractional iat, no iat_ms)
	// still verifies, with its iat to the millisecond.
	key := testSecrets(t).Derive("kosync-jwt-v1")[0]
	legacy := signRaw(t, &kosyncClaims{Username: "dave", RegisteredClaims: jwt.RegisteredClaims{
		Subject: "kosync:dave", ID: "0123456789abcdef",
	}, IssuedAtMs: &msDate{at.UnixMilli()}, ExpiresMs: &msDate{at.Add(time.Hour).UnixMilli()}}, key)
	if seg, _ := base64.RawURLEncoding.DecodeString(strings.Split(legacy, ".")[1]); !strings.Contains(string(seg), `.500,`) {
		t.Fatalf("legacy payload %s has no fractional iat", seg)
	}
	if _, c, err := svc.VerifyJWT(legacy); err != nil || !c.IssuedAt.Equal(at) {
		t.Fatalf("legacy token: %v, iat %v, want %v", err, c.IssuedAt, at)
	}
}
