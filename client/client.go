package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgateway/gateway/packet"
	"github.com/wsgateway/gateway/token"
)

// Defaults of Options.
const (
	// DefaultPingInterval is how often the client pings when
	// Options.PingInterval is zero: well inside the server's default 30 s
	// ping timeout.
	DefaultPingInterval = 20 * time.Second
	// DefaultPongWait is how long the client waits past a ping interval for
	// any message before it takes the connection for dead, when
	// Options.PongWait is zero.
	DefaultPongWait = 10 * time.Second
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait before a
	// reconnect when Options.MinBackoff and MaxBackoff are zero.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultQueueSize is the dispatcher's queue when Options.QueueSize is
	// zero.
	DefaultQueueSize = 1024
	// DefaultReadLimit is the largest message the client reads when
	// Options.ReadLimit is zero.
	DefaultReadLimit = 16 << 20
	// DefaultDialTimeout bounds one connection attempt (TCP connect,
	// upgrade, hello, authentication, settings) when Options.DialTimeout is
	// zero: a server that accepts and then says nothing does not hold the
	// client forever.
	DefaultDialTimeout = 10 * time.Second
	// maxUpgradeBody is how much of a refused upgrade's body an
	// UpgradeError keeps.
	maxUpgradeBody = 512
	// maxBatchPackets is the most packets the server takes in one message.
	maxBatchPackets = 1024
)

// State is where the client stands.
type State int

