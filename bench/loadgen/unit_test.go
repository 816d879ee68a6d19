package loadgen

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHistogramQuantile(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one small value is exact", []time.Duration{7}, 0.5, 7},
		{"median of three", []time.Duration{100 * time.Microsecond, 200 * time.Microsecond, 10 * time.Millisecond}, 0.5, 200 * time.Microsecond},
		{"p99 finds the tail", append(repeat(time.Millisecond, 98), 50*time.Millisecond, 50*time.Millisecond), 0.99, 50 * time.Millisecond},
		{"negative counts as zero", []time.Duration{-5}, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Record(v)
			}
			got := h.Quantile(tt.q)
			// A bucket is at most 1/16 of its value wide.
			assert.InDelta(t, float64(tt.want), float64(got), float64(tt.want)/16+0.5)
			assert.Equal(t, uint64(len(tt.values)), h.Count())
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	s := make([]time.Duration, n)
	for i := range s {
		s[i] = d
	}
	return s
}

func TestHistogramBuckets(t *testing.T) {
	// Every value falls in the bucket whose bounds hold it, and buckets are in order.
	r := rand.New(rand.NewPCG(1, 1))
	for range 10000 {
		v := r.Uint64() >> r.IntN(64)
		b := bucketOf(v)
		if bucketLow(b) > v || (b+1 < histBuckets && v >= bucketLow(b+1)) {
			t.Fatalf("value %d in bucket %d of [%d, %d)", v, b, bucketLow(b), bucketLow(b+1))
		}
	}
	var h, o Histogram
	h.Record(time.Millisecond)
	o.Record(3 * time.Millisecond)
	o.Record(3 * time.Millisecond)
	h.Merge(&o)
	assert.Equal(t, uint64(3), h.Count())
	assert.InDelta(t, float64(3*time.Millisecond), float64(h.Quantile(0.5)), float64(3*time.Millisecond)/16)
}

func TestCheckAnnounceBody(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		want   Verdict
		reason string
	}{
		{"compact answer", "d8:completei1e10:incompletei0e8:intervali1800e5:peers6:abcdefe", OK, ""},
		{"failure with interval", "d14:failure reason6:nope !8:intervali60ee", Failure, "nope !"},
		{"no interval", "d8:completei1ee", Malformed, ""},
		{"interval not an integer", "d8:interval4:1800e", Malformed, ""},
		{"not a dict", "l8:intervale", Malformed, ""},
		{"truncated", "d8:intervali1800e", Malformed, ""},
		{"trailing bytes", "d8:intervali1800eeX", Malformed, ""},
		{"leading zero", "d8:intervali0180ee", Malformed, ""},
		{"minus zero", "d8:intervali-0ee", Malformed, ""},
		{"string longer than the body", "d8:intervali1e5:peers99:abce", Malformed, ""},
		{"nested peers list", "d8:intervali1e5:peersld2:ip9:127.0.0.14:porti1eeee", OK, ""},
		{"empty", "", Malformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, reason := CheckAnnounceBody([]byte(tt.body))
			assert.Equal(t, tt.want, v)
			assert.Equal(t, tt.reason, string(reason))
		})
	}
}

func TestCheckScrapeBody(t *testing.T) {
	entry := "d8:completei1e10:downloadedi0e10:incompletei0ee"
	h1, h2 := "20:aaaaaaaaaaaaaaaaaaaa", "20:bbbbbbbbbbbbbbbbbbbb"
	tests := []struct {
		name string
		body string
		want int
		v    Verdict
	}{
		{"one", "d5:filesd" + h1 + entry + "ee", 1, OK},
		{"two", "d5:filesd" + h1 + entry + h2 + entry + "ee", 2, OK},
		{"one of two", "d5:filesd" + h1 + entry + "ee", 2, Malformed},
		{"no files", "d5:flagsdee", 1, Malformed},
		{"failure", "d14:failure reason3:no!e", 1, Failure},
		{"files not a dict", "d5:filesle" + "e", 1, Malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := CheckScrapeBody([]byte(tt.body), tt.want)
			assert.Equal(t, tt.v, v)
		})
	}
}

