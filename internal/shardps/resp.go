package shardps

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unsafe"
)

// maxBulk bounds one bulk string read from Redis: Redis's own default
// proto-max-bulk-len, so anything Redis accepted can be read, and a broken
// stream cannot make the reader allocate without bound.
const maxBulk = 512 << 20

// reply is one RESP2 reply on a subscribed connection: an array of three
// (kind, channel, payload-or-count) or an error line.
type reply struct {
	kind    string // "smessage", "ssubscribe", "sunsubscribe", "pong"; "" for an error
	channel string
	payload string // smessage's payload
	err     string // an error reply's text ("MOVED 1234 host:port")
}

// errProtocol reports a reply this package does not expect: the connection
// is given up.
var errProtocol = errors.New("shardps: unexpected reply from Redis")

// replyReader reads replies. It interns channel names, which repeat on
// every message, so a message costs one allocation (its payload).
type replyReader struct {
	r      *bufio.Reader
	intern map[string]string
}

// internMax bounds the interned channel names; past it the map starts over.
const internMax = 4096

func newReplyReader(r io.Reader) *replyReader {
	return &replyReader{r: bufio.NewReaderSize(r, 32<<10), intern: make(map[string]string)}
}

func (rr *replyReader) read() (reply, error) {
	line, err := rr.line()
	if err != nil {
		return reply{}, err
	}
	switch line[0] {
	case '-':
		return reply{err: string(line[1:])}, nil
	case '*':
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil || n < 2 || n > 3 {
			return reply{}, fmt.Errorf("%w: array %q", errProtocol, line)
		}
		kind, err := rr.bulk(false)
		if err != nil {
			return reply{}, err
		}
		rep := reply{kind: kind}
		if rep.channel, err = rr.bulk(true); err != nil {
			return reply{}, err
		}
		if n == 3 {
			if kind == "smessage" {
				rep.payload, err = rr.bulk(false)
			} else {
				_, err = rr.line() // the subscription count
			}
		}
		return rep, err
	}
	return reply{}, fmt.Errorf("%w: %q", errProtocol, line)
}

// line returns the next line without its CRLF; valid until the next read.
func (rr *replyReader) line() ([]byte, error) {
	line, err := rr.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line too long", errProtocol)
		}
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line %q", errProtocol, line)
	}
	return line[:len(line)-2], nil
}

// bulk reads one bulk string, interned if asked.
func (rr *replyReader) bulk(intern bool) (string, error) {
	line, err := rr.line()
	if err != nil {
		return "", err
	}
	if line[0] != '$' {
		return "", fmt.Errorf("%w: want a bulk string, got %q", errProtocol, line)
	}
	n, err := strconv.Atoi(string(line[1:]))
	if err != nil || n < 0 || n > maxBulk {
		return "", fmt.Errorf("%w: bulk length %q", errProtocol, line)
	}
	if intern && n+2 <= rr.r.Size() {
		b, err := rr.r.Peek(n + 2)
		if err != nil {
			return "", err
		}
		s, ok := rr.intern[string(b[:n])]
		if !ok {
			if len(rr.intern) >= internMax {
				clear(rr.intern)
			}
			s = string(b[:n])
			rr.intern[s] = s
		}
		_, _ = rr.r.Discard(n + 2)
		return s, nil
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(rr.r, b); err != nil {
		return "", err
	}
	if n == 0 {
		return "", nil
	}
	// b is never written again: the string may share it (one allocation
	// per payload instead of two).
	return unsafe.String(&b[0], n), nil
}

// appendCommand appends a RESP2 command of bulk strings to buf.
func appendCommand(buf []byte, args ...string) []byte {
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(len(args)), 10)
	buf = append(buf, '\r', '\n')
	for _, a := range args {
		buf = append(buf, '$')
		buf = strconv.AppendInt(buf, int64(len(a)), 10)
		buf = append(buf, '\r', '\n')
		buf = append(buf, a...)
		buf = append(buf, '\r', '\n')
	}
	return buf
}
