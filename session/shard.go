package session

// Shard is one event loop's part of the hub: its sessions and its topics.
// Every method runs on that loop.
type Shard struct {
	hub      *Hub
	loop     Loop
	bit      uint64 // 1 << index in the hub
	sessions []*Session
	topics   map[string]*topic
	enc      EncodeCache

	// walking counts the iterations over sessions under way; a Remove that
	// happens meanwhile (a write error closes a connection from inside a
	// delivery) waits in removeLater until they end.
	walking     int
	removeLater []*Session

	// Stored method values: Loop.Run takes them without allocating.
	deliverTask, liveTask, fetchedTask, dropTask func(any)
}

// topic is a channel's subscribers on one shard. Sessions wait in pending
// until the channel is live across the cluster, then move to live.
type topic struct {
	live    []*Session
	pending []*Session
	// positioned are the sessions subscribed with SubscribeFrom; each
	// keeps its position in its subscription (recovery.go).
	positioned []*Session
	isLive     bool
}

func (t *topic) empty() bool {
	return len(t.live) == 0 && len(t.pending) == 0 && len(t.positioned) == 0
}

// topic returns channel's topic, joining the hub for a new one.
func (sh *Shard) topic(channel string) *topic {
	t := sh.topics[channel]
	if t == nil {
		t = &topic{}
		sh.topics[channel] = t
		t.isLive = sh.hub.join(channel, sh.bit)
	}
	return t
}

// Add registers an authenticated session with the shard.
func (sh *Shard) Add(s *Session) {
	s.index = len(sh.sessions)
	sh.sessions = append(sh.sessions, s)
	sh.hub.sessions.Add(1)
}

// holds reports whether s was added to this shard and not removed.
func (sh *Shard) holds(s *Session) bool {
	return s.index >= 0 && s.index < len(sh.sessions) && sh.sessions[s.index] == s
}

// Remove unsubscribes s from everything and forgets it: O(subscriptions of
// s). Safe to call for a session that was never added, and from inside a
// delivery or Each (the removal then waits until the iteration ends).
func (sh *Shard) Remove(s *Session) {
	if !sh.holds(s) {
		return
	}
	if sh.walking > 0 {
		sh.removeLater = append(sh.removeLater, s)
		return
	}
	for len(s.subs) > 0 {
		sh.Unsubscribe(s, s.subs[len(s.subs)-1].channel)
	}
	last := len(sh.sessions) - 1
	moved := sh.sessions[last]
	sh.sessions[s.index] = moved
	moved.index = s.index
	sh.sessions[last] = nil
	sh.sessions = sh.sessions[:last]
	s.index = -1
	sh.hub.sessions.Add(-1)
}

// EndBatch tells the shard that its loop finished a batch of tasks and
// wrote what they queued: the encoded frames may be reused.
func (sh *Shard) EndBatch() { sh.enc.endBatch() }

// Len returns the number of sessions on the shard.
func (sh *Shard) Len() int { return len(sh.sessions) }

// Each calls fn for every session of the shard. fn may close sessions;
// sessions removed meanwhile leave once Each is done.
func (sh *Shard) Each(fn func(*Session)) {
	sh.walking++
	defer sh.doneWalking()
	for i := 0; i < len(sh.sessions); i++ {
		sh.eachOne(fn, sh.sessions[i])
	}
}

func (sh *Shard) eachOne(fn func(*Session), s *Session) {
	defer sh.recoverSink(s)
	fn(s)
}

// doneWalking ends an iteration and runs the removals it held back.
func (sh *Shard) doneWalking() {
	sh.walking--
	if sh.walking > 0 {
		return
	}
	for len(sh.removeLater) > 0 {
		s := sh.removeLater[len(sh.removeLater)-1]
		sh.removeLater[len(sh.removeLater)-1] = nil
		sh.removeLater = sh.removeLater[:len(sh.removeLater)-1]
		sh.Remove(s)
	}
}

