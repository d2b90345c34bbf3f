package token

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SecretFileName is the file, inside the data directory, that holds the
// generated secret when neither GATEWAY_SECRET nor a secret file is given.
const SecretFileName = "secret"

// ErrNoSecret is the error of ReadSecrets when no secret is configured and
// the data directory holds none.
var ErrNoSecret = errors.New("token: no secret")

// Placeholders are the stand-in secret values the deployment examples ship
// (deploy/: k8s secret.example.yaml, example.env, systemd
// gateway.env.example, compose.yaml's defaults). IsPlaceholder refuses them
// and anything shaped like them; a test extracts every placeholder from
// deploy/ and checks that it is refused, so a new example value cannot slip
// through. They are public: never a secret.
var Placeholders = []string{
	"REPLACE-ME",
	"REPLACE-ME-with-32-random-bytes-base64",
	"REPLACE-ME-with-another-32-random-bytes-base64",
	"REPLACE-with-32-random-bytes-base64",
	"REPLACE-with-another-32-random-bytes-base64",
	"example-secret-CHANGE-ME-0123456789abcdef",
	"example-admin-token-CHANGE-ME",
}

// IsPlaceholder reports whether a secret (or an admin token) is a stand-in
// copied from an example rather than a secret: one of Placeholders, or,
// ignoring case, a value that begins with "REPLACE" or contains "CHANGE-ME"
// or "CHANGEME". A random 32-byte secret never looks like that.
func IsPlaceholder(s string) bool {
	s = strings.TrimSpace(s)
	for _, p := range Placeholders {
		if strings.EqualFold(s, p) {
			return true
		}
	}
	u := strings.ToUpper(s)
	return strings.HasPrefix(u, "REPLACE") || strings.Contains(u, "CHANGE-ME") || strings.Contains(u, "CHANGEME")
}

// ParseSecrets parses secrets separated by newlines or commas. Each entry is
// trimmed of surrounding white space and its bytes are the secret (a
// 64-character hex string is used as 64 bytes of text, not decoded). Blank
// entries are ignored. The first secret signs. A placeholder (IsPlaceholder)
// is refused: the examples' values work as well as any 32 bytes, and a node
// running on a published value is open to anyone. Errors never include
// secret material.
func ParseSecrets(text string) (*Secrets, error) {
	fields := strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ',' })
	var list [][]byte
	for _, f := range fields {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if IsPlaceholder(f) {
			return nil, fmt.Errorf("token: secret #%d is a placeholder from the deployment examples, not a secret; generate one with: head -c 32 /dev/urandom | base64", len(list)+1)
		}
		list = append(list, []byte(f))
	}
	if len(list) == 0 {
		return nil, errors.New("token: no secret found")
	}
	return NewSecrets(list...)
}

// LoadSecrets finds the server secrets. In order of precedence:
//
//  1. envValue (the content of GATEWAY_SECRET) if non-empty, parsed by
//     ParseSecrets;
//  2. file if non-empty: ParseSecrets of its content;
//  3. dataDir/secret: read and parsed if it exists, otherwise 32 random
//     bytes, hex-encoded (64 characters), are written to it (dataDir is
//     created with mode 0700, the file with mode 0600, atomically: a
//     temporary file is fsync'd and linked into place, so concurrent
//     starters agree on one secret) and used.
//
// source describes where the secrets came from, for a log line; it never
// contains secret material.
func LoadSecrets(envValue, file, dataDir string) (s *Secrets, source string, err error) {
	return loadSecrets(envValue, file, dataDir, true)
}

// ReadSecrets is LoadSecrets without step 3's generation: when neither
// envValue nor file is given and dataDir/secret does not exist, it fails
// with an error that wraps ErrNoSecret and writes nothing. It is for the
// tools that sign keys for a running node (`gateway key issue`): a secret
// made up on the spot signs keys that no node accepts.
func ReadSecrets(envValue, file, dataDir string) (s *Secrets, source string, err error) {
	return loadSecrets(envValue, file, dataDir, false)
}

func loadSecrets(envValue, file, dataDir string, generate bool) (s *Secrets, source string, err error) {
	if envValue != "" {
		s, err := ParseSecrets(envValue)
		if err != nil {
			return nil, "", fmt.Errorf("GATEWAY_SECRET: %w", err)
		}
		return s, fmt.Sprintf("environment (GATEWAY_SECRET, %d secret(s))", s.Len()), nil
	}
	if file != "" {
		s, err := readSecretFile(file)
		if err != nil {
			return nil, "", err
		}
		return s, fmt.Sprintf("file %s (%d secret(s))", file, s.Len()), nil
	}
	if dataDir == "" {
		return nil, "", fmt.Errorf("%w: GATEWAY_SECRET, secret file and data directory are all unset", ErrNoSecret)
	}
	path := filepath.Join(dataDir, SecretFileName)
	s, err = readSecretFile(path)
	if err == nil {
		return s, fmt.Sprintf("file %s (%d secret(s))", path, s.Len()), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	if !generate {
		return nil, "", fmt.Errorf("%w: %s does not exist", ErrNoSecret, path)
	}
	created, err := generateSecretFile(dataDir, path)
	if err != nil {
		return nil, "", err
	}
	s, err = readSecretFile(path)
	if err != nil {
		return nil, "", err
	}
	if created {
		return s, fmt.Sprintf("generated file %s", path), nil
	}
	return s, fmt.Sprintf("file %s (%d secret(s))", path, s.Len()), nil
}

func readSecretFile(path string) (*Secrets, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token: secret file: %w", err)
	}
	s, err := ParseSecrets(string(b))
	if err != nil {
		return nil, fmt.Errorf("token: secret file %s: %w", path, err)
	}
	return s, nil
}

// generateSecretFile writes a new random secret to path unless the file
// appears meanwhile. created is false when another process won the race.
func generateSecretFile(dir, path string) (created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("token: data directory: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, fmt.Errorf("token: generate secret: %w", err)
	}
	content := []byte(hex.EncodeToString(b[:]) + "\n")
	tmp, err := writeTemp(dir, ".secret-*", content)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	// A hard link never replaces an existing file: if another process
	// generated a secret first, keep theirs.
	switch err := os.Link(tmp, path); {
	case err == nil:
		created = true
	case errors.Is(err, fs.ErrExist):
		return false, nil
	default:
		// File systems without hard links: fall back to rename.
		if err := os.Rename(tmp, path); err != nil {
			return false, fmt.Errorf("token: secret file: %w", err)
		}
		created = true
	}
	if err := syncDir(dir); err != nil {
		return created, err
	}
	return created, nil
}

// writeTemp writes content to a new file in dir (mode 0600), fsyncs and
// closes it, and returns its name.
func writeTemp(dir, pattern string, content []byte) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", fmt.Errorf("token: write %s: %w", name, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(content); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("token: write %s: %w", name, err)
	}
	return name, nil
}

// syncDir fsyncs a directory so that a rename or link in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("token: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("token: sync %s: %w", dir, err)
	}
	return nil
}
