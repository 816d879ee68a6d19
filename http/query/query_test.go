package query

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// kv is one decoded pair, as strings so that failures print readably (%q shows binary bytes).
type kv struct{ k, v string }

func pairs(p *Params) []kv {
	out := make([]kv, 0, p.Len())
	for i := 0; i < p.Len(); i++ {
		k, v := p.Pair(i)
		out = append(out, kv{string(k), string(v)})
	}
	return out
}

// wikiHash is the info hash of the wiki.theory.org example.
var wikiHash = string([]byte{
	0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45,
	0x67, 0x89, 0xab, 0xcd, 0xef, 0x12, 0x34, 0x56, 0x78, 0x9a,
})

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		want []kv
		err  error
	}{
		{name: "empty query", raw: "", want: []kv{}},
		{name: "single pair", raw: "a=b", want: []kv{{"a", "b"}}},
		{name: "plus is a literal byte", raw: "info_hash=a+b++", want: []kv{{"info_hash", "a+b++"}}},
		{name: "escaped plus", raw: "x=%2B", want: []kv{{"x", "+"}}},
		{name: "escaped space is 0x20", raw: "x=%20", want: []kv{{"x", " "}}},
		{name: "lowercase hex", raw: "x=%ab%cd%ef", want: []kv{{"x", "\xab\xcd\xef"}}},
		{name: "uppercase hex", raw: "x=%AB%CD%EF", want: []kv{{"x", "\xab\xcd\xef"}}},
		{name: "mixed case hex", raw: "x=%aB%Cd%0f", want: []kv{{"x", "\xab\xcd\x0f"}}},
		{name: "nul and 0xff", raw: "x=%00%FF%ff", want: []kv{{"x", "\x00\xff\xff"}}},
		{name: "tilde and other unreserved marks", raw: "x=~!*()'.-_", want: []kv{{"x", "~!*()'.-_"}}},
		{name: "tilde in the middle of a hash", raw: "x=%7b%e7%5e%96%1b%96~%d45a", want: []kv{{"x", "\x7b\xe7\x5e\x96\x1b\x96~\xd45a"}}},
		{name: "raw high bytes are literal", raw: "x=\xff\x80\xc3(", want: []kv{{"x", "\xff\x80\xc3("}}},
		{name: "raw invalid utf-8 kept as is", raw: "x=\xed\xa0\x80", want: []kv{{"x", "\xed\xa0\x80"}}},
		{name: "wiki example", raw: "info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A", want: []kv{{"info_hash", wikiHash}}},
		{name: "escaped separators stay in the value", raw: "x=%26%3D%25&y=1", want: []kv{{"x", "&=%"}, {"y", "1"}}},
		{name: "only the first equals sign splits", raw: "a=b=c", want: []kv{{"a", "b=c"}}},
		{name: "missing equals gives an empty value", raw: "no_peer_id&compact=1", want: []kv{{"no_peer_id", ""}, {"compact", "1"}}},
		{name: "empty value", raw: "event=", want: []kv{{"event", ""}}},
		{name: "empty key", raw: "=v", want: []kv{{"", "v"}}},
		{name: "lone equals sign", raw: "=", want: []kv{{"", ""}}},
		{name: "empty pairs are skipped", raw: "&&a=1&&&b=2&", want: []kv{{"a", "1"}, {"b", "2"}}},
		{name: "only ampersands", raw: "&&&", want: []kv{}},
		{name: "keys are decoded too", raw: "info%5Fhash=1", want: []kv{{"info_hash", "1"}}},
		{name: "semicolon is not a separator", raw: "a=1;b=2", want: []kv{{"a", "1;b=2"}}},
		{name: "duplicates kept in order", raw: "h=1&h=2&h=3", want: []kv{{"h", "1"}, {"h", "2"}, {"h", "3"}}},
		{name: "question mark is literal", raw: "a=?b", want: []kv{{"a", "?b"}}},

		{name: "bad hex digit", raw: "x=%G1", err: ErrBadEscape},
		{name: "bad second hex digit", raw: "x=%1G", err: ErrBadEscape},
		{name: "escape with one digit at the end", raw: "x=%1", err: ErrBadEscape},
		{name: "trailing percent", raw: "x=abc%", err: ErrBadEscape},
		{name: "percent before ampersand", raw: "x=%&y=1", err: ErrBadEscape},
		{name: "short escape before ampersand", raw: "x=%4&y=1", err: ErrBadEscape},
		{name: "bad escape in key", raw: "%zz=1", err: ErrBadEscape},
		{name: "bad escape in a later pair", raw: "a=1&b=%%", err: ErrBadEscape},
		{name: "percent sign escaped as plus", raw: "x=%+1", err: ErrBadEscape},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Params
			err := p.Parse(tc.raw)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, pairs(&p))
			assert.Equal(t, len(tc.want), p.Len())
		})
	}
}

func TestParseWikiHashBytes(t *testing.T) {
	var p Params
	require.NoError(t, p.Parse("info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A"))
	v, ok := p.Get("info_hash")
	require.True(t, ok)
	assert.Equal(t, []byte{
		0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45,
		0x67, 0x89, 0xab, 0xcd, 0xef, 0x12, 0x34, 0x56, 0x78, 0x9a,
	}, v)
	assert.Len(t, v, 20)
}

