package session

import "errors"

// ErrBrokerBusy is returned by Broker.Publish when its outbound queue is full:
// the broker is falling behind (or its server is down) and the caller should
// refuse the publish rather than wait.
var ErrBrokerBusy = errors.New("broker busy")

// Broker carries publishes between the nodes of a cluster. The hub delivers
// every publish to its own node's subscribers itself; the broker only moves
// publishes to and from other nodes.
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
