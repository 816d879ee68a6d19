package http

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/http/query"
	"github.com/chihaya/chihaya/tracker/models"
)

// The wiki.theory.org example hash, escaped the way the wiki shows it.
const (
	wikiHashRaw = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A"
	// A peer ID with a literal "+", a "~", a NUL and a 0xff byte.
	binPeerIDRaw = "-qB4630-+~%00%FFabcdefgh"
)

var (
	wikiHash = models.InfoHash{
		0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45,
		0x67, 0x89, 0xab, 0xcd, 0xef, 0x12, 0x34, 0x56, 0x78, 0x9a,
	}
	binPeerID = models.PeerID([]byte("-qB4630-+~\x00\xffabcdefgh"))
)

// announceQuery is a minimal valid announce without the keys named in drop (comma-separated),
// followed by extra pairs.
func announceQuery(drop string, extra ...string) string {
	dropped := map[string]bool{}
	for _, k := range strings.Split(drop, ",") {
		dropped[k] = true
	}
	var parts []string
	for _, p := range []string{
		"info_hash=" + wikiHashRaw,
		"peer_id=" + binPeerIDRaw,
		"port=6881",
		"uploaded=0",
		"downloaded=0",
		"left=0",
	} {
		if k, _, _ := strings.Cut(p, "="); !dropped[k] {
			parts = append(parts, p)
		}
	}
	return strings.Join(append(parts, extra...), "&")
}

