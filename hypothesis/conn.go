package hypothesis

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// closeInvalidMessage: h closes on a frame that is not JSON (§1).
const (
	closeNormal         uint16 = 1000
	reasonInvalidFormat        = "invalid message format"
)

// socket is one /ws connection: its gateway.Handler and, when it is
// authenticated, the session.Sink of its session (revocation closes it).
// Every method runs on the connection's loop.
type socket struct {
	p   *Protocol
	c   *gateway.Conn
	out frameSink // c, where events are written
	st  *loopState

	userid        string // "" when anonymous
	claims        token.Claims
	authenticated bool
	sess          *session.Session

	clientID string // "" when unset
	rows     []row  // nil: no filter (no events)
	stamp    uint64 // the last event sequence number that listed it
}

// OnOpen registers the session of an authenticated socket, makes sure the
// loop has its dispatcher, and arms the keepalive.
func (s *socket) OnOpen(c *gateway.Conn) {
	s.c, s.out = c, c
	s.st = s.p.loopState(c.Loop())
	if s.authenticated {
		c.Authenticated(s.claims.Subject)
		s.sess = session.New(s.claims, s)
		c.Loop().Shard().Add(s.sess)
	}
	c.SetDeadline(time.Now().Add(pingEvery))
}

// OnDeadline pings every 30 s and closes a socket silent for 60 s (§1).
func (s *socket) OnDeadline(c *gateway.Conn) { c.KeepAlive(pingEvery, idleLimit) }

// OnClose leaves the index and the shard.
func (s *socket) OnClose(c *gateway.Conn) {
	s.st.setRows(s, nil)
	if s.sess != nil {
		c.Loop().Shard().Remove(s.sess)
		s.sess = nil
	}
}

// Deliver implements session.Sink. A socket's session subscribes to
// nothing: events reach it through the loop's dispatcher.
func (s *socket) Deliver(*session.Message, *session.EncodeCache) {}

// Subscribed implements session.Sink.
func (s *socket) Subscribed(string) {}

// Close implements session.Sink (revocation: 3004).
func (s *socket) Close(code uint16, reason string) { s.c.Close(code, reason) }

// frameSink is the part of *gateway.Conn the dispatcher writes to.
type frameSink interface {
	Open() bool
	SendFrames(frames []byte)
}

var utf8BOM = []byte("\xef\xbb\xbf")

// OnMessage handles one client message (§3, §4). Text and binary frames
// are both UTF-8 JSON.
func (s *socket) OnMessage(c *gateway.Conn, op ws.OpCode, payload []byte) {
	payload = bytes.TrimPrefix(payload, utf8BOM) // Python's json.loads(bytes) skips it
	if (op == ws.OpBinary && !utf8.Valid(payload)) || !json.Valid(payload) {
		c.Close(closeNormal, reasonInvalidFormat)
		return
	}
	trimmed := bytes.TrimLeft(payload, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return // valid JSON that is not an object: ignored
	}
	var msg map[string]json.RawMessage
	if json.Unmarshal(trimmed, &msg) != nil {
		return
	}
	id, reply := msg["id"]
	reply = reply && isJSONNumber(id)

	typeRaw, hasType := msg["type"]
	var typ string
	if !hasType || string(typeRaw) == "null" {
		if mt, ok := msg["messageType"]; ok {
			if v, _ := jsonString(mt); v == "client_id" {
				typ = "client_id"
			}
		}
		if _, ok := msg["filter"]; ok {
			typ = "filter"
		}
		if typ == "" {
			s.invalidType(reply, id, typeRaw)
			return
		}
	} else {
		switch typeRaw[0] {
		case '[', '{':
			return // h fails to look it up (unhashable): swallowed
		case '"':
			typ, _ = jsonString(typeRaw)
		}
	}
	switch typ {
	case "ping":
		if reply {
			s.send(append(append([]byte(`{"type":"pong","ok":true,"reply_to":`), id...), '}'))
		}
	case "whoami":
		if reply {
			b := []byte(`{"type":"whoyouare","userid":`)
			if s.userid == "" {
				b = append(b, "null"...)
			} else {
				b = appendJSONString(b, s.userid)
			}
			b = append(append(append(b, `,"ok":true,"reply_to":`...), id...), '}')
			s.send(b)
		}
	case "client_id":
		v, ok := msg["value"]
		if !ok {
			s.invalidData(reply, id, `"value" is missing`)
			return
		}
		s.clientID, _ = jsonString(v) // any other value clears it
	case "filter":
		f, ok := msg["filter"]
		if !ok {
			s.invalidData(reply, id, `"filter" is missing`)
			return
		}
		rows, err := parseFilter(f, s.p.opts.MaxFilterRows)
		switch {
		case errors.Is(err, errFilterTooLarge):
			s.invalidData(reply, id, fmt.Sprintf("filter too large: more than %d values", s.p.opts.MaxFilterRows))
			return
		case err != nil:
			s.invalidData(reply, id, err.Error())
			return
		}
		s.st.setRows(s, rows)
	default:
		s.invalidType(reply, id, typeRaw)
	}
}

func (s *socket) send(b []byte) { s.c.Send(ws.OpText, b) }

func (s *socket) invalidData(reply bool, id json.RawMessage, description string) {
	if reply {
		s.sendError(id, "invalid_data", []byte(description))
	}
}

func (s *socket) invalidType(reply bool, id, typeRaw json.RawMessage) {
	if reply {
		d := appendPyDumps([]byte("invalid message type: "), typeRaw)
		s.sendError(id, "invalid_type", d)
	}
}

func (s *socket) sendError(id json.RawMessage, kind string, description []byte) {
	b := append([]byte(`{"type":"error","error":{"type":"`), kind...)
	b = append(b, `","description":`...)
	b = appendJSONString(b, string(description))
	b = append(append(append(b, `},"ok":false,"reply_to":`...), id...), '}')
	s.send(b)
}
