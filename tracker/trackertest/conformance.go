// Package trackertest is a conformance suite for tracker drivers: Run checks the contract of
// tracker.Conn (tracker/driver.go) and of the optional capabilities a driver's Conn implements
// (tracker.SwarmCounter, tracker.SiteStore) against any driver's pool, so that every driver is
// held to the semantics of the reference "memory" driver.
package trackertest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// T0 is the announce time the suite uses unless a case says otherwise.
var T0 = time.Unix(1_700_000_000, 0)

// Run runs the suite. open returns a fresh, empty pool for one test; the suite closes it.
func Run(t *testing.T, open func(t *testing.T) tracker.Pool) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, c tracker.Conn)
	}{
		{"AnnounceCreatesTorrent", testAnnounceCreates},
		{"NeverHandsSelf", testNeverHandsSelf},
		{"SeedersGetLeechersOnly", testSeedersGetLeechersOnly},
		{"WantCapsTotal", testWantCapsTotal},
		{"CompletedCountsOneSnatch", testSnatches},
		{"Moves", testMoves},
		{"Remove", testRemove},
		{"CreateFalse", testCreateFalse},
		{"PrevPeer", testPrevPeer},
		{"DualStack", testDualStack},
		{"SelectionFamilies", testSelectionFamilies},
		{"Hidden", testHidden},
		{"SkipOwnUser", testSkipOwnUser},
		{"SelectionSpreads", testSelectionSpreads},
		{"Scrape", testScrape},
		{"Prefer", testPrefer},
		{"SwarmCounts", testSwarmCounts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, conn(t, open))
		})
	}
	t.Run("Reap", func(t *testing.T) { testReap(t, open) })
	t.Run("ReapCancelled", func(t *testing.T) { testReapCancelled(t, conn(t, open)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open) })
	t.Run("Site", func(t *testing.T) { runSite(t, open) })
	t.Run("Operator", func(t *testing.T) { RunOperator(t, open) })
}

// conn opens a fresh pool and a connection from it, both closed at cleanup.
func conn(t *testing.T, open func(t *testing.T) tracker.Pool) tracker.Conn {
	t.Helper()
	p := open(t)
	t.Cleanup(func() { assert.NoError(t, p.Close()) })
	c, err := p.Get()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return c
}

// Hash returns a distinct info hash for n.
func Hash(n int) models.InfoHash {
	var h models.InfoHash
	binary.BigEndian.PutUint32(h[:4], uint32(n)*2654435761)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
	return h
}

// PID returns a distinct peer ID for n.
func PID(n int) models.PeerID {
	var id models.PeerID
	copy(id[:], fmt.Sprintf("-TS0001-%012d", n))
	return id
}

func announce(tb testing.TB, c tracker.Conn, ih models.InfoHash, u tracker.PeerUpdate, sel tracker.Selection) tracker.AnnounceResult {
	tb.Helper()
	var res tracker.AnnounceResult
	require.NoError(tb, c.Announce(context.Background(), ih, &u, &sel, &res))
	return res
}

func scrape(tb testing.TB, c tracker.Conn, ih models.InfoHash) models.TorrentStats {
	tb.Helper()
	files := []models.TorrentStats{{InfoHash: ih}}
	require.NoError(tb, c.Scrape(context.Background(), files))
	return files[0]
}

// handed returns the keys of the peers in res, failing on a peer listed in the wrong family.
func handed(tb testing.TB, res *tracker.AnnounceResult) []models.PeerKey {
	tb.Helper()
	var keys []models.PeerKey
	for _, p := range append(res.IPv4Peers, res.IPv6Peers...) {
		// A driver either hands out every peer's ID or says it keeps none.
		assert.Equal(tb, res.NoPeerIDs, p.ID == models.PeerID{}, "peer %v: ID %q with NoPeerIDs %v", p.AddrPort, p.ID[:], res.NoPeerIDs)
	}
	for _, p := range res.IPv4Peers {
		assert.True(tb, p.AddrPort.Addr().Is4(), "IPv4Peers holds %v", p.AddrPort)
		keys = append(keys, models.PeerKey{ID: PeerIDOf(p), Family: models.IPv4})
	}
	for _, p := range res.IPv6Peers {
		assert.True(tb, p.AddrPort.Addr().Is6() && !p.AddrPort.Addr().Is4In6(), "IPv6Peers holds %v", p.AddrPort)
		keys = append(keys, models.PeerKey{ID: PeerIDOf(p), Family: models.IPv6})
	}
	return keys
}