func TestResponseReader(t *testing.T) {
	ok := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	tests := []struct {
		name   string
		stream string
		bodies []string // one per Read that must succeed
		close  []bool
		errAt  error // error of the Read after the bodies
	}{
		{"one", ok, []string{"hello"}, []bool{false}, io.EOF},
		{"pipelined", ok + ok, []string{"hello", "hello"}, []bool{false, false}, io.EOF},
		{"connection close", "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 2\r\n\r\nhi", []string{"hi"}, []bool{true}, io.EOF},
		{"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", []string{""}, []bool{true}, io.EOF},
		{"body cut short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", nil, nil, io.ErrUnexpectedEOF},
		{"header cut short", "HTTP/1.1 200 OK\r\nContent-Len", nil, nil, io.ErrUnexpectedEOF},
		{"no length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", nil, nil, errNoLength},
		{"status 404", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", nil, nil, errStatus},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", nil, nil, errStatusLine},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			if oneByte {
				name += ", one byte a read"
			}
			t.Run(name, func(t *testing.T) {
				var src io.Reader = strings.NewReader(tt.stream)
				if oneByte {
					src = iotest.OneByteReader(src)
				}
				rr := NewResponseReader(1024)
				var resp Response
				for i, want := range tt.bodies {
					require.NoError(t, rr.Read(src, &resp))
					assert.Equal(t, 200, resp.Status)
					assert.Equal(t, want, string(resp.Body))
					assert.Equal(t, tt.close[i], resp.Close)
				}
				assert.ErrorIs(t, rr.Read(src, &resp), tt.errAt)
			})
		}
	}
	t.Run("too large", func(t *testing.T) {
		rr := NewResponseReader(64)
		var resp Response
		err := rr.Read(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("x", 100)), &resp)
		assert.ErrorIs(t, err, errBodyTooLong)
	})
}

func TestAppendAnnounce(t *testing.T) {
	a := AnnounceParams{InfoHash: [20]byte{0x00, 0x2b, 0xff}, PeerID: PeerID(0xabc), Port: 6881, Left: 0, Event: "started", NumWant: 30}
	got := string(AppendAnnounce(nil, "127.0.0.1:1", &a, true))
	want := "GET /announce?info_hash=%00%2B%FF" + strings.Repeat("%00", 17) +
		"&peer_id=-BN0001-000000000abc&port=6881&uploaded=0&downloaded=0&left=0&event=started&numwant=30&compact=1&no_peer_id=1 HTTP/1.1\r\n" +
		"Host: 127.0.0.1:1\r\nUser-Agent: chihaya-bench/1\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
	assert.Equal(t, want, got)

	a.Passkey = []byte("00000000000000000000000000000001")
	got = string(AppendAnnounce(nil, "h", &a, false))
	assert.True(t, strings.HasPrefix(got, "GET /00000000000000000000000000000001/announce?info_hash="), got)
	got = string(AppendScrapeAt(nil, "h", a.Passkey, [][20]byte{{1}}, false))
	assert.True(t, strings.HasPrefix(got, "GET /00000000000000000000000000000001/scrape?info_hash=%01"), got)

	s := string(AppendScrape(nil, "h", [][20]byte{{1}, {2}}, false))
	assert.True(t, strings.HasPrefix(s, "GET /scrape?info_hash=%01"+strings.Repeat("%00", 19)+"&info_hash=%02"), s)
	assert.True(t, strings.HasSuffix(s, "HTTP/1.1\r\nHost: h\r\nUser-Agent: chihaya-bench/1\r\nAccept-Encoding: identity\r\n\r\n"), s)
}

