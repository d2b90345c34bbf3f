package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// FormatVersion is the first byte of every access key this package issues.
const FormatVersion = 1

// MaxSubjectLen is the longest subject, in bytes, a key may carry.
const MaxSubjectLen = 64

// DefaultKeyTTL is the lifetime of a key issued with a zero TTL.
const DefaultKeyTTL = 30 * 24 * time.Hour

// MaxKeyTTL is the longest lifetime Issue accepts. Revocation records whose
// key expiry is unknown live this long.
const MaxKeyTTL = 366 * 24 * time.Hour

// MinSecretLen is the shortest secret NewSecrets accepts, in bytes.
const MinSecretLen = 32

// Layout of a key; see the package documentation.
const (
	offVersion  = 0
	offSecretID = 1
	offKeyID    = 2
	offIssued   = offKeyID + 8  // 10
	offExpires  = offIssued + 8 // 18
	offSubLen   = offExpires + 8
	offSubject  = offSubLen + 1 // 27
	tagLen      = sha256.Size   // 32
)

// Key lengths, in bytes.
const (
	// MinKeyLen is the length of a key with a one-byte subject.
	MinKeyLen = 60
	// MaxKeyLen is the length of a key with a MaxSubjectLen-byte subject. It
	// is at most 127 so the key fits the native protocol's signed length byte.
	MaxKeyLen = 123
)

// Compile-time checks of the lengths above against the layout.
var (
	_ [MinKeyLen - (offSubject + 1 + tagLen)]struct{}
	_ [(offSubject + 1 + tagLen) - MinKeyLen]struct{}
	_ [MaxKeyLen - (offSubject + MaxSubjectLen + tagLen)]struct{}
	_ [(offSubject + MaxSubjectLen + tagLen) - MaxKeyLen]struct{}
	_ [127 - MaxKeyLen]struct{}
)

// maxTextLen bounds the input DecodeText is willing to look at (after
// trimming): a padded base64 MaxKeyLen-byte key is 164 characters.
const maxTextLen = 256

// Errors returned by Verify and DecodeText. Verify returns them unwrapped.
var (
	ErrMalformed    = errors.New("token: malformed key")
	ErrBadSignature = errors.New("token: bad key signature")
	ErrExpired      = errors.New("token: key expired")
)

// KeyID identifies one key. It is random, chosen by Issue.
type KeyID [8]byte

