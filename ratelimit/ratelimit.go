// Package ratelimit bounds how many announces and scrapes one client address may make: a
// token bucket per address prefix (an IPv4 address and an IPv6 /64 by default, or coarser
// prefixes such as /24 and /48) and request kind, checked before any driver is called.
//
// The buckets live in a table of fixed size, so an attacker with many addresses cannot grow
// it: the table is a set-associative cache of 4-way sets, each one 64-byte cache line, found by
// a seeded 64-bit hash of the prefix (its low bits pick the set, its top 32 bits tell the ways
// apart). A prefix that finds no room takes the way of its set whose bucket has been idle the
// longest, whose owner starts again with a full bucket: under pressure the limiter forgets
// quiet clients first and errs towards letting requests through, never towards refusing a
// client that did nothing. Each bucket is one integer, the theoretical arrival time of the
// generic cell rate algorithm (GCRA), which is a token bucket that needs no timer. A check takes
// one set's lock and allocates nothing.
package ratelimit

import (
	"hash/maphash"
	"math"
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
// after a quiet spell. A PerSecond of 0 is no limit.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Config is a Limiter's configuration.
type Config struct {
	Announce, Scrape Rate
	// IPv4Prefix and IPv6Prefix are the prefix lengths that share one bucket (32 and 64: an
	// IPv4 address, an IPv6 /64).
	IPv4Prefix, IPv6Prefix int
	// Slots is how many buckets the table holds, rounded up to a multiple of the set size.
	Slots int
}

// ways is the set size: a prefix's bucket is in one of the 4 ways of the set it hashes to.
const ways = 4

// set is one cache line: a check reads and writes nothing else of the table.
type set struct {
	mu  sync.Mutex   // 8 bytes
	tag [ways]uint32 // the top half of the hash of kind and prefix; 0 is a free way
	tat [ways]int64  // the GCRA's theoretical arrival time, in ns since start
	_   [64 - 8 - ways*12]byte
}

// Limiter decides whether a request may go on. It is safe for concurrent use. The zero of a
// *Limiter (nil) allows everything.
type Limiter struct {
	sets  []set
	mask  uint64
	seed  maphash.Seed
	start time.Time
	// interval is the time one token takes to come back, tolerance how far ahead of now the
	// theoretical arrival time may run (Burst-1 intervals); interval 0 is no limit. SetRates
	// changes them while requests are checked.
	interval  [numKinds]atomic.Int64
	tolerance [numKinds]atomic.Int64
	v4, v6    int

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
		sets:  alignedSets(nsets),
		mask:  uint64(nsets - 1),
		seed:  maphash.MakeSeed(),
		start: time.Now(),
		v4:    cfg.IPv4Prefix,
		v6:    cfg.IPv6Prefix,
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

// SetRates changes the rates of announces and scrapes; a PerSecond of 0 turns that limit off.
// Buckets keep their state: a client's next request is judged at the new rate.
func (l *Limiter) SetRates(announce, scrape Rate) {
	for k, r := range [numKinds]Rate{announce, scrape} {
		iv, tol := int64(0), int64(0)
		if r.PerSecond > 0 {
			iv = max(int64(math.Ceil(float64(time.Second)/r.PerSecond)), 1)
			tol = int64(max(r.Burst, 1)-1) * iv
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
	if l == nil {
		return true
	}
	interval := l.interval[k].Load()
	if interval == 0 {
		return true
	}
	tolerance := l.tolerance[k].Load()
	h := l.key(k, addr)
	s := &l.sets[h&l.mask]
	tag := uint32(h >> 32)
	if tag == 0 {
		tag = 1
	}
	t := now.Sub(l.start).Nanoseconds()
	s.mu.Lock()
	w := -1
	for i := range s.tag {
		if s.tag[i] == tag {
			w = i
			break
		}
	}
	if w < 0 {
		// Take the way idle the longest (the smallest arrival time; a free way has 0).
		w = 0
		for i := 1; i < ways; i++ {
			if s.tat[i] < s.tat[w] {
				w = i
			}
		}
		if s.tag[w] != 0 {
			l.evictions.Inc()
		}
		s.tag[w], s.tat[w] = tag, t
	}
	tat := max(s.tat[w], t)
	ok := tat-t <= tolerance
	if ok {
		s.tat[w] = tat + interval
	}
	s.mu.Unlock()
	if !ok {
		l.limited[k].Inc()
	}
	return ok
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

// key hashes k and addr's prefix: its low bits pick the set, its top 32 bits are the tag.
func (l *Limiter) key(k Kind, addr netip.Addr) uint64 {
	addr = addr.Unmap()
	var b [18]byte
	b[0] = byte(k)
	if addr.Is4() {
		b[1] = 4
		p, _ := addr.Prefix(l.v4)
		a := p.Addr().As4()
		copy(b[2:], a[:])
	} else {
		b[1] = 6
		p, _ := addr.WithZone("").Prefix(l.v6)
		a := p.Addr().As16()
		copy(b[2:], a[:])
	}
	return maphash.Bytes(l.seed, b[:])
}
