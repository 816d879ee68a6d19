package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory" // the driver the redis driver is measured against
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

// The benchmark's swarms are those of the memory driver's own BenchmarkAnnounce: 1000
// torrents of 50 peers, a fifth of them seeders, half on IPv6; every announce wants 50 peers
// of both families.
const (
	benchTorrents = 1000
	benchPeers    = 50
	benchWant     = 50
	// benchParallelism multiplies GOMAXPROCS for the parallel runs: a request waiting on its
	// Redis round trip holds no CPU, and a tracker under load has that many requests in
	// flight (each HTTP request is a goroutine), so one goroutine per CPU would measure the
	// round trip's latency rather than the driver's throughput.
	benchParallelism = 4
)

// benchDriver is one tracker driver the benchmark runs, opened from its config.
type benchDriver struct {
	name string
	// params returns the driver's params, or "" and why the driver is not available.
	params func(prefix string) (json.RawMessage, string)
	// driver is the registered name.
	driver string
}

var benchDrivers = []benchDriver{
	{name: "memory", driver: "memory", params: func(string) (json.RawMessage, string) { return nil, "" }},
	{name: "redis", driver: "redis", params: func(prefix string) (json.RawMessage, string) {
		addr := os.Getenv("CHIHAYA_REDIS_ADDR")
		if addr == "" {
			return nil, "CHIHAYA_REDIS_ADDR not set: `eval \"$(bash .ci/redis.sh)\"` first"
		}
		return mustJSON(map[string]any{"addr": addr, "key_prefix": prefix}), ""
	}},
	{name: "redis-cluster", driver: "redis", params: func(prefix string) (json.RawMessage, string) {
		addrs := os.Getenv("CHIHAYA_REDIS_CLUSTER_ADDRS")
		if addrs == "" {
			return nil, "CHIHAYA_REDIS_CLUSTER_ADDRS not set: `eval \"$(bash .ci/redis-cluster.sh)\"` first"
		}
		return mustJSON(map[string]any{"cluster_addrs": strings.Split(addrs, ","), "key_prefix": prefix}), ""
	}},
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// benchUpdate is the update of peer i of the warm swarms.
func benchUpdate(i int, now time.Time) tracker.PeerUpdate {
	f := models.Family(i % 2)
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1024+i))
	if f == models.IPv6 {
		ap = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}), uint16(1024+i))
	}
	return tracker.PeerUpdate{
		Key: models.PeerKey{ID: trackertest.PID(i), Family: f}, AddrPort: ap,
		Seeder: i%5 == 0, Create: true, Time: now,
	}
}

// warm fills c with the benchmark's swarms from a few goroutines (for a network driver the
// round trips dominate).
func warm(ctx context.Context, c tracker.Conn, now time.Time) error {
	const workers = 8
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sel := tracker.Selection{}
			var res tracker.AnnounceResult
			for tn := w; tn < benchTorrents; tn += workers {
				for i := range benchPeers {
					u := benchUpdate(i, now)
					if err := c.Announce(ctx, trackertest.Hash(tn), &u, &sel, &res); err != nil {
						errs[w] = fmt.Errorf("warm torrent %d peer %d: %w", tn, i, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// benchLeechers returns the updates of the warm swarms' leechers: announcing them again
// leaves the swarms as they are, so every iteration does the same work.
func benchLeechers(now time.Time) []tracker.PeerUpdate {
	var ups []tracker.PeerUpdate
	for i := range benchPeers {
		if u := benchUpdate(i, now); !u.Seeder {
			ups = append(ups, u)
		}
	}
	return ups
}

// BenchmarkAnnounce measures announces per second of the redis driver (a standalone Redis,
// and a Redis Cluster) against the memory driver on the same warm swarms, through
// tracker.Conn, one announce at a time and from b.RunParallel. For redis it also reports what
// the servers measure themselves (see reportServerStats): Redis CPU per announce and time per
// script call. Without a Redis (or a cluster) its runs are skipped:
//
//	CHIHAYA_REDIS_ADDR=127.0.0.1:6379 go test -run XXX -bench . -benchmem -count 3 ./tracker/redis/
func BenchmarkAnnounce(b *testing.B) {
	for _, d := range benchDrivers {
		b.Run(d.name, func(b *testing.B) {
			prefix := randomPrefix("bench")
			params, why := d.params(prefix)
			if why != "" {
				b.Skip(why)
			}
			pool, err := tracker.Open(config.DriverConfig{Name: d.driver, Params: params})
			require.NoError(b, err)
			b.Cleanup(func() {
				require.NoError(b, pool.Close())
				if d.driver == "redis" {
					p, err := ParseParams(params)
					require.NoError(b, err)
					require.NoError(b, deletePrefix(p))
				}
			})
			c, err := pool.Get()
			require.NoError(b, err)
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			now := time.Now()
			require.NoError(b, warm(ctx, c, now))
			ups := benchLeechers(now)

			b.Run("sequential", func(b *testing.B) {
				res := tracker.AnnounceResult{
					IPv4Peers: make([]models.Peer, 0, benchWant),
					IPv6Peers: make([]models.Peer, 0, benchWant),
				}
				sel := tracker.Selection{Want: benchWant, IPv4: true, IPv6: true}
				b.ReportAllocs()
				reportServerStats(ctx, b, pool, func() {
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
						if err := c.Announce(ctx, trackertest.Hash(i%benchTorrents), &ups[i%len(ups)], &sel, &res); err != nil {
							b.Fatal(err)
						}
						if n := len(res.IPv4Peers) + len(res.IPv6Peers); n != benchPeers-1 {
							b.Fatalf("handed %d peers, want %d", n, benchPeers-1)
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "announces/s")
				})
			})

			b.Run("parallel", func(b *testing.B) {
				var seq atomic.Uint64
				b.SetParallelism(benchParallelism)
				b.ReportAllocs()
				reportServerStats(ctx, b, pool, func() {
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						res := tracker.AnnounceResult{
							IPv4Peers: make([]models.Peer, 0, benchWant),
							IPv6Peers: make([]models.Peer, 0, benchWant),
						}
						sel := tracker.Selection{Want: benchWant, IPv4: true, IPv6: true}
						i := int(seq.Add(1)) * 7919
						for pb.Next() {
							i++
							res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
							if err := c.Announce(ctx, trackertest.Hash(i%benchTorrents), &ups[i%len(ups)], &sel, &res); err != nil {
								b.Error(err)
								return
							}
						}
					})
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "announces/s")
				})
			})
		})
	}
}
