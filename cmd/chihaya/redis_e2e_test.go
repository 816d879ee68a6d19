//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	udptracker "github.com/anacrolix/torrent/tracker/udp"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	trackerredis "github.com/chihaya/chihaya/tracker/redis"
)

// redisE2ETimeout bounds one backend's run: two trackers started, a dozen requests, both
// stopped (at most stopGrace each).
const redisE2ETimeout = 60 * time.Second

// TestRedisTwoTrackers runs two tracker processes, A and B, on one Redis (and then on one Redis
// Cluster): a seeder that announced to A is handed to a leecher that announced to B, and a
// scrape on either counts both, over HTTP and over UDP. Both then stop cleanly on SIGTERM.
//
// The Redis comes from CHIHAYA_REDIS_ADDR and the cluster from CHIHAYA_REDIS_CLUSTER_ADDRS,
// which `bash .ci/run` sets (or `eval "$(bash .ci/redis.sh)"` and
// `eval "$(bash .ci/redis-cluster.sh)"`). Without one the run on it is skipped, unless
// CHIHAYA_REQUIRE_REDIS=1 (CHIHAYA_REQUIRE_REDIS_CLUSTER=1 for the cluster) makes it a failure.
func TestRedisTwoTrackers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	backends := []struct {
		name    string
		env     string // where the address(es) come from
		require string // the variable that makes their absence a failure
		hint    string
		params  func(v string) map[string]any
	}{
		{
			name: "redis", env: "CHIHAYA_REDIS_ADDR", require: "CHIHAYA_REQUIRE_REDIS",
			hint:   "run `bash .ci/run`, or `eval \"$(bash .ci/redis.sh)\"` (sets CHIHAYA_REDIS_ADDR)",
			params: func(v string) map[string]any { return map[string]any{"addr": v} },
		},
		{
			name: "cluster", env: "CHIHAYA_REDIS_CLUSTER_ADDRS", require: "CHIHAYA_REQUIRE_REDIS_CLUSTER",
			hint:   "run `bash .ci/run`, or `eval \"$(bash .ci/redis-cluster.sh)\"` (sets CHIHAYA_REDIS_CLUSTER_ADDRS)",
			params: func(v string) map[string]any { return map[string]any{"cluster_addrs": strings.Split(v, ",")} },
		},
	}
	binDir := t.TempDir()
	var bin string
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			v := os.Getenv(be.env)
			if v == "" {
				msg := fmt.Sprintf("%s not set: %s", be.env, be.hint)
				if os.Getenv(be.require) == "1" {
					t.Fatalf("%s=1 but %s", be.require, msg)
				}
				t.Skip(msg)
			}
			ctx, cancel := boundedContext(t, redisE2ETimeout+buildTimeout)
			defer cancel()
			if bin == "" {
				bin = buildTracker(ctx, t, binDir)
			}
			params := be.params(v)
			params["key_prefix"] = "chihaya-e2e:" + randomHex(8) + ":"
			runTwoTrackers(t, bin, params)
		})
	}
}

