package hypothesis

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// normalizeTable: every example of reference §6.2 and more, with the
// expected values computed by h's own h/util/uri.py (commit 24395ca) under
// Python 3.11, h's runtime. Where h raises, the expected value is the input.
var normalizeTable = []struct{ in, want string }{
	{"http://example.com", "httpx://example.com"},
	{"https://example.com/", "httpx://example.com"},
	{"http://example.com/?", "httpx://example.com"},
	{"https://example.com#x", "httpx://example.com"},
	{"http://EXAMPLE.com:80/a/b/?b=2&a=1&utm_source=x#frag", "httpx://example.com/a/b?a=1&b=2"},
	{"https://example.com:8443/caf%c3%a9", "httpx://example.com:8443/caf%C3%A9"},
	{"https://via.hypothes.is/https://example.com/x", "httpx://example.com/x"},
	{"urn:x-pdf:c83fa94bd1d522276a32f81682a43d29", "urn:x-pdf:c83fa94bd1d522276a32f81682a43d29"},
	{"https://via.hypothes.is/http://example.com/", "httpx://example.com"},
	{"https://via.hypothes.is/example.com/x", "httpx://via.hypothes.is/example.com/x"},
	{"https://via.hypothes.is/http:foo", "http:foo"},
	{"http://via.hypothes.is/http://example.com", "httpx://via.hypothes.is/http://example.com"},
	{"http://example.com:80", "httpx://example.com"},
	{"https://example.com:443", "httpx://example.com"},
	{"http://example.com:443", "httpx://example.com:443"},
	{"https://example.com:80", "httpx://example.com:80"},
	{"http://example.com:8080/", "httpx://example.com:8080"},
	{"http://example.com:", "httpx://example.com"},
	{"http://example.com:0080/x", "httpx://example.com/x"},
	{"HTTP://Example.COM:80/", "httpx://example.com"},
	{"http://example.com:99999/", "http://example.com:99999/"},
	{"http://example.com:abc/", "http://example.com:abc/"},
	{"http://example.com:80:90/", "http://example.com:80:90/"},
	{"http://example.com:+80/", "http://example.com:+80/"},
	{"http://example.com:0/", "httpx://example.com:0"},
	{"http://user@example.com/", "httpx://user@example.com"},
	{"http://user:Pass@EXAMPLE.com:80/", "httpx://user:Pass@example.com"},
	{"http://@example.com/", "httpx://@example.com"},
	{"http://u:p@Example.com:8080/x/", "httpx://u:p@example.com:8080/x"},
	{"http://a@b@Example.com/", "httpx://a@b@example.com"},
	{"http://[::1]/", "httpx://[::1]"},
	{"http://[2001:DB8::1]:80/a", "httpx://[2001:db8::1]/a"},
	{"https://[2001:db8::1]:443", "httpx://[2001:db8::1]"},
	{"http://[fe80::1%25eth0]/", "httpx://[fe80::1%25eth0]"},
	{"http://[::1/", "http://[::1/"},
	{"http://::1]/", "http://::1]/"},
	{"http://[1.2.3.4]/", "http://[1.2.3.4]/"},
	{"http://[notanip]/", "http://[notanip]/"},
	{"http://[::1]x/", "httpx://[::1]"},
	{"http://[v1.abc]/", "httpx://[v1.abc]"},
	{"http://x[::1]/", "httpx://[::1]"},
	{"http://example.com/a//b/", "httpx://example.com/a//b"},
	{"http://example.com/a%2Fb", "httpx://example.com/a%2Fb"},
	{"http://example.com/%7Efoo", "httpx://example.com/~foo"},
	{"http://example.com/a b", "httpx://example.com/a%20b"},
	{"http://example.com/caf\u00e9", "httpx://example.com/caf%C3%A9"},
	{"http://example.com/%e2%82", "httpx://example.com/%EF%BF%BD"},
	{"http://example.com/%ff%fe/x", "httpx://example.com/%EF%BF%BD%EF%BF%BD/x"},
	{"http://example.com/%zz%4", "httpx://example.com/%25zz%254"},
	{"http://example.com/a;b=c,d!$&'()*+:@", "httpx://example.com/a;b=c,d!$&'()*+:@"},
	{"http://example.com/%41%42%43", "httpx://example.com/ABC"},
	{"http://example.com/%25", "httpx://example.com/%25"},
	{"http://example.com////", "httpx://example.com"},
	{"http://example.com/\u00e9%C3%A9", "httpx://example.com/%C3%A9%C3%A9"},
	{"http://example.com/%C3\u00e9%A9", "httpx://example.com/%EF%BF%BD%C3%A9%EF%BF%BD"},
	{"http://example.com/%F0%9F%98%80", "httpx://example.com/%F0%9F%98%80"},
	{"http://example.com/%ED%A0%80", "httpx://example.com/%EF%BF%BD%EF%BF%BD%EF%BF%BD"},
	{"http://example.com/\"<>\\^`{|}", "httpx://example.com/%22%3C%3E%5C%5E%60%7B%7C%7D"},
	{"http://example.com/?b=2&a=1", "httpx://example.com?a=1&b=2"},
	{"http://example.com/?a=1&", "httpx://example.com?a=1&"},
	{"http://example.com/?a&b", "httpx://example.com?a&b"},
	{"http://example.com/?a=1&b", "httpx://example.com?a=1&b"},
	{"http://example.com/?a=hello+world", "httpx://example.com?a=hello+world"},
	{"http://example.com/?a=hello%20world", "httpx://example.com?a=hello+world"},
	{"http://example.com/?q=a%2Bb", "httpx://example.com?q=a+b"},
	{"http://example.com/?b=1&a=2&b=0&a=1", "httpx://example.com?a=2&a=1&b=1&b=0"},
	{"http://example.com/?=", "httpx://example.com?="},
	{"http://example.com/?a==b", "httpx://example.com?a==b"},
	{"http://example.com/?%7E=%7E", "httpx://example.com?~=~"},
	{"http://example.com/?gclid=1&x=2", "httpx://example.com?x=2"},
	{"http://example.com/?utm_campaign=a&utm_content=b&utm_medium=c&utm_source=d&utm_term=e&z=1", "httpx://example.com?z=1"},
	{"http://example.com/?utm_other=1", "httpx://example.com?utm_other=1"},
	{"http://example.com/?WT.mc_id=1&a=1", "httpx://example.com?a=1"},
	{"http://example.com/?WT.=1", "httpx://example.com?WT.=1"},
	{"http://example.com/?wt.x=1", "httpx://example.com?wt.x=1"},
	{"http://example.com/?X-Amz-Security-Token=1&a=b", "httpx://example.com?a=b"},
	{"http://example.com/?x-amz-security-token=1", "httpx://example.com"},
	{"http://example.com/?resourcekey=1", "httpx://example.com"},
	{"http://example.com/?ResourceKey=1", "httpx://example.com?ResourceKey=1"},
	{"http://example.com/?GCLID=1", "httpx://example.com?GCLID=1"},
	{"http://example.com/?utm_source%0A=1", "httpx://example.com"},
	{"http://example.com/?gclid%0A%0A=1", "httpx://example.com?gclid%0A%0A=1"},
	{"http://example.com/?a=%26&b=%3D", "httpx://example.com?a=%26&b=="},
	{"http://example.com/?a=1;b=2", "httpx://example.com?a=1%3Bb=2"},
	{"http://example.com/?%C3%A9=%C3%A9", "httpx://example.com?%C3%A9=%C3%A9"},
	{"http://example.com/?a=\u00e9", "httpx://example.com?a=%C3%A9"},
	{"http://example.com/?a=%ff", "httpx://example.com?a=%EF%BF%BD"},
	{"http://example.com/?&", "httpx://example.com?&"},
	{"http://example.com/?a=b#c?d", "httpx://example.com?a=b"},
	{"http://example.com?x=1", "httpx://example.com?x=1"},
	{"http://example.com/?z=1&\u00e9=2&A=3&_=4", "httpx://example.com?A=3&_=4&z=1&%C3%A9=2"},
	{"http://example.com/?a=1&utm_source=x", "httpx://example.com?a=1"},
	{"http://example.com/?utm_source=x", "httpx://example.com"},
	{"http://example.com/?x-amz-secur\u0130ty-token=1", "httpx://example.com"},
	{"http://example.com/?x-amz-secur\u0131ty-token=1", "httpx://example.com"},
	{"http://example.com/?x-amz-\u017fecurity-token=1", "httpx://example.com"},
	{"http://example.com/a#", "httpx://example.com/a"},
	{"http://example.com/a?#x", "httpx://example.com/a"},
	{"http://example.com#a?b=1", "httpx://example.com"},
	{"doi:10.1000/182", "doi:10.1000/182"},
	{"file:///home/x.pdf", "file:///home/x.pdf"},
	{"ftp://example.com/a/", "ftp://example.com/a/"},
	{"HTTPS://example.com/", "httpx://example.com"},
	{"http:///path", "http:///path"},
	{"http:example.com", "http:example.com"},
	{"http://", "http://"},
	{"http://:80/", "http://:80/"},
	{"httpx://example.com/", "httpx://example.com/"},
	{"mailto:a@b.c", "mailto:a@b.c"},
	{"", ""},
	{"example.com/a", "example.com/a"},
	{"//example.com/a", "//example.com/a"},
	{"1http://example.com", "1http://example.com"},
	{"ht tp://example.com", "ht tp://example.com"},
	{"urn:uuid:1234", "urn:uuid:1234"},
	{"  http://example.com/a", "httpx://example.com/a"},
	{"\thttp://example.com/a", "httpx://example.com/a"},
	{"http://exa\tmple.com/a\n", "httpx://example.com/a"},
	{"http://example.com/a b?c d=e f", "httpx://example.com/a%20b?c+d=e+f"},
	{"http://\u00c9XAMPLE.com/", "httpx://\u00e9xample.com"},
	{"http://ex\u00e4mple.com:80/", "httpx://ex\u00e4mple.com"},
	{"http://example.com/path/to/page.html?id=5&lang=en#section", "httpx://example.com/path/to/page.html?id=5&lang=en"},
	{"https://example.com/a/./b/../c", "httpx://example.com/a/./b/../c"}, {"http://example.com/?a=%252B", "httpx://example.com?a=%2B"},
	{"http://example.com/?%2567clid=1", "httpx://example.com?gclid=1"},
	{"http://example.com/?a=%2B%2B+", "httpx://example.com?a=+++"},
	{"http://example.com/?a+b=c%20d", "httpx://example.com?a+b=c+d"},
}

