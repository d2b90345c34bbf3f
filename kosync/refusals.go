package kosync

import (
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
)

// Reasons of the refusal log lines (a closed set: ratelog collapses
// repeats per reason).
const (
	reasonNoCredentials = "missing_credentials" // no or malformed x-auth headers
	reasonUnknownUser   = "unknown_user"
	reasonWrongKey      = "wrong_key"
	reasonChanged       = "credentials_changed" // changed or deleted meanwhile
	reasonBadJWT        = "bad_jwt"             // malformed, badly signed or expired
	reasonRevokedJWT    = "revoked_jwt"
	reasonRateLimited   = "rate_limited" // 429
	reasonHashBusy      = "hash_busy"    // 503
)

// authReason maps an authentication error to its reason; "" for store
// failures, which are logged as such by koFail and apiFail.
func authReason(err error) string {
	var rl *rateLimitedError
	switch {
	case errors.As(err, &rl):
		return reasonRateLimited
	case errors.Is(err, errHashBusy):
		return reasonHashBusy
	case errors.Is(err, errUnknownUser):
		return reasonUnknownUser
	case errors.Is(err, errWrongKey):
		return reasonWrongKey
	case errors.Is(err, errBadJWT):
		return reasonBadJWT
	case errors.Is(err, errRevokedJWT):
		return reasonRevokedJWT
	case errors.Is(err, errUnauthorized), errors.Is(err, ErrStale), errors.Is(err, ErrUserNotFound):
		return reasonChanged
	}
	return ""
}

// logAuthError logs a failed authentication of an HTTP request for user
// ("" when unknown), if err is one.
func (s *Service) logAuthError(r *http.Request, user string, err error) {
	if reason := authReason(err); reason != "" {
		s.logRefused(r, reason, user)
	}
}

// logRefused logs a refused HTTP request: at info, collapsed per reason,
// with the client address and the user name it claimed, never its key or
// token.
func (s *Service) logRefused(r *http.Request, reason, user string) {
	s.logRefusedFrom(s.clientAddr(r), reason, user)
}

func (s *Service) logRefusedFrom(from netip.Addr, reason, user string, extra ...slog.Attr) {
	msg := "authentication failed"
	if reason == reasonRateLimited || reason == reasonHashBusy {
		msg = "request throttled"
	}
	s.refusals.Refused(msg, "kosync", reason, from, user, extra...)
}
