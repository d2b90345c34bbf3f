package session

// What a status page reads of a shard. Both run on the shard's loop.

// EachTopic calls fn for every channel with subscribers on the shard, with
// how many of its sessions subscribed (live or waiting for the broker). It
// costs O(channels of the shard): for an operator's status page, never per
// message. fn must not subscribe or unsubscribe.
func (sh *Shard) EachTopic(fn func(channel string, subscribers int)) {
	for channel, t := range sh.topics {
		fn(channel, len(t.live)+len(t.pending))
	}
}

// Subscribers returns how many of the shard's sessions subscribed to
// channel (live or waiting): O(1).
func (sh *Shard) Subscribers(channel string) int {
	if t := sh.topics[channel]; t != nil {
		return len(t.live) + len(t.pending)
	}
	return 0
}
