package hypothesis

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkLargestFilter: parsing and setting a filter of
// DefaultMaxFilterRows /uri values, the most one message can ask for.
func BenchmarkLargestFilter(b *testing.B) {
	var v []string
	for i := range DefaultMaxFilterRows {
		v = append(v, fmt.Sprintf(`"https://example.com/r/page/%d"`, i))
	}
	raw := json.RawMessage(`{"match_policy":"include_any","clauses":[{"field":"/uri","operator":"one_of","value":[` +
		strings.Join(v, ",") + `],"case_sensitive":false}],"actions":{}}`)
	st := &loopState{index: make(map[row]map[*socket]struct{})}
	s := &socket{}
	b.ReportAllocs()
	for b.Loop() {
		rows, err := parseFilter(raw, DefaultMaxFilterRows)
		if err != nil || len(rows) != DefaultMaxFilterRows {
			b.Fatal(err, len(rows))
		}
		st.setRows(s, rows)
	}
}

func TestJSONString(t *testing.T) {
	for _, c := range []struct {
		raw, want string
		ok        bool
	}{
		{`"plain"`, "plain", true},
		{`""`, "", true},
		{`"é"`, "é", true},
		{`"a\"b"`, `a"b`, true},
		{`"\u00e9\n"`, "é\n", true},
		{"\"\xff\"", "\ufffd", true}, // as encoding/json: invalid UTF-8 becomes U+FFFD
		{`5`, "", false},
		{`null`, "", false},
		{`"`, "", false},
	} {
		got, ok := jsonString(json.RawMessage(c.raw))
		if got != c.want || ok != c.ok {
			t.Errorf("jsonString(%s) = %q, %v; want %q, %v", c.raw, got, ok, c.want, c.ok)
		}
	}
}
