// Package ratelimit bounds how many announces and scrapes one client address may make: a
// token bucket per address prefix (an IPv4 address and an IPv6 /64 by default, or coarser
// prefixes such as /24 and /48) and request kind, checked before any driver is called.
//
// The buckets live in a table of fixed size, so an attacker with many addresses cannot grow
// it: the table is a set-associative cache of 8-way sets, each one 64-byte cache line, found by
// a secret-seeded 64-bit hash of the prefix (its low bits pick the set, its top 24 bits tell
// the ways apart). A prefix that finds no room takes the way of its set whose bucket has been
// idle the longest, whose owner starts again with a full bucket: under pressure the limiter
// forgets quiet clients first and errs towards letting requests through, never towards
// refusing a client that did nothing. (Two prefixes share a bucket only when their hashes pick
// the same set and the same tag: about one new prefix in two million, against a full set.)
//
// Each bucket is one 64-bit word: the 24-bit tag and the theoretical arrival time (TAT) of the
// generic cell rate algorithm (GCRA), a token bucket that needs no timer, in microseconds
// since the Limiter was made, kept modulo 2^40 (about 12.7 days). So that 40 bits always tell
// a time apart unambiguously, a sweep caps the age of idle buckets at about 19 hours once
// every 19 hours, a chunk of the table at a time, done by whichever check finds it due (see
// sweepStep).
//
// A check reads its set's line and changes its bucket with one compare-and-swap: it takes no
// lock and allocates nothing. With many client addresses that line is mostly not in the cache,
// and the memory read is most of what a check costs; a frontend calls Prefetch as a request
// arrives, so that the read overlaps the parsing of the request rather than waiting in Allow,
// and passes the Hint it returns to AllowHinted, which then does not hash the address again.
// A check takes its time from the caller, who has read the clock for the request already.
package ratelimit

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is the kind of request a bucket counts.
type Kind uint8

// The request kinds, each with buckets of its own.
const (
	Announce Kind = iota
	Scrape
	numKinds
)

var kindNames = [numKinds]string{"announce", "scrape"}

// Rate is one kind's limit: PerSecond requests a second on average, and up to Burst at once
// after a quiet spell. A PerSecond of 0 is no limit. The limiter counts in microseconds, so a
// rate above 1,000,000 a second acts as 1,000,000, and a bucket refills from empty in at most
// MaxRefill: a longer Burst/PerSecond is cut to it.
type Rate struct {
	PerSecond float64
	Burst     int
}

// MaxRefill is the longest a bucket takes to refill from empty (Burst/PerSecond, rounded up to
// whole microseconds), about 3.2 days.
const MaxRefill = maxLead * time.Microsecond

// Config is a Limiter's configuration.
type Config struct {
	Announce, Scrape Rate
	// IPv4Prefix and IPv6Prefix are the prefix lengths that share one bucket (32 and 64: an
	// IPv4 address, an IPv6 /64).
	IPv4Prefix, IPv6Prefix int
	// Slots is how many buckets the table holds, rounded up to a power of two of at least 8.
	Slots int
}

const (
	// ways is the set size: a prefix's bucket is in one of the 8 ways of the set it hashes to.
	ways = 8

	tatBits = 40
	tatMask = 1<<tatBits - 1
	tagMask = ^uint64(tatMask)

	// The times below are in microseconds. A bucket's true TAT is always within
	// [lastSweep-ageCap, lastSweep-ageCap+2^40): a sweep raises every older TAT to
	// ageCap before the time it started, a check runs only while less than mustSweep has
	// passed since the last sweep started (or it finishes the sweep first), and a TAT runs at
	// most maxLead ahead of the time it was written at. ageCap+mustSweep+maxLead < 2^40.

	// ageCap is the age a sweep leaves an idle bucket with: buckets idle longer are all
	// equally old to the eviction, which is all they need to be.
	ageCap = 1 << 36 // 19 hours
	// maxLead bounds a bucket's tolerance plus interval, so its TAT never runs further ahead.
	maxLead = 1 << 38 // 3.2 days
	// sweepEvery is how long after a sweep started the next one is due.
	sweepEvery = 1 << 36
	// mustSweep is how long after a sweep started a check waits for the next one to finish
	// rather than going on without it (only when the table has had no checks for days).
	mustSweep = 1 << 39 // 6.4 days
	// sweepChunk is how many sets one step of a sweep goes over (32 KB of the table).
	sweepChunk = 512
)