func TestParseAnnounce(t *testing.T) {
	base := models.Announce{
		InfoHash: wikiHash,
		PeerID:   binPeerID,
		Endpoint: netip.AddrPortFrom(netip.Addr{}, 6881),
		NumWant:  -1,
		Compact:  true,
	}
	for _, tc := range []struct {
		name    string
		raw     string
		lenient bool                     // private mode
		mod     func(a *models.Announce) // applied to base to give the wanted announce
		err     error
	}{
		{name: "minimal", raw: announceQuery("")},
		{
			name: "every BEP 3 parameter and the usual extras",
			raw: announceQuery("uploaded,downloaded,left",
				"uploaded=123", "downloaded=456", "left=789", "event=started", "compact=1", "no_peer_id=1",
				"numwant=30", "key=3AF13DE0", "trackerid=xyz", "ip=1.2.3.4", "ipv6=%3A%3A1", "corrupt=5",
				"supportcrypto=1", "redundant=7", "azudp=1"),
			mod: func(a *models.Announce) {
				a.Uploaded, a.Downloaded, a.Left, a.Corrupt = 123, 456, 789, 5
				a.Event = models.Started
				a.NoPeerID, a.CompactOne = true, true
				a.NumWant = 30
			},
		},
		{name: "parameters in any order", raw: "left=5&port=1&peer_id=" + binPeerIDRaw + "&downloaded=2&info_hash=" + wikiHashRaw + "&uploaded=1",
			mod: func(a *models.Announce) {
				a.Endpoint = netip.AddrPortFrom(netip.Addr{}, 1)
				a.Uploaded, a.Downloaded, a.Left = 1, 2, 5
			}},
		{name: "plus in info_hash is 0x2B", raw: announceQuery("info_hash", "info_hash=+++++++++++++++++++%2b"),
			mod: func(a *models.Announce) { copy(a.InfoHash[:], strings.Repeat("+", 20)) }},
		{name: "unescaped printable info_hash", raw: announceQuery("info_hash", "info_hash=abcdefghi~!*()'.-_AB"),
			mod: func(a *models.Announce) { copy(a.InfoHash[:], "abcdefghi~!*()'.-_AB") }},
		{name: "fully escaped info_hash", raw: announceQuery("info_hash", "info_hash="+strings.Repeat("%ff", 20)),
			mod: func(a *models.Announce) { copy(a.InfoHash[:], strings.Repeat("\xff", 20)) }},

		// info_hash and peer_id.
		{name: "missing info_hash", raw: announceQuery("info_hash"), err: models.ErrMissingInfoHash},
		{name: "duplicate info_hash", raw: announceQuery("", "info_hash="+wikiHashRaw), err: models.ErrDuplicateParameter},
		{name: "duplicate info_hash with different values", raw: announceQuery("", "info_hash="+strings.Repeat("a", 20)), err: models.ErrDuplicateParameter},
		{name: "19-byte info_hash", raw: announceQuery("info_hash", "info_hash="+strings.Repeat("a", 19)), err: models.ErrInvalidInfoHash},
		{name: "21-byte info_hash", raw: announceQuery("info_hash", "info_hash="+strings.Repeat("a", 21)), err: models.ErrInvalidInfoHash},
		{name: "20 raw chars decoding to fewer bytes", raw: announceQuery("info_hash", "info_hash=%41%41%41%41%41aaaaa"), err: models.ErrInvalidInfoHash},
		{name: "empty info_hash", raw: announceQuery("info_hash", "info_hash="), err: models.ErrInvalidInfoHash},
		{name: "info_hash without equals", raw: announceQuery("info_hash", "info_hash"), err: models.ErrInvalidInfoHash},
		{name: "40-char hex info_hash is not decoded as hex", raw: announceQuery("info_hash", "info_hash="+strings.Repeat("ab", 20)), err: models.ErrInvalidInfoHash},
		{name: "missing peer_id", raw: announceQuery("peer_id"), err: models.ErrMissingPeerID},
		{name: "duplicate peer_id", raw: announceQuery("", "peer_id="+binPeerIDRaw), err: models.ErrDuplicateParameter},
		{name: "19-byte peer_id", raw: announceQuery("peer_id", "peer_id="+strings.Repeat("p", 19)), err: models.ErrInvalidPeerID},
		{name: "21-byte peer_id", raw: announceQuery("peer_id", "peer_id="+strings.Repeat("p", 21)), err: models.ErrInvalidPeerID},
		{name: "missing both reports info_hash first", raw: announceQuery("info_hash,peer_id"), err: models.ErrMissingInfoHash},

		// Port.
		{name: "missing port", raw: announceQuery("port"), err: models.ErrMissingPort},
		{name: "empty port", raw: announceQuery("port", "port="), err: models.ErrInvalidPort},
		{name: "port 1", raw: announceQuery("port", "port=1"), mod: func(a *models.Announce) { a.Endpoint = netip.AddrPortFrom(netip.Addr{}, 1) }},
		{name: "port 65535", raw: announceQuery("port", "port=65535"), mod: func(a *models.Announce) { a.Endpoint = netip.AddrPortFrom(netip.Addr{}, 65535) }},
		{name: "port with leading zeros", raw: announceQuery("port", "port=08080"), mod: func(a *models.Announce) { a.Endpoint = netip.AddrPortFrom(netip.Addr{}, 8080) }},
		{name: "port 65536", raw: announceQuery("port", "port=65536"), err: models.ErrInvalidPort},
		{name: "port 70000", raw: announceQuery("port", "port=70000"), err: models.ErrInvalidPort},
		{name: "negative port", raw: announceQuery("port", "port=-1"), err: models.ErrInvalidPort},
		{name: "port with plus sign", raw: announceQuery("port", "port=+1"), err: models.ErrInvalidPort},
		{name: "overflowing port", raw: announceQuery("port", "port=18446744073709551617"), err: models.ErrInvalidPort},
		{name: "port with trailing junk", raw: announceQuery("port", "port=6881x"), err: models.ErrInvalidPort},
		{name: "port 0 without cryptoport", raw: announceQuery("port", "port=0"), err: models.ErrInvalidPort},
		{name: "port 0 with cryptoport", raw: announceQuery("port", "port=0", "cryptoport=6882", "supportcrypto=1", "requirecrypto=1"),
			mod: func(a *models.Announce) { a.Endpoint = netip.AddrPortFrom(netip.Addr{}, 6882) }},
		{name: "port 0 with cryptoport 0", raw: announceQuery("port", "port=0", "cryptoport=0"), err: models.ErrInvalidPort},
		{name: "port 0 with empty cryptoport", raw: announceQuery("port", "port=0", "cryptoport="), err: models.ErrInvalidPort},
		{name: "port 0 with cryptoport 65536", raw: announceQuery("port", "port=0", "cryptoport=65536"), err: models.ErrInvalidPort},
		{name: "cryptoport ignored when port is set", raw: announceQuery("", "cryptoport=7000")},
		{name: "bad cryptoport ignored when port is set", raw: announceQuery("", "cryptoport=bogus")},

		// Transfer counters.
		{name: "missing uploaded", raw: announceQuery("uploaded"), err: models.ErrMissingUploaded},
		{name: "missing downloaded", raw: announceQuery("downloaded"), err: models.ErrMissingDownloaded},
		{name: "missing left", raw: announceQuery("left"), err: models.ErrMissingLeft},
		{name: "negative uploaded", raw: announceQuery("uploaded", "uploaded=-1"), err: models.ErrInvalidNumber},
		{name: "negative downloaded", raw: announceQuery("downloaded", "downloaded=-5"), err: models.ErrInvalidNumber},
		{name: "negative left", raw: announceQuery("left", "left=-1"), err: models.ErrInvalidNumber},
		{name: "empty left", raw: announceQuery("left", "left="), err: models.ErrInvalidNumber},
		{name: "non-numeric left", raw: announceQuery("left", "left=lots"), err: models.ErrInvalidNumber},
		{name: "exponent is not a number", raw: announceQuery("uploaded", "uploaded=1e3"), err: models.ErrInvalidNumber},
		{name: "int64 max left (anacrolix's unknown size)", raw: announceQuery("left", "left=9223372036854775807"),
			mod: func(a *models.Announce) { a.Left = 1<<63 - 1 }},
		{name: "left one past int64 max", raw: announceQuery("left", "left=9223372036854775808"), err: models.ErrInvalidNumber},
		{name: "uploaded past uint64 max", raw: announceQuery("uploaded", "uploaded=18446744073709551616"), err: models.ErrInvalidNumber},
		{name: "huge uploaded", raw: announceQuery("uploaded", "uploaded="+strings.Repeat("9", 40)), err: models.ErrInvalidNumber},
		{name: "corrupt", raw: announceQuery("", "corrupt=77"), mod: func(a *models.Announce) { a.Corrupt = 77 }},
		{name: "empty corrupt is ignored", raw: announceQuery("", "corrupt=")},
		{name: "negative corrupt", raw: announceQuery("", "corrupt=-1"), err: models.ErrInvalidNumber},

		// numwant.
		{name: "numwant 0", raw: announceQuery("", "numwant=0"), mod: func(a *models.Announce) { a.NumWant = 0 }},
		{name: "numwant 50", raw: announceQuery("", "numwant=50"), mod: func(a *models.Announce) { a.NumWant = 50 }},
		{name: "numwant -1", raw: announceQuery("", "numwant=-1"), mod: func(a *models.Announce) { a.NumWant = -1 }},
		{name: "negative numwant becomes -1", raw: announceQuery("", "numwant=-5"), mod: func(a *models.Announce) { a.NumWant = -1 }},
		{name: "int64 min numwant", raw: announceQuery("", "numwant=-9223372036854775808"), mod: func(a *models.Announce) { a.NumWant = -1 }},
		{name: "hugely negative numwant becomes -1", raw: announceQuery("", "numwant=-"+strings.Repeat("9", 30)), mod: func(a *models.Announce) { a.NumWant = -1 }},
		{name: "int32 max numwant", raw: announceQuery("", "numwant=2147483647"), mod: func(a *models.Announce) { a.NumWant = 1<<31 - 1 }},
		{name: "numwant past int32 is clamped", raw: announceQuery("", "numwant=2147483648"), mod: func(a *models.Announce) { a.NumWant = 1<<31 - 1 }},
		{name: "huge numwant is clamped", raw: announceQuery("", "numwant="+strings.Repeat("9", 30)), mod: func(a *models.Announce) { a.NumWant = 1<<31 - 1 }},
		{name: "empty numwant is the default", raw: announceQuery("", "numwant="), mod: func(a *models.Announce) { a.NumWant = -1 }},
		{name: "non-numeric numwant", raw: announceQuery("", "numwant=many"), err: models.ErrInvalidNumber},
		{name: "lone minus numwant", raw: announceQuery("", "numwant=-"), err: models.ErrInvalidNumber},
		{name: "fractional numwant", raw: announceQuery("", "numwant=1.5"), err: models.ErrInvalidNumber},
		// Private mode reads numwant as Ocelot: its leading number, else 0.
		{name: "private: non-numeric numwant is 0", raw: announceQuery("", "numwant=many"), lenient: true, mod: func(a *models.Announce) { a.NumWant = 0 }},
		{name: "private: empty numwant is 0", raw: announceQuery("", "numwant="), lenient: true, mod: func(a *models.Announce) { a.NumWant = 0 }},
		{name: "private: lone minus numwant is 0", raw: announceQuery("", "numwant=-"), lenient: true, mod: func(a *models.Announce) { a.NumWant = 0 }},
		{name: "private: fractional numwant", raw: announceQuery("", "numwant=1.5"), lenient: true, mod: func(a *models.Announce) { a.NumWant = 1 }},
		{name: "private: number and text", raw: announceQuery("", "numwant=12abc"), lenient: true, mod: func(a *models.Announce) { a.NumWant = 12 }},
		{name: "private: plus sign", raw: announceQuery("", "numwant=%2B7x"), lenient: true, mod: func(a *models.Announce) { a.NumWant = 7 }},
		{name: "private: negative with text is the default", raw: announceQuery("", "numwant=-5x"), lenient: true, mod: func(a *models.Announce) { a.NumWant = -1 }},
		{name: "private: huge with text is clamped", raw: announceQuery("", "numwant="+strings.Repeat("9", 30)+"x"), lenient: true, mod: func(a *models.Announce) { a.NumWant = 1<<31 - 1 }},
		{name: "private: numwant 30", raw: announceQuery("", "numwant=30"), lenient: true, mod: func(a *models.Announce) { a.NumWant = 30 }},
		{name: "private: no numwant is the default", raw: announceQuery(""), lenient: true},

		// compact and no_peer_id.
		{name: "compact=0", raw: announceQuery("", "compact=0"), mod: func(a *models.Announce) { a.Compact = false }},
		{name: "compact=1", raw: announceQuery("", "compact=1"), mod: func(a *models.Announce) { a.CompactOne = true }},
		{name: "empty compact stays compact", raw: announceQuery("", "compact=")},
		{name: "compact=false is not 0", raw: announceQuery("", "compact=false")},
		{name: "first compact wins", raw: announceQuery("", "compact=0", "compact=1"), mod: func(a *models.Announce) { a.Compact = false }},
		{name: "no_peer_id=1", raw: announceQuery("", "no_peer_id=1"), mod: func(a *models.Announce) { a.NoPeerID = true }},
		{name: "no_peer_id=0", raw: announceQuery("", "no_peer_id=0")},
		{name: "no_peer_id without value", raw: announceQuery("", "no_peer_id")},
		{name: "libtorrent's compact=1&no_peer_id=1", raw: announceQuery("", "compact=1", "no_peer_id=1"), mod: func(a *models.Announce) { a.NoPeerID, a.CompactOne = true, true }},
		{name: "dict peers without ids", raw: announceQuery("", "compact=0", "no_peer_id=1"), mod: func(a *models.Announce) { a.Compact, a.NoPeerID = false, true }},

		// event.
		{name: "event started", raw: announceQuery("", "event=started"), mod: func(a *models.Announce) { a.Event = models.Started }},
		{name: "event completed", raw: announceQuery("", "event=completed"), mod: func(a *models.Announce) { a.Event = models.Completed }},
		{name: "event stopped", raw: announceQuery("", "event=stopped"), mod: func(a *models.Announce) { a.Event = models.Stopped }},
		{name: "event paused (BEP 21)", raw: announceQuery("", "event=paused"), mod: func(a *models.Announce) { a.Event = models.Paused }},
		{name: "event empty is regular", raw: announceQuery("", "event=empty"), mod: func(a *models.Announce) { a.Event = models.None }},
		{name: "empty event is regular", raw: announceQuery("", "event="), mod: func(a *models.Announce) { a.Event = models.None }},
		{name: "event without equals is regular", raw: announceQuery("", "event"), mod: func(a *models.Announce) { a.Event = models.None }},
		{name: "escaped event", raw: announceQuery("", "event=%73tarted"), mod: func(a *models.Announce) { a.Event = models.Started }},
		{name: "unknown event", raw: announceQuery("", "event=bogus"), err: models.ErrInvalidEvent},
		{name: "event is case sensitive", raw: announceQuery("", "event=Started"), err: models.ErrInvalidEvent},
		{name: "event with trailing space", raw: announceQuery("", "event=started%20"), err: models.ErrInvalidEvent},
		{name: "event with plus is not a space", raw: announceQuery("", "event=started+"), err: models.ErrInvalidEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q query.Params
			require.NoError(t, q.Parse(tc.raw))
			// Parse into a dirty announce: parseAnnounce must reset every field.
			a := models.Announce{Passkey: "stale", Remote: netip.MustParseAddr("9.9.9.9"), Other: netip.MustParseAddrPort("9.9.9.9:9"),
				Event: models.Stopped, Uploaded: 99, Corrupt: 99, NoPeerID: true}
			err := parseAnnounce(&q, &a, tc.lenient)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			want := base
			if tc.mod != nil {
				tc.mod(&want)
			}
			assert.Equal(t, want, a)
		})
	}
}

