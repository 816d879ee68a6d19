package ratelimittest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   []float64
		want float64
	}{
		{"one", []float64{3}, 3},
		{"odd", []float64{5, 1, 3}, 3},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"outlier", []float64{1, 1, 1, 100}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			xs := append([]float64(nil), tc.xs...)
			assert.Equal(t, tc.want, median(xs))
			assert.Equal(t, tc.xs, xs, "left as it was")
		})
	}
}

// sink keeps spin's work from being optimised away.
var sink uint64

// spin does about n units of work.
func spin(n int) {
	x := sink
	for i := range n {
		x = x*6364136223846793005 + uint64(i)
	}
	sink = x
}

// TestPairedSeesTheCost has "on" do twice the work of "off": the ratio must say so, and the
// two sides' times must be told apart.
func TestPairedSeesTheCost(t *testing.T) {
	const work = 200
	var on bool
	var offRuns, onRuns int
	r := testing.Benchmark(func(b *testing.B) {
		Paired(b, 1000, func(o bool) { on = o }, func(n int) {
			if on {
				onRuns += n
				spin(2 * work * n)
			} else {
				offRuns += n
				spin(work * n)
			}
		})
	})
	require.Positive(t, r.N)
	assert.Greater(t, onRuns, 0)
	assert.Greater(t, offRuns, 0)
	ratio := r.Extra["on/off"]
	assert.InDelta(t, 2, ratio, 0.5, "on/off")
	assert.InDelta(t, 2, r.Extra["on/off-wall"], 0.8, "on/off-wall")
	assert.InDelta(t, 2, r.Extra["on-ns/op"]/r.Extra["off-ns/op"], 0.5, "on-ns/op over off-ns/op")
}