// set is one cache line: a check reads and writes nothing else of the table. A way is 0 when
// free, or tag<<40 | TAT mod 2^40 (see the package comment).
type set [ways]atomic.Uint64

// Limiter decides whether a request may go on. It is safe for concurrent use. The zero of a
// *Limiter (nil) allows everything.
type Limiter struct {
	// interval is the time one token takes to come back, tolerance how far ahead of now the
	// theoretical arrival time may run (Burst-1 intervals), both in µs; interval 0 is no limit.
	// SetRates changes them while requests are checked.
	interval  [numKinds]atomic.Int64
	tolerance [numKinds]atomic.Int64
	// lastSweep is when the last finished sweep started, in µs since start.
	lastSweep atomic.Int64
	sets      []set
	mask      uint64
	start     time.Time
	// v4Mask and v6Mask keep the prefix bits of an IPv4 address and of an IPv6 address's two
	// halves; seeds key the hash, three words per kind and family.
	v4Mask uint64
	v6Mask [2]uint64
	seeds  [numKinds][2][3]uint64

	// sweepMu is held by the check doing a step of a sweep; sweepAt is when the sweep under
	// way started and sweepNext the first set it has still to go over (guarded by sweepMu).
	sweepMu   sync.Mutex
	sweepAt   int64
	sweepNext int

	limited   [numKinds]prometheus.Counter
	evictions prometheus.Counter
	slots     prometheus.Gauge
}

