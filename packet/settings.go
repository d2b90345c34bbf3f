package packet

// Setting is one entry of a Settings packet. Only the field matching ID's
// value type is set: Byte for SettingEcho, String for SettingClientName
// (a subslice of the message), Short for SettingBatchWindow.
type Setting struct {
	ID     byte
	Byte   int8
	Short  int16
	String []byte
}

// readSettings reads the body of a Settings packet up to and including its
// terminator and returns the body without the terminator.
func (c *cursor) readSettings() ([]byte, error) {
	start := c.pos
	for {
		idPos := c.pos
		id, err := c.readByte()
		if err != nil {
			return nil, err // no terminator: pos is len(msg)
		}
		if id == SettingsTerminator {
			return c.buf[start:idPos:idPos], nil
		}
		var s Setting
		if err := c.readSettingValue(id, &s); err != nil {
			return nil, err
		}
	}
}

// readSettingValue reads the value of setting id into s. For an unknown id
// it rewinds to the id byte so the error points at it.
func (c *cursor) readSettingValue(id byte, s *Setting) error {
	*s = Setting{ID: id}
	var err error
	switch id {
	case SettingEcho:
		var b byte
		b, err = c.readByte()
		s.Byte = int8(b)
	case SettingClientName:
		s.String, err = c.readString()
	case SettingBatchWindow:
		s.Short, err = c.readInt16()
	default:
		c.pos--
		err = ErrUnknownSetting
	}
	return err
}

// SettingsReader walks the settings of a Settings packet, as found in
// Packet.Settings. Like Decoder it is a per-message value, not to be shared
// between goroutines.
type SettingsReader struct {
	cur cursor
}

// NewSettingsReader returns a reader over raw, the terminator-free body of
// a Settings packet.
func NewSettingsReader(raw []byte) SettingsReader {
	return SettingsReader{cur: cursor{buf: raw}}
}

// Next reads the next setting into s and reports whether there was one.
// raw was validated by the Decoder, so there is no error to return; fed
// malformed bytes anyway, Next stops (returns false) instead of panicking.
func (r *SettingsReader) Next(s *Setting) bool {
	id, err := r.cur.readByte()
	if err != nil {
		return false
	}
	if err := r.cur.readSettingValue(id, s); err != nil {
		r.cur.pos = len(r.cur.buf) // stay stopped
		*s = Setting{}
		return false
	}
	return true
}
