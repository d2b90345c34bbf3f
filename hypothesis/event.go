package hypothesis

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/wsgateway/gateway/session"
)

// EventInput is the body of POST /api/hypothesis/events (§9: what the
// gateway needs since it has no database).
type EventInput struct {
	// Action is "create", "update" or "delete".
	Action string `json:"action"`
	// Annotation is the full annotation JSON (§9), also for a delete (its
	// last state), in the rendering every admitted recipient may see.
	Annotation json.RawMessage `json:"annotation"`
	// SrcClientID is the X-Client-Id of the change, or null.
	SrcClientID *string `json:"src_client_id"`
	// EquivalentURIs are more URIs of the document (h's expand_uri).
	EquivalentURIs []string `json:"equivalent_uris,omitempty"`
	// GroupMembers are the userids of the members of the annotation's
	// group, for group-readable annotations.
	GroupMembers []string `json:"group_members,omitempty"`
	// Moderators are the userids of the group's moderators, for hidden
	// annotations.
	Moderators []string `json:"moderators,omitempty"`
	// NIPSA marks the author as "not in public site areas".
	NIPSA bool `json:"nipsa,omitempty"`
}

// wireVersion is the format of wireEvent on the hub.
const wireVersion = 1

// wireEvent is what crosses the hub (and Redis) on Channel: everything a
// loop needs to match and send, computed once by the node that took the
// POST, so each loop only decodes it.
type wireEvent struct {
	V          int      `json:"v"`
	ID         string   `json:"id"`
	Group      *string  `json:"group,omitempty"`
	Refs       []string `json:"refs,omitempty"`
	Keys       []string `json:"keys,omitempty"` // /uri scope keys (§6.3)
	Src        string   `json:"src,omitempty"`
	User       string   `json:"user,omitempty"`
	World      bool     `json:"world,omitempty"`      // read has group:__world__
	Readers    []string `json:"readers,omitempty"`    // read's acct: entries
	GroupRead  bool     `json:"group_read,omitempty"` // read has another group:
	Hidden     bool     `json:"hidden,omitempty"`
	NIPSA      bool     `json:"nipsa,omitempty"`
	Members    []string `json:"members,omitempty"`
	Moderators []string `json:"moderators,omitempty"`
	// Frame is the annotation-notification message sent to recipients.
	Frame json.RawMessage `json:"frame"`
}

// annotationFields are the parts of an annotation the gateway reads.
type annotationFields struct {
	ID               json.RawMessage `json:"id"`
	Group            json.RawMessage `json:"group"`
	User             json.RawMessage `json:"user"`
	URI              json.RawMessage `json:"uri"`
	References       json.RawMessage `json:"references"`
	ModerationStatus json.RawMessage `json:"moderation_status"`
	Permissions      json.RawMessage `json:"permissions"`
	Version          json.RawMessage `json:"version"`
}

