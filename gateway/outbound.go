package gateway

import "math/bits"

// The outbound budget (Options.MaxOutbound) bounds the bytes that wait in
// gnet's outbound buffer because the peer reads more slowly than it is
// sent to. One write larger than the budget (an 8 MiB echo, say, under the
// default 1 MiB) would pass it on its own the moment the kernel took less
// than all of it, and close a reader that keeps up. So a write larger than
// the budget is not counted against it while gnet still holds part of it:
// the budget counts what is queued behind such a write. At most
// maxOversized of them may wait at once; a reader that lets more pile up,
// or lets the bytes behind them pass the budget, is a slow consumer.
//
// Positions are counted in bytes handed to gnet (Conn.written): what gnet
// has sent is written minus what it still buffers, so an oversized write's
// unsent part is known without any callback from gnet.
//
// A connection thus holds in gnet's buffer at most MaxOutbound plus
// maxOversized writes, each at most Server.maxWrite (the hub drops larger
// payloads, Server.maxPayload) or a protocol's own larger reply (KOsync's
// documents.all lists a whole library), which goes out only to a reader
// that has taken everything before it.

// maxOversized is how many writes larger than the budget may wait in gnet's
// buffer at once: the one being written and the one behind it.
const maxOversized = 2

// span is where one oversized write lies in the connection's output, in
// bytes counted by Conn.written: [start, end).
type span struct{ start, end uint64 }

// oversized are the oversized writes gnet may still hold; a zero span is a
// free place. A connection has it only while such a write is in flight.
type oversized [maxOversized]span

// unsentOversized returns how many of the pending bytes belong to oversized
// writes, forgetting the writes gnet has sent by now.
func (c *Conn) unsentOversized(sent uint64) int {
	if c.cold == nil || c.cold.big == nil {
		return 0
	}
	o := c.cold.big
	n, live := 0, false
	for i := range o {
		s := &o[i]
		if s.end <= sent {
			*s = span{}
			continue
		}
		live = true
		n += int(s.end - max(s.start, sent))
	}
	if !live {
		c.cold.big = nil
		c.shedCold() // only open connections write: nothing of the handshake is left
	}
	return n
}

// noteOversized records a write of n bytes starting at start; it reports
// false when maxOversized are already in flight.
func (c *Conn) noteOversized(start uint64, n int) bool {
	x := c.more()
	if x.big == nil {
		x.big = new(oversized)
	}
	for i := range x.big {
		if s := &x.big[i]; s.end == 0 {
			*s = span{start, start + uint64(n)}
			return true
		}
	}
	return false
}

// sendWithin writes b unless that passes the outbound budget; it reports
// whether it wrote. An error from gnet's Write means gnet is closing the
// connection: OnClose follows.
func (c *Conn) sendWithin(b []byte) bool {
	budget := c.loop.srv.opts.MaxOutbound
	pending := c.outbound()
	sent := uint64(0)
	if w := c.written; w > uint64(pending) { // bytes not counted (the 101) may be pending
		sent = w - uint64(pending)
	}
	behind := max(pending-c.unsentOversized(sent), 0)
	if len(b) <= budget {
		if behind+len(b) > budget {
			return false
		}
	} else if pending > 0 && len(b) > c.loop.srv.maxWrite() || behind > budget || !c.noteOversized(c.written, len(b)) {
		return false
	}
	c.written += uint64(len(b))
	if pending == 0 || len(b) < 2*minPiece {
		c.sysWrite(b)
		return true
	}
	l := c.loop
	l.iov = powerOfTwoPieces(l.iov[:0], b)
	c.sysWritev(l.iov)
	clear(l.iov)
	return true
}

// minPiece is the smallest piece powerOfTwoPieces cuts.
const minPiece = 512

// powerOfTwoPieces cuts b into pieces whose sizes are powers of two (the
// last one, under minPiece, excepted). gnet copies what it cannot send at
// once into pooled buffers whose sizes are powers of two, one per piece it
// is given: a 3,012-byte write would take 4,096 bytes there, 36% wasted, and
// a connection's budget could cost nearly twice its size. Cut like this, a
// write wastes less than minPiece. Used only when gnet already holds bytes
// for the connection, so all of b goes to its buffer.
func powerOfTwoPieces(iov [][]byte, b []byte) [][]byte {
	for len(b) >= minPiece {
		n := 1 << (bits.Len(uint(len(b))) - 1)
		iov = append(iov, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		iov = append(iov, b)
	}
	return iov
}
