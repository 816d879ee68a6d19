package memory

import (
	"context"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// checkInvariants walks every shard and torrent of p and checks that the slab, the entries and
// everything kept beside them agree.
func checkInvariants(tb testing.TB, p *Pool) {
	tb.Helper()
	for si := range p.shards {
		s := &p.shards[si]
		s.mu.RLock()
		assert.Equal(tb, len(s.recs), s.n+len(s.free), "shard %d: slab size", si)
		for _, fi := range s.free {
			assert.Equal(tb, torrent{}, s.recs[fi], "shard %d: free place %d is not empty", si, fi)
		}
		checkTable(tb, &s.table)
		for ti := range s.recs {
			if t := &s.recs[ti]; t.used {
				checkTorrent(tb, t.ih, t)
			}
		}
		s.mu.RUnlock()
	}
}

func checkTorrent(tb testing.TB, ih models.InfoHash, t *torrent) {
	tb.Helper()
	n := len(t.ents())
	assert.LessOrEqual(tb, int(t.nSeed), n, "torrent %x: seeders", ih[:4])
	big, v6 := 0, 0
	for i := range t.ents() {
		assert.Equal(tb, i, t.find(t.key(i)), "torrent %x: entry %d is found elsewhere", ih[:4], i)
		if t.ents()[i].flags&flagBig != 0 {
			big++
			_, ok := t.x.big[t.key(i)]
			assert.True(tb, ok, "torrent %x: entry %d has no big counters", ih[:4], i)
		}
		if t.ents()[i].family() == models.IPv6 {
			v6++
		}
	}
	if x := t.x; x != nil {
		assert.Len(tb, x.big, big, "torrent %x: big counters kept for gone entries", ih[:4])
		if x.index != nil {
			checkPeerIndex(tb, ih, t, x.index)
		}
	}
	assert.LessOrEqual(tb, n, t.capacity(), "torrent %x: capacity", ih[:4])
	if v6 > 0 {
		assert.Len(tb, t.hi6(), n, "torrent %x: IPv6 entries without hi6", ih[:4])
	}
	for i := range t.ents() {
		if t.ents()[i].flags&flagBig == 0 && t.accts() == nil {
			up, down := t.counters(i)
			assert.Zero(tb, up|down, "torrent %x: entry %d has counters without accts", ih[:4], i)
		}
	}
	if n >= indexAt {
		require.NotNil(tb, t.x)
		assert.NotNil(tb, t.x.index, "torrent %x: %d entries and no index", ih[:4], n)
	}
}

// checkPeerIndex checks that x names each entry of t once, in a slot reachable from its home
// with the key's hash bits, and nothing else, at a load of at most 7/8.
func checkPeerIndex(tb testing.TB, ih models.InfoHash, t *torrent, x *peerIndex) {
	tb.Helper()
	n := int(t.n)
	assert.LessOrEqual(tb, 8*n, 7*len(x.slots), "torrent %x: index load over 7/8", ih[:4])
	seen := make([]bool, n)
	filled := 0
	for j, s := range x.slots {
		if s == 0 {
			continue
		}
		filled++
		i := int(s&placeMask) - 1
		if !assert.Less(tb, i, n, "torrent %x: slot %d names entry %d of %d", ih[:4], j, i, n) {
			continue
		}
		assert.False(tb, seen[i], "torrent %x: entry %d in two slots", ih[:4], i)
		seen[i] = true
		h := t.hashAt(x, i)
		assert.Equal(tb, tag(h), s&^placeMask, "torrent %x: slot %d: hash bits", ih[:4], j)
		for k := x.home(h); k != j; k = x.next(k) {
			if !assert.NotZero(tb, x.slots[k], "torrent %x: entry %d beyond an empty slot", ih[:4], i) {
				break
			}
		}
	}
	assert.Equal(tb, n, filled, "torrent %x: index size", ih[:4])
}

func TestEntryLayout(t *testing.T) {
	// The memory budget (issue 6) rests on these sizes.
	assert.Equal(t, uintptr(16), unsafe.Sizeof(entry{}))
	// A torrent's record carries its info hash for the shard's index (table.go): 56 bytes in the
	// slab and about 6 in the index, against 32 and 32 to 64 in a Go map. A peer is 16 bytes.
	assert.Equal(t, uintptr(56), unsafe.Sizeof(torrent{}))
}

// TestSideArrays checks that a swarm gets each side array only when one of its peers needs it:
// a public swarm of IPv4 peers that announce zero counters is its entries and nothing more.
func TestSideArrays(t *testing.T) {
	tests := []struct {
		name     string
		change   func(u *tracker.PeerUpdate)
		wantSide uint32
		wantExt  bool
	}{
		{name: "public IPv4, zero counters", change: func(*tracker.PeerUpdate) {}},
		{name: "a user", change: func(u *tracker.PeerUpdate) { u.Key.User = 9 }, wantSide: sideUsers},
		{name: "an IPv6 peer", change: func(u *tracker.PeerUpdate) {
			u.Key.Family, u.AddrPort = models.IPv6, v6(5)
		}, wantSide: sideHi6},
		{name: "counters", change: func(u *tracker.PeerUpdate) { u.Downloaded = 1 }, wantSide: sideAcct},
		{name: "huge counters", change: func(u *tracker.PeerUpdate) { u.Uploaded = 1 << 50 }, wantExt: true},
		{name: "counters not kept", change: func(u *tracker.PeerUpdate) {
			u.Counters, u.Uploaded, u.Downloaded = false, 1<<50, 7
		}},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(1)
			ih := hash(n)
			for i := 0; i < 10; i++ {
				u := peer(i, models.IPv4, i%4 == 0)
				if i == 5 {
					tt.change(&u)
				}
				announce(t, p, ih, u, all(0))
			}
			tor := p.shardFor(ih).get(ih)
			assert.Equal(t, tt.wantSide, tor.side())
			assert.Equal(t, tt.wantExt, tor.x != nil)
			if tt.wantSide == 0 {
				// Growth by half lands on 10 entries, an exact size class: no slack.
				assert.Equal(t, 10, tor.capacity())
			}
			checkInvariants(t, p)
			assert.Len(t, observe(t, p, ih, false), 10)
		})
	}
}

