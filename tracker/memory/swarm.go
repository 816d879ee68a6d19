package memory

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"unsafe"

	"github.com/chihaya/chihaya/tracker/models"
)

// entry is one stored peer endpoint in 16 bytes and no pointers, so that the garbage collector
// never scans the swarms and a size class holds a whole number of entries. What only some peers
// need lives beside it in the torrent's side arrays: the rest of an IPv6 address, a non-zero
// user, non-zero session counters.
type entry struct {
	id    idKey // the peer ID's keyed hash (peerkey.go)
	port  uint16
	addr  [4]byte // the IPv4 address, or the last four bytes of the IPv6 one
	seen  stamp   // the last announce
	flags uint8
}

// The flag bits of an entry.
const (
	flagIPv6   = 1 << iota // the peer is IPv6: the hi6 side array holds the rest of its address
	flagHidden             // stored but never handed out
	flagBig                // the counters do not fit an acct: ext.big holds them
)

func (e *entry) family() models.Family {
	if e.flags&flagIPv6 != 0 {
		return models.IPv6
	}
	return models.IPv4
}

// acct packs a peer's session counters, uploaded and downloaded, in 38 bits each (256 GiB).
type acct [10]byte

const counterMask = 1<<38 - 1

func fits(v int64) bool { return v >= 0 && v <= counterMask }

func (a *acct) get() (up, down int64) {
	lo := binary.LittleEndian.Uint64(a[:8])
	hi := uint64(binary.LittleEndian.Uint16(a[8:]))
	return int64(lo & counterMask), int64((lo>>38 | hi<<26) & counterMask)
}

// set packs up and down, which must fit.
func (a *acct) set(up, down int64) {
	u, d := uint64(up), uint64(down)
	binary.LittleEndian.PutUint64(a[:8], u|d<<38)
	binary.LittleEndian.PutUint16(a[8:], uint16(d>>26))
}

// ext holds what a torrent needs only once it is registered, large or holds huge counters.
type ext struct {
	// site is set for a torrent registered by the site (private mode).
	site *siteTorrent
	// index finds an entry by key in swarms of indexAt entries or more.
	index *peerIndex
	// big holds the counters of the entries with flagBig.
	big map[swarmKey][2]int64
}

// indexAt is the swarm size from which a torrent keeps an index; below it a scan over the
// entries (32 bytes each, contiguous) is faster than hashing, and costs no memory. Below
// indexAt/2 the index is dropped again.
const indexAt = 32

// The side arrays a torrent's block may hold after its entries, each with one element per
// entry, position for position. A torrent gets one the first time one of its peers needs it,
// so that a public swarm of IPv4 peers announcing zero counters is its entries and nothing
// else.
const (
	sideUsers = 1 << iota // []uint32: each entry's user, once one is not zero (private mode)
	sideHi6               // [][12]byte: the first 12 bytes of each IPv6 entry's address
	// sideAcct is []acct: each entry's counters, once one is not zero. Clients start a session
	// at zero (BEP 3).
	sideAcct
)

// sideShift places the side bits at the top of torrent.cs, above the capacity, which bounds a
// swarm to 2^29 entries.
const sideShift = 29

// bytesPer returns the bytes one entry takes in a block with the given side arrays.
func bytesPer(side uint32) int {
	n := int(unsafe.Sizeof(entry{}))
	if side&sideUsers != 0 {
		n += 4
	}
	if side&sideHi6 != 0 {
		n += 12
	}
	if side&sideAcct != 0 {
		n += int(unsafe.Sizeof(acct{}))
	}
	return n
}

// torrent is one swarm. Its peers are entries in one block of memory, seeders first, followed
// by the block's side arrays: c entries, then c users, c hi6 and c accts as the side bits say.
// One allocation per swarm, without pointers, carries everything a peer may need but the site's
// sessions.
type torrent struct {
	p        *entry // the block
	n        uint32 // entries in use
	cs       uint32 // the capacity in entries, and the side bits above sideShift
	nSeed    uint32 // the first nSeed entries are seeders, the others leechers
	snatches uint32
	x        *ext
	ih       models.InfoHash
	used     bool // a torrent, not a free place of the slab
}

func (t *torrent) capacity() int { return int(t.cs & (1<<sideShift - 1)) }
func (t *torrent) side() uint32  { return t.cs >> sideShift }

func (t *torrent) ents() []entry { return unsafe.Slice(t.p, t.capacity())[:t.n] }