func keySet(tb testing.TB, keys []models.PeerKey) map[models.PeerKey]bool {
	tb.Helper()
	set := make(map[models.PeerKey]bool, len(keys))
	for _, k := range keys {
		assert.False(tb, set[k], "peer %q/%v handed out twice", k.ID[:], k.Family)
		set[k] = true
	}
	return set
}

// observe lists the peers of ih without changing them: a stop of an unknown peer hands out the
// selection and stores nothing.
func observe(tb testing.TB, c tracker.Conn, ih models.InfoHash, seeder bool) map[models.PeerKey]bool {
	tb.Helper()
	u := Peer(999_999, models.IPv4, seeder)
	u.Remove = true
	sel := All(1 << 20)
	sel.Seeder = seeder
	res := announce(tb, c, ih, u, sel)
	return keySet(tb, handed(tb, &res))
}

func testAnnounceCreates(t *testing.T, c tracker.Conn) {
	ih := Hash(1)
	assert.Equal(t, models.TorrentStats{InfoHash: ih}, scrape(t, c, ih))
	res := announce(t, c, ih, Peer(1, models.IPv4, false), All(50))
	assert.False(t, res.Prev.Found)
	assert.Equal(t, 0, res.Seeders)
	assert.Equal(t, 1, res.Leechers)
	assert.Equal(t, 0, res.Snatches)
	assert.Empty(t, res.IPv4Peers)
	assert.Empty(t, res.IPv6Peers)
	assert.Equal(t, models.TorrentStats{InfoHash: ih, Leechers: 1, Registered: true}, scrape(t, c, ih))
	assert.False(t, scrape(t, c, Hash(2)).Registered)
}

func testNeverHandsSelf(t *testing.T, c tracker.Conn) {
	tests := []struct {
		name    string
		swarm   int
		seeders bool
	}{
		{name: "alone leecher", swarm: 1},
		{name: "alone seeder", swarm: 1, seeders: true},
		{name: "two leechers", swarm: 2},
		{name: "many leechers", swarm: 30},
		{name: "many seeders", swarm: 30, seeders: true},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ih := Hash(100 + n)
			for i := 0; i < tt.swarm; i++ {
				announce(t, c, ih, Peer(i, models.IPv4, tt.seeders), All(0))
			}
			for i := 0; i < tt.swarm; i++ {
				// A seeder asks as a leecher so that it may see the other seeders.
				res := announce(t, c, ih, Peer(i, models.IPv4, tt.seeders), All(100))
				got := keySet(t, handed(t, &res))
				assert.NotContains(t, got, Key(i, models.IPv4))
				assert.Len(t, got, tt.swarm-1)
			}
		})
	}
}

func testSeedersGetLeechersOnly(t *testing.T, c tracker.Conn) {
	const nSeed, nLeech = 4, 6
	ih := Hash(3)
	for i := 0; i < nSeed; i++ {
		announce(t, c, ih, Peer(i, models.IPv4, true), All(0))
	}
	for i := nSeed; i < nSeed+nLeech; i++ {
		announce(t, c, ih, Peer(i, models.IPv4, false), All(0))
	}
	sel := All(100)
	sel.Seeder = true
	res := announce(t, c, ih, Peer(0, models.IPv4, true), sel)
	got := keySet(t, handed(t, &res))
	assert.Len(t, got, nLeech)
	for k := range got {
		var n int
		_, err := fmt.Sscanf(string(k.ID[8:]), "%d", &n)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, n, nSeed, "seeder handed seeder %d", n)
	}
	// A leecher gets everyone else.
	res = announce(t, c, ih, Peer(nSeed, models.IPv4, false), All(100))
	assert.Len(t, keySet(t, handed(t, &res)), nSeed+nLeech-1)
	assert.Equal(t, nSeed, res.Seeders)
	assert.Equal(t, nLeech, res.Leechers)
}

func testWantCapsTotal(t *testing.T, c tracker.Conn) {
	ih := Hash(4)
	for i := 0; i < 20; i++ {
		announce(t, c, ih, Peer(i, models.IPv4, i%2 == 0), All(0))
		announce(t, c, ih, Peer(i, models.IPv6, i%3 == 0), All(0))
	}
	for _, want := range []int{0, 1, 5, 39, 100} {
		res := announce(t, c, ih, Peer(500, models.IPv4, false), All(want))
		got := keySet(t, handed(t, &res))
		assert.Len(t, got, min(want, 40), "want %d", want)
		assert.NotContains(t, got, Key(500, models.IPv4))
	}
}

