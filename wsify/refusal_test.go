package wsify

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/wsgateway/gateway/session"
)

func TestBroadcastRefusal(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{session.ErrLoopBusy, http.StatusServiceUnavailable},
		{fmt.Errorf("queue full: %w", session.ErrBrokerBusy), http.StatusServiceUnavailable},
		{session.ErrTooLarge, http.StatusRequestEntityTooLarge},
		{errors.New("anything else"), http.StatusInternalServerError},
	} {
		if got := broadcastRefusal(tt.err); got != tt.want {
			t.Errorf("broadcastRefusal(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
