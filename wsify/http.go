package wsify

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strings"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/session"
)

// Echo's error bodies, byte for byte (its JSON encoder ends with a newline).
var (
	notFoundBody         = []byte("{\"message\":\"Not Found\"}\n")
	methodNotAllowedBody = []byte("{\"message\":\"Method Not Allowed\"}\n")
)

// RegisterHTTP adds wsify's plain HTTP side to the named listener: POST
// /broadcast, 405 for other methods on /broadcast and /ws, and Echo's JSON
// 404 for every other path. Every answer carries wsify's permissive CORS
// headers (Echo's middleware.CORS() with its defaults). Call before Start.
func (p *Protocol) RegisterHTTP(srv *gateway.Server, listener string) {
	srv.HandleHTTPOn(listener, BroadcastPath, cors(http.HandlerFunc(p.serveBroadcast)))
	srv.HandleHTTPOn(listener, Path, cors(http.HandlerFunc(serveWSPlain)))
	srv.SetNotFound(listener, cors(http.HandlerFunc(serveNotFound)))
}

// serveBroadcast is POST /broadcast (§7.1). The checks run in wsify's
// order: key, content type, body; every refusal has an empty body.
func (p *Protocol) serveBroadcast(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, methodNotAllowedBody, http.MethodPost)
		return
	}
	if !p.keyOK(r.URL.Query().Get("key")) {
		p.refusals.Refused("authentication failed", "wsify", "bad_broadcasting_key", remoteAddr(r), "")
		w.WriteHeader(http.StatusForbidden)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBroadcastBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		} else {
			w.WriteHeader(http.StatusBadRequest)
		}
		return
	}
	channel, content, ok := parseBroadcast(body)
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	// With Redis, wait for its answer: a broadcast that does not reach it
	// reaches nobody, this node's members included (doc.go, "Redis").
	if err := p.hub.PublishConfirmed(r.Context(), hubChannel(channel), content, 0); err != nil {
		if r.Context().Err() != nil {
			return // the client left; the broadcast may still go out
		}
		p.warns.Log("http_broadcast", "wsify: POST /broadcast refused by the broker", slog.String("err", err.Error()))
		status := broadcastRefusal(err)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// broadcastRefusal is the status of a refused broadcast: 503 (try again)
// while the node is busy or Redis did not take the broadcast
// (session.ErrBrokerDown wraps ErrBrokerBusy), 413 for content re-encoded past the largest
// payload the node delivers, 500 as upstream for any other broker error.
func broadcastRefusal(err error) int {
	switch {
	case errors.Is(err, session.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, session.ErrBrokerBusy):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// parseBroadcast reads a /broadcast body: an object whose "channel" is a
// string, trimmed and not empty, and whose "content" (or, when absent, the
// README form's args.content) is any JSON value, null when neither is
// given. It returns the channel and the re-encoded content.
func parseBroadcast(body []byte) (string, []byte, bool) {
	var env map[string]json.RawMessage
	if json.Unmarshal(body, &env) != nil || env == nil {
		return "", nil, false
	}
	var channel string
	if json.Unmarshal(env["channel"], &channel) != nil { // absent: empty input, an error
		return "", nil, false
	}
	if channel = strings.TrimSpace(channel); channel == "" {
		return "", nil, false
	}
	raw, ok := env["content"]
	if !ok {
		var args map[string]json.RawMessage
		if json.Unmarshal(env["args"], &args) == nil {
			raw = args["content"]
		}
	}
	content, ok := reencode(raw)
	return channel, content, ok
}

// keyOK compares the given key with the configured one in constant time
// (SHA-256 digests, so the lengths do not leak either).
func (p *Protocol) keyOK(given string) bool {
	a, b := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(p.key))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// serveWSPlain answers requests to /ws that are not upgrades: 405 for a
// method other than GET (Echo's route is GET only), else the gateway's 426.
func serveWSPlain(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, methodNotAllowedBody, http.MethodGet)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Upgrade", "websocket")
	w.Header().Set("Connection", "Upgrade")
	w.WriteHeader(http.StatusUpgradeRequired)
	_, _ = io.WriteString(w, "{\"message\":\"Upgrade Required\"}\n")
}

func serveNotFound(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusNotFound, notFoundBody, "")
}

func writeJSON(w http.ResponseWriter, status int, body []byte, allow string) {
	if allow != "" {
		w.Header().Set("Allow", allow)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// cors adds what Echo's middleware.CORS() with its defaults adds: any
// origin, and preflight requests answered 204.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Add("Vary", "Origin")
		if r.Header.Get("Origin") == "" {
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", "*")
		if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
			next.ServeHTTP(w, r)
			return
		}
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
		h.Set("Access-Control-Allow-Methods", "GET,HEAD,PUT,PATCH,POST,DELETE")
		if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
			h.Set("Access-Control-Allow-Headers", rh)
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// remoteAddr is the peer of r, for the log; the zero Addr if unparsable.
func remoteAddr(r *http.Request) netip.Addr {
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	return ap.Addr()
}
