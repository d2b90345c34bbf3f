// Command baseline is the reference server of the gateway's load tests: the
// native protocol's pub/sub subset (PROTOCOL.md §3, §4, §5, §8) written the
// way a Go developer would write it without the gateway, with net/http and
// github.com/gorilla/websocket.
//
// # Design
//
//   - net/http serves /api/ws; gorilla's Upgrader upgrades it. Every
//     connection has two goroutines: the handler goroutine reads and runs
//     the client's messages, a writer goroutine drains a buffered channel
//     (-queue messages) and writes them. Nothing else writes data frames, as
//     gorilla allows one writer at a time (close and pong control frames go
//     through WriteControl, which is safe from any goroutine).
//   - Subscriptions live in one map, channel -> set of connections, guarded
//     by a sync.RWMutex: Publish takes the read lock, Subscribe and
//     Unsubscribe the write lock.
//   - A Publish is encoded once into a websocket.PreparedMessage (the frame
//     bytes are built once and shared by every subscriber) and offered to
//     each subscriber's channel without blocking. A subscriber whose channel
//     is full is a slow consumer: it is closed with 1008 instead of making
//     the publisher wait.
//   - Each connection reads into one reused bytes.Buffer; packets are decoded
//     in place with the gateway's own codec (package packet) and keys are
//     verified with the gateway's own code (package token, GATEWAY_SECRET).
//   - Limits: messages over 64 KiB close with 1009 (gorilla's read limit),
//     128 subscriptions per connection, the channel-name policy of
//     PROTOCOL.md §5.
//   - Timeouts: 10 s to send the request head and 10 s more to
//     authenticate (3003). After that there is no ping timer: a plain read
//     deadline of 60 s, moved forward by every data message (any packet,
//     not only Ping; WebSocket ping frames do not count), closes a silent
//     connection with 3003; it is cut short by the key's expiry, which
//     closes with 3001. Writes time out after
//     10 s. A close the server starts waits up to 2 s for the client's close
//     frame before the TCP connection is closed.
//   - TCP_NODELAY stays on (Go's default); no compression.
//
// # Why it is a fair baseline
//
// It is not crippled: fan-out encodes once, buffers are reused where the
// library lets them be (the hijacked bufio reader; no idle write buffer,
// thanks to a write buffer pool), the hot paths take only a read lock and
// never block on a slow client, and the wire bytes are the gateway's own. It
// is also not the gateway: no event loops, no batching of frames into one
// write, no per-connection byte budget, one global lock. What it leaves out
// does not change the cost of the load being measured: revocation, the
// batch window and client name settings (parsed and range-checked, then
// ignored), Redis clustering, graceful 1001 on shutdown.
//
// # Usage
//
//	GATEWAY_SECRET=... baseline [-listen 127.0.0.1:9080] [-metrics 127.0.0.1:9081] [-queue 256]
//
// The metrics listener serves GET /metrics (Prometheus default registry: Go
// runtime, process and baseline_* metrics) and GET /readyz. SIGTERM or
// SIGINT closes both listeners and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsgateway/gateway/token"
)

// wsPath is the WebSocket endpoint, as on the gateway.
const wsPath = "/api/ws"

func main() {
	listen := flag.String("listen", "127.0.0.1:9080", "WebSocket listen address")
	metrics := flag.String("metrics", "127.0.0.1:9081", "metrics listen address (/metrics, /readyz)")
	queue := flag.Int("queue", defaultQueue, "per-connection send queue, in messages; a full queue closes with 1008")
	flag.Parse()
	secrets, err := token.ParseSecrets(os.Getenv("GATEWAY_SECRET"))
	if err != nil {
		log.Fatalf("baseline: GATEWAY_SECRET: %v", err)
	}
	if *queue < 1 {
		log.Fatal("baseline: -queue must be at least 1")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := options{secrets: secrets, queue: *queue}
	err = run(ctx, *listen, *metrics, opts, func(addr, maddr net.Addr) {
		log.Printf("baseline: WebSocket on ws://%s%s, metrics on http://%s/metrics", addr, wsPath, maddr)
	})
	if err != nil {
		log.Fatalf("baseline: %v", err)
	}
}

// run serves until ctx is done, then closes both listeners. ready, if not
// nil, is called with the bound addresses once both accept connections.
// Upgraded connections are not tracked: they end with the process.
func run(ctx context.Context, listenAddr, metricsAddr string, opts options, ready func(addr, metricsAddr net.Addr)) error {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return err
	}
	mln, err := net.Listen("tcp", metricsAddr)
	if err != nil {
		ln.Close()
		return err
	}
	srv := newHTTPServer(newServer(opts).routes())
	msrv := newHTTPServer(metricsRoutes())
	errc := make(chan error, 2)
	go func() { errc <- serve(srv, ln) }()
	go func() { errc <- serve(msrv, mln) }()
	if ready != nil {
		ready(ln.Addr(), mln.Addr())
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	srv.Close()
	msrv.Close()
	return err
}

func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: handshakeTimeout,
		IdleTimeout:       time.Minute,
	}
}

// serve is http.Server.Serve without the error of a deliberate Close.
func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

func metricsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	return mux
}
