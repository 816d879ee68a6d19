package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

// clusterAddrs returns the seed addresses of the test cluster, skipping (or, with
// CHIHAYA_REQUIRE_REDIS_CLUSTER=1, failing) the test when there is none.
func clusterAddrs(tb testing.TB) []string {
	tb.Helper()
	v := serverEnv(tb, "CHIHAYA_REDIS_CLUSTER_ADDRS", "CHIHAYA_REQUIRE_REDIS_CLUSTER",
		"Redis Cluster not available: run `bash .ci/run`, or `eval \"$(bash .ci/redis-cluster.sh)\"` (sets CHIHAYA_REDIS_CLUSTER_ADDRS)")
	return strings.Split(v, ",")
}

// randomPrefix returns a key prefix of its own for one test.
func randomPrefix(what string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "chihaya-" + what + ":" + hex.EncodeToString(b[:]) + ":"
}

// openClusterPrefix opens a cluster pool seeded with addrs on prefix, checks that it reaches
// the cluster, and closes it at cleanup.
func openClusterPrefix(tb testing.TB, addrs []string, prefix string) *Pool {
	tb.Helper()
	p := DefaultParams()
	p.ClusterAddrs = addrs
	p.KeyPrefix = prefix
	pool := NewPool(p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(tb, pool.Client().Ping(ctx).Err(), "redis cluster at %v", addrs)
	return pool
}

// openCluster opens a cluster pool on a random key prefix, whose keys are deleted from every
// master at cleanup. The caller (or the conformance suite) closes the pool.
func openCluster(t *testing.T) tracker.Pool {
	addrs := clusterAddrs(t)
	prefix := randomPrefix("test")
	pool := openClusterPrefix(t, addrs, prefix)
	t.Cleanup(func() { assert.NoError(t, deletePrefix(Params{ClusterAddrs: addrs, KeyPrefix: prefix})) })
	return pool
}

// deletePrefix deletes the keys starting with p.KeyPrefix from the Redis that p names, or
// from every master of its cluster. A key at a time: in a cluster the keys lie in many slots,
// and a multi-key DEL must not cross slots even on one node.
func deletePrefix(p Params) error {
	pool := NewPool(p)
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	del := func(ctx context.Context, node *goredis.Client) error {
		keys, err := scanNode(ctx, node, p.KeyPrefix)
		if err != nil || len(keys) == 0 {
			return err
		}
		_, err = node.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
			for _, k := range keys {
				pipe.Del(ctx, k)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("delete on %s: %w", node.Options().Addr, err)
		}
		return nil
	}
	var err error
	switch c := pool.Client().(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, del)
	case *goredis.Client:
		err = del(ctx, c)
	default:
		err = fmt.Errorf("unexpected client %T", c)
	}
	if err != nil {
		return fmt.Errorf("cleanup of %q: %w", p.KeyPrefix, err)
	}
	return nil
}

// scanNode returns the keys starting with prefix held by one node.
func scanNode(ctx context.Context, node *goredis.Client, prefix string) ([]string, error) {
	var keys []string
	iter := node.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan %s: %w", node.Options().Addr, err)
	}
	return keys, nil
}

// TestClusterConformance runs the whole driver conformance suite against Redis Cluster
// through the cluster_addrs param.
func TestClusterConformance(t *testing.T) {
	clusterAddrs(t)
	trackertest.Run(t, openCluster)
}

// TestClusterOpenFromParams checks that cluster_addrs in a config reaches a cluster client
// that answers commands.
func TestClusterOpenFromParams(t *testing.T) {
	addrs := clusterAddrs(t)
	raw := fmt.Sprintf(`{"addr": "", "cluster_addrs": ["%s"], "key_prefix": %q}`, strings.Join(addrs, `","`), randomPrefix("params"))
	tp, err := Driver{}.New([]byte(raw))
	require.NoError(t, err)
	pool := tp.(*Pool)
	defer pool.Close()
	_, ok := pool.Client().(*goredis.ClusterClient)
	require.True(t, ok, "client is a %T", pool.Client())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	files := []models.TorrentStats{{InfoHash: trackertest.Hash(1)}}
	require.NoError(t, pool.Scrape(ctx, files))
	assert.False(t, files[0].Registered)
}

// tagged matches a torrent's key after the prefix: the hash tag of the hex info hash, then the
// kind of key.
var tagged = regexp.MustCompile(`^\{([0-9a-f]{40})\}:(\w+)$`)

