package packet

import (
	"bytes"
	"testing"
)

func TestParseAuth(t *testing.T) {
	key127 := repeat('k', MaxKeyLen)
	tests := []struct {
		name    string
		msg     []byte
		wantKey []byte
		wantErr error
	}{
		{"empty", nil, nil, ErrAuthMagic},
		{"one byte", []byte{0xb6}, nil, ErrAuthMagic},
		{"wrong first magic byte", []byte{0xb7, 0xc4, 0, 1, 'k'}, nil, ErrAuthMagic},
		{"wrong second magic byte", []byte{0xb6, 0xc5, 0, 1, 'k'}, nil, ErrAuthMagic},
		{"hello echoed back", Hello, nil, ErrAuthMagic},
		{"magic only", []byte{0xb6, 0xc4}, nil, ErrAuthTruncated},
		{"bad version", []byte{0xb6, 0xc4, 1, 1, 'k'}, nil, ErrAuthVersion},
		{"bad version wins over missing key length", []byte{0xb6, 0xc4, 0xff}, nil, ErrAuthVersion},
		{"bad version wins over bad key", []byte{0xb6, 0xc4, 2, 0x80, 'x', 'y'}, nil, ErrAuthVersion},
		{"no key length", []byte{0xb6, 0xc4, 0}, nil, ErrAuthTruncated},
		{"key length 0", []byte{0xb6, 0xc4, 0, 0}, nil, ErrAuthKeyLength},
		{"key length 0x80 is -128", cat([]byte{0xb6, 0xc4, 0, 0x80}, repeat('k', 128)), nil, ErrAuthKeyLength},
		{"key length 0xff is -1", []byte{0xb6, 0xc4, 0, 0xff, 'k'}, nil, ErrAuthKeyLength},
		{"key length 1 without key", []byte{0xb6, 0xc4, 0, 1}, nil, ErrAuthTruncated},
		{"key cut short", []byte{0xb6, 0xc4, 0, 3, 'k', 'e'}, nil, ErrAuthTruncated},
		{"trailing byte", []byte{0xb6, 0xc4, 0, 3, 'k', 'e', 'y', '!'}, nil, ErrAuthTrailing},
		{"min key", []byte{0xb6, 0xc4, 0, 1, 'k'}, []byte("k"), nil},
		{"key", []byte{0xb6, 0xc4, 0x00, 0x03, 'k', 'e', 'y'}, []byte("key"), nil},
		{"max key", cat([]byte{0xb6, 0xc4, 0, 127}, key127), key127, nil},
		{"max key plus trailing", cat([]byte{0xb6, 0xc4, 0, 127}, key127, []byte{0}), nil, ErrAuthTrailing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParseAuth(tt.msg)
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(key, tt.wantKey) {
				t.Fatalf("key = %q, want %q", key, tt.wantKey)
			}
		})
	}
}

func TestParseAuthKeyAliasesMessage(t *testing.T) {
	msg := []byte{0xb6, 0xc4, 0, 3, 'k', 'e', 'y'}
	key, err := ParseAuth(msg)
	if err != nil {
		t.Fatal(err)
	}
	if &key[0] != &msg[4] {
		t.Fatal("key is a copy, want a subslice of msg")
	}
	if cap(key) != len(key) {
		t.Fatalf("cap(key) = %d, want %d so appends cannot reach msg", cap(key), len(key))
	}
}

func TestAppendAuth(t *testing.T) {
	got := AppendAuth(nil, Version, []byte("key"))
	want := []byte{0xb6, 0xc4, 0x00, 0x03, 'k', 'e', 'y'}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendAuth = % x, want % x", got, want)
	}
	// No validation: a bad version and an over-long key are written as given.
	bad := AppendAuth([]byte{0xaa}, 7, repeat('k', 128))
	if !bytes.Equal(bad[:5], []byte{0xaa, 0xb6, 0xc4, 7, 0x80}) || len(bad) != 5+128 {
		t.Fatalf("AppendAuth(bad) = % x", bad[:5])
	}
}

func TestHello(t *testing.T) {
	if !bytes.Equal(Hello, []byte{0x6d, 0x73}) || len(Hello) != HelloLen {
		t.Fatalf("Hello = % x", Hello)
	}
}
