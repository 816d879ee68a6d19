package memory

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// rssBytes reads this process's resident set size from /proc/self/statm.
func rssBytes(tb testing.TB) uint64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Skipf("no /proc/self/statm (%v): RSS is measured on Linux only", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		tb.Fatalf("statm: %q", b)
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		tb.Fatalf("statm: %v", err)
	}
	return pages * uint64(os.Getpagesize())
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// load says how loadPublic's peers announce.
type load struct {
	// counters has each peer report session counters up to about 100 GB, as regular announces
	// do; without, it reports zeros, as the started announce that brings a peer into a swarm
	// does (BEP 3).
	counters bool
	// keep sets PeerUpdate.Counters, as the core does when its backend consumes deltas.
	keep bool
}

func (l load) String() string {
	switch {
	case !l.counters:
		return "started"
	case l.keep:
		return "regular,deltas"
	}
	return "regular"
}

// loadPublic announces torrents × perTorrent distinct IPv4 peers through the public Conn API,
// interleaved over the torrents as real traffic arrives.
func loadPublic(tb testing.TB, p *Pool, torrents, perTorrent int, l load) {
	tb.Helper()
	loadPublicAt(tb, p, torrents, perTorrent, l, 0, t0)
}

// loadPublicAt is loadPublic with the peers numbered from first and announced around at.
func loadPublicAt(tb testing.TB, p *Pool, torrents, perTorrent int, l load, first int, at time.Time) {
	tb.Helper()
	ctx := context.Background()
	sel := tracker.Selection{}
	var res tracker.AnnounceResult
	u := tracker.PeerUpdate{Create: true, Counters: l.keep}
	counters := l.counters
	for r := 0; r < perTorrent; r++ {
		for tn := 0; tn < torrents; tn++ {
			n := first + tn*perTorrent + r
			binary.BigEndian.PutUint64(u.Key.ID[:8], 0x2d5453303030312d) // "-TS0001-"
			binary.BigEndian.PutUint64(u.Key.ID[8:16], uint64(n))
			u.Key.Family = models.IPv4
			u.AddrPort = v4(n)
			u.Seeder = r%4 == 0
			if counters {
				u.Uploaded = int64(uint64(n)*2654435761) % 100_000_000_000
				u.Downloaded = int64(uint64(n)*40503) % 10_000_000_000
			}
			u.Time = at.Add(time.Duration(n%1800) * time.Second)
			if err := p.Announce(ctx, hash(tn), &u, &sel, &res); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// BenchmarkMemoryPerPeer is issue 6's memory measurement: 1,000,000 IPv4 peers over 100,000
// torrents, 10 each, public mode, loaded by started announces (zero counters), by regular ones
// (counters reported, none kept: the noop backend) and by regular ones whose counters are kept
// for a backend that consumes deltas. It reports the Go heap in use and the growth of the process's RSS, per
// peer. Run it alone for a clean RSS figure:
//
//	go test -run XXX -bench MemoryPerPeer -benchtime 1x ./tracker/memory/
func BenchmarkMemoryPerPeer(b *testing.B) {
	for _, l := range []load{{}, {counters: true}, {counters: true, keep: true}} {
		b.Run(fmt.Sprintf("load=%v", l), func(b *testing.B) {
			benchmarkMemory(b, 100_000, 10, l)
		})
	}
}

// BenchmarkMemorySwarmSizes loads 1,000,000 IPv4 peers into swarms of 1 and of 2 (a public
// tracker's long tail), where the cost of a torrent itself dominates, of 1000 (its head), where
// the peer index does, and into one swarm. It reports the same figures as BenchmarkMemoryPerPeer.
//
//	go test -run XXX -bench MemorySwarmSizes -benchtime 1x ./tracker/memory/
func BenchmarkMemorySwarmSizes(b *testing.B) {
	for _, perTorrent := range []int{1, 2, 1000, 1_000_000} {
		b.Run(fmt.Sprintf("swarm=%d", perTorrent), func(b *testing.B) {
			benchmarkMemory(b, 1_000_000/perTorrent, perTorrent, load{})
		})
	}
}

func benchmarkMemory(b *testing.B, torrents, perTorrent int, l load) {
	peers := float64(torrents * perTorrent)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		debug.FreeOSMemory()
		heap0, rss0 := heapInUse(), rssBytes(b)
		p := NewPool(DefaultShards)
		loadPublic(b, p, torrents, perTorrent, l)
		heap1, rss1 := heapInUse(), rssBytes(b)
		b.ReportMetric(float64(int64(heap1)-int64(heap0))/peers, "heap-B/peer")
		b.ReportMetric(float64(int64(rss1)-int64(rss0))/peers, "rss-B/peer")
		// Most of RSS beyond the heap is free heap the runtime keeps for reuse: garbage left
		// by growing swarms, not yet returned to the OS.
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapIdle-ms.HeapReleased)/peers, "idle-B/peer")
		st := scrape(b, p, hash(torrents-1))
		if st.Seeders+st.Leechers != perTorrent {
			b.Fatalf("last torrent holds %d peers, want %d", st.Seeders+st.Leechers, perTorrent)
		}
		runtime.KeepAlive(p)
	}
}

