package http

import (
	"bufio"
	"context"
	"io"
	"net"
	nethttp "net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/fast"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

// Tests of the seam with package fast (ServeFast) and of the tracker served through it over
// real connections. Package fast tests the connections themselves.

// TestServeFastAnswersAsNetHTTP: a request answered through ServeFast gets the same body as
// the same request through net/http, each on a fresh tracker; the body is appended after what
// the connection's output held, which stays as it was.
func TestServeFastAnswersAsNetHTTP(t *testing.T) {
	ih := ihOf('s')
	proxied := func(c *config.Config) {
		c.RealIPHeader = "X-Forwarded-For"
		c.TrustedProxies = []string{"10.0.0.0/8"}
	}
	for _, tc := range []struct {
		name    string
		mod     func(*config.Config)
		route   fast.Route
		passkey string
		query   string
		remote  string
		realIP  string // the X-Forwarded-For value, when set
		out     []byte // what the output held before
		want    string // a key or failure the answer has
	}{
		{name: "announce", route: fast.RouteAnnounce, query: announceQ(ih, 'a', 6881, 0), remote: "192.0.2.1:5555",
			out: []byte("HTTP/1.1 200 OK\r\n\r\nan answer before"), want: "external ip"},
		{name: "announce over IPv6", route: fast.RouteAnnounce, query: announceQ(ih, 'a', 6881, 10), remote: "[2001:db8::1]:5555", want: "external ip"},
		{name: "announce with a passkey in public mode", route: fast.RouteAnnounce, passkey: "0123456789abcdef0123456789abcdef",
			query: announceQ(ih, 'b', 6881, 0), remote: "192.0.2.1:5555", want: "external ip"},
		{name: "announce through a trusted proxy", mod: proxied, route: fast.RouteAnnounce, query: announceQ(ih, 'c', 6881, 0),
			remote: "10.0.0.1:5555", realIP: "203.0.113.7", want: "external ip"},
		{name: "announce with a bad real ip", mod: proxied, route: fast.RouteAnnounce, query: announceQ(ih, 'c', 6881, 0),
			remote: "10.0.0.1:5555", realIP: "not an address", want: "failure reason"},
		{name: "scrape", route: fast.RouteScrape, query: "info_hash=" + escapeBytes(ih[:]), remote: "192.0.2.1:5555",
			out: make([]byte, 3, 3), want: "files"},
		{name: "malformed announce", route: fast.RouteAnnounce, query: "info_hash=%G1", remote: "192.0.2.1:5555", want: "failure reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			remote := netip.MustParseAddrPort(tc.remote)
			fr := &fast.Request{
				Context: context.Background(),
				Route:   tc.route,
				Passkey: []byte(tc.passkey),
				Query:   []byte(tc.query),
				Remote:  remote,
				Start:   time.Now(),
			}
			if tc.realIP != "" {
				fr.RealIP, fr.HasRealIP = []byte(tc.realIP), true
			}
			before := string(tc.out)
			got := newTestServer(t, tc.mod).ServeFast(fr, tc.out)
			require.True(t, strings.HasPrefix(string(got), before), "the output before is kept: %q", got)
			body := got[len(before):]
			d := decodeDict(t, body)
			assert.Contains(t, d, tc.want)

			path := "/announce"
			if tc.route == fast.RouteScrape {
				path = "/scrape"
			}
			if tc.passkey != "" {
				path = "/" + tc.passkey + path
			}
			r := req{path: path, query: tc.query, remote: tc.remote}
			if tc.realIP != "" {
				r.header = nethttp.Header{"X-Forwarded-For": {tc.realIP}}
			}
			rec := serve(t, newTestServer(t, tc.mod).Handler(), r)
			assert.Equal(t, rec.Body.String(), string(body), "net/http answers the same")
			if ip, ok := d["external ip"].(string); ok {
				want := remote.Addr()
				if tc.realIP != "" {
					want = netip.MustParseAddr(tc.realIP)
				}
				assert.Equal(t, string(want.Unmap().AsSlice()), ip)
			}
		})
	}
}

// TestServeFastContext: the tracker runs a fast-path request under the context the fast path
// gives it (request_timeout, Shutdown), down to the driver.
func TestServeFastContext(t *testing.T) {
	cfg := config.Default()
	pool := &contextPool{}
	s := newTestServerPool(t, &cfg, pool)
	ctx := context.WithValue(context.Background(), ctxKey{}, "the fast path's")
	fr := &fast.Request{Context: ctx, Route: fast.RouteAnnounce, Query: []byte(announceQ(ihOf('x'), 'a', 6881, 0)),
		Remote: netip.MustParseAddrPort("192.0.2.1:5555"), Start: time.Now()}
	d := decodeDict(t, s.ServeFast(fr, nil))
	assert.NotContains(t, d, "failure reason")
	assert.Equal(t, "the fast path's", pool.seen)
}

