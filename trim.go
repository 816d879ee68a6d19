package chihaya

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Thresholds of trimMemory: memory worth handing back is more than trimMin bytes and more than
// 1/trimShare of the live heap.
const (
	trimMin   = 4 << 20
	trimShare = 16
)

// trimMemory hands the heap's garbage and free pages back to the operating system once the heap
// has settled. Swarms grow by reallocating their blocks; the runtime collects the old ones only
// when the heap next grows by gc_percent, and keeps freed pages for minutes, so after a burst of
// new peers the process would hold far more than its live data for as long as traffic is
// steady (announces allocate nothing). Every interval, if no collection ran since the last
// look and garbage plus free pages are worth it, it collects and returns the free pages
// (debug.FreeOSMemory): one collection per burst, none while the collector is busy anyway. The
// swarms hold no pointers, so such a collection costs little. It stops when ctx ends.
func trimMemory(ctx context.Context, interval time.Duration) {
	samples := []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var cycles uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		if c := samples[0].Value.Uint64(); c != cycles {
			cycles = c // the collector is at work: the heap has not settled
			continue
		}
		if worthTrimming(samples[1].Value.Uint64(), samples[2].Value.Uint64(), samples[3].Value.Uint64()) {
			debug.FreeOSMemory()
			metrics.Read(samples[:1])
			cycles = samples[0].Value.Uint64()
		}
	}
}

// worthTrimming reports whether the free heap pages and the garbage (objects allocated beyond
// what the last collection found live) are worth a collection.
func worthTrimming(free, objects, live uint64) bool {
	spare := free + objects - min(objects, live)
	return spare > trimMin && spare > live/trimShare
}
