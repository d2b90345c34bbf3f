package hypothesis

import (
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// viaPrefix is stripped from proxied URLs (h's VIA_PREFIX).
const viaPrefix = "https://via.hypothes.is/"

// Safe sets of h/util/uri.py, on top of Python's always-safe
// A-Z a-z 0-9 _ . - ~.
const (
	safePathSegment = "-._~:@!$&'()*+,;="
	safeQueryName   = "-._~:@!$'()*,"
	safeQueryValue  = "-._~:@!$'()*,="
)

var (
	pathSafe  = safeTable(safePathSegment)
	nameSafe  = safeTable(safeQueryName)
	valueSafe = safeTable(safeQueryValue)
)

func safeTable(extra string) *[256]bool {
	var t [256]bool
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_.-~" + extra {
		t[c] = true
	}
	return &t
}

// droppedParams are h's BLACKLISTED_QUERY_PARAMS, matched against decoded
// names with Python's re.match semantics: "$" also matches before a final
// newline, and only x-amz-security-token is case-insensitive (Python folds
// the dotted and dotless i with i, which Go's (?i) does not: hence the class).
var droppedParams = []*regexp.Regexp{
	regexp.MustCompile(`^gclid\n?$`),
	regexp.MustCompile(`^utm_(campaign|content|medium|source|term)\n?$`),
	regexp.MustCompile(`^WT\..+\n?$`),
	regexp.MustCompile(`(?i)^x-amz-secur[iİı]ty-token\n?$`),
	regexp.MustCompile(`^resourcekey\n?$`),
}

// Normalize is h's URI normalisation (h/util/uri.py normalize): two URIs
// naming the same web page normalise to the same string. http and https
// URLs become "httpx://host/path?sorted-query"; anything else (urn:, doi:,
// file:, a URL without host) is returned unchanged. Where h raises (an
// invalid port, a malformed IPv6 literal) the input is returned unchanged,
// so it compares verbatim. It never panics and is idempotent.
func Normalize(uri string) string {
	if s, ok := normalize(uri); ok {
		return s
	}
	return uri
}

