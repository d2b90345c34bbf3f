//go:build linux

package gnet

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// addrSeen records what RemoteAddr answers in OnOpen and in OnTraffic.
type addrSeen struct {
	BuiltinEventEngine
	eng           chan Engine
	open, traffic net.Addr
	trafficDone   chan struct{}
}

func (h *addrSeen) OnBoot(e Engine) Action { h.eng <- e; return None }

func (h *addrSeen) OnOpen(c Conn) ([]byte, Action) { h.open = c.RemoteAddr(); return nil, None }

func (h *addrSeen) OnTraffic(c Conn) Action {
	h.traffic = c.RemoteAddr()
	close(h.trafficDone)
	return Close
}

// TestRemoteAddrInOpenOnly runs a real engine: RemoteAddr names the peer
// in OnOpen (built from the accepted socket address when asked), and, with
// WithRemoteAddrInOpenOnly, is nil afterwards; without it, it still names
// the peer in OnTraffic (wsgateway patches, PATCH.md).
func TestRemoteAddrInOpenOnly(t *testing.T) {
	for _, only := range []bool{false, true} {
		h := &addrSeen{eng: make(chan Engine, 1), trafficDone: make(chan struct{})}
		done := make(chan error, 1)
		go func() {
			done <- Run(h, "tcp://127.0.0.1:0", WithRemoteAddrInOpenOnly(only), WithNumEventLoop(1))
		}()
		eng := <-h.eng
		addr := listenerAddr(t, eng)
		cl, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		<-h.trafficDone
		if h.open == nil || h.open.String() != cl.LocalAddr().String() {
			t.Errorf("only %v: RemoteAddr in OnOpen %v, want %v", only, h.open, cl.LocalAddr())
		}
		if only && h.traffic != nil {
			t.Errorf("RemoteAddr after OnOpen with the option: %v, want nil", h.traffic)
		}
		if !only && (h.traffic == nil || h.traffic.String() != cl.LocalAddr().String()) {
			t.Errorf("RemoteAddr in OnTraffic without the option: %v, want %v", h.traffic, cl.LocalAddr())
		}
		_ = cl.Close()
		if err := eng.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// listenerAddr returns the address the engine listens on (it was given
// port 0).
func listenerAddr(t *testing.T, eng Engine) string {
	t.Helper()
	fd, err := eng.Dup()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	a := sa.(*unix.SockaddrInet4)
	return (&net.TCPAddr{IP: a.Addr[:], Port: a.Port}).String()
}
