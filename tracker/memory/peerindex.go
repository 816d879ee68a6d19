package memory

import (
	"encoding/binary"
	"errors"
)

// maxSwarm is how many peers one swarm holds: positions plus one fit in a slot's placeBits. A
// variable only so that a test can reach it.
var maxSwarm = maxTorrents

// errSwarmFull is the error of an announce that would add a peer to a full swarm.
var errSwarmFull = errors.New("memory: swarm full")

// peerIndex finds an entry of a large swarm by its peer key. It is the table's scheme (table.go)
// for peers: linear probing over 4-byte slots that hold the entry's position plus one below
// placeBits and 8 bits of the key's hash above, at a load of 7/10 to 7/8, so that an indexed
// peer costs about 5 bytes beside its entry where a Go map from PeerKey cost 50 or more. The
// index is any size, not a power of two, so that it grows by a quarter rather than doubling: a
// key's home slot is its hash scaled to the size (the high half of a 32×32-bit product). The
// hash is the entry's idKey, itself a seeded hash, mixed with the family and the user. The keys are read from the entries, so the index follows every move of an entry
// (repoint) and is told before an entry goes (del).
type peerIndex struct {
	slots []uint32
}

// newPeerIndex indexes the entries of t.
func newPeerIndex(t *torrent) *peerIndex {
	x := &peerIndex{}
	x.slots = make([]uint32, x.size(int(t.n)))
	for i := range int(t.n) {
		x.place(t.hashAt(x, i), uint32(i))
	}
	return x
}

// size returns the number of slots for n entries: 10/7 of n, so that the load starts at 7/10.
func (x *peerIndex) size(n int) int {
	return max(minSlots, n*10/7+1)
}

// home returns the slot where probing for hash h starts.
func (x *peerIndex) home(h uint64) int {
	return int(uint64(uint32(h)) * uint64(len(x.slots)) >> 32)
}

// next returns the slot after j, wrapping around.
func (x *peerIndex) next(j int) int {
	if j++; j == len(x.slots) {
		return 0
	}
	return j
}

func (x *peerIndex) hash(k *swarmKey) uint64 {
	var b [8]byte
	copy(b[:], k.id[:])
	h := binary.LittleEndian.Uint64(b[:])
	// The ID's 48 bits are uniform already; family and user are few and not chosen to collide,
	// so mixing them in is enough. The multiply carries the ID's bits into the tag's top byte.
	v6 := uint64(0)
	if k.v6 {
		v6 = 1
	}
	h ^= (uint64(k.user)<<1 | v6) * 0x9e3779b97f4a7c15
	h *= 0xff51afd7ed558ccd
	return h ^ h>>32
}

// hashAt returns the hash of entry i's key.
func (t *torrent) hashAt(x *peerIndex, i int) uint64 {
	k := t.key(i)
	return x.hash(&k)
}

// place puts position i, whose key hashes to h and is not in the index, in the first empty
// slot from its home.
func (x *peerIndex) place(h uint64, i uint32) {
	j := x.home(h)
	for x.slots[j] != 0 {
		j = x.next(j)
	}
	x.slots[j] = tag(h) | (i + 1)
}

// find returns the position of the entry with key k in t, or -1.
func (x *peerIndex) find(t *torrent, k *swarmKey) int {
	h := x.hash(k)
	tg := tag(h)
	e := t.ents()
	for j := x.home(h); ; j = x.next(j) {
		s := x.slots[j]
		if s == 0 {
			return -1
		}
		if s&^placeMask != tg {
			continue
		}
		i := int(s&placeMask) - 1
		if e[i].id == k.id && (e[i].flags&flagIPv6 != 0) == k.v6 && t.user(i) == k.user {
			return i
		}
	}
}

// slotOf returns the slot that holds position i, whose key hashes to h.
func (x *peerIndex) slotOf(h uint64, i int) int {
	want := uint32(i + 1)
	for j := x.home(h); ; j = x.next(j) {
		if x.slots[j]&placeMask == want {
			return j
		}
	}
}

// add indexes the new entry i of t (t.n counts it), growing the index when it is full.
func (x *peerIndex) add(t *torrent, i int) {
	if int(t.n)*8 > len(x.slots)*7 {
		x.slots = make([]uint32, x.size(int(t.n)))
		for j := range int(t.n) {
			if j != i {
				x.place(t.hashAt(x, j), uint32(j))
			}
		}
	}
	x.place(t.hashAt(x, i), uint32(i))
}

// repoint follows the entry that moved from position from to position to; t holds it at to.
func (x *peerIndex) repoint(t *torrent, from, to int) {
	j := x.slotOf(t.hashAt(x, to), from)
	x.slots[j] = x.slots[j]&^placeMask | uint32(to+1)
}

// del drops entry i of t from the index, before the entry goes. The slots after it that
// probing would no longer reach across the hole move back.
func (x *peerIndex) del(t *torrent, i int) {
	hole := x.slotOf(t.hashAt(x, i), i)
	x.slots[hole] = 0
	for j := x.next(hole); x.slots[j] != 0; j = x.next(j) {
		home := x.home(t.hashAt(x, int(x.slots[j]&placeMask)-1))
		// The slot stays when its home lies cyclically in (hole, j].
		if (hole <= j && hole < home && home <= j) || (hole > j && (hole < home || home <= j)) {
			continue
		}
		x.slots[hole], x.slots[j] = x.slots[j], 0
		hole = j
	}
}
