package udp

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
)

func newTestIDs(t testing.TB) *connIDs {
	t.Helper()
	ids, err := newConnIDs(make([]byte, 16))
	require.NoError(t, err)
	return ids
}

// BenchmarkConnIDIssue is the computation of one connection ID.
func BenchmarkConnIDIssue(b *testing.B) {
	ids := newTestIDs(b)
	var s idScratch
	now := time.Unix(1_700_000_000, 0)
	b.ReportAllocs()
	var sink uint64
	for i := 0; i < b.N; i++ {
		sink ^= ids.issue(&s, v4Client, now)
	}
	_ = sink
}

// BenchmarkConnIDValid is the check of one connection ID (a forged one: both windows are
// computed whatever the ID, so a good one costs the same).
func BenchmarkConnIDValid(b *testing.B) {
	ids := newTestIDs(b)
	var s idScratch
	now := time.Unix(1_700_000_000, 0)
	b.ReportAllocs()
	n := 0
	for i := 0; i < b.N; i++ {
		if ids.valid(&s, v6Client, uint64(i), now) {
			n++
		}
	}
	_ = n
}

func TestConnIDBinding(t *testing.T) {
	ids := newTestIDs(t)
	var s idScratch
	now := time.Unix(1_700_000_000, 0)
	issuedTo := netip.MustParseAddrPort("192.0.2.7:6881")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:6881")
	for _, tc := range []struct {
		name   string
		issued netip.AddrPort
		from   netip.AddrPort
		want   bool
	}{
		{"same address and port", issuedTo, issuedTo, true},
		{"same address, another port", issuedTo, netip.MustParseAddrPort("192.0.2.7:51413"), true},
		{"same address as IPv4-mapped IPv6", issuedTo, netip.MustParseAddrPort("[::ffff:192.0.2.7]:1"), true},
		{"another IPv4 address, same port", issuedTo, netip.MustParseAddrPort("192.0.2.8:6881"), false},
		{"IPv6, another port", v6, netip.MustParseAddrPort("[2001:db8::7]:1"), true},
		{"IPv6, the same /64", v6, netip.MustParseAddrPort("[2001:db8::8]:6881"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := ids.issue(&s, tc.issued, now)
			assert.Equal(t, tc.want, ids.valid(&s, tc.from, id, now))
			assert.Equal(t, tc.want, ids.valid(&s, tc.from, id, now.Add(idWindow)), "in the next window")
			assert.False(t, ids.valid(&s, tc.from, id, now.Add(2*idWindow)), "two windows on")
		})
	}
}

// TestConnIDMatchesTwoBlockMAC checks the split computation against the CBC-MAC written out
// in one piece, for both windows of a check.
func TestConnIDMatchesTwoBlockMAC(t *testing.T) {
	ids := newTestIDs(t)
	var s idScratch
	for _, a := range []netip.AddrPort{v4Client, v6Client, netip.MustParseAddrPort("[::ffff:10.1.2.3]:5")} {
		for _, w := range []int64{0, 1, 28_333_333, -1} {
			var msg [32]byte
			ip := a.Addr().Unmap().As16()
			copy(msg[:16], ip[:])
			var tag [16]byte
			ids.block.Encrypt(tag[:], msg[:16])
			var b2 [16]byte
			binary.BigEndian.PutUint64(b2[:8], uint64(w))
			for i := range b2 {
				b2[i] ^= tag[i]
			}
			ids.block.Encrypt(tag[:], b2[:])
			want := binary.BigEndian.Uint64(tag[:8])
			ids.head(&s, a.Addr())
			assert.Equal(t, want, ids.tail(&s, w), "%v window %d", a, w)
			assert.Equal(t, want, ids.tail(&s, w), "tail again, as valid calls it")
		}
	}
}

// TestConnectionIDKeyHandover checks what an upgrade relies on: a server given another's
// ConnectionIDKey accepts the IDs that one issued, and a server with a fresh key does not.
func TestConnectionIDKeyHandover(t *testing.T) {
	cfg := config.Default()
	old := newEnv(t, nil)
	now := time.Unix(1_700_000_000, 0)
	var s idScratch
	id := old.s.ids.issue(&s, v4Client, now)

	successor, err := NewServer(&cfg, old.tkr, WithConnectionIDKey(old.s.ConnectionIDKey()))
	require.NoError(t, err)
	assert.Equal(t, old.s.ConnectionIDKey(), successor.ConnectionIDKey())
	assert.True(t, successor.ids.valid(&s, v4Client, id, now), "the successor accepts the old IDs")

	stranger, err := NewServer(&cfg, old.tkr)
	require.NoError(t, err)
	assert.NotEqual(t, old.s.ConnectionIDKey(), stranger.ConnectionIDKey())
	assert.False(t, stranger.ids.valid(&s, v4Client, id, now), "a fresh key refuses them")
}