// region returns the start of the side array s of t's block, which t has.
func (t *torrent) region(s uint32) unsafe.Pointer {
	c := t.capacity()
	off := c * int(unsafe.Sizeof(entry{}))
	if s > sideUsers && t.side()&sideUsers != 0 {
		off += 4 * c
	}
	if s > sideHi6 && t.side()&sideHi6 != 0 {
		off += 12 * c
	}
	return unsafe.Add(unsafe.Pointer(t.p), off)
}

// users, hi6 and accts return the side arrays, nil when t has none.
func (t *torrent) users() []uint32 {
	if t.side()&sideUsers == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(t.region(sideUsers)), t.capacity())[:t.n]
}

func (t *torrent) hi6() [][12]byte {
	if t.side()&sideHi6 == 0 {
		return nil
	}
	return unsafe.Slice((*[12]byte)(t.region(sideHi6)), t.capacity())[:t.n]
}

func (t *torrent) accts() []acct {
	if t.side()&sideAcct == 0 {
		return nil
	}
	return unsafe.Slice((*acct)(t.region(sideAcct)), t.capacity())[:t.n]
}

func (t *torrent) seeders() int  { return int(t.nSeed) }
func (t *torrent) leechers() int { return int(t.n - t.nSeed) }

func (t *torrent) ext() *ext {
	if t.x == nil {
		t.x = &ext{}
	}
	return t.x
}

func (t *torrent) user(i int) uint32 {
	if t.side()&sideUsers == 0 {
		return 0
	}
	return t.users()[i]
}

func (t *torrent) key(i int) swarmKey {
	e := &t.ents()[i]
	return swarmKey{id: e.id, v6: e.flags&flagIPv6 != 0, user: t.user(i)}
}

func (t *torrent) addrPort(i int) netip.AddrPort {
	e := &t.ents()[i]
	if e.flags&flagIPv6 == 0 {
		return netip.AddrPortFrom(netip.AddrFrom4(e.addr), e.port)
	}
	var a [16]byte
	copy(a[:12], t.hi6()[i][:])
	copy(a[12:], e.addr[:])
	return netip.AddrPortFrom(netip.AddrFrom16(a), e.port)
}

// counters returns entry i's session counters.
func (t *torrent) counters(i int) (up, down int64) {
	switch {
	case t.ents()[i].flags&flagBig != 0:
		c := t.x.big[t.key(i)]
		return c[0], c[1]
	case t.side()&sideAcct != 0:
		return t.accts()[i].get()
	}
	return 0, 0
}

// find returns the position of the entry with key k, or -1.
func (t *torrent) find(k swarmKey) int {
	if t.x != nil && t.x.index != nil {
		return t.x.index.find(t, &k)
	}
	e := t.ents()
	var v6 uint8
	if k.v6 {
		v6 = flagIPv6
	}
	for i := range e {
		if e[i].id == k.id && e[i].flags&flagIPv6 == v6 && t.user(i) == k.user {
			return i
		}
	}
	return -1
}

// pending is an entry being stored, with what goes beside it.
type pending struct {
	e    entry
	key  swarmKey
	hi6  [12]byte
	up   int64
	down int64
}

// set stores p at position i, which exists.
func (t *torrent) set(i int, p *pending) {
	flags := p.e.flags &^ flagBig
	need := t.side()
	if p.key.user != 0 {
		need |= sideUsers
	}
	if flags&flagIPv6 != 0 {
		need |= sideHi6
	}
	if fits(p.up) && fits(p.down) && (p.up != 0 || p.down != 0) {
		need |= sideAcct
	}
	if need != t.side() {
		t.realloc(int(t.n), t.capacity(), need)
	}
	if us := t.users(); us != nil {
		us[i] = p.key.user
	}
	if flags&flagIPv6 != 0 {
		t.hi6()[i] = p.hi6
	}
	as := t.accts()
	switch {
	case !fits(p.up) || !fits(p.down):
		x := t.ext()
		if x.big == nil {
			x.big = make(map[swarmKey][2]int64)
		}
		x.big[p.key] = [2]int64{p.up, p.down}
		flags |= flagBig
		if as != nil {
			as[i] = acct{}
		}
	case as != nil:
		as[i].set(p.up, p.down)
	}
	e := &t.ents()[i]
	*e = p.e
	e.flags = flags
}

// move copies entry src, and its side elements, over entry dst.
func (t *torrent) move(dst, src int) {
	if dst == src {
		return
	}
	e := t.ents()
	e[dst] = e[src]
	if us := t.users(); us != nil {
		us[dst] = us[src]
	}
	if hs := t.hi6(); hs != nil {
		hs[dst] = hs[src]
	}
	if as := t.accts(); as != nil {
		as[dst] = as[src]
	}
	if t.x != nil && t.x.index != nil {
		t.x.index.repoint(t, src, dst)
	}
}

