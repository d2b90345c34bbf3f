package client

import (
	"errors"
	"fmt"
)

// ErrDisconnected is returned by requests made while the client has no
// connection (it is reconnecting), and by requests whose connection dropped
// before the server answered: a Publish may then have been delivered or
// not.
var ErrDisconnected = errors.New("client: disconnected")

// ErrClosed is returned by requests after Close.
var ErrClosed = errors.New("client: closed")

// CloseError is a close the server sent: its code and reason
// (PROTOCOL.md §8).
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("closed by the server: %d %s", e.Code, e.Reason)
}

// Permanent reports whether the code says not to reconnect with the same
// key: 3001 unauthorized, 3002 version mismatch, 3004 revoked.
func (e *CloseError) Permanent() bool {
	return e.Code == 3001 || e.Code == 3002 || e.Code == 3004
}

// ErrNotNative is wrapped by the error of a connection attempt whose
// endpoint upgraded but does not speak the native protocol (no hello, or
// no Pong after the key).
var ErrNotNative = errors.New("client: not a native-protocol endpoint")

// UpgradeError is an HTTP answer other than 101 to the WebSocket upgrade:
// a wrong path (404), a proxy's 502 or 503, an origin refused (403).
type UpgradeError struct {
	StatusCode int
	Status     string // as the server wrote it: "404 Not Found"
	Body       string // its start, trimmed
	err        error
}

func (e *UpgradeError) Error() string {
	s := "client: upgrade refused: HTTP " + e.Status
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

func (e *UpgradeError) Unwrap() error { return e.err }

// ServerError is an Error packet: the server refused a request
// (PROTOCOL.md §7).
type ServerError struct {
	Code int16
	Text string
}

func (e *ServerError) Error() string { return fmt.Sprintf("refused: %d %s", e.Code, e.Text) }
