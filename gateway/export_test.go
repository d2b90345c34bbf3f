package gateway

import (
	"testing"

	"github.com/panjf2000/gnet/v2"

	"github.com/wsgateway/gateway/session"
)

// Exports for the external test package (benchmarks that need a protocol).

type (
	FakeConn = fakeConn
	FakeLoop = fakeLoop
)

// NewFakeLoop returns a server with routes and one fake loop, not started.
func NewFakeLoop(opts Options, routes ...Route) *FakeLoop {
	srv := New(opts, session.NewHub(nil))
	for _, r := range routes {
		srv.Handle(r)
	}
	return &fakeLoop{srv: srv}
}

func (l *fakeLoop) Open() *FakeConn                        { return l.open() }
func (l *fakeLoop) Feed(f *FakeConn, b []byte) gnet.Action { return l.feed(f, b) }
func (l *fakeLoop) Run()                                   { l.run() }
func (l *fakeLoop) Server() *Server                        { return l.srv }
func (f *fakeConn) Output() []byte                         { return f.out }
func (f *fakeConn) ResetOutput()                           { f.out, f.written, f.writes = f.out[:0], 0, 0 }
func (f *fakeConn) DiscardOutput()                         { f.discardOutput = true }
func (f *fakeConn) Written() int                           { return f.written }
func (f *fakeConn) Writes() int                            { return f.writes }

// testLoop returns the gateway loop of a fake loop, creating it as the
// first OnOpen would.
func (s *Server) testLoop(fl *fakeLoop) *Loop {
	l, err := s.loopFor(fl)
	if err != nil {
		panic(err)
	}
	return l
}

// ResetByPeer makes the connection's next write fail as one to a peer
// that reset it (gnet closes the connection inside Write).
func (f *fakeConn) ResetByPeer() { f.reset = true }

// Panics returns the panics the server recovered.
func (l *fakeLoop) Panics(t *testing.T) int { return int(counterValue(t, l.srv.metrics.panics)) }
