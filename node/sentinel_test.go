package node

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRedisSentinel(t *testing.T) {
	for _, tc := range []struct {
		in      string
		name    string
		addrs   []string
		wantErr string
	}{
		{in: "mymaster@127.0.0.1:26379", name: "mymaster", addrs: []string{"127.0.0.1:26379"}},
		{in: "m@a:1,b:2, c:3", name: "m", addrs: []string{"a:1", "b:2", "c:3"}},
		{in: "m@[::1]:26379,", name: "m", addrs: []string{"[::1]:26379"}},
		{in: "m@sentinel.example:26379", name: "m", addrs: []string{"sentinel.example:26379"}},
		{in: "", wantErr: "want master-name@"},
		{in: "127.0.0.1:26379", wantErr: "want master-name@"},
		{in: "@127.0.0.1:26379", wantErr: "want master-name@"},
		{in: "m@", wantErr: "no sentinel address"},
		{in: "m@ , ", wantErr: "no sentinel address"},
		{in: "m@127.0.0.1", wantErr: `"127.0.0.1": want host:port`},
		{in: "m@:26379", wantErr: `":26379": want host:port`},
		{in: "m@a:0", wantErr: "port must be 1..65535"},
		{in: "m@a:65536", wantErr: "port must be 1..65535"},
		{in: "m@a:x", wantErr: "port must be 1..65535"},
		{in: "m@a:1,b", wantErr: `"b": want host:port`},
	} {
		name, addrs, err := ParseRedisSentinel(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--redis-sentinel") {
				t.Errorf("%q: err %v, want one containing --redis-sentinel and %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || name != tc.name || !slices.Equal(addrs, tc.addrs) {
			t.Errorf("%q: got %q %q %v, want %q %q", tc.in, name, addrs, err, tc.name, tc.addrs)
		}
	}
}
