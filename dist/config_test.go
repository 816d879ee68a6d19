package dist

import (
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	_ "github.com/chihaya/chihaya" // registers the drivers the chihaya binary has
	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/backend/gazelle"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/redis"
)

// loadExample loads dist/config/NAME with config.Load, as `chihaya -config` does, and opens its
// drivers' params as the tracker would, as far as that needs no server: the memory and redis
// tracker drivers are opened (redis connects only at its first command), the noop backend too,
// and the gazelle backend's params are parsed (opening it pings its database).
func loadExample(t *testing.T, name string) *config.Config {
	t.Helper()
	cfg, err := config.Load(filepath.Join("config", name))
	require.NoError(t, err)

	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err, "tracker driver %q", cfg.Tracker.Name)
	require.NoError(t, pool.Close())

	if cfg.Backend.Name == "gazelle" {
		_, err := gazelle.ParseParams(cfg.Backend.Params)
		require.NoError(t, err, "gazelle params")
	} else {
		conn, err := backend.Open(cfg.Backend)
		require.NoError(t, err, "backend driver %q", cfg.Backend.Name)
		require.NoError(t, conn.Close(t.Context()))
	}
	return cfg
}

// loopbackOnly reports whether addr ("host:port") listens on loopback only.
func loopbackOnly(t *testing.T, addr string) bool {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	require.NoError(t, err, addr)
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// TestExampleConfigs loads every example configuration and checks what each is an example of.
func TestExampleConfigs(t *testing.T) {
	t.Run("public.json", func(t *testing.T) {
		cfg := loadExample(t, "public.json")
		assert.False(t, cfg.PrivateEnabled)
		assert.Equal(t, "memory", cfg.Tracker.Name)
		assertPublicSafety(t, cfg)
		assert.True(t, cfg.StatsEnabled)
		assert.True(t, loopbackOnly(t, cfg.StatsAddr), "metrics are not served on the public address: stats_addr %q", cfg.StatsAddr)
		assert.False(t, cfg.PprofEnabled)
	})
	t.Run("container.json", func(t *testing.T) {
		cfg := loadExample(t, "container.json")
		assert.False(t, cfg.PrivateEnabled)
		assertPublicSafety(t, cfg)
		// In a container, loopback is the container's own: metrics listen on a port of their own,
		// published or not by whoever runs the container.
		assert.NotEmpty(t, cfg.StatsAddr, "metrics on a port of their own")
		assert.NotEqual(t, cfg.Addr, cfg.StatsAddr)
		assert.False(t, cfg.PprofEnabled)
	})
	t.Run("gazelle.json", func(t *testing.T) {
		cfg := loadExample(t, "gazelle.json")
		assert.True(t, cfg.PrivateEnabled)
		assert.Equal(t, "gazelle", cfg.Backend.Name)
		assert.NotEmpty(t, cfg.SitePassword)
		assert.NotEmpty(t, cfg.ReportPassword)
		assert.NotEqual(t, cfg.SitePassword, cfg.ReportPassword)
		assert.True(t, loopbackOnly(t, cfg.StatsAddr), "stats_addr %q", cfg.StatsAddr)
		p, err := gazelle.ParseParams(cfg.Backend.Params)
		require.NoError(t, err)
		assert.Equal(t, cfg.SitePassword, p.SitePassword, "the expiry callback's key is the site's TRACKER_SECRET, as site_password")
	})
	t.Run("redis pair", func(t *testing.T) {
		a, b := loadExample(t, "redis-a.json"), loadExample(t, "redis-b.json")
		for _, cfg := range []*config.Config{a, b} {
			assert.Equal(t, "redis", cfg.Tracker.Name)
			assertPublicSafety(t, cfg)
		}
		pa, err := redis.ParseParams(a.Tracker.Params)
		require.NoError(t, err)
		pb, err := redis.ParseParams(b.Tracker.Params)
		require.NoError(t, err)
		assert.Equal(t, pa, pb, "both instances use the same Redis, under the same key prefix")
		// The pair may run on one host: no address in common.
		assert.NotEqual(t, a.Addr, b.Addr)
		assert.NotEqual(t, a.UDPAddr, b.UDPAddr)
		assert.NotEqual(t, a.StatsAddr, b.StatsAddr)
		ta, tb := a.Tracker, b.Tracker
		ta.Params, tb.Params = nil, nil
		assert.Equal(t, ta, tb)
	})
}

// assertPublicSafety checks the knobs of README's "Running a public tracker safely": rate limits
// on, and, for the memory driver, bounded torrents and peers.
func assertPublicSafety(t *testing.T, cfg *config.Config) {
	t.Helper()
	assert.Positive(t, cfg.RateLimit.AnnounceRate, "rate_limit.announce_rate")
	assert.Positive(t, cfg.RateLimit.ScrapeRate, "rate_limit.scrape_rate")
	assert.GreaterOrEqual(t, cfg.RateLimit.Burst(cfg.RateLimit.AnnounceRate, cfg.RateLimit.AnnounceBurst), 100,
		"an announce burst that lets a client start its torrents")
	assert.False(t, cfg.AllowIPSpoofing, "allow_ip_spoofing lets clients point swarms at third parties")
	if cfg.Tracker.Name != "memory" {
		return
	}
	var p memory.Params
	require.NoError(t, json.Unmarshal(cfg.Tracker.Params, &p))
	assert.Positive(t, p.MaxTorrents, "memory max_torrents")
	assert.Positive(t, p.MaxPeers, "memory max_peers")
	// README: a peer costs about 43 bytes of RSS and a torrent about 100; stay within 2 GB.
	assert.LessOrEqual(t, p.MaxPeers*43+p.MaxTorrents*100, int64(2<<30), "the limits bound the memory")
}