// TestClusterKeysSlotPerTorrent announces torrents through a pool that knows one node only,
// then finds where their keys are: every key of a torrent carries its hash tag and lies in the
// tag's slot on the one master that owns that slot, while the torrents spread over every
// master. A second pool, seeded with another node, sees the same swarms.
func TestClusterKeysSlotPerTorrent(t *testing.T) {
	addrs := clusterAddrs(t)
	prefix := randomPrefix("slots")
	t.Cleanup(func() { assert.NoError(t, deletePrefix(Params{ClusterAddrs: addrs, KeyPrefix: prefix})) })
	writer := openClusterPrefix(t, addrs[:1], prefix)
	defer writer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Each torrent: one seeder and two leechers, so that it has seeders, leechers, peers and
	// torrent keys.
	const torrents, peers = 64, 3
	now := time.Now()
	for n := range torrents {
		for i := range peers {
			u := tracker.PeerUpdate{
				Key:      models.PeerKey{ID: trackertest.PID(i), Family: models.IPv4},
				AddrPort: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)}), uint16(6881+i)),
				Seeder:   i == 0,
				Create:   true,
				Time:     now,
			}
			sel := tracker.Selection{Want: 50, IPv4: true}
			var res tracker.AnnounceResult
			require.NoError(t, writer.Announce(ctx, trackertest.Hash(n), &u, &sel, &res), "torrent %d peer %d", n, i)
			require.Equal(t, i, len(res.IPv4Peers)+len(res.IPv6Peers), "torrent %d peer %d: peers handed", n, i)
		}
	}

	cc, ok := writer.Client().(*goredis.ClusterClient)
	require.True(t, ok, "client is a %T", writer.Client())

	// Which master owns which slot, from the cluster itself.
	slots, err := cc.ClusterSlots(ctx).Result()
	require.NoError(t, err)
	owner := func(slot int64) string {
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				return s.Nodes[0].Addr
			}
		}
		return ""
	}

	// Where the keys are: every master's own keyspace, scanned directly.
	var mu sync.Mutex
	held := map[string][]string{} // master address -> keys
	require.NoError(t, cc.ForEachMaster(ctx, func(ctx context.Context, node *goredis.Client) error {
		keys, err := scanNode(ctx, node, prefix)
		mu.Lock()
		defer mu.Unlock()
		held[node.Options().Addr] = keys
		return err
	}))
	require.GreaterOrEqual(t, len(held), 2, "a cluster needs several masters for this test")

	type where struct {
		nodes, slots map[string]bool
		kinds        []string
	}
	byTorrent := map[string]*where{}
	var others []string // keys of no torrent: the global index and the like
	for node, keys := range held {
		for _, k := range keys {
			rest := strings.TrimPrefix(k, prefix)
			m := tagged.FindStringSubmatch(rest)
			if m == nil {
				others = append(others, rest)
				continue
			}
			slot, err := cc.ClusterKeySlot(ctx, k).Result()
			require.NoError(t, err)
			tagSlot, err := cc.ClusterKeySlot(ctx, "{"+m[1]+"}").Result()
			require.NoError(t, err)
			assert.Equal(t, tagSlot, slot, "key %q is not in its hash tag's slot", k)
			assert.Equal(t, owner(slot), node, "key %q of slot %d on a master that does not own it", k, slot)
			w := byTorrent[m[1]]
			if w == nil {
				w = &where{nodes: map[string]bool{}, slots: map[string]bool{}}
				byTorrent[m[1]] = w
			}
			w.nodes[node] = true
			w.slots[fmt.Sprint(slot)] = true
			w.kinds = append(w.kinds, m[2])
		}
	}
	assert.Contains(t, others, "torrents", "the global torrent index")
	for _, k := range others {
		for n := range torrents {
			ih := trackertest.Hash(n)
			assert.NotContains(t, k, hex.EncodeToString(ih[:]), "key %q names torrent %d without its hash tag", prefix+k, n)
		}
	}

	used := map[string]bool{}
	require.Len(t, byTorrent, torrents, "torrents with keys")
	for n := range torrents {
		ih := trackertest.Hash(n)
		w := byTorrent[hex.EncodeToString(ih[:])]
		require.NotNil(t, w, "torrent %d has no keys", n)
		assert.Len(t, w.nodes, 1, "torrent %d: keys on several masters: %v", n, w.nodes)
		assert.Len(t, w.slots, 1, "torrent %d: keys in several slots: %v", n, w.slots)
		assert.Subset(t, w.kinds, []string{"s", "l", "p", "t"}, "torrent %d: seeders, leechers, peers and torrent keys", n)
		for node := range w.nodes {
			used[node] = true
		}
	}
	assert.Len(t, used, len(held), "%d torrents spread over %d of %d masters", torrents, len(used), len(held))

	// The index, outside the torrents' slots in cluster mode, lists every torrent.
	n, err := cc.ZCard(ctx, prefix+"torrents").Result()
	require.NoError(t, err)
	assert.EqualValues(t, torrents, n)

	// Another process, seeded with another node, sees every swarm.
	reader := openClusterPrefix(t, addrs[len(addrs)-1:], prefix)
	defer reader.Close()
	files := make([]models.TorrentStats, torrents)
	for n := range files {
		files[n].InfoHash = trackertest.Hash(n)
	}
	require.NoError(t, reader.Scrape(ctx, files))
	for n, f := range files {
		assert.Equal(t, models.TorrentStats{InfoHash: trackertest.Hash(n), Seeders: 1, Leechers: peers - 1, Registered: true}, f, "torrent %d", n)
	}
}
