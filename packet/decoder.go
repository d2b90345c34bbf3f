package packet

// Packet is one decoded server-bound packet. The slices alias the message.
type Packet struct {
	ID       byte
	Channel  []byte // Subscribe, Unsubscribe, Publish, SubscribeFrom: subslice of the message
	Payload  []byte // Publish
	Epoch    int64  // SubscribeFrom
	Offset   int64  // SubscribeFrom
	Settings []byte // Settings: the raw setting bytes, terminator excluded; iterate with SettingsReader
}

// Decoder reads the server-bound packets of one message in order. It is a
// value meant to live on the stack: make one per message and do not share
// it between goroutines.
type Decoder struct {
	cur cursor
	err error
}

// NewDecoder returns a Decoder over msg. It does not copy msg.
func NewDecoder(msg []byte) Decoder {
	return Decoder{cur: cursor{buf: msg}}
}

// Next decodes the next packet into p. It returns ok=false with err=nil at
// the clean end of the message. After an error p is zeroed, Offset reports
// the position of the byte at fault, and every later call returns the same
// error.
//
// Only the structure is checked (ids, lengths, UTF-8), not value ranges
// such as the echo flag or the batch window: those are the server's job.
func (d *Decoder) Next(p *Packet) (ok bool, err error) {
	if d.err != nil {
		*p = Packet{}
		return false, d.err
	}
	if d.cur.atEnd() {
		return false, nil
	}
	if err := d.decode(p); err != nil {
		*p = Packet{}
		d.err = err
		return false, err
	}
	return true, nil
}

// decode reads one packet; the cursor is not at the end.
func (d *Decoder) decode(p *Packet) error {
	start := d.cur.pos
	id, _ := d.cur.readByte()
	*p = Packet{ID: id}
	var err error
	switch id {
	case PacketPing:
	case PacketSettings:
		p.Settings, err = d.cur.readSettings()
	case PacketSubscribe, PacketUnsubscribe:
		p.Channel, err = d.cur.readString()
	case PacketPublish:
		if p.Channel, err = d.cur.readString(); err == nil {
			p.Payload, err = d.cur.readBytes()
		}
	case PacketSubscribeFrom:
		if p.Channel, err = d.cur.readString(); err == nil {
			if p.Epoch, err = d.cur.readInt64(); err == nil {
				p.Offset, err = d.cur.readInt64()
			}
		}
	default:
		d.cur.pos = start
		err = ErrUnknownPacket
	}
	return err
}

// Offset returns how far the decoder got: after a successful Next, the
// start of the next packet (len(msg) at the end); after an error, the
// position of what is at fault: the unknown packet or setting id, the
// length prefix of a string or bytes value that is negative, cut off or
// not UTF-8, the fixed-size value that is cut off, or len(msg) when a
// Settings packet lacks its terminator.
func (d *Decoder) Offset() int { return d.cur.pos }

// Validate checks the structure of a whole server-bound message with the
// same rules as Decoder.Next. An empty message is valid: it holds zero
// packets. Use a Decoder instead to learn the offset of an error.
func Validate(msg []byte) error {
	d := NewDecoder(msg)
	var p Packet
	for {
		ok, err := d.Next(&p)
		if !ok {
			return err
		}
	}
}
