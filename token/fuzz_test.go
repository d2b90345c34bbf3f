package token

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func FuzzVerify(f *testing.F) {
	s := mustSecrets(f, secretA)
	raw, _ := mustIssue(f, s, "alice", time.Hour, t0)
	long, _ := mustIssue(f, s, string(bytes.Repeat([]byte("é"), 32)), MaxKeyTTL, t0)
	f.Add(raw)
	f.Add(long)
	f.Add(raw[:len(raw)-1])
	f.Add([]byte{})
	f.Add([]byte{FormatVersion})
	f.Add(make([]byte, MinKeyLen))
	f.Add(bytes.Repeat([]byte{0xff}, MaxKeyLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := s.Verify(b, t0)
		if err != nil {
			return
		}
		// Whatever verifies must be a well-formed, unexpired key.
		if ValidSubject(c.Subject) != nil {
			t.Fatalf("verified key with invalid subject %q", c.Subject)
		}
		if !c.Expires.After(t0) {
			t.Fatal("verified an expired key")
		}
	})
}

func FuzzDecodeText(f *testing.F) {
	s := mustSecrets(f, secretA)
	raw, _ := mustIssue(f, s, "alice", time.Hour, t0)
	f.Add(EncodeText(raw))
	f.Add(base64.StdEncoding.EncodeToString(raw))
	f.Add(" " + base64.URLEncoding.EncodeToString(raw) + "\n")
	f.Add("")
	f.Add("=")
	f.Add("A===")
	f.Add("ab+_")
	f.Fuzz(func(t *testing.T, text string) {
		b, err := DecodeText(text)
		if err != nil {
			return
		}
		again, err := DecodeText(EncodeText(b))
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-decode of %q: %x, %v", text, again, err)
		}
		if _, err := s.Verify(b, t0); err != nil && bytes.Equal(b, raw) {
			t.Fatal("the seed key stopped verifying")
		}
	})
}

// FuzzReadSnapshot: any file content either fails to read or reads back as
// records that survive a write and a second read unchanged.
func FuzzReadSnapshot(f *testing.F) {
	f.Add([]byte(`{"version":1,"marker":"m","saved_at":1,"records":[{"kind":"id","id":"0102030405060708","at":5,"exp":9999999999999}]}`))
	f.Add([]byte(`{"version":1,"records":[{"kind":"subject","sub":"alice","at":9999999999}]}`))
	f.Add([]byte(`{"version":1,"records":null}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "fuzz.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := readSnapshot(path, t0)
		if err != nil {
			return
		}
		if err := writeSnapshot(path, s.marker, s.records, t0); err != nil {
			t.Fatal(err)
		}
		again, err := readSnapshot(path, t0)
		if err != nil {
			t.Fatalf("a snapshot written from a good read does not read back: %v", err)
		}
		if again.marker != s.marker || !slices.Equal(again.records, s.records) {
			t.Fatalf("round trip changed the snapshot: %+v -> %+v", s, again)
		}
	})
}