// String returns the id as 16 lower-case hex characters.
func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText implements encoding.TextMarshaler (the String form).
func (id KeyID) MarshalText() ([]byte, error) {
	b := make([]byte, hex.EncodedLen(len(id)))
	hex.Encode(b, id[:])
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler (see ParseKeyID).
func (id *KeyID) UnmarshalText(b []byte) error {
	v, err := ParseKeyID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseKeyID parses the 16 hex characters of KeyID.String (either case).
func ParseKeyID(s string) (KeyID, error) {
	var id KeyID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("token: key id %q: want %d hex characters", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return KeyID{}, fmt.Errorf("token: key id %q: %w", s, err)
	}
	return id, nil
}

// Claims is what a key says. Times have millisecond precision and are UTC.
type Claims struct {
	ID       KeyID
	Subject  string
	IssuedAt time.Time
	Expires  time.Time
}

// Secrets holds the server secrets. The first signs new keys; every one
// verifies. It is immutable after creation and safe for concurrent use.
type Secrets struct {
	list []*secret
}

type secret struct {
	id   byte
	key  []byte
	pool sync.Pool // of *macState
}

// macState is a reusable HMAC plus room for its sum, so that Verify does not
// allocate for either.
type macState struct {
	h   hash.Hash
	sum [tagLen]byte
}

func (s *secret) get() *macState {
	if m, ok := s.pool.Get().(*macState); ok {
		m.h.Reset()
		return m
	}
	return &macState{h: hmac.New(sha256.New, s.key)}
}

func (s *secret) put(m *macState) { s.pool.Put(m) }

// secretID is the first byte of SHA-256 of the secret.
func secretID(key []byte) byte {
	sum := sha256.Sum256(key)
	return sum[0]
}

// NewSecrets returns a set of secrets: at least one, each at least
// MinSecretLen bytes. The first signs; all verify. The bytes are copied.
func NewSecrets(secrets ...[]byte) (*Secrets, error) {
	if len(secrets) == 0 {
		return nil, errors.New("token: no secret given")
	}
	s := &Secrets{list: make([]*secret, 0, len(secrets))}
	for i, k := range secrets {
		if len(k) < MinSecretLen {
			// Never print the secret itself.
			return nil, fmt.Errorf("token: secret #%d is %d bytes; need at least %d", i+1, len(k), MinSecretLen)
		}
		key := append([]byte(nil), k...)
		s.list = append(s.list, &secret{id: secretID(key), key: key})
	}
	return s, nil
}

// Len returns how many secrets the set holds.
func (s *Secrets) Len() int { return len(s.list) }

// ValidSubject reports whether subject may be put in a key: 1 to
// MaxSubjectLen bytes of valid UTF-8 without control characters.
func ValidSubject(subject string) error {
	if subject == "" {
		return errors.New("token: empty subject")
	}
	if len(subject) > MaxSubjectLen {
		return fmt.Errorf("token: subject is %d bytes; at most %d allowed", len(subject), MaxSubjectLen)
	}
	if !utf8.ValidString(subject) {
		return errors.New("token: subject is not valid UTF-8")
	}
	for _, r := range subject {
		if unicode.IsControl(r) {
			return fmt.Errorf("token: subject contains control character %U", r)
		}
	}
	return nil
}

// msTime converts unix milliseconds to a UTC time.
func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// Issue signs a new key for subject with the first secret. A zero ttl means
// DefaultKeyTTL; a negative ttl or one above MaxKeyTTL is refused. IssuedAt
// is now truncated to the millisecond.
func (s *Secrets) Issue(subject string, ttl time.Duration, now time.Time) (raw []byte, c Claims, err error) {
	if err := ValidSubject(subject); err != nil {
		return nil, Claims{}, err
	}
	switch {
	case ttl == 0:
		ttl = DefaultKeyTTL
	case ttl < 0:
		return nil, Claims{}, fmt.Errorf("token: negative ttl %v", ttl)
	case ttl > MaxKeyTTL:
		return nil, Claims{}, fmt.Errorf("token: ttl %v exceeds the maximum %v", ttl, MaxKeyTTL)
	}
	if ttl < time.Millisecond {
		return nil, Claims{}, fmt.Errorf("token: ttl %v is below a millisecond", ttl)
	}
	if _, err := rand.Read(c.ID[:]); err != nil {
		return nil, Claims{}, fmt.Errorf("token: key id: %w", err)
	}
	issued := now.UnixMilli()
	expires := issued + ttl.Milliseconds()
	c.Subject = subject
	c.IssuedAt = msTime(issued)
	c.Expires = msTime(expires)

	sec := s.list[0]
	raw = make([]byte, offSubject+len(subject), offSubject+len(subject)+tagLen)
	raw[offVersion] = FormatVersion
	raw[offSecretID] = sec.id
	copy(raw[offKeyID:], c.ID[:])
	binary.BigEndian.PutUint64(raw[offIssued:], uint64(issued))
	binary.BigEndian.PutUint64(raw[offExpires:], uint64(expires))
	raw[offSubLen] = byte(len(subject))
	copy(raw[offSubject:], subject)
	m := sec.get()
	m.h.Write(raw)
	raw = m.h.Sum(raw)
	sec.put(m)
	return raw, c, nil
}

// Verify checks raw and returns its claims. The error is nil, ErrMalformed
// (wrong length, version or layout), ErrBadSignature (no secret of the set
// signed it) or ErrExpired (now >= Expires; the claims are returned along
// with it, for logging). Verify does no I/O, takes no lock and allocates
// only the subject string.
func (s *Secrets) Verify(raw []byte, now time.Time) (Claims, error) {
	if len(raw) < MinKeyLen || len(raw) > MaxKeyLen || raw[offVersion] != FormatVersion {
		return Claims{}, ErrMalformed
	}
	n := int(raw[offSubLen])
	if n == 0 || n > MaxSubjectLen || len(raw) != offSubject+n+tagLen {
		return Claims{}, ErrMalformed
	}
	body, tag := raw[:offSubject+n], raw[offSubject+n:]
	ok := false
	for _, sec := range s.list {
		if sec.id != raw[offSecretID] {
			continue
		}
		m := sec.get()
		m.h.Write(body)
		m.h.Sum(m.sum[:0])
		ok = hmac.Equal(m.sum[:], tag)
		sec.put(m)
		if ok {
			break
		}
	}
	if !ok {
		return Claims{}, ErrBadSignature
	}
	var c Claims
	copy(c.ID[:], raw[offKeyID:])
	issued := int64(binary.BigEndian.Uint64(raw[offIssued:]))
	expires := int64(binary.BigEndian.Uint64(raw[offExpires:]))
	c.IssuedAt = msTime(issued)
	c.Expires = msTime(expires)
	c.Subject = string(raw[offSubject : offSubject+n])
	if now.UnixMilli() >= expires {
		return c, ErrExpired
	}
	return c, nil
}

// EncodeText returns the text form of a key: base64, URL alphabet, no
// padding.
func EncodeText(raw []byte) string { return base64.RawURLEncoding.EncodeToString(raw) }

// DecodeText parses the text form of a key. It trims surrounding white
// space and accepts the standard or the URL alphabet, padded or not. Errors
// wrap ErrMalformed. It does not verify the key.
func DecodeText(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxTextLen {
		return nil, ErrMalformed
	}
	s = strings.TrimSuffix(s, "=")
	s = strings.TrimSuffix(s, "=")
	if s == "" {
		return nil, ErrMalformed
	}
	enc := base64.RawURLEncoding
	if strings.ContainsAny(s, "+/") {
		enc = base64.RawStdEncoding
	}
	raw, err := enc.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return raw, nil
}
