package gateway

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// ConnID names one connection across a cluster: the server's random tag
// (drawn at New, so two processes almost never share one) and the
// connection's sequence number on that server (1, 2, ... in accept order).
// Logs show it as "tag-seq" (String), e.g. "9f2c01ab-17", and the admin
// API accepts that form back (ParseConnID) to act on the connection from
// any node.
type ConnID struct {
	Node uint32 // the server's tag
	Seq  uint64 // accept order on that server, from 1
}

// String formats id as eight hex digits, a dash and the decimal sequence.
func (id ConnID) String() string {
	return fmt.Sprintf("%08x-%d", id.Node, id.Seq)
}

// ParseConnID reads the form String writes.
func ParseConnID(s string) (ConnID, error) {
	tag, seq, ok := strings.Cut(s, "-")
	if !ok || len(tag) != 8 {
		return ConnID{}, fmt.Errorf("connection id %q: want 8 hex digits, '-', a sequence number", s)
	}
	node, err := strconv.ParseUint(tag, 16, 32)
	if err != nil {
		return ConnID{}, fmt.Errorf("connection id %q: %w", s, err)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 {
		return ConnID{}, fmt.Errorf("connection id %q: bad sequence number", s)
	}
	return ConnID{Node: uint32(node), Seq: n}, nil
}

// randomTag draws a server's tag; a zero tag is never drawn, so a zero
// ConnID means "no connection".
func randomTag() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		if t := binary.BigEndian.Uint32(b[:]); t != 0 {
			return t
		}
	}
}

// ID returns the connection's cluster-wide name (see ConnID).
func (c *Conn) ID() ConnID { return ConnID{Node: c.loop.srv.tag, Seq: c.seq} }

// connIDKey carries a ConnID in a HeadAuthorizer's context.
type connIDKey struct{}

// ConnIDFrom returns the ConnID a HeadAuthorizer's context carries (the
// connection being authorized), or false.
func ConnIDFrom(ctx context.Context) (ConnID, bool) {
	id, ok := ctx.Value(connIDKey{}).(ConnID)
	return id, ok
}
