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

// ServerError is an Error packet: the server refused a request
// (PROTOCOL.md §7).
type ServerError struct {
	Code int16
	Text string
}

func (e *ServerError) Error() string { return fmt.Sprintf("refused: %d %s", e.Code, e.Text) }
