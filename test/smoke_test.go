package test

import (
	"testing"

	"github.com/wsgateway/gateway/packet"
)

func TestHarnessSmoke(t *testing.T) {
	n := startNode(t)
	c := connect(t, n, "alice")
	subscribe(t, c, "room")
	send(t, c, packet.AppendSettings(nil, packet.Setting{ID: packet.SettingEcho, Byte: 1}))
	send(t, c, packet.AppendPublish(nil, "room", []byte("hi")))
	p := readOne(t, c)
	if p.ID != packet.PacketMessage || string(p.Channel) != "room" || string(p.Payload) != "hi" {
		t.Fatalf("got %s", describe(p))
	}
}