// normalize returns false where h's normalize raises.
func normalize(orig string) (string, bool) {
	if !utf8.ValidString(orig) {
		return "", false // a Python str cannot hold it
	}
	s := orig
	if strings.HasPrefix(s, viaPrefix+"http:") || strings.HasPrefix(s, viaPrefix+"https:") {
		s = s[len(viaPrefix):]
	}

	// Python's urlsplit.
	url := strings.TrimLeft(s, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f"+
		"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f ")
	if strings.ContainsAny(url, "\t\r\n") {
		url = strings.NewReplacer("\t", "", "\r", "", "\n", "").Replace(url)
	}
	scheme := ""
	if i := strings.IndexByte(url, ':'); i > 0 && isAlpha(url[0]) && allSchemeChars(url[:i]) {
		scheme, url = strings.ToLower(url[:i]), url[i+1:]
	}
	netloc := ""
	if strings.HasPrefix(url, "//") {
		rest := url[2:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		netloc, url = rest[:end], rest[end:]
		open, closed := strings.Contains(netloc, "["), strings.Contains(netloc, "]")
		if open != closed {
			return "", false // Invalid IPv6 URL
		}
		if open && !checkBracketedNetloc(netloc) {
			return "", false
		}
	}
	if i := strings.IndexByte(url, '#'); i >= 0 {
		url = url[:i]
	}
	query := ""
	if i := strings.IndexByte(url, '?'); i >= 0 {
		url, query = url[:i], url[i+1:]
	}
	if scheme != "http" && scheme != "https" {
		return s, true
	}

	// Netloc: SplitResult's _userinfo and _hostinfo.
	userinfo, hostinfo, hasAt := "", netloc, false
	if i := strings.LastIndexByte(netloc, '@'); i >= 0 {
		userinfo, hostinfo, hasAt = netloc[:i], netloc[i+1:], true
	}
	var hostname, port string
	if _, bracketed, ok := strings.Cut(hostinfo, "["); ok {
		var after string
		hostname, after, _ = strings.Cut(bracketed, "]")
		_, port, _ = strings.Cut(after, ":")
	} else {
		hostname, port, _ = strings.Cut(hostinfo, ":")
	}
	if hostname == "" {
		return s, true
	}
	if port != "" {
		n, ok := parsePort(port)
		if !ok {
			return "", false // Port could not be cast / out of range
		}
		port = n
		if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
			port = ""
		}
	}
	hostname = strings.ToLower(hostname)
	if strings.Contains(netloc, "[") && strings.Contains(netloc, "]") {
		hostname = "[" + hostname + "]"
	}

	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString("httpx://")
	if hasAt {
		b.WriteString(userinfo)
		b.WriteByte('@')
	}
	b.WriteString(hostname)
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	path := normalizePath(url)
	if path != "" && path[0] != '/' {
		b.WriteByte('/')
	}
	b.WriteString(path)
	if q := normalizeQuery(query); q != "" {
		b.WriteByte('?')
		b.WriteString(q)
	}
	return b.String(), true
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// allSchemeChars: Python's scheme_chars (letters, digits, "+-.").
func allSchemeChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && (c < '0' || c > '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// checkBracketedNetloc is urlsplit's check of Python 3.11.11 (h's
// runtime): the text between the netloc's first '[' and the next ']' must
// be an IPv6 address (with an optional zone) or an IPvFuture literal.
// (Later Pythons also refuse text before the bracket or after it other
// than ":port"; 3.11.11 does not, so neither does this.)
func checkBracketedNetloc(netloc string) bool {
	_, after, _ := strings.Cut(netloc, "[")
	host, _, _ := strings.Cut(after, "]")
	if strings.HasPrefix(host, "v") {
		return ipvFuture.MatchString(host)
	}
	a, err := netip.ParseAddr(host)
	return err == nil && !a.Is4()
}

var ipvFuture = regexp.MustCompile(`^v[a-fA-F0-9]+\..+$`)

// parsePort is SplitResult.port: ASCII digits, 0 to 65535, printed as an int.
func parsePort(p string) (string, bool) {
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return "", false
		}
	}
	p = strings.TrimLeft(p, "0")
	if p == "" {
		return "0", true
	}
	if len(p) > 5 {
		return "", false
	}
	if n, _ := strconv.Atoi(p); n > 65535 {
		return "", false
	}
	return p, true
}

func normalizePath(path string) string {
	path = strings.TrimRight(path, "/")
	if path == "" {
		return ""
	}
	var b strings.Builder
	b.Grow(len(path))
	for i, seg := range strings.Split(path, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		appendQuoted(&b, pyUnquote(seg), pathSafe, false)
	}
	return b.String()
}

type queryItem struct{ name, value string }

// normalizeQuery is parse_qsl(keep_blank_values=True, strict_parsing=True)
// then sort, drop and re-encode; a query that does not parse is kept.
func normalizeQuery(q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	items := make([]queryItem, 0, len(parts))
	for _, p := range parts {
		name, value, ok := strings.Cut(p, "=")
		if !ok {
			return q // "bad query field"
		}
		items = append(items, queryItem{unquotePlus(name), unquotePlus(value)})
	}
	slices.SortStableFunc(items, func(a, b queryItem) int { return strings.Compare(a.name, b.name) })
	var b strings.Builder
	b.Grow(len(q))
	first := true
	for _, it := range items {
		if dropParam(it.name) {
			continue
		}
		if !first {
			b.WriteByte('&')
		}
		first = false
		// h's _normalize_queryname/_normalize_queryvalue decode a second
		// time (unquote_plus) before quote_plus: "%2B" ends as "+".
		appendQuoted(&b, unquotePlus(it.name), nameSafe, true)
		b.WriteByte('=')
		appendQuoted(&b, unquotePlus(it.value), valueSafe, true)
	}
	return b.String()
}

// unquotePlus is Python's unquote_plus.
func unquotePlus(s string) string { return pyUnquote(strings.ReplaceAll(s, "+", " ")) }

func dropParam(name string) bool {
	for _, re := range droppedParams {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

const upperHex = "0123456789ABCDEF"

// appendQuoted is Python's quote (or quote_plus, which turns a space into
// '+'): UTF-8 bytes outside safe become %XX.
func appendQuoted(b *strings.Builder, s string, safe *[256]bool, plus bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case safe[c]:
			b.WriteByte(c)
		case plus && c == ' ':
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
		}
	}
}

// pyUnquote is Python's urllib.parse.unquote: %XX escapes in runs of ASCII
// become bytes decoded as UTF-8 with errors="replace" (one U+FFFD per
// maximal invalid subpart); invalid escapes stay as they are.
func pyUnquote(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	out := make([]byte, 0, len(s))
	var run []byte
	var scratch [64]byte
	run = scratch[:0]
	flush := func() {
		out = appendReplacingInvalid(out, run)
		run = run[:0]
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			flush()
			_, size := utf8.DecodeRuneInString(s[i:])
			out = append(out, s[i:i+size]...)
			i += size
			continue
		}
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			run = append(run, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 3
			continue
		}
		run = append(run, c)
		i++
	}
	flush()
	return string(out)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f'
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c | 0x20 - 'a' + 10
}

// appendReplacingInvalid appends b as UTF-8, replacing each maximal
// invalid subpart with U+FFFD as CPython's decoder does.
func appendReplacingInvalid(dst, b []byte) []byte {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r != utf8.RuneError || size > 1 {
			dst = append(dst, b[:size]...)
			b = b[size:]
			continue
		}
		dst = append(dst, "\uFFFD"...)
		b = b[maximalSubpart(b):]
	}
	return dst
}

// maximalSubpart returns the length of the invalid sequence at the start of
// b: the lead byte plus the continuation bytes that could still have
// completed it (Unicode 3.9, table 3-7).
func maximalSubpart(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		if b[n] < lo || b[n] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
		n++
	}
	return n
}

// parseURIVersions is h's parse_uri_versions: ":vN" and ":all" suffixes
// read from the right. A version is "" for v0 (no version), the decimal
// number without leading zeros, or "all".
func parseURIVersions(s string) (base string, versions []string) {
	parts := strings.Split(s, ":")
	n := len(parts)
	for n > 1 {
		p := parts[n-1]
		if p == "all" {
			versions = append(versions, "all")
		} else if v, ok := versionNumber(p); ok {
			versions = append(versions, v)
		} else {
			break
		}
		n--
	}
	slices.Reverse(versions)
	return strings.Join(parts[:n], ":"), versions
}

// versionNumber matches ^v(\d+)$ (Python's "$" allows a final newline;
// only ASCII digits are accepted) and returns the number, "" for zero.
func versionNumber(p string) (string, bool) {
	p = strings.TrimSuffix(p, "\n")
	if len(p) < 2 || p[0] != 'v' {
		return "", false
	}
	for i := 1; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return "", false
		}
	}
	return strings.TrimLeft(p[1:], "0"), true
}

// scopeKey is h's build_scope_key: a normalised URI plus "__v<version>"
// unless the version is empty (none, or v0).
func scopeKey(normalized, version string) string {
	if version == "" {
		return normalized
	}
	return normalized + "__v" + version
}