// A connection attempt goes Connecting, Authenticating, Connected; a drop
// goes to Disconnected, and the next attempt to Connecting again. An
// attempt that fails before Authenticating never reached the native
// protocol (dial, upgrade); one that fails in Authenticating was refused
// or lost while the server checked the key.
const (
	// Connecting: dialing and upgrading (the first time or again).
	Connecting State = iota + 1 // zero: not dialed yet
	// Connected: authenticated (the server's Pong arrived); requests go
	// through.
	Connected
	// Disconnected: the connection dropped; the client waits to reconnect.
	Disconnected
	// Closed: Close was called, or the server refused the key; final.
	Closed
	// Authenticating: upgraded and greeted with the server's hello; the
	// key is sent and the client waits for the server's verdict (a Pong,
	// or a close such as 3001). It comes between Connecting and Connected;
	// its value is last only so that the others keep theirs.
	Authenticating
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Authenticating:
		return "authenticating"
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Closed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Options configure a Client.
type Options struct {
	// Key is the access key as `gateway key issue` prints it; required.
	Key string
	// Header is sent with the WebSocket upgrade; zero means none.
	Header http.Header
	// HTTPClient dials the upgrade; zero means http.DefaultClient.
	HTTPClient *http.Client

	// Echo, Name and BatchWindow are the session's settings (PROTOCOL.md
	// §6), applied after every authentication; zero means the server's
	// defaults (no echo, no name, no batch window).
	Echo        bool
	Name        string
	BatchWindow time.Duration

	// PingInterval is how often the client pings; zero means
	// DefaultPingInterval.
	PingInterval time.Duration
	// PongWait is how long past PingInterval the client waits for any
	// message before it drops the connection; zero means DefaultPongWait.
	PongWait time.Duration
	// MinBackoff and MaxBackoff bound the reconnect wait; zero means
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// NoReconnect makes a drop final (state Closed); zero means reconnect.
	NoReconnect bool
	// QueueSize bounds the deliveries and events waiting for the
	// dispatcher; zero means DefaultQueueSize.
	QueueSize int
	// ReadLimit is the largest message the client reads; zero means
	// DefaultReadLimit.
	ReadLimit int64
	// DialTimeout bounds each connection attempt, from the TCP connect to
	// the Pong of authentication and the settings' answer; zero means
	// DefaultDialTimeout. The context given to Dial bounds the first
	// attempt too.
	DialTimeout time.Duration

	// OnState, if set, is told of every state change, with the error that
	// caused it (nil for a change the application asked for). It runs on
	// the dispatcher.
	OnState func(State, error)
	// OnError, if set, is told of an Error packet that answers no request
	// of this client (a refusal the server sends on its own). It runs on
	// the dispatcher.
	OnError func(*ServerError)
}

func (o *Options) setDefaults() {
	if o.PingInterval <= 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.PongWait <= 0 {
		o.PongWait = DefaultPongWait
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = DefaultReadLimit
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
}

// Client is a session with the gateway that survives reconnects. Its
// methods are safe for concurrent use.
type Client struct {
	url  string
	opts Options
	key  []byte

	ctx        context.Context // ends with Close
	cancel     context.CancelFunc
	events     *events       // to the dispatcher
	dispatched chan struct{} // closed when the dispatcher has run everything and ended
	keeper     sync.WaitGroup
	readers    sync.WaitGroup // the events channel closes after they end

	writeMu sync.Mutex // orders writes with their waiters

	mu       sync.Mutex
	link     *link     // nil while not connected
	waiters  []*waiter // requests on link awaiting their Pong, in order
	subs     map[string]*Subscription
	state    State
	closeErr error // why the client is Closed
}

// link is one connection of the client.
type link struct {
	conn *websocket.Conn
	done chan struct{} // closed by drop
	err  error         // why it dropped; set before done closes
}

// waiter is one request awaiting the Pong of the Ping sent after it.
type waiter struct {
	done   chan struct{}
	err    error // an Error packet before the Pong, or the drop
	millis int64 // the Pong's server clock, once done without err
}

// Dial connects and authenticates: it returns once the server's first Pong
// arrived, or the error that prevented it: a *CloseError carries the
// server's close code and reason (3001 for a refused key), an
// *UpgradeError the HTTP answer of a refused upgrade, ErrNotNative an
// endpoint that is not the native protocol. When Dial returns an error,
// every OnState callback of the attempt has run. From then on the client
// keeps the session up until Close.
func Dial(ctx context.Context, url string, o Options) (*Client, error) {
	key, err := token.DecodeText(o.Key)
	if err != nil {
		return nil, fmt.Errorf("client: key: %w", err)
	}
	if len(key) > packet.MaxKeyLen {
		return nil, fmt.Errorf("client: key of %d bytes, at most %d", len(key), packet.MaxKeyLen)
	}
	o.setDefaults()
	c := &Client{url: url, opts: o, key: key, subs: map[string]*Subscription{},
		events: newEvents(o.QueueSize), dispatched: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.dispatch()
	c.setState(Connecting, nil)
	conn, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		c.finish(err)
		<-c.dispatched
		return nil, err
	}
	c.keeper.Add(1)
	go c.keep(conn)
	return c, nil
}

// State returns the client's state now.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Close ends the session with 1000 "bye" (the close handshake: the
// WebSocket library gives the write and the server's answer 5 s each) and
// stops reconnecting. Deliveries already
// queued still run. It may be called from a handler.
func (c *Client) Close() error {
	c.mu.Lock()
	l := c.link
	if c.state != Closed && c.closeErr == nil {
		c.closeErr = ErrClosed
	}
	c.mu.Unlock()
	c.events.halt() // a reader waiting for room drops instead, and reads the close frame
	if l != nil {
		// The handshake before the cancel: the reader, still reading,
		// takes the server's close frame; cancelled, it would cut the
		// connection first and the server would see no 1000.
		_ = l.conn.Close(websocket.StatusNormalClosure, "bye")
	}
	c.cancel()
	return nil
}

// closing reports whether Close was called.
func (c *Client) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ctx.Err() != nil || errors.Is(c.closeErr, ErrClosed)
}

// Wait blocks until the client is Closed (by Close or for good by the
// server) and every handler and callback has run, and returns why:
// ErrClosed after Close, a *CloseError for a refused key (or, with
// NoReconnect, the close or error that ended the connection). It must not
// be called from a handler or callback, which would wait for itself.
func (c *Client) Wait() error {
	c.keeper.Wait()
	<-c.dispatched
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Ping sends a Ping and returns the server's clock from its Pong, once
// every request sent before it was answered: a round trip through the
// session.
func (c *Client) Ping(ctx context.Context) (time.Time, error) {
	w, err := c.send(ctx, nil)
	if err != nil {
		return time.Time{}, err
	}
	select {
	case <-w.done:
		if w.err != nil {
			return time.Time{}, w.err
		}
		return time.UnixMilli(w.millis), nil
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// Publish publishes payload on channel and returns once the server took it
// (nil) or refused it (*ServerError: 403 by the channel policy, 503 when
// the cluster is busy, ...).
func (c *Client) Publish(ctx context.Context, channel string, payload []byte) error {
	return c.request(ctx, packet.AppendPublish(nil, channel, payload))
}

// Settings are a session's settings (PROTOCOL.md §6).
type Settings struct {
	Echo        bool
	Name        string
	BatchWindow time.Duration
}

// SetSettings applies s now and after every reconnect. On a refusal
// (*ServerError 400) nothing changes.
func (c *Client) SetSettings(ctx context.Context, s Settings) error {
	if err := c.request(ctx, settingsPacket(nil, s)); err != nil {
		return err
	}
	c.mu.Lock()
	c.opts.Echo, c.opts.Name, c.opts.BatchWindow = s.Echo, s.Name, s.BatchWindow
	c.mu.Unlock()
	return nil
}

func settingsPacket(dst []byte, s Settings) []byte {
	echo := int8(0)
	if s.Echo {
		echo = 1
	}
	return packet.AppendSettings(dst,
		packet.Setting{ID: packet.SettingEcho, Byte: echo},
		packet.Setting{ID: packet.SettingClientName, String: []byte(s.Name)},
		packet.Setting{ID: packet.SettingBatchWindow, Short: int16(s.BatchWindow / time.Millisecond)})
}

func (c *Client) settings() Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Settings{Echo: c.opts.Echo, Name: c.opts.Name, BatchWindow: c.opts.BatchWindow}
}

// request sends msg with a Ping after it and waits for the answer.
func (c *Client) request(ctx context.Context, msg []byte) error {
	w, err := c.send(ctx, msg)
	if err != nil {
		return err
	}
	c.events.request(+1)
	defer c.events.request(-1)
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send writes msg and a Ping as one message on the current connection and
// registers the waiter its Pong will release.
func (c *Client) send(ctx context.Context, msg []byte) (*waiter, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	l := c.link
	if l == nil {
		err := ErrDisconnected
		if c.state == Closed {
			err = c.closeErr
		}
		c.mu.Unlock()
		return nil, err
	}
	w := &waiter{done: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	c.mu.Unlock()
	if err := l.conn.Write(ctx, websocket.MessageBinary, packet.AppendPing(msg)); err != nil {
		c.drop(l, err) // its waiters, this one included, fail with the drop
	}
	return w, nil
}

// connect dials, authenticates and applies the settings, within
// DialTimeout; on success the connection is installed and its reader runs.
func (c *Client) connect(ctx context.Context) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{HTTPHeader: c.opts.Header, HTTPClient: c.opts.HTTPClient})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			ue := &UpgradeError{StatusCode: resp.StatusCode, Status: resp.Status, err: err}
			if resp.Body != nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpgradeBody))
				ue.Body = string(bytes.TrimSpace(body))
			}
			return nil, ue
		}
		return nil, err
	}
	conn.SetReadLimit(c.opts.ReadLimit)
	if err := c.authenticate(ctx, conn); err != nil {
		conn.CloseNow()
		return nil, err
	}
	l := c.install(conn)
	if s := c.settings(); s != (Settings{}) {
		if err := c.request(ctx, settingsPacket(nil, s)); err != nil {
			c.drop(l, err)
			return nil, fmt.Errorf("client: settings: %w", err)
		}
	}
	return l, nil
}

