package memory

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// checkTable checks tb's index against its slab: every torrent is found at its own place from
// its info hash, every slot names a torrent under its hash bits, and the load stays under 3/4.
func checkTable(t testing.TB, tb *table) {
	t.Helper()
	used := 0
	for place := range tb.recs {
		r := &tb.recs[place]
		if !r.used {
			continue
		}
		used++
		got := tb.get(r.ih)
		if assert.NotNil(t, got, "torrent %x at place %d is not found", r.ih[:4], place) {
			assert.Same(t, r, got, "torrent %x: found at another place", r.ih[:4])
		}
	}
	assert.Equal(t, tb.n, used, "torrents counted")
	filled := 0
	for i, s := range tb.slots {
		if s == 0 {
			continue
		}
		filled++
		place := s&placeMask - 1
		if assert.Less(t, int(place), len(tb.recs), "slot %d: place out of the slab", i) {
			r := &tb.recs[place]
			assert.True(t, r.used, "slot %d names the free place %d", i, place)
			assert.Equal(t, tag(tb.hash(&r.ih)), s&^placeMask, "slot %d: hash bits", i)
			// Probing from its home reaches the slot before any empty one.
			for j := tb.home(s); j != i; j = (j + 1) & (len(tb.slots) - 1) {
				if !assert.NotZero(t, tb.slots[j], "slot %d: an empty slot between its home and it", i) {
					break
				}
			}
		}
	}
	assert.Equal(t, tb.n, filled, "filled slots")
	assert.LessOrEqual(t, 8*tb.n, 7*len(tb.slots), "load over 7/8")
	if tb.n == 0 {
		assert.Nil(t, tb.slots, "an empty table keeps an index")
		assert.Nil(t, tb.recs, "an empty table keeps a slab")
	}
}

func ihOf(n uint32) models.InfoHash {
	var ih models.InfoHash
	binary.BigEndian.PutUint32(ih[16:], n)
	return ih
}

func TestTable(t *testing.T) {
	tests := []struct {
		name string
		add  int   // torrents 0..add-1 are added
		drop []int // then these are dropped, in order
	}{
		{name: "empty"},
		{name: "one", add: 1},
		{name: "one dropped", add: 1, drop: []int{0}},
		{name: "up to the first growth", add: 6},
		{name: "across several growths", add: 1000},
		{name: "drop the first half", add: 1000, drop: seq(0, 500)},
		{name: "drop every other", add: 1000, drop: seqStep(0, 1000, 2)},
		{name: "drop all backwards", add: 300, drop: seqStep(299, -1, -1)},
		{name: "drop unknown ones too", add: 10, drop: []int{3, 3, 10, 11, 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tb table
			for i := range tt.add {
				require.Nil(t, tb.get(ihOf(uint32(i))), "torrent %d before it is added", i)
				r, err := tb.add(ihOf(uint32(i)))
				require.NoError(t, err)
				r.snatches = uint32(i) // mark it, to find it again
			}
			checkTable(t, &tb)
			dropped := map[int]bool{}
			for _, i := range tt.drop {
				tb.drop(ihOf(uint32(i)))
				if i < tt.add {
					dropped[i] = true
				}
			}
			checkTable(t, &tb)
			assert.Equal(t, tt.add-len(dropped), tb.n)
			for i := range tt.add + 5 {
				r := tb.get(ihOf(uint32(i)))
				if i >= tt.add || dropped[i] {
					assert.Nil(t, r, "torrent %d", i)
					continue
				}
				if assert.NotNil(t, r, "torrent %d", i) {
					assert.Equal(t, uint32(i), r.snatches, "torrent %d holds another's record", i)
				}
			}
		})
	}
}

// TestTableCollidingHomes fills an index whose torrents share one home, the probing worst case,
// then drops them from the middle: the slots after each hole move back so that every torrent
// stays reachable.
func TestTableCollidingHomes(t *testing.T) {
	var tb table
	mustAdd(t, &tb, ihOf(0))
	// Find torrents whose hash bits give the same home in an index of 64 slots.
	home := int(tb.hash(&tb.recs[0].ih)) & 63
	var same []uint32
	for n := uint32(1); len(same) < 20; n++ {
		ih := ihOf(n)
		if int(tb.hash(&ih))&63 == home {
			same = append(same, n)
		}
	}
	for _, n := range same {
		mustAdd(t, &tb, ihOf(n))
	}
	checkTable(t, &tb)
	for _, n := range same[5:15] {
		tb.drop(ihOf(n))
		checkTable(t, &tb)
	}
	for _, n := range append(same[:5], same[15:]...) {
		assert.NotNil(t, tb.get(ihOf(n)), "torrent %d", n)
	}
}

func TestTableNewSeedPerIndex(t *testing.T) {
	var a, b table
	mustAdd(t, &a, ihOf(1))
	mustAdd(t, &b, ihOf(1))
	// Two seeds give one info hash the same hash once in 2^64 times.
	differ := false
	for n := range uint32(64) {
		ih := ihOf(n)
		differ = differ || a.hash(&ih) != b.hash(&ih)
	}
	assert.True(t, differ, "two tables hash alike: info hashes that collide in one collide in all")
}

// FuzzTable runs a sequence of adds and drops against a table and a Go map, and checks that
// they agree and that the table's invariants hold.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x81, 0x82, 4, 0x80, 0x83, 0x84})
	f.Add([]byte{0, 0, 0, 0x80, 0x80, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var tb table
		model := map[models.InfoHash]uint32{}
		for i, op := range ops {
			ih := ihOf(uint32(op & 0x3f))
			if op&0x80 != 0 {
				tb.drop(ih)
				delete(model, ih)
				continue
			}
			if tb.get(ih) == nil {
				mustAdd(t, &tb, ih).snatches = uint32(i)
				model[ih] = uint32(i)
			}
		}
		checkTable(t, &tb)
		require.Equal(t, len(model), tb.n)
		for n := range uint32(64) {
			ih := ihOf(n)
			want, ok := model[ih]
			r := tb.get(ih)
			if !ok {
				require.Nil(t, r, "torrent %d", n)
				continue
			}
			require.NotNil(t, r, "torrent %d", n)
			require.Equal(t, want, r.snatches, "torrent %d", n)
		}
	})
}

func mustAdd(t testing.TB, tb *table, ih models.InfoHash) *torrent {
	t.Helper()
	r, err := tb.add(ih)
	require.NoError(t, err)
	return r
}

func TestTableFull(t *testing.T) {
	var tb table
	mustAdd(t, &tb, ihOf(1))
	tb.n = maxTorrents // as if the shard held its most
	_, err := tb.add(ihOf(2))
	require.ErrorIs(t, err, errShardFull)
	assert.Nil(t, tb.get(ihOf(2)))
	assert.NotNil(t, tb.get(ihOf(1)))
}

func seq(from, to int) []int { return seqStep(from, to, 1) }

func seqStep(from, to, step int) []int {
	var s []int
	for i := from; i != to; i += step {
		s = append(s, i)
	}
	return s
}
