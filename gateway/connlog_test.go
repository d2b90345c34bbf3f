package gateway_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/native"
	"github.com/wsgateway/gateway/token"
)

// lifecycleLoop is nativeLoop with the server's and the protocol's logs
// going to logger.
func lifecycleLoop(t *testing.T, logger *slog.Logger) (*gateway.FakeLoop, []byte) {
	secrets, err := token.NewSecrets(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := secrets.Issue("carol", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := native.New(native.Options{Secrets: secrets, Revoked: token.NewRevoked(), Logger: logger})
	return gateway.NewFakeLoop(gateway.Options{Logger: logger}, p.Route()), key
}

// lifecycle runs one native connection from accept to the peer's close.
func lifecycle(t *testing.T, l *gateway.FakeLoop, key []byte) {
	f := authenticated(t, l, key)
	l.Feed(f, []byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8}) // close 1000, mask 0
}

// TestLifecycleLogged: with debug on, a native connection's lifecycle is
// in the log: opened, authenticated with the key's subject (from the
// protocol), closed by the peer with its code.
func TestLifecycleLogged(t *testing.T) {
	var buf bytes.Buffer
	debug, debugKey := lifecycleLoop(t, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	lifecycle(t, debug, debugKey)
	for _, want := range []string{
		`level=DEBUG msg="connection opened" conn=`,
		` protocol=native remote=127.0.0.1` + "\n",
		`level=DEBUG msg=authenticated conn=`,
		` protocol=native remote=127.0.0.1 subject=carol` + "\n",
		`level=DEBUG msg="connection closed" conn=`,
		` protocol=native remote=127.0.0.1 code=1000 reason="" by=peer` + "\n",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("no %q in the debug log:\n%s", want, buf.String())
		}
	}
}
