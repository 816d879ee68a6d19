package http

import (
	"errors"
	"io"
	nethttp "net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

// newTestServer returns a frontend over a fresh memory swarm, with config.Default() changed by
// mod.
func newTestServer(t *testing.T, mod func(*config.Config)) *Server {
	t.Helper()
	cfg := config.Default()
	if mod != nil {
		mod(&cfg)
	}
	return newTestServerPool(t, &cfg, memory.NewPool(8))
}

func newTestServerPool(t *testing.T, cfg *config.Config, pool tracker.Pool) *Server {
	t.Helper()
	tkr, err := tracker.New(cfg, pool, noop.Conn{}, nil)
	require.NoError(t, err)
	s, err := NewServer(cfg, tkr)
	require.NoError(t, err)
	return s
}

type req struct {
	path   string // "/announce" unless set
	query  string
	remote string // "192.0.2.1:1234" unless set
	header nethttp.Header
	method string
}

func serve(t *testing.T, h nethttp.Handler, r req) *httptest.ResponseRecorder {
	t.Helper()
	if r.path == "" {
		r.path = "/announce"
	}
	if r.method == "" {
		r.method = nethttp.MethodGet
	}
	hr := httptest.NewRequest(r.method, r.path, nil)
	// Set the raw query directly, so that the test, not httptest's URL parser, decides its bytes.
	hr.URL.RawQuery = r.query
	hr.RemoteAddr = r.remote
	if hr.RemoteAddr == "" {
		hr.RemoteAddr = "192.0.2.1:1234"
	}
	for k, vs := range r.header {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, hr)
	return rec
}

// bencoded checks the HTTP conventions of a tracker answer (§1.6) and returns its dictionary.
func bencoded(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	res := rec.Result()
	require.Equal(t, nethttp.StatusOK, res.StatusCode, "body %q", rec.Body.Bytes())
	assert.Equal(t, []string{"text/plain"}, res.Header.Values("Content-Type"))
	assert.Equal(t, []string{strconv.Itoa(rec.Body.Len())}, res.Header.Values("Content-Length"))
	assert.Empty(t, res.TransferEncoding)
	return decodeDict(t, rec.Body.Bytes())
}

// announceQ is an announce for info hash ih by the peer whose ID is 20 copies of id.
func announceQ(ih models.InfoHash, id byte, port int, left int, extra ...string) string {
	parts := []string{
		"info_hash=" + escapeBytes(ih[:]),
		"peer_id=" + strings.Repeat(string(rune(id)), 20),
		"port=" + strconv.Itoa(port),
		"uploaded=0", "downloaded=0",
		"left=" + strconv.Itoa(left),
	}
	return strings.Join(append(parts, extra...), "&")
}

func escapeBytes(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		sb.WriteString("%")
		sb.WriteString(strings.ToUpper(strconv.FormatInt(int64(c)>>4, 16)))
		sb.WriteString(strings.ToUpper(strconv.FormatInt(int64(c)&15, 16)))
	}
	return sb.String()
}

// peersOf returns every peer endpoint of an announce answer, compact or not, sorted.
func peersOf(t *testing.T, d map[string]any) []string {
	t.Helper()
	var out []string
	switch p := d["peers"].(type) {
	case string:
		require.Zero(t, len(p)%6, "compact peers length")
		for i := 0; i < len(p); i += 6 {
			ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte([]byte(p[i:i+4]))), uint16(p[i+4])<<8|uint16(p[i+5]))
			out = append(out, ap.String())
		}
	case []any:
		for _, e := range p {
			m := e.(map[string]any)
			ap := netip.AddrPortFrom(netip.MustParseAddr(m["ip"].(string)), uint16(m["port"].(int64)))
			out = append(out, ap.String())
		}
	default:
		t.Fatalf("peers is %T", d["peers"])
	}
	if p6, ok := d["peers6"].(string); ok {
		require.Zero(t, len(p6)%18, "compact peers6 length")
		for i := 0; i < len(p6); i += 18 {
			ap := netip.AddrPortFrom(netip.AddrFrom16([16]byte([]byte(p6[i:i+16]))), uint16(p6[i+16])<<8|uint16(p6[i+17]))
			out = append(out, ap.String())
		}
	}
	sort.Strings(out)
	return out
}

