package hypothesis

import (
	"encoding/json"
	"log/slog"
	"slices"

	"github.com/gobwas/ws"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/session"
	"github.com/wsgateway/gateway/token"
)

// loopState is the protocol's state on one event loop (Loop.Local): the
// index of its sockets by filter row and the dispatcher that receives
// every event published on Channel. Only the loop touches it.
type loopState struct {
	p     *Protocol
	index map[row]map[*socket]struct{}
	disp  *session.Session
	seq   uint64

	// Reused per event.
	recips  []*socket
	frame   []byte
	members map[string]struct{}
}

// loopState returns the loop's state, creating it and subscribing its
// dispatcher on first use. The dispatcher stays for the loop's lifetime.
func (p *Protocol) loopState(l *gateway.Loop) *loopState {
	if st, ok := l.Local(p.stateKey).(*loopState); ok {
		return st
	}
	st := &loopState{p: p, index: make(map[row]map[*socket]struct{}), members: make(map[string]struct{})}
	l.SetLocal(p.stateKey, st)
	// A pseudo-session with no claims: it is not added to the shard, so
	// revocation sweeps never see it; it only subscribes.
	st.disp = session.New(token.Claims{}, (*dispatcher)(st))
	l.Shard().Subscribe(st.disp, Channel)
	return st
}

// setRows replaces a socket's filter rows in the index (nil: no filter).
func (st *loopState) setRows(s *socket, rows []row) {
	for _, r := range s.rows {
		set := st.index[r]
		delete(set, s)
		if len(set) == 0 {
			delete(st.index, r)
		}
	}
	s.rows = rows
	for _, r := range rows {
		set := st.index[r]
		if set == nil {
			set = make(map[*socket]struct{}, 1)
			st.index[r] = set
		}
		set[s] = struct{}{}
	}
}

// dispatcher is the loop's session.Sink for Channel.
type dispatcher loopState

func (d *dispatcher) Deliver(m *session.Message, _ *session.EncodeCache) {
	(*loopState)(d).dispatch(m.Payload)
}
func (d *dispatcher) Subscribed(string)    {}
func (d *dispatcher) Close(uint16, string) {}

// dispatch decodes one event (once per loop), finds the sockets whose rows
// it matches through the index, dedupes them, applies §8 and sends the
// notification, framed once, to each recipient. Its cost follows the
// matching sockets, not the loop's sockets.
func (st *loopState) dispatch(payload []byte) {
	var ev wireEvent
	if err := json.Unmarshal(payload, &ev); err != nil || ev.V != wireVersion {
		if st.p.warns.Enabled() {
			attrs := []slog.Attr{slog.String("protocol", "hypothesis"), slog.Int("version", ev.V)}
			if err != nil {
				attrs = append(attrs, slog.String("err", err.Error()))
			}
			st.p.warns.Log("undecodable", "hypothesis: undecodable event on the hub", attrs...)
		}
		return
	}
	st.seq++
	seq := st.seq
	recips := st.recips[:0]
	collect := func(field uint8, value string) {
		for s := range st.index[row{field, value}] {
			if s.stamp != seq {
				s.stamp = seq
				recips = append(recips, s)
			}
		}
	}
	collect(fieldID, ev.ID)
	if ev.Group != nil {
		collect(fieldGroup, *ev.Group)
	}
	for _, r := range ev.Refs {
		collect(fieldReferences, r)
	}
	for _, k := range ev.Keys {
		collect(fieldURI, k)
	}
	if len(recips) == 0 {
		st.recips = recips
		return
	}
	clear(st.members)
	if len(ev.Members) > 8 {
		for _, m := range ev.Members {
			st.members[m] = struct{}{}
		}
	}
	framed := false
	for _, s := range recips {
		if !s.out.Open() || !st.visible(&ev, s) {
			continue
		}
		if !framed {
			st.frame = gateway.AppendFrame(st.frame[:0], ws.OpText, ev.Frame)
			framed = true
		}
		s.out.SendFrames(st.frame)
	}
	clear(recips)
	st.recips = recips[:0]
}

// visible applies §8 steps 2 to 4 to one candidate socket.
func (st *loopState) visible(ev *wireEvent, s *socket) bool {
	// Echo suppression only when both ids are set and equal (§10.1).
	if ev.Src != "" && s.clientID == ev.Src {
		return false
	}
	u := s.userid
	// NIPSA: only the author, among authenticated sockets; anonymous
	// sockets pass here as in h and are judged by visibility.
	if ev.NIPSA && u != "" && u != ev.User {
		return false
	}
	if ev.Hidden {
		return u != "" && (u == ev.User || slices.Contains(ev.Moderators, u))
	}
	if ev.World {
		return true
	}
	if u == "" {
		return false
	}
	if slices.Contains(ev.Readers, u) {
		return true
	}
	if ev.GroupRead {
		if len(st.members) > 0 {
			_, ok := st.members[u]
			return ok
		}
		return slices.Contains(ev.Members, u)
	}
	return false
}