func TestParseScrape(t *testing.T) {
	h := func(c byte) models.InfoHash {
		var ih models.InfoHash
		for i := range ih {
			ih[i] = c
		}
		return ih
	}
	for _, tc := range []struct {
		name    string
		raw     string
		limit   int
		lenient bool // private mode
		want    []models.InfoHash
		err     error
	}{
		{name: "one hash", raw: "info_hash=" + wikiHashRaw, limit: 74, want: []models.InfoHash{wikiHash}},
		{
			name:  "several hashes in request order, duplicates kept",
			raw:   "info_hash=" + strings.Repeat("b", 20) + "&info_hash=" + wikiHashRaw + "&info_hash=" + strings.Repeat("%00", 20) + "&info_hash=" + strings.Repeat("b", 20),
			limit: 74,
			want:  []models.InfoHash{h('b'), wikiHash, h(0), h('b')},
		},
		{name: "other keys ignored", raw: "passkey=x&info_hash=" + strings.Repeat("+", 20) + "&peer_id=short", limit: 74, want: []models.InfoHash{h('+')}},
		{name: "exactly the limit", raw: strings.Repeat("info_hash="+strings.Repeat("a", 20)+"&", 3), limit: 3, want: []models.InfoHash{h('a'), h('a'), h('a')}},
		{name: "one over the limit", raw: strings.Repeat("info_hash="+strings.Repeat("a", 20)+"&", 4), limit: 3, err: models.ErrTooManyInfoHashes},
		{name: "no info_hash", raw: "foo=bar", limit: 74, err: models.ErrMissingInfoHash},
		{name: "empty query", raw: "", limit: 74, err: models.ErrMissingInfoHash},
		{name: "19-byte hash", raw: "info_hash=" + strings.Repeat("a", 19), limit: 74, err: models.ErrInvalidInfoHash},
		{name: "21-byte hash", raw: "info_hash=" + strings.Repeat("a", 21), limit: 74, err: models.ErrInvalidInfoHash},
		{name: "bad hash after good ones", raw: "info_hash=" + wikiHashRaw + "&info_hash=short", limit: 74, err: models.ErrInvalidInfoHash},
		{name: "empty hash", raw: "info_hash=", limit: 74, err: models.ErrInvalidInfoHash},

		// Private mode reads a scrape as Ocelot: a bad hash names no torrent, none asks for none.
		{name: "private: no info_hash", raw: "foo=bar", limit: 74, lenient: true, want: []models.InfoHash{}},
		{name: "private: bad hashes left out", raw: "info_hash=short&info_hash=" + wikiHashRaw + "&info_hash=", limit: 74, lenient: true, want: []models.InfoHash{wikiHash}},
		{name: "private: bad hashes count towards the limit", raw: "info_hash=short&" + strings.Repeat("info_hash="+strings.Repeat("a", 20)+"&", 3), limit: 3, lenient: true, err: models.ErrTooManyInfoHashes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q query.Params
			require.NoError(t, q.Parse(tc.raw))
			// A reused Scrape must not keep hashes from an earlier request.
			s := models.Scrape{InfoHashes: []models.InfoHash{h(0xee), h(0xee), h(0xee), h(0xee), h(0xee)}}
			err := parseScrape(&q, &s, tc.limit, tc.lenient)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.InfoHashes)
		})
	}
}