// authenticate reads the hello, sends the key and waits for the Pong.
func (c *Client) authenticate(ctx context.Context, conn *websocket.Conn) error {
	_, hello, err := conn.Read(ctx)
	if err != nil {
		return closeError(err)
	}
	if string(hello) != string(packet.Hello) {
		return fmt.Errorf("%w: the first message is % x, not the hello % x", ErrNotNative, hello, packet.Hello)
	}
	c.setState(Authenticating, nil)
	if err := conn.Write(ctx, websocket.MessageBinary, packet.AppendAuth(nil, packet.Version, c.key)); err != nil {
		return closeError(err)
	}
	_, msg, err := conn.Read(ctx)
	if err != nil {
		return closeError(err)
	}
	d := packet.NewClientDecoder(msg)
	var p packet.ServerPacket
	if ok, _ := d.Next(&p); !ok || p.ID != packet.PacketPong {
		return fmt.Errorf("%w: the server answered the key with % x, not a Pong", ErrNotNative, msg)
	}
	return nil
}

// closeError turns a close from the server into a *CloseError.
func closeError(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return &CloseError{Code: int(ce.Code), Reason: ce.Reason}
	}
	return err
}

// install makes conn the client's connection and starts its reader.
func (c *Client) install(conn *websocket.Conn) *link {
	l := &link{conn: conn, done: make(chan struct{})}
	c.mu.Lock()
	c.link = l
	c.mu.Unlock()
	c.setState(Connected, nil)
	c.readers.Add(1)
	go c.read(l)
	return l
}

