package udp

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

func TestConnect(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"exact", connectPacket(0xdeadbeef)},
		{"with extension bytes", append(connectPacket(0xdeadbeef), 1, 2, 3, 4, 5, 6, 7, 8)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(tc.pkt, v4Client)
			require.Len(t, resp, connectRespLen, "a connect is answered with 16 bytes")
			assert.Equal(t, actionConnect, binary.BigEndian.Uint32(resp[0:]))
			assert.Equal(t, uint32(0xdeadbeef), binary.BigEndian.Uint32(resp[4:]))
			id := binary.BigEndian.Uint64(resp[8:])
			assert.Equal(t, e.connID(v4Client), id)
			assert.NotEqual(t, protocolID, id)
		})
	}
	// The ID is bound to the address, not the port.
	a := binary.BigEndian.Uint64(e.do(connectPacket(1), v4Client)[8:])
	b := binary.BigEndian.Uint64(e.do(connectPacket(1), v4Client2)[8:])
	c := binary.BigEndian.Uint64(e.do(connectPacket(1), netip.AddrPortFrom(v4Client.Addr(), 40001))[8:])
	d := binary.BigEndian.Uint64(e.do(connectPacket(1), v6Client)[8:])
	assert.Len(t, map[uint64]bool{a: true, b: true, d: true}, 3)
	assert.Equal(t, a, c, "another port of the same address")
	// An IPv4-mapped source is the same client as the plain IPv4 one.
	assert.Equal(t, a, binary.BigEndian.Uint64(e.do(connectPacket(1), mappedClient)[8:]))
}

func TestShortPacketsGetNoAnswer(t *testing.T) {
	e := newEnv(t, nil)
	full := connectPacket(7)
	for n := 0; n < headerLen; n++ {
		assert.Empty(t, e.do(full[:n], v4Client), "%d bytes", n)
	}
}

func TestUnauthenticatedErrorsAreNoLargerThanTheRequest(t *testing.T) {
	e := newEnv(t, nil)
	bad := uint64(0x1122334455667788)
	ann := announcePacket(bad, 5, ann{peerID: "p", port: 1})
	for _, tc := range []struct {
		name string
		pkt  []byte
		want models.ClientError
	}{
		{"connect without the protocol ID", headerPacket(bad, actionConnect, 5), models.ErrBadProtocolID},
		{"announce with a bad connection ID", ann, models.ErrBadConnectionID},
		{"announce header only, bad connection ID", ann[:headerLen], models.ErrBadConnectionID},
		{"scrape with a bad connection ID", scrapePacket(bad, 5, hashOf("a")), models.ErrBadConnectionID},
		{"scrape header only, bad connection ID", headerPacket(bad, actionScrape, 5), models.ErrBadConnectionID},
		{"error action from a client", headerPacket(bad, actionError, 5), models.ErrUnknownAction},
		{"unknown action 4", headerPacket(e.connID(v4Client), 4, 5), models.ErrUnknownAction},
		{"unknown action 0xffffffff", append(headerPacket(0, 0xffffffff, 5), make([]byte, 100)...), models.ErrUnknownAction},
		{"connect with a connection ID", headerPacket(e.connID(v4Client), actionConnect, 5), models.ErrBadProtocolID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(tc.pkt, v4Client)
			require.NotEmpty(t, resp)
			assert.LessOrEqual(t, len(resp), len(tc.pkt), "no amplification")
			tx, msg := decodeError(t, resp)
			assert.Equal(t, uint32(5), tx)
			assert.True(t, strings.HasPrefix(string(tc.want), msg), "%q is not a prefix of %q", msg, tc.want)
			if len(tc.pkt) >= errorHdrLen+len(tc.want) {
				assert.Equal(t, string(tc.want), msg, "the whole text when it fits")
			}
		})
	}
}

