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
	// settleShare and settleMin: the heap has settled when, in one interval, it grew by less
	// than 1/settleShare of the live heap or by less than settleMin bytes, whichever is more.
	// The floor keeps a small heap with a trickle of allocations (the net/http fallback, the
	// stats aggregator) from counting as growing forever.
	settleShare = 256
	settleMin   = 1 << 20
)

// heapStats is what trimMemory reads from the runtime at each look.
type heapStats struct {
	cycles  uint64 // completed collections
	free    uint64 // free heap pages not yet returned to the operating system
	objects uint64 // bytes of allocated objects, live or garbage
	live    uint64 // bytes the last collection found live
}

var heapSampleNames = [...]string{
	"/gc/cycles/total:gc-cycles",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
}

// readHeapStats reads the runtime's heap metrics into samples (one per heapSampleNames entry,
// allocated once by the caller).
func readHeapStats(samples []metrics.Sample) heapStats {
	metrics.Read(samples)
	return heapStats{
		cycles:  samples[0].Value.Uint64(),
		free:    samples[1].Value.Uint64(),
		objects: samples[2].Value.Uint64(),
		live:    samples[3].Value.Uint64(),
	}
}

// trimMemory hands the heap's garbage and free pages back to the operating system once the heap
// has settled. Swarms grow by reallocating their blocks; the runtime collects the old ones only
// when the heap next grows by gc_percent, and keeps freed pages for minutes, so after a burst of
// new peers the process would hold far more than its live data for as long as traffic is
// steady (announces allocate nothing). Every interval it looks: if no collection ran and the
// heap barely grew since the last look (the burst is over), and garbage plus free pages are
// worth it, it collects and returns the free pages (debug.FreeOSMemory). While swarms keep
// growing it stays out of the way: a forced collection per second then costs the request path
// CPU and tail latency, and the collector runs anyway. It stops when ctx ends.
func trimMemory(ctx context.Context, interval time.Duration) {
	samples := make([]metrics.Sample, len(heapSampleNames))
	for i, name := range heapSampleNames {
		samples[i].Name = name
	}
	runTrimmer(ctx, interval, func() heapStats { return readHeapStats(samples) }, debug.FreeOSMemory)
}

// runTrimmer is trimMemory's loop with the runtime taken out: read returns the heap's figures,
// trim collects and hands pages back.
func runTrimmer(ctx context.Context, interval time.Duration, read func() heapStats, trim func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var tr trimmer
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if tr.look(read()) {
			trim()
			tr.last = read()
			tr.base = tr.last.objects
		}
	}
}

// trimmer decides, look by look, when to trim.
type trimmer struct {
	last heapStats // the previous look (zero before the first)
	base uint64    // the allocated objects after the last trim, or at the first look
}

// look takes the heap's figures now and reports whether to trim: once the heap has settled,
// when garbage and free pages are worth it, or after a burst of growth since the last trim. A
// collection in the midst of a burst marks live what the burst frees just after it (a swarm's
// old block is live while its new one is allocated, and a block of a million peers is 16 MB),
// so the runtime's figures cannot tell that garbage from live data until the next collection,
// which a settled heap does not start; one collection after each burst finds out.
func (t *trimmer) look(now heapStats) bool {
	prev := t.last
	t.last = now
	if prev == (heapStats{}) {
		t.base = now.objects
		return false // the first look has nothing to compare with
	}
	if !settled(prev.cycles, now.cycles, prev.objects, now.objects, now.live) {
		return false
	}
	grew := now.objects - min(now.objects, t.base)
	return worthTrimming(now.free, now.objects, now.live) || grew > max(trimMin, t.base/trimShare)
}

// settled reports whether the heap has settled between two looks: no collection ran (the
// count of cycles is unchanged) and the allocated objects grew by at most settleMin bytes or
// 1/settleShare of the live heap, whichever is more.
func settled(cycles0, cycles1, objects0, objects1, live uint64) bool {
	return cycles0 == cycles1 && objects1-min(objects1, objects0) <= max(live/settleShare, settleMin)
}

// worthTrimming reports whether the free heap pages and the garbage (objects allocated beyond
// what the last collection found live) are worth a collection.
func worthTrimming(free, objects, live uint64) bool {
	spare := free + objects - min(objects, live)
	return spare > trimMin && spare > live/trimShare
}
