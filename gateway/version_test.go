package gateway

import (
	"runtime/debug"
	"testing"
)

func TestVersionFromBuildInfo(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "b1ecf6a0c3d2e4f5a6b7c8d9e0f1a2b3c4d5e6f7"}}
	modified := func(v string) []debug.BuildSetting {
		return append(append([]debug.BuildSetting(nil), rev...), debug.BuildSetting{Key: "vcs.modified", Value: v})
	}
	cases := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "dev"},
		{"go test: nothing recorded", &debug.BuildInfo{Main: debug.Module{Path: "github.com/wsgateway/gateway", Version: "(devel)"}}, "dev"},
		{"module version", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: modified("true")}, "v1.2.3"},
		{"pseudo-version", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203163000-b1ecf6a0c3d2+dirty"}}, "v0.0.0-20261203163000-b1ecf6a0c3d2+dirty"},
		{"revision, clean", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: modified("false")}, "b1ecf6a0c3d2"},
		{"revision, no vcs.modified", &debug.BuildInfo{Settings: rev}, "b1ecf6a0c3d2"},
		{"revision, modified", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: modified("true")}, "b1ecf6a0c3d2-dirty"},
		{"short revision", &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}}}, "abc123"},
	}
	for _, c := range cases {
		if got := versionFromBuildInfo(c.bi); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
