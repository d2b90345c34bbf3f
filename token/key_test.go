package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	secretA = []byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	secretB = []byte("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
	t0      = time.Date(2026, 3, 1, 12, 0, 0, 123_456_789, time.UTC)
)

func mustSecrets(t testing.TB, secrets ...[]byte) *Secrets {
	t.Helper()
	s, err := NewSecrets(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustIssue(t testing.TB, s *Secrets, subject string, ttl time.Duration, now time.Time) ([]byte, Claims) {
	t.Helper()
	raw, c, err := s.Issue(subject, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return raw, c
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	s := mustSecrets(t, secretA)
	for _, tc := range []struct {
		name    string
		subject string
		ttl     time.Duration
		wantTTL time.Duration
	}{
		{"short subject", "a", time.Hour, time.Hour},
		{"unicode subject", "jörg@example.com", time.Minute, time.Minute},
		{"max subject", strings.Repeat("x", MaxSubjectLen), MaxKeyTTL, MaxKeyTTL},
		{"zero ttl is default", "alice", 0, DefaultKeyTTL},
		{"one millisecond", "alice", time.Millisecond, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, c := mustIssue(t, s, tc.subject, tc.ttl, t0)
			if got := c.Expires.Sub(c.IssuedAt); got != tc.wantTTL {
				t.Errorf("ttl = %v, want %v", got, tc.wantTTL)
			}
			if !c.IssuedAt.Equal(t0.Truncate(time.Millisecond)) {
				t.Errorf("IssuedAt = %v, want %v", c.IssuedAt, t0.Truncate(time.Millisecond))
			}
			got, err := s.Verify(raw, t0)
			if err != nil {
				t.Fatal(err)
			}
			if got != c {
				t.Errorf("Verify = %+v, want %+v", got, c)
			}
			// Through the text form too.
			raw2, err := DecodeText(EncodeText(raw))
			if err != nil || !bytes.Equal(raw, raw2) {
				t.Fatalf("text round trip: %v", err)
			}
		})
	}
}

func TestKeyLayout(t *testing.T) {
	s := mustSecrets(t, secretA)
	raw, c := mustIssue(t, s, "alice", time.Hour, t0)
	if len(raw) != 1+1+8+8+8+1+5+32 {
		t.Fatalf("len = %d", len(raw))
	}
	sum := sha256.Sum256(secretA)
	mac := hmac.New(sha256.New, secretA)
	mac.Write(raw[:len(raw)-32])
	for _, f := range []struct {
		name      string
		got, want []byte
	}{
		{"version", raw[0:1], []byte{FormatVersion}},
		{"secret id", raw[1:2], sum[:1]},
		{"key id", raw[2:10], c.ID[:]},
		{"issued", raw[10:18], binary.BigEndian.AppendUint64(nil, uint64(t0.UnixMilli()))},
		{"expires", raw[18:26], binary.BigEndian.AppendUint64(nil, uint64(t0.Add(time.Hour).UnixMilli()))},
		{"subject length", raw[26:27], []byte{5}},
		{"subject", raw[27:32], []byte("alice")},
		{"tag", raw[32:], mac.Sum(nil)},
	} {
		if !bytes.Equal(f.got, f.want) {
			t.Errorf("%s = %x, want %x", f.name, f.got, f.want)
		}
	}
	if c.ID == (KeyID{}) {
		t.Error("zero key id")
	}
	_, c2 := mustIssue(t, s, "alice", time.Hour, t0)
	if c2.ID == c.ID {
		t.Error("two keys share an id")
	}
}

func TestMaxKeyFitsSignedLengthByte(t *testing.T) {
	if MaxKeyLen != 123 || MaxKeyLen > 127 {
		t.Fatalf("MaxKeyLen = %d", MaxKeyLen)
	}
	s := mustSecrets(t, secretA)
	// The longest subject in bytes, with multi-byte characters too.
	for _, sub := range []string{strings.Repeat("z", MaxSubjectLen), strings.Repeat("é", MaxSubjectLen/2)} {
		raw, _ := mustIssue(t, s, sub, MaxKeyTTL, t0)
		if len(raw) > 127 || len(raw) != MaxKeyLen {
			t.Errorf("key of %q is %d bytes", sub, len(raw))
		}
	}
}

func TestTamperedKey(t *testing.T) {
	s := mustSecrets(t, secretA)
	raw, _ := mustIssue(t, s, "alice", time.Hour, t0)
	for i := range raw {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(raw)
			bad[i] ^= mask
			_, err := s.Verify(bad, t0)
			if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("byte %d ^ %#x: err = %v", i, mask, err)
			}
		}
	}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"truncated", raw[:len(raw)-1]},
		{"extended", append(bytes.Clone(raw), 0)},
		{"too long", make([]byte, 128)},
		{"too short", raw[:MinKeyLen-1]},
	} {
		if _, err := s.Verify(tc.raw, t0); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", tc.name, err)
		}
	}
}