func TestCounters(t *testing.T) {
	tests := []struct {
		name     string
		up, down int64
		wantBig  bool
	}{
		{name: "zero", up: 0, down: 0},
		{name: "small", up: 12345, down: 678},
		{name: "largest packed", up: counterMask, down: counterMask},
		{name: "uploaded one past", up: counterMask + 1, down: 5, wantBig: true},
		{name: "downloaded one past", up: 5, down: counterMask + 1, wantBig: true},
		{name: "a terabyte", up: 1 << 40, down: 1 << 35, wantBig: true},
		{name: "max int64", up: math.MaxInt64, down: math.MaxInt64, wantBig: true},
		{name: "negative", up: -1, down: 3, wantBig: true},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(1)
			ih := hash(n)
			// A few neighbours on both sides of the peer, so that moves carry its counters.
			for i := 10; i < 14; i++ {
				announce(t, p, ih, peer(i, models.IPv4, i%2 == 0), all(0))
			}
			u := peer(1, models.IPv6, false)
			u.Key.User = 7
			u.Uploaded, u.Downloaded = tt.up, tt.down
			announce(t, p, ih, u, all(0))
			sh := p.shardFor(ih)
			i := sh.get(ih).find(p.ids.key(u.Key))
			require.GreaterOrEqual(t, i, 0)
			assert.Equal(t, tt.wantBig, sh.get(ih).ents()[i].flags&flagBig != 0)
			checkInvariants(t, p)

			for _, seeder := range []bool{true, false} {
				// The peer moves between seeders and leechers; its counters go with it.
				next := u
				next.Seeder, next.Uploaded, next.Downloaded = seeder, tt.up, tt.down
				res := announce(t, p, ih, next, all(0))
				assert.True(t, res.Prev.Found)
				assert.Equal(t, tt.up, res.Prev.Uploaded)
				assert.Equal(t, tt.down, res.Prev.Downloaded)
				checkInvariants(t, p)
			}
			// Small counters again free what the large ones kept.
			small := u
			small.Uploaded, small.Downloaded = 1, 2
			announce(t, p, ih, small, all(0))
			checkInvariants(t, p)
			res := announce(t, p, ih, u, all(0))
			assert.Equal(t, int64(1), res.Prev.Uploaded)
			assert.Equal(t, int64(2), res.Prev.Downloaded)
			stop := u
			stop.Remove = true
			res = announce(t, p, ih, stop, all(0))
			assert.Equal(t, tt.up, res.Prev.Uploaded)
			checkInvariants(t, p)
		})
	}
}

