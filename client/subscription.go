package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsgateway/gateway/packet"
)

// Publication is one publish received on a subscription.
type Publication struct {
	Channel string
	Payload []byte // the client's own copy
	// Offset is the publication's place in the channel's history: 1, 2, ...
	// within an epoch; zero on a subscription without recovery.
	Offset int64
}

// Handler receives the publications of a subscription, on the dispatcher.
type Handler func(Publication)

// SubscribedEvent tells a subscription's OnSubscribed callback that the
// subscription is live (again).
type SubscribedEvent struct {
	Channel string
	// Resubscribed: after a reconnect, not the first Subscribe.
	Resubscribed bool
	// Epoch and Offset: with recovery, the position the client now has;
	// the next Publication is Offset+1.
	Epoch, Offset int64
	// Recovered: with recovery, whether every publication after the
	// subscription's last position was replayed. False means some were
	// lost: resynchronise from your own source of truth.
	Recovered bool
	// Err is set when a resubscription was refused; the subscription is
	// gone.
	Err error
}

// SubscribeOption modifies a Subscribe.
type SubscribeOption func(*Subscription)

// WithRecovery subscribes with SubscribeFrom (PROTOCOL.md §5.1), on a
// channel that keeps history: publications arrive with their offsets, and
// a resubscription after a reconnect asks for everything after the last
// one received.
func WithRecovery() SubscribeOption { return func(s *Subscription) { s.recover = true } }

// From sets the position a recovering subscription starts from (one saved
// by an earlier run of the application); it implies WithRecovery.
func From(epoch, offset int64) SubscribeOption {
	return func(s *Subscription) { s.recover, s.epoch, s.offset = true, epoch, offset }
}

// OnSubscribed sets a callback told each time the subscription becomes
// live, with what was recovered.
func OnSubscribed(fn func(SubscribedEvent)) SubscribeOption {
	return func(s *Subscription) { s.onSubscribed = fn }
}

// Subscription is one channel the client receives. Its fields are guarded
// by the client's mutex.
type Subscription struct {
	c            *Client
	channel      string
	handler      Handler
	recover      bool
	onSubscribed func(SubscribedEvent)

	epoch, offset int64         // the last position received (recovery)
	firstLive     chan struct{} // closed at the first Subscribed; never replaced
	wasLive       bool          // firstLive was closed
	resubscribed  bool          // the current subscribe follows a reconnect
}

// Channel returns the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Position returns the last position received on a recovering
// subscription (0, 0 before any).
func (s *Subscription) Position() (epoch, offset int64) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.epoch, s.offset
}

// Unsubscribe stops the subscription.
func (s *Subscription) Unsubscribe(ctx context.Context) error { return s.c.Unsubscribe(ctx, s.channel) }

// ErrSubscribed is returned by Subscribe for a channel the client already
// subscribed to.
var ErrSubscribed = errors.New("client: already subscribed")

// Subscribe subscribes to channel and returns once the subscription is
// live (Subscribed, or SubscribedFrom with recovery) or refused
// (*ServerError). handler receives the channel's publications.
func (c *Client) Subscribe(ctx context.Context, channel string, handler Handler, opts ...SubscribeOption) (*Subscription, error) {
	s := &Subscription{c: c, channel: channel, handler: handler, firstLive: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	c.mu.Lock()
	if _, ok := c.subs[channel]; ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrSubscribed, channel)
	}
	c.subs[channel] = s
	c.mu.Unlock()
	if err := c.request(ctx, s.packet()); err != nil {
		c.forget(s)
		return nil, err
	}
	// A reconnect between the Pong and Subscribed resubscribes s, and the
	// new connection's Subscribed closes firstLive.
	select {
	case <-s.firstLive:
		return s, nil
	case <-ctx.Done():
		_ = c.Unsubscribe(context.WithoutCancel(ctx), channel)
		return nil, ctx.Err()
	}
}

// Unsubscribe stops receiving channel; nothing of it is delivered after it
// returns.
func (c *Client) Unsubscribe(ctx context.Context, channel string) error {
	c.mu.Lock()
	s := c.subs[channel]
	c.mu.Unlock()
	if s != nil {
		c.forget(s)
	}
	err := c.request(ctx, packet.AppendUnsubscribe(nil, channel))
	if errors.Is(err, ErrDisconnected) {
		return nil // the next connection will not subscribe it
	}
	return err
}

func (c *Client) forget(s *Subscription) {
	c.mu.Lock()
	if c.subs[s.channel] == s {
		delete(c.subs, s.channel)
	}
	c.mu.Unlock()
}

// packet is the subscribe request for s: with recovery, from its position.
func (s *Subscription) packet() []byte {
	if !s.recover {
		return packet.AppendSubscribe(nil, s.channel)
	}
	s.c.mu.Lock()
	e, o := s.epoch, s.offset
	s.c.mu.Unlock()
	return packet.AppendSubscribeFrom(nil, s.channel, e, o)
}