// drop ends l for err (once; later calls do nothing) and fails the
// requests still waiting on it with ErrDisconnected.
func (c *Client) drop(l *link, err error) {
	c.mu.Lock()
	if c.link != l {
		c.mu.Unlock()
		return
	}
	c.link = nil
	waiters := c.waiters
	c.waiters = nil
	l.err = closeError(err)
	c.mu.Unlock()
	l.conn.CloseNow()
	close(l.done)
	for _, w := range waiters {
		if w.err == nil {
			w.err = ErrDisconnected
		}
		close(w.done)
	}
}

// setState records s and tells OnState (through the dispatcher).
func (c *Client) setState(s State, err error) {
	c.mu.Lock()
	if c.state == s || c.state == Closed {
		c.mu.Unlock()
		return
	}
	c.state = s
	c.mu.Unlock()
	if fn := c.opts.OnState; fn != nil {
		c.queue(func() { fn(s, err) })
	}
}

// queue hands fn to the dispatcher; it waits while the queue is full,
// unless the client is closing (then what does not fit is dropped) or a
// callback waits for an answer (events).
func (c *Client) queue(fn func()) { c.events.push(fn) }

// dispatch runs handlers and callbacks one at a time until the client is
// closed and the queue drained.
func (c *Client) dispatch() {
	defer close(c.dispatched)
	for {
		fn, ok := c.events.pop()
		if !ok {
			return
		}
		fn()
	}
}

// finish makes the client Closed for err and ends the dispatcher after
// what is queued.
func (c *Client) finish(err error) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.closeErr = err
	}
	err = c.closeErr
	c.mu.Unlock()
	if errors.Is(err, ErrClosed) {
		err = nil // asked for
	}
	c.setState(Closed, err)
	c.readers.Wait()
	c.events.close()
}

// keep pings, and after a drop reconnects with back-off, until Close or a
// permanent refusal. The back-off grows across connections that drop
// within stableConnection.
func (c *Client) keep(l *link) {
	defer c.keeper.Done()
	attempt := 0
	for {
		up := time.Now()
		err := c.serve(l)
		if time.Since(up) >= min(c.opts.MaxBackoff, stableConnection) {
			attempt = 0 // it stayed up: the next wait starts small again
		}
		if c.closing() {
			c.finish(ErrClosed)
			return
		}
		var ce *CloseError
		if c.opts.NoReconnect || (errors.As(err, &ce) && ce.Permanent()) {
			c.finish(err)
			return
		}
		c.setState(Disconnected, err)
		for l = nil; l == nil; attempt++ {
			if !c.sleep(c.backoff(attempt)) {
				c.finish(ErrClosed)
				return
			}
			c.setState(Connecting, nil)
			l, err = c.connect(c.ctx)
			if err != nil && c.closing() {
				c.finish(ErrClosed)
				return
			}
			if errors.As(err, &ce) && ce.Permanent() {
				c.finish(err)
				return
			}
			if err != nil {
				c.setState(Disconnected, err)
			}
		}
		c.resubscribe()
	}
}

// stableConnection is how long a connection must stay up (or MaxBackoff,
// if shorter) for the back-off to start again from MinBackoff: one that
// the server drops at once (1013, a slow consumer, ...) counts as a failed
// attempt, so that a server shedding load is not redialled every
// MinBackoff by every client.
const stableConnection = 10 * time.Second

// serve pings on l until it drops and returns why.
func (c *Client) serve(l *link) error {
	t := time.NewTicker(c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			c.drop(l, ErrClosed)
			return ErrClosed
		case <-t.C:
			_, _ = c.send(c.ctx, nil) // a failure drops l
		case <-l.done:
			return l.err
		}
	}
}

// backoff is the wait before reconnect attempt n: full jitter over
// min(MaxBackoff, MinBackoff·2^n).
func (c *Client) backoff(n int) time.Duration {
	ceiling := c.opts.MaxBackoff
	if n < 30 {
		ceiling = min(ceiling, c.opts.MinBackoff<<n)
	}
	return rand.N(ceiling) + 1
}

// sleep waits d unless the client closes first.
func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}
