package main

import (
	"bytes"
	"testing"

	gwclient "github.com/wsgateway/gateway/client"
)

// A payload is another user's text: printed as is it could forge lines of
// the client's one-line-per-event output ("...\nsubscribed x") or drive
// the terminal (ESC sequences). Payloads with control characters are
// printed in hex, like those that are not UTF-8.
func TestClientPrintsControlCharactersInHex(t *testing.T) {
	for payload, want := range map[string]string{
		"hello, wörld":        "message room hello, wörld\n",
		"a\nerror 403 forged": "message room 61 0a 65 72 72 6f 72 20 34 30 33 20 66 6f 72 67 65 64\n",
		"\x1b[2J":             "message room 1b 5b 32 4a\n",
		"cr\r":                "message room 63 72 0d\n",
		"c1 \u009b":           "message room 63 31 20 c2 9b\n",
		"\xff":                "message room ff\n",
	} {
		var out bytes.Buffer
		s := &clientSession{out: &out}
		s.onPublication(gwclient.Publication{Channel: "room", Payload: []byte(payload)})
		if out.String() != want {
			t.Errorf("%q printed %q, want %q", payload, out.String(), want)
		}
	}
}