// BenchmarkMemoryChurn fills 100,000 torrents with 10 peers each, then replaces every peer once
// by a new one (each swarm holds 20 for a while) and reaps the old ones: the heap after the
// churn against the heap before it (issue 19: at most 1.25x).
//
//	go test -run XXX -bench MemoryChurn -benchtime 1x ./tracker/memory/
func BenchmarkMemoryChurn(b *testing.B) {
	const torrents, perTorrent = 100_000, 10
	peers := float64(torrents * perTorrent)
	for i := 0; i < b.N; i++ {
		debug.FreeOSMemory()
		heap0 := heapInUse()
		p := NewPool(DefaultShards)
		loadPublic(b, p, torrents, perTorrent, load{})
		heap1, rss1 := heapInUse(), rssBytes(b)
		loadPublicAt(b, p, torrents, perTorrent, load{}, torrents*perTorrent, t0.Add(2*time.Hour))
		r, err := p.Reap(context.Background(), t0.Add(time.Hour), false)
		if err != nil || r.Peers != torrents*perTorrent {
			b.Fatalf("reaped %d peers (%v), want %d", r.Peers, err, torrents*perTorrent)
		}
		debug.FreeOSMemory()
		heap2, rss2 := heapInUse(), rssBytes(b)
		b.ReportMetric(float64(int64(heap1)-int64(heap0))/peers, "heap-B/peer")
		b.ReportMetric(float64(int64(heap2)-int64(heap0))/peers, "churned-heap-B/peer")
		b.ReportMetric(float64(heap2-heap0)/float64(heap1-heap0), "heap-after/before")
		b.ReportMetric(float64(rss2)/float64(rss1), "rss-after/before")
		runtime.KeepAlive(p)
	}
}

func BenchmarkScrape(b *testing.B) {
	const torrents, peers = 1000, 50
	p := warmPool(b, torrents, peers)
	ctx := context.Background()
	files := make([]models.TorrentStats, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		files[0] = models.TorrentStats{InfoHash: hash(i % torrents)}
		if err := p.Scrape(ctx, files); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReap times a reaping pass over 1000 torrents × 50 peers that finds nothing to
// remove, the common case between two announces of every peer.
func BenchmarkReap(b *testing.B) {
	const torrents, peers = 1000, 50
	p := warmPool(b, torrents, peers)
	ctx := context.Background()
	cutoff := t0.Add(-time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := p.Reap(ctx, cutoff, true)
		if err != nil || r.Peers != 0 {
			b.Fatal(r, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(torrents*peers), "ns/peer")
}

// BenchmarkAnnounceTail replays bench/run's udp workload shape straight into the driver: 2M
// peers over 1M torrents, each peer's torrent drawn once from an exponential head over the
// first ~0.2% of the pool on a uniform floor (as aquatic's load tester does), announces by
// random peers, 1% of them stops, 30 peers wanted. Swarms grow from empty during the run, so
// it reports the latency tail (p50, p99, p99.9 of single announces) beside ns/op:
//
//	go test -run XXX -bench AnnounceTail -benchtime 3000000x ./tracker/memory/
func BenchmarkAnnounceTail(b *testing.B) {
	const peers, torrents = 2_000_000, 1_000_000
	rng := rand.New(rand.NewPCG(1, 2))
	torrentOf := make([]uint32, peers)
	for i := range torrentOf {
		if rng.IntN(100) < 73 { // the head's share of aquatic's mixture at this size
			torrentOf[i] = uint32(min(int(rng.ExpFloat64()*2000), torrents-1))
		} else {
			torrentOf[i] = uint32(rng.IntN(torrents))
		}
	}
	p := NewPool(DefaultShards)
	ctx := context.Background()
	sel := tracker.Selection{Want: 30, IPv4: true}
	res := tracker.AnnounceResult{IPv4Peers: make([]models.Peer, 0, 30)}
	lat := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for op := range b.N {
		i := rng.IntN(peers)
		u := tracker.PeerUpdate{Create: true, Time: t0, AddrPort: v4(i), Seeder: i%4 != 0, Remove: rng.IntN(100) == 0}
		binary.BigEndian.PutUint64(u.Key.ID[:], uint64(i))
		res.IPv4Peers = res.IPv4Peers[:0]
		start := time.Now()
		if err := p.Announce(ctx, hash(int(torrentOf[i])), &u, &sel, &res); err != nil {
			b.Fatal(err)
		}
		lat[op] = time.Since(start)
	}
	b.StopTimer()
	slices.Sort(lat)
	for _, q := range []struct {
		name string
		at   float64
	}{{"p50-ns", 0.5}, {"p99-ns", 0.99}, {"p99.9-ns", 0.999}} {
		b.ReportMetric(float64(lat[int(q.at*float64(b.N-1))].Nanoseconds()), q.name)
	}
}
