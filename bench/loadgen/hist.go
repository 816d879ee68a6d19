package loadgen

import (
	"math/bits"
	"time"
)

// histSub is the number of buckets per power of two: 16 gives a relative bucket width of at most
// 1/16 (6.25%).
const (
	histSubBits = 4
	histSub     = 1 << histSubBits
	histBuckets = (64 - histSubBits + 1) * histSub
)

// Histogram counts durations in logarithmic buckets (16 per power of two of nanoseconds). Its zero
// value is empty and ready; it is not safe for concurrent use: keep one per goroutine and Merge.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v in [2^e, 2^(e+1))
	sub := (v >> (e - histSubBits)) & (histSub - 1)
	return (e-histSubBits+1)*histSub + int(sub)
}

// bucketLow returns the smallest value that falls in bucket b.
func bucketLow(b int) uint64 {
	if b < histSub {
		return uint64(b)
	}
	e := b/histSub + histSubBits - 1
	sub := uint64(b % histSub)
	return (1 << e) | sub<<(e-histSubBits)
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	h.max = max(h.max, d)
}

// Count returns the number of durations recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Max returns the largest duration recorded, exactly, or 0 when nothing was recorded.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the duration below which a fraction q (0..1) of the recorded durations fall,
// as the midpoint of the bucket that holds it, or 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if rank >= h.n {
		rank = h.n - 1
	}
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen > rank {
			lo := bucketLow(b)
			var hi uint64
			if b+1 < histBuckets {
				hi = bucketLow(b + 1)
			} else {
				hi = lo
			}
			return time.Duration(lo + (hi-lo)/2)
		}
	}
	return 0
}
