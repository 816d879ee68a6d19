package memory

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// TestLimits runs a script of announces against a pool with max_torrents 2 and max_peers 3:
// past a limit, what would add a torrent or a peer is refused, while peers already there keep
// announcing, and whatever leaves (stopped, reaped, dropped) makes room again.
func TestLimits(t *testing.T) {
	type step struct {
		what   string
		torr   int // torrent number
		peer   int
		remove bool
		reap   bool // reap everyone instead of announcing
		want   error
		// torrents and peers the pool counts after the step
		torrents, peers int64
	}
	steps := []step{
		{what: "first torrent, first peer", torr: 1, peer: 1, torrents: 1, peers: 1},
		{what: "second peer", torr: 1, peer: 2, torrents: 1, peers: 2},
		{what: "second torrent", torr: 2, peer: 3, torrents: 2, peers: 3},
		{what: "a third torrent is refused", torr: 3, peer: 4, want: models.ErrTorrentLimit, torrents: 2, peers: 3},
		{what: "a fourth peer is refused", torr: 1, peer: 4, want: models.ErrPeerLimit, torrents: 2, peers: 3},
		{what: "a peer already there announces", torr: 1, peer: 1, torrents: 2, peers: 3},
		{what: "a stop makes room", torr: 1, peer: 2, remove: true, torrents: 2, peers: 2},
		{what: "stopping an unknown peer changes nothing", torr: 1, peer: 9, remove: true, torrents: 2, peers: 2},
		{what: "the fourth peer now fits", torr: 1, peer: 4, torrents: 2, peers: 3},
		{what: "reaping everyone empties the pool", reap: true, torrents: 0, peers: 0},
		{what: "a new torrent after the reap", torr: 3, peer: 5, torrents: 1, peers: 1},
	}
	p := NewPool(4)
	p.SetLimits(2, 3)
	u := p.shards[0].usage
	require.NotNil(t, u)
	for _, st := range steps {
		t.Run(st.what, func(t *testing.T) {
			if st.reap {
				_, err := p.Reap(context.Background(), t0.Add(time.Hour), true)
				require.NoError(t, err)
			} else {
				up := peer(st.peer, models.IPv4, false)
				up.Remove = st.remove
				var res tracker.AnnounceResult
				err := p.Announce(context.Background(), hash(st.torr), &up, &tracker.Selection{}, &res)
				if st.want != nil {
					assert.ErrorIs(t, err, st.want)
				} else {
					assert.NoError(t, err)
				}
			}
			assert.Equal(t, st.torrents, u.torrents.Load(), "torrents counted")
			assert.Equal(t, st.peers, u.peers.Load(), "peers counted")
			c, err := p.SwarmCounts(context.Background())
			require.NoError(t, err)
			assert.Equal(t, st.torrents, int64(c.Torrents), "torrents held")
		})
	}
}

// TestSetLimitsCountsWhatIsThere: limits set on a pool that already holds swarms start from
// what it holds.
func TestSetLimitsCountsWhatIsThere(t *testing.T) {
	p := NewPool(2)
	for i := 1; i <= 3; i++ {
		up := peer(i, models.IPv4, false)
		announce(t, p, hash(i%2), up, tracker.Selection{})
	}
	p.SetLimits(0, 3)
	up := peer(4, models.IPv4, false)
	var res tracker.AnnounceResult
	assert.ErrorIs(t, p.Announce(context.Background(), hash(1), &up, &tracker.Selection{}, &res), models.ErrPeerLimit)
	p.SetLimits(0, 0)
	assert.Nil(t, p.shards[0].usage, "no limits, no counting")
	assert.NoError(t, p.Announce(context.Background(), hash(1), &up, &tracker.Selection{}, &res))
}
