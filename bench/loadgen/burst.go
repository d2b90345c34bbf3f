package loadgen

import (
	"context"
	"fmt"
	"time"
)

// BurstRelease measures whether the server gives memory back after a
// burst (issue 10, item 8): Subs subscribers connect and sit idle (RSS
// "idle"), Publishes payloads of PayloadSize go to all of them back to
// back (the clients read slower than the server writes, so data piles up
// in the server: RSS "peak", sampled when every delivery arrived), then the
// connections stay open and idle while RSS is sampled every second for
// 60 s. Extra holds the samples in MiB and back_within_2x_s, the seconds
// until RSS was within twice the idle figure (-1: not within 60 s). Not in
// the default suite: it takes over a minute by design.
func BurstRelease(ctx context.Context, t Target, p Params) *Result {
	rn, err := begin(ctx, "burst-release", t, p)
	if err != nil {
		return rn.finish(err)
	}
	if t.PID <= 0 {
		return rn.finish(fmt.Errorf("burst-release needs the server's pid"))
	}
	const channel = "bench.burst"
	rn.dialAll(rn.t.WSURL, rn.p.Subs, &subHandler{rn: rn}, func(int) []string { return []string{channel} }, 0)
	n := rn.r.Conns
	pc, _, err := rn.e.Dial(ctx, &DialSpec{URL: t.WSURL, Proto: Native, Key: rn.keys.key(-1), Handler: &pingHandler{rn: rn}})
	if err != nil {
		return rn.finish(fmt.Errorf("publisher: %w", err))
	}
	pub := &publisher{c: pc, seqs: map[string]uint64{}}
	time.Sleep(2 * time.Second)
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	idle := SampleProcess(t.PID, t.MetricsURL)
	start := time.Now()
	for range rn.p.Publishes {
		if err := pub.publish(channel, rn.p.PayloadSize); err != nil {
			return rn.finish(err)
		}
	}
	rn.r.Publishes = uint64(rn.p.Publishes)
	want := uint64(n) * uint64(rn.p.Publishes)
	peak := SampleProcess(t.PID, t.MetricsURL) // while the deliveries are in flight
	rn.waitDeliveries(want)
	rn.fillDeliveries(want, start)
	extra := map[string]any{"rss_idle_mib": mib(idle.RSS), "rss_peak_mib": mib(peak.RSS), "back_within_2x_s": -1}
	done := time.Now()
	for s := 1; s <= 60 && ctx.Err() == nil; s++ {
		time.Sleep(time.Until(done.Add(time.Duration(s) * time.Second)))
		rss := SampleProcess(t.PID, "").RSS
		if s == 10 || s == 30 || s == 60 {
			extra[fmt.Sprintf("rss_%ds_mib", s)] = mib(rss)
		}
		if rss <= 2*idle.RSS && extra["back_within_2x_s"] == -1 {
			extra["back_within_2x_s"] = s
		}
	}
	rn.r.Extra = extra
	return rn.finish(nil)
}
