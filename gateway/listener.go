package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// MainListener names the listener of Options.Listen. Routes and HTTP
// handlers without a listener name belong to it.
const MainListener = ""

// listener is one address the event loops accept on, with the net/http
// server that answers its plain requests.
type listener struct {
	name string
	addr string // as configured, or the port distinctAddrs picked
	// picked: addr's port was picked by distinctAddrs for a port-0 address
	// (a probe's port, which another process may take before gnet binds it).
	picked bool
	bound  *net.TCPAddr
	mux    *http.ServeMux
	// notFound answers plain requests no handler takes, when set.
	notFound http.Handler
	ln       *handoffListener
	http     *http.Server
}

// AddListener makes the loops accept on one more address; routes and HTTP
// handlers name it to live there (wsify has its own port). Call before
// Start.
func (s *Server) AddListener(name, addr string) {
	l := &listener{name: name, addr: addr, mux: http.NewServeMux()}
	l.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { s.fallbackHTTP(l, w, r) })
	s.listeners = append(s.listeners, l)
}

// HandleHTTPOn adds a net/http handler for plain requests on a named
// listener. Call before Start.
func (s *Server) HandleHTTPOn(listenerName, pattern string, h http.Handler) {
	s.listener(listenerName).mux.Handle(pattern, h)
}

// SetNotFound replaces a listener's answer to plain requests no handler
// takes (the default is JSON 404, or 426 on WebSocket paths).
func (s *Server) SetNotFound(listenerName string, h http.Handler) {
	s.listener(listenerName).notFound = h
}

// ListenerAddr returns the bound address of a named listener, once started.
func (s *Server) ListenerAddr(name string) net.Addr {
	for _, l := range s.listeners {
		if l.name == name && l.bound != nil {
			return l.bound
		}
	}
	return nil
}

func (s *Server) listener(name string) *listener {
	for _, l := range s.listeners {
		if l.name == name {
			return l
		}
	}
	panic(fmt.Sprintf("gateway: no listener %q", name))
}

// bindAll learns every listener's bound address (port 0 included) and starts
// its net/http side. It runs in OnBoot.
func (s *Server) bindAll(eng gnet.Engine) error {
	for _, l := range s.listeners {
		fd, err := eng.DupListener("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("listener %s: %w", l.addr, err)
		}
		addr, err := sockName(fd)
		unix.Close(fd)
		if err != nil {
			return err
		}
		l.bound = addr
		l.ln = newHandoffListener(addr)
		l.http = &http.Server{ // serves hand-offs only: it binds nothing
			Handler:           s.upgradeBack(l.mux),
			ReadHeaderTimeout: s.opts.HandshakeTimeout,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    MaxHeadSize,
			ErrorLog:          s.httpErrorLog,
		}
		go func() { _ = l.http.Serve(l.ln) }()
	}
	return nil
}

// listenerOf finds the listener a connection arrived on by the socket's
// own local address (gnet reports the configured one, port 0 included).
func (s *Server) listenerOf(fd int) uint8 {
	if len(s.listeners) == 1 {
		return 0
	}
	a, err := sockName(fd)
	if err != nil {
		return 0
	}
	for i, l := range s.listeners {
		if l.bound != nil && l.bound.Port == a.Port && (l.bound.IP.IsUnspecified() || l.bound.IP.Equal(a.IP)) {
			return uint8(i)
		}
	}
	return 0
}

// distinctAddrs makes the listeners' address strings distinct, which
// gnet's DupListener needs to tell them apart: a repeated port-0 address
// gets a free port picked now; any other repeat is an error.
func (s *Server) distinctAddrs() error {
	seen := map[string]bool{}
	for _, l := range s.listeners {
		if seen[l.addr] {
			host, port, err := net.SplitHostPort(l.addr)
			if err != nil || port != "0" {
				return fmt.Errorf("two listeners on %s", l.addr)
			}
			if err := l.pickPort(host); err != nil {
				return err
			}
		}
		seen[l.addr] = true
	}
	return nil
}

// pickPort sets the listener's address to a port of host free a moment ago.
func (l *listener) pickPort(host string) error {
	probe, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	l.addr, l.picked = probe.Addr().String(), true
	return probe.Close()
}

// repick picks new ports for the listeners whose port was picked, after
// gnet could not bind one (another process took it meanwhile); false when
// there is none to pick again.
func (s *Server) repick() bool {
	any := false
	for _, l := range s.listeners {
		if l.picked {
			host, _, _ := net.SplitHostPort(l.addr)
			if l.pickPort(host) == nil {
				any = true
			}
		}
	}
	return any
}

// checkBindable binds every listener's address for a moment, with the
// options gnet will use (SO_REUSEADDR, and SO_REUSEPORT if asked), so that
// a port really taken is reported as "listen tcp ADDR: bind: address
// already in use". gnet's own error would not say so: after a failed bind
// it sets TCP keepalive on the closed descriptor and reports that instead
// ("setsockopt: bad file descriptor"), and it leaves the listeners bound
// before the failed one open.
func (s *Server) checkBindable() error {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if ctlErr := rc.Control(func(fd uintptr) {
			if s.opts.ReusePort {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		}); ctlErr != nil {
			return ctlErr
		}
		return err
	}}
	for _, l := range s.listeners {
		ln, err := lc.Listen(context.Background(), "tcp", l.addr) // Go sets SO_REUSEADDR itself
		if err != nil {
			return err
		}
		_ = ln.Close()
	}
	return nil
}

// sockName reads a socket's bound address.
func sockName(fd int) (*net.TCPAddr, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	}
	return nil, fmt.Errorf("unexpected socket address %T", sa)
}
