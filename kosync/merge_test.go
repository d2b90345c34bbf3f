package kosync

import (
	"encoding/json"
	"reflect"
	"testing"
)

func mtStr(s string) *string   { return &s }
func mtF64(f float64) *float64 { return &f }

// mtJSON renders v for failure messages and deep comparisons that should
// not care about pointer identity.
func mtJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplyPush(t *testing.T) {
	base := &Document{
		ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), DeviceID: mtStr("ID1"),
		Timestamp: 100, PrettyName: "Book",
	}
	baseSnap := HistoryEntry{Progress: "10", Percentage: 0.1, Device: "kpw", DeviceID: "ID1", Document: "d", Timestamp: 100, PrettyName: "Book"}
	nameOnly := &Document{ID: "d", PrettyName: "Named"}

	tests := []struct {
		name string
		cur  *Document
		f    PushFields
		want *Document
	}{
		{
			name: "push over nothing",
			cur:  nil,
			f:    PushFields{Progress: "5", Percentage: 0.05, Device: "kobo"},
			want: &Document{ID: "d", Progress: mtStr("5"), Percentage: mtF64(0.05), Device: mtStr("kobo"), Timestamp: 200},
		},
		{
			name: "push over nothing with device_id",
			cur:  nil,
			f:    PushFields{Progress: "5", Percentage: 0, Device: "", DeviceID: mtStr("X")},
			want: &Document{ID: "d", Progress: mtStr("5"), Percentage: mtF64(0), Device: mtStr(""), DeviceID: mtStr("X"), Timestamp: 200},
		},
		{
			name: "nil device_id keeps the stored one",
			cur:  base,
			f:    PushFields{Progress: "20", Percentage: 0.2, Device: "kpw"},
			want: &Document{
				ID: "d", Progress: mtStr("20"), Percentage: mtF64(0.2), Device: mtStr("kpw"), DeviceID: mtStr("ID1"),
				Timestamp: 200, PrettyName: "Book", History: []HistoryEntry{baseSnap},
			},
		},
		{
			name: "identical values: no history, timestamp updated",
			cur:  base,
			f:    PushFields{Progress: "10", Percentage: 0.1, Device: "kpw", DeviceID: mtStr("ID1")},
			want: &Document{
				ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), DeviceID: mtStr("ID1"),
				Timestamp: 200, PrettyName: "Book",
			},
		},
		{
			name: "identical values without device_id: no history",
			cur:  base,
			f:    PushFields{Progress: "10", Percentage: 0.1, Device: "kpw"},
			want: &Document{
				ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), DeviceID: mtStr("ID1"),
				Timestamp: 200, PrettyName: "Book",
			},
		},
		{
			name: "only device_id changes: history",
			cur:  base,
			f:    PushFields{Progress: "10", Percentage: 0.1, Device: "kpw", DeviceID: mtStr("ID2")},
			want: &Document{
				ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), DeviceID: mtStr("ID2"),
				Timestamp: 200, PrettyName: "Book", History: []HistoryEntry{baseSnap},
			},
		},
		{
			name: "lower percentage overwrites (last write wins)",
			cur:  base,
			f:    PushFields{Progress: "1", Percentage: 0, Device: "kpw"},
			want: &Document{
				ID: "d", Progress: mtStr("1"), Percentage: mtF64(0), Device: mtStr("kpw"), DeviceID: mtStr("ID1"),
				Timestamp: 200, PrettyName: "Book", History: []HistoryEntry{baseSnap},
			},
		},
		{
			name: "push over a name-only document: no history, name kept",
			cur:  nameOnly,
			f:    PushFields{Progress: "1", Percentage: 0.5, Device: "kpw"},
			want: &Document{ID: "d", Progress: mtStr("1"), Percentage: mtF64(0.5), Device: mtStr("kpw"), Timestamp: 200, PrettyName: "Named"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := mtJSON(t, tc.cur)
			got := ApplyPush(tc.cur, "d", tc.f, 200, 0)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %s\nwant %s", mtJSON(t, got), mtJSON(t, tc.want))
			}
			if after := mtJSON(t, tc.cur); after != before {
				t.Errorf("cur mutated: %s -> %s", before, after)
			}
			if got == tc.cur {
				t.Error("returned cur itself")
			}
		})
	}
}

