package bencode

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAppendString(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{name: "empty", in: "", want: "0:"},
		{name: "ascii", in: "spam", want: "4:spam"},
		{name: "key with space", in: "min interval", want: "12:min interval"},
		{name: "binary with nul and 0xff", in: "\x00\xff\x00", want: "3:\x00\xff\x00"},
		{name: "bencode syntax inside", in: "i1e4:d:le", want: "9:i1e4:d:le"},
		{name: "length counts bytes not runes", in: "héllo✓", want: "9:héllo✓"},
		{name: "invalid utf-8 kept", in: "\xed\xa0\x80", want: "3:\xed\xa0\x80"},
		{name: "twenty byte hash", in: strings.Repeat("\x9a", 20), want: "20:" + strings.Repeat("\x9a", 20)},
		{name: "four digit length", in: strings.Repeat("x", 1890), want: "1890:" + strings.Repeat("x", 1890)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, string(AppendString(nil, tc.in)))
			assert.Equal(t, tc.want, string(AppendBytes(nil, []byte(tc.in))))
			// A nil slice and an empty one encode alike.
			if tc.in == "" {
				assert.Equal(t, tc.want, string(AppendBytes(nil, []byte{})))
			}
			// The header alone, followed by the bytes, gives the same encoding.
			assert.Equal(t, tc.want, string(append(AppendStringHeader(nil, len(tc.in)), tc.in...)))
			// Appending keeps what the slice held.
			assert.Equal(t, "pre"+tc.want, string(AppendString([]byte("pre"), tc.in)))
		})
	}
}

func TestAppendInt(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   int64
		want string
	}{
		{name: "zero", in: 0, want: "i0e"},
		{name: "one", in: 1, want: "i1e"},
		{name: "negative one", in: -1, want: "i-1e"},
		{name: "negative", in: -42, want: "i-42e"},
		{name: "interval", in: 1800, want: "i1800e"},
		{name: "int32 max plus one", in: math.MaxInt32 + 1, want: "i2147483648e"},
		{name: "int64 max", in: math.MaxInt64, want: "i9223372036854775807e"},
		{name: "int64 min", in: math.MinInt64, want: "i-9223372036854775808e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, string(AppendInt(nil, tc.in)))
			assert.Equal(t, "x"+tc.want, string(AppendInt([]byte("x"), tc.in)))
		})
	}
}

func TestContainers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func([]byte) []byte
		want  string
	}{
		{name: "empty dict", build: func(b []byte) []byte { return AppendEnd(AppendDictStart(b)) }, want: "de"},
		{name: "empty list", build: func(b []byte) []byte { return AppendEnd(AppendListStart(b)) }, want: "le"},
		{
			name: "dict of string and int",
			build: func(b []byte) []byte {
				b = AppendDictStart(b)
				b = AppendString(b, "cow")
				b = AppendString(b, "moo")
				b = AppendString(b, "spam")
				b = AppendInt(b, -3)
				return AppendEnd(b)
			},
			want: "d3:cow3:moo4:spami-3ee",
		},
		{
			name: "list of mixed values",
			build: func(b []byte) []byte {
				b = AppendListStart(b)
				b = AppendString(b, "spam")
				b = AppendInt(b, 42)
				b = AppendBytes(b, nil)
				return AppendEnd(b)
			},
			want: "l4:spami42e0:e",
		},
		{
			name: "nested dict in list in dict",
			build: func(b []byte) []byte {
				b = AppendDictStart(b)
				b = AppendString(b, "peers")
				b = AppendListStart(b)
				b = AppendDictStart(b)
				b = AppendString(b, "ip")
				b = AppendString(b, "1.2.3.4")
				b = AppendString(b, "port")
				b = AppendInt(b, 6881)
				b = AppendEnd(b)
				b = AppendListStart(b)
				b = AppendEnd(b)
				b = AppendEnd(b)
				return AppendEnd(b)
			},
			want: "d5:peersld2:ip7:1.2.3.44:porti6881eeleee",
		},
		{
			name: "compact peers via the header",
			build: func(b []byte) []byte {
				b = AppendDictStart(b)
				b = AppendString(b, "peers")
				b = AppendStringHeader(b, 6)
				b = append(b, 1, 2, 3, 4, 0x1a, 0xe1)
				return AppendEnd(b)
			},
			want: "d5:peers6:\x01\x02\x03\x04\x1a\xe1e",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, string(tc.build(nil)))
		})
	}
}

func TestSorted(t *testing.T) {
	b := func(ss ...string) [][]byte {
		out := make([][]byte, len(ss))
		for i, s := range ss {
			out[i] = []byte(s)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		keys [][]byte
		want bool
	}{
		{name: "no keys", keys: nil, want: true},
		{name: "one key", keys: b("a"), want: true},
		{name: "announce keys", keys: b("complete", "downloaded", "external ip", "incomplete", "interval", "min interval", "peers", "peers6"), want: true},
		{name: "failure keys", keys: b("failure reason", "interval", "min interval"), want: true},
		{name: "peer dict keys", keys: b("ip", "peer id", "port"), want: true},
		{name: "scrape stats keys", keys: b("complete", "downloaded", "incomplete"), want: true},
		{name: "ocelot's failure order", keys: b("failure reason", "min interval", "interval"), want: false},
		{name: "ocelot's scrape order", keys: b("complete", "incomplete", "downloaded"), want: false},
		{name: "duplicate", keys: b("a", "a"), want: false},
		{name: "duplicate later", keys: b("a", "b", "b"), want: false},
		{name: "prefix sorts first", keys: b("peers", "peers6"), want: true},
		{name: "prefix after longer", keys: b("peers6", "peers"), want: false},
		{name: "raw bytes, not case folded", keys: b("Z", "a"), want: true},
		{name: "lowercase before uppercase is wrong", keys: b("a", "Z"), want: false},
		{name: "high bytes sort after ascii", keys: b("\x7f", "\x80", "\xff"), want: true},
		{name: "high byte is not negative", keys: b("\xff", "\x00"), want: false},
		{name: "empty key first", keys: b("", "\x00"), want: true},
		{name: "binary hashes", keys: b(strings.Repeat("\x00", 20), "\x00"+strings.Repeat("\xff", 19), strings.Repeat("\xff", 20)), want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, Sorted(tc.keys...))
		})
	}
}