func ihOf(c byte) models.InfoHash {
	var ih models.InfoHash
	for i := range ih {
		ih[i] = c
	}
	return ih
}

type failingPool struct{}

func (failingPool) Get() (tracker.Conn, error) { return nil, errors.New("storage is on fire") }
func (failingPool) Close() error               { return nil }

func TestFailures(t *testing.T) {
	ih := ihOf('h')
	for _, tc := range []struct {
		name   string
		mod    func(*config.Config)
		pool   tracker.Pool
		req    req
		reason string
	}{
		{name: "announce with a malformed escape", req: req{query: "info_hash=%G1"}, reason: "malformed request"},
		{name: "announce with a trailing percent", req: req{query: announceQ(ih, 'a', 1, 0) + "&key=%"}, reason: "malformed request"},
		{name: "announce with too many parameters", req: req{query: announceQ(ih, 'a', 1, 0) + strings.Repeat("&x=1", 300)}, reason: "malformed request"},
		{name: "announce without info_hash", req: req{query: "peer_id=" + strings.Repeat("a", 20)}, reason: "missing info_hash"},
		{name: "announce with a short info_hash", req: req{query: "info_hash=abc"}, reason: "invalid info_hash"},
		{name: "announce with two info_hash", req: req{query: announceQ(ih, 'a', 1, 0) + "&info_hash=" + strings.Repeat("b", 20)}, reason: "info_hash or peer_id given more than once"},
		{name: "announce without peer_id", req: req{query: "info_hash=" + strings.Repeat("a", 20)}, reason: "No peer ID"},
		{name: "announce with port 0", req: req{query: announceQ(ih, 'a', 0, 0)}, reason: "invalid port"},
		{name: "announce with port 65536", req: req{query: announceQ(ih, 'a', 65536, 0)}, reason: "invalid port"},
		{name: "announce with negative left", req: req{query: announceQ(ih, 'a', 1, -1)}, reason: "invalid numeric parameter"},
		{name: "announce with an unknown event", req: req{query: announceQ(ih, 'a', 1, 0, "event=bogus")}, reason: "invalid event"},
		{name: "passkey announce failure", req: req{path: "/0123456789abcdef0123456789abcdef/announce", query: "x=1"}, reason: "missing info_hash"},
		{name: "announce with a spoofed bad ip", mod: func(c *config.Config) { c.AllowIPSpoofing = true },
			req: req{query: announceQ(ih, 'a', 1, 0, "ip=tracker.example.org")}, reason: "invalid ip address"},
		{name: "announce with ipv4= holding an ipv6 address", mod: func(c *config.Config) { c.AllowIPSpoofing = true },
			req: req{query: announceQ(ih, 'a', 1, 0, "ipv4=%3A%3A1")}, reason: "invalid ip address"},
		{name: "announce via a trusted proxy with a bad header",
			mod:    func(c *config.Config) { c.RealIPHeader = "X-Real-IP"; c.TrustedProxies = []string{"10.0.0.0/8"} },
			req:    req{query: announceQ(ih, 'a', 1, 0), remote: "10.0.0.1:1", header: nethttp.Header{"X-Real-Ip": {"not an address"}}},
			reason: "invalid ip address"},
		{name: "announce from a client off the whitelist",
			mod: func(c *config.Config) { c.ClientWhitelistEnabled = true; c.ClientWhitelist = []string{"-qB"} },
			req: req{query: announceQ(ih, 'a', 1, 0)}, reason: "Your client is not on the whitelist"},
		{name: "announce when storage fails", pool: failingPool{}, req: req{query: announceQ(ih, 'a', 1, 0)},
			reason: "internal tracker error, try again later"},
		{name: "scrape without info_hash", req: req{path: "/scrape"}, reason: "missing info_hash"},
		{name: "scrape with a malformed escape", req: req{path: "/scrape", query: "info_hash=%zz"}, reason: "malformed request"},
		{name: "scrape with a 21-byte hash", req: req{path: "/scrape", query: "info_hash=" + strings.Repeat("a", 21)}, reason: "invalid info_hash"},
		{name: "scrape with 75 hashes", req: req{path: "/scrape", query: strings.Repeat("info_hash="+strings.Repeat("a", 20)+"&", 75)},
			reason: "too many info_hash values in one scrape"},
		{name: "passkey scrape failure", req: req{path: "/pk/scrape"}, reason: "missing info_hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			pool := tc.pool
			if pool == nil {
				pool = memory.NewPool(4)
			}
			s := newTestServerPool(t, &cfg, pool)
			d := bencoded(t, serve(t, s.Handler(), tc.req))
			assert.Equal(t, map[string]any{
				"failure reason": tc.reason,
				"interval":       int64(cfg.Announce.Duration.Seconds()),
				"min interval":   int64(cfg.MinAnnounce.Duration.Seconds()),
			}, d)
		})
	}
}