func testSnatches(t *testing.T, c tracker.Conn) {
	type step struct {
		seeder, completed, remove bool
		wantSnatched              bool
		wantSnatches              int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"leecher completes once", []step{{}, {seeder: true, completed: true, wantSnatched: true, wantSnatches: 1}}},
		{"completed twice counts once", []step{
			{},
			{seeder: true, completed: true, wantSnatched: true, wantSnatches: 1},
			{seeder: true, completed: true, wantSnatches: 1},
			{seeder: true, wantSnatches: 1},
		}},
		{"unknown peer completing counts", []step{{seeder: true, completed: true, wantSnatched: true, wantSnatches: 1}}},
		{"stored seeder completing does not count", []step{{seeder: true}, {seeder: true, completed: true}}},
		{"seeder without completed does not count", []step{{}, {seeder: true}}},
		{"completed with bytes left does not count", []step{{}, {completed: true}}},
		{"seeder that became a leecher again counts again", []step{
			{},
			{seeder: true, completed: true, wantSnatched: true, wantSnatches: 1},
			{wantSnatches: 1},
			{seeder: true, completed: true, wantSnatched: true, wantSnatches: 2},
		}},
		{"stopped then completing counts as a new entry", []step{
			{seeder: true, completed: true, wantSnatched: true, wantSnatches: 1},
			{remove: true, wantSnatches: 1},
			{seeder: true, completed: true, wantSnatched: true, wantSnatches: 2},
		}},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ih := Hash(200 + n)
			// Another leecher keeps the torrent non-empty and never changes the count.
			announce(t, c, ih, Peer(50, models.IPv4, false), All(0))
			for i, st := range tt.steps {
				u := Peer(1, models.IPv4, st.seeder)
				u.Completed, u.Remove = st.completed, st.remove
				res := announce(t, c, ih, u, All(10))
				assert.Equal(t, st.wantSnatched, res.Snatched, "step %d Snatched", i)
				assert.Equal(t, st.wantSnatches, res.Snatches, "step %d Snatches", i)
				assert.Equal(t, st.wantSnatches, scrape(t, c, ih).Snatches, "step %d scrape", i)
			}
		})
	}
}

func testMoves(t *testing.T, c tracker.Conn) {
	ih := Hash(5)
	for i := 0; i < 6; i++ {
		announce(t, c, ih, Peer(i, models.IPv4, false), All(0))
	}
	// Leechers 0..2 become seeders; 0 turns back into a leecher.
	for i := 0; i < 3; i++ {
		res := announce(t, c, ih, Peer(i, models.IPv4, true), All(0))
		assert.True(t, res.Prev.Found)
		assert.False(t, res.Prev.Seeder)
		assert.Equal(t, i+1, res.Seeders)
		assert.Equal(t, 6-i-1, res.Leechers)
	}
	res := announce(t, c, ih, Peer(0, models.IPv4, false), All(0))
	assert.True(t, res.Prev.Seeder)
	assert.Equal(t, 2, res.Seeders)
	assert.Equal(t, 4, res.Leechers)
	assert.Equal(t, models.TorrentStats{InfoHash: ih, Seeders: 2, Leechers: 4, Registered: true}, scrape(t, c, ih))
	assert.Len(t, observe(t, c, ih, false), 6)
	// A seeder now sees exactly the four leechers.
	seen := observe(t, c, ih, true)
	assert.Equal(t, map[models.PeerKey]bool{
		Key(0, models.IPv4): true, Key(3, models.IPv4): true, Key(4, models.IPv4): true, Key(5, models.IPv4): true,
	}, seen)
}

func testRemove(t *testing.T, c tracker.Conn) {
	tests := []struct {
		name         string
		setup        []tracker.PeerUpdate
		remove       tracker.PeerUpdate
		wantFound    bool
		wantPrevSeed bool
		wantStats    models.TorrentStats
	}{
		{name: "stopped peer of an unknown torrent creates nothing", remove: Peer(1, models.IPv4, false)},
		{
			name: "remove the only leecher keeps the torrent until reaped", setup: []tracker.PeerUpdate{Peer(1, models.IPv4, false)},
			remove: Peer(1, models.IPv4, false), wantFound: true, wantStats: models.TorrentStats{Registered: true},
		},
		{
			name:      "remove a seeder",
			setup:     []tracker.PeerUpdate{Peer(1, models.IPv4, true), Peer(2, models.IPv4, true), Peer(3, models.IPv4, false)},
			remove:    Peer(1, models.IPv4, false),
			wantFound: true, wantPrevSeed: true, wantStats: models.TorrentStats{Seeders: 1, Leechers: 1, Registered: true},
		},
		{
			name: "remove an unknown peer of a known torrent", setup: []tracker.PeerUpdate{Peer(1, models.IPv4, true)},
			remove: Peer(2, models.IPv4, false), wantStats: models.TorrentStats{Seeders: 1, Registered: true},
		},
		{
			name: "remove the other family only", setup: []tracker.PeerUpdate{Peer(1, models.IPv4, false), Peer(1, models.IPv6, false)},
			remove: Peer(1, models.IPv6, false), wantFound: true, wantStats: models.TorrentStats{Leechers: 1, Registered: true},
		},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ih := Hash(300 + n)
			for _, u := range tt.setup {
				announce(t, c, ih, u, All(0))
			}
			u := tt.remove
			u.Remove = true
			res := announce(t, c, ih, u, All(0))
			assert.Equal(t, tt.wantFound, res.Prev.Found)
			assert.Equal(t, tt.wantPrevSeed, res.Prev.Seeder)
			assert.False(t, res.Snatched)
			want := tt.wantStats
			want.InfoHash = ih
			assert.Equal(t, want, scrape(t, c, ih))
			assert.Equal(t, want.Seeders, res.Seeders)
			assert.Equal(t, want.Leechers, res.Leechers)
			assert.NotContains(t, observe(t, c, ih, false), u.Key)
			if !want.Registered {
				assert.False(t, scrape(t, c, ih).Registered, "looking at the torrent created it")
			}
		})
	}
}

