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
		{"another IPv4 /8 with /8 buckets", 8, 64, "10.0.0.1", "11.0.0.1", Announce, false},
		{"same IPv4 /8", 8, 64, "10.0.0.1", "10.255.255.255", Announce, true},
		{"an IPv4-compatible IPv6 address is not IPv4", 32, 128, "192.0.2.1", "::192.0.2.1", Announce, false},
		{"a zone is no part of the key", 32, 64, "fe80::1%eth0", "fe80::1", Announce, true},
		{"another IPv6 address with /128 buckets", 32, 128, "2001:db8::1", "2001:db8::2", Announce, false},
		{"another IPv6 /49 with /48 buckets", 32, 48, "2001:db8:0::1", "2001:db8:1::1", Announce, false},
		{"same IPv6 /96", 32, 96, "2001:db8::1:0:0:1", "2001:db8::1:0:ffff:ffff", Announce, true},
		{"another IPv6 /96", 32, 96, "2001:db8::1:0:0:1", "2001:db8::1:1:0:1", Announce, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(t, Config{Announce: Rate{1, 1}, Scrape: Rate{1, 1}, IPv4Prefix: tc.v4, IPv6Prefix: tc.v6})
			now := time.Now()
			require.True(t, l.Allow(Announce, netip.MustParseAddr(tc.first), now))
			assert.Equal(t, !tc.shared, l.Allow(tc.kind2, netip.MustParseAddr(tc.sec), now))
		})
	}
}

// TestPrefetch checks that a prefetch only loads: it takes no token, whatever the Limiter and
// the address.
func TestPrefetch(t *testing.T) {
	var none *Limiter
	none.Prefetch(Announce, netip.MustParseAddr("192.0.2.1"))
	l := newLimiter(t, Config{Announce: Rate{PerSecond: 1, Burst: 1}})
	now := time.Now()
	for _, s := range []string{"192.0.2.1", "::ffff:192.0.2.2", "2001:db8::1", "fe80::1%eth0", ""} {
		var a netip.Addr
		if s != "" {
			a = netip.MustParseAddr(s)
		}
		for i := 0; i < 10; i++ {
			l.Prefetch(Announce, a)
			l.Prefetch(Scrape, a)
		}
		assert.True(t, l.Allow(Announce, a, now), "%q: the burst is whole", s)
		assert.False(t, l.Allow(Announce, a, now), "%q: and then spent", s)
	}
}

// TestHint checks that a check with a Hint answers as Allow does for its own kind and address,
// whatever the Hint: the prefetch's, another address's, another kind's, another Limiter's or
// none.
func TestHint(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	mapped := netip.MustParseAddr("::ffff:192.0.2.1")
	for _, tc := range []struct {
		name     string
		other    bool // the Hint is another Limiter's
		hintKind Kind
		hintAddr netip.Addr
	}{
		{"its own", false, Announce, a},
		{"none", false, Announce, netip.Addr{}},
		{"another address", false, Announce, b},
		{"the IPv4-mapped form", false, Announce, mapped},
		{"another kind", false, Scrape, a},
		{"another Limiter's", true, Announce, a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Announce: Rate{PerSecond: 1, Burst: 2}, Scrape: Rate{PerSecond: 1, Burst: 2}}
			l := newLimiter(t, cfg)
			from := l
			if tc.other {
				from = newLimiter(t, cfg)
			}
			var h Hint
			if tc.hintAddr.IsValid() {
				h = from.Prefetch(tc.hintKind, tc.hintAddr)
			}
			now := time.Now()
			assert.True(t, l.AllowHinted(Announce, a, now, h))
			assert.True(t, l.AllowHinted(Announce, a, now, h))
			assert.False(t, l.AllowHinted(Announce, a, now, h), "over the burst")
			assert.False(t, l.Allow(Announce, a, now), "Allow sees the same bucket")
			assert.False(t, l.Allow(Announce, mapped, now), "and so does its IPv4-mapped form")
			assert.True(t, l.Allow(Announce, b, now), "another address's bucket is whole")
			assert.True(t, l.Allow(Scrape, a, now), "the scrape bucket is whole")
		})
	}
	var none *Limiter
	assert.Equal(t, Hint{}, none.Prefetch(Announce, a), "a nil Limiter hints nothing")
	assert.True(t, none.AllowHinted(Announce, a, time.Now(), Hint{}))
	off := newLimiter(t, Config{})
	assert.Equal(t, Hint{}, off.Prefetch(Announce, a), "nor does a kind without a limit")
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
	require.Len(t, l.sets, 8)
	now := time.Now()
	victim := netip.MustParseAddr("198.51.100.7")
	require.True(t, l.Allow(Announce, victim, now))
	for i := 0; i < 100_000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.Allow(Announce, a, now)
	}
	assert.Len(t, l.sets, 8, "the table never grows")
	assert.Greater(t, testutil.ToFloat64(l.evictions), 90_000.0)
	assert.True(t, l.Allow(Announce, victim, now), "a quiet client is never refused for another's traffic")
}