func TestMaxPairs(t *testing.T) {
	build := func(n int, sep string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = "k" + strconv.Itoa(i) + "=" + strconv.Itoa(i)
		}
		return strings.Join(parts, sep)
	}
	for _, tc := range []struct {
		name string
		raw  string
		err  error
		n    int
	}{
		{name: "exactly MaxPairs", raw: build(MaxPairs, "&"), n: MaxPairs},
		{name: "one more than MaxPairs", raw: build(MaxPairs+1, "&"), err: ErrTooManyPairs},
		{name: "far more than MaxPairs", raw: build(10*MaxPairs, "&"), err: ErrTooManyPairs},
		{name: "empty pairs do not count", raw: build(MaxPairs, "&&&"), n: MaxPairs},
		{name: "trailing empty pair after MaxPairs", raw: build(MaxPairs, "&") + "&&", n: MaxPairs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Params
			err := p.Parse(tc.raw)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.n, p.Len())
			k, v := p.Pair(tc.n - 1)
			assert.Equal(t, "k"+strconv.Itoa(tc.n-1), string(k))
			assert.Equal(t, strconv.Itoa(tc.n-1), string(v))
		})
	}
}

func TestGetAndCount(t *testing.T) {
	var p Params
	require.NoError(t, p.Parse("info_hash=first&peer_id=p&info_hash=second&flag&info%5fhash=third"))
	for _, tc := range []struct {
		name  string
		key   string
		value string
		found bool
		count int
	}{
		{name: "first of several", key: "info_hash", value: "first", found: true, count: 3},
		{name: "single", key: "peer_id", value: "p", found: true, count: 1},
		{name: "present without value", key: "flag", value: "", found: true, count: 1},
		{name: "absent", key: "port", found: false, count: 0},
		{name: "keys compare exactly", key: "INFO_HASH", found: false, count: 0},
		{name: "prefix is not a match", key: "info", found: false, count: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, ok := p.Get(tc.key)
			assert.Equal(t, tc.found, ok)
			if tc.found {
				assert.Equal(t, tc.value, string(v))
				assert.NotNil(t, v)
			} else {
				assert.Nil(t, v)
			}
			assert.Equal(t, tc.count, p.Count(tc.key))
		})
	}
}

func TestReuse(t *testing.T) {
	var p Params
	require.NoError(t, p.Parse("a=1&b=2&c=3"))
	require.Equal(t, 3, p.Len())

	// A later parse replaces the earlier pairs entirely.
	require.NoError(t, p.Parse("z=%FF"))
	assert.Equal(t, []kv{{"z", "\xff"}}, pairs(&p))
	_, ok := p.Get("a")
	assert.False(t, ok)

	// A failed parse leaves nothing from a previous success visible through Get.
	require.ErrorIs(t, p.Parse("q=1&bad=%"), ErrBadEscape)
	_, ok = p.Get("z")
	assert.False(t, ok)

	require.NoError(t, p.Parse(""))
	assert.Equal(t, 0, p.Len())
}

func TestValuesDoNotOverlap(t *testing.T) {
	// Returned slices have their capacity capped, so appending to one cannot clobber the next.
	var p Params
	require.NoError(t, p.Parse("a=xy&b=zw"))
	a, _ := p.Get("a")
	_ = append(a, '!', '!')
	b, _ := p.Get("b")
	assert.Equal(t, "zw", string(b))
}

// announceQuery is what qBittorrent (libtorrent) sends, with a binary hash and lowercase hex.
const announceQuery = "info_hash=D%09%f6H%b0%12%9c%aa%e1%0f%8b~%1e%01d%ad%0f%8b%d3%21" +
	"&peer_id=-qB4210-mDyDc3Ju_I5Y&port=4096&uploaded=0&downloaded=0&left=451936256" +
	"&corrupt=0&key=3AF13DE0&event=stopped&numwant=0&compact=1&no_peer_id=1&supportcrypto=1&redundant=0"

func TestParseRealAnnounce(t *testing.T) {
	var p Params
	require.NoError(t, p.Parse(announceQuery))
	assert.Equal(t, 14, p.Len())
	ih, ok := p.Get("info_hash")
	require.True(t, ok)
	assert.Len(t, ih, 20)
	assert.Equal(t, "D\x09\xf6H\xb0\x12\x9c\xaa\xe1\x0f\x8b~\x1e\x01d\xad\x0f\x8b\xd3\x21", string(ih))
	pid, _ := p.Get("peer_id")
	assert.Equal(t, "-qB4210-mDyDc3Ju_I5Y", string(pid))
}

func TestParseWarmDoesNotAllocate(t *testing.T) {
	var p Params
	require.NoError(t, p.Parse(announceQuery))
	allocs := testing.AllocsPerRun(100, func() {
		if err := p.Parse(announceQuery); err != nil {
			t.Fatal(err)
		}
		if _, ok := p.Get("info_hash"); !ok {
			t.Fatal("no info_hash")
		}
		_ = p.Count("info_hash")
	})
	assert.Zero(t, allocs)
}

func BenchmarkParse(b *testing.B) {
	var p Params
	b.ReportAllocs()
	b.SetBytes(int64(len(announceQuery)))
	for b.Loop() {
		if err := p.Parse(announceQuery); err != nil {
			b.Fatal(err)
		}
	}
}
