package http_test

// End-to-end tests: the real tracker started with chihaya.Start on a loopback socket, driven by a
// third-party BitTorrent tracker client (anacrolix/torrent) and by net/http. They live in package
// http_test because package chihaya imports package http.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	nethttp "net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/anacrolix/torrent/tracker/shared"
	"github.com/anacrolix/torrent/types/infohash"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

// startTracker runs a whole tracker on addr and stops it when the test ends. It returns the
// running tracker and its announce URL.
func startTracker(t *testing.T, addr string, mod func(*config.Config)) (*chihaya.Chihaya, *url.URL) {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = addr
	if mod != nil {
		mod(&cfg)
	}
	require.NoError(t, cfg.Validate())
	c, err := chihaya.Start(&cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, c.Shutdown(ctx))
	})
	u, err := url.Parse("http://" + c.Addr().String() + "/announce")
	require.NoError(t, err)
	return c, u
}

func ipv6Available() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func peerIDOf(s string) (id [20]byte) {
	copy(id[:], s)
	return id
}

// ports returns the ports of the peers an announce handed out, sorted; every peer of these tests
// runs on the loopback address, so the port names it.
func ports(t *testing.T, resp httpTracker.AnnounceResponse, loopback net.IP) []int {
	t.Helper()
	out := []int{}
	for _, p := range resp.Peers {
		assert.True(t, p.IP.Equal(loopback), "peer %v is not at the socket address %v", p, loopback)
		out = append(out, p.Port)
	}
	slices.Sort(out)
	return out
}

func TestE2ESwarm(t *testing.T) {
	for _, tc := range []struct {
		name     string
		addr     string
		loopback net.IP
	}{
		{name: "ipv4", addr: "127.0.0.1:0", loopback: net.IPv4(127, 0, 0, 1)},
		{name: "ipv6", addr: "[::1]:0", loopback: net.IPv6loopback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "ipv6" && !ipv6Available() {
				t.Skip("no IPv6 loopback")
			}
			_, u := startTracker(t, tc.addr, nil)
			cl := httpTracker.NewClient(u, httpTracker.NewClientOpts{})
			t.Cleanup(func() { _ = cl.Close() })
			ctx := ctxT(t)

			// No 0x20 byte: anacrolix's Scrape would send it as "+" (see TestE2EBinaryInfoHashes).
			ih := infohash.T(peerIDOf("e2e-swarm-info-hash!"))
			const (
				seedPort = 7001
				l1Port   = 7002
				l2Port   = 7003
				size     = 1 << 20
			)
			// anacrolix sends ip= and ipv4= from ClientIp4: with spoofing off they are ignored.
			opt := httpTracker.AnnounceOpt{ClientIp4: net.IPv4(10, 9, 8, 7)}
			announce := func(id string, port uint16, left int64, ev shared.AnnounceEvent) httpTracker.AnnounceResponse {
				t.Helper()
				resp, err := cl.Announce(ctx, httpTracker.AnnounceRequest{
					InfoHash: ih, PeerId: peerIDOf(id), Port: port, Left: left, Event: ev, NumWant: -1, Key: 42,
				}, opt)
				require.NoError(t, err)
				assert.Equal(t, int32(1800), resp.Interval)
				return resp
			}
			scrape := func() (seeders, completed, leechers int32) {
				t.Helper()
				out, err := cl.Scrape(ctx, []infohash.T{ih})
				require.NoError(t, err)
				require.Len(t, out, 1)
				return out[0].Seeders, out[0].Completed, out[0].Leechers
			}

			seed := announce("-AZ0001-seeder000001", seedPort, 0, shared.Started)
			assert.Empty(t, ports(t, seed, tc.loopback), "the first peer has no one to meet")
			assert.Equal(t, int32(1), seed.Seeders)
			assert.Equal(t, int32(0), seed.Leechers)

			l1 := announce("-AZ0001-leecher00001", l1Port, size, shared.Started)
			assert.Equal(t, []int{seedPort}, ports(t, l1, tc.loopback), "leecher 1 sees the seeder")

			l2 := announce("-AZ0001-leecher00002", l2Port, size, shared.Started)
			assert.Equal(t, []int{seedPort, l1Port}, ports(t, l2, tc.loopback), "leecher 2 sees the seeder and leecher 1")
			assert.Equal(t, int32(1), l2.Seeders)
			assert.Equal(t, int32(2), l2.Leechers)

			l1 = announce("-AZ0001-leecher00001", l1Port, size/2, shared.None)
			assert.Equal(t, []int{seedPort, l2Port}, ports(t, l1, tc.loopback), "leechers see each other")

			seed = announce("-AZ0001-seeder000001", seedPort, 0, shared.None)
			assert.Equal(t, []int{l1Port, l2Port}, ports(t, seed, tc.loopback), "the seeder sees the leechers")

			s, d, l := scrape()
			assert.Equal(t, [3]int32{1, 0, 2}, [3]int32{s, d, l}, "seeders, downloaded, leechers after the starts")

			// Leecher 1 finishes.
			l1 = announce("-AZ0001-leecher00001", l1Port, 0, shared.Completed)
			assert.Equal(t, int32(2), l1.Seeders)
			assert.Equal(t, int32(1), l1.Leechers)
			assert.Equal(t, []int{l2Port}, ports(t, l1, tc.loopback), "a new seeder is handed leechers only")
			s, d, l = scrape()
			assert.Equal(t, [3]int32{2, 1, 1}, [3]int32{s, d, l}, "seeders, downloaded, leechers after completed")

			seed = announce("-AZ0001-seeder000001", seedPort, 0, shared.None)
			assert.Equal(t, []int{l2Port}, ports(t, seed, tc.loopback), "the seeder sees only leechers, not the other seeder")

			l2 = announce("-AZ0001-leecher00002", l2Port, size, shared.None)
			assert.Equal(t, []int{seedPort, l1Port}, ports(t, l2, tc.loopback), "a leecher sees both seeders")

			// Leecher 2 leaves.
			announce("-AZ0001-leecher00002", l2Port, size, shared.Stopped)
			s, d, l = scrape()
			assert.Equal(t, [3]int32{2, 1, 0}, [3]int32{s, d, l}, "seeders, downloaded, leechers after stopped")
			seed = announce("-AZ0001-seeder000001", seedPort, 0, shared.None)
			assert.Empty(t, ports(t, seed, tc.loopback), "no leechers are left for the seeder")

			// A second completed announce by a peer that already seeds does not count again.
			announce("-AZ0001-leecher00001", l1Port, 0, shared.Completed)
			s, d, l = scrape()
			assert.Equal(t, [3]int32{2, 1, 0}, [3]int32{s, d, l}, "completed twice counts once")
		})
	}
}