func TestConnectionIDLifetime(t *testing.T) {
	e := newEnv(t, nil)
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		issuedAt time.Duration // into a minute
		accepted []time.Duration
		rejected []time.Duration
	}{
		{
			name:     "issued at the start of a minute",
			issuedAt: 0,
			accepted: []time.Duration{0, 59 * time.Second, 60 * time.Second, 119*time.Second + 999*time.Millisecond},
			rejected: []time.Duration{120 * time.Second, 10 * time.Minute},
		},
		{
			name:     "issued at the end of a minute",
			issuedAt: 59*time.Second + 999*time.Millisecond,
			accepted: []time.Duration{0, time.Millisecond, 60 * time.Second},
			rejected: []time.Duration{60*time.Second + time.Millisecond, 2 * time.Minute},
		},
		{
			name:     "issued mid-minute",
			issuedAt: 30 * time.Second,
			accepted: []time.Duration{0, 89 * time.Second},
			rejected: []time.Duration{90 * time.Second, -31 * time.Second},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			issued := base.Add(tc.issuedAt)
			e.clock.set(issued)
			id := binary.BigEndian.Uint64(e.do(connectPacket(1), v4Client)[8:])
			pkt := scrapePacket(id, 2, hashOf("x"))
			for _, d := range tc.accepted {
				e.clock.set(issued.Add(d))
				resp := e.do(pkt, v4Client)
				assert.Equal(t, actionScrape, binary.BigEndian.Uint32(resp), "rejected %v after issue", d)
			}
			for _, d := range tc.rejected {
				e.clock.set(issued.Add(d))
				_, msg := decodeError(t, e.do(pkt, v4Client))
				assert.Equal(t, string(models.ErrBadConnectionID), msg, "accepted %v after issue", d)
			}
			// Never from another address; from another port of the same address, yes
			// (libtorrent shares one ID among its sockets).
			e.clock.set(issued)
			_, msg := decodeError(t, e.do(pkt, v4Client2))
			assert.Equal(t, string(models.ErrBadConnectionID), msg)
			resp := e.do(pkt, netip.AddrPortFrom(v4Client.Addr(), v4Client.Port()+1))
			assert.Equal(t, actionScrape, binary.BigEndian.Uint32(resp), "rejected from another port")
		})
	}
	// Another process (another secret) does not accept this one's IDs.
	other := newEnv(t, nil)
	other.clock.set(e.clock.now())
	_, msg := decodeError(t, other.do(scrapePacket(e.connID(v4Client), 2, hashOf("x")), v4Client))
	assert.Equal(t, string(models.ErrBadConnectionID), msg)
}

// announce sends a from `from` with a fresh connection ID and decodes the answer.
func (e *env) announce(t *testing.T, from netip.AddrPort, a ann, options ...byte) announceResp {
	t.Helper()
	resp := e.do(announcePacket(e.connID(from), 42, a, options...), from)
	if binary.BigEndian.Uint32(resp) == actionError {
		_, msg := decodeError(t, resp)
		t.Fatalf("announce failed: %s", msg)
	}
	r := decodeAnnounce(t, resp, models.FamilyOf(from.Addr()) == models.IPv6)
	require.Equal(t, uint32(42), r.txID)
	return r
}

// announceErr sends a from `from` and returns the error packet's text.
func (e *env) announceErr(t *testing.T, from netip.AddrPort, a ann, options ...byte) string {
	t.Helper()
	tx, msg := decodeError(t, e.do(announcePacket(e.connID(from), 43, a, options...), from))
	require.Equal(t, uint32(43), tx)
	return msg
}

func TestAnnounce(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Announce.Duration = 20 * time.Minute; c.MinAnnounce.Duration = time.Minute })
	ih := hashOf("announce-test-hash")
	seed := e.announce(t, v4Client, ann{infoHash: ih, peerID: "seeder", left: 0, event: 2, numWant: -1, port: 6001})
	assert.Equal(t, uint32(1200), seed.interval, "interval in seconds")
	assert.Equal(t, uint32(1), seed.seeders)
	assert.Equal(t, uint32(0), seed.leechers)
	assert.Empty(t, seed.peers)

	e.announce(t, v6Client, ann{infoHash: ih, peerID: "v6-seeder", left: 0, event: 2, port: 6002})
	// An IPv4 leecher gets 6-byte peers: the IPv4 seeder only.
	l4 := e.announce(t, v4Client2, ann{infoHash: ih, peerID: "v4-leecher", left: 100, event: 2, numWant: 50, port: 6003})
	assert.Equal(t, uint32(2), l4.seeders)
	assert.Equal(t, uint32(1), l4.leechers, "leechers come before seeders")
	assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(v4Client.Addr(), 6001)}, l4.peers)
	// An IPv6 leecher gets 18-byte peers: the IPv6 seeder only.
	l6 := e.announce(t, v6Client2, ann{infoHash: ih, peerID: "v6-leecher", left: 100, event: 2, numWant: 50, port: 6004})
	assert.Equal(t, uint32(2), l6.seeders)
	assert.Equal(t, uint32(2), l6.leechers)
	assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(v6Client.Addr(), 6002)}, l6.peers)
	// A client on a dual-stack socket (IPv4-mapped) is IPv4 and is stored as such.
	m := e.announce(t, netip.AddrPortFrom(mappedClient.Addr(), 1234), ann{infoHash: ih, peerID: "mapped", left: 100, numWant: 50, port: 6005})
	assert.Contains(t, m.peers, netip.AddrPortFrom(v4Client.Addr(), 6001))
	l4 = e.announce(t, v4Client2, ann{infoHash: ih, peerID: "v4-leecher", left: 100, numWant: 50, port: 6003})
	assert.Contains(t, l4.peers, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), 6005))

	// stopped: no peers, and the peer leaves.
	st := e.announce(t, v4Client2, ann{infoHash: ih, peerID: "v4-leecher", left: 100, event: 3, numWant: 50, port: 6003})
	assert.Empty(t, st.peers)
	assert.Equal(t, uint32(2), st.leechers)
	// completed with left 0 makes a seeder and counts a snatch.
	e.announce(t, v6Client2, ann{infoHash: ih, peerID: "v6-leecher", left: 0, event: 1, port: 6004})
	resp := e.do(scrapePacket(e.connID(v4Client), 3, ih), v4Client)
	require.Len(t, resp, 8+12)
	assert.Equal(t, []uint32{3, 1, 1}, []uint32{binary.BigEndian.Uint32(resp[8:]), binary.BigEndian.Uint32(resp[12:]), binary.BigEndian.Uint32(resp[16:])})
}

