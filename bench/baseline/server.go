package main

import (
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Limits and timeouts; PROTOCOL.md gives the gateway's defaults.
const (
	defaultQueue     = 256              // send queue per connection, in messages
	maxMessageSize   = 64 << 10         // the gateway's --max-message-size
	maxSubscriptions = 128              // per connection
	maxChannelLen    = 255              // bytes
	maxClientName    = 64               // bytes
	maxBatchWindow   = 1000             // milliseconds
	handshakeTimeout = 10 * time.Second // request head, then auth message
	readTimeout      = 60 * time.Second // silence allowed after auth
	writeTimeout     = 10 * time.Second // one message write
	closeGrace       = 2 * time.Second  // wait for the client's close frame
)

var (
	metricConns = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "baseline_connections",
		Help: "Open WebSocket connections.",
	})
	metricSlow = promauto.NewCounter(prometheus.CounterOpts{
		Name: "baseline_slow_consumer_closes_total",
		Help: "Connections closed with 1008 because their send queue was full.",
	})
)

// helloMsg is the server's first message, framed once for all connections.
var helloMsg = mustPrepare(packet.Hello)

func mustPrepare(data []byte) *websocket.PreparedMessage {
	pm, err := websocket.NewPreparedMessage(websocket.BinaryMessage, data)
	if err != nil {
		panic(err) // only compression can fail, and it is off
	}
	return pm
}

// options configure a server.
type options struct {
	secrets *token.Secrets
	queue   int // send queue length; zero means defaultQueue
}

// server holds what connections share: the key secrets and the hub.
type server struct {
	opts     options
	hub      hub
	upgrader websocket.Upgrader
}

func newServer(opts options) *server {
	if opts.queue <= 0 {
		opts.queue = defaultQueue
	}
	s := &server{opts: opts, hub: hub{channels: make(map[string]map[*client]struct{})}}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: handshakeTimeout,
		// Fan-out uses prepared messages, which bypass the write buffer;
		// replies borrow one from the pool, so idle connections hold none.
		WriteBufferPool: &sync.Pool{},
		// Clients authenticate with a key, not cookies: any origin may.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return s
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(wsPath, s.serveWS)
	return mux
}

// serveWS upgrades and runs one connection on the handler's goroutine.
func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusUpgradeRequired)
		w.Write([]byte(`{"error":"this path speaks WebSocket: send an Upgrade request"}` + "\n"))
		return
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the request
	}
	metricConns.Inc()
	defer metricConns.Dec()
	newClient(s, ws).serve()
}

// hub maps channels to their subscribers.
type hub struct {
	mu       sync.RWMutex
	channels map[string]map[*client]struct{}
}

func (h *hub) subscribe(channel string, c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.channels[channel]
	if set == nil {
		set = make(map[*client]struct{})
		h.channels[channel] = set
	}
	set[c] = struct{}{}
}

func (h *hub) unsubscribe(channel string, c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.remove(channel, c)
}

// leave removes c from every channel it holds.
func (h *hub) leave(c *client, channels map[string]struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range channels {
		h.remove(ch, c)
	}
}

// remove needs h.mu held for writing.
func (h *hub) remove(channel string, c *client) {
	set := h.channels[channel]
	delete(set, c)
	if len(set) == 0 {
		delete(h.channels, channel)
	}
}

// publish sends a Message to every subscriber of channel but from (unless
// echo). The message is encoded once, and only if someone receives it.
func (h *hub) publish(channel, payload []byte, from *client, echo bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var pm *websocket.PreparedMessage
	for c := range h.channels[string(channel)] {
		if c == from && !echo {
			continue
		}
		if pm == nil {
			pm = encodeMessage(channel, payload)
		}
		c.enqueue(pm)
	}
}

func encodeMessage(channel, payload []byte) *websocket.PreparedMessage {
	buf := make([]byte, 0, packet.MessageLen(len(channel), len(payload)))
	return mustPrepare(packet.AppendMessageBytes(buf, channel, payload))
}
