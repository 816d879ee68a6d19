package ws

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

func TestBinary(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		ok   bool
	}{
		{"ASCII", `"abcdefghijklmnopqrst"`, true},
		{"Latin-1 as UTF-8", `"` + string([]rune{0xff, 0xfe, 0x80, 0xe9, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p'}) + `"`, true},
		{"escapes", `"\u0000\u0001\"\\abcdefghijklmnop"`, true},
		{"rune above 0xFF", `"` + string([]rune{0x100}) + `bcdefghijklmnopqrst"`, false},
		{"escaped rune above 0xFF", `"\u0100bcdefghijklmnopqrst"`, false},
		{"19 characters", `"abcdefghijklmnopqrs"`, false},
		{"21 characters", `"abcdefghijklmnopqrstu"`, false},
		{"20 bytes of 10 two-byte characters", `"` + string([]rune{0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9, 0xe9}) + `"`, false},
		{"a number", `12345678901234567890123`, false},
		{"null", `null`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b [20]byte
			assert.Equal(t, tt.ok, decodeBinary(json.RawMessage(tt.raw), &b))
		})
	}
}

// FuzzBinaryRoundTrip: every 20 bytes survive appendBinary then binary, and appendBinary
// always makes valid UTF-8 JSON.
func FuzzBinaryRoundTrip(f *testing.F) {
	f.Add([]byte("abcdefghijklmnopqrst"))
	f.Add([]byte{0, 1, 2, '"', '\\', 0x7f, 0x80, 0xff, 0xc3, 0xa9, 10, 13, 9, 8, 12, 0x1f, 0x20, '/', '<', '>'})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) != 20 {
			return
		}
		enc := appendBinary(nil, in)
		require.True(t, utf8.Valid(enc))
		var s string
		require.NoError(t, json.Unmarshal(enc, &s))
		var out [20]byte
		require.True(t, decodeBinary(enc, &out), "%q", enc)
		assert.Equal(t, in, out[:])
	})
}

func TestNumber(t *testing.T) {
	tests := []struct {
		raw  string
		want int64
		ok   bool
	}{
		{`0`, 0, true}, {`123`, 123, true}, {`1.5`, 1, true}, {`"42"`, 42, true},
		{`null`, 0, false}, {``, 0, false}, {`-1`, 0, false}, {`"x"`, 0, false}, {`1e300`, 1<<63 - 1, true},
	}
	for _, tt := range tests {
		got, ok := number(json.RawMessage(tt.raw))
		assert.Equal(t, tt.ok, ok, tt.raw)
		assert.Equal(t, tt.want, got, tt.raw)
	}
}

// TestPickDistinct: pick returns min(n, others) distinct members, never self, over every
// swarm size and n.
func TestPickDistinct(t *testing.T) {
	x := newIndex()
	var ih models.InfoHash
	conns := make([]conn, 100)
	for size := 1; size <= 40; size++ {
		ih[0] = byte(size)
		for i := 0; i < size; i++ {
			var id models.PeerID
			id[0], id[1] = byte(size), byte(i)
			x.join(&ih, &id, &conns[i])
		}
		self := models.PeerID{byte(size), 0}
		for n := 0; n <= 45; n++ {
			got := x.pick(&ih, &self, n, nil)
			require.Len(t, got, min(n, size-1), "size %d n %d", size, n)
			seen := map[models.PeerID]bool{}
			for _, m := range got {
				require.NotEqual(t, self, m.id)
				require.False(t, seen[m.id], "size %d n %d: %x twice", size, n, m.id)
				seen[m.id] = true
			}
		}
	}
}