func TestFailureIntervalsFollowConfig(t *testing.T) {
	s := newTestServer(t, func(c *config.Config) {
		c.Announce.Duration = 90 * 60e9
		c.MinAnnounce.Duration = 30e9
	})
	d := bencoded(t, serve(t, s.Handler(), req{query: "x=1"}))
	assert.Equal(t, int64(5400), d["interval"])
	assert.Equal(t, int64(30), d["min interval"])
}

func TestNotFound(t *testing.T) {
	s := newTestServer(t, nil)
	for _, tc := range []struct {
		name   string
		path   string
		method string
	}{
		{name: "root", path: "/"},
		{name: "unknown one segment", path: "/foo"},
		{name: "php-style announce", path: "/announce.php"},
		{name: "case matters", path: "/Announce"},
		{name: "unknown action after passkey", path: "/passkey/foo"},
		{name: "three segments", path: "/a/b/announce"},
		{name: "trailing slash", path: "/announce/"},
		{name: "extra handler name under a passkey", path: "/pk/stats"},
		{name: "POST announce", path: "/announce", method: nethttp.MethodPost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, s.Handler(), req{path: tc.path, method: tc.method, query: announceQ(ihOf(1), 'a', 1, 0)})
			assert.Equal(t, nethttp.StatusNotFound, rec.Code)
			assert.Equal(t, "text/plain", rec.Header().Get("Content-Type"))
			assert.Contains(t, rec.Body.String(), "404")
		})
	}
}

func TestPasskeyRoutesInPublicMode(t *testing.T) {
	s := newTestServer(t, nil)
	ih := ihOf(0xab)
	d := bencoded(t, serve(t, s.Handler(), req{path: "/0123456789abcdef0123456789abcdef/announce", query: announceQ(ih, 'a', 6881, 0)}))
	assert.Equal(t, int64(1), d["complete"])
	assert.NotContains(t, d, "failure reason")

	// The same swarm is reachable through a different passkey and without one.
	d = bencoded(t, serve(t, s.Handler(), req{path: "/announce", query: announceQ(ih, 'b', 6882, 10), remote: "192.0.2.2:1"}))
	assert.Equal(t, []string{"192.0.2.1:6881"}, peersOf(t, d))
	d = bencoded(t, serve(t, s.Handler(), req{path: "/other/scrape", query: "info_hash=" + escapeBytes(ih[:])}))
	assert.Equal(t, map[string]any{"files": map[string]any{string(ih[:]): map[string]any{
		"complete": int64(1), "downloaded": int64(0), "incomplete": int64(1),
	}}}, d)
}