// countingDialer counts the TCP connections a client opens.
type countingDialer struct {
	n atomic.Int32
	d net.Dialer
}

func (c *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c.n.Add(1)
	return c.d.DialContext(ctx, network, addr)
}

func get(t *testing.T, hc *nethttp.Client, u string) (*nethttp.Response, []byte) {
	t.Helper()
	res, err := hc.Get(u)
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	return res, body
}

func TestE2EKeepAlive(t *testing.T) {
	const q = "?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=6881&uploaded=0&downloaded=0&left=0"
	for _, tc := range []struct {
		name      string
		keepAlive bool
		wantDials int32
	}{
		{name: "keep-alive on reuses one connection", keepAlive: true, wantDials: 1},
		{name: "keep-alive off closes after each answer", keepAlive: false, wantDials: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, u := startTracker(t, "127.0.0.1:0", func(c *config.Config) { c.HTTPKeepAlive = tc.keepAlive })
			dialer := &countingDialer{}
			hc := &nethttp.Client{Transport: &nethttp.Transport{DialContext: dialer.DialContext}}
			t.Cleanup(hc.CloseIdleConnections)

			for i := range 3 {
				path := u.String() + q
				if i == 2 {
					path = strings.Replace(u.String(), "announce", "scrape", 1) + "?info_hash=aaaaaaaaaaaaaaaaaaaa"
				}
				res, body := get(t, hc, path)
				assert.Equal(t, nethttp.StatusOK, res.StatusCode)
				assert.Equal(t, int64(len(body)), res.ContentLength, "explicit Content-Length")
				assert.Empty(t, res.TransferEncoding, "never chunked")
				assert.Equal(t, "text/plain", res.Header.Get("Content-Type"))
				assert.Equal(t, !tc.keepAlive, res.Close, "Connection: close only with keep-alive off")
			}
			assert.Equal(t, tc.wantDials, dialer.n.Load())
		})
	}

	t.Run("anacrolix client with keep-alive", func(t *testing.T) {
		_, u := startTracker(t, "127.0.0.1:0", nil)
		dialer := &countingDialer{}
		cl := httpTracker.NewClient(u, httpTracker.NewClientOpts{AllowKeepAlive: true, DialContext: dialer.DialContext})
		t.Cleanup(func() { _ = cl.Close() })
		ctx := ctxT(t)
		ih := infohash.T(peerIDOf("keep-alive-hash....."))
		for i := range 2 {
			resp, err := cl.Announce(ctx, httpTracker.AnnounceRequest{InfoHash: ih, PeerId: peerIDOf("-AZ0001-keepalive001"), Port: 7000, Event: shared.Started}, httpTracker.AnnounceOpt{})
			require.NoError(t, err, "announce %d", i)
			assert.Equal(t, int32(1), resp.Seeders)
		}
		out, err := cl.Scrape(ctx, []infohash.T{ih})
		require.NoError(t, err)
		assert.Equal(t, int32(1), out[0].Seeders)
		assert.Equal(t, int32(1), dialer.n.Load(), "two announces and a scrape over one connection")
	})
}

