package kosync

// KOsync JWTs (reference B.2).
//
// HS256 with a key derived from each server secret:
// HMAC-SHA256(secret, "kosync-jwt-v1"). New tokens are signed with the first
// secret's key and verified against all of them, so tokens survive restarts,
// work on every node sharing the secrets, and follow secret rotation (a
// token signed with a retired secret stops verifying once that secret is
// removed). The algorithm is pinned: the header's "alg" only has to say
// HS256, it never selects a method.
//
// Claims: sub = "kosync:" + username (the revocation subject: revoking it
// at T revokes every token of the user issued at or before T), username,
// jti (16 lowercase hex characters, the token.KeyID for revocation by id),
// iat and exp in whole seconds, and iat_ms (see below). Verification
// requires exp (30 s leeway), iat, jti and a sub matching the username,
// then checks the node's revoked set, in memory: it does no I/O and may run
// on an event loop.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/gateway/token"
)

// Whole-second dates. iat and exp are integers, as the many clients that
// decode a NumericDate into an integer need (RFC 7519 also allows
// fractions). Revocation still needs the issue time to the millisecond: a
// subject revocation at T revokes the tokens issued at or before T
// (token.Revoked compares milliseconds), and a token issued in the same
// second but after the revocation (say, right after a password change) must
// live. So the token also carries "iat_ms", the exact issue time in Unix
// milliseconds, which verification uses when present (tokens issued before
// it existed carry a fractional iat instead, read exactly by msDate).
// golang-jwt's process-wide jwt.TimePrecision is left alone: iat and exp are
// encoded and decoded by msDate, never through jwt.NewNumericDate.

// msDate is a NumericDate held in milliseconds: an integer when it is a
// whole second (what issue writes), else three decimals. It is decoded
// without going through a float when it has that form (golang-jwt decodes
// through a float64 and truncates, which can turn x.504 into x.503).
type msDate struct{ ms int64 }

func (d msDate) MarshalJSON() ([]byte, error) {
	sec, frac := d.ms/1000, d.ms%1000
	if frac < 0 {
		sec, frac = sec-1, frac+1000
	}
	if frac == 0 {
		return strconv.AppendInt(nil, sec, 10), nil
	}
	return []byte(fmt.Sprintf("%d.%03d", sec, frac)), nil
}

func (d *msDate) UnmarshalJSON(b []byte) error {
	s := string(b)
	intPart, frac, _ := strings.Cut(s, ".")
	if sec, err := strconv.ParseInt(intPart, 10, 64); err == nil && sec >= 0 && len(frac) <= 9 && allDigits(frac) {
		frac = (frac + "000")[:3]
		ms, _ := strconv.ParseInt(frac, 10, 64)
		d.ms = sec*1000 + ms
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || math.Abs(f) > 1e15 {
		return errBadJWT
	}
	d.ms = int64(math.Round(f * 1000))
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// jwtSubjectPrefix prefixes the username in a KOsync JWT's sub, and so in
// the revocation subject of the user's tokens.
const jwtSubjectPrefix = "kosync:"

// jwtLeeway is the clock skew allowed on exp.
const jwtLeeway = 30 * time.Second

// jwtSubject is the JWT subject, and revocation subject, of user.
func jwtSubject(user string) string { return jwtSubjectPrefix + user }

// errBadJWT is what VerifyJWT returns for a token that is not a valid one
// of ours: malformed, badly signed, expired, missing a claim.
var errBadJWT = errors.New("kosync: invalid token")

// errRevokedJWT is what VerifyJWT returns for a valid but revoked token.
var errRevokedJWT = errors.New("kosync: token revoked")

// jwtKeys signs and verifies KOsync JWTs. Goroutine-safe; immutable after
// newJWTKeys except for now in tests.
type jwtKeys struct {
	keys   [][]byte // derived keys; the first signs
	ttl    time.Duration
	parser *jwt.Parser
	set    jwt.VerificationKeySet // keys, for the parser
	now    func() time.Time
}

func (k *jwtKeys) keyFunc(*jwt.Token) (any, error) { return k.set, nil }

// kosyncClaims is the JWT payload.
type kosyncClaims struct {
	Username string `json:"username"`
	jwt.RegisteredClaims
	// IssuedAtMs and ExpiresMs shadow RegisteredClaims.IssuedAt and
	// ExpiresAt (the shallower field wins in encoding/json); see msDate.
	// issue writes whole seconds.
	IssuedAtMs *msDate `json:"iat,omitempty"`
	ExpiresMs  *msDate `json:"exp,omitempty"`
	// IssuedAtExact is the issue time in Unix milliseconds, for
	// revocation; its second must be iat's. Absent from tokens issued
	// before it existed, whose iat has the milliseconds.
	IssuedAtExact *int64 `json:"iat_ms,omitempty"`
}

// GetExpirationTime gives the validator the exact exp.
func (c *kosyncClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	if c.ExpiresMs == nil {
		return nil, nil
	}
	return &jwt.NumericDate{Time: time.UnixMilli(c.ExpiresMs.ms)}, nil
}

// GetIssuedAt gives the validator the exact iat.
func (c *kosyncClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	if c.IssuedAtMs == nil {
		return nil, nil
	}
	return &jwt.NumericDate{Time: time.UnixMilli(c.IssuedAtMs.ms)}, nil
}

// newJWTKeys derives the JWT keys from secrets.
func newJWTKeys(secrets *token.Secrets, ttl time.Duration) *jwtKeys {
	k := &jwtKeys{keys: secrets.Derive("kosync-jwt-v1"), ttl: ttl, now: time.Now}
	for _, key := range k.keys {
		k.set.Keys = append(k.set.Keys, key)
	}
	k.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(jwtLeeway),
		jwt.WithTimeFunc(func() time.Time { return k.now() }),
	)
	return k
}

// issue signs a new token for user.
func (k *jwtKeys) issue(user string) (string, token.Claims, error) {
	sub := jwtSubject(user)
	if err := token.ValidSubject(sub); err != nil {
		// Registration refuses such names; only imported accounts can
		// have them.
		return "", token.Claims{}, fmt.Errorf("kosync: username unusable in a token: %w", err)
	}
	var c token.Claims
	if _, err := rand.Read(c.ID[:]); err != nil {
		return "", token.Claims{}, fmt.Errorf("kosync: jti: %w", err)
	}
	now := k.now().UnixMilli()
	iat := now / 1000 * 1000                                // whole seconds, down
	exp := (now + k.ttl.Milliseconds() + 999) / 1000 * 1000 // up: the token lives at least ttl
	c.Subject, c.IssuedAt, c.Expires = sub, time.UnixMilli(now).UTC(), time.UnixMilli(exp).Add(jwtLeeway).UTC()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, &kosyncClaims{
		Username: user,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: sub,
			ID:      hex.EncodeToString(c.ID[:]),
		},
		IssuedAtMs:    &msDate{iat},
		ExpiresMs:     &msDate{exp},
		IssuedAtExact: &now,
	})
	s, err := tok.SignedString(k.keys[0])
	if err != nil {
		return "", token.Claims{}, fmt.Errorf("kosync: sign: %w", err)
	}
	return s, c, nil
}

