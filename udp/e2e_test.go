package udp_test

// End-to-end tests: the real tracker started with chihaya.Start on loopback sockets, driven by
// a third-party UDP tracker client (anacrolix/torrent's tracker/udp). They live in package
// udp_test because package chihaya imports package udp.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	udptracker "github.com/anacrolix/torrent/tracker/udp"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/udp"
)

// startTracker runs a whole tracker with its UDP frontend on udpAddr (HTTP on 127.0.0.1) and
// stops it when the test ends.
func startTracker(t *testing.T, udpAddr string, mod func(*config.Config)) *chihaya.Chihaya {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.UDPAddr = udpAddr
	cfg.UDPReaders = 2
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
	require.NotNil(t, c.UDPAddr())
	return c
}

func ipv6Available() bool {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = pc.Close()
	return true
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns an anacrolix UDP tracker client for host over network ("udp4", "udp6"),
// closed when the test ends.
func newClient(t *testing.T, network, host string) *udptracker.ConnClient {
	t.Helper()
	cc, err := udptracker.NewConnClient(udptracker.NewConnClientOpts{Network: network, Host: host})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func id20(s string) (b [20]byte) {
	copy(b[:], s)
	return b
}

// peersOf returns the handed-out peers as sorted AddrPorts.
func peersOf(t *testing.T, peers udptracker.AnnounceResponsePeers) []netip.AddrPort {
	t.Helper()
	out := []netip.AddrPort{}
	for _, na := range peers.NodeAddrs() {
		a, ok := netip.AddrFromSlice(na.IP)
		require.True(t, ok, "peer IP %v", na.IP)
		out = append(out, netip.AddrPortFrom(a, uint16(na.Port)))
	}
	slices.SortFunc(out, func(x, y netip.AddrPort) int { return x.Compare(y) })
	return out
}

func TestE2ESwarm(t *testing.T) {
	for _, tc := range []struct {
		name     string
		listen   string
		network  string
		loopback netip.Addr
	}{
		{"ipv4", "127.0.0.1:0", "udp4", netip.MustParseAddr("127.0.0.1")},
		{"ipv6", "[::1]:0", "udp6", netip.IPv6Loopback()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.network == "udp6" && !ipv6Available() {
				t.Skip("no IPv6 loopback")
			}
			c := startTracker(t, tc.listen, func(cfg *config.Config) { cfg.Announce.Duration = 25 * time.Minute })
			host := c.UDPAddr().String()
			ctx := ctxT(t)
			ih := id20("udp-e2e-info-hash!!!")
			announce := func(cc *udptracker.ConnClient, id string, port uint16, left int64, ev udptracker.AnnounceEvent) (udptracker.AnnounceResponseHeader, []netip.AddrPort) {
				t.Helper()
				h, peers, err := cc.Announce(ctx, udptracker.AnnounceRequest{
					InfoHash: ih, PeerId: id20(id), Left: left, Event: ev, NumWant: -1, Port: port,
				}, udptracker.Options{})
				require.NoError(t, err)
				return h, peersOf(t, peers)
			}
			seeder := newClient(t, tc.network, host)
			l1 := newClient(t, tc.network, host)
			l2 := newClient(t, tc.network, host)

			h, peers := announce(seeder, "seeder", 7001, 0, udptracker.AnnounceEvent(2))
			assert.Equal(t, int32(1500), h.Interval)
			assert.Equal(t, int32(1), h.Seeders)
			assert.Equal(t, int32(0), h.Leechers)
			assert.Empty(t, peers)

			h, peers = announce(l1, "leecher-1", 7002, 1000, udptracker.AnnounceEvent(2))
			assert.Equal(t, int32(1), h.Seeders)
			assert.Equal(t, int32(1), h.Leechers)
			assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(tc.loopback, 7001)}, peers)

			h, peers = announce(l2, "leecher-2", 7003, 1000, udptracker.AnnounceEvent(2))
			assert.Equal(t, int32(2), h.Leechers)
			assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(tc.loopback, 7001), netip.AddrPortFrom(tc.loopback, 7002)}, peers)

			// l1 completes; l2 stops.
			announce(l1, "leecher-1", 7002, 0, udptracker.AnnounceEvent(1))
			_, peers = announce(l2, "leecher-2", 7003, 1000, udptracker.AnnounceEvent(3))
			assert.Empty(t, peers, "a stopped peer gets none")

			sc, err := seeder.Client.Scrape(ctx, []udptracker.InfoHash{ih, id20("unknown-info-hash!!!")})
			require.NoError(t, err)
			require.Len(t, sc, 2)
			assert.Equal(t, udptracker.ScrapeInfohashResult{Seeders: 2, Completed: 1, Leechers: 0}, sc[0])
			assert.Equal(t, udptracker.ScrapeInfohashResult{}, sc[1])

			// A failure from the core is an error packet with its text.
			_, _, err = l2.Announce(ctx, udptracker.AnnounceRequest{InfoHash: ih, PeerId: id20("no-port"), NumWant: -1}, udptracker.Options{})
			var er udptracker.ErrorResponse
			require.ErrorAs(t, err, &er)
			assert.Equal(t, string(models.ErrInvalidPort), er.Message)

			// Stats count UDP requests by action and family; the UDP metrics count connects.
			family := "ipv4"
			if tc.network == "udp6" {
				family = "ipv6"
			}
			waitForCounter(t, c, "chihaya_requests_total", map[string]string{"transport": "udp", "action": "announce", "family": family}, 6)
			waitForCounter(t, c, "chihaya_requests_total", map[string]string{"transport": "udp", "action": "scrape", "family": family}, 1)
			waitForCounter(t, c, "chihaya_udp_packets_total", map[string]string{"action": "connect", "family": family}, 3)
		})
	}
}