// TestIPResolution checks which address a peer is stored under, as a second announcer sees it,
// and what the tracker reports back as "external ip".
func TestIPResolution(t *testing.T) {
	spoof := func(c *config.Config) { c.AllowIPSpoofing = true }
	proxied := func(c *config.Config) {
		c.RealIPHeader = "X-Forwarded-For"
		c.TrustedProxies = []string{"10.0.0.0/8", "::1"}
	}
	bothHeaders := nethttp.Header{"X-Forwarded-For": {"203.0.113.6"}, "X-Real-Ip": {"203.0.113.5"}}
	for _, tc := range []struct {
		name     string
		mod      func(*config.Config)
		remote   string
		extra    []string
		header   nethttp.Header
		seen     []string // endpoints the observer gets for the announcer
		external string
	}{
		{
			name:   "socket address by default, ip params and headers ignored",
			remote: "192.0.2.1:5555", extra: []string{"ip=198.51.100.7", "ipv4=198.51.100.8", "ipv6=2001%3Adb8%3A%3A9"}, header: bothHeaders,
			seen: []string{"192.0.2.1:6881"}, external: "192.0.2.1",
		},
		{
			name: "anacrolix-style ip and ipv4 ignored by default", remote: "192.0.2.1:5555", extra: []string{"ip=10.9.8.7", "ipv4=10.9.8.7"},
			seen: []string{"192.0.2.1:6881"}, external: "192.0.2.1",
		},
		{
			name: "ipv6 socket address", remote: "[2001:db8::1]:5555", extra: []string{"ip=198.51.100.7"},
			seen: []string{"[2001:db8::1]:6881"}, external: "2001:db8::1",
		},
		{
			name: "ipv4-mapped socket address is stored as ipv4", remote: "[::ffff:192.0.2.9]:5555",
			seen: []string{"192.0.2.9:6881"}, external: "192.0.2.9",
		},
		{
			name: "zone is dropped", remote: "[fe80::1%eth0]:5555",
			seen: []string{"[fe80::1]:6881"}, external: "fe80::1",
		},
		{
			name: "spoofing: ip replaces the address", mod: spoof, remote: "192.0.2.1:5555", extra: []string{"ip=198.51.100.7"},
			seen: []string{"198.51.100.7:6881"}, external: "192.0.2.1",
		},
		{
			name: "spoofing: ip with a port", mod: spoof, remote: "192.0.2.1:5555", extra: []string{"ip=198.51.100.7%3A7000"},
			seen: []string{"198.51.100.7:7000"}, external: "192.0.2.1",
		},
		{
			name: "spoofing: ipv6 adds the other family", mod: spoof, remote: "192.0.2.1:5555", extra: []string{"ipv6=2001%3Adb8%3A%3A9"},
			seen: []string{"192.0.2.1:6881", "[2001:db8::9]:6881"}, external: "192.0.2.1",
		},
		{
			name: "spoofing: bracketed ipv6 endpoint with port", mod: spoof, remote: "192.0.2.1:5555", extra: []string{"ipv6=%5B2001%3Adb8%3A%3A9%5D%3A7777"},
			seen: []string{"192.0.2.1:6881", "[2001:db8::9]:7777"}, external: "192.0.2.1",
		},
		{
			name: "spoofing: ipv4 from an ipv6 socket", mod: spoof, remote: "[2001:db8::1]:5555", extra: []string{"ipv4=198.51.100.8"},
			seen: []string{"198.51.100.8:6881", "[2001:db8::1]:6881"}, external: "2001:db8::1",
		},
		{
			name: "spoofing does not honour the real ip header", mod: spoof, remote: "192.0.2.1:5555", header: bothHeaders,
			seen: []string{"192.0.2.1:6881"}, external: "192.0.2.1",
		},
		{
			name: "trusted proxy: header address", mod: proxied, remote: "10.1.2.3:5555", header: nethttp.Header{"X-Forwarded-For": {"203.0.113.6"}},
			seen: []string{"203.0.113.6:6881"}, external: "203.0.113.6",
		},
		{
			name: "trusted proxy: last address of a list", mod: proxied, remote: "10.1.2.3:5555", header: nethttp.Header{"X-Forwarded-For": {"1.1.1.1, 203.0.113.6"}},
			seen: []string{"203.0.113.6:6881"}, external: "203.0.113.6",
		},
		{
			name: "trusted proxy: last header line", mod: proxied, remote: "10.1.2.3:5555", header: nethttp.Header{"X-Forwarded-For": {"1.1.1.1", "203.0.113.7"}},
			seen: []string{"203.0.113.7:6881"}, external: "203.0.113.7",
		},
		{
			name: "trusted proxy: ipv6 client", mod: proxied, remote: "10.1.2.3:5555", header: nethttp.Header{"X-Forwarded-For": {"2001:db8::77"}},
			seen: []string{"[2001:db8::77]:6881"}, external: "2001:db8::77",
		},
		{
			name: "trusted ipv6 proxy", mod: proxied, remote: "[::1]:5555", header: nethttp.Header{"X-Forwarded-For": {"203.0.113.8"}},
			seen: []string{"203.0.113.8:6881"}, external: "203.0.113.8",
		},
		{
			name: "trusted proxy without the header", mod: proxied, remote: "10.1.2.3:5555",
			seen: []string{"10.1.2.3:6881"}, external: "10.1.2.3",
		},
		{
			name: "trusted proxy: other header ignored", mod: proxied, remote: "10.1.2.3:5555", header: nethttp.Header{"X-Real-Ip": {"203.0.113.5"}},
			seen: []string{"10.1.2.3:6881"}, external: "10.1.2.3",
		},
		{
			name: "untrusted remote: header ignored", mod: proxied, remote: "192.0.2.1:5555", header: nethttp.Header{"X-Forwarded-For": {"203.0.113.6"}},
			seen: []string{"192.0.2.1:6881"}, external: "192.0.2.1",
		},
		{
			name: "trusted proxy: ip params still ignored without spoofing", mod: proxied, remote: "10.1.2.3:5555",
			header: nethttp.Header{"X-Forwarded-For": {"203.0.113.6"}}, extra: []string{"ip=198.51.100.7"},
			seen: []string{"203.0.113.6:6881"}, external: "203.0.113.6",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, tc.mod)
			ih := ihOf(0x42)
			d := bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'a', 6881, 100, tc.extra...), remote: tc.remote, header: tc.header}))
			assert.Equal(t, string(netip.MustParseAddr(tc.external).AsSlice()), d["external ip"])

			// An observer elsewhere gets the announcer's stored endpoints, in either family.
			obs := bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'o', 1, 100), remote: "198.18.0.1:1"}))
			assert.Equal(t, tc.seen, peersOf(t, obs))
			assert.Equal(t, string(netip.MustParseAddr("198.18.0.1").AsSlice()), obs["external ip"])
		})
	}
}