// escapeAll writes every byte of b as %XX.
func escapeAll(b []byte) string {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, 3*len(b))
	for _, c := range b {
		out = append(out, '%', hex[c>>4], hex[c&15])
	}
	return string(out)
}

// TestE2EBinaryInfoHashes checks that hashes holding the bytes that need escaping reach the same
// torrent through announce and scrape, as anacrolix escapes them.
func TestE2EBinaryInfoHashes(t *testing.T) {
	_, u := startTracker(t, "127.0.0.1:0", nil)
	cl := httpTracker.NewClient(u, httpTracker.NewClientOpts{})
	t.Cleanup(func() { _ = cl.Close() })
	ctx := ctxT(t)

	var ff, zero infohash.T
	for i := range ff {
		ff[i] = 0xff
	}
	hashes := map[string]infohash.T{
		"plus":                     infohash.T(peerIDOf("++++++++++++++++++++")),
		"separators":               infohash.T(peerIDOf("&=&=&=?#/;&=&=&=?#/;")),
		"percent":                  infohash.T(peerIDOf("%%%%%41%2B%zz%%%%%%%")),
		"nul":                      zero,
		"0xff":                     ff,
		"mixed":                    {'+', '&', '%', '=', 0x00, 0xff, 0x7f, 0x80, '~', '!', '*', '(', ')', '\'', '.', '-', '_', 0x01, 0x0a, 0x0d},
		"wiki example":             {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x12, 0x34, 0x56, 0x78, 0x9a},
		"space, one byte off plus": infohash.T(peerIDOf("+++++++++++++++++++ ")),
	}
	// Announce every hash once as a seeder and twice more as leechers, so each has its own counts.
	for name, ih := range hashes {
		for i, left := range []int64{0, 10, 10} {
			_, err := cl.Announce(ctx, httpTracker.AnnounceRequest{
				InfoHash: ih, PeerId: peerIDOf("-AZ0001-binary0000" + string(rune('a'+i))), Port: uint16(8000 + i), Left: left, Event: shared.Started,
			}, httpTracker.AnnounceOpt{})
			require.NoError(t, err, name)
		}
	}
	for name, ih := range hashes {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(ih.AsString(), " ") {
				// anacrolix's Scrape escapes with url.Values.Encode, which writes a space as "+",
				// and a tracker must read "+" as the byte 0x2B (protocol.md §1.3): such a hash
				// cannot round-trip through this client's scrape. Check it with an exact query.
				res, body := get(t, nethttp.DefaultClient, strings.Replace(u.String(), "announce", "scrape", 1)+"?info_hash="+escapeAll(ih[:]))
				require.Equal(t, nethttp.StatusOK, res.StatusCode)
				var sr struct {
					Files map[string]struct {
						Complete   int `bencode:"complete"`
						Incomplete int `bencode:"incomplete"`
					} `bencode:"files"`
				}
				require.NoError(t, bencode.Unmarshal(body, &sr))
				assert.Equal(t, 1, sr.Files[ih.AsString()].Complete)
				assert.Equal(t, 2, sr.Files[ih.AsString()].Incomplete)
				out, err := cl.Scrape(ctx, []infohash.T{ih})
				require.NoError(t, err)
				t.Logf("anacrolix scrape of a hash with a space (sent as '+'): %+v", out[0])
				return
			}
			out, err := cl.Scrape(ctx, []infohash.T{ih})
			require.NoError(t, err)
			require.Len(t, out, 1)
			assert.Equal(t, int32(1), out[0].Seeders)
			assert.Equal(t, int32(2), out[0].Leechers)
		})
	}

	t.Run("all in one scrape", func(t *testing.T) {
		var all []infohash.T
		for _, ih := range hashes {
			if !strings.Contains(ih.AsString(), " ") {
				all = append(all, ih)
			}
		}
		out, err := cl.Scrape(ctx, all)
		require.NoError(t, err)
		require.Len(t, out, len(all))
		for i := range all {
			assert.Equal(t, int32(1), out[i].Seeders, "%x", all[i][:])
			assert.Equal(t, int32(2), out[i].Leechers, "%x", all[i][:])
		}
	})
}

