package test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wsgateway/gateway/gateway"
	"github.com/wsgateway/gateway/node"
)

// TestKeepAliveCountsAgainstPerIPCap: a plain HTTP connection that
// net/http keeps alive holds its place in the address's cap until net/http
// closes it, so one address cannot pile up idle keep-alive connections (and
// the node's descriptors): past the cap a new connection gets the 429 at
// accept. An upgrade on a kept-alive connection goes back to the loop
// holding one place, not two; the place comes back when net/http sees the
// client close. Before the fix every plain request gave its place back as
// soon as it was handed to net/http.
func TestKeepAliveCountsAgainstPerIPCap(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *node.Config) { c.Limits = gateway.Limits{MaxConnsPerIP: 2} })
	a, b := rtDial(t, n), rtDial(t, n)
	acPlain(t, a, "/nothing", http.StatusNotFound)
	acPlain(t, b, "/nothing", http.StatusNotFound)
	hkExpect429(t, rtDial(t, n))

	a.write(a.request("/api/ws")) // back to the loop, still one place
	a.readUpgrade()
	a.write(rtMsg(rtAuthMsg(t, n)))
	a.expectPong()
	hkExpect429(t, rtDial(t, n))

	_ = b.nc.Close()
	for deadline := time.Now().Add(waitFor); ; time.Sleep(10 * time.Millisecond) {
		c := rtDial(t, n)
		c.write([]byte("GET /nothing HTTP/1.1\r\nHost: gateway\r\n\r\n"))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("plain GET: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = c.nc.Close()
		if resp.StatusCode == http.StatusNotFound {
			break
		}
		if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after a kept-alive connection closed: %s, want its place back (404 from net/http)", resp.Status)
		}
	}
}

// hkExpect429 reads the answer of a connection refused at accept.
func hkExpect429(t *testing.T, c *rtConn) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	limExpectStatus(t, resp, http.StatusTooManyRequests)
}