// runSwarmOps drives one torrent through the announces and stops that ops encode, four bytes
// each, and compares it with a model after every step: peers differ in family, user, seeding,
// visibility and counter size, so every side array of ext and the index come and go.
func runSwarmOps(t *testing.T, ops []byte) {
	type state struct {
		seeder   bool
		up, down int64
		addr     netip.AddrPort
	}
	p := NewPool(1)
	ih := hash(1)
	model := map[models.PeerKey]state{}
	for op := 0; op+4 <= len(ops); op += 4 {
		b0, b1, b2, b3 := ops[op], ops[op+1], ops[op+2], ops[op+3]
		n := int(b0 % 64)
		fam := models.Family(b1 & 1)
		u := peer(n, fam, b1&2 != 0)
		u.Key.User = uint32(b1>>2) % 3 // 0 is public mode
		if fam == models.IPv6 {
			u.AddrPort = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, byte(n), 15: b2}), uint16(b2)+1)
		}
		switch b3 % 8 {
		case 0: // zero counters, as a started announce reports
		case 1:
			u.Uploaded, u.Downloaded = counterMask+int64(b2), int64(b2)
		default:
			u.Uploaded, u.Downloaded = int64(b2)<<20, int64(b3)
		}
		u.Hidden = b1&0x20 != 0
		u.Remove = b3&0xc0 == 0xc0
		prev, found := model[u.Key]
		res := announce(t, p, ih, u, all(int(b2%8)))
		require.Equal(t, found, res.Prev.Found, "op %d", op)
		if found {
			require.Equal(t, prev.seeder, res.Prev.Seeder, "op %d", op)
			require.Equal(t, prev.up, res.Prev.Uploaded, "op %d", op)
			require.Equal(t, prev.down, res.Prev.Downloaded, "op %d", op)
		}
		if u.Remove {
			delete(model, u.Key)
		} else {
			model[u.Key] = state{seeder: u.Seeder, up: u.Uploaded, down: u.Downloaded, addr: u.AddrPort}
		}
		seeders := 0
		for _, st := range model {
			if st.seeder {
				seeders++
			}
		}
		require.Equal(t, seeders, res.Seeders, "op %d", op)
		require.Equal(t, len(model)-seeders, res.Leechers, "op %d", op)
		self := p.ids.key(u.Key).id
		if tor := p.shardFor(ih).get(ih); tor != nil {
			for _, pr := range append(res.IPv4Peers, res.IPv6Peers...) {
				// Some entry of another peer has the handed-out endpoint.
				other := false
				for i := range tor.ents() {
					other = other || (tor.addrPort(i) == pr.AddrPort && tor.ents()[i].id != self)
				}
				require.True(t, other, "op %d: handed itself (%v)", op, pr.AddrPort)
			}
		}
		if op%64 == 0 {
			checkInvariants(t, p)
		}
	}
	checkInvariants(t, p)
	// Every stored endpoint is stored with its own address, in its own list.
	tor := p.shardFor(ih).get(ih)
	if tor == nil {
		require.Empty(t, model)
		return
	}
	require.Len(t, tor.ents(), len(model))
	for i := range tor.ents() {
		k := tor.key(i)
		st, ok := model[models.PeerKey{ID: peerIDOf(t, p, k.id), Family: k.family(), User: k.user}]
		require.True(t, ok)
		assert.Equal(t, st.addr, tor.addrPort(i))
		assert.Equal(t, st.seeder, i < tor.seeders())
	}
}

func TestSwarmModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		rng := rand.New(rand.NewPCG(seed, 7))
		// The swarm grows over the first half and shrinks over the second.
		ops := make([]byte, 4*3000)
		for i := range ops {
			ops[i] = byte(rng.Uint32())
		}
		for op := 0; op < len(ops); op += 4 {
			ops[op+3] &^= 0xc0
			if stop := op > len(ops)/2 && rng.IntN(10) < 7 || rng.IntN(10) < 2; stop {
				ops[op+3] |= 0xc0
			}
		}
		runSwarmOps(t, ops)
	}
}

// FuzzSwarm runs runSwarmOps on fuzzed operations.
func FuzzSwarm(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 1, 0, 0, 0xc0})
	f.Add([]byte{1, 2, 3, 1, 2, 3, 4, 2, 1, 1, 0, 0xc1, 2, 7, 9, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 4*500 {
			ops = ops[:4*500]
		}
		runSwarmOps(t, ops)
	})
}

func TestIndexAndCapacity(t *testing.T) {
	p := NewPool(1)
	ih := hash(3)
	sh := p.shardFor(ih)
	const n = 200
	for i := 0; i < n; i++ {
		announce(t, p, ih, peer(i, models.IPv4, i%3 == 0), all(0))
		tor := sh.get(ih)
		assert.Equal(t, i+1 >= indexAt, tor.x != nil && tor.x.index != nil, "index with %d entries", i+1)
		// Growth by half, then rounding up to a size class (at most an eighth more), leaves
		// little unused.
		assert.LessOrEqual(t, cap(tor.ents()), (i+1)*3/2*9/8+8, "capacity with %d entries", i+1)
	}
	for i := 0; i < n-3; i++ {
		u := peer(i, models.IPv4, false)
		u.Remove = true
		announce(t, p, ih, u, all(0))
		tor := sh.get(ih)
		left := n - i - 1
		if left < indexAt/2 {
			assert.Nil(t, tor.x.index, "index with %d entries", left)
		}
		assert.LessOrEqual(t, cap(tor.ents()), max(4*left, 16), "capacity with %d entries", left)
	}
	checkInvariants(t, p)
	assert.Len(t, observe(t, p, ih, false), 3)
}

func TestSwarmFull(t *testing.T) {
	defer func(m int) { maxSwarm = m }(maxSwarm)
	maxSwarm = 40
	p := NewPool(1)
	ih := hash(5)
	for i := range 40 {
		announce(t, p, ih, peer(i, models.IPv4, false), all(0))
	}
	var res tracker.AnnounceResult
	sel := all(0)
	u := peer(40, models.IPv4, false)
	err := p.Announce(context.Background(), ih, &u, &sel, &res)
	require.ErrorIs(t, err, errSwarmFull)
	// Peers already in the swarm still announce, change state and leave.
	u = peer(3, models.IPv4, true)
	announce(t, p, ih, u, all(0))
	u.Remove = true
	announce(t, p, ih, u, all(0))
	u = peer(40, models.IPv4, false)
	announce(t, p, ih, u, all(0))
	assert.Equal(t, 40, scrape(t, p, ih).Leechers)
	checkInvariants(t, p)
}

