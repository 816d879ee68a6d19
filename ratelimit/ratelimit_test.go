package ratelimit

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newLimiter(t testing.TB, cfg Config) *Limiter {
	t.Helper()
	if cfg.IPv4Prefix == 0 {
		cfg.IPv4Prefix = 32
	}
	if cfg.IPv6Prefix == 0 {
		cfg.IPv6Prefix = 64
	}
	if cfg.Slots == 0 {
		cfg.Slots = 1024
	}
	l, err := New(cfg, prometheus.NewRegistry())
	require.NoError(t, err)
	return l
}

func TestSetsAreCacheLines(t *testing.T) {
	assert.Equal(t, uintptr(64), unsafe.Sizeof(set{}))
	for _, n := range []int{1, 3, 16, 1000} {
		sets := alignedSets(n)
		require.Len(t, sets, n)
		assert.Zero(t, uintptr(unsafe.Pointer(&sets[0]))%64, "%d sets", n)
	}
}

func TestOffAndOn(t *testing.T) {
	var none *Limiter
	assert.True(t, none.Allow(Announce, netip.MustParseAddr("192.0.2.1"), time.Now()), "a nil Limiter allows")
	l := newLimiter(t, Config{})
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	for i := 0; i < 100; i++ {
		require.True(t, l.Allow(Announce, a, now), "no limit set")
	}
	// Turned on while running (a config reload), then off again.
	l.SetRates(Rate{PerSecond: 1, Burst: 2}, Rate{})
	assert.True(t, l.Allow(Announce, a, now))
	assert.True(t, l.Allow(Announce, a, now))
	assert.False(t, l.Allow(Announce, a, now))
	assert.True(t, l.Allow(Scrape, a, now), "scrapes still unlimited")
	l.SetRates(Rate{}, Rate{})
	assert.True(t, l.Allow(Announce, a, now))
}

func TestBurstThenRate(t *testing.T) {
	l := newLimiter(t, Config{Announce: Rate{PerSecond: 2, Burst: 5}})
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	for i := 0; i < 5; i++ {
		assert.True(t, l.Allow(Announce, a, now), "request %d of the burst", i+1)
	}
	assert.False(t, l.Allow(Announce, a, now), "past the burst")
	assert.False(t, l.Allow(Announce, a, now.Add(400*time.Millisecond)), "before a token is back")
	assert.True(t, l.Allow(Announce, a, now.Add(500*time.Millisecond)), "one token back after 1/rate")
	assert.False(t, l.Allow(Announce, a, now.Add(500*time.Millisecond)))
	// A refused request takes no token: after a long quiet spell the whole burst is back.
	later := now.Add(time.Hour)
	for i := 0; i < 5; i++ {
		assert.True(t, l.Allow(Announce, a, later), "burst again, request %d", i+1)
	}
	assert.False(t, l.Allow(Announce, a, later))
	assert.Equal(t, 4.0, testutil.ToFloat64(l.limited[Announce]), "every refusal is counted")
}

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		name       string
		v4, v6     int
		first, sec string
		kind2      Kind
		shared     bool
	}{
		{"same IPv4 address", 32, 64, "192.0.2.1", "192.0.2.1", Announce, true},
		{"IPv4-mapped is the same address", 32, 64, "192.0.2.1", "::ffff:192.0.2.1", Announce, true},
		{"another IPv4 address", 32, 64, "192.0.2.1", "192.0.2.2", Announce, false},
		{"another IPv4 address in a /24 bucket", 24, 64, "192.0.2.1", "192.0.2.200", Announce, true},
		{"another /24 with /24 buckets", 24, 64, "192.0.2.1", "192.0.3.1", Announce, false},
		{"same IPv6 /64", 32, 64, "2001:db8:0:1::1", "2001:db8:0:1:ffff::2", Announce, true},
		{"another IPv6 /64", 32, 64, "2001:db8:0:1::1", "2001:db8:0:2::1", Announce, false},
		{"another /64 in a /48 bucket", 32, 48, "2001:db8:0:1::1", "2001:db8:0:2::1", Announce, true},
		{"scrapes have buckets of their own", 32, 64, "192.0.2.1", "192.0.2.1", Scrape, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(t, Config{Announce: Rate{1, 1}, Scrape: Rate{1, 1}, IPv4Prefix: tc.v4, IPv6Prefix: tc.v6})
			now := time.Now()
			require.True(t, l.Allow(Announce, netip.MustParseAddr(tc.first), now))
			assert.Equal(t, !tc.shared, l.Allow(tc.kind2, netip.MustParseAddr(tc.sec), now))
		})
	}
}

func TestKindOff(t *testing.T) {
	l := newLimiter(t, Config{Announce: Rate{1, 1}})
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	for i := 0; i < 100; i++ {
		require.True(t, l.Allow(Scrape, a, now), "scrapes have no limit")
	}
}

// TestBoundedTable floods the table with far more prefixes than it holds: its size does not
// change, and a client that was quiet meanwhile starts again with a full bucket rather than
// being refused for someone else's traffic.
func TestBoundedTable(t *testing.T) {
	l := newLimiter(t, Config{Announce: Rate{PerSecond: 1, Burst: 2}, Slots: 64})
	require.Len(t, l.sets, 16)
	now := time.Now()
	victim := netip.MustParseAddr("198.51.100.7")
	require.True(t, l.Allow(Announce, victim, now))
	for i := 0; i < 100_000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.Allow(Announce, a, now)
	}
	assert.Len(t, l.sets, 16, "the table never grows")
	assert.Greater(t, testutil.ToFloat64(l.evictions), 90_000.0)
	assert.True(t, l.Allow(Announce, victim, now), "a quiet client is never refused for another's traffic")
}

func TestConcurrent(t *testing.T) {
	l := newLimiter(t, Config{Announce: Rate{PerSecond: 1, Burst: 100}})
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := 0; i < 1000; i++ {
				if l.Allow(Announce, a, now) {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	assert.Equal(t, 100, allowed, "exactly the burst, however many goroutines ask at once")
}

// BenchmarkAllow is one check, from 1,024 addresses (the table's lines stay cached) and from
// 65,536 (they mostly do not).
func BenchmarkAllow(b *testing.B) {
	for _, n := range []int{1024, 65536} {
		b.Run(fmt.Sprintf("addresses=%d", n), func(b *testing.B) { benchAllow(b, n) })
	}
}

func benchAllow(b *testing.B, n int) {
	l := newLimiter(b, Config{Announce: Rate{PerSecond: 1e9, Burst: 1e6}, Slots: 65536})
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.Allow(Announce, addrs[i%n], now)
	}
}