// TestDualStack announces one peer ID over IPv4 and over IPv6: each endpoint is kept and handed
// out in its own family.
func TestDualStack(t *testing.T) {
	ih := ihOf(0x77)
	const x = "192.0.2.10:5000"
	const x6 = "[2001:db8::10]:5000"
	for _, tc := range []struct {
		name     string
		mod      func(*config.Config)
		observer string
		extra    []string
		seen     []string
		peers6   bool
	}{
		{name: "compact to an ipv4 observer", observer: "198.18.0.1:1",
			seen: []string{"192.0.2.10:6881", "[2001:db8::10]:6881"}, peers6: true},
		{name: "compact to an ipv6 observer", observer: "[2001:db8::99]:1",
			seen: []string{"192.0.2.10:6881", "[2001:db8::10]:6881"}, peers6: true},
		{name: "dict peers carry both in one list", observer: "198.18.0.1:1", extra: []string{"compact=0"},
			seen: []string{"192.0.2.10:6881", "[2001:db8::10]:6881"}},
		{name: "without dual_stacked_peers an ipv4 observer gets ipv4 only",
			mod: func(c *config.Config) { c.DualStackedPeers = false }, observer: "198.18.0.1:1",
			seen: []string{"192.0.2.10:6881"}},
		{name: "without dual_stacked_peers an ipv6 observer gets ipv6 only",
			mod: func(c *config.Config) { c.DualStackedPeers = false }, observer: "[2001:db8::99]:1",
			seen: []string{"[2001:db8::10]:6881"}, peers6: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, tc.mod)
			d4 := bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'x', 6881, 100), remote: x}))
			assert.Equal(t, "\xc0\x00\x02\x0a", d4["external ip"])
			d6 := bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'x', 6881, 100), remote: x6}))
			assert.Len(t, d6["external ip"], 16)
			// The two endpoints are two entries of the swarm.
			assert.Equal(t, int64(2), d6["incomplete"])

			obs := bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'o', 1, 100, tc.extra...), remote: tc.observer}))
			assert.Equal(t, tc.seen, peersOf(t, obs))
			_, has6 := obs["peers6"]
			assert.Equal(t, tc.peers6, has6)
			if list, ok := obs["peers"].([]any); ok {
				for _, p := range list {
					// The memory driver keeps a hash of each peer ID, not the ID.
					assert.NotContains(t, p.(map[string]any), "peer id")
				}
			}
		})
	}
}

