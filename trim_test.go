package chihaya

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWorthTrimming(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name                string
		free, objects, live uint64
		want                bool
	}{
		{name: "nothing spare", free: 0, objects: 100 * mb, live: 100 * mb, want: false},
		{name: "small heap, little spare", free: 1 * mb, objects: 10 * mb, live: 8 * mb, want: false},
		{name: "garbage over both thresholds", free: 0, objects: 120 * mb, live: 100 * mb, want: true},
		{name: "free pages over both thresholds", free: 10 * mb, objects: 100 * mb, live: 100 * mb, want: true},
		{name: "over 4 MB but under 1/16 of a big heap", free: 5 * mb, objects: 1000 * mb, live: 1000 * mb, want: false},
		{name: "live above objects (allocations since freed)", free: 0, objects: 90 * mb, live: 100 * mb, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, worthTrimming(tt.free, tt.objects, tt.live))
		})
	}
}

func TestSettled(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name                                       string
		cycles0, cycles1, objects0, objects1, live uint64
		want                                       bool
	}{
		{name: "quiet heap", cycles0: 5, cycles1: 5, objects0: 100 * mb, objects1: 100 * mb, live: 100 * mb, want: true},
		{name: "a collection ran", cycles0: 5, cycles1: 6, objects0: 100 * mb, objects1: 100 * mb, live: 100 * mb, want: false},
		{name: "swarms growing", cycles0: 5, cycles1: 5, objects0: 100 * mb, objects1: 110 * mb, live: 100 * mb, want: false},
		{name: "growth within 1/256 of live", cycles0: 5, cycles1: 5, objects0: 100 * mb, objects1: 100*mb + 300<<10, live: 100 * mb, want: true},
		{name: "objects shrank", cycles0: 5, cycles1: 5, objects0: 100 * mb, objects1: 90 * mb, live: 100 * mb, want: true},
		{name: "small heap, trickle under the 1 MB floor", cycles0: 5, cycles1: 5, objects0: 8 * mb, objects1: 8*mb + 900<<10, live: 4 * mb, want: true},
		{name: "small heap, growth over the floor", cycles0: 5, cycles1: 5, objects0: 8 * mb, objects1: 10 * mb, live: 4 * mb, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, settled(tt.cycles0, tt.cycles1, tt.objects0, tt.objects1, tt.live))
		})
	}
}

func TestTrimmerLook(t *testing.T) {
	const mb = 1 << 20
	quiet := heapStats{cycles: 3, free: 0, objects: 100 * mb, live: 100 * mb}
	garbage := heapStats{cycles: 3, free: 2 * mb, objects: 130 * mb, live: 100 * mb}
	tests := []struct {
		name  string
		looks []heapStats
		want  []bool
	}{
		{name: "first look never trims", looks: []heapStats{garbage}, want: []bool{false}},
		{name: "settled garbage is trimmed", looks: []heapStats{garbage, garbage}, want: []bool{false, true}},
		{name: "settled but nothing spare", looks: []heapStats{quiet, quiet}, want: []bool{false, false}},
		{
			name: "growing swarms wait until the heap settles",
			looks: []heapStats{
				{cycles: 3, objects: 110 * mb, live: 100 * mb},
				{cycles: 3, objects: 120 * mb, live: 100 * mb},
				{cycles: 3, objects: 130 * mb, live: 100 * mb},
				{cycles: 3, objects: 130 * mb, live: 100 * mb},
			},
			want: []bool{false, false, false, true},
		},
		{
			name: "garbage that a collection in the midst of a burst saw live is trimmed after it",
			looks: []heapStats{
				{cycles: 3, objects: 20 * mb, live: 20 * mb},
				{cycles: 4, objects: 40 * mb, live: 40 * mb},
				{cycles: 4, objects: 40 * mb, live: 40 * mb},
			},
			want: []bool{false, false, true},
		},
		{
			name: "small growth since the first look is left alone",
			looks: []heapStats{
				{cycles: 3, objects: 100 * mb, live: 100 * mb},
				{cycles: 3, objects: 102 * mb, live: 100 * mb},
				{cycles: 3, objects: 102 * mb, live: 100 * mb},
			},
			want: []bool{false, false, false},
		},
		{
			name: "a collection between looks defers the trim",
			looks: []heapStats{
				garbage,
				{cycles: 4, free: 40 * mb, objects: 100 * mb, live: 100 * mb},
				{cycles: 4, free: 40 * mb, objects: 100 * mb, live: 100 * mb},
			},
			want: []bool{false, false, true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr trimmer
			got := make([]bool, 0, len(tt.looks))
			for _, s := range tt.looks {
				got = append(got, tr.look(s))
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestRunTrimmer drives the loop with scripted figures: it trims once the heap settles, reads
// the heap again after trimming (so the trim's own collection does not count as activity),
// and returns when its context ends.
func TestRunTrimmer(t *testing.T) {
	const mb = 1 << 20
	script := []heapStats{
		{cycles: 1, objects: 50 * mb, live: 40 * mb},
		{cycles: 1, objects: 80 * mb, live: 40 * mb}, // growing
		{cycles: 1, objects: 80 * mb, live: 40 * mb}, // settled: trim
		{cycles: 2, objects: 40 * mb, live: 40 * mb}, // read right after the trim
		{cycles: 2, objects: 40 * mb, live: 40 * mb}, // quiet, nothing spare
	}
	var mu sync.Mutex
	reads, trims := 0, 0
	trimmedAt := -1
	read := func() heapStats {
		mu.Lock()
		defer mu.Unlock()
		s := script[min(reads, len(script)-1)]
		reads++
		return s
	}
	trim := func() {
		mu.Lock()
		defer mu.Unlock()
		trims++
		trimmedAt = reads
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		runTrimmer(ctx, time.Millisecond, read, trim)
		close(done)
	}()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return reads >= len(script)+5
	}, 10*time.Second, time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("runTrimmer did not return after its context ended")
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 1, trims, "trims")
	assert.Equal(t, 3, trimmedAt, "trimmed after the third look")
}

var sink [][]byte

// TestTrimMemoryCollectsSettledGarbage runs the real trimMemory against the runtime: with the
// collector off so that only trimMemory can collect, it leaves garbage on a settled heap and
// checks that trimMemory forces a collection and hands pages back.
func TestTrimMemoryCollectsSettledGarbage(t *testing.T) {
	samples := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}, {Name: "/memory/classes/heap/released:bytes"}}
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	metrics.Read(samples)
	forced0 := samples[0].Value.Uint64()

	// 64 MB of garbage: far over the thresholds for a test binary's heap.
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		trimMemory(ctx, 50*time.Millisecond)
		close(done)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		metrics.Read(samples)
		if samples[0].Value.Uint64() > forced0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatal("trimMemory forced no collection of 64 MB of garbage in 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	assert.Greater(t, samples[1].Value.Uint64(), uint64(0), "no heap pages released")
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("trimMemory did not return after its context ended")
	}
}
