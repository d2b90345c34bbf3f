package kosync

import (
	"net/http"
	"testing"
)

func TestAcceptQuality(t *testing.T) {
	cases := []struct {
		accept          []string // nil: no header
		json, text      int
		wantJSONAnswers bool
	}{
		{nil, 1000, 1000, false},
		{[]string{""}, 0, 0, false},
		{[]string{"*/*"}, 1000, 1000, false},
		{[]string{"application/json"}, 1000, 0, true},
		{[]string{"Application/JSON"}, 1000, 0, true},
		{[]string{"application/json; charset=utf-8"}, 1000, 0, true},
		{[]string{"application/*"}, 1000, 0, true},
		{[]string{"application/json, */*;q=0.1"}, 1000, 100, true},
		{[]string{"application/json;q=0.5, */*"}, 500, 1000, false},
		{[]string{"application/json;q=0.9, text/plain;q=0.8"}, 900, 800, true},
		{[]string{"application/json ; q=0.8 , text/*;q=0.9"}, 800, 900, false},
		{[]string{"application/json;q=0"}, 0, 0, false},
		{[]string{"application/json, text/plain, */*"}, 1000, 1000, false}, // a tie keeps the 303
		{[]string{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, 800, 800, false},
		{[]string{"application/vnd.koreader.v1+json"}, 0, 0, false},
		{[]string{"text/plain;q=0.2", "application/json;q=0.3"}, 300, 200, true}, // two header lines
		{[]string{"application/json;q=0.001"}, 1, 0, true},
		{[]string{"application/json;q=1.000"}, 1000, 0, true},
		// Invalid q values skip their range.
		{[]string{"application/json;q=2, text/plain"}, 0, 1000, false},
		{[]string{"application/json;q=1.5"}, 0, 0, false},
		{[]string{"application/json;q=0.0001"}, 0, 0, false},
		{[]string{"application/json;q=.5"}, 0, 0, false},
		{[]string{"application/json;q=", "*/*;q=0.3"}, 300, 300, false},
		{[]string{"*/json, application/json;q=0.4"}, 400, 0, true},
		{[]string{"application/, /json, /, application/json;q=0.7"}, 700, 0, true},
		// The most specific range decides, not the highest q.
		{[]string{"application/json;q=0.2, application/*;q=0.9, */*;q=0.1"}, 200, 100, true},
		{[]string{"application/json;q=0.2, application/json;q=0.6"}, 600, 0, true},
	}
	for _, c := range cases {
		j := acceptQuality(c.accept, "application", "json")
		x := acceptQuality(c.accept, "text", "plain")
		if j != c.json || x != c.text {
			t.Errorf("Accept %q: json %d text %d, want %d %d", c.accept, j, x, c.json, c.text)
		}
		r := &http.Request{Header: http.Header{}}
		if c.accept != nil {
			r.Header["Accept"] = c.accept
		}
		if got := prefersJSON(r); got != c.wantJSONAnswers {
			t.Errorf("Accept %q: prefersJSON %v", c.accept, got)
		}
	}
}

func FuzzAcceptQuality(f *testing.F) {
	for _, s := range []string{"*/*", "application/json;q=0.5, text/plain", "a/b;q=1.000;x=y", ";;,,", "application/json;q=0.", "*/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, typ := range [][2]string{{"application", "json"}, {"text", "plain"}} {
			if q := acceptQuality([]string{s}, typ[0], typ[1]); q < 0 || q > qMax {
				t.Fatalf("%q: quality %d", s, q)
			}
		}
	})
}
