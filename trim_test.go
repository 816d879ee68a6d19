package chihaya

import (
	"context"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, settled(tt.cycles0, tt.cycles1, tt.objects0, tt.objects1, tt.live))
		})
	}
}

var sink [][]byte

// TestTrimMemoryCollectsSettledGarbage leaves garbage on a settled heap and checks that
// trimMemory collects it and hands pages back, then stops when its context ends.
func TestTrimMemoryCollectsSettledGarbage(t *testing.T) {
	samples := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}, {Name: "/memory/classes/heap/released:bytes"}}
	runtime.GC()
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
		trimMemory(ctx, 20*time.Millisecond)
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		metrics.Read(samples)
		if samples[0].Value.Uint64() > forced0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("trimMemory forced no collection of 64 MB of garbage in 10 s")
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
