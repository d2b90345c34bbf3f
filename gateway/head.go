package gateway

import (
	"bytes"
	"fmt"
	"net/http"
)

// Refusals of a request head the loop answers itself, at once, instead of
// waiting for the handshake timeout or handing the request on. Each names
// what was wrong in its body, as nginx's 400 pages do.
var (
	// response400BareLF: a line ended with LF alone. RFC 9112 2.2 lets a
	// server accept that; we refuse it, because the head parsers behind
	// the loop (gobwas, net/http) would not agree on where lines end.
	response400BareLF = fixedResponse(http.StatusBadRequest, "request lines must end with CRLF")
	// response400TLS: the first byte of a TLS record (a ClientHello) came
	// to a plain-HTTP port. TLS clients recognise an HTTP answer (Go's
	// net/http: "server gave HTTP response to HTTPS client"), as nginx's
	// inverse 400 "The plain HTTP request was sent to HTTPS port".
	response400TLS = fixedResponse(http.StatusBadRequest, "this port speaks plain HTTP and ws://, not TLS: use http:// or ws://, or a TLS proxy in front")
	// response400Garbage: the request does not start with a method.
	response400Garbage = fixedResponse(http.StatusBadRequest, "malformed request line")
	// response400Path: dot segments or empty segments in the path.
	response400Path = fixedResponse(http.StatusBadRequest, `path must not contain "." or ".." segments or "//"`)
)

// tlsHandshakeRecord is the first byte of a TLS handshake record, the
// first byte a TLS client sends.
const tlsHandshakeRecord = 0x16

// fixedResponse builds an answer that closes the connection, with a short
// plain-text body and extra header lines ("Name: value").
func fixedResponse(status int, body string, headers ...string) []byte {
	body += "\n"
	b := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	for _, h := range headers {
		b = append(append(b, h...), "\r\n"...)
	}
	return fmt.Appendf(b, "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s",
		len(body), body)
}

// scanHead looks for the end of a request head in buf, resuming at from
// (every LF before from was checked already). It returns the head's length
// including its blank line, or -1 while the head is incomplete; or, when
// the bytes cannot be an HTTP/1 request head, the answer to send: a first
// byte that cannot start a request line (a TLS ClientHello, binary noise)
// or a line that ends with LF alone. Both are decided as soon as the byte
// arrives, not when the head ends or the handshake times out.
func scanHead(buf []byte, from int) (end int, refusal []byte) {
	if from == 0 && len(buf) > 0 && !canStartRequest(buf[0]) {
		if buf[0] == tlsHandshakeRecord {
			return -1, response400TLS
		}
		return -1, response400Garbage
	}
	for i := from; i < len(buf); {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			break
		}
		lf := i + j
		if lf == 0 || buf[lf-1] != '\r' {
			return -1, response400BareLF
		}
		if lf >= 3 && buf[lf-2] == '\n' { // "\r\n\r\n": the LF at lf-2 was checked already
			return lf + 1, nil
		}
		i = lf + 1
	}
	return -1, nil
}

// canStartRequest reports whether b may be the first byte of a request: a
// method's first character (an RFC 9110 token character) or the CR of an
// empty line before the request line (RFC 9112 2.2 lets a server skip
// one).
func canStartRequest(b byte) bool {
	switch {
	case 'A' <= b && b <= 'Z', 'a' <= b && b <= 'z', '0' <= b && b <= '9', b == '\r':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), b) >= 0
}

// requestTarget returns the request target of a head's request line (path
// and query as sent), or nil if the line has no second field.
func requestTarget(head []byte) []byte {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	_, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return nil
	}
	target, _, _ := bytes.Cut(rest, []byte(" "))
	return target
}

// cleanPath reports whether a request path may be routed as it is: an
// origin-form path ("/...") without "." or ".." segments (also written
// with %2e) and without empty segments ("//"). Such paths are refused,
// not normalised: routing on a normalised form would let "/api/ws/../ws"
// reach the KOsync route while a proxy in front or a log reader sees
// another path; no client of these protocols sends them. Other forms
// (absolute-form, "*") are left to the upgrade (404) and to net/http.
func cleanPath(path []byte) bool {
	if len(path) == 0 || path[0] != '/' {
		return true
	}
	for seg := range bytes.SplitSeq(path[1:], []byte("/")) {
		if isDotSegment(seg) {
			return false
		}
	}
	// An empty segment is "//", or a trailing "/" (which is fine).
	return !bytes.Contains(path, []byte("//"))
}

// isDotSegment reports whether a path segment is "." or "..", with each
// dot possibly percent-encoded (%2e, %2E), as RFC 3986 5.2.4 and most
// servers decode it.
func isDotSegment(seg []byte) bool {
	dots := 0
	for len(seg) > 0 {
		switch {
		case seg[0] == '.':
			seg = seg[1:]
		case len(seg) >= 3 && seg[0] == '%' && seg[1] == '2' && (seg[2] == 'e' || seg[2] == 'E'):
			seg = seg[3:]
		default:
			return false
		}
		dots++
	}
	return dots == 1 || dots == 2
}

// headerValue returns the value of the first header line named name
// (case-insensitive), trimmed, or nil.
func headerValue(head, name []byte) []byte {
	_, rest, _ := bytes.Cut(head, []byte("\r\n")) // skip the request line
	for line := range bytes.SplitSeq(rest, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), name) {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}