// TestSpread checks the hash on the addresses a tracker sees most, runs of consecutive IPv4
// addresses and IPv6 /64s: 20,000 of them in a table of 65,536 buckets (8,192 sets of 8, 2.4 a
// set on average) overflow a set only by chance, a few dozen times, where a hash that kept
// them together would evict thousands.
func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr func(i int) netip.Addr
	}{
		{"IPv4", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }},
		{"IPv6 /64s", func(i int) netip.Addr {
			return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 6: byte(i >> 8), 7: byte(i), 15: 1})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(t, Config{Announce: Rate{PerSecond: 1, Burst: 1}, Slots: 65536})
			now := time.Now()
			for i := 0; i < 20000; i++ {
				require.True(t, l.Allow(Announce, tc.addr(i), now), "address %d", i)
			}
			assert.Less(t, testutil.ToFloat64(l.evictions), 200.0)
			refused := 0
			for i := 0; i < 20000; i++ {
				if !l.Allow(Announce, tc.addr(i), now) {
					refused++
				}
			}
			assert.Greater(t, refused, 19800, "nearly every address kept its own empty bucket")
		})
	}
}

func TestRateLimits(t *testing.T) {
	for _, tc := range []struct {
		name          string
		rate          Rate
		interval, tol int64
	}{
		{"one a second, burst 10", Rate{1, 10}, 1_000_000, 9_000_000},
		{"burst 0 is 1", Rate{2, 0}, 500_000, 0},
		{"a rate past a million a second is a million", Rate{1e9, 1e9}, 1, 1e9 - 1},
		{"a fraction of a microsecond rounds up", Rate{3, 2}, 333_334, 333_334},
		{"a long refill is cut", Rate{1, 1e9}, 1_000_000, maxLead - 1_000_000},
		{"a tiny rate", Rate{1e-300, 5}, maxLead, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(t, Config{Announce: tc.rate})
			assert.Equal(t, tc.interval, l.interval[Announce].Load())
			assert.Equal(t, tc.tol, l.tolerance[Announce].Load())
		})
	}
}

// TestLongRun runs a table through 60 days of checks, 5 times the 12.7 days that a bucket's
// 40-bit time wraps around in: a client that emptied its bucket and was quiet for any time
// from an hour to weeks comes back to a full bucket, and one still over its rate stays
// refused, however the sweeps fall, whether the table is busy (a check every 5 hours, each
// doing a step of a sweep) or idle for weeks.
func TestLongRun(t *testing.T) {
	const day = 24 * time.Hour
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			l := newLimiter(t, Config{Announce: Rate{PerSecond: 1, Burst: 1}, Slots: 65536})
			require.Greater(t, len(l.sets), sweepChunk, "a sweep takes several steps")
			other := netip.MustParseAddr("198.51.100.1")
			at := l.start
			advance := func(d time.Duration) {
				for end := at.Add(d); at.Before(end); at = at.Add(min(5*time.Hour, end.Sub(at))) {
					if busy {
						l.Allow(Announce, other, at)
					}
				}
			}
			for i, idle := range []time.Duration{time.Hour, 19 * time.Hour, 3 * day, 6*day + 9*time.Hour,
				12*day + 17*time.Hour, 13 * day, 25*day + 11*time.Hour, 0} {
				a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
				require.True(t, l.Allow(Announce, a, at), "first request of client %d", i)
				require.False(t, l.Allow(Announce, a, at), "client %d is over its rate", i)
				require.False(t, l.Allow(Announce, a, at.Add(999*time.Millisecond)), "client %d is over its rate", i)
				advance(idle)
				assert.True(t, l.Allow(Announce, a, at.Add(time.Second)), "client %d back after %v", i, idle)
				assert.False(t, l.Allow(Announce, a, at.Add(time.Second)), "client %d over its rate again", i)
			}
			assert.Greater(t, l.lastSweep.Load(), int64(50*day/time.Microsecond), "sweeps ran")
		})
	}
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
// 65,536 (512 KB of lines: cached only as far as the L2 cache holds them), by Allow and, as the
// frontends check, by Prefetch and then AllowHinted.
func BenchmarkAllow(b *testing.B) {
	for _, n := range []int{1024, 65536} {
		b.Run(fmt.Sprintf("addresses=%d", n), func(b *testing.B) { benchAllow(b, n, false) })
		b.Run(fmt.Sprintf("addresses=%d/prefetched", n), func(b *testing.B) { benchAllow(b, n, true) })
	}
}

func benchAllow(b *testing.B, n int, prefetched bool) {
	l := newLimiter(b, Config{Announce: Rate{PerSecond: 1e9, Burst: 1e6}, Slots: 65536})
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := addrs[i%n]
		if prefetched {
			l.AllowHinted(Announce, a, now, l.Prefetch(Announce, a))
		} else {
			l.Allow(Announce, a, now)
		}
	}
}
