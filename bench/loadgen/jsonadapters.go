package loadgen

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wsgateway/gateway/packet"
)

// textHandler parses JSON deliveries of the adapters.
type textHandler struct {
	rn     *run
	parse  func(msg []byte) (pub uint32, seq uint64, sentNanos int64, probe bool, ok bool)
	probes atomic.Int64
	other  atomic.Int64
}

func (h *textHandler) OnPacket(*Conn, *packet.ServerPacket, int64) {}
func (h *textHandler) OnText(c *Conn, msg []byte, now int64) {
	pub, seq, sent, probe, ok := h.parse(msg)
	switch {
	case !ok:
		h.other.Add(1)
	case probe:
		if c.User == nil {
			c.User = true
			h.probes.Add(1)
		}
	default:
		h.rn.del.AddSeq(&c.Tracker, pub, seq, sent, now)
	}
}
func (h *textHandler) OnClose(c *Conn, code uint16) { h.rn.unexpectedClose(c, code) }

// wsify content: {"seq":n,"t":unix micros,"p":publisher} (numbers travel
// through float64, so the time is in microseconds to stay exact).
type wsifyContent struct {
	Seq   *uint64 `json:"seq"`
	T     int64   `json:"t"`
	P     uint32  `json:"p"`
	Probe int     `json:"probe"`
}

func parseWsify(msg []byte) (uint32, uint64, int64, bool, bool) {
	var c wsifyContent
	if json.Unmarshal(msg, &c) != nil {
		return 0, 0, 0, false, false
	}
	if c.Probe != 0 {
		return 0, 0, 0, true, true
	}
	if c.Seq == nil {
		return 0, 0, 0, false, false
	}
	return c.P, *c.Seq, c.T * 1000, false, true
}

