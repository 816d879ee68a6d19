package accesslist

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"slices"

	"github.com/chihaya/chihaya/tracker/models"
)

// table is an immutable set of info hashes: the hashes sorted, and an index from the top bits
// of a hash to the first entry that starts with them. Info hashes are SHA-1 (or truncated
// SHA-256) output, so the buckets are even: a lookup reads one index word and about one entry,
// two cache misses, whatever the size. It costs 20 bytes an entry plus 2 to 4 bytes an entry for
// the index and 2 to 4 bytes for a filter, with no pointers for the collector to scan.
type table struct {
	hashes []models.InfoHash
	// offs[b] is the place of the first hash whose top `bits` bits are b; offs has 2^bits+1
	// words.
	offs []uint32
	bits uint
	// filter is a blocked Bloom filter of 16 bits an entry: each hash sets 3 bits of one 64-bit
	// word, both taken from other bits of the hash than the bucket's, so that all but about 1 in
	// 200 hashes that are not listed are known absent from one read, without touching the index
	// or the entries.
	filter []uint64
	fmask  uint32
}

// maxEntries bounds a list, so that places fit the index's 32-bit words.
const maxEntries = 1<<32 - 2

// top returns the top n bits of ih (n ≤ 32).
func top(ih *models.InfoHash, n uint) uint32 {
	if n == 0 {
		return 0
	}
	return binary.BigEndian.Uint32(ih[:4]) >> (32 - n)
}

// newTable builds the set of hs, which it sorts, deduplicates and keeps.
func newTable(hs []models.InfoHash) *table {
	// Bucket by the top bits first (a counting sort: the input is uniform), then sort each
	// small bucket: linear time where one big sort of 10 million entries would take seconds.
	// About one or two hashes a bucket: an index word per one or two entries.
	n := uint(0)
	if len(hs) > 1 {
		n = min(uint(bits.Len(uint(len(hs))))-1, 24)
	}
	offs := make([]uint32, 1<<n+1)
	for i := range hs {
		offs[top(&hs[i], n)+1]++
	}
	for b := 1; b < len(offs); b++ {
		offs[b] += offs[b-1]
	}
	sorted := make([]models.InfoHash, len(hs))
	next := slices.Clone(offs[:len(offs)-1])
	for i := range hs {
		b := top(&hs[i], n)
		sorted[next[b]] = hs[i]
		next[b]++
	}
	cmp := func(a, b models.InfoHash) int { return bytes.Compare(a[:], b[:]) }
	// Sort each bucket and drop duplicates, compacting in place and moving the offsets.
	w := uint32(0)
	for b := 0; b < len(offs)-1; b++ {
		lo, hi := offs[b], offs[b+1]
		bucket := sorted[lo:hi]
		slices.SortFunc(bucket, cmp)
		offs[b] = w
		for i := range bucket {
			if i > 0 && bucket[i] == bucket[i-1] {
				continue
			}
			sorted[w] = bucket[i]
			w++
		}
	}
	offs[len(offs)-1] = w
	t := &table{hashes: slices.Clip(sorted[:w]), offs: offs, bits: n}
	words := 1
	for words*64 < 16*int(w) {
		words <<= 1
	}
	t.filter, t.fmask = make([]uint64, words), uint32(words-1)
	for i := range t.hashes {
		word, bits := t.fbits(&t.hashes[i])
		t.filter[word] |= bits
	}
	return t
}

// fbits is ih's word in the filter and the 3 bits it sets there, from a mix of all of ih's
// first 16 bytes (hashes made up for tests and benchmarks are rarely uniform in every byte).
func (t *table) fbits(ih *models.InfoHash) (uint32, uint64) {
	m := (binary.BigEndian.Uint64(ih[0:8]) ^ binary.BigEndian.Uint64(ih[8:16])*0xff51afd7ed558ccd) * 0x9e3779b97f4a7c15
	m ^= m >> 29
	return uint32(m>>32) & t.fmask, 1<<(m&63) | 1<<(m>>6&63) | 1<<(m>>12&63)
}

// contains reports whether ih is in the set. It allocates nothing.
func (t *table) contains(ih *models.InfoHash) bool {
	if word, bits := t.fbits(ih); t.filter[word]&bits != bits {
		return false
	}
	b := top(ih, t.bits)
	for i := t.offs[b]; i < t.offs[b+1]; i++ {
		if t.hashes[i] == *ih {
			return true
		}
	}
	return false
}

// len is the number of hashes in the set.
func (t *table) len() int { return len(t.hashes) }

// diff calls gone for every hash of old missing from t, and added for every hash of t missing
// from old, walking both sorted lists once.
func (t *table) diff(old *table, gone, added func(models.InfoHash)) {
	a, b := old.hashes, t.hashes
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && bytes.Compare(a[i][:], b[j][:]) < 0):
			if gone != nil {
				gone(a[i])
			}
			i++
		case i == len(a) || bytes.Compare(a[i][:], b[j][:]) > 0:
			if added != nil {
				added(b[j])
			}
			j++
		default:
			i++
			j++
		}
	}
}