// EventHandler returns the admin handler of POST /api/hypothesis/events:
// it validates the event, publishes it once on Channel through hub (every
// node's loops receive it) and answers 202 {"ok":true}. Bad input is 400
// {"error": ...}; a busy broker 503.
func (p *Protocol) EventHandler(hub *session.Hub) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(p.opts.MaxEventSize)))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "body too large or unreadable"})
			return
		}
		var in EventInput
		if err := decodeStrict(body, &in); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "body must be a JSON event object: " + err.Error()})
			return
		}
		payload, err := buildWireEvent(&in)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
		if err := hub.Publish(Channel, payload, 0); err != nil {
			status := http.StatusServiceUnavailable // busy: try again
			if errors.Is(err, session.ErrTooLarge) {
				status = http.StatusRequestEntityTooLarge // never fits
			}
			writeJSON(w, status, map[string]any{"error": err.Error()})
			return
		}
		p.counted[in.Action].Inc()
		writeJSON(w, http.StatusAccepted, map[string]any{"ok": true})
	})
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// buildWireEvent validates an event and encodes what the loops need.
func buildWireEvent(in *EventInput) ([]byte, error) {
	switch in.Action {
	case "create", "update", "delete":
	default:
		return nil, errors.New(`action must be "create", "update" or "delete"`)
	}
	if len(in.Annotation) == 0 || in.Annotation[0] != '{' {
		return nil, errors.New("annotation must be a JSON object")
	}
	var a annotationFields
	if err := json.Unmarshal(in.Annotation, &a); err != nil {
		return nil, errors.New("annotation: " + err.Error())
	}
	id, ok := jsonString(a.ID)
	if !ok || id == "" {
		return nil, errors.New("annotation.id must be a non-empty string")
	}
	ev := wireEvent{V: wireVersion, ID: id, NIPSA: in.NIPSA, Members: in.GroupMembers, Moderators: in.Moderators}
	if in.SrcClientID != nil {
		ev.Src = *in.SrcClientID
	}
	group, hasGroup := jsonString(a.Group)
	if hasGroup {
		ev.Group = &group
	} else if !isNull(a.Group) {
		return nil, errors.New("annotation.group must be a string")
	}
	if ev.User, ok = jsonString(a.User); !ok && !isNull(a.User) {
		return nil, errors.New("annotation.user must be a string")
	}
	if !isNull(a.References) {
		if err := json.Unmarshal(a.References, &ev.Refs); err != nil {
			return nil, errors.New("annotation.references must be a list of strings")
		}
	}
	// Scope keys: the normalised uri and equivalent URIs, versioned.
	version, err := annotationVersion(a.Version)
	if err != nil {
		return nil, err
	}
	var uris []string
	if uri, ok := jsonString(a.URI); ok {
		uris = append(uris, uri)
	} else if !isNull(a.URI) {
		return nil, errors.New("annotation.uri must be a string")
	}
	uris = append(uris, in.EquivalentURIs...)
	seen := make(map[string]bool, len(uris))
	for _, u := range uris {
		k := scopeKey(Normalize(u), version)
		if !seen[k] {
			seen[k] = true
			ev.Keys = append(ev.Keys, k)
		}
	}
	// Visibility (§8, §9).
	var perms struct {
		Read []string `json:"read"`
	}
	if !isNull(a.Permissions) {
		if err := json.Unmarshal(a.Permissions, &perms); err != nil || a.Permissions[0] != '{' {
			return nil, errors.New("annotation.permissions must be an object whose read is a list of strings")
		}
	}
	for _, p := range perms.Read {
		switch {
		case p == "group:__world__":
			ev.World = true
		case strings.HasPrefix(p, "group:"):
			ev.GroupRead = true
		case strings.HasPrefix(p, "acct:"):
			ev.Readers = append(ev.Readers, p)
		}
	}
	status, hasStatus := jsonString(a.ModerationStatus)
	shared := hasGroup && len(perms.Read) == 1 && perms.Read[0] == "group:"+group
	ev.Hidden = hasStatus && status != "APPROVED" && shared

	// The notification (§7), compact; a delete carries only the id.
	frame := append([]byte(`{"type":"annotation-notification","options":{"action":"`), in.Action...)
	frame = append(frame, `"},"payload":[`...)
	if in.Action == "delete" {
		frame = append(frame, `{"id":`...)
		frame = append(frame, a.ID...)
		frame = append(frame, '}')
	} else {
		var buf bytes.Buffer
		if err := json.Compact(&buf, in.Annotation); err != nil {
			return nil, errors.New("annotation: " + err.Error())
		}
		frame = append(frame, buf.Bytes()...)
	}
	ev.Frame = append(frame, "]}"...)

	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&ev); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// annotationVersion reads the annotation's "version": absent, null or 0
// means unversioned (""); otherwise a positive integer.
func annotationVersion(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 {
		return "", errors.New("annotation.version must be a non-negative integer or null")
	}
	if n == 0 {
		return "", nil
	}
	return strconv.FormatInt(n, 10), nil
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