func testCreateFalse(t *testing.T, c tracker.Conn) {
	tests := []struct {
		name    string
		known   bool
		remove  bool
		wantErr error
	}{
		{name: "unknown torrent", wantErr: models.ErrTorrentNotFound},
		{name: "unknown torrent, stopped", remove: true, wantErr: models.ErrTorrentNotFound},
		{name: "known torrent", known: true},
		{name: "known torrent, stopped", known: true, remove: true},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ih := Hash(400 + n)
			if tt.known {
				announce(t, c, ih, Peer(1, models.IPv4, true), All(0))
			}
			u := Peer(2, models.IPv4, false)
			u.Create, u.Remove = false, tt.remove
			sel := All(10)
			var res tracker.AnnounceResult
			err := c.Announce(context.Background(), ih, &u, &sel, &res)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.False(t, scrape(t, c, ih).Registered, "an unknown torrent must not be created")
				return
			}
			require.NoError(t, err)
			assert.True(t, scrape(t, c, ih).Registered)
			if !tt.remove {
				assert.Equal(t, 1, res.Leechers)
				assert.Len(t, res.IPv4Peers, 1)
			}
		})
	}
}

func testPrevPeer(t *testing.T, c tracker.Conn) {
	tests := []struct {
		name  string
		first *tracker.PeerUpdate
		want  tracker.PrevPeer
	}{
		{name: "first announce"},
		{
			name:  "leecher",
			first: &tracker.PeerUpdate{Uploaded: 10, Downloaded: 20, Time: T0},
			want:  tracker.PrevPeer{Found: true, Uploaded: 10, Downloaded: 20, Time: T0},
		},
		{
			name:  "seeder",
			first: &tracker.PeerUpdate{Seeder: true, Uploaded: 1 << 40, Downloaded: 1 << 35, Time: T0.Add(90 * time.Second)},
			want:  tracker.PrevPeer{Found: true, Seeder: true, Uploaded: 1 << 40, Downloaded: 1 << 35, Time: T0.Add(90 * time.Second)},
		},
		{
			name:  "sub-second time is kept to the second",
			first: &tracker.PeerUpdate{Time: T0.Add(1500 * time.Millisecond)},
			want:  tracker.PrevPeer{Found: true, Time: T0.Add(time.Second)},
		},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ih := Hash(500 + n)
			if tt.first != nil {
				u := Peer(1, models.IPv4, tt.first.Seeder)
				u.Uploaded, u.Downloaded, u.Time = tt.first.Uploaded, tt.first.Downloaded, tt.first.Time
				u.Counters = true
				announce(t, c, ih, u, All(0))
			}
			u := Peer(1, models.IPv4, false)
			u.Uploaded, u.Downloaded, u.Time = 5, 5, T0.Add(time.Hour)
			u.Counters = true
			res := announce(t, c, ih, u, All(0))
			assert.Equal(t, tt.want.Found, res.Prev.Found)
			assert.Equal(t, tt.want.Seeder, res.Prev.Seeder)
			assert.Equal(t, tt.want.Uploaded, res.Prev.Uploaded)
			assert.Equal(t, tt.want.Downloaded, res.Prev.Downloaded)
			if tt.want.Found {
				assert.True(t, tt.want.Time.Equal(res.Prev.Time), "Prev.Time = %v, want %v", res.Prev.Time, tt.want.Time)
			}
			res = announce(t, c, ih, Peer(1, models.IPv4, false), All(0))
			assert.True(t, res.Prev.Found)
			assert.False(t, res.Prev.Seeder)
			assert.Equal(t, int64(5), res.Prev.Uploaded)
			assert.Equal(t, int64(5), res.Prev.Downloaded)
			assert.True(t, T0.Add(time.Hour).Equal(res.Prev.Time), "Prev.Time = %v", res.Prev.Time)
		})
	}
}

