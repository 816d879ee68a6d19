package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

// t0 is the tests' time of announce, years before the wall clock's: snapshots are taken at the
// wall clock's time, and read the entries' stamps against their shard's latest announce.
var t0 = time.Unix(1_700_000_000, 0)

// hash and pid are the conformance suite's, so that both name the same torrents and peers.
var (
	hash = trackertest.Hash
	pid  = trackertest.PID
)

// v4, v6, key and all are the conformance suite's too.
var (
	v4  = trackertest.V4
	v6  = trackertest.V6
	key = trackertest.Key
	all = trackertest.All
)

// peer builds the update of peer n in family f, with counters (a backend that consumes deltas).
func peer(n int, f models.Family, seeder bool) tracker.PeerUpdate {
	u := trackertest.Peer(n, f, seeder)
	u.Counters = true
	u.Time = t0
	return u
}

func announce(tb testing.TB, c tracker.Conn, ih models.InfoHash, u tracker.PeerUpdate, sel tracker.Selection) tracker.AnnounceResult {
	tb.Helper()
	return trackertest.Announce(tb, c, ih, u, sel)
}

func scrape(tb testing.TB, c tracker.Conn, ih models.InfoHash) models.TorrentStats {
	tb.Helper()
	return trackertest.Scrape(tb, c, ih)
}

// handed returns the keys of the peers in res, read from ih's entries in p that hold their
// endpoints: the pool hands out no peer IDs.
func handed(tb testing.TB, p *Pool, ih models.InfoHash, res *tracker.AnnounceResult) []models.PeerKey {
	tb.Helper()
	keys := trackertest.Handed(tb, res)
	s := p.shardFor(ih)
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.get(ih)
	require.NotNil(tb, t)
	for j, pr := range append(res.IPv4Peers, res.IPv6Peers...) {
		n := 0
		for i := range t.ents() {
			if t.addrPort(i) == pr.AddrPort && t.ents()[i].family() == keys[j].Family {
				keys[j].ID = peerIDOf(tb, p, t.ents()[i].id)
				n++
			}
		}
		require.Equal(tb, 1, n, "handed-out endpoint %v is held by %d entries", pr.AddrPort, n)
	}
	return keys
}

func observe(tb testing.TB, c tracker.Conn, ih models.InfoHash, seeder bool) map[models.PeerKey]bool {
	tb.Helper()
	return trackertest.Observe(tb, c, ih, seeder)
}

