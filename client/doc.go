// Package client is the Go client of the gateway's native protocol
// (PROTOCOL.md): it authenticates, keeps the session alive with Pings,
// subscribes and publishes, and after a drop reconnects with exponential
// back-off and full jitter, re-authenticates and resubscribes every
// subscription, from its last position on channels with history.
//
//	c, err := client.Dial(ctx, "ws://127.0.0.1:8080/api/ws", client.Options{Key: key})
//	sub, err := c.Subscribe(ctx, "room", func(p client.Publication) { ... })
//	err = c.Publish(ctx, "room", []byte("hello"))
//	c.Close()
//
// # Requests and answers
//
// The protocol has no request ids. The client appends a Ping to every
// request it sends; the server answers the packets of a message in order,
// so an Error that arrives before that Ping's Pong is the answer to the
// request, and the Pong says the request was accepted. Publish, Subscribe,
// Unsubscribe and SetSettings therefore return the server's refusal as a
// *ServerError (403, 429, 503, ...), or nil once it was accepted.
// Subscribe also waits for Subscribed (or SubscribedFrom): the subscription
// is live across the cluster when it returns.
//
// # Goroutines and callbacks
//
// A client runs three goroutines whatever its subscriptions: a reader, a
// dispatcher and a keeper (keepalive and reconnects). Handlers and the
// OnState and OnSubscribed callbacks run one at a time on the dispatcher,
// in the order the server sent what they report; they may call the
// client's methods. A handler that blocks holds up every later delivery;
// the dispatcher's queue is bounded (Options.QueueSize), and when it is
// full the reader stops reading, so the server sees a slow consumer;
// except while a callback waits for the answer to a request it made,
// which only the reader can take: then the reader queues past the bound.
//
// # Reconnecting
//
// After a drop or a close the protocol says to reconnect after (1001,
// 1008, 1013, 3003, 3005, 3006, and abnormal closes), the client waits a
// random time up to min(MaxBackoff, MinBackoff·2^attempt) and dials again;
// attempt counts from the last connection that stayed up 10 s (or
// MaxBackoff, if shorter), so a server that drops connections right after
// accepting them is not redialled every MinBackoff.
// After 3001, 3002 or 3004 (the key is refused) it stops: the state goes
// to Closed with a *CloseError, and every later call fails with it.
// Requests made while disconnected fail at once with ErrDisconnected; they
// are not queued.
package client
