package memory

import (
	"errors"
	"hash/maphash"
	"slices"

	"github.com/chihaya/chihaya/tracker/models"
)

// table is one shard's torrents: their records in one slab, found by info hash through an
// open-addressing index. A Go map from info hash to place costs 32 to 64 bytes per torrent,
// more than a small swarm's peers; the index costs 4 bytes a slot at a load of 7/16 to 7/8, and
// the record carries its info hash.
//
// The index is linear probing over slots that hold the record's place plus one in their low 24
// bits (0 is an empty slot) and 8 bits of the info hash's seeded hash above, so that a probe
// reads a record only when those 8 bits agree (one probe in 256 otherwise). The hash is seeded
// per table, so that info hashes chosen to collide cannot make probing long. Deletion shifts
// the following slots back (no tombstones). A shard holds at most maxTorrents torrents.
type table struct {
	slots []uint32
	recs  []torrent
	free  []uint32 // places in recs that hold no torrent
	n     int      // torrents
	seed  maphash.Seed
	// usage is the pool's count of torrents and peers, when it has limits; nil otherwise.
	usage *usage
}

const (
	// minSlots is the index's size when its first torrent arrives.
	minSlots = 8
	// placeBits of a slot hold the place plus one; the bits above hold hash bits.
	placeBits = 24
	placeMask = 1<<placeBits - 1
	// maxTorrents is how many torrents one shard holds.
	maxTorrents = placeMask - 1
)

// errShardFull is the error of an announce that would add a torrent to a full shard.
var errShardFull = errors.New("memory: shard full: more shards are needed for more torrents")

func (tb *table) hash(ih *models.InfoHash) uint64 { return maphash.Bytes(tb.seed, ih[:]) }

// tag returns the hash bits that a slot keeps of hash h.
func tag(h uint64) uint32 { return uint32(h>>56) << placeBits }

// find returns the slot of ih and true, or the empty slot where ih would go and false.
func (tb *table) find(ih *models.InfoHash, h uint64) (int, bool) {
	mask := len(tb.slots) - 1
	tg := tag(h)
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := tb.slots[i]
		if s == 0 {
			return i, false
		}
		if s&^placeMask == tg && tb.recs[s&placeMask-1].ih == *ih {
			return i, true
		}
	}
}

// home returns the slot where probing for the torrent of slot value s starts.
func (tb *table) home(s uint32) int {
	return int(tb.hash(&tb.recs[s&placeMask-1].ih)) & (len(tb.slots) - 1)
}

// get returns the torrent of ih, or nil. The pointer is valid while the shard's lock is held
// and no torrent is added.
func (tb *table) get(ih models.InfoHash) *torrent {
	if tb.n == 0 {
		return nil
	}
	i, ok := tb.find(&ih, tb.hash(&ih))
	if !ok {
		return nil
	}
	return &tb.recs[tb.slots[i]&placeMask-1]
}

// add creates the empty torrent ih, which must not exist, or fails with errShardFull.
func (tb *table) add(ih models.InfoHash) (*torrent, error) {
	if tb.n >= maxTorrents {
		return nil, errShardFull
	}
	if (tb.n+1)*8 > len(tb.slots)*7 {
		tb.grow()
	}
	var place uint32
	if n := len(tb.free); n > 0 {
		place, tb.free = tb.free[n-1], tb.free[:n-1]
	} else {
		place = uint32(len(tb.recs))
		if len(tb.recs) == cap(tb.recs) {
			// Grow by a quarter rather than append's doubling: the slab is most of a torrent's
			// cost beside its entries.
			recs := slices.Grow([]torrent(nil), len(tb.recs)+len(tb.recs)/4+4)
			tb.recs = append(recs, tb.recs...)
		}
		tb.recs = tb.recs[:place+1]
	}
	t := &tb.recs[place]
	t.ih, t.used = ih, true
	h := tb.hash(&ih)
	i, _ := tb.find(&ih, h)
	tb.slots[i] = tag(h) | (place + 1)
	tb.n++
	tb.usage.addTorrents(1)
	return t, nil
}

// grow doubles the index (or makes the first one) and places every slot again.
func (tb *table) grow() {
	if tb.slots == nil {
		tb.seed = maphash.MakeSeed()
	}
	old := tb.slots
	tb.slots = make([]uint32, max(minSlots, 2*len(old)))
	mask := len(tb.slots) - 1
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := tb.home(s)
		for tb.slots[i] != 0 {
			i = (i + 1) & mask
		}
		tb.slots[i] = s
	}
}

// drop deletes the torrent ih, if it exists. When the shard empties, it lets go of the index
// and the slab.
func (tb *table) drop(ih models.InfoHash) {
	if tb.n == 0 {
		return
	}
	i, ok := tb.find(&ih, tb.hash(&ih))
	if !ok {
		return
	}
	place := tb.slots[i]&placeMask - 1
	tb.usage.addTorrents(-1)
	tb.usage.addPeers(-int(tb.recs[place].n))
	tb.n--
	if tb.n == 0 {
		tb.slots, tb.recs, tb.free = nil, nil, nil
		return
	}
	// Shift back the slots after i that probing would no longer reach across the hole; their
	// homes are read from their records, so the dropped one is cleared last.
	mask := len(tb.slots) - 1
	tb.slots[i] = 0
	for j := (i + 1) & mask; tb.slots[j] != 0; j = (j + 1) & mask {
		home := tb.home(tb.slots[j])
		// The slot stays when its home lies cyclically in (i, j].
		if (i <= j && i < home && home <= j) || (i > j && (i < home || home <= j)) {
			continue
		}
		tb.slots[i], tb.slots[j] = tb.slots[j], 0
		i = j
	}
	tb.recs[place] = torrent{}
	tb.free = append(tb.free, place)
}