func TestUDPWire(t *testing.T) {
	c := AppendUDPConnect(nil, 0x01020304)
	assert.Equal(t, []byte{0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4}, c)

	a := UDPAnnounce{ConnID: 9, TxID: 7, InfoHash: InfoHash(1), PeerID: PeerID(2), Left: 1000, Event: EventStarted, Key: 5, NumWant: -1, Port: 6881}
	p := AppendUDPAnnounce(nil, &a)
	require.Len(t, p, 98)
	assert.Equal(t, uint64(9), binary.BigEndian.Uint64(p))
	assert.Equal(t, uint32(ActionAnnounce), binary.BigEndian.Uint32(p[8:]))
	assert.Equal(t, uint32(7), binary.BigEndian.Uint32(p[12:]))
	h := InfoHash(1)
	assert.Equal(t, h[:], p[16:36])
	assert.Equal(t, uint64(1000), binary.BigEndian.Uint64(p[64:]))
	assert.Equal(t, uint32(EventStarted), binary.BigEndian.Uint32(p[80:]))
	assert.Equal(t, uint32(0xffffffff), binary.BigEndian.Uint32(p[92:]))
	assert.Equal(t, uint16(6881), binary.BigEndian.Uint16(p[96:]))

	s := AppendUDPScrape(nil, 9, 8, [][20]byte{{1}, {2}, {3}})
	assert.Len(t, s, 16+60)

	hdr := func(action, tx uint32, rest ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, action)
		return append(binary.BigEndian.AppendUint32(b, tx), rest...)
	}
	tests := []struct {
		name    string
		p       []byte
		action  uint32
		nHashes int
		want    Verdict
	}{
		{"connect", hdr(0, 1, 0, 0, 0, 0, 0, 0, 0, 42), ActionConnect, 0, OK},
		{"connect short", hdr(0, 1, 0, 0), ActionConnect, 0, Malformed},
		{"announce no peers", hdr(1, 1, make([]byte, 12)...), ActionAnnounce, 0, OK},
		{"announce two peers", hdr(1, 1, make([]byte, 12+12)...), ActionAnnounce, 0, OK},
		{"announce half a peer", hdr(1, 1, make([]byte, 12+3)...), ActionAnnounce, 0, Malformed},
		{"scrape of two", hdr(2, 1, make([]byte, 24)...), ActionScrape, 2, OK},
		{"scrape of two answers one", hdr(2, 1, make([]byte, 12)...), ActionScrape, 2, Malformed},
		{"error packet", hdr(3, 1, []byte("bad")...), ActionAnnounce, 0, Failure},
		{"wrong action", hdr(2, 1, make([]byte, 12)...), ActionAnnounce, 0, Malformed},
		{"too short", []byte{0, 0, 0}, ActionAnnounce, 0, Malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, cid := CheckUDP(tt.p, tt.action, tt.nHashes)
			assert.Equal(t, tt.want, v)
			if tt.name == "connect" {
				assert.Equal(t, uint64(42), cid)
			}
		})
	}
}

func TestPool(t *testing.T) {
	seen := make(map[[20]byte]bool, 100000)
	for i := range 100000 {
		h := InfoHash(i)
		if seen[h] {
			t.Fatalf("hash %d repeats", i)
		}
		seen[h] = true
	}
	var buf bytes.Buffer
	require.NoError(t, WriteWhitelist(&buf, 3))
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	require.Len(t, lines, 3)
	for i, l := range lines {
		h := InfoHash(i)
		assert.Len(t, l, 40)
		assert.Equal(t, strings.ToLower(l), l)
		assert.Contains(t, l, strings.ToLower(strings.TrimLeft(string(appendEscaped(nil, h[:1])), "%")))
	}
}

func TestPeerAddressesAreDistinct(t *testing.T) {
	tests := []struct{ peers, hosts int }{
		{1_000_000, 32},
		{100_000, MaxHosts},
		{32 * PortsPerHost, 32}, // the most peers 32 sockets can tell apart
	}
	for _, tt := range tests {
		seen := make([]uint64, tt.hosts*65536/64)
		for i := range tt.peers {
			h, p := PeerHost(i, tt.hosts), PeerPort(i, tt.hosts)
			bit := h*65536 + int(p)
			if p < FirstPort || seen[bit/64]&(1<<(bit%64)) != 0 {
				t.Fatalf("peers=%d hosts=%d: peer %d has host %d port %d, taken or reserved", tt.peers, tt.hosts, i, h, p)
			}
			seen[bit/64] |= 1 << (bit % 64)
		}
	}
	assert.NotEqual(t, PeerID(1), PeerID(2))
}

func TestPopularityHasAHotHead(t *testing.T) {
	const n, peers, draws = 1_000_000, 2_000_000, 200_000
	p := NewPopularity(n, peers)
	r := rand.New(rand.NewPCG(5, 5))
	head := 0
	for range draws {
		i := p.Draw(r)
		if i < 0 || i >= n {
			t.Fatalf("draw %d out of [0, %d)", i, n)
		}
		if i < n/100 {
			head++
		}
	}
	// The head of 1% of the torrents gets the head mass plus 1% of the floor.
	want := p.headMass + (1-p.headMass)*0.01
	assert.InDelta(t, want, float64(head)/draws, 0.01)
	assert.Greater(t, want, 0.5, "most announces go to the hot 1%")
}

