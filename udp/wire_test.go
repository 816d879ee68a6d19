package udp

import (
	"encoding/binary"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
		err  bool
	}{
		{name: "none", in: nil, want: ""},
		{name: "end only", in: []byte{optionEnd}, want: ""},
		{name: "NOPs only", in: []byte{optionNOP, optionNOP}, want: ""},
		{name: "one URLData", in: []byte{optionURLData, 3, '/', 'a', 'b'}, want: "/ab"},
		{name: "one URLData then end", in: []byte{optionURLData, 2, '/', 'a', optionEnd}, want: "/a"},
		{name: "zero-length URLData", in: []byte{optionURLData, 0, optionURLData, 1, '/'}, want: "/"},
		{name: "pieces are concatenated", in: []byte{optionURLData, 2, '/', 'a', optionNOP, optionURLData, 2, 'b', 'c'}, want: "/abc"},
		{name: "nothing after end counts", in: []byte{optionURLData, 1, '/', optionEnd, optionURLData, 1, 'x', 0xff}, want: "/"},
		{name: "unknown type is skipped by its length", in: []byte{0x7, 2, 'x', 'y', optionURLData, 1, '/'}, want: "/"},
		{name: "old extensions field of zeros", in: []byte{0, 0}, want: ""},
		{name: "URLData without its length", in: []byte{optionURLData}, err: true},
		{name: "URLData longer than the packet", in: []byte{optionURLData, 5, '/', 'a'}, err: true},
		{name: "unknown type without its length", in: []byte{optionNOP, 0x9}, err: true},
		{name: "255 bytes", in: append([]byte{optionURLData, 255}, strings.Repeat("z", 255)...), want: strings.Repeat("z", 255)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseOptions(tc.in, make([]byte, 0, 8))
			if tc.err {
				assert.Equal(t, models.ErrMalformedRequest, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(got))
		})
	}
}

func TestPasskeyOf(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"/":                      "",
		"/announce":              "",
		"/announce?x=1":          "",
		"announce":               "",
		"/pk/announce":           "pk",
		"/pk/announce?a=b&c=d":   "pk",
		"/pk":                    "pk",
		"/pk/":                   "pk",
		"/pk?info=1":             "pk",
		"/pk/scrape":             "",
		"/a/b/announce":          "",
		"//announce":             "",
		"/pk/announce/":          "",
		"?/pk/announce":          "",
		"/pk%2F/announce":        "pk%2F",
		"/" + testPasskey + "/a": "",
	} {
		assert.Equal(t, want, string(passkeyOf([]byte(in))), "%q", in)
	}
}

func TestParseAnnounceFields(t *testing.T) {
	pkt := announcePacket(1, 2, ann{
		infoHash: hashOf("info-hash-of-twenty!"), peerID: "-lt2080-abcdefghijkl",
		downloaded: 100, left: 200, upload: 300, event: 2, ip: [4]byte{1, 2, 3, 4}, key: 99, numWant: 25, port: 51413,
	})
	var a models.Announce
	ip, err := parseAnnounce(pkt, &a)
	require.NoError(t, err)
	assert.Equal(t, hashOf("info-hash-of-twenty!"), a.InfoHash)
	assert.Equal(t, models.PeerID([]byte("-lt2080-abcdefghijkl")), a.PeerID)
	assert.Equal(t, int64(100), a.Downloaded)
	assert.Equal(t, int64(200), a.Left)
	assert.Equal(t, int64(300), a.Uploaded)
	assert.Equal(t, models.Started, a.Event)
	assert.Equal(t, [4]byte{1, 2, 3, 4}, ip)
	assert.Equal(t, 25, a.NumWant)
	assert.Equal(t, uint16(51413), a.Endpoint.Port())
	assert.True(t, a.Compact)

	for code, want := range map[uint32]models.Event{0: models.None, 1: models.Completed, 2: models.Started, 3: models.Stopped, 4: models.Paused} {
		_, err := parseAnnounce(announcePacket(1, 2, ann{event: code, port: 1}), &a)
		require.NoError(t, err)
		assert.Equal(t, want, a.Event, "event %d", code)
	}
	for _, nw := range []int32{-1, -2, math.MinInt32} {
		_, err := parseAnnounce(announcePacket(1, 2, ann{numWant: nw, port: 1}), &a)
		require.NoError(t, err)
		assert.Equal(t, -1, a.NumWant, "numwant %d means the default", nw)
	}
	_, err = parseAnnounce(announcePacket(1, 2, ann{left: -1, port: 1}), &a)
	require.NoError(t, err)
	assert.Equal(t, int64(math.MaxInt64), a.Left)
}

func TestAppendError(t *testing.T) {
	b := appendError(nil, 7, "invalid connection ID", 16)
	assert.Equal(t, []byte{0, 0, 0, 3, 0, 0, 0, 7, 'i', 'n', 'v', 'a', 'l', 'i', 'd', ' '}, b)
	b = appendError(nil, 7, "abc", 16)
	assert.Len(t, b, 11, "a short text is not padded")
	b = appendError(nil, 7, "abc", 4)
	assert.Len(t, b, 8, "the header survives any limit")
	b = appendError(nil, 7, strings.Repeat("x", 1000), 0)
	assert.Len(t, b, 1008, "no limit")
}

func TestAppendAnnounce(t *testing.T) {
	v4 := func(s string) models.Peer { return models.Peer{AddrPort: netip.MustParseAddrPort(s)} }
	r := &models.AnnounceResponse{
		Interval: 90 * time.Second, Complete: 3, Incomplete: 4,
		IPv4Peers: []models.Peer{v4("1.2.3.4:5"), v4("[::ffff:1.2.3.4]:6"), v4("[::1]:7")},
		IPv6Peers: []models.Peer{v4("[2001:db8::9]:10"), v4("9.9.9.9:11")},
	}
	b := appendAnnounce(nil, 1, r, false)
	// Entries of the wrong family are skipped rather than mangled.
	assert.Equal(t, []byte{0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 90, 0, 0, 0, 4, 0, 0, 0, 3, 1, 2, 3, 4, 0, 5}, b)
	b = appendAnnounce(nil, 1, r, true)
	require.Len(t, b, 20+18)
	assert.Equal(t, netip.MustParseAddr("2001:db8::9").AsSlice(), b[20:36])
	assert.Equal(t, uint16(10), binary.BigEndian.Uint16(b[36:]))

	// Counts and intervals are clamped to the i32 fields; answers never exceed a datagram.
	many := &models.AnnounceResponse{Interval: time.Duration(math.MaxInt64), Complete: math.MaxInt32 + 10, Incomplete: -1}
	for range 20000 {
		many.IPv4Peers = append(many.IPv4Peers, v4("1.1.1.1:1"))
		many.IPv6Peers = append(many.IPv6Peers, v4("[::2]:1"))
	}
	for _, v6 := range []bool{false, true} {
		b = appendAnnounce(nil, 1, many, v6)
		assert.LessOrEqual(t, len(b), maxDatagram)
		assert.Equal(t, uint32(math.MaxInt32), binary.BigEndian.Uint32(b[8:]))
		assert.Equal(t, uint32(0), binary.BigEndian.Uint32(b[12:]))
		assert.Equal(t, uint32(math.MaxInt32), binary.BigEndian.Uint32(b[16:]))
	}
}
