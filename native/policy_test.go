package native

import (
	"strings"
	"testing"

	"github.com/wsgateway/gateway/packet"
)

func TestCheckChannel(t *testing.T) {
	tests := []struct {
		channel, subject string
		op               channelOp
		want             int16
	}{
		{"room", "alice", opSubscribe, 0},
		{"room", "alice", opPublish, 0},
		{"", "alice", opSubscribe, packet.ErrorBadRequest},
		{strings.Repeat("x", 255), "alice", opSubscribe, 0},
		{strings.Repeat("x", 256), "alice", opPublish, packet.ErrorBadRequest},
		{"a\x00b", "alice", opSubscribe, packet.ErrorBadRequest},
		{"a\x7fb", "alice", opSubscribe, packet.ErrorBadRequest},
		{"user:alice", "alice", opSubscribe, 0},
		{"user:alice", "alice", opPublish, 0},
		{"user:alice:inbox", "alice", opSubscribe, 0},
		{"user:alice", "bob", opSubscribe, packet.ErrorForbidden},
		{"user:alice", "bob", opPublish, packet.ErrorForbidden},
		{"user:alicex", "alice", opSubscribe, packet.ErrorForbidden},
		{"user:", "alice", opSubscribe, packet.ErrorForbidden},
		{"server:news", "alice", opSubscribe, 0},
		{"server:news", "alice", opPublish, packet.ErrorForbidden},
		{"servers", "alice", opPublish, 0},
		{"#kosync:alice", "alice", opSubscribe, packet.ErrorForbidden},
		{"#x", "alice", opPublish, packet.ErrorForbidden},
	}
	for _, tt := range tests {
		if got, why := checkChannel([]byte(tt.channel), tt.subject, tt.op); got != tt.want {
			t.Errorf("checkChannel(%q, %q, %d) = %d (%s), want %d", tt.channel, tt.subject, tt.op, got, why, tt.want)
		}
	}
}