// New returns a Limiter for cfg (which may limit nothing yet: SetRates can turn limits on
// later). Its metrics go to reg when reg is not nil.
func New(cfg Config, reg prometheus.Registerer) (*Limiter, error) {
	nsets := 1
	for nsets*ways < cfg.Slots {
		nsets <<= 1
	}
	l := &Limiter{
		sets:   alignedSets(nsets),
		mask:   uint64(nsets - 1),
		start:  time.Now(),
		v4Mask: uint64(math.MaxUint32) << (32 - min(max(cfg.IPv4Prefix, 0), 32)) & math.MaxUint32,
		v6Mask: prefixMask(min(max(cfg.IPv6Prefix, 0), 128)),
	}
	for k := range l.seeds {
		for f := range l.seeds[k] {
			for i := range l.seeds[k][f] {
				l.seeds[k][f][i] = rand.Uint64()
			}
		}
	}
	l.SetRates(cfg.Announce, cfg.Scrape)
	limitedVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "chihaya", Subsystem: "ratelimit", Name: "limited_total",
		Help: "Announces and scrapes refused because their address prefix was over its rate.",
	}, []string{"action"})
	for k := range l.limited {
		l.limited[k] = limitedVec.WithLabelValues(kindNames[k])
	}
	l.evictions = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "chihaya", Subsystem: "ratelimit", Name: "evictions_total",
		Help: "Buckets the rate limiter's full table gave up for another prefix (the bucket's owner starts again full).",
	})
	l.slots = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "chihaya", Subsystem: "ratelimit", Name: "slots",
		Help: "Buckets the rate limiter's table holds (rate_limit.table_size, rounded up).",
	})
	l.slots.Set(float64(nsets * ways))
	if reg != nil {
		for _, c := range []prometheus.Collector{limitedVec, l.evictions, l.slots} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// prefixMask returns the mask of the first n of 128 bits, as two big-endian words.
func prefixMask(n int) [2]uint64 {
	var m [2]uint64
	for i := range m {
		switch b := n - 64*i; {
		case b >= 64:
			m[i] = math.MaxUint64
		case b > 0:
			m[i] = ^uint64(0) << (64 - b)
		}
	}
	return m
}

// SetRates changes the rates of announces and scrapes; a PerSecond of 0 turns that limit off.
// Buckets keep their state: a client's next request is judged at the new rate.
func (l *Limiter) SetRates(announce, scrape Rate) {
	for k, r := range [numKinds]Rate{announce, scrape} {
		iv, tol := int64(0), int64(0)
		if r.PerSecond > 0 {
			// In float64 until clamped: a tiny rate or a huge burst overflows an int64.
			ivf := min(max(math.Ceil(1e6/r.PerSecond), 1), maxLead)
			iv = int64(ivf)
			tol = int64(min(float64(max(r.Burst, 1)-1)*ivf, float64(maxLead-iv)))
		}
		// The tolerance first: a check that sees the new interval never sees the old tolerance
		// of an off limit (0) with it.
		l.tolerance[k].Store(tol)
		l.interval[k].Store(iv)
	}
}

// Allow reports whether a request of kind k from addr may go on now, and takes a token from its
// prefix's bucket if so. A refused request takes nothing, so a client that keeps asking gets
// through again at its rate.
func (l *Limiter) Allow(k Kind, addr netip.Addr, now time.Time) bool {
	return l.AllowHinted(k, addr, now, Hint{})
}

// Hint is what Prefetch worked out about a request's address, for the check that follows to
// use rather than work it out again. The zero Hint holds nothing.
type Hint struct {
	l    *Limiter // nil in the zero Hint
	addr netip.Addr
	key  uint64
	kind Kind
}

// AllowHinted is Allow with h, the Hint that Prefetch returned for the request: when k and addr
// are what was prefetched, the address is not hashed again. A Hint of another kind or address
// (a request behind a proxy, whose client address is known only after the prefetch), or from
// another Limiter, is ignored: the answer is Allow's either way.
func (l *Limiter) AllowHinted(k Kind, addr netip.Addr, now time.Time, h Hint) bool {
	if l == nil {
		return true
	}
	interval := l.interval[k].Load()
	if interval == 0 {
		return true
	}
	tolerance := l.tolerance[k].Load()
	t := now.Sub(l.start).Microseconds()
	last := l.lastSweep.Load()
	if t-last >= sweepEvery {
		l.sweepStep(t)
		last = l.lastSweep.Load()
	}
	base := last - ageCap
	t = max(t, base) // a caller's time from before the last sweep started
	key := h.key
	if h.l != l || h.kind != k || h.addr != addr {
		key = l.key(k, addr)
	}
	s := &l.sets[key&l.mask]
	tag := key & tagMask
	if tag == 0 {
		tag = 1 << tatBits
	}
	// The way that holds the prefix's bucket, mostly: a known client, whose check is short.
	// Anything else (a new prefix, a lost compare-and-swap) takes the long way, in check.
	for i := range s {
		if old := s[i].Load(); old&tagMask == tag {
			tat := tatAt(old, base, t)
			if tat-t > tolerance {
				l.limited[k].Inc()
				return false
			}
			if s[i].CompareAndSwap(old, tag|uint64(tat+interval)&tatMask) {
				return true
			}
			break
		}
	}
	return l.check(k, s, tag, t, base, interval, tolerance)
}

// check is the whole of AllowHinted's check in set s of the bucket tagged tag, at time t (µs
// since start, with base the earliest time a bucket tells): it finds the prefix's way or makes
// it a new bucket, and tries again as long as a compare-and-swap finds that another check
// changed the way meanwhile.
func (l *Limiter) check(k Kind, s *set, tag uint64, t, base, interval, tolerance int64) bool {
	for {
		// One pass finds the prefix's way or, failing that, the way idle the longest: a free
		// one first, else the one with the earliest TAT, the lowest index among equals.
		// Because TATs only grow (but for an eviction), two first requests of one prefix
		// racing for the same set choose the same way, and the loser of its compare-and-swap
		// then finds the winner's bucket; the rare exception (an eviction in between) gives
		// the prefix two buckets for a while, which errs towards answering it.
		w, victim, oldest := -1, 0, int64(math.MaxInt64)
		var old uint64
		for i := range s {
			v := s[i].Load()
			if v&tagMask == tag {
				w, old = i, v
				break
			}
			tat := int64(math.MinInt64)
			if v != 0 {
				tat = base + int64((v-uint64(base))&tatMask)
			}
			if tat < oldest {
				victim, oldest, old = i, tat, v
			}
		}
		if w < 0 {
			// A new bucket is full: the request is allowed and takes its first token.
			if !s[victim].CompareAndSwap(old, tag|uint64(t+interval)&tatMask) {
				continue
			}
			if old != 0 {
				l.evictions.Inc()
			}
			return true
		}
		tat := tatAt(old, base, t)
		if tat-t > tolerance {
			l.limited[k].Inc()
			return false
		}
		if s[w].CompareAndSwap(old, tag|uint64(tat+interval)&tatMask) {
			return true
		}
	}
}

// Prefetch tells the limiter that a check of kind k for addr is coming soon: it starts loading
// the bucket's line of the table into the cache and returns without waiting, so that the work a
// caller does in between (parsing the rest of the request) hides the memory read that the check
// would otherwise wait for. It changes nothing and costs a few nanoseconds; a nil Limiter or a
// kind without a limit does nothing. The Hint it returns, passed to AllowHinted, saves that
// check hashing the address again.
func (l *Limiter) Prefetch(k Kind, addr netip.Addr) Hint {
	if l == nil || l.interval[k].Load() == 0 {
		return Hint{}
	}
	key := l.key(k, addr)
	prefetch(&l.sets[key&l.mask])
	return Hint{l: l, addr: addr, key: key, kind: k}
}

// sweepStep does the next step of the sweep that is due at t (µs since start): it raises the
// TAT of every bucket idle more than ageCap to ageCap before the sweep's start, sweepChunk sets
// at a time, one check at a time (the others go on meanwhile), and records the sweep's start
// when it has gone over the whole table. Only when the table has had no check for days, so
// that a TAT may be near the edge of what 40 bits tell apart, does a check wait for the whole
// sweep to finish.
func (l *Limiter) sweepStep(t int64) {
	urgent := t-l.lastSweep.Load() >= mustSweep
	if urgent {
		l.sweepMu.Lock()
	} else if !l.sweepMu.TryLock() {
		return
	}
	defer l.sweepMu.Unlock()
	for {
		last := l.lastSweep.Load()
		if t-last < sweepEvery || urgent && t-last < mustSweep && l.sweepNext == 0 {
			return // done, by this check or another meanwhile
		}
		if l.sweepNext == 0 {
			l.sweepAt = t
		}
		base, floor := last-ageCap, l.sweepAt-ageCap
		end := min(l.sweepNext+sweepChunk, len(l.sets))
		for i := l.sweepNext; i < end; i++ {
			for j := range l.sets[i] {
				p := &l.sets[i][j]
				v := p.Load()
				if v == 0 || base+int64((v-uint64(base))&tatMask) >= floor {
					continue
				}
				// A failed swap means a check changed the bucket meanwhile: it is fresh.
				p.CompareAndSwap(v, v&tagMask|uint64(floor)&tatMask)
			}
		}
		l.sweepNext = end
		if end == len(l.sets) {
			l.sweepNext = 0
			l.lastSweep.Store(l.sweepAt)
		}
		if !urgent {
			return
		}
	}
}

// alignedSets returns n sets starting on a cache line, so that each set is one line.
func alignedSets(n int) []set {
	const line = unsafe.Sizeof(set{})
	raw := make([]set, n+1)
	off := uintptr(unsafe.Pointer(&raw[0])) % line
	if off == 0 {
		return raw[:n:n]
	}
	// Go allocates sets on 8-byte boundaries: step to the next line through the bytes.
	b := unsafe.Slice((*byte)(unsafe.Pointer(&raw[0])), int(line)*(n+1))
	return unsafe.Slice((*set)(unsafe.Pointer(&b[line-off])), n)
}

// key hashes k and addr's prefix: its low bits pick the set, its top 24 bits are the tag. An
// IPv4 address and its IPv4-mapped IPv6 form are one key; a zone is no part of it.
func (l *Limiter) key(k Kind, addr netip.Addr) uint64 {
	s := &l.seeds[k]
	if addr = addr.Unmap(); addr.Is4() {
		// As4 rather than As16: a copy of 16 bytes just stored as two halves would stall on
		// the store, a few nanoseconds on every check.
		a := addr.As4()
		return mix(mix(uint64(binary.BigEndian.Uint32(a[:]))&l.v4Mask^s[0][0], s[0][1]), s[0][2])
	}
	a := addr.As16()
	hi := binary.BigEndian.Uint64(a[:8]) & l.v6Mask[0]
	lo := binary.BigEndian.Uint64(a[8:]) & l.v6Mask[1]
	return mix(mix(hi^s[1][0], lo^s[1][1]), s[1][2])
}

// mix folds the 128-bit product of a and b into 64 bits.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// tatAt is the theoretical arrival time a bucket word old holds, in µs from base, as a check at
// t reads it: t for an idle bucket (it is full) and for a time no check can have written
// (more than maxLead ahead), which is full too.
func tatAt(old uint64, base, t int64) int64 {
	tat := base + int64((old-uint64(base))&tatMask)
	if tat < t || tat-t > maxLead {
		return t
	}
	return tat
}
