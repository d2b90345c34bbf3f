package hypothesis

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Why parseFilter refuses a filter; each is the description of the
// invalid_data error answered.
var (
	errBadFilter = errors.New("failed to parse filter")
	// errFilterTooLarge is wrapped with the cap by the caller's reply.
	errFilterTooLarge = errors.New("filter too large")
)

// Filter fields (§5.2). A row is one (field, value) a socket listens for.
const (
	fieldID uint8 = iota + 1
	fieldGroup
	fieldURI
	fieldReferences
)

var knownFields = map[string]uint8{
	"/id": fieldID, "/group": fieldGroup, "/uri": fieldURI, "/references": fieldReferences,
}

// row is a key of the per-loop index: /uri values are normalised and
// versioned scope keys, the others compare as strings.
type row struct {
	field uint8
	value string
}

// parseFilter checks h's FILTER_SCHEMA (§5.1) and turns the clauses into
// rows (§5.2), deduplicated. It fails with errBadFilter for a schema
// failure or a bad clause, and errFilterTooLarge past maxRows rows: the
// caller keeps the old filter and answers an invalid_data error.
//
// Every clause is checked the same way, whatever its field: it must be an
// object with "field" (not a list or object) and "value" (a scalar, or a
// list of scalars). Clauses on other fields than /id, /group, /uri and
// /references are then dropped; a /uri value must be a string; other
// non-string values can never match and produce no row.
func parseFilter(raw json.RawMessage, maxRows int) (rows []row, err error) {
	var f map[string]json.RawMessage
	if json.Unmarshal(raw, &f) != nil || f == nil {
		return nil, errBadFilter
	}
	mp, hasMP := f["match_policy"]
	clausesRaw, hasClauses := f["clauses"]
	_, hasActions := f["actions"]
	if !hasMP || !hasClauses || !hasActions {
		return nil, errBadFilter
	}
	if s, isStr := jsonString(mp); !isStr || s != "include_any" {
		return nil, errBadFilter
	}
	var clauses []json.RawMessage
	if json.Unmarshal(clausesRaw, &clauses) != nil || clauses == nil {
		return nil, errBadFilter // not an array
	}
	seen := make(map[row]struct{})
	for _, c := range clauses {
		var clause map[string]json.RawMessage
		if json.Unmarshal(c, &clause) != nil || clause == nil {
			return nil, errBadFilter
		}
		fieldRaw, hasField := clause["field"]
		valueRaw, hasValue := clause["value"]
		if !hasField || !hasValue || isComposite(fieldRaw) {
			return nil, errBadFilter
		}
		var values []json.RawMessage
		if valueRaw[0] == '[' {
			if json.Unmarshal(valueRaw, &values) != nil {
				return nil, errBadFilter
			}
		} else {
			values = []json.RawMessage{valueRaw}
		}
		for _, v := range values {
			if isComposite(v) {
				return nil, errBadFilter
			}
		}
		name, _ := jsonString(fieldRaw)
		field, known := knownFields[name]
		if !known {
			continue
		}
		for _, v := range values {
			s, isStr := jsonString(v)
			if !isStr {
				if field == fieldURI {
					return nil, errBadFilter
				}
				continue
			}
			add := func(r row) bool {
				if _, dup := seen[r]; dup {
					return true
				}
				if len(rows) == maxRows {
					return false
				}
				seen[r] = struct{}{}
				rows = append(rows, r)
				return true
			}
			if field != fieldURI {
				if !add(row{field, s}) {
					return nil, errFilterTooLarge
				}
				continue
			}
			base, versions := parseURIVersions(s)
			norm := Normalize(base)
			if len(versions) == 0 {
				versions = []string{""}
			}
			for _, ver := range versions {
				if !add(row{fieldURI, scopeKey(norm, ver)}) {
					return nil, errFilterTooLarge
				}
			}
		}
	}
	if rows == nil {
		rows = []row{}
	}
	return rows, nil
}

// isComposite reports whether a JSON value is a list or an object.
func isComposite(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && (raw[0] == '[' || raw[0] == '{')
}