// resubscribe subscribes every subscription again on a new connection,
// all requests sent before any answer is awaited.
func (c *Client) resubscribe() {
	c.mu.Lock()
	subs := make([]*Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		s.resubscribed = true
		subs = append(subs, s)
	}
	c.mu.Unlock()
	waiters := make([]*waiter, len(subs))
	for i, s := range subs {
		w, err := c.send(c.ctx, s.packet())
		if err != nil {
			return // dropped again: the keeper reconnects and comes back here
		}
		waiters[i] = w
	}
	for i, w := range waiters {
		<-w.done
		var se *ServerError
		if errors.As(w.err, &se) {
			s := subs[i]
			c.forget(s)
			if fn := s.onSubscribed; fn != nil {
				c.queue(func() { fn(SubscribedEvent{Channel: s.channel, Resubscribed: true, Err: se}) })
			}
		}
	}
}

// read decodes what arrives on l until it drops.
func (c *Client) read(l *link) {
	defer c.readers.Done()
	for {
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.PingInterval+c.opts.PongWait)
		_, msg, err := l.conn.Read(ctx)
		cancel()
		if err != nil {
			if ctx.Err() == context.DeadlineExceeded && c.ctx.Err() == nil {
				err = fmt.Errorf("client: nothing from the server for %v", c.opts.PingInterval+c.opts.PongWait)
			}
			c.drop(l, err)
			return
		}
		if err := c.handle(msg); err != nil {
			c.drop(l, err)
			return
		}
	}
}

// handle runs the packets of one message from the server.
func (c *Client) handle(msg []byte) error {
	d := packet.NewClientDecoder(msg)
	var p packet.ServerPacket
	for {
		ok, err := d.Next(&p)
		if err != nil {
			return fmt.Errorf("client: bad message from the server: %w at byte %d", err, d.Offset())
		}
		if !ok {
			return nil
		}
		switch p.ID {
		case packet.PacketPong:
			c.answered(nil, p.Millis)
		case packet.PacketError:
			c.answered(&ServerError{Code: p.Code, Text: string(p.Text)}, 0)
		case packet.PacketMessage:
			c.deliver(string(p.Channel), p.Payload, 0)
		case packet.PacketPublication:
			c.deliver(string(p.Channel), p.Payload, p.Offset)
		case packet.PacketSubscribed:
			c.subscribed(string(p.Channel), false, 0, 0, false)
		case packet.PacketSubscribedFrom:
			c.subscribed(string(p.Channel), true, p.Epoch, p.Offset, p.Recovered == 1)
		}
	}
}

// answered records a Pong (se nil) or an Error for the oldest request
// waiting: an Error marks it refused, its Pong then releases it. The
// server answers the packets of a message in order and refuses a request
// at once, so the Error comes between the Pong of the request before and
// the request's own Pong. An Error with no request waiting goes to
// OnError. millis is a Pong's server clock.
func (c *Client) answered(se *ServerError, millis int64) {
	c.mu.Lock()
	var w *waiter
	if len(c.waiters) > 0 {
		w = c.waiters[0]
	}
	switch {
	case w == nil || (se != nil && w.err != nil):
		c.mu.Unlock()
		if fn := c.opts.OnError; se != nil && fn != nil {
			c.queue(func() { fn(se) })
		}
	case se != nil:
		w.err = se
		c.mu.Unlock()
	default:
		c.waiters[0] = nil
		c.waiters = c.waiters[1:]
		w.millis = millis
		c.mu.Unlock()
		close(w.done)
	}
}

// deliver queues a publication for its subscription's handler.
func (c *Client) deliver(channel string, payload []byte, offset int64) {
	c.mu.Lock()
	s := c.subs[channel]
	if s != nil && offset > 0 {
		if offset <= s.offset {
			// Had already: the server's offsets only rise after a
			// SubscribedFrom, so this is a second replay of the same
			// publications (a Subscribe and a reconnect's resubscribe both
			// sent the subscription).
			c.mu.Unlock()
			return
		}
		s.offset = offset
	}
	c.mu.Unlock()
	if s == nil || s.handler == nil {
		return
	}
	p := Publication{Channel: channel, Payload: append([]byte(nil), payload...), Offset: offset}
	c.queue(func() {
		if c.current(s) {
			s.handler(p)
		}
	})
}

// current reports whether s is still subscribed.
func (c *Client) current(s *Subscription) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[s.channel] == s
}

// subscribed handles Subscribed and SubscribedFrom (prompted or not).
func (c *Client) subscribed(channel string, from bool, epoch, offset int64, recovered bool) {
	c.mu.Lock()
	s := c.subs[channel]
	if s == nil {
		c.mu.Unlock()
		return
	}
	if from {
		s.epoch, s.offset = epoch, offset
	}
	ev := SubscribedEvent{Channel: channel, Resubscribed: s.resubscribed, Epoch: epoch, Offset: offset, Recovered: recovered || !from}
	if !s.wasLive {
		s.wasLive = true
		close(s.firstLive)
	}
	fn := s.onSubscribed
	c.mu.Unlock()
	if fn != nil {
		c.queue(func() { fn(ev) })
	}
}
