package trackertest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// testPrefer checks Selection.Prefer: peers inside the requester's subnet are handed out
// first, then the others; without it the subnet plays no part.
func testPrefer(t *testing.T, c tracker.Conn) {
	ih := Hash(17)
	const inside, outside = 6, 30
	at := func(n int, subnet byte) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, subnet, byte(n)}), uint16(6000+n))
	}
	at6 := func(n int, subnet byte) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, subnet, 15: byte(n)}), uint16(7000+n))
	}
	for i := 0; i < inside+outside; i++ {
		subnet := byte(2)
		if i < inside {
			subnet = 1
		}
		for _, f := range []models.Family{models.IPv4, models.IPv6} {
			u := Peer(i, f, i%2 == 0)
			u.AddrPort = at(i, subnet)
			if f == models.IPv6 {
				u.AddrPort = at6(i, subnet)
			}
			announce(t, c, ih, u, All(0))
		}
	}
	tests := []struct {
		name       string
		prefer     netip.Prefix
		family     models.Family
		want       int
		wantInside int // handed peers inside the preferred subnet
	}{
		{name: "IPv4 /24, want fewer than inside", prefer: netip.MustParsePrefix("192.0.1.0/24"), want: 4, wantInside: 4},
		{name: "IPv4 /24, want more than inside", prefer: netip.MustParsePrefix("192.0.1.0/24"), want: 20, wantInside: inside},
		{name: "IPv4 /23, a partial byte", prefer: netip.MustParsePrefix("192.0.0.0/23"), want: 10, wantInside: inside},
		{name: "IPv6 /48", prefer: netip.MustParsePrefix("2001:db8:1::/48"), family: models.IPv6, want: 6, wantInside: 6},
		{name: "IPv6 /47, a partial byte", prefer: netip.MustParsePrefix("2001:db8::/47"), family: models.IPv6, want: 3, wantInside: 3},
		{name: "IPv4 prefix, IPv6 peers", prefer: netip.MustParsePrefix("192.0.1.0/24"), family: models.IPv6, want: 8, wantInside: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for round := 0; round < 10; round++ {
				u := Peer(1000, tt.family, false)
				u.Remove = true
				sel := tracker.Selection{Want: tt.want, IPv4: tt.family == models.IPv4, IPv6: tt.family == models.IPv6, Prefer: tt.prefer}
				res := announce(t, c, ih, u, sel)
				require.Len(t, keySet(t, handed(t, &res)), tt.want)
				n := 0
				for _, p := range append(res.IPv4Peers, res.IPv6Peers...) {
					if tt.prefer.Contains(p.AddrPort.Addr()) {
						n++
					}
				}
				assert.Equal(t, tt.wantInside, n, "round %d: peers inside the preferred subnet", round)
			}
		})
	}
}

// testSwarmCounts checks the optional tracker.SwarmCounter against what the swarms hold, through
// creation, moves, stops, reaping and purging.
func testSwarmCounts(t *testing.T, c tracker.Conn) {
	sc, ok := c.(tracker.SwarmCounter)
	if !ok {
		t.Skip("the driver is no tracker.SwarmCounter")
	}
	ctx := context.Background()
	counts := func() models.SwarmCounts {
		t.Helper()
		got, err := sc.SwarmCounts(ctx)
		require.NoError(t, err)
		return got
	}
	assert.Equal(t, models.SwarmCounts{}, counts())

	announce(t, c, Hash(1), Peer(1, models.IPv4, true), All(0))
	announce(t, c, Hash(1), Peer(1, models.IPv6, true), All(0))
	announce(t, c, Hash(1), Peer(2, models.IPv4, false), All(0))
	old := Peer(3, models.IPv6, false)
	old.Time = T0.Add(-time.Hour)
	announce(t, c, Hash(2), old, All(0))
	assert.Equal(t, models.SwarmCounts{Torrents: 2, Seeders: [2]int{1, 1}, Leechers: [2]int{1, 1}}, counts())

	// A leecher completes; a seeder turns leecher; re-announcing changes nothing.
	announce(t, c, Hash(1), Peer(2, models.IPv4, true), All(0))
	announce(t, c, Hash(1), Peer(1, models.IPv6, false), All(0))
	announce(t, c, Hash(1), Peer(1, models.IPv6, false), All(0))
	assert.Equal(t, models.SwarmCounts{Torrents: 2, Seeders: [2]int{2, 0}, Leechers: [2]int{0, 2}}, counts())

	// A stop removes the entry; a stop of an unknown peer of an unknown torrent creates nothing.
	stop := Peer(1, models.IPv4, true)
	stop.Remove = true
	announce(t, c, Hash(1), stop, All(0))
	announce(t, c, Hash(9), stop, All(0))
	assert.Equal(t, models.SwarmCounts{Torrents: 2, Seeders: [2]int{1, 0}, Leechers: [2]int{0, 2}}, counts())

	// Reaping without purge keeps the emptied torrent; purging drops it.
	r, err := c.Reap(ctx, T0.Add(-time.Minute), false)
	require.NoError(t, err)
	assert.Equal(t, 1, r.Peers)
	assert.Equal(t, models.SwarmCounts{Torrents: 2, Seeders: [2]int{1, 0}, Leechers: [2]int{0, 1}}, counts())
	_, err = c.Reap(ctx, T0.Add(-time.Minute), true)
	require.NoError(t, err)
	assert.Equal(t, models.SwarmCounts{Torrents: 1, Seeders: [2]int{1, 0}, Leechers: [2]int{0, 1}}, counts())
	_, err = c.Reap(ctx, T0.Add(time.Minute), true)
	require.NoError(t, err)
	assert.Equal(t, models.SwarmCounts{}, counts())
}