func testDualStack(t *testing.T, c tracker.Conn) {
	ih := Hash(12)
	res := announce(t, c, ih, Peer(1, models.IPv4, false), All(0))
	assert.False(t, res.Prev.Found)
	res = announce(t, c, ih, Peer(1, models.IPv6, false), All(0))
	assert.False(t, res.Prev.Found, "the IPv6 key must be a new entry")
	assert.Equal(t, 2, res.Leechers)
	assert.Equal(t, 2, scrape(t, c, ih).Leechers)

	res = announce(t, c, ih, Peer(1, models.IPv4, false), All(0))
	assert.True(t, res.Prev.Found)
	assert.Equal(t, 2, res.Leechers)

	res = announce(t, c, ih, Peer(2, models.IPv4, false), All(50))
	require.Len(t, res.IPv4Peers, 1)
	require.Len(t, res.IPv6Peers, 1)
	assert.Equal(t, V4(1), res.IPv4Peers[0].AddrPort)
	assert.Equal(t, PID(1), PeerIDOf(res.IPv4Peers[0]))
	assert.Equal(t, V6(1), res.IPv6Peers[0].AddrPort)
	assert.Equal(t, PID(1), PeerIDOf(res.IPv6Peers[0]))
	assert.True(t, res.IPv4Peers[0].AddrPort.Addr().Is4(), "IPv4 peers are handed out unmapped")

	// A dual-stacked peer is never handed its own other-family endpoint.
	res = announce(t, c, ih, Peer(1, models.IPv4, false), All(50))
	for _, got := range append(res.IPv4Peers, res.IPv6Peers...) {
		assert.NotEqual(t, PID(1), PeerIDOf(got), "peer 1 was handed its own %v endpoint", got.AddrPort)
	}
	assert.Len(t, res.IPv4Peers, 1, "peer 2 only")
	assert.Empty(t, res.IPv6Peers)

	// An IPv4-mapped address given for an IPv4 key is stored and handed out unmapped.
	m := Peer(3, models.IPv4, false)
	m.AddrPort = netip.AddrPortFrom(netip.AddrFrom16(m.AddrPort.Addr().As16()), m.AddrPort.Port())
	announce(t, c, ih, m, All(0))
	res = announce(t, c, ih, Peer(2, models.IPv4, false), All(50))
	var found bool
	for _, p := range res.IPv4Peers {
		if PeerIDOf(p) == PID(3) {
			found = true
			assert.Equal(t, V4(3), p.AddrPort)
		}
	}
	assert.True(t, found, "peer 3 not handed out")

	stop := Peer(1, models.IPv4, false)
	stop.Remove = true
	announce(t, c, ih, stop, All(0))
	assert.Equal(t, map[models.PeerKey]bool{
		Key(1, models.IPv6): true, Key(2, models.IPv4): true, Key(3, models.IPv4): true,
	}, observe(t, c, ih, false))
}

func testSelectionFamilies(t *testing.T, c tracker.Conn) {
	ih := Hash(13)
	for i := 0; i < 5; i++ {
		announce(t, c, ih, Peer(i, models.IPv4, false), All(0))
		announce(t, c, ih, Peer(i+10, models.IPv6, false), All(0))
	}
	tests := []struct {
		name       string
		ipv4, ipv6 bool
		want4      int
		want6      int
	}{
		{"both", true, true, 5, 5},
		{"IPv4 only", true, false, 5, 0},
		{"IPv6 only", false, true, 0, 5},
		{"neither", false, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel := tracker.Selection{Want: 50, IPv4: tt.ipv4, IPv6: tt.ipv6}
			u := Peer(99, models.IPv4, false)
			u.Remove = true
			res := announce(t, c, ih, u, sel)
			handed(t, &res)
			assert.Len(t, res.IPv4Peers, tt.want4)
			assert.Len(t, res.IPv6Peers, tt.want6)
		})
	}
	// Want counts both families together, and a filtered family does not use up Want.
	sel := tracker.Selection{Want: 3, IPv6: true}
	res := announce(t, c, ih, Peer(99, models.IPv4, false), sel)
	assert.Empty(t, res.IPv4Peers)
	assert.Len(t, res.IPv6Peers, 3)
}