func TestExpiry(t *testing.T) {
	s := mustSecrets(t, secretA)
	raw, c := mustIssue(t, s, "alice", time.Hour, t0)
	for _, tc := range []struct {
		name string
		now  time.Time
		want error
	}{
		{"at issue", c.IssuedAt, nil},
		{"just before expiry", c.Expires.Add(-time.Microsecond), nil},
		{"at expiry", c.Expires, ErrExpired},
		{"after expiry", c.Expires.Add(time.Hour), ErrExpired},
	} {
		got, err := s.Verify(raw, tc.now)
		if err != tc.want {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if err == ErrExpired && got != c {
			t.Errorf("%s: claims with ErrExpired = %+v", tc.name, got)
		}
	}
}

func TestWrongSecretAndRotation(t *testing.T) {
	a := mustSecrets(t, secretA)
	b := mustSecrets(t, secretB)
	ba := mustSecrets(t, secretB, secretA)
	keyA, cA := mustIssue(t, a, "alice", time.Hour, t0)

	if _, err := b.Verify(keyA, t0); err != ErrBadSignature {
		t.Errorf("wrong secret: err = %v", err)
	}
	if got, err := ba.Verify(keyA, t0); err != nil || got != cA {
		t.Errorf("rotated set rejects old key: %v", err)
	}
	keyBA, _ := mustIssue(t, ba, "bob", time.Hour, t0)
	sumB := sha256.Sum256(secretB)
	if keyBA[1] != sumB[0] {
		t.Errorf("new key's secret id %#x, want B's %#x", keyBA[1], sumB[0])
	}
	if _, err := b.Verify(keyBA, t0); err != nil {
		t.Errorf("new key not signed by B: %v", err)
	}
	if _, err := a.Verify(keyBA, t0); err != ErrBadSignature {
		t.Errorf("new key verifies under A alone: %v", err)
	}
}

func TestSameSecretIDByte(t *testing.T) {
	// Find a secret whose id byte collides with secretA's, so Verify must
	// try both.
	want := secretID(secretA)
	var other []byte
	for i := 0; ; i++ {
		c := []byte(strings.Repeat("c", 32) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26)))
		if secretID(c) == want {
			other = c
			break
		}
	}
	s := mustSecrets(t, other, secretA)
	raw, _ := mustIssue(t, mustSecrets(t, secretA), "alice", time.Hour, t0)
	if _, err := s.Verify(raw, t0); err != nil {
		t.Fatal(err)
	}
}

func TestIssueRefuses(t *testing.T) {
	s := mustSecrets(t, secretA)
	for _, tc := range []struct {
		name    string
		subject string
		ttl     time.Duration
	}{
		{"empty subject", "", time.Hour},
		{"subject too long", strings.Repeat("x", MaxSubjectLen+1), time.Hour},
		{"multibyte subject too long", strings.Repeat("é", MaxSubjectLen/2+1), time.Hour},
		{"control char", "al\nice", time.Hour},
		{"DEL", "al\x7fice", time.Hour},
		{"C1 control", "al\u0085ice", time.Hour},
		{"invalid utf-8", "al\xffice", time.Hour},
		{"ttl too long", "alice", MaxKeyTTL + time.Millisecond},
		{"negative ttl", "alice", -time.Second},
		{"sub-millisecond ttl", "alice", time.Microsecond},
	} {
		if raw, _, err := s.Issue(tc.subject, tc.ttl, t0); err == nil {
			t.Errorf("%s: issued %x", tc.name, raw)
		}
	}
}

