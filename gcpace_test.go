package chihaya

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		percent   int
		minGrowth uint64
		live      uint64
		want      int
	}{
		{name: "no floor", percent: 50, minGrowth: 0, live: 1 * mib, want: 50},
		{name: "small heap raised to the floor", percent: 50, minGrowth: 16 * mib, live: 4 * mib, want: 400},
		{name: "rounded up", percent: 50, minGrowth: 16 * mib, live: 3 * mib, want: 534},
		{name: "at the floor exactly", percent: 50, minGrowth: 16 * mib, live: 32 * mib, want: 50},
		{name: "large heap keeps gc_percent", percent: 50, minGrowth: 16 * mib, live: 400 * mib, want: 50},
		{name: "a higher gc_percent wins", percent: 800, minGrowth: 16 * mib, live: 4 * mib, want: 800},
		{name: "empty heap", percent: 50, minGrowth: 16 * mib, live: 0, want: maxGCPercent},
		{name: "tiny heap capped", percent: 50, minGrowth: 16 * mib, live: 1024, want: maxGCPercent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, gcPercentFor(tc.percent, tc.minGrowth, tc.live))
		})
	}
}

// TestRunPacer: the target follows the live heap, is set at once, and is not set again for a
// change of an eighth or less.
func TestRunPacer(t *testing.T) {
	const mib = 1 << 20
	var mu sync.Mutex
	live := uint64(4 * mib)
	var sets []int
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runPacer(ctx, time.Millisecond, 50, 16*mib,
			func() uint64 { mu.Lock(); defer mu.Unlock(); return live },
			func(p int) { mu.Lock(); sets = append(sets, p); mu.Unlock() })
	}()
	waitSets := func(n int) []int {
		t.Helper()
		var got []int
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			got = append(got[:0], sets...)
			return len(got) >= n
		}, 5*time.Second, time.Millisecond)
		return got
	}
	assert.Equal(t, []int{400}, waitSets(1))
	mu.Lock()
	live = 4*mib + mib/4 // 377%: within an eighth of 400
	mu.Unlock()
	time.Sleep(20 * time.Millisecond) // some ticks: none may set
	mu.Lock()
	assert.Equal(t, []int{400}, sets)
	live = 100 * mib // gc_percent's own share is over the floor
	mu.Unlock()
	assert.Equal(t, []int{400, 50}, waitSets(2))
	cancel()
	<-done
}