func testHidden(t *testing.T, c tracker.Conn) {
	ih := Hash(14)
	h := Peer(1, models.IPv4, false)
	h.Hidden = true
	announce(t, c, ih, h, All(0))
	announce(t, c, ih, Peer(2, models.IPv4, false), All(0))
	res := announce(t, c, ih, Peer(3, models.IPv4, false), All(50))
	assert.Equal(t, 3, res.Leechers, "a hidden peer is counted")
	assert.Equal(t, map[models.PeerKey]bool{Key(2, models.IPv4): true}, keySet(t, handed(t, &res)))
	// Announcing again without Hidden makes it visible.
	announce(t, c, ih, Peer(1, models.IPv4, false), All(0))
	assert.Len(t, observe(t, c, ih, false), 3)
}

func testSkipOwnUser(t *testing.T, c tracker.Conn) {
	ih := Hash(15)
	withUser := func(n int, user uint32) tracker.PeerUpdate {
		u := Peer(n, models.IPv4, false)
		u.Key.User = user
		return u
	}
	announce(t, c, ih, withUser(1, 7), All(0))
	announce(t, c, ih, withUser(2, 7), All(0))
	announce(t, c, ih, withUser(3, 8), All(0))
	// The same peer ID under another user is another peer.
	res := announce(t, c, ih, withUser(1, 8), All(0))
	assert.False(t, res.Prev.Found)
	assert.Equal(t, 4, res.Leechers)

	sel := All(50)
	sel.SkipOwnUser = true
	res = announce(t, c, ih, withUser(4, 7), sel)
	ids := map[models.PeerID]int{}
	for _, p := range res.IPv4Peers {
		ids[PeerIDOf(p)]++
	}
	// Users 7's peers 1 and 2 are skipped; user 8's peers 3 and 1 are handed out.
	assert.Equal(t, map[models.PeerID]int{PID(1): 1, PID(3): 1}, ids)
}

func testSelectionSpreads(t *testing.T, c tracker.Conn) {
	ih := Hash(16)
	const swarm, want = 24, 5
	for i := 0; i < swarm; i++ {
		announce(t, c, ih, Peer(i, models.IPv4, i%3 == 0), All(0))
	}
	seen := map[models.PeerKey]int{}
	for i := 0; i < 200; i++ {
		u := Peer(1000, models.IPv4, false)
		u.Remove = true
		res := announce(t, c, ih, u, All(want))
		got := keySet(t, handed(t, &res))
		require.Len(t, got, want)
		for k := range got {
			seen[k]++
		}
	}
	assert.Len(t, seen, swarm, "every peer is handed out sooner or later")
}

func testReap(t *testing.T, open func(t *testing.T) tracker.Pool) {
	type pe struct {
		torrent int
		peer    int
		seeder  bool
		age     time.Duration // before T0
	}
	swarm := []pe{
		{torrent: 1, peer: 1, age: time.Hour},
		{torrent: 1, peer: 2, seeder: true, age: time.Hour},
		{torrent: 1, peer: 3, age: time.Minute},
		{torrent: 1, peer: 4, seeder: true, age: 0},
		{torrent: 1, peer: 5, age: 30 * time.Minute}, // at the cutoff beside older peers: kept
		{torrent: 2, peer: 1, age: 2 * time.Hour},
		{torrent: 2, peer: 2, seeder: true, age: 31 * time.Minute},
		{torrent: 3, peer: 1, age: 30 * time.Minute},               // exactly at the cutoff: kept
		{torrent: 3, peer: 2, seeder: true, age: 30 * time.Minute}, // likewise
	}
	cutoff := T0.Add(-30 * time.Minute)
	tests := []struct {
		name         string
		purge        bool
		wantPeers    int
		wantTorrents int
		wantStats    map[int]models.TorrentStats
	}{
		{
			name: "keep empty torrents", wantPeers: 4,
			wantStats: map[int]models.TorrentStats{
				1: {Seeders: 1, Leechers: 2, Registered: true},
				2: {Registered: true},
				3: {Seeders: 1, Leechers: 1, Registered: true},
				4: {Registered: true, Snatches: 1}, // emptied by a stop before the reap
			},
		},
		{
			name: "purge empty torrents", purge: true, wantPeers: 4, wantTorrents: 2,
			wantStats: map[int]models.TorrentStats{
				1: {Seeders: 1, Leechers: 2, Registered: true},
				2: {},
				3: {Seeders: 1, Leechers: 1, Registered: true},
				4: {},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := conn(t, open)
			for _, s := range swarm {
				u := Peer(s.peer, models.IPv4, s.seeder)
				u.Time = T0.Add(-s.age)
				announce(t, c, Hash(s.torrent), u, All(0))
			}
			// Torrent 4 had a snatch and was left empty by its only peer.
			u := Peer(1, models.IPv6, true)
			u.Completed = true
			announce(t, c, Hash(4), u, All(0))
			u.Remove = true
			announce(t, c, Hash(4), u, All(0))

			r, err := c.Reap(context.Background(), cutoff, tt.purge)
			require.NoError(t, err)
			assert.Equal(t, tracker.ReapResult{Peers: tt.wantPeers, Torrents: tt.wantTorrents}, r)
			for n, want := range tt.wantStats {
				want.InfoHash = Hash(n)
				assert.Equal(t, want, scrape(t, c, Hash(n)), "torrent %d", n)
			}
			assert.Equal(t, map[models.PeerKey]bool{
				Key(3, models.IPv4): true, Key(4, models.IPv4): true, Key(5, models.IPv4): true,
			}, observe(t, c, Hash(1), false))

			// A second pass at the same cutoff finds nothing more.
			r, err = c.Reap(context.Background(), cutoff, tt.purge)
			require.NoError(t, err)
			assert.Equal(t, tracker.ReapResult{}, r)

			// A reaped peer announcing again is a new entry, and the torrent lives again.
			res := announce(t, c, Hash(2), Peer(1, models.IPv4, false), All(10))
			assert.False(t, res.Prev.Found)
			assert.Equal(t, 1, res.Leechers)
			if tt.purge {
				// Purging everything leaves the pool usable and empty.
				r, err = c.Reap(context.Background(), T0.Add(time.Hour), true)
				require.NoError(t, err)
				assert.Equal(t, 3, r.Torrents) // 1, 3 and the revived 2; 4 went in the first pass
				for n := 1; n <= 4; n++ {
					assert.False(t, scrape(t, c, Hash(n)).Registered, "torrent %d", n)
				}
			}
		})
	}
}

