package redistest

import (
	"strings"
	"testing"
)

func TestFailedMasterOf(t *testing.T) {
	// A replica's CLUSTER NODES from a run where its master failed and it
	// was never promoted (2026-12-04), and the same with the master up,
	// merely suspected (fail?), and from a master.
	const failed = `e680c26fa3aae8cd1f37d5d7d81b066d6bc9436c 127.0.0.1:46355@38301 master - 0 1796361892347 0 connected 10922-16383
0af21863d5428d847c3254c90aeadacafc0b3c3f 127.0.0.1:37137@38037 master,fail - 1796361863095 1796361862086 5 disconnected 5461-10921
e17c570a9d1e8a2d9faab610836d05d594047030 127.0.0.1:44683@46357 myself,slave 0af21863d5428d847c3254c90aeadacafc0b3c3f 0 1796361892347 5 connected
`
	for _, tc := range []struct{ name, nodes, want string }{
		{"master failed", failed, "127.0.0.1:37137@38037"},
		{"master suspected", replaceFlags(failed, "master,fail?"), ""},
		{"master up", replaceFlags(failed, "master"), ""},
		{"a master's view", `e680c26fa3aae8cd1f37d5d7d81b066d6bc9436c 127.0.0.1:46355@38301 myself,master - 0 0 0 connected 0-16383`, ""},
		{"empty", "", ""},
	} {
		if got := failedMasterOf(tc.nodes); got != tc.want {
			t.Errorf("%s: failedMasterOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func replaceFlags(nodes, flags string) string {
	return strings.Replace(nodes, " master,fail ", " "+flags+" ", 1)
}