type ctxKey struct{}

// contextPool is a swarm store that records the ctxKey value of the context of its announces.
type contextPool struct {
	fakeConn
	seen any
}

func (p *contextPool) Get() (tracker.Conn, error) { return p, nil }

func (p *contextPool) Announce(ctx context.Context, _ models.InfoHash, _ *tracker.PeerUpdate, _ *tracker.Selection, _ *tracker.AnnounceResult) error {
	p.seen = ctx.Value(ctxKey{})
	return nil
}

// startTrackerOn serves a fresh frontend on addr until the test ends, with /stats answering
// "stats of <query>".
func startTrackerOn(t *testing.T, addr string) string {
	t.Helper()
	s := newTestServer(t, nil)
	s.Handle("stats", nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		_, _ = io.WriteString(w, "stats of "+r.URL.RawQuery)
	}))
	return serveLoopback(t, s, "tcp", addr).String()
}

// TestFastPathLoopback runs the tracker's answers through the fast path on real connections:
// announces and scrapes answered by ServeFast, the rest by the router, in order.
func TestFastPathLoopback(t *testing.T) {
	ih := ihOf('l')
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			if ln, err := net.Listen("tcp", addr); err != nil {
				t.Skipf("no %s here: %v", addr, err)
			} else {
				_ = ln.Close()
			}
			srvAddr := startTrackerOn(t, addr)
			host, _, err := net.SplitHostPort(srvAddr)
			require.NoError(t, err)
			loop := netip.MustParseAddr(host)

			c, err := net.DialTimeout("tcp", srvAddr, 5*time.Second)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			br := bufio.NewReader(c)
			announce := "GET /announce?" + announceQ(ih, 'p', 7001, 10) + " HTTP/1.1\r\nHost: x\r\n\r\n"
			_, err = io.WriteString(c, announce+
				"GET /scrape?info_hash="+escapeBytes(ih[:])+" HTTP/1.1\r\n\r\n"+
				"GET /scrape?info_hash=short HTTP/1.1\r\n\r\n"+
				"GET /stats?x HTTP/1.1\r\nHost: x\r\n\r\n"+
				announce+
				"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
			require.NoError(t, err)
			var bodies []string
			for range 6 {
				res, err := nethttp.ReadResponse(br, nil)
				require.NoError(t, err)
				b, err := io.ReadAll(res.Body)
				require.NoError(t, err)
				bodies = append(bodies, string(b))
			}
			d := decodeDict(t, []byte(bodies[0]))
			// BEP 24: the socket's address, which the raw accept path reads itself.
			assert.Equal(t, string(loop.AsSlice()), d["external ip"])
			assert.EqualValues(t, 1800, d["interval"])
			assert.EqualValues(t, 1, d["incomplete"])
			assert.Contains(t, bodies[1], "5:filesd20:")
			assert.Contains(t, bodies[2], "failure reason")
			assert.Equal(t, "stats of x", bodies[3])
			assert.Contains(t, bodies[4], "d8:complete", "net/http answers announces too")
			assert.Contains(t, bodies[5], "this is a BitTorrent tracker", "net/http's 404")
		})
	}
}

func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		max, perIP int
		files      uint64
		wantMax    int
	}{
		{name: "derived from the open files limit", files: 4096, wantMax: 3584, perIP: 1024},
		{name: "derived from 1024 without one", wantMax: 896, perIP: 8},
		{name: "configured", max: 10, files: 4096, wantMax: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.MaxConnections, cfg.MaxConnectionsPerIP = tc.max, tc.perIP
			tkr, err := tracker.New(&cfg, memory.NewPool(1), noop.Conn{}, nil)
			require.NoError(t, err)
			var opts []Option
			if tc.files > 0 {
				opts = append(opts, WithFileLimit(tc.files))
			}
			s, err := NewServer(&cfg, tkr, opts...)
			require.NoError(t, err)
			maxConns, perIP := s.ConnectionLimits()
			assert.Equal(t, tc.wantMax, maxConns)
			assert.Equal(t, tc.perIP, perIP)
		})
	}
}