func testReapCancelled(t *testing.T, c tracker.Conn) {
	announce(t, c, Hash(1), Peer(1, models.IPv4, false), All(0))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Reap(ctx, T0.Add(time.Hour), true)
	assert.ErrorIs(t, err, context.Canceled)
}

func testScrape(t *testing.T, c tracker.Conn) {
	announce(t, c, Hash(20), Peer(1, models.IPv4, true), All(0))
	announce(t, c, Hash(20), Peer(2, models.IPv6, false), All(0))
	u := Peer(3, models.IPv4, true)
	u.Completed = true
	announce(t, c, Hash(21), u, All(0))
	files := []models.TorrentStats{
		{InfoHash: Hash(20)}, {InfoHash: Hash(22)}, {InfoHash: Hash(21)},
		{InfoHash: Hash(20), Seeders: 7, Registered: true}, // stale values are overwritten
	}
	require.NoError(t, c.Scrape(context.Background(), files))
	assert.Equal(t, []models.TorrentStats{
		{InfoHash: Hash(20), Seeders: 1, Leechers: 1, Registered: true},
		{InfoHash: Hash(22)},
		{InfoHash: Hash(21), Seeders: 1, Snatches: 1, Registered: true},
		{InfoHash: Hash(20), Seeders: 1, Leechers: 1, Registered: true},
	}, files)
	// A stale entry for an unknown torrent is zeroed.
	files = []models.TorrentStats{{InfoHash: Hash(23), Seeders: 3, Leechers: 2, Snatches: 1, Registered: true}}
	require.NoError(t, c.Scrape(context.Background(), files))
	assert.Equal(t, models.TorrentStats{InfoHash: Hash(23)}, files[0])
	require.NoError(t, c.Scrape(context.Background(), nil))
}

func testConcurrent(t *testing.T, open func(t *testing.T) tracker.Pool) {
	p := open(t)
	t.Cleanup(func() { assert.NoError(t, p.Close()) })
	const workers, rounds, torrents, peers = 8, 150, 3, 12
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Get()
			if !assert.NoError(t, err) {
				return
			}
			defer c.Close()
			for i := 0; i < rounds; i++ {
				n := (w*rounds + i) % peers
				f := models.Family(models.IPv4)
				if i%3 == 0 {
					f = models.IPv6
				}
				u := Peer(n, f, (i/peers)%2 == 0)
				u.Completed = u.Seeder
				u.Remove = i%7 == 0
				ih := Hash(i % torrents)
				sel := All(20)
				var res tracker.AnnounceResult
				if !assert.NoError(t, c.Announce(context.Background(), ih, &u, &sel, &res)) {
					return
				}
				for _, got := range append(res.IPv4Peers, res.IPv6Peers...) {
					assert.NotEqual(t, u.Key.ID, PeerIDOf(got), "handed itself")
				}
				assert.LessOrEqual(t, len(res.IPv4Peers)+len(res.IPv6Peers), 20)
				assert.LessOrEqual(t, res.Seeders+res.Leechers, 2*peers)
				if i%50 == 0 {
					files := []models.TorrentStats{{InfoHash: ih}}
					assert.NoError(t, c.Scrape(context.Background(), files))
					_, err := c.Reap(context.Background(), T0.Add(-time.Hour), i%100 == 0)
					assert.NoError(t, err)
				}
			}
		}()
	}
	wg.Wait()

	// Afterwards each torrent's counts agree with what a full selection sees.
	c, err := p.Get()
	require.NoError(t, err)
	defer c.Close()
	for n := 0; n < torrents; n++ {
		st := scrape(t, c, Hash(n))
		assert.Len(t, observe(t, c, Hash(n), false), st.Seeders+st.Leechers, "torrent %d", n)
		assert.Len(t, observe(t, c, Hash(n), true), st.Leechers, "torrent %d", n)
		assert.LessOrEqual(t, st.Seeders+st.Leechers, 2*peers)
	}
	checkSwarmCounts(t, c, torrents)
}

