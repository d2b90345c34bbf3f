package session

import (
	"context"
	"errors"
	"fmt"
)

// ErrBrokerBusy is returned by Broker.Publish when its outbound queue is full:
// the broker is falling behind (or its server is down) and the caller should
// refuse the publish rather than wait.
var ErrBrokerBusy = errors.New("broker busy")

// ErrBrokerDown is returned by Broker.Publish for a channel that Echoes
// while the broker knows its server is unreachable: such a publish would
// reach nobody, not even this node's subscribers, so it is refused at once
// instead of accepted and lost. It wraps ErrBrokerBusy: it is a refusal to
// retry later, and callers that refuse a busy broker refuse it too.
var ErrBrokerDown = fmt.Errorf("broker's server unreachable: %w", ErrBrokerBusy)

// Broker carries publishes between the nodes of a cluster. The hub delivers
// every publish to its own node's subscribers itself; the broker only moves
// publishes to and from other nodes. The exception are channels for which a
// broker that is also an Echoer says Echoes: there the broker brings the
// node's own publishes back and the hub delivers only that copy.
//
// All methods are goroutine-safe and never block: they are called from event
// loops. Work that needs I/O is queued to the broker's own goroutines.
type Broker interface {
	// Start connects the broker and begins calling h. It returns when the
	// broker is running; a broker whose server is down must still start and
	// keep retrying in the background.
	Start(h BrokerHandler) error
	// Publish sends a channel's payload to the other nodes. It must not block
	// and must not retain payload after returning (copy it if queued).
	Publish(channel string, payload []byte) error
	// Subscribe asks for the channel's publishes from other nodes. The hub
	// calls it when the node's first subscriber of the channel arrives and
	// calls Unsubscribe when the last one leaves, so calls alternate per
	// channel; it calls them with its own lock held, so a broker must not
	// call back into the handler from inside Subscribe or Unsubscribe. The
	// broker calls BrokerHandler.Live, later and from its own goroutine,
	// once publishes of the channel from other nodes are sure to arrive.
	Subscribe(channel string)
	// Unsubscribe stops the channel's publishes from other nodes.
	Unsubscribe(channel string)
	// Close stops the broker and waits for its goroutines.
	Close() error
}

// Echoer is implemented by a Broker that, for some channels, carries a
// node's own publishes back to it: on a channel for which Echoes is true,
// the hub does not deliver a publish to its local subscribers; it only
// hands it to Publish, and the local subscribers get the copy the broker
// delivers (through BrokerHandler.Deliver, like any other node's publish),
// so every node delivers the channel in the broker's one order. That is how
// a channel with no room for an envelope (wsify's raw Redis channels, which
// other wsify servers share) is deduplicated without one.
//
// On such a channel Message.Origin is zero (the broker does not carry it),
// a subscriber receives nothing until the broker's subscription is live
// (not even its own node's publishes), and a publish accepted while the
// server is unreachable reaches nobody: Publish should refuse it with
// ErrBrokerDown when the broker knows. Echoes is called on every publish:
// it must be goroutine-safe, quick, allocation-free and deterministic.
type Echoer interface {
	Echoes(channel string) bool
}

// Confirmer is implemented by a Broker that can wait for its server's
// answer to a publish. On a channel the broker Echoes a publish that does
// not reach the server reaches nobody, not even the publishing node, so a
// caller that can wait (an HTTP handler, never an event loop) learns
// whether it went out instead of hearing "accepted" and losing it.
type Confirmer interface {
	// PublishConfirmed is Publish, then waits until the server took the
	// publish (nil) or failed it (an error wrapping ErrBrokerDown), or ctx
	// ends (ctx's error: the publish may still go out). It returns
	// Publish's refusals at once.
	PublishConfirmed(ctx context.Context, channel string, payload []byte) error
}

// BrokerHandler receives what a Broker brings in. Its methods are
// goroutine-safe and do not block; the broker calls them from its own
// goroutines.
type BrokerHandler interface {
	// Deliver hands a publish from another node to the local subscribers.
	// payload is owned by the handler from then on.
	Deliver(channel string, payload []byte)
	// Live reports that a channel asked for with Subscribe is live.
	Live(channel string)
	// Reconnected reports that the broker lost and regained its server:
	// publishes from other nodes may have been lost meanwhile.
	Reconnected()
}

// PositionHandler is implemented by a BrokerHandler that takes publishes
// with their position in a channel's history (envelope version 2 of the
// Redis broker); a handler without it gets them through Deliver.
type PositionHandler interface {
	// DeliverAt is Deliver with the position; origin is the publishing
	// session when it lives on this node (zero otherwise).
	DeliverAt(channel string, payload []byte, origin uint64, epoch, offset int64)
}

// Standalone is the Broker of a node that runs alone: there are no other
// nodes, so publishes go nowhere and subscriptions are live at once (the hub
// knows this broker and marks its channels live itself).
type Standalone struct{}

// Start implements Broker.
func (*Standalone) Start(BrokerHandler) error { return nil }

// Publish implements Broker: there is no other node to send to.
func (*Standalone) Publish(string, []byte) error { return nil }

// Subscribe implements Broker.
func (*Standalone) Subscribe(string) {}

// Unsubscribe implements Broker.
func (*Standalone) Unsubscribe(string) {}

// Close implements Broker.
func (*Standalone) Close() error { return nil }