func TestNormalize(t *testing.T) {
	for _, tc := range normalizeTable {
		if got := Normalize(tc.in); got != tc.want {
			t.Errorf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeConsequences(t *testing.T) {
	// §6.2: a filter on https://example.com matches an annotation on
	// http://example.com, and http://example.com/? matches https://example.com.
	if Normalize("https://example.com") != Normalize("http://example.com") {
		t.Error("https and http differ")
	}
	if Normalize("http://example.com/?") != Normalize("https://example.com") {
		t.Error("bare ? is not dropped")
	}
}

func TestParseURIVersions(t *testing.T) {
	for _, tc := range []struct {
		in, base string
		versions []string
	}{
		{"http://example.com:v1:v2", "http://example.com", []string{"1", "2"}},
		{"http://localhost:3000:v1", "http://localhost:3000", []string{"1"}},
		{"1.1.1.1:v0:v1:v2", "1.1.1.1", []string{"", "1", "2"}},
		{"http://example.com:all", "http://example.com", []string{"all"}},
		{"http://example.com", "http://example.com", nil},
		{"http://example.com:v007", "http://example.com", []string{"7"}},
		{"v1", "v1", nil},
		{"http://example.com:vx", "http://example.com:vx", nil},
		{"http://example.com:v", "http://example.com:v", nil},
		{"http://example.com:v1\n", "http://example.com", []string{"1"}},
		{"urn:x-pdf:abc:v3", "urn:x-pdf:abc", []string{"3"}},
	} {
		base, versions := parseURIVersions(tc.in)
		if base != tc.base || !slices.Equal(versions, tc.versions) {
			t.Errorf("parseURIVersions(%q) = %q, %q; want %q, %q", tc.in, base, versions, tc.base, tc.versions)
		}
	}
	if got := scopeKey(Normalize("http://example.com"), "2"); got != "httpx://example.com__v2" {
		t.Errorf("scopeKey = %q", got)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, tc := range normalizeTable {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Normalize(in)
		if again := Normalize(out); again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
		if out == in {
			return
		}
		if !strings.HasPrefix(out, "httpx://") {
			if out != in && !strings.HasPrefix(in, viaPrefix) {
				t.Fatalf("changed without normalising: %q -> %q", in, out)
			}
			return
		}
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out of %q: %q", in, out)
		}
		// The output, read back as an http URL, normalises to itself: the
		// path and query are stable (h's normalisation is too, except that
		// a userinfo or a port may turn into another default).
		rest := out[len("httpx://"):]
		netloc := rest
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			netloc = rest[:i]
		}
		host := netloc[strings.LastIndex(netloc, "]")+1:]
		// h decodes query items twice, so "%252B" -> "%2B" -> "+": only
		// queries without escapes are stable.
		_, query, _ := strings.Cut(rest, "?")
		_, inQuery, _ := strings.Cut(in, "?")
		if strings.Contains(query, "%") || strings.Contains(inQuery, "%") || strings.Contains(netloc, "@") || strings.Contains(host, ":") || strings.ContainsAny(out, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f #") {
			return
		}
		if again := Normalize("http" + out[len("httpx"):]); again != out {
			t.Fatalf("re-normalising %q as http gives %q (from %q)", out, again, in)
		}
	})
}

func BenchmarkNormalize(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Normalize("https://Example.com:443/a/b/caf%c3%a9/?utm_source=x&b=2&a=1#frag")
	}
}
