package node

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRedisSentinel(t *testing.T) {
	for _, tc := range []struct {
		in         string
		name       string
		addrs      []string
		user, pass string
		db         int
		wantErr    string
	}{
		{in: "mymaster@127.0.0.1:26379", name: "mymaster", addrs: []string{"127.0.0.1:26379"}},
		{in: "m@a:1,b:2, c:3", name: "m", addrs: []string{"a:1", "b:2", "c:3"}},
		{in: "m@[::1]:26379,", name: "m", addrs: []string{"[::1]:26379"}},
		{in: "m@sentinel.example:26379", name: "m", addrs: []string{"sentinel.example:26379"}},
		// The URL form: user and password are the master's; the path names
		// the master and, optionally, the database.
		{in: "redis://a:1,b:2/mymaster", name: "mymaster", addrs: []string{"a:1", "b:2"}},
		{in: "redis://gw:s3cret@a:1,[::1]:2/m/3", name: "m", addrs: []string{"a:1", "[::1]:2"}, user: "gw", pass: "s3cret", db: 3},
		{in: "redis://:s3cret@a:1/m/", name: "m", addrs: []string{"a:1"}, pass: "s3cret"},
		{in: "redis://gw:p%40ss%3Aw%2Frd%25@a:1/m", name: "m", addrs: []string{"a:1"}, user: "gw", pass: "p@ss:w/rd%"},
		{in: "redis://gw:p@ss/w?rd@a:1/m/0", name: "m", addrs: []string{"a:1"}, user: "gw", pass: "p@ss/w?rd"},
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
		{in: "redis://u:s3cret@a:1", wantErr: `"redis://u:xxxxx@a:1": want the master's name as the path`},
		{in: "redis://u:s3cret@a:1//2", wantErr: "want the master's name as the path"},
		{in: "redis://u:s3cret@a:1/m/x", wantErr: `"redis://u:xxxxx@a:1/m/x": database number "x": want 0 or more`},
		{in: "redis://u:s3cret@a:1/m/-1", wantErr: `database number "-1"`},
		{in: "redis://u:s3cret@/m", wantErr: `"redis://u:xxxxx@/m": no sentinel address`},
		{in: "redis://u:s3cret@a/m", wantErr: `sentinel address "a": want host:port`},
		{in: "redis://u:s3cret@a:1/m?db=2", wantErr: "no query or fragment is understood"},
		{in: "rediss://u:s3cret@a:1/m", wantErr: "rediss:// (TLS) is not supported here yet"},
		{in: "http://u:s3cret@a:1/m", wantErr: "want a redis:// URL"},
		{in: "redis://u:s3%cret@a:1/m", wantErr: "not percent-encoded"},
	} {
		o, err := ParseRedisSentinel(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "--redis-sentinel") ||
				strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "s3%cret") {
				t.Errorf("%q: err %v, want one starting --redis-sentinel, containing %q, without the password", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || o.MasterName != tc.name || !slices.Equal(o.SentinelAddrs, tc.addrs) ||
			o.Username != tc.user || o.Password != tc.pass || o.DB != tc.db || o.SentinelUsername != "" || o.SentinelPassword != "" {
			t.Errorf("%q: got %+v %v, want %q %q user %q pass %q db %d", tc.in, o, err, tc.name, tc.addrs, tc.user, tc.pass, tc.db)
		}
	}
}