// runTwoTrackers is one backend's run of TestRedisTwoTrackers.
func runTwoTrackers(t *testing.T, bin string, params map[string]any) {
	ctx, cancel := boundedContext(t, redisE2ETimeout)
	defer cancel()
	// Registered first, so that it runs last: after both trackers have stopped.
	t.Cleanup(func() { assert.NoError(t, deleteRedisPrefix(params)) })

	s := &swarm{t: t, root: t.TempDir()}
	a := startRedisTracker(ctx, s, bin, "tracker-a", params)
	b := startRedisTracker(ctx, s, bin, "tracker-b", params)
	loopback := netip.MustParseAddr("127.0.0.1")

	t.Run("http", func(t *testing.T) {
		ih := []byte("redis-e2e-http-hash!")
		seeder, leecher := []byte("-qB4250-e2e-seeder-h"), []byte("-TR4050-e2e-leecherh")

		d := httpAnnounce(ctx, t, a.http, ih, seeder, 7001, 0, "started")
		assert.Equal(t, []int64{1, 0}, counts(t, d), "A after the seeder: complete, incomplete")
		assert.Empty(t, compactPeers(t, d), "a lone seeder gets no peers")

		d = httpAnnounce(ctx, t, b.http, ih, leecher, 7002, 1000, "started")
		assert.Equal(t, []int64{1, 1}, counts(t, d), "B after the leecher")
		assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(loopback, 7001)}, compactPeers(t, d),
			"the leecher on B is handed the seeder that announced to A")

		for _, tr := range []*redisTracker{a, b} {
			assert.Equal(t, []int64{1, 0, 1}, httpScrape(ctx, t, tr.http, ih), "scrape on %s: complete, downloaded, incomplete", tr.name)
		}

		d = httpAnnounce(ctx, t, a.http, ih, seeder, 7001, 0, "")
		assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(loopback, 7002)}, compactPeers(t, d),
			"the seeder on A is handed the leecher that announced to B")

		httpAnnounce(ctx, t, b.http, ih, leecher, 7002, 1000, "stopped")
		assert.Equal(t, []int64{1, 0, 0}, httpScrape(ctx, t, a.http, ih), "scrape on A after the leecher stopped on B")
	})

	t.Run("udp", func(t *testing.T) {
		ih := [20]byte([]byte("redis-e2e-udp-hash!!"))
		announce := func(tr *redisTracker, peerID string, port uint16, left int64) (udptracker.AnnounceResponseHeader, []netip.AddrPort) {
			t.Helper()
			cc := udpClient(t, tr.udp)
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			h, peers, err := cc.Announce(rctx, udptracker.AnnounceRequest{
				InfoHash: ih, PeerId: [20]byte([]byte(peerID)), Left: left, NumWant: -1, Port: port,
				Event: udptracker.AnnounceEvent(2), // started
			}, udptracker.Options{})
			require.NoError(t, err, "UDP announce to %s", tr.name)
			var got []netip.AddrPort
			for _, na := range peers.NodeAddrs() {
				ip, ok := netip.AddrFromSlice(na.IP)
				require.True(t, ok, "peer IP %v", na.IP)
				got = append(got, netip.AddrPortFrom(ip.Unmap(), uint16(na.Port)))
			}
			return h, got
		}

		h, peers := announce(a, "-lt0D80-e2e-seeder-u", 7101, 0)
		assert.Equal(t, [2]int32{1, 0}, [2]int32{h.Seeders, h.Leechers}, "A after the seeder: seeders, leechers")
		assert.Empty(t, peers)

		h, peers = announce(b, "-lt0D80-e2e-leecheru", 7102, 1000)
		assert.Equal(t, [2]int32{1, 1}, [2]int32{h.Seeders, h.Leechers}, "B after the leecher")
		assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(loopback, 7101)}, peers,
			"the leecher on B is handed the seeder that announced to A")

		for _, tr := range []*redisTracker{a, b} {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			sc, err := udpClient(t, tr.udp).Client.Scrape(rctx, []udptracker.InfoHash{ih})
			cancel()
			require.NoError(t, err, "UDP scrape on %s", tr.name)
			assert.Equal(t, udptracker.ScrapeResponse{{Seeders: 1, Leechers: 1}}, sc, "UDP scrape on %s", tr.name)
			assert.Equal(t, []int64{1, 0, 1}, httpScrape(ctx, t, tr.http, ih[:]), "HTTP scrape on %s", tr.name)
		}
	})

	// Both must shut down cleanly, having logged no error, panic or data race.
	for _, tr := range []*redisTracker{a, b} {
		tr.proc.stop()
		if err := tr.proc.err; err != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v", tr.name, err)
		}
		if log, err := os.ReadFile(tr.proc.log); err != nil {
			t.Error(err)
		} else if m := trackerTrouble.Find(log); m != nil {
			t.Errorf("%s logged trouble: %q", tr.name, m)
		}
	}
}

// redisTracker is one tracker process of runTwoTrackers.
type redisTracker struct {
	name string
	http string // http://127.0.0.1:PORT
	udp  string // 127.0.0.1:PORT
	proc *proc
}

// startRedisTracker starts the tracker with the redis driver and params, HTTP and UDP on
// loopback, and waits until it answers HTTP. s's cleanup stops it.
func startRedisTracker(ctx context.Context, s *swarm, bin, name string, params map[string]any) *redisTracker {
	return startConfigured(ctx, s, bin, name, map[string]any{
		"announce":     "30m",
		"min_announce": "15m",
		"tracker":      map[string]any{"driver": "redis", "params": params},
	})
}

// startConfigured starts the tracker with the keys of cfg and extraArgs after -config, HTTP and
// UDP on free loopback ports (one UDP reader), and waits until it answers HTTP. s's cleanup
// stops it.
func startConfigured(ctx context.Context, s *swarm, bin, name string, cfg map[string]any, extraArgs ...string) *redisTracker {
	t := s.t
	t.Helper()
	tr := &redisTracker{
		name: name,
		http: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		udp:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freeUDPPort(t))),
	}
	all := map[string]any{
		"addr":             strings.TrimPrefix(tr.http, "http://"),
		"udp_addr":         tr.udp,
		"udp_readers":      1,
		"shutdown_timeout": "3s",
	}
	for k, v := range cfg {
		all[k] = v
	}
	data, err := json.MarshalIndent(all, "", "  ")
	require.NoError(t, err)
	cfgPath := filepath.Join(s.root, name+".json")
	require.NoError(t, os.WriteFile(cfgPath, data, 0o600))
	tr.proc = s.start(ctx, name, s.root, nil, bin, append([]string{"-config", cfgPath}, extraArgs...)...)

	hc := &http.Client{Timeout: 2 * time.Second}
	s.waitFor(ctx, name+" to answer on "+tr.http, func() (bool, string, error) {
		resp, err := hc.Get(tr.http + "/")
		if err != nil {
			return false, err.Error(), nil
		}
		_ = resp.Body.Close()
		return true, "", nil
	})
	return tr
}

