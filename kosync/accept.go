package kosync

// Content negotiation on the Accept header (RFC 9110 §12.5.1), for GET
// /api/ws: it answers JSON instead of its 303 when the client prefers
// application/json.

import (
	"net/http"
	"strings"
)

// qMax is the quality of a media range without a q parameter, in
// thousandths.
const qMax = 1000

// acceptQuality is the quality (0..1000 thousandths) the Accept header
// values give the media type typ/sub: the q of the most specific media
// range that matches it (typ/sub, then typ/*, then */*; among equally
// specific ranges, the highest q), 0 when none does. Parameters other than
// q are ignored; a range with an invalid q value is skipped. No Accept
// header at all accepts everything: 1000.
func acceptQuality(values []string, typ, sub string) int {
	if len(values) == 0 {
		return qMax
	}
	best, bestSpec := 0, -1
	for _, v := range values {
		for _, elem := range strings.Split(v, ",") {
			mtype, msub, q, ok := parseMediaRange(elem)
			if !ok {
				continue
			}
			spec := rangeSpecificity(mtype, msub, typ, sub)
			if spec < 0 {
				continue
			}
			if spec > bestSpec || (spec == bestSpec && q > best) {
				best, bestSpec = q, spec
			}
		}
	}
	return best
}

// rangeSpecificity is how specifically the range mtype/msub matches
// typ/sub: 2 exact, 1 typ/*, 0 */*, -1 no match.
func rangeSpecificity(mtype, msub, typ, sub string) int {
	switch {
	case mtype == "*" && msub == "*":
		return 0
	case !strings.EqualFold(mtype, typ):
		return -1
	case msub == "*":
		return 1
	case strings.EqualFold(msub, sub):
		return 2
	}
	return -1
}

// parseMediaRange parses one element of an Accept header:
// type "/" subtype *( OWS ";" OWS parameter ), with q the weight in
// thousandths (default 1000). ok is false for an empty or malformed
// element.
func parseMediaRange(elem string) (mtype, msub string, q int, ok bool) {
	rng, params, _ := strings.Cut(elem, ";")
	mtype, msub, found := strings.Cut(strings.TrimSpace(rng), "/")
	if !found || mtype == "" || msub == "" || (mtype == "*" && msub != "*") {
		return "", "", 0, false
	}
	q = qMax
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		if q, ok = parseQValue(strings.TrimSpace(value)); !ok {
			return "", "", 0, false
		}
	}
	return mtype, msub, q, true
}

// parseQValue parses a qvalue, ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "."
// 0*3("0") ] ), into thousandths.
func parseQValue(s string) (int, bool) {
	if s == "" || len(s) > 5 || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	whole := int(s[0]-'0') * qMax
	if len(s) == 1 {
		return whole, true
	}
	if s[1] != '.' {
		return 0, false
	}
	frac, scale := 0, 100
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		frac += int(s[i]-'0') * scale
		scale /= 10
	}
	if whole == qMax && frac != 0 {
		return 0, false
	}
	return whole + frac, true
}

// prefersJSON reports whether r's Accept gives application/json a higher
// quality than text/plain, the type of /api/ws's 303 body. Equal
// qualities (no Accept, "*/*", a browser's defaults) keep the 303.
func prefersJSON(r *http.Request) bool {
	values := r.Header.Values("Accept")
	return acceptQuality(values, "application", "json") > acceptQuality(values, "text", "plain")
}