// verify checks tok's signature and claims (not revocation) and returns
// the username and claims; errBadJWT otherwise.
func (k *jwtKeys) verify(tok string) (string, token.Claims, error) {
	var kc kosyncClaims
	_, err := k.parser.ParseWithClaims(tok, &kc, k.keyFunc)
	if err != nil {
		return "", token.Claims{}, errBadJWT
	}
	if kc.Username == "" || kc.Subject != jwtSubject(kc.Username) || kc.IssuedAtMs == nil || kc.ExpiresMs == nil ||
		len(kc.ID) != 16 || strings.ToLower(kc.ID) != kc.ID {
		return "", token.Claims{}, errBadJWT
	}
	id, err := token.ParseKeyID(kc.ID)
	if err != nil {
		return "", token.Claims{}, errBadJWT
	}
	issued, ok := kc.issuedMs()
	if !ok {
		return "", token.Claims{}, errBadJWT
	}
	return kc.Username, token.Claims{ID: id, Subject: kc.Subject, IssuedAt: time.UnixMilli(issued).UTC(),
		Expires: time.UnixMilli(kc.ExpiresMs.ms).Add(jwtLeeway).UTC()}, nil
}

// issuedMs is the exact issue time: iat_ms when present (it must fall in
// iat's second), else iat.
func (c *kosyncClaims) issuedMs() (int64, bool) {
	if c.IssuedAtExact == nil {
		return c.IssuedAtMs.ms, true
	}
	ms := *c.IssuedAtExact
	return ms, ms >= 0 && ms/1000*1000 == c.IssuedAtMs.ms
}

// IssueJWT returns a fresh JWT for user, valid for Options.JWTTTL.
func (s *Service) IssueJWT(user string) (string, error) {
	tok, _, err := s.jwt.issue(user)
	return tok, err
}

// VerifyJWT checks tok (signature, algorithm, expiry with leeway, claims,
// then the revoked set) and returns its user and claims. claims.Expires is
// the token's exp plus the 30 s leeway, the last instant VerifyJWT accepts
// it, so that Revoker.RevokeKey(claims) keeps its record for the token's
// whole usable life. It does no I/O and takes no lock: it may run on an
// event loop. Errors never contain the token.
func (s *Service) VerifyJWT(tok string) (user string, claims token.Claims, err error) {
	user, claims, err = s.jwt.verify(tok)
	if err != nil {
		return "", token.Claims{}, err
	}
	if s.opts.Revoker.Set().Check(claims) {
		return "", token.Claims{}, errRevokedJWT
	}
	return user, claims, nil
}

// Revoked is called by the node for every revocation (token.Revoker's
// onRevoke, whichever node revoked). A subject revocation of
// "kosync:<user>" (account deleted, password changed) evicts the user from
// the verified-key cache. The cache could not authenticate a changed key
// anyway (a hit needs the current stored hash); this only frees memory.
func (s *Service) Revoked(rv token.Revocation) {
	if rv.Kind != token.KindSubject {
		return
	}
	if user, ok := strings.CutPrefix(rv.Subject, jwtSubjectPrefix); ok {
		s.auth.evictUser(user)
	}
}