// forget drops what ext keeps under entry i's key, before the entry goes.
func (t *torrent) forget(i int) {
	if t.x == nil {
		return
	}
	if t.x.index != nil {
		t.x.index.del(t, i)
	}
	if t.ents()[i].flags&flagBig != 0 {
		delete(t.x.big, t.key(i))
	}
}

// largeSwarm is the swarm size from which a block grows by an eighth rather than by half.
const largeSwarm = 4096

// resize sets the number of entries to n, reallocating when n does not fit or when most of
// the capacity would lie unused.
func (t *torrent) resize(n int) {
	c := t.capacity()
	switch {
	case n > c && c < 2:
		// A swarm of one, the most numerous kind on a public tracker, holds exactly one entry
		// (one 16-byte size class); the second peer takes a block of two.
		t.realloc(n, n, t.side())
	case n > c:
		// Grow by half: small swarms keep little slack, and a swarm of ten IPv4 peers is
		// reached in three steps from two (5, 10), each an exact size class. Large swarms grow
		// by an eighth, so that their slack stays small (6% on average rather than 25%) for a
		// copy of about eight entries per new peer, amortized.
		grow := n / 2
		if n >= largeSwarm {
			grow = n / 8
		}
		t.realloc(n, n+grow+1, t.side())
	case c > 8 && n <= c/4:
		t.realloc(n, n+n/2+1, t.side())
	}
	t.n = uint32(n)
}

// fit gives back the room of a swarm that the reaper thinned: a block with more than a quarter
// of its entries unused moves into one that fits, so that the swarms of a tracker whose peers
// all came and went (each swarm twice its size for a while) take the memory of their peers
// again. Announces keep the hysteresis of resize, so that a swarm that shrinks by one and grows
// by one does not reallocate each time.
func (t *torrent) fit() {
	n := int(t.n)
	if n == 0 {
		t.p, t.cs = nil, t.side()<<sideShift // an empty swarm that stays holds no block
		return
	}
	if c := t.capacity(); c > n+n/4+1 {
		t.realloc(n, n, t.side())
	}
	if x := t.x; x != nil && x.index != nil && len(x.index.slots) > 2*x.index.size(n) {
		x.index = newPeerIndex(t)
	}
}

// realloc moves t into a new block for at least want entries and the side arrays side, keeping
// its first min(n, t.n) entries. The block's size is rounded up to the allocator's size class
// by slices.Grow, and the capacity takes what the rounding gives, so no allocated byte is out of
// reach.
func (t *torrent) realloc(n, want int, side uint32) {
	keep := min(n, int(t.n))
	per := bytesPer(side)
	size := int(unsafe.Sizeof(entry{}))
	blk := slices.Grow([]entry(nil), (max(want, 1)*per+size-1)/size)
	old := *t
	t.p = unsafe.SliceData(blk)
	t.cs = uint32(cap(blk)*size/per) | side<<sideShift
	t.n = uint32(keep)
	copy(t.ents(), old.ents()[:keep])
	if us := old.users(); us != nil {
		copy(t.users(), us[:keep])
	}
	if hs := old.hi6(); hs != nil {
		copy(t.hi6(), hs[:keep])
	}
	if as := old.accts(); as != nil {
		copy(t.accts(), as[:keep])
	}
}

// insert adds p, which is not in the torrent, as a seeder or a leecher.
func (t *torrent) insert(p *pending, seeder bool) {
	n := int(t.n)
	t.resize(n + 1)
	i := n
	if seeder {
		// The first leecher moves to the end to make room at the end of the seeders.
		i = int(t.nSeed)
		t.move(n, i)
		t.nSeed++
	}
	t.set(i, p)
	switch x := t.x; {
	case x != nil && x.index != nil:
		x.index.add(t, i)
	case n+1 >= indexAt:
		t.ext().index = newPeerIndex(t)
	}
}

// remove deletes entry i: the last seeder fills a seeder's place, the last entry fills the
// leecher's place that is left.
func (t *torrent) remove(i int) {
	t.forget(i)
	last := int(t.n) - 1
	if i < int(t.nSeed) {
		t.nSeed--
		t.move(i, int(t.nSeed))
		i = int(t.nSeed)
	}
	t.move(i, last)
	t.resize(last)
	if x := t.x; x != nil && x.index != nil && last < indexAt/2 {
		x.index = nil
	}
}