func TestApplyPushDoesNotAlias(t *testing.T) {
	cur := &Document{ID: "d", Progress: mtStr("1"), Percentage: mtF64(0.1), Device: mtStr("a"), DeviceID: mtStr("x"),
		History: make([]HistoryEntry, 1, 10)}
	id := "y"
	f := PushFields{Progress: "2", Percentage: 0.2, Device: "b", DeviceID: &id}
	got := ApplyPush(cur, "d", f, 5, 0)
	id = "changed"
	*got.Progress = "mutated"
	if *cur.Progress != "1" || *got.DeviceID != "y" {
		t.Fatalf("aliasing: cur.Progress=%q got.DeviceID=%q", *cur.Progress, *got.DeviceID)
	}
	// The spare capacity of cur.History must not be written into.
	if full := cur.History[:2]; full[1] != (HistoryEntry{}) {
		t.Fatalf("cur.History backing array written: %+v", full[1])
	}
	got.History[0].Device = "zz"
	if cur.History[0].Device != "" {
		t.Fatal("history shares its backing array with cur")
	}
}

func TestApplyHistoryBounded(t *testing.T) {
	var d *Document
	for i := 1; i <= 5; i++ {
		d = ApplyPush(d, "d", PushFields{Progress: string(rune('0' + i)), Percentage: float64(i) / 10, Device: "k"}, int64(i), 3)
	}
	// Writes 1..5: states 1..4 went to history; limit 3 keeps 2, 3, 4.
	if len(d.History) != 3 {
		t.Fatalf("history len %d, want 3: %s", len(d.History), mtJSON(t, d.History))
	}
	for i, want := range []string{"2", "3", "4"} {
		if d.History[i].Progress != want || d.History[i].Timestamp != int64(i+2) {
			t.Fatalf("history[%d] = %+v, want progress %s (oldest first)", i, d.History[i], want)
		}
	}
	if *d.Progress != "5" {
		t.Fatalf("progress %q", *d.Progress)
	}

	// Limit 1 keeps only the newest; limit <= 0 means the default.
	d = ApplyPush(d, "d", PushFields{Progress: "6", Device: "k"}, 6, 1)
	if len(d.History) != 1 || d.History[0].Progress != "5" {
		t.Fatalf("limit 1: %s", mtJSON(t, d.History))
	}
	d = nil
	for i := 0; i < DefaultHistoryLimit+10; i++ {
		d = ApplyUpdate(d, "d", UpdateFields{Percentage: mtF64(float64(i))}, int64(i), 0)
	}
	if len(d.History) != DefaultHistoryLimit || d.History[0].Percentage != 9 {
		t.Fatalf("default limit: len %d first %v", len(d.History), d.History[0].Percentage)
	}
}

