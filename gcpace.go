package chihaya

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The collector's pace: gc_percent alone has the heap grow by a share of its live data between
// collections, which for a small heap (a tracker with few peers, or one just started) is a
// megabyte or two. HTTPS makes that costly: a TLS handshake leaves about 40 KB of garbage in
// crypto/tls, so a few thousand handshakes a second on a heap of 3 MB set off dozens of
// collections a second, a tenth of the CPU. paceGC raises the target of a small heap so that it
// may grow by gc_min_growth_mb between collections; a heap whose gc_percent share is already
// more than that (a tracker with millions of peers, at the default 50%, from 32 MB of live data
// up) keeps gc_percent as it is.

// maxGCPercent bounds the target paceGC sets: with under 16 KB of live data (which a running
// tracker never has) the heap may grow by less than the floor.
const maxGCPercent = 100_000

// paceGC sets the collector's target every interval from the live heap (see gcPercentFor),
// until ctx ends.
func paceGC(ctx context.Context, percent int, minGrowth uint64, interval time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	live := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runPacer(ctx, interval, percent, minGrowth, live, func(p int) { debug.SetGCPercent(p) })
}

// runPacer is paceGC's loop with the runtime taken out: live reads the live heap, set sets the
// target. It sets the target at once, then whenever the one it would set differs from the
// last by more than an eighth, so that a heap that barely changes costs nothing.
func runPacer(ctx context.Context, interval time.Duration, percent int, minGrowth uint64, live func() uint64, set func(int)) {
	cur := gcPercentFor(percent, minGrowth, live())
	set(cur)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p := gcPercentFor(percent, minGrowth, live())
		if d := p - cur; d > cur/8 || -d > cur/8 {
			cur = p
			set(cur)
		}
	}
}

// gcPercentFor is the collector's target for a live heap of live bytes: percent, or more when
// percent of live is less than minGrowth bytes, so that the heap may grow by minGrowth.
func gcPercentFor(percent int, minGrowth, live uint64) int {
	if minGrowth == 0 {
		return percent
	}
	if live == 0 {
		return maxGCPercent
	}
	need := (minGrowth*100 + live - 1) / live
	if need > maxGCPercent {
		return maxGCPercent
	}
	return max(percent, int(need))
}
