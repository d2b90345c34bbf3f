package packet

// ServerPacket is one decoded client-bound packet. Only the fields of its
// ID are set: Millis (Pong), Channel and Payload (Message), Code and Text
// (Error), Channel (Subscribed), Channel, Offset and Payload (Publication),
// Channel, Epoch, Offset and Recovered (SubscribedFrom). The slices alias
// the message.
type ServerPacket struct {
	ID        byte
	Millis    int64
	Code      int16
	Channel   []byte
	Payload   []byte
	Text      []byte
	Epoch     int64
	Offset    int64
	Recovered byte // SubscribedFrom: 0 or 1 on the wire; any other value is kept as read
}

// ClientDecoder reads the client-bound packets of one message, for
// clients, tests and the load generator. It follows the same rules as
// Decoder: one per message, not goroutine-safe, errors are sticky.
type ClientDecoder struct {
	cur cursor
	err error
}

// NewClientDecoder returns a ClientDecoder over msg. It does not copy msg.
func NewClientDecoder(msg []byte) ClientDecoder {
	return ClientDecoder{cur: cursor{buf: msg}}
}

// Next decodes the next packet into p. It returns ok=false with err=nil at
// the clean end of the message; after an error p is zeroed and Offset
// points at the fault, as for Decoder.
func (d *ClientDecoder) Next(p *ServerPacket) (ok bool, err error) {
	if d.err != nil {
		*p = ServerPacket{}
		return false, d.err
	}
	if d.cur.atEnd() {
		return false, nil
	}
	if err := d.decode(p); err != nil {
		*p = ServerPacket{}
		d.err = err
		return false, err
	}
	return true, nil
}

// decode reads one packet; the cursor is not at the end.
func (d *ClientDecoder) decode(p *ServerPacket) error {
	start := d.cur.pos
	id, _ := d.cur.readByte()
	*p = ServerPacket{ID: id}
	var err error
	switch id {
	case PacketPong:
		p.Millis, err = d.cur.readInt64()
	case PacketMessage:
		if p.Channel, err = d.cur.readString(); err == nil {
			p.Payload, err = d.cur.readBytes()
		}
	case PacketError:
		if p.Code, err = d.cur.readInt16(); err == nil {
			p.Text, err = d.cur.readString()
		}
	case PacketSubscribed:
		p.Channel, err = d.cur.readString()
	case PacketPublication:
		if p.Channel, err = d.cur.readString(); err == nil {
			if p.Offset, err = d.cur.readInt64(); err == nil {
				p.Payload, err = d.cur.readBytes()
			}
		}
	case PacketSubscribedFrom:
		if p.Channel, err = d.cur.readString(); err == nil {
			if p.Epoch, err = d.cur.readInt64(); err == nil {
				if p.Offset, err = d.cur.readInt64(); err == nil {
					p.Recovered, err = d.cur.readByte()
				}
			}
		}
	default:
		d.cur.pos = start
		err = ErrUnknownPacket
	}
	return err
}

// Offset has the same meaning as Decoder.Offset.
func (d *ClientDecoder) Offset() int { return d.cur.pos }