func TestAnnounceNumWant(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.DefaultNumWant = 3; c.MaxNumWant = 5 })
	ih := hashOf("numwant-test-hash")
	for i := range 8 {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}), 1000)
		e.announce(t, from, ann{infoHash: ih, peerID: "seed" + string(rune('a'+i)), port: 7000, numWant: 0})
	}
	leecher := netip.MustParseAddrPort("10.2.0.1:1000")
	for _, tc := range []struct {
		numWant int32
		want    int
	}{{-1, 3}, {-100, 3}, {0, 0}, {2, 2}, {5, 5}, {1000, 5}} {
		r := e.announce(t, leecher, ann{infoHash: ih, peerID: "leecher", left: 1, numWant: tc.numWant, port: 7001})
		assert.Len(t, r.peers, tc.want, "numwant %d", tc.numWant)
	}
}

func TestAnnounceMalformed(t *testing.T) {
	e := newEnv(t, nil)
	good := ann{infoHash: hashOf("h"), peerID: "p", left: 1, port: 1}
	full := announcePacket(e.connID(v4Client), 9, good)
	for _, tc := range []struct {
		name string
		pkt  []byte
		want models.ClientError
	}{
		{"header only", full[:headerLen], models.ErrMalformedRequest},
		{"one byte short", full[:announceLen-1], models.ErrMalformedRequest},
		{"port 0", announcePacket(e.connID(v4Client), 9, ann{infoHash: hashOf("h"), peerID: "p"}), models.ErrInvalidPort},
		{"event 5", announcePacket(e.connID(v4Client), 9, ann{infoHash: hashOf("h"), peerID: "p", port: 1, event: 5}), models.ErrInvalidEvent},
		{"negative uploaded", announcePacket(e.connID(v4Client), 9, ann{infoHash: hashOf("h"), peerID: "p", port: 1, upload: -1}), models.ErrInvalidNumber},
		{"negative downloaded", announcePacket(e.connID(v4Client), 9, ann{infoHash: hashOf("h"), peerID: "p", port: 1, downloaded: -5}), models.ErrInvalidNumber},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, msg := decodeError(t, e.do(tc.pkt, v4Client))
			assert.Equal(t, uint32(9), tx)
			assert.Equal(t, string(tc.want), msg, "an authenticated client gets the whole text")
		})
	}
	// An oversized announce (its options cut off) is malformed.
	tx, msg := decodeError(t, e.w.handle(full, v4Client, true, nil))
	assert.Equal(t, uint32(9), tx)
	assert.Equal(t, string(models.ErrMalformedRequest), msg)
	// Left -1 (size unknown) is a leecher.
	r := e.announce(t, v4Client, ann{infoHash: hashOf("unknown-size"), peerID: "p", left: -1, port: 1})
	assert.Equal(t, uint32(1), r.leechers)
	// An old client's 2-byte extensions field of zeros is EndOfOptions.
	r = e.announce(t, v4Client, ann{infoHash: hashOf("extensions"), peerID: "p", port: 1}, 0, 0)
	assert.Equal(t, uint32(1), r.seeders)
}