func TestNewSecrets(t *testing.T) {
	if _, err := NewSecrets(); err == nil {
		t.Error("no secrets accepted")
	}
	if _, err := NewSecrets(secretA, secretA[:31]); err == nil {
		t.Error("31-byte secret accepted")
	} else if strings.Contains(err.Error(), string(secretA[:31])) {
		t.Error("error reveals the secret")
	}
	// The bytes are copied.
	k := bytes.Clone(secretA)
	s := mustSecrets(t, k)
	raw, _ := mustIssue(t, s, "alice", time.Hour, t0)
	k[0] ^= 1
	if _, err := s.Verify(raw, t0); err != nil {
		t.Error("secret not copied")
	}
}

func TestDecodeText(t *testing.T) {
	s := mustSecrets(t, secretA)
	// Find a key whose encodings differ between alphabets and need padding.
	var raw []byte
	for {
		raw, _ = mustIssue(t, s, "alice", time.Hour, t0)
		std := base64.StdEncoding.EncodeToString(raw)
		if strings.ContainsAny(std, "+/") && strings.HasSuffix(std, "=") {
			break
		}
	}
	for _, tc := range []struct {
		name, text string
	}{
		{"url raw", base64.RawURLEncoding.EncodeToString(raw)},
		{"url padded", base64.URLEncoding.EncodeToString(raw)},
		{"std raw", base64.RawStdEncoding.EncodeToString(raw)},
		{"std padded", base64.StdEncoding.EncodeToString(raw)},
		{"whitespace", " \t" + base64.StdEncoding.EncodeToString(raw) + "\r\n"},
	} {
		got, err := DecodeText(tc.text)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("%s: %x, %v", tc.name, got, err)
		}
	}
	if EncodeText(raw) != base64.RawURLEncoding.EncodeToString(raw) {
		t.Error("EncodeText is not raw URL base64")
	}
	for _, bad := range []string{"", "   ", "!!!!", "a", strings.Repeat("A", 300), "ab+_"} {
		if _, err := DecodeText(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeText(%q) err = %v", bad, err)
		}
	}
}

func TestKeyID(t *testing.T) {
	id := KeyID{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	if id.String() != "0123456789abcdef" {
		t.Fatal(id.String())
	}
	for _, s := range []string{"0123456789abcdef", "0123456789ABCDEF"} {
		if got, err := ParseKeyID(s); err != nil || got != id {
			t.Errorf("ParseKeyID(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "0123", "0123456789abcdeg", "0123456789abcdef00"} {
		if _, err := ParseKeyID(s); err == nil {
			t.Errorf("ParseKeyID(%q) accepted", s)
		}
	}
	var back KeyID
	text, _ := id.MarshalText()
	if err := back.UnmarshalText(text); err != nil || back != id {
		t.Error("text round trip")
	}
}

func TestVerifyConcurrent(t *testing.T) {
	s := mustSecrets(t, secretB, secretA)
	raw, c := mustIssue(t, mustSecrets(t, secretA), "alice", time.Hour, t0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if got, err := s.Verify(raw, t0); err != nil || got != c {
					t.Error("concurrent verify failed")
					return
				}
				if _, _, err := s.Issue("bob", time.Hour, t0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestVerifyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	s := mustSecrets(t, secretA)
	raw, _ := mustIssue(t, s, "alice", time.Hour, t0)
	s.Verify(raw, t0) // warm the pool
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := s.Verify(raw, t0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 { // the subject string
		t.Errorf("Verify allocates %v times", allocs)
	}
}

func BenchmarkVerify(b *testing.B) {
	s := mustSecrets(b, secretB, secretA)
	raw, _ := mustIssue(b, s, "user-1234@example.com", time.Hour, t0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Verify(raw, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkIssue(b *testing.B) {
	s := mustSecrets(b, secretA)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Issue("user-1234@example.com", time.Hour, t0); err != nil {
			b.Fatal(err)
		}
	}
}
