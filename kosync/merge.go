package kosync

// This file holds the pure document logic that both Store backends and the
// handlers share: how a KOReader push (reference A.3) and a documents.update
// (reference B.8) turn the stored document into the next one, and how the
// history of earlier states grows.

// PushFields is a KOReader PUT /syncs/progress body after validation.
type PushFields struct {
	Progress   string
	Percentage float64
	Device     string
	// DeviceID is nil when the push carried no device_id (absent or null):
	// the stored value, if any, stays.
	DeviceID *string
}

// UpdateFields is a documents.update input after validation. A nil pointer
// is an absent key: the stored value stays.
type UpdateFields struct {
	Progress   *string
	Percentage *float64
	Device     *string
	DeviceID   *string
	// PrettyName replaces the stored name when non-empty; "" keeps it.
	PrettyName string
}

// ApplyPush returns the document that a KOReader push f makes of cur (nil:
// no document yet) at Unix second now. It never modifies cur.
//
// The push writes progress, percentage and device, device_id only when
// given, and always sets the timestamp to now, even if no value changed. If
// a progress field changes and cur had progress, cur's state is first
// appended to the history, which keeps the newest historyLimit entries
// (DefaultHistoryLimit if historyLimit <= 0).
func ApplyPush(cur *Document, id string, f PushFields, now int64, historyLimit int) *Document {
	return ApplyUpdate(cur, id, UpdateFields{
		Progress:   &f.Progress,
		Percentage: &f.Percentage,
		Device:     &f.Device,
		DeviceID:   f.DeviceID,
	}, now, historyLimit).mergeWithTimestamp(now)
}

// ApplyUpdate returns the document that a documents.update f makes of cur
// (nil: no document yet) at Unix second now. It never modifies cur.
//
// Only the fields present in f are written. If any progress field
// (progress, percentage, device, device_id) changes, cur's state is first
// appended to the history when cur had progress (the history keeps the
// newest historyLimit entries, DefaultHistoryLimit if historyLimit <= 0),
// and the timestamp becomes now; otherwise the timestamp stays. A non-empty
// PrettyName replaces the stored one. A rename alone adds no history.
func ApplyUpdate(cur *Document, id string, f UpdateFields, now int64, historyLimit int) *Document {
	next := cur.mergeClone()
	next.ID = id

	changed := false
	if f.Progress != nil && !mergeStrEq(cur.mergeProgress(), f.Progress) {
		next.Progress = mergePtr(*f.Progress)
		changed = true
	}
	if f.Percentage != nil && (cur == nil || cur.Percentage == nil || *cur.Percentage != *f.Percentage) {
		next.Percentage = mergePtr(*f.Percentage)
		changed = true
	}
	if f.Device != nil && !mergeStrEq(cur.mergeDevice(), f.Device) {
		next.Device = mergePtr(*f.Device)
		changed = true
	}
	if f.DeviceID != nil && !mergeStrEq(cur.mergeDeviceID(), f.DeviceID) {
		next.DeviceID = mergePtr(*f.DeviceID)
		changed = true
	}
	if f.PrettyName != "" {
		next.PrettyName = f.PrettyName
	}

	if changed {
		if cur != nil && cur.HasProgress() {
			next.History = mergeAppendHistory(cur.History, cur.snapshot(), historyLimit)
		}
		next.Timestamp = now
	}
	return next
}

// HasProgress reports whether any of progress, percentage, device and
// device_id is stored. A document with only a pretty name has none; nor
// has a nil document.
func (d *Document) HasProgress() bool {
	return d != nil && (d.Progress != nil || d.Percentage != nil || d.Device != nil || d.DeviceID != nil)
}

// snapshot is d's current state as a history entry (API shape): absent
// fields become zero values.
func (d *Document) snapshot() HistoryEntry {
	e := HistoryEntry{
		Document:   d.ID,
		Timestamp:  d.Timestamp,
		PrettyName: d.PrettyName,
	}
	if d.Progress != nil {
		e.Progress = *d.Progress
	}
	if d.Percentage != nil {
		e.Percentage = *d.Percentage
	}
	if d.Device != nil {
		e.Device = *d.Device
	}
	if d.DeviceID != nil {
		e.DeviceID = *d.DeviceID
	}
	return e
}

// mergeClone returns a deep copy of d, or an empty document if d is nil: the
// copy shares no pointer and no backing array with d.
func (d *Document) mergeClone() *Document {
	if d == nil {
		return &Document{}
	}
	c := *d
	c.Progress = mergeClonePtr(d.Progress)
	c.Percentage = mergeClonePtr(d.Percentage)
	c.Device = mergeClonePtr(d.Device)
	c.DeviceID = mergeClonePtr(d.DeviceID)
	if d.History != nil {
		c.History = append([]HistoryEntry(nil), d.History...)
	}
	return &c
}

func (d *Document) mergeWithTimestamp(ts int64) *Document {
	d.Timestamp = ts
	return d
}

func (d *Document) mergeProgress() *string {
	if d == nil {
		return nil
	}
	return d.Progress
}

func (d *Document) mergeDevice() *string {
	if d == nil {
		return nil
	}
	return d.Device
}

func (d *Document) mergeDeviceID() *string {
	if d == nil {
		return nil
	}
	return d.DeviceID
}

// mergeAppendHistory returns a new slice: old followed by e, keeping the newest
// limit entries.
func mergeAppendHistory(old []HistoryEntry, e HistoryEntry, limit int) []HistoryEntry {
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	n := len(old) + 1
	drop := 0
	if n > limit {
		drop = n - limit
	}
	h := make([]HistoryEntry, 0, n-drop)
	if drop < len(old) {
		h = append(h, old[drop:]...)
	}
	return append(h, e)
}

// mergeStrEq reports whether the stored value cur equals the given value v
// (both non-nil and equal).
func mergeStrEq(cur, v *string) bool { return cur != nil && v != nil && *cur == *v }

func mergePtr[T any](v T) *T { return &v }

func mergeClonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
