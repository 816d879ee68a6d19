package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

// redisAddr returns the test server's address, skipping (or, with CHIHAYA_REQUIRE_REDIS=1,
// failing) the test when there is none.
func redisAddr(t *testing.T) string {
	t.Helper()
	return serverEnv(t, "CHIHAYA_REDIS_ADDR", "CHIHAYA_REQUIRE_REDIS",
		"Redis not available: run `bash .ci/run`, or start redis-server on 127.0.0.1 and set CHIHAYA_REDIS_ADDR")
}

// serverEnv returns the environment variable name that points the tests at a server, skipping
// the test when it is unset (failing it with msg when the variable require is "1", as in CI).
func serverEnv(tb testing.TB, name, require, msg string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv(require) == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return v
}

// openTest opens a pool on its own random key prefix and deletes that prefix's keys at cleanup.
func openTest(t *testing.T) tracker.Pool {
	addr := redisAddr(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	p := DefaultParams()
	p.Addr = addr
	p.KeyPrefix = "chihaya-test:" + hex.EncodeToString(b[:]) + ":"
	pool := NewPool(p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, pool.client.Ping(ctx).Err(), "redis at %s", addr)
	t.Cleanup(func() { cleanup(t, addr, p.KeyPrefix) })
	return pool
}

func cleanup(t *testing.T, addr, prefix string) {
	p := DefaultParams()
	p.Addr = addr
	pool := NewPool(p)
	defer pool.Close()
	ctx := context.Background()
	var keys []string
	iter := pool.client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if !assert.NoError(t, iter.Err()) || len(keys) == 0 {
		return
	}
	assert.NoError(t, pool.client.Del(ctx, keys...).Err())
}

func TestConformance(t *testing.T) {
	redisAddr(t)
	trackertest.Run(t, openTest)
}

// TestConformanceIndexOutsideScript runs the suite with the global index kept outside the
// scripts, as in cluster mode (where it lives in another slot), against the standalone server.
func TestConformanceIndexOutsideScript(t *testing.T) {
	redisAddr(t)
	trackertest.Run(t, func(t *testing.T) tracker.Pool {
		p := openTest(t).(*Pool)
		p.cluster = true
		require.Len(t, p.torrentKeys(models.InfoHash{}), nTorrentKeys)
		return p
	})
}

func TestRegisteredAsRedis(t *testing.T) {
	assert.Contains(t, tracker.Drivers(), "redis")
	pool, err := tracker.Open(config.DriverConfig{Name: "redis", Params: json.RawMessage(`{"addr":"127.0.0.1:1"}`)})
	require.NoError(t, err)
	require.NoError(t, pool.Close())
}

func TestParams(t *testing.T) {
	tests := []struct {
		raw     string
		wantErr string
	}{
		{raw: ``},
		{raw: `null`},
		{raw: `{}`},
		{raw: `{"addr":"10.0.0.1:6380","username":"u","password":"p","db":2,"pool_size":20,"dial_timeout":"1s","read_timeout":"2s","write_timeout":"3s","key_prefix":"x:"}`},
		{raw: `{"cluster_addrs":["a:1","b:2"],"addr":""}`},
		{raw: `{"adr":"x"}`, wantErr: `key "adr": unknown key (known keys: "addr", `},
		{raw: `{"db":"two"}`, wantErr: `key "db": want int, got JSON string`},
		{raw: `{"db":-1}`, wantErr: `key "db"`},
		{raw: `{"pool_size":-1}`, wantErr: `key "pool_size"`},
		{raw: `{"dial_timeout":"-1s"}`, wantErr: `key "dial_timeout"`},
		{raw: `{"read_timeout":"soon"}`, wantErr: `read_timeout`},
		{raw: `{"addr":""}`, wantErr: `key "addr"`},
		{raw: `{"key_prefix":"{x}"}`, wantErr: `key "key_prefix"`},
		{raw: `{"cluster_addrs":[""]}`, wantErr: `key "cluster_addrs"`},
		{raw: `{"site_cache_ttl":"0s"}`},
		{raw: `{"site_cache_ttl":"-1s"}`, wantErr: `key "site_cache_ttl"`},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			p, err := ParseParams(json.RawMessage(tt.raw))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			if strings.Contains(tt.raw, "10.0.0.1") {
				assert.Equal(t, Params{
					Addr: "10.0.0.1:6380", Username: "u", Password: "p", DB: 2, PoolSize: 20,
					DialTimeout: config.Duration{Duration: time.Second}, ReadTimeout: config.Duration{Duration: 2 * time.Second},
					WriteTimeout: config.Duration{Duration: 3 * time.Second}, KeyPrefix: "x:",
					SiteCacheTTL: config.Duration{Duration: 2 * time.Second},
				}, p)
			}
		})
	}
}

