package test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// End-to-end tests of the KOReader sync server in the gateway binary
// (`gateway serve`), reusing the process helpers of process_e2e_test.go.

// ksProcAddr is the main listener's host:port of a running serve.
func ksProcAddr(p *e2eProc) string {
	return strings.TrimSuffix(strings.TrimPrefix(p.ws, "ws://"), "/api/ws")
}

// TestKosyncProcessKill9: progress pushed and a pretty_name set (each
// acknowledged) survive a SIGKILL right after: the restarted process on the
// same data dir answers them, and a JWT issued before the restart still
// works (key derived from the secret in the data dir, B.2).
func TestKosyncProcessKill9(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := e2eEnv()
	p := e2eServe(t, env, "--data-dir", dir)
	addr := ksProcAddr(p)
	base := "http://" + addr
	key := ksRegister(t, base, "alice", "alice-pw")
	tok := ksJWT(t, base, "alice", key)
	c := ksDial(t, addr, tok)
	got := ksUpdate(t, c, `{"document":"named","progress":"3","percentage":0.03,"device":"web","pretty_name":"Kept Name"}`)
	namedTS := ksNum(t, got, "timestamp")
	ts := ksPush(t, base, "alice", key, map[string]any{
		"document": "0123456789abcdef0123456789abcdef", "progress": "/body/DocFragment[20]/body/p[3]/text().17",
		"percentage": 0.4567, "device": "Kobo Libra", "device_id": "AABBCCDD",
	})
	// SIGKILL at once: no graceful shutdown, no chance to flush later.
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited

	q := e2eServe(t, env, "--data-dir", dir)
	qaddr := ksProcAddr(q)
	qbase := "http://" + qaddr
	ksWantJSON(t, "GET /syncs/progress after kill -9",
		ksDo(t, http.MethodGet, qbase+"/syncs/progress/0123456789abcdef0123456789abcdef", "alice", key, ""), http.StatusOK,
		ksJSON(map[string]any{"document": "0123456789abcdef0123456789abcdef", "progress": "/body/DocFragment[20]/body/p[3]/text().17",
			"percentage": 0.4567, "device": "Kobo Libra", "device_id": "AABBCCDD", "timestamp": ts}))
	ksWantJSON(t, "GET /syncs/progress/named after kill -9",
		ksDo(t, http.MethodGet, qbase+"/syncs/progress/named", "alice", key, ""), http.StatusOK,
		ksJSON(map[string]any{"document": "named", "progress": "3", "percentage": 0.03, "device": "web", "timestamp": namedTS}))
	// The old JWT works on the new process; documents.all shows the name.
	c2 := ksDial(t, qaddr, tok)
	var all []map[string]any
	res := ksAll(t, c2)
	if err := json.Unmarshal(res, &all); err != nil || len(all) != 2 {
		t.Fatalf("documents.all after restart = %s (%v), want 2 documents", res, err)
	}
	for _, d := range all {
		if d["id"] == "named" && d["pretty_name"] != "Kept Name" {
			t.Fatalf("documents.all after restart: %v, want pretty_name \"Kept Name\"", d)
		}
	}
	// And a KOReader push after the restart is a normal one.
	ts2 := ksPush(t, qbase, "alice", key, map[string]any{"document": "named", "progress": "4", "percentage": 0.04, "device": "kpw"})
	if ts2 < ts {
		t.Fatalf("timestamp after restart %d < %d before", ts2, ts)
	}
}

// TestKosyncProcessRegistrationClosed: --kosync-registration=false makes
// POST /users/create answer 402 code 2005, checked before the body (A.3).
func TestKosyncProcessRegistrationClosed(t *testing.T) {
	t.Parallel()
	p := e2eServe(t, e2eEnv(), "--data-dir", t.TempDir(), "--kosync-registration=false")
	base := "http://" + ksProcAddr(p)
	const closed = `{"code":2005,"message":"User registration is disabled."}`
	for _, body := range []string{
		ksJSON(map[string]string{"username": "alice", "password": ksMD5("pw")}),
		`{"username":""}`,
		`not json`,
	} {
		ksWantJSON(t, "POST /users/create "+body, ksDo(t, http.MethodPost, base+"/users/create", "", "", body),
			http.StatusPaymentRequired, closed)
	}
	// Nobody was created.
	ksWantJSON(t, "GET /users/auth", ksDo(t, http.MethodGet, base+"/users/auth", "alice", ksMD5("pw"), ""),
		http.StatusUnauthorized, `{"code":2001,"message":"Unauthorized"}`)
}