func TestStoppedOverOneFamilyKeepsTheOther(t *testing.T) {
	s := newTestServer(t, nil)
	ih := ihOf(0x78)
	bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'x', 6881, 100), remote: "192.0.2.10:1"}))
	bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'x', 6881, 100), remote: "[2001:db8::10]:1"}))
	bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'x', 6881, 100, "event=stopped"), remote: "192.0.2.10:1"}))
	obs := bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'o', 1, 100), remote: "198.18.0.1:1"}))
	assert.Equal(t, []string{"[2001:db8::10]:6881"}, peersOf(t, obs))
}

func TestAnnounceAndScrapeAnswers(t *testing.T) {
	s := newTestServer(t, nil)
	ih := models.InfoHash([]byte("+&%=\x00\xff bin hash +&%="))
	d := bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 's', 6881, 0, "event=started")}))
	assert.Equal(t, map[string]any{
		"complete": int64(1), "incomplete": int64(0), "downloaded": int64(0),
		"external ip": "\xc0\x00\x02\x01", "interval": int64(1800), "min interval": int64(900),
		"peers": "",
	}, d)

	d = bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'l', 7000, 5, "compact=0"), remote: "198.51.100.1:1"}))
	// Dictionary peers without "peer id": the memory driver keeps a hash of each peer ID.
	assert.Equal(t, []any{map[string]any{"ip": "192.0.2.1", "port": int64(6881)}}, d["peers"])

	d = bencoded(t, serve(t, s.Handler(), req{query: announceQ(ih, 'l', 7000, 5, "compact=0", "no_peer_id=1"), remote: "198.51.100.1:1"}))
	assert.Equal(t, []any{map[string]any{"ip": "192.0.2.1", "port": int64(6881)}}, d["peers"])

	// The same hash written with literal "+" where the escapes allow it is the same torrent.
	unknown := ihOf(9)
	raw := "info_hash=+%26%25%3D%00%FF%20bin%20hash%20+%26%25%3D&info_hash=" + escapeBytes(unknown[:])
	d = bencoded(t, serve(t, s.Handler(), req{path: "/scrape", query: raw}))
	assert.Equal(t, map[string]any{"files": map[string]any{
		string(ih[:]): map[string]any{"complete": int64(1), "downloaded": int64(0), "incomplete": int64(1)},
		// An unknown torrent is answered with zeros.
		string(unknown[:]): map[string]any{"complete": int64(0), "downloaded": int64(0), "incomplete": int64(0)},
	}}, d)

	// A "+" is never a space: this hash differs from ih in its spaces.
	raw = "info_hash=+%26%25%3D%00%FF+bin+hash++%26%25%3D"
	d = bencoded(t, serve(t, s.Handler(), req{path: "/scrape", query: raw}))
	assert.Equal(t, int64(0), d["files"].(map[string]any)["+&%=\x00\xff+bin+hash++&%="].(map[string]any)["complete"])
}

