package gateway

import (
	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// partialFrame is a frame whose header has arrived and whose payload is
// still arriving. Left in gnet's buffer, such a frame would cost a copy of
// everything buffered at every read (gnet's Peek copies bytes that are not
// contiguous, and they are not once a read leaves some behind): quadratic in
// the frame's size. Instead its bytes move into payload as they come, are
// unmasked there and are discarded from gnet, one copy per byte. A frame
// that arrives whole is still handled in place, without a copy.
type partialFrame struct {
	h       ws.Header
	payload []byte // what arrived so far, unmasked; grows to h.Length
}

// startFrame keeps have, the start of a frame's payload, until the rest
// arrives. A small frame's buffer comes from the loop's pool. A large one
// grows as bytes come, doubling, never ahead of them by more than twice:
// a peer cannot make the gateway reserve a whole message's size with a
// header alone.
func (c *Conn) startFrame(h ws.Header, have []byte) {
	rx := &partialFrame{h: h}
	l := c.loop
	switch {
	case h.Length <= maxFreeBuf:
		rx.payload = l.getBuf()
	case l.spareFrame != nil:
		rx.payload, l.spareFrame = l.spareFrame, nil
	}
	c.more().rx = rx
	rx.take(have)
}

// take appends what b holds of the payload and returns how much that is.
func (rx *partialFrame) take(b []byte) int {
	have := len(rx.payload)
	n := min(len(b), int(rx.h.Length)-have)
	if need := have + n; need > cap(rx.payload) {
		grown := make([]byte, have, min(int(rx.h.Length), max(2*need, minFrameGrowth)))
		copy(grown, rx.payload)
		rx.payload = grown
	}
	rx.payload = append(rx.payload, b[:n]...)
	ws.Cipher(rx.payload[have:], rx.h.Mask, have)
	return n
}

// minFrameGrowth is the least a large frame's buffer grows by.
const minFrameGrowth = 4 << 10

// moreOfFrame feeds buf to the frame still arriving. It returns how much of
// buf it consumed, and done once the frame was complete and handled.
func (c *Conn) moreOfFrame(buf []byte) (int, gnet.Action, bool) {
	rx := c.cold.rx
	n := rx.take(buf)
	if len(rx.payload) < int(rx.h.Length) {
		return n, gnet.None, false
	}
	c.cold.rx = nil
	action := c.frame(rx.h, rx.payload)
	c.loop.putFrameBuf(rx.payload) // handlers never keep a payload
	return n, action, true
}

// putFrameBuf keeps a frame's buffer for the next one: a small one in the
// pool, the largest aside (until a tick finds it unused, releaseLarge).
func (l *Loop) putFrameBuf(b []byte) {
	if cap(b) <= maxFreeBuf {
		l.putBuf(b)
		return
	}
	if cap(b) > cap(l.spareFrame) {
		l.spareFrame = l.reuse(b)
	}
}
