package token

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSecrets(t *testing.T) {
	a, b := string(secretA), string(secretB)
	for _, tc := range []struct {
		name  string
		text  string
		first string
		n     int
	}{
		{"one", a, a, 1},
		{"comma", b + "," + a, b, 2},
		{"newlines and blanks", "\n  " + b + "  \r\n\n" + a + "\n", b, 2},
		{"mixed", b + ",\n , " + a + ",", b, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSecrets(tc.text)
			if err != nil {
				t.Fatal(err)
			}
			if s.Len() != tc.n {
				t.Errorf("Len = %d, want %d", s.Len(), tc.n)
			}
			raw, _ := mustIssue(t, s, "alice", time.Hour, t0)
			if _, err := mustSecrets(t, []byte(tc.first)).Verify(raw, t0); err != nil {
				t.Errorf("first secret does not sign: %v", err)
			}
		})
	}
	for _, bad := range []string{"", " ,\n, ", "short", a + ",short"} {
		if _, err := ParseSecrets(bad); err == nil {
			t.Errorf("ParseSecrets(%q) accepted", bad)
		} else if strings.Contains(err.Error(), "short") && strings.Contains(bad, "short") {
			t.Errorf("error %q reveals the secret", err)
		}
	}
}

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(file, []byte(string(secretB)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signedBy := func(t *testing.T, s *Secrets, want []byte) {
		t.Helper()
		raw, _ := mustIssue(t, s, "alice", time.Hour, t0)
		if _, err := mustSecrets(t, want).Verify(raw, t0); err != nil {
			t.Errorf("not signed by the expected secret: %v", err)
		}
	}

	t.Run("env wins", func(t *testing.T) {
		s, src, err := LoadSecrets(string(secretA), file, dir)
		if err != nil {
			t.Fatal(err)
		}
		signedBy(t, s, secretA)
		if !strings.Contains(src, "GATEWAY_SECRET") || strings.Contains(src, string(secretA)) {
			t.Errorf("source %q", src)
		}
	})
	t.Run("file second", func(t *testing.T) {
		s, src, err := LoadSecrets("", file, dir)
		if err != nil {
			t.Fatal(err)
		}
		signedBy(t, s, secretB)
		if !strings.Contains(src, file) || strings.Contains(src, string(secretB)) {
			t.Errorf("source %q", src)
		}
	})
	t.Run("missing file fails", func(t *testing.T) {
		if _, _, err := LoadSecrets("", filepath.Join(dir, "nope"), dir); err == nil {
			t.Error("missing secret file accepted")
		}
	})
	t.Run("generated", func(t *testing.T) {
		data := filepath.Join(t.TempDir(), "data", "dir")
		s1, src1, err := LoadSecrets("", "", data)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(src1, "generated") {
			t.Errorf("source %q", src1)
		}
		path := filepath.Join(data, SecretFileName)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("secret file mode %v", fi.Mode().Perm())
		}
		if di, _ := os.Stat(data); di.Mode().Perm() != 0o700 {
			t.Errorf("data dir mode %v", di.Mode().Perm())
		}
		content, _ := os.ReadFile(path)
		if got := strings.TrimSpace(string(content)); len(got) != 64 || strings.Trim(got, "0123456789abcdef") != "" {
			t.Errorf("secret file holds %d chars, not 64 hex", len(got))
		}
		entries, _ := os.ReadDir(data)
		if len(entries) != 1 {
			t.Errorf("data dir holds %d entries (temp file left?)", len(entries))
		}

		s2, src2, err := LoadSecrets("", "", data)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(src2, "generated") {
			t.Errorf("second load generated again: %q", src2)
		}
		raw, _ := mustIssue(t, s1, "alice", time.Hour, t0)
		if _, err := s2.Verify(raw, t0); err != nil {
			t.Error("second load uses another secret")
		}
	})
	t.Run("concurrent generation agrees", func(t *testing.T) {
		data := t.TempDir()
		var wg sync.WaitGroup
		keys := make([][]byte, 8)
		sets := make([]*Secrets, 8)
		for i := range keys {
			wg.Go(func() {
				s, _, err := LoadSecrets("", "", data)
				if err != nil {
					t.Error(err)
					return
				}
				sets[i] = s
				keys[i], _, _ = s.Issue("alice", time.Hour, t0)
			})
		}
		wg.Wait()
		for i := range keys {
			for j := range sets {
				if sets[j] == nil || keys[i] == nil {
					continue
				}
				if _, err := sets[j].Verify(keys[i], t0); err != nil {
					t.Fatalf("loader %d and %d disagree on the secret", i, j)
				}
			}
		}
	})
	t.Run("nothing", func(t *testing.T) {
		if _, _, err := LoadSecrets("", "", ""); err == nil {
			t.Error("no source accepted")
		}
	})
}

