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
	// settleShare: the heap has settled when it grew by less than 1/settleShare of the live
	// heap in one interval.
	settleShare = 256
)

// trimMemory hands the heap's garbage and free pages back to the operating system once the heap
// has settled. Swarms grow by reallocating their blocks; the runtime collects the old ones only
// when the heap next grows by gc_percent, and keeps freed pages for minutes, so after a burst of
// new peers the process would hold far more than its live data for as long as traffic is
// steady (announces allocate nothing). Every interval it looks: if no collection ran and the
// heap grew by less than 1/settleShare of the live heap since the last look (the burst is
// over), and garbage plus free pages are worth it, it collects and returns the free pages
// (debug.FreeOSMemory). While swarms keep growing it stays out of the way: a forced collection
// per second then costs the request path CPU and tail latency, and the collector runs anyway.
// It stops when ctx ends.
func trimMemory(ctx context.Context, interval time.Duration) {
	samples := []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var cycles, objects uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		c, o, live := samples[0].Value.Uint64(), samples[2].Value.Uint64(), samples[3].Value.Uint64()
		busy := !settled(cycles, c, objects, o, live)
		cycles, objects = c, o
		if busy {
			continue // the collector is at work or swarms are growing: not settled yet
		}
		if worthTrimming(samples[1].Value.Uint64(), o, live) {
			debug.FreeOSMemory()
			metrics.Read(samples)
			cycles, objects = samples[0].Value.Uint64(), samples[2].Value.Uint64()
		}
	}
}

// settled reports whether the heap has settled between two looks: no collection ran (the
// count of cycles is unchanged) and the allocated objects grew by less than 1/settleShare of
// the live heap.
func settled(cycles0, cycles1, objects0, objects1, live uint64) bool {
	return cycles0 == cycles1 && objects1-min(objects1, objects0) <= live/settleShare
}

// worthTrimming reports whether the free heap pages and the garbage (objects allocated beyond
// what the last collection found live) are worth a collection.
func worthTrimming(free, objects, live uint64) bool {
	spare := free + objects - min(objects, live)
	return spare > trimMin && spare > live/trimShare
}