func TestAnnounceIPField(t *testing.T) {
	for _, spoofing := range []bool{false, true} {
		t.Run(map[bool]string{false: "spoofing off", true: "spoofing on"}[spoofing], func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) { c.AllowIPSpoofing = spoofing })
			ih := hashOf("ip-field-test-hash")
			named := [4]byte{192, 0, 2, 7}
			e.announce(t, v4Client, ann{infoHash: ih, peerID: "v4-seed", port: 5001, ip: named})
			e.announce(t, v6Client, ann{infoHash: ih, peerID: "v6-seed", port: 5002, ip: named})
			r := e.announce(t, v4Client2, ann{infoHash: ih, peerID: "leecher", left: 1, port: 5003, numWant: 50})
			if spoofing {
				// The IPv4 seeder's field replaced its address; the IPv6 seeder's is its
				// second, IPv4, endpoint.
				assert.ElementsMatch(t, []netip.AddrPort{
					netip.AddrPortFrom(netip.AddrFrom4(named), 5001),
					netip.AddrPortFrom(netip.AddrFrom4(named), 5002),
				}, r.peers)
			} else {
				assert.Equal(t, []netip.AddrPort{netip.AddrPortFrom(v4Client.Addr(), 5001)}, r.peers)
			}
		})
	}
}

func TestScrape(t *testing.T) {
	e := newEnv(t, nil)
	a, b := hashOf("scrape-a"), hashOf("scrape-b")
	e.announce(t, v4Client, ann{infoHash: a, peerID: "s1", port: 1})
	e.announce(t, v4Client2, ann{infoHash: a, peerID: "l1", left: 1, port: 1})
	e.announce(t, v6Client, ann{infoHash: a, peerID: "l2", left: 1, port: 1})
	e.announce(t, v6Client2, ann{infoHash: a, peerID: "l2", left: 0, event: 1, port: 1})
	e.announce(t, v6Client, ann{infoHash: b, peerID: "s2", port: 1})

	id := e.connID(v6Client)
	resp := e.do(scrapePacket(id, 77, b, hashOf("unknown"), a, b), v6Client)
	require.Len(t, resp, 8+4*12)
	assert.Equal(t, actionScrape, binary.BigEndian.Uint32(resp))
	assert.Equal(t, uint32(77), binary.BigEndian.Uint32(resp[4:]))
	var got []uint32
	for i := 8; i < len(resp); i += 4 {
		got = append(got, binary.BigEndian.Uint32(resp[i:]))
	}
	// Seeders, completed, leechers, in request order. (l2 moved to another address as it
	// completed: one peer.)
	assert.Equal(t, []uint32{1, 0, 0, 0, 0, 0, 2, 1, 1, 1, 0, 0}, got)

	// Bytes after the last whole hash are ignored.
	resp = e.do(append(scrapePacket(id, 78, a), 1, 2, 3), v6Client)
	assert.Len(t, resp, 8+12)

	hashes := make([]models.InfoHash, MaxScrapeInfoHashes+1)
	for i := range hashes {
		hashes[i] = hashOf(string(rune('A'+i%26)) + string(rune('a'+i/26)))
	}
	resp = e.do(scrapePacket(id, 79, hashes[:MaxScrapeInfoHashes]...), v6Client)
	assert.Len(t, resp, 8+12*MaxScrapeInfoHashes, "74 hashes are answered")
	for _, tc := range []struct {
		name      string
		pkt       []byte
		oversized bool
		want      models.ClientError
	}{
		{"75 hashes", scrapePacket(id, 80, hashes...), false, models.ErrTooManyInfoHashes},
		{"no hash", scrapePacket(id, 80), false, models.ErrMissingInfoHash},
		{"19 bytes of a hash", append(scrapePacket(id, 80), make([]byte, 19)...), false, models.ErrMissingInfoHash},
		{"oversized", scrapePacket(id, 80, hashes[:3]...), true, models.ErrTooManyInfoHashes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, msg := decodeError(t, e.w.handle(tc.pkt, v6Client, tc.oversized, nil))
			assert.Equal(t, uint32(80), tx)
			assert.Equal(t, string(tc.want), msg)
		})
	}
}

