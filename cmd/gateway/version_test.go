package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/gateway"
)

// TestWriteVersion: the commit line says what the build info holds: the
// revision, "(modified)" for a dirty work tree, or that it is unknown.
func TestWriteVersion(t *testing.T) {
	goLine := "go " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	for _, c := range []struct {
		bi   *debug.BuildInfo
		want string
	}{
		{nil, "commit unknown (built without VCS information)\n"},
		{&debug.BuildInfo{}, "commit unknown (built without VCS information)\n"},
		{&debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "false"}}},
			"commit 0123456789abcdef0123456789abcdef01234567\n"},
		{&debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.modified", Value: "true"}}},
			"commit 0123456789abcdef0123456789abcdef01234567 (modified)\n"},
	} {
		var b strings.Builder
		writeVersion(&b, c.bi)
		if want := "gateway " + gateway.Version + "\n" + c.want + goLine; b.String() != want {
			t.Errorf("writeVersion(%+v) = %q, want %q", c.bi, b.String(), want)
		}
	}
}
