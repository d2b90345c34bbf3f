// Package test holds end-to-end tests: real gateway nodes on port 0 (and
// real gateway processes), driven through an independent WebSocket client
// (github.com/coder/websocket) and raw TCP, against a private Redis.
package test