// TestUnreachable checks that a redis failure is an error with context, and that ctx
// deadlines are honoured.
func TestUnreachable(t *testing.T) {
	p := DefaultParams()
	p.Addr = "127.0.0.1:1" // nothing listens there
	pool := NewPool(p)
	defer pool.Close()
	c, err := pool.Get()
	require.NoError(t, err)
	// Each operation gets a deadline of its own: an operation that finds its context already
	// ended never reaches Redis, and is not a Redis error.
	ctx := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	u := tracker.PeerUpdate{Create: true, Time: time.Now()}
	sel := tracker.Selection{Want: 10, IPv4: true}
	var res tracker.AnnounceResult
	err = c.Announce(ctx(), models.InfoHash{1}, &u, &sel, &res)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "redis: announce")
	err = c.Scrape(ctx(), []models.TorrentStats{{}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "redis: scrape")
	_, err = c.Reap(ctx(), time.Now(), true)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "redis: reap")
	_, err = pool.conn.User(ctx(), "passkey")
	require.Error(t, err)
	assert.NotErrorIs(t, err, models.ErrPasskeyNotFound)
	errorsOf := func(op string) float64 {
		var m dto.Metric
		require.NoError(t, pool.metrics.errors.WithLabelValues(op).Write(&m))
		return m.GetCounter().GetValue()
	}
	for op, want := range map[string]float64{opAnnounce: 1, opScrape: 1, opReap: 1, opSite: 1, opCounts: 0} {
		assert.Equal(t, want, errorsOf(op), "chihaya_redis_errors_total{op=%q}", op)
	}

	// A cancelled request is the caller's doing, not a Redis error.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = c.Announce(cctx, models.InfoHash{1}, &u, &sel, &res)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, float64(1), errorsOf(opAnnounce))
}

func TestKeysShareSlot(t *testing.T) {
	pool := NewPool(DefaultParams())
	defer pool.Close()
	keys := pool.torrentKeys(models.InfoHash{0xab})
	require.Len(t, keys, nAllKeys)
	for _, k := range keys[:nTorrentKeys] {
		assert.Contains(t, k, "{ab00000000000000000000000000000000000000}:")
	}
	assert.Equal(t, []string{"chihaya:torrents", "chihaya:counts", "chihaya:sessions"}, keys[nTorrentKeys:])
	for _, k := range []string{pool.users, pool.whitelist, pool.reasons, pool.reasonTimes, pool.registered} {
		assert.True(t, strings.HasPrefix(k, "chihaya:{site}:"), k)
	}
}

// TestDeadline checks that an expired ctx fails the call instead of waiting on the server.
func TestDeadline(t *testing.T) {
	redisAddr(t)
	c, err := openTest(t).Get()
	require.NoError(t, err)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	u := tracker.PeerUpdate{Create: true, Time: time.Now()}
	sel := tracker.Selection{Want: 10, IPv4: true}
	var res tracker.AnnounceResult
	err = c.Announce(ctx, models.InfoHash{2}, &u, &sel, &res)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	err = c.Scrape(ctx, []models.TorrentStats{{}})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	_, err = c.Reap(ctx, time.Now(), true)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