// TestE2EDualStack listens on the wildcard address, as ":6881" does, and is reached over IPv4
// and IPv6 on one socket: each client gets peers of its own family in its own format.
func TestE2EDualStack(t *testing.T) {
	if !ipv6Available() {
		t.Skip("no IPv6 loopback")
	}
	c := startTracker(t, ":0", nil)
	_, port, err := net.SplitHostPort(c.UDPAddr().String())
	require.NoError(t, err)
	ctx := ctxT(t)
	ih := id20("udp-dual-stack-hash!")
	v4a := newClient(t, "udp4", "127.0.0.1:"+port)
	v6a := newClient(t, "udp6", "[::1]:"+port)
	v4b := newClient(t, "udp4", "127.0.0.1:"+port)
	v6b := newClient(t, "udp6", "[::1]:"+port)
	req := func(id string, port uint16) udptracker.AnnounceRequest {
		return udptracker.AnnounceRequest{InfoHash: ih, PeerId: id20(id), Left: 1, NumWant: -1, Port: port}
	}
	for _, a := range []struct {
		cc   *udptracker.ConnClient
		id   string
		port uint16
	}{{v4a, "v4a", 8001}, {v6a, "v6a", 8002}} {
		_, _, err := a.cc.Announce(ctx, req(a.id, a.port), udptracker.Options{})
		require.NoError(t, err)
	}
	h, peers, err := v4b.Announce(ctx, req("v4b", 8003), udptracker.Options{})
	require.NoError(t, err)
	assert.Equal(t, int32(3), h.Leechers)
	assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8001")}, peersOf(t, peers), "IPv4 (mapped) client: 6-byte IPv4 peers")
	h, peers, err = v6b.Announce(ctx, req("v6b", 8004), udptracker.Options{})
	require.NoError(t, err)
	assert.Equal(t, int32(4), h.Leechers)
	assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("[::1]:8002")}, peersOf(t, peers), "IPv6 client: 18-byte IPv6 peers")
}