// fetch GETs u and returns its bencoded body decoded, failing on a transport error, a status
// other than 200, bad bencode or a failure reason.
func fetch(ctx context.Context, t *testing.T, u string) map[string]any {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %q", u, body)
	v, n, err := bdecode(body, 0)
	if err == nil && n != len(body) {
		err = errors.New("trailing data")
	}
	require.NoError(t, err, "%s: bencode %q", u, body)
	d, ok := v.(map[string]any)
	require.True(t, ok, "%s: not a dictionary: %q", u, body)
	require.NotContains(t, d, "failure reason", "%s: %q", u, body)
	return d
}

// httpAnnounce announces a compact-peers client and returns the decoded answer.
func httpAnnounce(ctx context.Context, t *testing.T, base string, ih, peerID []byte, port int, left int64, event string) map[string]any {
	t.Helper()
	q := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&compact=1",
		base, pct(ih), pct(peerID), port, left)
	if event != "" {
		q += "&event=" + event
	}
	return fetch(ctx, t, q)
}

// counts returns an announce answer's complete and incomplete.
func counts(t *testing.T, d map[string]any) []int64 {
	t.Helper()
	complete, ok1 := d["complete"].(int64)
	incomplete, ok2 := d["incomplete"].(int64)
	require.True(t, ok1 && ok2, "complete, incomplete in %v", d)
	return []int64{complete, incomplete}
}

// compactPeers decodes an announce answer's compact IPv4 peers (BEP 23), sorted.
func compactPeers(t *testing.T, d map[string]any) []netip.AddrPort {
	t.Helper()
	raw, ok := d["peers"].(string)
	require.True(t, ok, "compact peers string in %v", d)
	require.Zero(t, len(raw)%6, "compact peers of %d bytes", len(raw))
	var out []netip.AddrPort
	for i := 0; i < len(raw); i += 6 {
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte([]byte(raw[i:i+4]))),
			uint16(raw[i+4])<<8|uint16(raw[i+5])))
	}
	slices.SortFunc(out, func(x, y netip.AddrPort) int { return x.Compare(y) })
	return out
}

// httpScrape returns complete, downloaded and incomplete of ih in a scrape of base.
func httpScrape(ctx context.Context, t *testing.T, base string, ih []byte) []int64 {
	t.Helper()
	d := fetch(ctx, t, base+"/scrape?info_hash="+pct(ih))
	files, ok := d["files"].(map[string]any)
	require.True(t, ok, "files in %v", d)
	f, ok := files[string(ih)].(map[string]any)
	require.True(t, ok, "files[%x] in %v", ih, d)
	var out []int64
	for _, k := range []string{"complete", "downloaded", "incomplete"} {
		n, ok := f[k].(int64)
		require.True(t, ok, "%s in %v", k, f)
		out = append(out, n)
	}
	return out
}

// udpClient returns a BEP 15 client of the tracker at host, on a loopback socket of its own,
// closed when the test ends.
func udpClient(t *testing.T, host string) *udptracker.ConnClient {
	t.Helper()
	cc, err := udptracker.NewConnClient(udptracker.NewConnClientOpts{
		Network: "udp4",
		Host:    host,
		ListenPacket: func(network, _ string) (net.PacketConn, error) {
			return net.ListenPacket(network, "127.0.0.1:0")
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// deleteRedisPrefix deletes the keys under params' key_prefix from the Redis (or from every
// master of the cluster) that params name, a key at a time since in a cluster they lie in
// many slots.
func deleteRedisPrefix(params map[string]any) error {
	raw, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	p, err := trackerredis.ParseParams(raw)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	pool := trackerredis.NewPool(p)
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	del := func(ctx context.Context, c *goredis.Client) error {
		var keys []string
		iter := c.Scan(ctx, 0, p.KeyPrefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("cleanup: scan %s: %w", c.Options().Addr, err)
		}
		for _, k := range keys {
			if err := c.Del(ctx, k).Err(); err != nil {
				return fmt.Errorf("cleanup: del on %s: %w", c.Options().Addr, err)
			}
		}
		return nil
	}
	switch c := pool.Client().(type) {
	case *goredis.ClusterClient:
		return c.ForEachMaster(ctx, del)
	case *goredis.Client:
		return del(ctx, c)
	default:
		return fmt.Errorf("cleanup: unexpected client %T", c)
	}
}