func TestDriverParams(t *testing.T) {
	tests := []struct {
		name       string
		params     string
		wantShards int
		errHas     []string
	}{
		{name: "absent", params: "", wantShards: DefaultShards},
		{name: "null", params: "null", wantShards: DefaultShards},
		{name: "blank", params: " \n\t", wantShards: DefaultShards},
		{name: "empty object", params: "{}", wantShards: DefaultShards},
		{name: "shards set", params: `{"shards": 8}`, wantShards: 8},
		{name: "one shard", params: `{"shards": 1}`, wantShards: 1},
		{name: "zero shards", params: `{"shards": 0}`, errHas: []string{`"shards"`, "got 0"}},
		{name: "negative shards", params: `{"shards": -3}`, errHas: []string{`"shards"`, "got -3"}},
		{name: "too many shards", params: fmt.Sprintf(`{"shards": %d}`, MaxShards+1), errHas: []string{`"shards"`}},
		{name: "shards wrong type", params: `{"shards": "many"}`, errHas: []string{"shards"}},
		{name: "shards fraction", params: `{"shards": 1.5}`, errHas: []string{"shards"}},
		{name: "unknown key", params: `{"shard": 8}`, errHas: []string{`"shard"`, `known keys: "shards"`}},
		{name: "unknown key beside a good one", params: `{"shards": 8, "ttl": "1m"}`, errHas: []string{`"ttl"`}},
		{name: "not an object", params: `[1]`, errHas: []string{"params"}},
		{name: "limits set", params: `{"max_torrents": 10, "max_peers": 100}`, wantShards: DefaultShards},
		{name: "negative max_torrents", params: `{"max_torrents": -1}`, errHas: []string{`"max_torrents"`, "got -1"}},
		{name: "negative max_peers", params: `{"max_peers": -5}`, errHas: []string{`"max_peers"`, "got -5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw json.RawMessage
			if tt.params != "" {
				raw = json.RawMessage(tt.params)
			}
			pool, err := Driver{}.New(raw)
			if tt.errHas != nil {
				require.Error(t, err)
				assert.Nil(t, pool)
				for _, s := range tt.errHas {
					assert.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			p, ok := pool.(*Pool)
			require.True(t, ok, "pool is %T", pool)
			assert.Len(t, p.shards, tt.wantShards)
			require.NoError(t, pool.Close())
		})
	}
}

func TestRegisteredAsMemory(t *testing.T) {
	assert.Contains(t, tracker.Drivers(), "memory")
	pool, err := tracker.Open(config.DriverConfig{Name: "memory", Params: json.RawMessage(`{"shards": 4}`)})
	require.NoError(t, err)
	require.IsType(t, &Pool{}, pool)
	assert.Len(t, pool.(*Pool).shards, 4)

	_, err = tracker.Open(config.DriverConfig{Name: "memory", Params: json.RawMessage(`{"bogus": 4}`)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"bogus"`)
	assert.Contains(t, err.Error(), `driver "memory"`)

	conn, err := pool.Get()
	require.NoError(t, err)
	assert.NoError(t, conn.Close())
}

func TestMovesKeepIndexConsistent(t *testing.T) {
	p := NewPool(1)
	ih := hash(6)
	// Leechers 0..4, seeders 10..12.
	for i := 0; i < 5; i++ {
		announce(t, p, ih, peer(i, models.IPv4, false), all(0))
	}
	for i := 10; i < 13; i++ {
		announce(t, p, ih, peer(i, models.IPv4, true), all(0))
	}
	live := map[models.PeerKey]bool{}
	seeders := map[models.PeerKey]bool{}
	for i := 0; i < 5; i++ {
		live[key(i, models.IPv4)] = true
	}
	for i := 10; i < 13; i++ {
		live[key(i, models.IPv4)] = true
		seeders[key(i, models.IPv4)] = true
	}

	moves := []struct {
		name   string
		peer   int
		seeder bool
	}{
		{"middle leecher seeds", 1, true},
		{"first seeder leeches", 10, false},
		{"last leecher seeds", 4, true},
		{"moved leecher goes back", 1, false},
		{"moved seeder goes back", 10, true},
		{"first leecher seeds", 0, true},
		{"same state again", 0, true},
		{"last seeder leeches", 12, false},
	}
	for _, mv := range moves {
		t.Run(mv.name, func(t *testing.T) {
			k := key(mv.peer, models.IPv4)
			res := announce(t, p, ih, peer(mv.peer, models.IPv4, mv.seeder), all(0))
			assert.True(t, res.Prev.Found)
			assert.Equal(t, seeders[k], res.Prev.Seeder)
			if mv.seeder {
				seeders[k] = true
			} else {
				delete(seeders, k)
			}
			wantS := len(seeders)
			wantL := len(live) - wantS
			assert.Equal(t, wantS, res.Seeders)
			assert.Equal(t, wantL, res.Leechers)
			st := scrape(t, p, ih)
			assert.Equal(t, wantS, st.Seeders)
			assert.Equal(t, wantL, st.Leechers)

			assert.Equal(t, live, observe(t, p, ih, false), "leecher's view")
			leechers := map[models.PeerKey]bool{}
			for k := range live {
				if !seeders[k] {
					leechers[k] = true
				}
			}
			assert.Equal(t, leechers, observe(t, p, ih, true), "seeder's view")
			checkInvariants(t, p)
		})
	}
}

func TestRemoveShrinksAndStaysConsistent(t *testing.T) {
	p := NewPool(1)
	ih := hash(8)
	const n = 300
	for i := 0; i < n; i++ {
		announce(t, p, ih, peer(i, models.IPv4, i%3 == 0), all(0))
	}
	live := map[models.PeerKey]bool{}
	for i := 0; i < n; i++ {
		live[key(i, models.IPv4)] = true
	}
	// Remove most peers, in an order that hits the front, middle and back of both slices.
	for i := 0; i < n; i++ {
		if i%10 == 7 {
			continue
		}
		j := (i * 7) % n
		u := peer(j, models.IPv4, j%3 == 0)
		u.Remove = true
		res := announce(t, p, ih, u, all(0))
		if live[key(j, models.IPv4)] {
			assert.True(t, res.Prev.Found, "peer %d", j)
			delete(live, key(j, models.IPv4))
		} else {
			assert.False(t, res.Prev.Found, "peer %d", j)
		}
	}
	checkInvariants(t, p)
	assert.Equal(t, live, observe(t, p, ih, false))
	st := scrape(t, p, ih)
	assert.Equal(t, len(live), st.Seeders+st.Leechers)
}

func TestPreferredSubnet(t *testing.T) {
	inV4 := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 6881)
	}
	inV6 := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", i)), 6881)
	}
	tests := []struct {
		name     string
		prefix   netip.Prefix
		inside   int // peers inside the prefix
		outside  int // peers outside it, per family
		want     int
		seeder   bool
		withSelf bool // the requester is itself a peer inside the prefix
	}{
		{name: "IPv4 want more than inside", prefix: netip.MustParsePrefix("192.0.2.0/24"), inside: 5, outside: 35, want: 8},
		{name: "IPv4 want fewer than inside", prefix: netip.MustParsePrefix("192.0.2.0/24"), inside: 5, outside: 35, want: 3},
		{name: "IPv4 want exactly inside", prefix: netip.MustParsePrefix("192.0.2.0/24"), inside: 5, outside: 35, want: 5},
		{name: "IPv4 requester inside", prefix: netip.MustParsePrefix("192.0.2.0/24"), inside: 5, outside: 35, want: 6, withSelf: true},
		{name: "IPv4 seeder requester", prefix: netip.MustParsePrefix("192.0.2.0/24"), inside: 5, outside: 35, want: 7, seeder: true},
		{name: "IPv6 /48", prefix: netip.MustParsePrefix("2001:db8:1::/48"), inside: 4, outside: 20, want: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(1)
			ih := hash(14)
			v6Prefix := tt.prefix.Addr().Is6()
			insideKeys := map[models.PeerKey]bool{}
			for i := 0; i < tt.inside; i++ {
				u := peer(i, models.IPv4, false)
				if v6Prefix {
					u = peer(i, models.IPv6, false)
					u.AddrPort = inV6(i + 1)
				} else {
					u.AddrPort = inV4(i + 1)
				}
				insideKeys[u.Key] = true
				announce(t, p, ih, u, all(0))
			}
			for i := 100; i < 100+tt.outside; i++ {
				// Outsiders in both families, seeders and leechers mixed; the seeders fall
				// outside a seeder requester's candidates.
				announce(t, p, ih, peer(i, models.IPv4, i%4 == 0), all(0))
				announce(t, p, ih, peer(i, models.IPv6, i%4 == 1), all(0))
			}
			self := peer(9999, models.IPv4, tt.seeder)
			if v6Prefix {
				self = peer(9999, models.IPv6, tt.seeder)
			}
			wantInside := tt.inside
			if tt.withSelf {
				self = peer(0, self.Key.Family, tt.seeder)
				self.AddrPort = inV4(1)
				if v6Prefix {
					self.AddrPort = inV6(1)
				}
				wantInside--
			}
			prefer := tracker.Selection{Want: tt.want, Seeder: tt.seeder, IPv4: true, IPv6: true, Prefer: tt.prefix}
			for rep := 0; rep < 50; rep++ {
				res := announce(t, p, ih, self, prefer)
				list := res.IPv4Peers
				if v6Prefix {
					list = res.IPv6Peers
				}
				got := trackertest.KeySet(t, handed(t, p, ih, &res))
				require.Len(t, got, tt.want)
				assert.NotContains(t, got, self.Key)
				// Peers of the prefix's family are appended in selection order: all inside
				// peers come before any outside one.
				nIn := min(wantInside, tt.want)
				require.GreaterOrEqual(t, len(list), nIn)
				for i, pr := range list {
					inside := tt.prefix.Contains(pr.AddrPort.Addr())
					if i < nIn {
						assert.True(t, inside, "rep %d: peer %d (%v) is outside %v but %d inside peers exist", rep, i, pr.AddrPort, tt.prefix, wantInside)
					} else {
						assert.False(t, inside, "rep %d: peer %d (%v) inside %v came after an outside one", rep, i, pr.AddrPort, tt.prefix)
					}
				}
				count := 0
				for k := range got {
					if insideKeys[k] {
						count++
					}
				}
				assert.Equal(t, nIn, count)
			}
		})
	}
}

func TestSelectionFairness(t *testing.T) {
	tests := []struct {
		name   string
		swarm  int
		want   int
		seeder bool
	}{
		{name: "40 leechers want 5", swarm: 40, want: 5},
		{name: "40 mixed, seeder wants 3", swarm: 40, want: 3, seeder: true},
		{name: "200 mixed want 50", swarm: 200, want: 50},
		{name: "3 peers want 1", swarm: 3, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(1)
			ih := hash(15)
			expect := map[models.PeerKey]bool{}
			for i := 0; i < tt.swarm; i++ {
				s := i%2 == 1
				announce(t, p, ih, peer(i, models.IPv4, s), all(0))
				if !tt.seeder || !s {
					expect[key(i, models.IPv4)] = true
				}
			}
			seen := map[models.PeerKey]int{}
			self := peer(tt.swarm+1, models.IPv4, tt.seeder)
			sel := all(tt.want)
			sel.Seeder = tt.seeder
			rounds := 0
			for ; rounds < 5000 && len(seen) < len(expect); rounds++ {
				res := announce(t, p, ih, self, sel)
				got := handed(t, p, ih, &res)
				require.Len(t, got, min(tt.want, len(expect)))
				for _, k := range got {
					require.True(t, expect[k], "handed a peer that is not a candidate")
					seen[k]++
				}
			}
			assert.Len(t, seen, len(expect), "after %d announces only %d of %d peers were handed out", rounds, len(seen), len(expect))
		})
	}
}

// TestConcurrent runs announces, stops, scrapes and reaps from many goroutines on a few shared
// torrents, then checks that the swarms hold exactly what the workers left in them.
func TestConcurrent(t *testing.T) {
	const (
		workers  = 8
		ops      = 2000
		torrents = 5
		idsPer   = 12
	)
	p := NewPool(2) // few shards: torrents share locks
	var wg sync.WaitGroup
	// models[w][torrent] is what worker w's own peers should be in torrent.
	owned := make([][]map[models.PeerKey]bool, workers)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		owned[w] = make([]map[models.PeerKey]bool, torrents)
		for i := range owned[w] {
			owned[w][i] = map[models.PeerKey]bool{}
		}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			model := owned[w]
			ctx := context.Background()
			var res tracker.AnnounceResult
			files := make([]models.TorrentStats, torrents)
			fail := func(format string, args ...any) {
				select {
				case errs <- fmt.Errorf("worker %d: "+format, append([]any{w}, args...)...):
				default:
				}
			}
			for op := 0; op < ops; op++ {
				tn := rng.IntN(torrents)
				ih := hash(tn)
				id := w*idsPer + rng.IntN(idsPer)
				fam := models.Family(rng.IntN(2))
				switch r := rng.IntN(100); {
				case r < 50: // announce
					seeder := rng.IntN(2) == 0
					u := peer(id, fam, seeder)
					u.Completed = seeder && rng.IntN(4) == 0
					u.Time = t0.Add(time.Duration(rng.IntN(60)) * time.Second)
					sel := tracker.Selection{Want: rng.IntN(40), Seeder: seeder, IPv4: rng.IntN(4) != 0, IPv6: rng.IntN(4) != 0}
					res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
					if err := p.Announce(ctx, ih, &u, &sel, &res); err != nil {
						fail("announce: %v", err)
						return
					}
					if prev, ok := model[tn][u.Key]; ok != res.Prev.Found || (ok && prev != res.Prev.Seeder) {
						fail("announce: prev = %+v, model has %v %v", res.Prev, ok, prev)
					}
					model[tn][u.Key] = seeder
					n := len(res.IPv4Peers) + len(res.IPv6Peers)
					if n > sel.Want || (!sel.IPv4 && len(res.IPv4Peers) > 0) || (!sel.IPv6 && len(res.IPv6Peers) > 0) {
						fail("announce: %d+%d peers for %+v", len(res.IPv4Peers), len(res.IPv6Peers), sel)
					}
					seen := map[models.PeerKey]bool{}
					for _, pr := range res.IPv4Peers {
						k := models.PeerKey{ID: trackertest.PeerIDOf(pr), Family: models.IPv4}
						if k == u.Key || seen[k] {
							fail("announce: self or duplicate %v", k)
						}
						seen[k] = true
					}
					for _, pr := range res.IPv6Peers {
						k := models.PeerKey{ID: trackertest.PeerIDOf(pr), Family: models.IPv6}
						if k == u.Key || seen[k] {
							fail("announce: self or duplicate %v", k)
						}
						seen[k] = true
					}
					if res.Seeders < 0 || res.Leechers < 1 && !seeder || res.Seeders < 1 && seeder {
						fail("announce: counts %d/%d after storing a peer", res.Seeders, res.Leechers)
					}
				case r < 70: // stop
					u := peer(id, fam, false)
					u.Remove = true
					sel := tracker.Selection{}
					if err := p.Announce(ctx, ih, &u, &sel, &res); err != nil {
						fail("stop: %v", err)
						return
					}
					if _, ok := model[tn][u.Key]; ok != res.Prev.Found {
						fail("stop: prev found %v, model %v", res.Prev.Found, ok)
					}
					delete(model[tn], u.Key)
				case r < 85: // scrape
					for i := range files {
						files[i] = models.TorrentStats{InfoHash: hash(i)}
					}
					if err := p.Scrape(ctx, files); err != nil {
						fail("scrape: %v", err)
						return
					}
					for _, f := range files {
						if f.Seeders < 0 || f.Leechers < 0 || f.Seeders+f.Leechers > workers*idsPer*2 {
							fail("scrape: counts %+v", f)
						}
					}
				case r < 95: // reap stale peers that a separate id range announced long ago
					stale := peer(10_000+w*idsPer+rng.IntN(idsPer), fam, rng.IntN(2) == 0)
					stale.Time = t0.Add(-2 * time.Hour)
					sel := tracker.Selection{}
					if err := p.Announce(ctx, ih, &stale, &sel, &res); err != nil {
						fail("stale announce: %v", err)
						return
					}
				default: // reap with purge
					if _, err := p.Reap(ctx, t0.Add(-time.Hour), rng.IntN(2) == 0); err != nil {
						fail("reap: %v", err)
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// The stale peers are all gone after one more pass; nothing fresh is.
	_, err := p.Reap(context.Background(), t0.Add(-time.Hour), false)
	require.NoError(t, err)
	checkInvariants(t, p)

	for tn := 0; tn < torrents; tn++ {
		want := map[models.PeerKey]bool{}
		seeders := 0
		for w := 0; w < workers; w++ {
			for k, s := range owned[w][tn] {
				want[k] = true
				if s {
					seeders++
				}
			}
		}
		st := scrape(t, p, hash(tn))
		assert.Equal(t, seeders, st.Seeders, "torrent %d seeders", tn)
		assert.Equal(t, len(want)-seeders, st.Leechers, "torrent %d leechers", tn)
		if len(want) > 0 {
			assert.Equal(t, want, observe(t, p, hash(tn), false), "torrent %d peers", tn)
		}
	}
}

// warmPool returns a pool holding torrents × peers, a fifth of them seeders, half on IPv6.
func warmPool(tb testing.TB, torrents, peers int) *Pool {
	p := NewPool(DefaultShards)
	for tn := 0; tn < torrents; tn++ {
		for i := 0; i < peers; i++ {
			announce(tb, p, hash(tn), peer(i, models.Family(i%2), i%5 == 0), all(0))
		}
	}
	return p
}

// leecherUpdates returns the updates of the leechers that warmPool stored, so that announcing
// them leaves the swarms as they are.
func leecherUpdates(peers int) []tracker.PeerUpdate {
	var ups []tracker.PeerUpdate
	for i := 0; i < peers; i++ {
		if i%5 != 0 {
			ups = append(ups, peer(i, models.Family(i%2), false))
		}
	}
	return ups
}

// TestAnnounceAllocatesNothing checks issue 6's figure where a benchmark would only report it:
// a re-announce into warm swarms, a scrape and a stop of an unknown torrent allocate nothing.
func TestAnnounceAllocatesNothing(t *testing.T) {
	const torrents, peers = 100, 20
	p := warmPool(t, torrents, peers)
	ctx := context.Background()
	res := tracker.AnnounceResult{
		IPv4Peers: make([]models.Peer, 0, peers),
		IPv6Peers: make([]models.Peer, 0, peers),
	}
	sel := all(peers)
	ups := leecherUpdates(peers)
	stop := peer(1, models.IPv4, false)
	stop.Remove = true
	files := make([]models.TorrentStats, 1)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
		if err := p.Announce(ctx, hash(i%torrents), &ups[i%len(ups)], &sel, &res); err != nil {
			t.Fatal(err)
		}
		if err := p.Announce(ctx, hash(torrents+i), &stop, &sel, &res); err != nil {
			t.Fatal(err)
		}
		files[0] = models.TorrentStats{InfoHash: hash(i % torrents)}
		if err := p.Scrape(ctx, files); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "allocations per announce, stop and scrape")
}

func BenchmarkAnnounce(b *testing.B) {
	const torrents, peers = 1000, 50
	p := warmPool(b, torrents, peers)
	ctx := context.Background()
	res := tracker.AnnounceResult{
		IPv4Peers: make([]models.Peer, 0, 50),
		IPv6Peers: make([]models.Peer, 0, 50),
	}
	sel := all(50)
	ups := leecherUpdates(peers)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u := &ups[i%len(ups)]
		res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
		if err := p.Announce(ctx, hash(i%torrents), u, &sel, &res); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAnnounceParallel(b *testing.B) {
	const torrents, peers = 1000, 50
	p := warmPool(b, torrents, peers)
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		res := tracker.AnnounceResult{
			IPv4Peers: make([]models.Peer, 0, 50),
			IPv6Peers: make([]models.Peer, 0, 50),
		}
		sel := all(50)
		ups := leecherUpdates(peers)
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			i++
			res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
			if err := p.Announce(ctx, hash(i%torrents), &ups[i%len(ups)], &sel, &res); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestReapAfterLongGap reaps entries whose last announce lies further back than their 24-bit
// stamps tell apart (2^24 s, 194 days), as when the process was stopped for a year: read against
// the shard's latest announce, they are stale however long the gap.
func TestReapAfterLongGap(t *testing.T) {
	for _, gap := range []time.Duration{time.Hour, 30 * 24 * time.Hour, 100 * 24 * time.Hour, 200 * 24 * time.Hour, 365 * 24 * time.Hour} {
		t.Run(gap.String(), func(t *testing.T) {
			p := NewPool(2)
			for i := 0; i < 20; i++ {
				announce(t, p, hash(i%3), peer(i, models.Family(i%2), i%4 == 0), all(0))
			}
			r, err := p.Reap(context.Background(), t0.Add(gap-45*time.Minute), true)
			require.NoError(t, err)
			assert.Equal(t, 20, r.Peers)
			assert.Equal(t, 3, r.Torrents)
		})
	}
}

// TestReapFitsBlocks replaces every peer of 300 swarms by a new one, so that each holds twice
// its peers for a while, and reaps the old ones: each swarm's block fits its peers again.
func TestReapFitsBlocks(t *testing.T) {
	for _, size := range []int{1, 2, 3, 10, 40, 100} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			p := NewPool(4)
			for gen, at := range []time.Time{t0, t0.Add(2 * time.Hour)} {
				for tn := 0; tn < 50; tn++ {
					for i := 0; i < size; i++ {
						u := peer(gen*100_000+tn*size+i, models.Family(i%2), i%3 == 0)
						u.Time = at
						announce(t, p, hash(tn), u, all(0))
					}
				}
			}
			r, err := p.Reap(context.Background(), t0.Add(time.Hour), false)
			require.NoError(t, err)
			require.Equal(t, 50*size, r.Peers)
			for tn := 0; tn < 50; tn++ {
				tor := p.shardFor(hash(tn)).get(hash(tn))
				require.NotNil(t, tor)
				require.Equal(t, size, int(tor.n))
				assert.LessOrEqual(t, tor.capacity(), size+size/4+1, "torrent %d", tn)
			}
			checkInvariants(t, p)
			// The thinned swarms serve on: a reaped-down swarm grows again.
			res := announce(t, p, hash(0), peer(999_999, models.IPv4, false), all(size+1))
			assert.Equal(t, size+1, res.Seeders+res.Leechers)
			assert.Len(t, append(res.IPv4Peers, res.IPv6Peers...), size)
		})
	}
}
