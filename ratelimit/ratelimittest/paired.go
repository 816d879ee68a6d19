// Package ratelimittest measures what the rate limiter costs a frontend's request path, for the
// frontends' benchmarks.
//
// On a small machine shared with other work, two benchmarks run one after the other (the
// limiter off, then on) differ by more than the limiter costs: each has its own heap, its own
// warm-up and its own share of the machine's noisy minutes. Paired runs both in one process,
// on one warm handler, in alternating slices of requests, and takes the median of the ratios
// of neighbouring slices, so that a slow spell of the machine falls on both sides of a pair or
// on a pair the median leaves out.
package ratelimittest

import (
	"runtime"
	"slices"
	"testing"
	"time"
)

// DefaultSlice is the requests in one slice of Paired: about 20 ms of announces, long enough
// for a slice to pass through the whole of a benchmark's client addresses, short enough for
// hundreds of pairs in a few seconds.
const DefaultSlice = 20000

// Paired runs b.N requests through run (which does the next n requests of the benchmark), in
// pairs of slices of slice requests, one with the limiter off and one with it on (set switches
// it), in turn first in one order and then in the other. It reports, besides ns/op (of all
// b.N), a request's mean time over all the slices with the limiter off ("off-ns/op") and on
// ("on-ns/op"), and the median of the pairs' ratios of on to off ("on/off"), which is the
// figure of record: the limiter's cost is on/off-1. The means follow the machine's load from
// minute to minute (equally on both sides, as the slices alternate), the ratio of a pair
// hardly; a median leaves out the pairs that a burst of other work fell on. The times are the
// CPU time of the goroutine's thread where the system tells it (Linux), so that time the
// machine gives to other processes counts on neither side, and wall time elsewhere;
// "on/off-wall" is the median ratio of wall times.
//
// A pair of slices runs before the timer starts, to warm both paths. With fewer than two
// slices' worth of b.N (the benchmark's first, calibrating, call) the slices are shorter.
func Paired(b *testing.B, slice int, set func(on bool), run func(n int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	slice = max(min(slice, b.N/2), 1)
	pairs := max(b.N/(2*slice), 1)
	// cpu[on][p] and wall[on][p] are pair p's times with the limiter off (0) and on (1).
	var cpu, wall [2][]float64
	for i := range cpu {
		cpu[i] = make([]float64, pairs)
		wall[i] = make([]float64, pairs)
	}
	timed := func(on, p int) {
		set(on == 1)
		w0, c0 := wallTime(), threadTime()
		run(slice)
		cpu[on][p] = float64(threadTime() - c0)
		wall[on][p] = float64(wallTime() - w0)
	}
	timed(1, 0)
	timed(0, 0)
	b.ResetTimer()
	for p := range pairs {
		first := p % 2 // off first, then on first
		timed(first, p)
		timed(1-first, p)
	}
	if rest := b.N - 2*pairs*slice; rest > 0 {
		run(rest)
	}
	b.StopTimer()
	ratio := make([]float64, pairs)
	ratios := func(t [2][]float64) float64 {
		for p := range ratio {
			ratio[p] = t[1][p] / t[0][p]
		}
		return median(ratio)
	}
	b.ReportMetric(ratios(cpu), "on/off")
	b.ReportMetric(ratios(wall), "on/off-wall")
	b.ReportMetric(sum(cpu[0])/float64(pairs*slice), "off-ns/op")
	b.ReportMetric(sum(cpu[1])/float64(pairs*slice), "on-ns/op")
}

// sum returns the sum of xs.
func sum(xs []float64) float64 {
	var t float64
	for _, x := range xs {
		t += x
	}
	return t
}

// median returns the median of xs (which it leaves as they are).
func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if n := len(xs); n%2 == 0 {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
	return xs[len(xs)/2]
}

// epoch is where wallTime counts from.
var epoch = time.Now()

// wallTime is the monotonic clock's time since epoch.
func wallTime() time.Duration { return time.Since(epoch) }
