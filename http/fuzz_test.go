package http

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/http/query"
	"github.com/chihaya/chihaya/tracker/models"
)

// fuzzPeers turns fuzz bytes into peers: each record is a tag byte (bit 0: IPv6), a 20-byte peer
// ID, a 4- or 16-byte address and a 2-byte port. A trailing partial record is ignored.
func fuzzPeers(data []byte) (v4, v6 []models.Peer) {
	for len(data) > 0 {
		tag := data[0]
		alen := 4
		if tag&1 == 1 {
			alen = 16
		}
		if len(data) < 1+20+alen+2 {
			break
		}
		var p models.Peer
		copy(p.ID[:], data[1:21])
		a := data[21 : 21+alen]
		port := binary.BigEndian.Uint16(data[21+alen:])
		if alen == 4 {
			p.AddrPort = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a)), port)
			v4 = append(v4, p)
		} else {
			// The IPv6 list may hold any 16-byte address, an IPv4-mapped one included.
			p.AddrPort = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a)), port)
			v6 = append(v6, p)
		}
		data = data[1+20+alen+2:]
	}
	return v4, v6
}

func compactPeers(peers []models.Peer, v6 bool) string {
	var b []byte
	for _, p := range peers {
		if v6 {
			a := p.AddrPort.Addr().As16()
			b = append(b, a[:]...)
		} else {
			a := p.AddrPort.Addr().As4()
			b = append(b, a[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, p.AddrPort.Port())
	}
	return string(b)
}

func fitsInt32(ns ...int) bool {
	for _, n := range ns {
		if n < math.MinInt32 || n > math.MaxInt32 {
			return false
		}
	}
	return true
}

func FuzzAnnounceResponse(f *testing.F) {
	onePeer4 := append(append([]byte{0}, "-qB4630-aaaaaaaaaaaa"...), 1, 2, 3, 4, 0x1a, 0xe1)
	onePeer6 := append(append([]byte{1}, "-TR3000-bbbbbbbbbbbb"...), 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff)
	mapped := append(append([]byte{1}, "\x00\xff\x00\xff\x00\xff\x00\xff\x00\xff\x00\xff\x00\xff\x00\xff\x00\xff\x00\xff"...),
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1, 0, 0)
	both := append(append([]byte{}, onePeer4...), onePeer6...)
	f.Add([]byte{}, 0, 0, 0, int64(1800*time.Second), int64(900*time.Second), uint8(1), []byte{127, 0, 0, 1}, "invalid info_hash")
	f.Add(both, 5, 10, 50, int64(1927*time.Second), int64(1800*time.Second), uint8(1), []byte{}, "")
	f.Add(both, 1, 2, 3, int64(time.Minute), int64(time.Second), uint8(0), []byte(netip.MustParseAddr("2001:db8::1").AsSlice()), "\x00\xff")
	f.Add(both, -1, math.MaxInt, math.MinInt, int64(math.MaxInt64), int64(math.MinInt64), uint8(2), []byte{1, 2, 3}, "e")
	f.Add(mapped, 0, 0, 0, int64(-1), int64(0), uint8(3), []byte(netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()), "d1:ae")
	f.Fuzz(func(t *testing.T, peerData []byte, complete, incomplete, downloaded int, interval, minInterval int64, flags uint8, ext []byte, reason string) {
		v4, v6 := fuzzPeers(peerData)
		resp := models.AnnounceResponse{
			Complete:    complete,
			Incomplete:  incomplete,
			Downloaded:  downloaded,
			Interval:    time.Duration(interval),
			MinInterval: time.Duration(minInterval),
			IPv4Peers:   v4,
			IPv6Peers:   v6,
			Compact:     flags&1 != 0,
			NoPeerID:    flags&2 != 0,
		}
		if a, ok := netip.AddrFromSlice(ext); ok {
			resp.ExternalIP = a
		}

		want := map[string]any{
			"complete":     int64(complete),
			"incomplete":   int64(incomplete),
			"downloaded":   int64(downloaded),
			"interval":     int64(time.Duration(interval) / time.Second),
			"min interval": int64(time.Duration(minInterval) / time.Second),
		}
		if resp.ExternalIP.IsValid() {
			want["external ip"] = string(resp.ExternalIP.Unmap().AsSlice())
		}
		if resp.Compact {
			want["peers"] = compactPeers(v4, false)
			if len(v6) > 0 {
				want["peers6"] = compactPeers(v6, true)
			}
		} else {
			list := []any{}
			for _, p := range append(append([]models.Peer{}, v4...), v6...) {
				d := map[string]any{"ip": p.AddrPort.Addr().String(), "port": int64(p.AddrPort.Port())}
				if !resp.NoPeerID {
					d["peer id"] = string(p.ID[:])
				}
				list = append(list, d)
			}
			want["peers"] = list
		}

		b := appendAnnounce([]byte("junk"), &resp)
		require.Equal(t, "junk", string(b[:4]), "appendAnnounce must append")
		got := decodeDict(t, b[4:])
		require.Equal(t, want, got)

		// Each text "ip" in a dict peer parses back to the very address.
		if !resp.Compact {
			for i, p := range append(append([]models.Peer{}, v4...), v6...) {
				ip := got["peers"].([]any)[i].(map[string]any)["ip"].(string)
				require.Equal(t, p.AddrPort.Addr(), netip.MustParseAddr(ip))
			}
		}

		// A real client (anacrolix) reads the same peers back.
		if fitsInt32(complete, incomplete) && time.Duration(interval)/time.Second >= math.MinInt32 && time.Duration(interval)/time.Second <= math.MaxInt32 {
			var hr httpTracker.HttpResponse
			require.NoError(t, bencode.Unmarshal(b[4:], &hr))
			assert.Equal(t, int32(complete), hr.Complete)
			assert.Equal(t, int32(incomplete), hr.Incomplete)
			if resp.Compact {
				require.Len(t, hr.Peers.List, len(v4))
				require.Len(t, hr.Peers6, len(v6))
				for i, p := range v4 {
					assert.Equal(t, int(p.AddrPort.Port()), hr.Peers.List[i].Port)
				}
				for i, p := range v6 {
					assert.Equal(t, int(p.AddrPort.Port()), hr.Peers6[i].Port)
				}
			} else {
				require.Len(t, hr.Peers.List, len(v4)+len(v6))
			}
		}

		// Failures carry exactly the reason and the two intervals, whatever the reason's bytes.
		fb := appendFailure(nil, reason, time.Duration(interval), time.Duration(minInterval))
		require.Equal(t, map[string]any{
			"failure reason": reason,
			"interval":       int64(time.Duration(interval) / time.Second),
			"min interval":   int64(time.Duration(minInterval) / time.Second),
		}, decodeDict(t, fb))
	})
}

// fuzzFiles turns fuzz bytes into scrape entries. A record is a tag byte; with bit 0 set it
// repeats an earlier entry (the core answers a hash asked for twice with the same counts),
// otherwise 20 hash bytes and three 8-byte counts follow. A new record whose hash was seen
// before takes the earlier counts, for the same reason.
func fuzzFiles(data []byte) []models.TorrentStats {
	var files []models.TorrentStats
	seen := map[models.InfoHash]models.TorrentStats{}
	for len(data) > 0 {
		tag := data[0]
		if tag&1 == 1 && len(files) > 0 {
			files = append(files, files[int(tag>>1)%len(files)])
			data = data[1:]
			continue
		}
		if len(data) < 1+20+24 {
			break
		}
		var f models.TorrentStats
		copy(f.InfoHash[:], data[1:21])
		f.Seeders = int(int64(binary.BigEndian.Uint64(data[21:])))
		f.Leechers = int(int64(binary.BigEndian.Uint64(data[29:])))
		f.Snatches = int(int64(binary.BigEndian.Uint64(data[37:])))
		if prev, ok := seen[f.InfoHash]; ok {
			f = prev
		}
		seen[f.InfoHash] = f
		files = append(files, f)
		data = data[45:]
	}
	return files
}

func FuzzScrapeResponse(f *testing.F) {
	rec := func(hash string, s, l, n uint64) []byte {
		b := append([]byte{0}, hash...)
		b = binary.BigEndian.AppendUint64(b, s)
		b = binary.BigEndian.AppendUint64(b, l)
		return binary.BigEndian.AppendUint64(b, n)
	}
	f.Add([]byte{})
	f.Add(rec("aaaaaaaaaaaaaaaaaaaa", 1, 3, 2))
	f.Add(append(append(rec("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 9, 0, 0),
		rec("\x00+&%=\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 0, 0, math.MaxUint64)...), 1, 3))
	f.Fuzz(func(t *testing.T, data []byte) {
		files := fuzzFiles(data)
		want := map[string]any{}
		for _, fs := range files {
			want[string(fs.InfoHash[:])] = map[string]any{
				"complete":   int64(fs.Seeders),
				"downloaded": int64(fs.Snatches),
				"incomplete": int64(fs.Leechers),
			}
		}
		b := appendScrape(nil, files)
		got := decodeDict(t, b)
		require.Equal(t, map[string]any{"files": want}, got)
		// appendScrape sorts its argument in place.
		for i := 1; i < len(files); i++ {
			require.LessOrEqual(t, bytes.Compare(files[i-1].InfoHash[:], files[i].InfoHash[:]), 0)
		}
	})
}

func FuzzParseAnnounce(f *testing.F) {
	for _, seed := range []string{
		"",
		"info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&peer_id=-qB4630-aaaaaaaaaaaa&port=6881&uploaded=0&downloaded=0&left=0",
		"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=0&cryptoport=7000&uploaded=1&downloaded=2&left=3&numwant=-5&compact=0&no_peer_id=1&event=paused",
		"info_hash=+++++++++++++++++++%2B&peer_id=%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00&port=65535&uploaded=9223372036854775807&downloaded=0&left=0&event=empty&numwant=99999999999999999999999",
		"info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1",
		"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&uploaded=0&downloaded=0&left=0&event=bogus",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var q query.Params
		if err := q.Parse(raw); err != nil {
			return
		}
		var a models.Announce
		// Private mode's lenient numwant refuses nothing the strict reading accepts, and reads
		// the same but for an empty numwant (0 there, the default here).
		var lenient models.Announce
		lerr := parseAnnounce(&q, &lenient, true)
		err := parseAnnounce(&q, &a, false)
		if err == nil {
			require.NoError(t, lerr, "lenient parse of %q", raw)
			if v, ok := q.Get("numwant"); ok && len(v) == 0 {
				require.Zero(t, lenient.NumWant)
				lenient.NumWant = a.NumWant
			}
			require.Equal(t, a, lenient, "lenient parse of %q", raw)
		}
		if err != nil {
			var ce models.ClientError
			require.True(t, errors.As(err, &ce), "parseAnnounce(%q) = %v, not a ClientError", raw, err)
		} else {
			require.Equal(t, 1, q.Count("info_hash"))
			require.Equal(t, 1, q.Count("peer_id"))
			ih, _ := q.Get("info_hash")
			pid, _ := q.Get("peer_id")
			require.Len(t, ih, 20)
			require.Len(t, pid, 20)
			require.Equal(t, ih, a.InfoHash[:])
			require.Equal(t, pid, a.PeerID[:])
			require.NotZero(t, a.Endpoint.Port())
			require.False(t, a.Endpoint.Addr().IsValid(), "parseAnnounce must leave the address to resolve")
			require.GreaterOrEqual(t, a.NumWant, -1)
			require.GreaterOrEqual(t, a.Uploaded, int64(0))
			require.GreaterOrEqual(t, a.Downloaded, int64(0))
			require.GreaterOrEqual(t, a.Left, int64(0))
			require.GreaterOrEqual(t, a.Corrupt, int64(0))
			if ev, ok := q.Get("event"); ok && string(ev) != "empty" {
				require.Equal(t, string(ev), a.Event.String())
			} else {
				require.Equal(t, models.None, a.Event)
			}
			if v, ok := q.Get("compact"); ok && string(v) == "0" {
				require.False(t, a.Compact)
			} else {
				require.True(t, a.Compact)
			}
		}

		// The same query read as a scrape keeps every 20-byte info_hash in order; private
		// mode's lenient reading keeps the same hashes and leaves out the others.
		for _, lenient := range []bool{false, true} {
			var s models.Scrape
			if err := parseScrape(&q, &s, 74, lenient); err == nil {
				j := 0
				for i := 0; i < q.Len(); i++ {
					k, v := q.Pair(i)
					if string(k) == "info_hash" && len(v) == 20 {
						require.Equal(t, v, s.InfoHashes[j][:])
						j++
					}
				}
				require.Equal(t, j, len(s.InfoHashes))
			}
		}
	})
}