// WsifyFanout is Fanout through the wsify adapter: Subs members join a
// channel, one WebSocket client broadcasts Publishes contents back to
// back. wsify has no join acknowledgement, so probes are broadcast until
// every member has received one before the measured run starts.
func WsifyFanout(ctx context.Context, t Target, p Params) *Result {
	rn, err := begin(ctx, "wsify-fanout", t, p)
	if err != nil {
		return rn.finish(err)
	}
	if t.WsifyURL == "" {
		return rn.finish(errors.New("no wsify endpoint"))
	}
	const ch = "bench.wsify"
	join := []byte(`{"command":"join","args":{"channel":"` + ch + `"}}`)
	h := &textHandler{rn: rn, parse: parseWsify}
	conns := make([]*Conn, rn.p.Subs)
	start := time.Now()
	rn.e.DialMany(ctx, rn.p.Subs, func(i int) *DialSpec {
		return &DialSpec{URL: t.WsifyURL, Proto: Text, TextSetup: [][]byte{join}, Handler: h}
	}, func(i int, c *Conn, tm Timing, err error) {
		if err != nil {
			rn.connectErr(err)
			return
		}
		rn.hs.Record(int64(tm.Handshake))
		conns[i] = c
	})
	for _, c := range conns {
		if c != nil {
			rn.r.Conns++
		}
	}
	rn.r.HandshakesPerS = float64(rn.r.Conns) / time.Since(start).Seconds()
	pc, _, err := rn.e.Dial(ctx, &DialSpec{URL: t.WsifyURL, Proto: Text, Handler: h})
	if err != nil {
		return rn.finish(fmt.Errorf("publisher: %w", err))
	}
	bcast := func(content string) error {
		return pc.SendText([]byte(`{"command":"broadcast","args":{"channel":"` + ch + `","content":` + content + `}}`))
	}
	deadline := time.Now().Add(rn.p.Timeout)
	for h.probes.Load() < int64(rn.r.Conns) && time.Now().Before(deadline) {
		if err := bcast(`{"probe":1}`); err != nil {
			return rn.finish(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h.probes.Load() < int64(rn.r.Conns) {
		return rn.finish(fmt.Errorf("only %d of %d members joined", h.probes.Load(), rn.r.Conns))
	}
	time.Sleep(200 * time.Millisecond) // let the last probes drain
	start = time.Now()
	for i := range rn.p.Publishes {
		pace(start, i, rn.p.PublishRate)
		c := `{"seq":` + strconv.Itoa(i) + `,"t":` + strconv.FormatInt(time.Now().UnixMicro(), 10) + `,"p":0}`
		if err := bcast(c); err != nil {
			return rn.finish(err)
		}
	}
	rn.r.OfferedPerS = float64(rn.p.Publishes) / time.Since(start).Seconds()
	rn.r.Publishes = uint64(rn.p.Publishes)
	want := uint64(rn.r.Conns) * uint64(rn.p.Publishes)
	rn.waitDeliveries(want)
	rn.fillDeliveries(want, start)
	return rn.finish(nil)
}

// KOsync announce: {"type":"pubsub","payload":{"for_topic":"user.documents","data":{...,"progress":"seq:t",...}}}
type kosyncEnvelope struct {
	Type    string `json:"type"`
	Payload struct {
		ForTopic string          `json:"for_topic"`
		Data     json.RawMessage `json:"data"`
	} `json:"payload"`
}

func parseKosync(msg []byte) (uint32, uint64, int64, bool, bool) {
	var env kosyncEnvelope
	if json.Unmarshal(msg, &env) != nil || env.Type != "pubsub" || len(env.Payload.Data) == 0 || env.Payload.Data[0] != '{' {
		return 0, 0, 0, false, false
	}
	var d struct {
		Progress string `json:"progress"`
	}
	if json.Unmarshal(env.Payload.Data, &d) != nil {
		return 0, 0, 0, false, false
	}
	a, b, found := strings.Cut(d.Progress, ":")
	if !found {
		return 0, 0, 0, false, false
	}
	seq, err1 := strconv.ParseUint(a, 10, 64)
	ts, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false, false
	}
	return 0, seq, ts, false, true
}

func kosyncSubscribed(msg []byte) bool {
	return bytes.Contains(msg, []byte(`"for_topic":"user.documents","data":"subscribed"`))
}

// KosyncFanout registers a user, opens Subs KOsync sockets subscribed to
// user.documents (waiting for every "subscribed"), then PUTs Publishes
// progress updates (progress = "seq:unixnanos") one after the other and
// checks the announces.
func KosyncFanout(ctx context.Context, t Target, p Params) *Result {
	rn, err := begin(ctx, "kosync-fanout", t, p)
	if err != nil {
		return rn.finish(err)
	}
	if t.HTTPURL == "" {
		return rn.finish(errors.New("no KOsync HTTP endpoint"))
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer hc.CloseIdleConnections()
	user := fmt.Sprintf("bench%d", time.Now().UnixNano())
	sum := md5.Sum([]byte("benchpassword"))
	key := hex.EncodeToString(sum[:])
	do := func(method, path string, body any) ([]byte, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, t.HTTPURL+path, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/vnd.koreader.v1+json")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-auth-user", user)
		req.Header.Set("x-auth-key", key)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			return out, fmt.Errorf("%s %s: %s %s", method, path, resp.Status, out)
		}
		return out, nil
	}
	if _, err := do("POST", "/users/create", map[string]string{"username": user, "password": key}); err != nil {
		return rn.finish(err)
	}
	jwt, err := do("GET", "/api/auth.jwt", nil)
	if err != nil {
		return rn.finish(err)
	}
	wsURL := strings.Replace(t.HTTPURL, "http://", "ws://", 1) + "/api/ws/" + url.PathEscape(strings.TrimSpace(string(jwt)))
	sub := []byte(`{"type":"pubsub","payload":{"topic":"user.documents"}}`)
	h := &textHandler{rn: rn, parse: parseKosync}
	var opened atomic.Int64
	start := time.Now()
	rn.e.DialMany(ctx, rn.p.Subs, func(i int) *DialSpec {
		return &DialSpec{URL: wsURL, Proto: Text, TextSetup: [][]byte{sub}, TextReady: kosyncSubscribed, Handler: h}
	}, func(i int, c *Conn, tm Timing, err error) {
		if err != nil {
			rn.connectErr(err)
			return
		}
		rn.hs.Record(int64(tm.Handshake))
		opened.Add(1)
	})
	rn.r.Conns = int(opened.Load())
	rn.r.HandshakesPerS = float64(rn.r.Conns) / time.Since(start).Seconds()
	start = time.Now()
	for i := range rn.p.Publishes {
		pace(start, i, rn.p.PublishRate)
		body := map[string]any{"document": "benchdoc", "progress": strconv.Itoa(i) + ":" + strconv.FormatInt(time.Now().UnixNano(), 10),
			"percentage": 0.5, "device": "bench", "device_id": "bench"}
		if _, err := do("PUT", "/syncs/progress", body); err != nil {
			return rn.finish(err)
		}
	}
	rn.r.OfferedPerS = float64(rn.p.Publishes) / time.Since(start).Seconds()
	rn.r.Publishes = uint64(rn.p.Publishes)
	want := uint64(rn.r.Conns) * uint64(rn.p.Publishes)
	rn.waitDeliveries(want)
	rn.fillDeliveries(want, start)
	rn.extra("publish_path", "PUT /syncs/progress (HTTP, sequential; each a durable bbolt commit)")
	return rn.finish(nil)
}
