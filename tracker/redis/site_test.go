package redis

import (
	"context"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

// roundTrips counts the round trips a client makes: a command or a pipeline each.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (r *roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// sharedPools opens two pools on one key prefix, as two tracker processes would be; the first
// has a site cache of ttl and a clock the test moves.
func sharedPools(t *testing.T, ttl time.Duration) (cached, other *Pool, clock *time.Time) {
	first := openTest(t).(*Pool)
	t.Cleanup(func() { first.Close() })
	p := DefaultParams()
	p.Addr, p.KeyPrefix, p.SiteCacheTTL = redisAddr(t), first.prefix, config.Duration{Duration: ttl}
	cached = NewPool(p)
	t.Cleanup(func() { cached.Close() })
	now := time.Unix(1_700_000_000, 0)
	cached.now = func() time.Time { return now }
	return cached, first, &now
}

// TestSiteCache checks what another process's site changes look like through the cache: unseen
// until the entry expires, while this process's own changes show at once.
func TestSiteCache(t *testing.T) {
	redisAddr(t)
	ctx := context.Background()
	u := models.User{ID: 5, Passkey: "eveeveeveeveeveeveeveeveeveeve05", CanLeech: true}
	var qb models.PeerID
	copy(qb[:], "-qB4620-000000000000")

	tests := []struct {
		name string
		ttl  time.Duration
	}{
		{name: "cached", ttl: 2 * time.Second},
		{name: "no cache", ttl: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cached, other, clock := sharedPools(t, tt.ttl)
			_, err := cached.User(ctx, u.Passkey)
			require.ErrorIs(t, err, models.ErrPasskeyNotFound)
			ok, err := cached.Whitelisted(ctx, qb)
			require.NoError(t, err)
			require.True(t, ok)

			// Another process adds the user and a whitelist that leaves qBittorrent out.
			require.NoError(t, other.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddUser, User: u}))
			require.NoError(t, other.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddWhitelist, Prefix: "-TR"}))
			_, err = cached.User(ctx, u.Passkey)
			ok, werr := cached.Whitelisted(ctx, qb)
			require.NoError(t, werr)
			if tt.ttl > 0 {
				assert.ErrorIs(t, err, models.ErrPasskeyNotFound, "unknown passkeys are cached too")
				assert.True(t, ok, "the whitelist is cached")
				*clock = clock.Add(tt.ttl)
			}
			got, err := cached.User(ctx, u.Passkey)
			require.NoError(t, err)
			assert.Equal(t, u, got)
			ok, err = cached.Whitelisted(ctx, qb)
			require.NoError(t, err)
			assert.False(t, ok)

			// This process's own changes show at once.
			require.NoError(t, cached.UpdateSite(ctx, &models.SiteUpdate{Action: models.UpdateUser, User: models.User{Passkey: u.Passkey}}))
			got, err = cached.User(ctx, u.Passkey)
			require.NoError(t, err)
			assert.False(t, got.CanLeech)
			require.NoError(t, cached.UpdateSite(ctx, &models.SiteUpdate{Action: models.RemoveWhitelist, Prefix: "-TR"}))
			ok, err = cached.Whitelisted(ctx, qb)
			require.NoError(t, err)
			assert.True(t, ok)
			require.NoError(t, cached.ReplaceSite(ctx, &models.SiteState{}))
			_, err = cached.User(ctx, u.Passkey)
			assert.ErrorIs(t, err, models.ErrPasskeyNotFound)
		})
	}
}

// TestSiteCacheBounded checks that made-up passkeys cannot grow the cache without bound.
func TestSiteCacheBounded(t *testing.T) {
	var c siteCache
	c.init(time.Minute)
	c.maxUsers = 100
	for i := 0; i < 250; i++ {
		c.store(0, 0, strconv.Itoa(i), &cachedUser{found: true}, nil)
		assert.LessOrEqual(t, len(c.users), c.maxUsers)
	}
	got, ok := c.user("249", 1)
	assert.True(t, ok && got.found, "the latest entry is cached")
	_, ok = c.user("249", int64(time.Minute))
	assert.False(t, ok, "expired")
}

// TestPrivateAnnounceRoundTrips counts the round trips of a private announce through the core:
// one script call once the user and whitelist are cached, one more pipelined lookup when not.
func TestPrivateAnnounceRoundTrips(t *testing.T) {
	redisAddr(t)
	ctx := context.Background()
	pool := openTest(t).(*Pool)
	defer pool.Close()
	cfg := config.Default()
	cfg.PrivateEnabled = true
	tr, err := tracker.New(&cfg, pool, nil, nil)
	require.NoError(t, err)
	u := models.User{ID: 3, Passkey: "carolcarolcarolcarolcarolcarol03", CanLeech: true}
	ih := trackertest.Hash(7)
	require.NoError(t, tr.ReplaceSite(ctx, &models.SiteState{
		Users:    []models.User{u},
		Torrents: []models.Torrent{{ID: 70, InfoHash: ih}},
	}))
	var rt roundTrips
	pool.client.AddHook(&rt)

	tests := []struct {
		name string
		want int64
	}{
		{name: "cold: user and whitelist in one pipeline, then the script", want: 2},
		{name: "warm: the script only", want: 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &models.Announce{
				InfoHash: ih, PeerID: trackertest.PID(i), Passkey: u.Passkey, Left: 1, NumWant: 50, Compact: true,
				Endpoint: netip.MustParseAddrPort("127.0.0.3:6881"),
			}
			before := rt.n.Load()
			var w discardWriter
			require.NoError(t, tr.HandleAnnounce(ctx, a, &w))
			assert.Equal(t, 1, w.n)
			assert.Equal(t, tt.want, rt.n.Load()-before)
		})
	}
}