func TestScrapeLimitFollowsConfig(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.MaxScrapeInfoHashes = 2 })
	id := e.connID(v4Client)
	assert.Len(t, e.do(scrapePacket(id, 1, hashOf("a"), hashOf("b")), v4Client), 8+24)
	_, msg := decodeError(t, e.do(scrapePacket(id, 1, hashOf("a"), hashOf("b"), hashOf("c")), v4Client))
	assert.Equal(t, string(models.ErrTooManyInfoHashes), msg)
}

func TestPrivateMode(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.PrivateEnabled = true })
	base := ann{infoHash: testTorrent, peerID: "private-peer", left: 10, event: 2, port: 6881}

	r := e.announce(t, v4Client, base, urlData("/"+testPasskey+"/announce")...)
	assert.Equal(t, uint32(1), r.leechers)
	assert.Len(t, e.w.passkeys, 1, "an accepted passkey is kept")

	for _, tc := range []struct {
		name    string
		options []byte
		want    string
	}{
		{"no options", nil, string(models.ErrPasskeyNotFound)},
		{"path without a passkey", urlData("/announce"), string(models.ErrPasskeyNotFound)},
		{"unknown passkey", urlData("/ffffffffffffffffffffffffffffffff/announce"), string(models.ErrPasskeyNotFound)},
		{"truncated option", []byte{optionURLData, 40, '/', 'x'}, string(models.ErrMalformedRequest)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, e.announceErr(t, v4Client2, base, tc.options...))
		})
	}
	assert.Len(t, e.w.passkeys, 1, "a refused passkey is not kept")

	// The passkey may come in several pieces, with NOPs between, and with a query.
	pieces := []byte{optionNOP, optionURLData, 5, '/', '0', '1', '2', '3', optionNOP, optionURLData, 0}
	pieces = append(pieces, optionURLData, byte(len(testPasskey)-4+len("/announce?x=1")))
	pieces = append(pieces, testPasskey[4:]+"/announce?x=1"...)
	pieces = append(pieces, optionEnd, optionURLData, 3, 'b', 'a', 'd')
	r = e.announce(t, v6Client, ann{infoHash: testTorrent, peerID: "private-v6", left: 0, event: 2, port: 6881}, pieces...)
	assert.Equal(t, uint32(1), r.seeders)

	// An unregistered torrent.
	assert.Equal(t, string(models.ErrTorrentNotFound), e.announceErr(t, v4Client, ann{infoHash: hashOf("unregistered"), peerID: "p", port: 1}, urlData("/"+testPasskey+"/announce")...))

	// Scrapes carry no passkey: refused in private mode.
	tx, msg := decodeError(t, e.do(scrapePacket(e.connID(v4Client), 11, testTorrent), v4Client))
	assert.Equal(t, uint32(11), tx)
	assert.Equal(t, string(models.ErrPrivateScrape), msg)
}

func TestPublicModeIgnoresThePath(t *testing.T) {
	e := newEnv(t, nil)
	for _, opts := range [][]byte{nil, urlData("/" + testPasskey + "/announce"), urlData("/something/else/entirely"), {optionURLData, 200}} {
		r := e.announce(t, v4Client, ann{infoHash: hashOf("public-path"), peerID: "p", port: 1}, opts...)
		assert.Equal(t, uint32(1), r.seeders)
	}
}

func TestPasskeysAreBounded(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.PrivateEnabled = true })
	for i := range maxPasskeys {
		k := strings.Repeat("k", i+1)
		e.w.passkeys[k] = k
	}
	e.announce(t, v4Client, ann{infoHash: testTorrent, peerID: "p", left: 1, port: 1}, urlData("/"+testPasskey+"/announce")...)
	assert.Equal(t, map[string]string{testPasskey: testPasskey}, e.w.passkeys, "a full set is cleared")
}

// hiddenSitePool is a memory pool whose connections do not offer the SiteStore capability, so
// that private mode fails with an internal error.
type hiddenSitePool struct{ tracker.Pool }

type plainConn struct{ tracker.Conn }

func (p hiddenSitePool) Get() (tracker.Conn, error) {
	c, err := p.Pool.Get()
	return plainConn{c}, err
}

// panicPool panics on every announce.
type panicPool struct{ tracker.Pool }

type panicConn struct{ tracker.Conn }

func (p panicPool) Get() (tracker.Conn, error) {
	c, err := p.Pool.Get()
	return panicConn{c}, err
}

func (panicConn) Announce(context.Context, models.InfoHash, *tracker.PeerUpdate, *tracker.Selection, *tracker.AnnounceResult) error {
	panic("driver bug")
}