func TestFillSeederAndCounts(t *testing.T) {
	tests := []struct {
		name                     string
		peers, torrents, torrent int
		seeders, leechers        int
	}{
		{"ten per torrent", 1_000_000, 100_000, 7, 5, 5},
		{"one per torrent seeds", 1_000_000, 1_000_000, 999_999, 1, 0},
		{"one torrent", 1_000_000, 1, 0, 500_000, 500_000},
		{"odd count: one more seeder", 1050, 100, 49, 6, 5},
		{"past the remainder", 1050, 100, 50, 5, 5},
		{"no torrents counts as one", 3, 0, 0, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, l := FillCounts(tt.peers, tt.torrents, tt.torrent)
			assert.Equal(t, tt.seeders, s)
			assert.Equal(t, tt.leechers, l)
		})
	}
	// FillCounts agrees with what a fill sends: peer j to torrent j % T, seeding by FillSeeder.
	const peers, torrents = 1234, 100
	var seeders, leechers [torrents]int
	for j := range peers {
		if FillSeeder(j, torrents) {
			seeders[j%torrents]++
		} else {
			leechers[j%torrents]++
		}
	}
	for tr := range torrents {
		s, l := FillCounts(peers, torrents, tr)
		require.Equal(t, seeders[tr], s, "torrent %d", tr)
		require.Equal(t, leechers[tr], l, "torrent %d", tr)
	}
}

func TestPasskey(t *testing.T) {
	assert.Equal(t, "00000000000000000000000000000001", string(ptr(Passkey(0))[:]))
	assert.Equal(t, "000000000000000000000000000186a0", string(ptr(Passkey(99_999))[:]))
	tests := []struct{ peer, users, want int }{
		{0, 100, 0}, {9, 100, 0}, {10, 100, 1}, {999, 100, 99}, {1000, 100, 0}, {5, 0, 0},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, PeerUser(tt.peer, tt.users), "peer %d of %d users", tt.peer, tt.users)
	}
}

func TestScrapeFiles(t *testing.T) {
	h1, h2 := "20:aaaaaaaaaaaaaaaaaaaa", "20:bbbbbbbbbbbbbbbbbbbb"
	tests := []struct {
		name    string
		body    string
		want    map[string][2]int64
		wantErr bool
	}{
		{"two", "d5:filesd" + h1 + "d8:completei3e10:downloadedi0e10:incompletei4ee" + h2 + "d8:completei0e10:incompletei1eeee",
			map[string][2]int64{"aaaaaaaaaaaaaaaaaaaa": {3, 4}, "bbbbbbbbbbbbbbbbbbbb": {0, 1}}, false},
		{"none", "d5:filesdee", map[string][2]int64{}, false},
		{"entry without incomplete", "d5:filesd" + h1 + "d8:completei3eeee", nil, true},
		{"negative count", "d5:filesd" + h1 + "d8:completei-3e10:incompletei4eeee", nil, true},
		{"failure", "d14:failure reason3:no!e", nil, true},
		{"no files", "d5:flagsdee", nil, true},
		{"malformed", "d5:files", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string][2]int64{}
			err := ScrapeFiles([]byte(tt.body), func(h []byte, c, i int64) { got[string(h)] = [2]int64{c, i} })
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestHistogramMaxAndTail(t *testing.T) {
	var h, o Histogram
	assert.Zero(t, h.Max())
	for range 9990 {
		h.Record(100 * time.Microsecond)
	}
	for range 10 {
		o.Record(20 * time.Millisecond)
	}
	o.Record(35 * time.Millisecond)
	h.Merge(&o)
	assert.Equal(t, 35*time.Millisecond, h.Max())
	// 11 of 10,001 above 100 µs: the p99.9 lands in the tail, the p99 does not.
	assert.InDelta(t, float64(20*time.Millisecond), float64(h.Quantile(0.999)), float64(20*time.Millisecond)/16)
	assert.InDelta(t, float64(100*time.Microsecond), float64(h.Quantile(0.99)), float64(100*time.Microsecond)/16)
}