func TestApplyUpdate(t *testing.T) {
	base := &Document{
		ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), Timestamp: 100, PrettyName: "Book",
	}
	baseSnap := HistoryEntry{Progress: "10", Percentage: 0.1, Device: "kpw", Document: "d", Timestamp: 100, PrettyName: "Book"}

	tests := []struct {
		name string
		cur  *Document
		f    UpdateFields
		want *Document
	}{
		{
			name: "name-only document from nothing",
			cur:  nil,
			f:    UpdateFields{PrettyName: "My book"},
			want: &Document{ID: "d", PrettyName: "My book"},
		},
		{
			name: "empty update over nothing",
			cur:  nil,
			f:    UpdateFields{},
			want: &Document{ID: "d"},
		},
		{
			name: "percentage 0 is a value",
			cur:  nil,
			f:    UpdateFields{Percentage: mtF64(0)},
			want: &Document{ID: "d", Percentage: mtF64(0), Timestamp: 200},
		},
		{
			name: "percentage to 0 over a value",
			cur:  base,
			f:    UpdateFields{Percentage: mtF64(0)},
			want: &Document{ID: "d", Progress: mtStr("10"), Percentage: mtF64(0), Device: mtStr("kpw"), Timestamp: 200, PrettyName: "Book",
				History: []HistoryEntry{baseSnap}},
		},
		{
			name: "rename only: no history, timestamp kept",
			cur:  base,
			f:    UpdateFields{PrettyName: "New"},
			want: &Document{ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), Timestamp: 100, PrettyName: "New"},
		},
		{
			name: "empty name keeps",
			cur:  base,
			f:    UpdateFields{Progress: mtStr("11")},
			want: &Document{ID: "d", Progress: mtStr("11"), Percentage: mtF64(0.1), Device: mtStr("kpw"), Timestamp: 200, PrettyName: "Book",
				History: []HistoryEntry{baseSnap}},
		},
		{
			name: "same values: nothing changes",
			cur:  base,
			f:    UpdateFields{Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw")},
			want: &Document{ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), Timestamp: 100, PrettyName: "Book"},
		},
		{
			name: "device_id set for the first time is a change",
			cur:  base,
			f:    UpdateFields{DeviceID: mtStr("")},
			want: &Document{ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kpw"), DeviceID: mtStr(""), Timestamp: 200, PrettyName: "Book",
				History: []HistoryEntry{baseSnap}},
		},
		{
			name: "rename and progress: history holds the old name",
			cur:  base,
			f:    UpdateFields{Device: mtStr("kobo"), PrettyName: "New"},
			want: &Document{ID: "d", Progress: mtStr("10"), Percentage: mtF64(0.1), Device: mtStr("kobo"), Timestamp: 200, PrettyName: "New",
				History: []HistoryEntry{baseSnap}},
		},
		{
			name: "progress on a name-only document: no history",
			cur:  &Document{ID: "d", PrettyName: "N"},
			f:    UpdateFields{Progress: mtStr("3")},
			want: &Document{ID: "d", Progress: mtStr("3"), Timestamp: 200, PrettyName: "N"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := mtJSON(t, tc.cur)
			got := ApplyUpdate(tc.cur, "d", tc.f, 200, 0)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %s\nwant %s", mtJSON(t, got), mtJSON(t, tc.want))
			}
			if after := mtJSON(t, tc.cur); after != before {
				t.Errorf("cur mutated: %s -> %s", before, after)
			}
		})
	}
}

func TestApplyNameOnlyHasNoProgress(t *testing.T) {
	d := ApplyUpdate(nil, "d", UpdateFields{PrettyName: "x"}, 5, 0)
	if d.HasProgress() {
		t.Fatal("name-only document HasProgress")
	}
	if d.Timestamp != 0 {
		t.Fatalf("name-only document timestamp %d, want 0", d.Timestamp)
	}
	var nilDoc *Document
	if nilDoc.HasProgress() {
		t.Fatal("nil HasProgress")
	}
	for _, d := range []*Document{
		{Progress: mtStr("")}, {Percentage: mtF64(0)}, {Device: mtStr("")}, {DeviceID: mtStr("")},
	} {
		if !d.HasProgress() {
			t.Fatalf("%s: HasProgress false", mtJSON(t, d))
		}
	}
}

func TestApplySnapshot(t *testing.T) {
	got := (&Document{ID: "d", Timestamp: 7, PrettyName: "n"}).snapshot()
	want := HistoryEntry{Document: "d", Timestamp: 7, PrettyName: "n"}
	if got != want {
		t.Fatalf("got %+v want %+v", got, want)
	}
	// Seven keys, always present.
	if s := mtJSON(t, got); s != `{"progress":"","percentage":0,"device":"","device_id":"","document":"d","timestamp":7,"pretty_name":"n"}` {
		t.Fatalf("json %s", s)
	}
}