func TestInternalErrorsAndPanics(t *testing.T) {
	for _, tc := range []struct {
		name    string
		private bool
		wrap    func(tracker.Pool) tracker.Pool
	}{
		{"driver without site store in private mode", true, func(p tracker.Pool) tracker.Pool { return hiddenSitePool{p} }},
		{"driver panics", false, func(p tracker.Pool) tracker.Pool { return panicPool{p} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.PrivateEnabled = tc.private
			cfg.SitePassword, cfg.ReportPassword = "s", "r"
			pool, err := tracker.Open(cfg.Tracker)
			require.NoError(t, err)
			t.Cleanup(func() { _ = pool.Close() })
			e := newEnvOn(t, &cfg, tc.wrap(pool))
			pkt := announcePacket(e.connID(v4Client), 12, ann{infoHash: hashOf("h"), peerID: "p", port: 1}, urlData("/"+testPasskey+"/announce")...)
			resp := e.do(pkt, v4Client)
			tx, msg := decodeError(t, resp)
			assert.Equal(t, uint32(12), tx)
			assert.Equal(t, string(models.ErrInternal), msg)
			// The worker goes on answering.
			assert.Len(t, e.do(connectPacket(1), v4Client), connectRespLen)
		})
	}
}

func TestRecordsRequests(t *testing.T) {
	e := newEnv(t, nil)
	e.announce(t, v4Client, ann{infoHash: hashOf("rec"), peerID: "p", event: 2, port: 1})
	e.announce(t, mappedClient, ann{infoHash: hashOf("rec"), peerID: "q", event: 0, port: 1})
	e.announceErr(t, v6Client, ann{infoHash: hashOf("rec"), peerID: "p"})
	e.do(scrapePacket(e.connID(v6Client), 1, hashOf("rec")), v6Client)
	e.do(connectPacket(1), v4Client)                                            // not a tracker request
	e.do(scrapePacket(1, 1, hashOf("rec")), v4Client)                           // unauthenticated
	e.do(announcePacket(1, 1, ann{infoHash: hashOf("rec"), port: 1}), v4Client) // unauthenticated
	reqs := e.rec.all()
	require.Len(t, reqs, 4)
	for i, want := range []struct {
		action stats.Action
		family models.Family
		event  models.Event
		err    error
	}{
		{stats.Announce, models.IPv4, models.Started, nil},
		{stats.Announce, models.IPv4, models.None, nil},
		{stats.Announce, models.IPv6, models.None, models.ErrInvalidPort},
		{stats.Scrape, models.IPv6, models.None, nil},
	} {
		r := reqs[i]
		assert.Equal(t, stats.UDP, r.Transport, "request %d", i)
		assert.Equal(t, want.action, r.Action, "request %d", i)
		assert.Equal(t, want.family, r.Family, "request %d", i)
		assert.Equal(t, want.event, r.Event, "request %d", i)
		assert.True(t, errors.Is(r.Err, want.err) || r.Err == want.err, "request %d: %v", i, r.Err)
	}
}

func TestConfigKeys(t *testing.T) {
	for _, tc := range []struct {
		json string
		key  string
	}{
		{`{"udp_addr": "6881"}`, "udp_addr"},
		{`{"udp_readers": -1}`, "udp_readers"},
		{`{"udp_readers": 100000}`, "udp_readers"},
		{`{"udp_batch_size": 0}`, "udp_batch_size"},
		{`{"udp_batch_size": 5000}`, "udp_batch_size"},
		{`{"udp_batch_size": "32"}`, "udp_batch_size"},
	} {
		_, err := config.Parse([]byte(tc.json), "test.json")
		require.Error(t, err, tc.json)
		assert.Contains(t, err.Error(), `"`+tc.key+`"`, tc.json)
	}
	cfg, err := config.Parse([]byte(`{}`), "test.json")
	require.NoError(t, err)
	assert.Equal(t, "", cfg.UDPAddr, "UDP is off by default")
	assert.Equal(t, 0, cfg.UDPReaders)
	assert.Equal(t, 32, cfg.UDPBatchSize)
	cfg, err = config.Parse([]byte(`{"udp_addr": ":6881", "udp_readers": 4, "udp_batch_size": 1}`), "test.json")
	require.NoError(t, err)
	assert.Equal(t, ":6881", cfg.UDPAddr)
	assert.Equal(t, 4, cfg.UDPReaders)
	assert.Equal(t, 1, cfg.UDPBatchSize)
}
