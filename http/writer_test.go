package http

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// scanStrict decodes one bencoded value that must fill b exactly, and fails on anything a strict
// decoder would refuse: non-canonical integers (leading zeros, "-0", empty, out of int64) and
// string lengths, dictionary keys that are not strictly increasing as raw bytes, truncation and
// trailing data. It returns the same Go types as anacrolix's decoder into an interface{}
// (string, int64, []any, map[string]any), so that the two can be compared.
func scanStrict(b []byte) (any, error) {
	s := &strictScanner{b: b}
	v, err := s.value(0)
	if err != nil {
		return nil, err
	}
	if s.i != len(b) {
		return nil, fmt.Errorf("offset %d: %d trailing bytes", s.i, len(b)-s.i)
	}
	return v, nil
}

type strictScanner struct {
	b []byte
	i int
}

func (s *strictScanner) errf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *strictScanner) value(depth int) (any, error) {
	if depth > 64 {
		return nil, s.errf("nested too deeply")
	}
	if s.i >= len(s.b) {
		return nil, s.errf("unexpected end")
	}
	switch c := s.b[s.i]; {
	case c == 'i':
		s.i++
		end := bytes.IndexByte(s.b[s.i:], 'e')
		if end < 0 {
			return nil, s.errf("unterminated integer")
		}
		digits := string(s.b[s.i : s.i+end])
		if !canonicalInt(digits) {
			return nil, s.errf("non-canonical integer %q", digits)
		}
		n, err := strconv.ParseInt(digits, 10, 64)
		if err != nil {
			return nil, s.errf("integer %q: %v", digits, err)
		}
		s.i += end + 1
		return n, nil
	case '0' <= c && c <= '9':
		str, err := s.str()
		if err != nil {
			return nil, err
		}
		return str, nil
	case c == 'l':
		s.i++
		list := []any{}
		for {
			if s.i >= len(s.b) {
				return nil, s.errf("unterminated list")
			}
			if s.b[s.i] == 'e' {
				s.i++
				return list, nil
			}
			v, err := s.value(depth + 1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
	case c == 'd':
		s.i++
		dict := map[string]any{}
		var prev *string
		for {
			if s.i >= len(s.b) {
				return nil, s.errf("unterminated dict")
			}
			if s.b[s.i] == 'e' {
				s.i++
				return dict, nil
			}
			if c := s.b[s.i]; c < '0' || c > '9' {
				return nil, s.errf("dict key is not a string (%q)", c)
			}
			k, err := s.str()
			if err != nil {
				return nil, err
			}
			if prev != nil && *prev >= k { // Go compares strings as raw bytes
				return nil, s.errf("dict key %q does not sort after %q", k, *prev)
			}
			prev = &k
			v, err := s.value(depth + 1)
			if err != nil {
				return nil, err
			}
			dict[k] = v
		}
	default:
		return nil, s.errf("unknown value type %q", c)
	}
}

func (s *strictScanner) str() (string, error) {
	colon := bytes.IndexByte(s.b[s.i:], ':')
	if colon < 0 {
		return "", s.errf("string without colon")
	}
	digits := string(s.b[s.i : s.i+colon])
	if !canonicalInt(digits) || digits[0] == '-' {
		return "", s.errf("non-canonical string length %q", digits)
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		return "", s.errf("string length %q: %v", digits, err)
	}
	s.i += colon + 1
	if n > len(s.b)-s.i {
		return "", s.errf("string of %d bytes truncated to %d", n, len(s.b)-s.i)
	}
	str := string(s.b[s.i : s.i+n])
	s.i += n
	return str, nil
}

// canonicalInt reports whether s is "0" or an optionally negative decimal without leading zeros.
func canonicalInt(s string) bool {
	if s == "0" {
		return true
	}
	s = strings.TrimPrefix(s, "-")
	if s == "" || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// decodeDict checks b with the strict scanner, decodes it with anacrolix's bencode decoder, and
// requires both to agree on a top-level dictionary, which it returns.
func decodeDict(tb testing.TB, b []byte) map[string]any {
	tb.Helper()
	strict, err := scanStrict(b)
	require.NoError(tb, err, "strict scan of %q", b)
	var lenient any
	require.NoError(tb, bencode.Unmarshal(b, &lenient), "anacrolix decode of %q", b)
	require.Equal(tb, strict, lenient, "strict and anacrolix decodes differ for %q", b)
	d, ok := lenient.(map[string]any)
	require.True(tb, ok, "top level of %q is %T, not a dict", b, lenient)
	return d
}

func TestScanStrict(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want any
		bad  bool
	}{
		{name: "int", in: "i42e", want: int64(42)},
		{name: "zero", in: "i0e", want: int64(0)},
		{name: "negative", in: "i-7e", want: int64(-7)},
		{name: "int64 min", in: "i-9223372036854775808e", want: int64(math.MinInt64)},
		{name: "string", in: "4:spam", want: "spam"},
		{name: "empty string", in: "0:", want: ""},
		{name: "list", in: "li1e1:ae", want: []any{int64(1), "a"}},
		{name: "sorted dict", in: "d1:ai1e1:bi2ee", want: map[string]any{"a": int64(1), "b": int64(2)}},
		{name: "raw-byte order", in: "d1:Zi1e1:ai2e1:\xffi3ee", want: map[string]any{"Z": int64(1), "a": int64(2), "\xff": int64(3)}},
		{name: "leading zero", in: "i03e", bad: true},
		{name: "negative zero", in: "i-0e", bad: true},
		{name: "empty int", in: "ie", bad: true},
		{name: "plus sign", in: "i+1e", bad: true},
		{name: "int overflow", in: "i9223372036854775808e", bad: true},
		{name: "string length leading zero", in: "04:spam", bad: true},
		{name: "truncated string", in: "5:spam", bad: true},
		{name: "unsorted keys", in: "d1:bi1e1:ai2ee", bad: true},
		{name: "duplicate keys", in: "d1:ai1e1:ai2ee", bad: true},
		{name: "high byte sorts after ascii", in: "d1:\xffi1e1:ai2ee", bad: true},
		{name: "int key", in: "di1ei2ee", bad: true},
		{name: "unterminated dict", in: "d1:ai1e", bad: true},
		{name: "trailing data", in: "i1ei2e", bad: true},
		{name: "empty input", in: "", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scanStrict([]byte(tc.in))
			if tc.bad {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func peerID(s string) models.PeerID {
	var id models.PeerID
	copy(id[:], s)
	return id
}

func TestAppendAnnounceExact(t *testing.T) {
	v4 := []models.Peer{
		{ID: peerID("-qB4630-aaaaaaaaaaaa"), AddrPort: mustAddrPort("1.2.3.4:6881")},
		{ID: peerID("-TR3000-bbbbbbbbbbbb"), AddrPort: mustAddrPort("10.0.0.255:1")},
	}
	v6 := []models.Peer{
		{ID: peerID("-DE2000-cccccccccccc"), AddrPort: mustAddrPort("[2001:db8::1]:65535")},
	}
	for _, tc := range []struct {
		name string
		resp models.AnnounceResponse
		want string
	}{
		{
			name: "compact, no peers, no external ip",
			resp: models.AnnounceResponse{Interval: 1800 * time.Second, MinInterval: 900 * time.Second, Compact: true},
			want: "d8:completei0e10:downloadedi0e10:incompletei0e8:intervali1800e12:min intervali900e5:peers0:e",
		},
		{
			name: "compact v4 and v6 with external ipv4",
			resp: models.AnnounceResponse{
				Complete: 5, Incomplete: 10, Downloaded: 50,
				Interval: 1927 * time.Second, MinInterval: 1800 * time.Second,
				IPv4Peers: v4, IPv6Peers: v6,
				ExternalIP: netip.MustParseAddr("127.0.0.1"),
				Compact:    true,
			},
			want: "d8:completei5e10:downloadedi50e11:external ip4:\x7f\x00\x00\x01" +
				"10:incompletei10e8:intervali1927e12:min intervali1800e" +
				"5:peers12:\x01\x02\x03\x04\x1a\xe1\x0a\x00\x00\xff\x00\x01" +
				"6:peers618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xff\xff" +
				"e",
		},
		{
			name: "external ip mapped v4 is written as 4 bytes",
			resp: models.AnnounceResponse{ExternalIP: netip.MustParseAddr("::ffff:192.0.2.1"), Compact: true},
			want: "d8:completei0e10:downloadedi0e11:external ip4:\xc0\x00\x02\x01" +
				"10:incompletei0e8:intervali0e12:min intervali0e5:peers0:e",
		},
		{
			name: "external ipv6 is 16 bytes",
			resp: models.AnnounceResponse{ExternalIP: netip.MustParseAddr("2001:db8::2"), Compact: true},
			want: "d8:completei0e10:downloadedi0e11:external ip16:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02" +
				"10:incompletei0e8:intervali0e12:min intervali0e5:peers0:e",
		},
		{
			name: "dict peers with peer ids, v6 in the same list",
			resp: models.AnnounceResponse{IPv4Peers: v4[:1], IPv6Peers: v6},
			want: "d8:completei0e10:downloadedi0e10:incompletei0e8:intervali0e12:min intervali0e5:peersl" +
				"d2:ip7:1.2.3.47:peer id20:-qB4630-aaaaaaaaaaaa4:porti6881ee" +
				"d2:ip11:2001:db8::17:peer id20:-DE2000-cccccccccccc4:porti65535ee" +
				"ee",
		},
		{
			name: "dict peers without peer ids",
			resp: models.AnnounceResponse{IPv4Peers: v4[1:], NoPeerID: true},
			want: "d8:completei0e10:downloadedi0e10:incompletei0e8:intervali0e12:min intervali0e5:peersl" +
				"d2:ip10:10.0.0.2554:porti1ee" +
				"ee",
		},
		{
			name: "sub-second intervals truncate",
			resp: models.AnnounceResponse{Interval: 1999 * time.Millisecond, MinInterval: 999 * time.Millisecond, Compact: true},
			want: "d8:completei0e10:downloadedi0e10:incompletei0e8:intervali1e12:min intervali0e5:peers0:e",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendAnnounce(nil, &tc.resp)
			assert.Equal(t, tc.want, string(got))
			decodeDict(t, got)
		})
	}
}

func TestAppendFailureExact(t *testing.T) {
	for _, tc := range []struct {
		name              string
		reason            string
		interval, minimum time.Duration
		want              string
	}{
		{name: "typical", reason: "invalid info_hash", interval: 30 * time.Minute, minimum: 15 * time.Minute,
			want: "d14:failure reason17:invalid info_hash8:intervali1800e12:min intervali900ee"},
		{name: "empty reason", reason: "", want: "d14:failure reason0:8:intervali0e12:min intervali0ee"},
		{name: "binary reason", reason: "\x00e\xff:", interval: time.Second, minimum: time.Second,
			want: "d14:failure reason4:\x00e\xff:8:intervali1e12:min intervali1ee"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendFailure(nil, tc.reason, tc.interval, tc.minimum)
			assert.Equal(t, tc.want, string(got))
			d := decodeDict(t, got)
			assert.Equal(t, tc.reason, d["failure reason"])
		})
	}
}

func TestAppendScrape(t *testing.T) {
	h := func(b byte) models.InfoHash {
		var ih models.InfoHash
		for i := range ih {
			ih[i] = b
		}
		return ih
	}
	for _, tc := range []struct {
		name  string
		files []models.TorrentStats
		want  string
	}{
		{name: "no files", files: nil, want: "d5:filesdee"},
		{
			name:  "one file",
			files: []models.TorrentStats{{InfoHash: h('a'), Seeders: 1, Leechers: 3, Snatches: 2}},
			want:  "d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1e10:downloadedi2e10:incompletei3eeee",
		},
		{
			name: "request order is re-sorted as raw bytes, duplicates written once",
			files: []models.TorrentStats{
				{InfoHash: h(0xff), Seeders: 9},
				{InfoHash: h('b'), Leechers: 4},
				{InfoHash: h(0x00), Snatches: 7},
				{InfoHash: h('b'), Leechers: 4},
			},
			want: "d5:filesd" +
				"20:" + strings.Repeat("\x00", 20) + "d8:completei0e10:downloadedi7e10:incompletei0ee" +
				"20:" + strings.Repeat("b", 20) + "d8:completei0e10:downloadedi0e10:incompletei4ee" +
				"20:" + strings.Repeat("\xff", 20) + "d8:completei9e10:downloadedi0e10:incompletei0ee" +
				"ee",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appendScrape(nil, tc.files)
			assert.Equal(t, tc.want, string(got))
			decodeDict(t, got)
		})
	}
}

// TestWriterHeaders checks what every bencoded answer carries at the HTTP level (§1.6).
func TestWriterHeaders(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(w *writer) error
	}{
		{name: "announce", write: func(w *writer) error {
			return w.WriteAnnounce(&models.AnnounceResponse{Compact: true, IPv4Peers: []models.Peer{{AddrPort: mustAddrPort("1.2.3.4:5")}}})
		}},
		{name: "scrape", write: func(w *writer) error {
			return w.WriteScrape(&models.ScrapeResponse{Files: []models.TorrentStats{{Seeders: 1}}})
		}},
		{name: "failure", write: func(w *writer) error {
			return w.writeFailure("nope", time.Minute, time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			w := &writer{buf: []byte("stale bytes from an earlier answer")}
			require.NoError(t, tc.write(w))
			assert.True(t, w.ready)
			require.NoError(t, w.writeTo(rec))
			res := rec.Result()
			assert.Equal(t, 200, res.StatusCode)
			assert.Equal(t, "text/plain", res.Header.Get("Content-Type"))
			assert.Equal(t, "no-cache", res.Header.Get("Cache-Control"))
			assert.Equal(t, strconv.Itoa(rec.Body.Len()), res.Header.Get("Content-Length"))
			assert.Empty(t, res.TransferEncoding)
			decodeDict(t, rec.Body.Bytes())
		})
	}
}

// TestWriteScrapeKeepsRequestOrder checks that the writer sorts a copy: the core's slice stays in
// request order.
func TestWriteScrapeKeepsRequestOrder(t *testing.T) {
	files := []models.TorrentStats{{InfoHash: models.InfoHash{0xff}}, {InfoHash: models.InfoHash{0x01}}}
	w := &writer{}
	require.NoError(t, w.WriteScrape(&models.ScrapeResponse{Files: files}))
	assert.Equal(t, byte(0xff), files[0].InfoHash[0])
	assert.Equal(t, byte(0x01), files[1].InfoHash[0])
}

type failingResponseWriter struct{ *httptest.ResponseRecorder }

var errWrite = errors.New("connection reset")

func (failingResponseWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestWriterReportsWriteErrors(t *testing.T) {
	w := &writer{}
	require.NoError(t, w.WriteAnnounce(&models.AnnounceResponse{}))
	assert.ErrorIs(t, w.writeTo(failingResponseWriter{httptest.NewRecorder()}), errWrite)
}