// Subscribe subscribes s to channel. If the channel is already live the
// sink's Subscribed runs before Subscribe returns; otherwise it runs once the
// broker confirms. Subscribing twice is a no-op apart from a fresh
// Subscribed when the subscription is live. A new channel past the
// session's cap is refused with ErrTooManySubscriptions. Cost: O(1).
func (sh *Shard) Subscribe(s *Session, channel string) error {
	if i := s.find(channel); i >= 0 {
		if s.subs[i].rec == nil {
			if s.subs[i].live {
				s.Sink.Subscribed(channel)
			}
			return nil
		}
		sh.Unsubscribe(s, channel) // a SubscribeFrom subscription is replaced
	}
	if s.atCap() {
		sh.hub.stats.SubscriptionRefusals.Add(1)
		return ErrTooManySubscriptions
	}
	t := sh.topic(channel)
	if t.isLive {
		s.addSub(subscription{channel: channel, index: int32(len(t.live)), live: true})
		t.live = append(t.live, s)
		s.Sink.Subscribed(channel)
		return nil
	}
	s.addSub(subscription{channel: channel, index: int32(len(t.pending))})
	t.pending = append(t.pending, s)
	return nil
}

// Unsubscribe removes s from channel; a channel not subscribed is a no-op.
// Cost: O(1).
func (sh *Shard) Unsubscribe(s *Session, channel string) {
	i := s.find(channel)
	if i < 0 {
		return
	}
	sub := s.subs[i]
	s.removeSub(i)

	t := sh.topics[channel]
	switch {
	case sub.rec != nil:
		sub.rec.state = recGone
		t.positioned = removeAt(t.positioned, int(sub.index), channel)
	case sub.live:
		t.live = removeAt(t.live, int(sub.index), channel)
	default:
		t.pending = removeAt(t.pending, int(sub.index), channel)
	}
	if t.empty() {
		delete(sh.topics, channel)
		sh.hub.leave(channel, sh.bit)
	}
}

// removeAt swap-removes list[i] and fixes the index the moved session keeps
// for channel.
func removeAt(list []*Session, i int, channel string) []*Session {
	last := len(list) - 1
	moved := list[last]
	list[i] = moved
	list[last] = nil
	if moved != nil && i != last {
		moved.subs[moved.find(channel)].index = int32(i)
	}
	return list[:last]
}

// deliver runs a publish on the loop: every subscriber gets it, including
// those still waiting for the broker's confirmation (what reaches this node
// is theirs; the confirmation is about publishes from other nodes).
func (sh *Shard) deliver(arg any) {
	m := arg.(*Message)
	t := sh.topics[m.Channel]
	if t == nil {
		return
	}
	sh.enc.reset(m)
	sh.walking++
	defer sh.doneWalking()
	for i := 0; i < len(t.live); i++ {
		sh.deliverTo(t.live[i], m)
	}
	for i := 0; i < len(t.pending); i++ {
		sh.deliverTo(t.pending[i], m)
	}
	for i := 0; i < len(t.positioned); i++ {
		sh.deliverPositioned(t.positioned[i], m, &sh.enc)
	}
	sh.enc.reset(nil)
}

// deliverTo hands m to one session; a panic in its Sink is the loop's to
// handle (the session is closed), and the other subscribers still get m.
func (sh *Shard) deliverTo(s *Session, m *Message) {
	defer sh.recoverSink(s)
	s.Sink.Deliver(m, &sh.enc)
}

func (sh *Shard) recoverSink(s *Session) {
	if v := recover(); v != nil {
		sh.loop.SinkPanicked(s, v)
	}
}

// markLive runs on the loop when the broker confirmed a channel: waiting
// sessions become live and learn it.
func (sh *Shard) markLive(arg any) {
	channel := *arg.(*string)
	t := sh.topics[channel]
	if t == nil || t.isLive {
		return
	}
	t.isLive = true
	t.live, t.pending = t.pending, nil // nobody is live before the topic is
	for i, s := range t.live {
		sub := &s.subs[s.find(channel)]
		sub.live, sub.index = true, int32(i)
	}
	sh.walking++
	defer sh.doneWalking()
	for _, s := range t.live {
		sh.subscribedTo(s, channel)
	}
	for i := 0; i < len(t.positioned); i++ {
		sh.startRecovery(t.positioned[i], channel)
	}
}

func (sh *Shard) subscribedTo(s *Session, channel string) {
	defer sh.recoverSink(s)
	s.Sink.Subscribed(channel)
}