// TestE2EPrivate runs private mode over UDP: the passkey travels in BEP 41 URLData, as
// udp://host:port/<passkey>/announce makes clients send it.
func TestE2EPrivate(t *testing.T) {
	cfg := config.Default()
	cfg.PrivateEnabled = true
	cfg.SitePassword, cfg.ReportPassword = "site", "report"
	require.NoError(t, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Close() })
	tkr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(t, err)
	ctx := ctxT(t)
	const passkey = "0123456789abcdef0123456789abcdef"
	// A passkey of 300 bytes does not fit one URLData option: anacrolix sends two pieces.
	long := strings.Repeat("L", 300)
	ih := id20("private-udp-torrent!")
	for i, pk := range []string{passkey, long} {
		require.NoError(t, tkr.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddUser, User: models.User{ID: uint64(i + 1), Passkey: pk, CanLeech: true}}))
	}
	require.NoError(t, tkr.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddTorrent, Torrent: models.Torrent{ID: 1, InfoHash: models.InfoHash(ih)}}))

	srv, err := udp.NewServer(&cfg, tkr)
	require.NoError(t, err)
	conn, err := udp.Listen("127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(conn) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(sctx))
		assert.NoError(t, <-served)
	})

	cc := newClient(t, "udp4", conn.LocalAddr().String())
	announce := func(uri, id string, left int64) (udptracker.AnnounceResponseHeader, error) {
		h, _, err := cc.Announce(ctx, udptracker.AnnounceRequest{InfoHash: ih, PeerId: id20(id), Left: left, NumWant: -1, Port: 9000, Event: udptracker.AnnounceEvent(2)},
			udptracker.Options{RequestUri: uri})
		return h, err
	}
	h, err := announce("/"+passkey+"/announce", "private-seeder", 0)
	require.NoError(t, err)
	assert.Equal(t, int32(1), h.Seeders)
	h, err = announce("/"+long+"/announce?extra=1", "private-leecher", 5)
	require.NoError(t, err)
	assert.Equal(t, int32(1), h.Leechers)

	for _, uri := range []string{"", "/announce", "/ffffffffffffffffffffffffffffffff/announce"} {
		_, err = announce(uri, "stranger", 5)
		var er udptracker.ErrorResponse
		require.ErrorAs(t, err, &er, "URLData %q", uri)
		assert.Equal(t, string(models.ErrPasskeyNotFound), er.Message, "URLData %q", uri)
	}
	_, err = cc.Client.Scrape(ctx, []udptracker.InfoHash{ih})
	var er udptracker.ErrorResponse
	require.ErrorAs(t, err, &er)
	assert.Equal(t, string(models.ErrPrivateScrape), er.Message)
}

func TestServeAndShutdown(t *testing.T) {
	cfg := config.Default()
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Close() })
	tkr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(t, err)

	for _, batch := range []int{1, 8} {
		cfg.UDPBatchSize = batch
		srv, err := udp.NewServer(&cfg, tkr)
		require.NoError(t, err)
		conn, err := udp.Listen("127.0.0.1:0")
		require.NoError(t, err)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(conn) }()
		cc := newClient(t, "udp4", conn.LocalAddr().String())
		ctx := ctxT(t)
		_, err = cc.Client.Scrape(ctx, []udptracker.InfoHash{id20("x")})
		require.NoError(t, err, "batch %d", batch)

		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		require.NoError(t, srv.Shutdown(sctx))
		cancel()
		select {
		case err := <-served:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after Shutdown")
		}
		_, err = conn.WriteToUDPAddrPort([]byte{0}, netip.MustParseAddrPort("127.0.0.1:9"))
		assert.True(t, errors.Is(err, net.ErrClosed), "the socket is closed: %v", err)
		require.NoError(t, srv.Shutdown(context.Background()), "a second Shutdown is harmless")
	}

	// Serve after Shutdown closes the socket and returns at once.
	srv, err := udp.NewServer(&cfg, tkr)
	require.NoError(t, err)
	require.NoError(t, srv.Shutdown(context.Background()))
	conn, err := udp.Listen("127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, srv.Serve(conn))
	_, err = conn.WriteToUDPAddrPort([]byte{0}, netip.MustParseAddrPort("127.0.0.1:9"))
	assert.True(t, errors.Is(err, net.ErrClosed))
}

func TestStartUDPPortInUse(t *testing.T) {
	busy, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.UDPAddr = busy.LocalAddr().String()
	c, err := chihaya.Start(&cfg)
	if c != nil {
		_ = c.Shutdown(context.Background())
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "udp_addr")
}

// waitForCounter waits until the counter with labels reaches at least want: requests are
// recorded after their answers are sent and aggregated every few milliseconds.
func waitForCounter(t *testing.T, c *chihaya.Chihaya, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var got float64
	for {
		got = counter(t, c, name, labels)
		if got >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	assert.GreaterOrEqual(t, got, want, "%s%v", name, labels)
}

func counter(t *testing.T, c *chihaya.Chihaya, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := c.Stats().Registry().Gather()
	require.NoError(t, err)
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if matches(m, labels) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := labels[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}