// TestReadSecretsNeverGenerates: ReadSecrets finds what LoadSecrets would,
// but an empty data directory is ErrNoSecret and stays empty.
func TestReadSecretsNeverGenerates(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	_, _, err := ReadSecrets("", "", data)
	if !errors.Is(err, ErrNoSecret) || !strings.Contains(err.Error(), filepath.Join(data, SecretFileName)) {
		t.Fatalf("ReadSecrets of an empty data dir: %v, want ErrNoSecret naming the path", err)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadSecrets created %s (%v)", data, err)
	}
	generated, _, err := LoadSecrets("", "", data)
	if err != nil {
		t.Fatal(err)
	}
	read, src, err := ReadSecrets("", "", data)
	if err != nil || !strings.Contains(src, filepath.Join(data, SecretFileName)) {
		t.Fatalf("ReadSecrets after generation: %q, %v", src, err)
	}
	raw, _ := mustIssue(t, read, "alice", time.Hour, t0)
	if _, err := generated.Verify(raw, t0); err != nil {
		t.Fatalf("ReadSecrets found another secret than LoadSecrets generated: %v", err)
	}
	if _, _, err := ReadSecrets("", "", ""); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("ReadSecrets with nothing: %v, want ErrNoSecret", err)
	}
}

// TestPlaceholdersRefused: the examples' values are refused wherever a
// secret is parsed (GATEWAY_SECRET, a secret file), alone or in a rotation
// list, without echoing them; real secrets that merely contain the words
// elsewhere pass.
func TestPlaceholdersRefused(t *testing.T) {
	bad := append([]string{"replace-me-0123456789-0123456789-0123456789", "REPLACEMENT-0123456789-0123456789-0123456789",
		"my-secret-changeme-0123456789-0123456789"}, Placeholders...)
	for _, p := range bad {
		if !IsPlaceholder(p) {
			t.Errorf("IsPlaceholder(%q) = false", p)
		}
		if _, err := ParseSecrets(p); err == nil || !strings.Contains(err.Error(), "placeholder") {
			t.Errorf("ParseSecrets(%q): %v, want a placeholder error", p, err)
		}
		_, err := ParseSecrets(strings.Repeat("k", MinSecretLen) + "," + p)
		if err == nil || !strings.Contains(err.Error(), "secret #2 is a placeholder") || strings.Contains(err.Error(), p) {
			t.Errorf("ParseSecrets(good,%q): %v, want secret #2 refused without its value", p, err)
		}
		_, _, err = LoadSecrets(p, "", t.TempDir())
		if err == nil || !strings.HasPrefix(err.Error(), "GATEWAY_SECRET: ") {
			t.Errorf("LoadSecrets(%q): %v, want an error naming GATEWAY_SECRET", p, err)
		}
		file := filepath.Join(t.TempDir(), "secrets")
		if err := os.WriteFile(file, []byte(p+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err = LoadSecrets("", file, t.TempDir()); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("LoadSecrets(file %q): %v, want an error naming the file", p, err)
		}
	}
	for _, good := range []string{string(secretA), "0123456789-replace-me-0123456789-0123456789", "x-CHANGE-0123456789-ME-0123456789-012"} {
		if IsPlaceholder(good) {
			t.Errorf("IsPlaceholder(%q) = true", good)
		}
	}
}