// TestE2ESpoofingParamsIgnored checks the whole stack, config file included: anacrolix's ip= and
// ipv4= do not move a peer unless allow_ip_spoofing is set.
func TestE2ESpoofingParamsIgnored(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoof bool
		want  net.IP
	}{
		{name: "default", spoof: false, want: net.IPv4(127, 0, 0, 1)},
		{name: "allow_ip_spoofing", spoof: true, want: net.IPv4(10, 9, 8, 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := json.Marshal(map[string]any{"addr": "127.0.0.1:0", "allow_ip_spoofing": tc.spoof})
			require.NoError(t, err)
			cfg, err := config.Parse(raw, "test")
			require.NoError(t, err)
			_, u := startTracker(t, cfg.Addr, func(c *config.Config) { *c = *cfg })
			cl := httpTracker.NewClient(u, httpTracker.NewClientOpts{})
			t.Cleanup(func() { _ = cl.Close() })
			ctx := ctxT(t)
			ih := infohash.T(peerIDOf("spoofing-check-hash."))
			_, err = cl.Announce(ctx, httpTracker.AnnounceRequest{InfoHash: ih, PeerId: peerIDOf("-AZ0001-spoofer00001"), Port: 7100, Event: shared.Started},
				httpTracker.AnnounceOpt{ClientIp4: net.IPv4(10, 9, 8, 7)})
			require.NoError(t, err)
			resp, err := cl.Announce(ctx, httpTracker.AnnounceRequest{InfoHash: ih, PeerId: peerIDOf("-AZ0001-observer0001"), Port: 7101, Left: 1, Event: shared.Started},
				httpTracker.AnnounceOpt{})
			require.NoError(t, err)
			require.Len(t, resp.Peers, 1)
			assert.True(t, resp.Peers[0].IP.Equal(tc.want), "peer handed out at %v, want %v", resp.Peers[0].IP, tc.want)
			assert.Equal(t, 7100, resp.Peers[0].Port)
		})
	}
}

// blockingDriver is a tracker driver over the memory driver whose announces of blockHash wait
// until the test lets them go, so that a request is in flight for as long as the test wants.
type blockingDriver struct{}

var (
	blockHash = models.InfoHash(peerIDOf("in flight at shutdn"))
	blocking  struct {
		sync.Mutex
		entered chan struct{}
		release chan struct{}
	}
)

func init() { tracker.Register("e2e-blocking", blockingDriver{}) }

func (blockingDriver) New(json.RawMessage) (tracker.Pool, error) {
	return blockingPool{memory.NewPool(4)}, nil
}

type blockingPool struct{ *memory.Pool }

func (p blockingPool) Get() (tracker.Conn, error) { return p, nil }

func (p blockingPool) Announce(ctx context.Context, ih models.InfoHash, u *tracker.PeerUpdate, sel *tracker.Selection, res *tracker.AnnounceResult) error {
	if ih == blockHash {
		blocking.Lock()
		entered, release := blocking.entered, blocking.release
		blocking.Unlock()
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.Pool.Announce(ctx, ih, u, sel, res)
}

func TestE2EGracefulShutdown(t *testing.T) {
	blocking.Lock()
	blocking.entered, blocking.release = make(chan struct{}, 1), make(chan struct{})
	entered, release := blocking.entered, blocking.release
	blocking.Unlock()

	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.Tracker.Name = "e2e-blocking"
	c, err := chihaya.Start(&cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Shutdown(context.Background()) })
	u, err := url.Parse("http://" + c.Addr().String() + "/announce")
	require.NoError(t, err)

	cl := httpTracker.NewClient(u, httpTracker.NewClientOpts{})
	t.Cleanup(func() { _ = cl.Close() })
	type result struct {
		resp httpTracker.AnnounceResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := cl.Announce(context.Background(), httpTracker.AnnounceRequest{
			InfoHash: infohash.T(blockHash), PeerId: peerIDOf("-AZ0001-inflight0001"), Port: 7200, Event: shared.Started,
		}, httpTracker.AnnounceOpt{})
		done <- result{resp, err}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the announce never reached the driver")
	}

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- c.Shutdown(ctx)
	}()

	// The listener closes at once, but Shutdown waits for the request in flight.
	require.Eventually(t, func() bool {
		conn, err := net.DialTimeout("tcp", c.Addr().String(), time.Second)
		if err == nil {
			_ = conn.Close()
			return false
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "the listener must close when Shutdown starts")
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	case r := <-done:
		t.Fatalf("the announce finished (%+v) before it was released", r)
	case <-time.After(200 * time.Millisecond):
	}

	close(release)
	select {
	case r := <-done:
		require.NoError(t, r.err, "the request in flight gets its answer")
		assert.Equal(t, int32(1), r.resp.Seeders)
		assert.Equal(t, int32(1800), r.resp.Interval)
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight never finished")
	}
	select {
	case err := <-shutdown:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown never returned")
	}
	_, err = nethttp.Get(u.String())
	assert.Error(t, err, "nothing listens after Shutdown")
	assert.False(t, errors.Is(err, context.DeadlineExceeded))
}