func TestPanicAnswers500(t *testing.T) {
	s := newTestServer(t, nil)
	s.Handle("boom", nethttp.HandlerFunc(func(nethttp.ResponseWriter, *nethttp.Request) { panic("kaboom") }))
	s.Handle("ok", nethttp.HandlerFunc(func(w nethttp.ResponseWriter, _ *nethttp.Request) { _, _ = io.WriteString(w, "fine") }))

	t.Run("recorder", func(t *testing.T) {
		rec := serve(t, s.Handler(), req{path: "/boom"})
		assert.Equal(t, nethttp.StatusInternalServerError, rec.Code)
	})

	t.Run("real connections", func(t *testing.T) {
		ts := httptest.NewServer(s.Handler())
		t.Cleanup(ts.Close)
		for range 3 {
			res, err := ts.Client().Get(ts.URL + "/boom")
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			assert.Equal(t, nethttp.StatusInternalServerError, res.StatusCode)
		}
		// The process and the server survived: other handlers and announces still work.
		res, err := ts.Client().Get(ts.URL + "/ok")
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		assert.Equal(t, "fine", string(body))

		ih := ihOf(0x55)
		res, err = ts.Client().Get(ts.URL + "/announce?" + announceQ(ih, 'a', 1, 0))
		require.NoError(t, err)
		body, _ = io.ReadAll(res.Body)
		_ = res.Body.Close()
		assert.Equal(t, nethttp.StatusOK, res.StatusCode)
		assert.Equal(t, int64(1), decodeDict(t, body)["complete"])
	})
}

func TestExtraHandler(t *testing.T) {
	s := newTestServer(t, nil)
	s.Handle("stats", nethttp.HandlerFunc(func(w nethttp.ResponseWriter, _ *nethttp.Request) { _, _ = io.WriteString(w, "{}") }))
	rec := serve(t, s.Handler(), req{path: "/stats"})
	assert.Equal(t, nethttp.StatusOK, rec.Code)
	assert.Equal(t, "{}", rec.Body.String())
}

// countingRW fails every body write, as a connection whose client went away does, and counts
// the calls.
type countingRW struct {
	*httptest.ResponseRecorder
	headers, writes int
}

func (c *countingRW) WriteHeader(code int) { c.headers++; c.ResponseRecorder.WriteHeader(code) }
func (c *countingRW) Write([]byte) (int, error) {
	c.writes++
	return 0, errWrite
}

// TestWriteErrorIsNotAnsweredTwice checks that an answer the client could not receive is not
// followed by a second, "internal error" answer on the same response.
func TestWriteErrorIsNotAnsweredTwice(t *testing.T) {
	s := newTestServer(t, nil)
	for _, tc := range []struct {
		name string
		req  req
	}{
		{name: "announce", req: req{query: announceQ(ihOf(1), 'a', 1, 0)}},
		{name: "scrape", req: req{path: "/scrape", query: "info_hash=" + strings.Repeat("a", 20)}},
		{name: "failure", req: req{query: "x=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.req.path
			if path == "" {
				path = "/announce"
			}
			hr := httptest.NewRequest(nethttp.MethodGet, path+"?"+tc.req.query, nil)
			rw := &countingRW{ResponseRecorder: httptest.NewRecorder()}
			s.Handler().ServeHTTP(rw, hr)
			assert.Equal(t, 1, rw.headers, "WriteHeader calls")
			assert.Equal(t, 1, rw.writes, "Write calls")
		})
	}
	// The next request through the same pooled scratch is answered normally.
	d := bencoded(t, serve(t, s.Handler(), req{query: "x=1"}))
	assert.Equal(t, "missing info_hash", d["failure reason"])
}
