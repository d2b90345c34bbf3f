package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/wsgateway/gateway/history"
	"github.com/wsgateway/gateway/node"
)

// startHistoryNode is startNode with history kept for the prefix "hist."
// (history.MemoryStore: a node alone).
func startHistoryNode(t *testing.T) Target {
	t.Helper()
	_, tg := startNodeWith(t, func(c *node.Config) { c.History = history.Options{Size: 100, Channels: []string{"hist."}} })
	return tg
}

// TestHistoryScenariosSmoke runs both history scenarios through the real
// engine against an in-process node with history: the fan-out's
// deliveries are Publications, and every recovering client gets recovered
// 1 and exactly the publications it missed.
func TestHistoryScenariosSmoke(t *testing.T) {
	tg := startHistoryNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := Cluster{Label: "alone+history", Nodes: []Target{tg}, History: true}
	r := HistoryFanout(ctx, cl, smallParams())
	checkClean(t, r, 200)

	p := smallParams()
	p.Subs, p.Publishes = 30, 50 // 50 missed: within the history of 100
	r = HistoryRecovery(ctx, cl, p)
	if r.Error != "" || r.ConnectErrors != 0 || len(r.CloseCodes) != 0 {
		t.Fatalf("recovery: error %q, connect errors %d (%s), closes %v", r.Error, r.ConnectErrors, r.FirstError, r.CloseCodes)
	}
	if r.Extra["clients_ok"] != 30 || r.Delivered != 30*50 || r.Lost != 0 || r.Conns != 30 {
		t.Fatalf("recovery: %d conns, %d replayed, lost %d, extra %v", r.Conns, r.Delivered, r.Lost, r.Extra)
	}

	// Without history on the channel every SubscribeFrom is refused: the
	// check is not vacuous.
	_, plain := startNode(t)
	r = HistoryRecovery(ctx, Cluster{Label: "alone+history", Nodes: []Target{plain}, History: true}, p)
	if r.Extra["clients_ok"] == 30 || r.ConnectErrors == 0 {
		t.Fatalf("recovery against a node without history: %d connect errors, extra %v", r.ConnectErrors, r.Extra)
	}
}