// checkSwarmCounts checks, when the driver is a tracker.SwarmCounter, that its counts agree
// with the swarms of Hash(0) to Hash(torrents-1), the only ones in the pool.
func checkSwarmCounts(t *testing.T, c tracker.Conn, torrents int) {
	t.Helper()
	sc, ok := c.(tracker.SwarmCounter)
	if !ok {
		return
	}
	var want models.SwarmCounts
	for n := 0; n < torrents; n++ {
		if !scrape(t, c, Hash(n)).Registered {
			continue
		}
		want.Torrents++
		leechers := observe(t, c, Hash(n), true)
		for k := range observe(t, c, Hash(n), false) {
			if leechers[k] {
				want.Leechers[k.Family]++
			} else {
				want.Seeders[k.Family]++
			}
		}
	}
	got, err := sc.SwarmCounts(context.Background())
	require.NoError(t, err)
	assert.Equal(t, want, got, "swarm counts after concurrent use")
}

// RunOperator runs the tests of the optional capabilities an operator uses (TorrentCounter,
// SwarmDropper) against the driver, when it has them.
func RunOperator(t *testing.T, open func(t *testing.T) tracker.Pool) {
	c := conn(t, open)
	ctx := context.Background()
	ih, other := Hash(9001), Hash(9002)
	for i, u := range []tracker.PeerUpdate{Peer(1, models.IPv4, true), Peer(2, models.IPv4, false), Peer(3, models.IPv6, false), Peer(4, models.IPv6, true), Peer(5, models.IPv4, false)} {
		u.Time = time.Unix(1_700_000_000+int64(i), 0)
		announce(t, c, ih, u, tracker.Selection{})
	}
	u := Peer(6, models.IPv4, false)
	u.Time = time.Unix(1_700_000_000, 0)
	announce(t, c, other, u, tracker.Selection{})
	t.Run("TorrentCounts", func(t *testing.T) {
		tc, ok := c.(tracker.TorrentCounter)
		if !ok {
			t.Skip("the driver has no TorrentCounts")
		}
		got, err := tc.TorrentCounts(ctx, ih)
		require.NoError(t, err)
		assert.Equal(t, models.SwarmCounts{Torrents: 1, Seeders: [2]int{1, 1}, Leechers: [2]int{2, 1}}, got)
		got, err = tc.TorrentCounts(ctx, Hash(9003))
		require.NoError(t, err)
		assert.Equal(t, models.SwarmCounts{}, got, "an unknown torrent")
	})
	t.Run("DropSwarm", func(t *testing.T) {
		d, ok := c.(tracker.SwarmDropper)
		if !ok {
			t.Skip("the driver has no DropSwarm")
		}
		n, err := d.DropSwarm(ctx, ih)
		require.NoError(t, err)
		assert.Equal(t, 5, n)
		f := scrape(t, c, ih)
		assert.Equal(t, 0, f.Seeders+f.Leechers)
		assert.False(t, f.Registered, "a public torrent goes with its peers")
		assert.Equal(t, 1, scrape(t, c, other).Leechers, "other swarms stay")
		n, err = d.DropSwarm(ctx, ih)
		require.NoError(t, err)
		assert.Zero(t, n, "dropping it again")
		if sc, ok := c.(tracker.SwarmCounter); ok {
			counts, err := sc.SwarmCounts(ctx)
			require.NoError(t, err)
			assert.Equal(t, 1, counts.Leechers[models.IPv4]+counts.Leechers[models.IPv6]+counts.Seeders[models.IPv4]+counts.Seeders[models.IPv6], "the counters follow")
		}
	})
}