func TestSlabReusesPlaces(t *testing.T) {
	p := NewPool(1)
	s := &p.shards[0]
	for round := 0; round < 3; round++ {
		for i := 0; i < 50; i++ {
			u := peer(i, models.IPv4, false)
			u.Time = t0.Add(time.Duration(round) * time.Hour)
			announce(t, p, hash(round*100+i), u, all(0))
		}
		assert.Equal(t, 50, s.n)
		assert.LessOrEqual(t, len(s.recs), 50, "round %d: places are not reused", round)
		// Purge half of them; the next round refills their places.
		for i := 0; i < 25; i++ {
			u := peer(i, models.IPv4, false)
			u.Remove = true
			announce(t, p, hash(round*100+i), u, all(0))
		}
		r, err := p.Reap(context.Background(), t0.Add(time.Duration(round)*time.Hour), true)
		require.NoError(t, err)
		assert.Equal(t, 25, r.Torrents)
		checkInvariants(t, p)
		// Then drop the rest, as the next round's cutoff would.
		r, err = p.Reap(context.Background(), t0.Add(time.Duration(round+1)*time.Hour), true)
		require.NoError(t, err)
		assert.Equal(t, tracker.ReapResult{Peers: 25, Torrents: 25}, r)
		assert.Empty(t, s.recs, "an empty shard keeps no slab")
	}
}

// TestReapInBatches reaps a shard larger than reapBatch, so that the pass lets go of the lock
// between batches, while other goroutines announce to the same shard.
func TestReapInBatches(t *testing.T) {
	p := NewPool(1)
	const torrents, peers = 400, 40 // 16,000 entries, about two batches
	require.Greater(t, torrents*peers, reapBatch)
	for tn := 0; tn < torrents; tn++ {
		for i := 0; i < peers; i++ {
			u := peer(i, models.IPv4, i%4 == 0)
			if tn%2 == 0 || i%2 == 0 {
				u.Time = t0.Add(-time.Hour) // stale: every peer of even torrents, half of odd ones
			}
			announce(t, p, hash(tn), u, all(0))
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 500; i++ {
			u := peer(5000+i, models.IPv6, false)
			announce(t, p, hash(torrents+i), u, all(5))
		}
	}()
	r, err := p.Reap(context.Background(), t0.Add(-time.Minute), true)
	require.NoError(t, err)
	<-done
	assert.Equal(t, torrents/2*peers+torrents/2*peers/2, r.Peers)
	assert.Equal(t, torrents/2, r.Torrents)
	checkInvariants(t, p)
	for tn := 0; tn < torrents; tn++ {
		st := scrape(t, p, hash(tn))
		if tn%2 == 0 {
			assert.False(t, st.Registered, "torrent %d", tn)
		} else {
			assert.Equal(t, peers/2, st.Seeders+st.Leechers, "torrent %d", tn)
		}
	}
	for i := 0; i < 500; i++ {
		assert.Equal(t, 1, scrape(t, p, hash(torrents+i)).Leechers, "new torrent %d", i)
	}
}

// TestCountersNotKept checks that counters reported without PeerUpdate.Counters are dropped:
// PrevPeer reports zeros, and a peer that had kept counters loses them.
func TestCountersNotKept(t *testing.T) {
	p := NewPool(1)
	ih := hash(1)
	u := peer(1, models.IPv4, false)
	u.Uploaded, u.Downloaded = 100, 200
	announce(t, p, ih, u, all(0))
	u.Counters = false
	u.Uploaded, u.Downloaded = 300, 400
	res := announce(t, p, ih, u, all(0))
	assert.Equal(t, tracker.PrevPeer{Found: true, Uploaded: 100, Downloaded: 200, Time: t0}, res.Prev)
	res = announce(t, p, ih, u, all(0))
	assert.Equal(t, tracker.PrevPeer{Found: true, Time: t0}, res.Prev)
	checkInvariants(t, p)
}
