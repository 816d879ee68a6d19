package udp

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/accesslist"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/ratelimit/ratelimittest"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker/models"
)

const benchTorrents, benchPeers = 1000, 20

// benchPacket is one announce of the warm swarm, from its peer's address.
type benchPacket struct {
	pkt  []byte
	from netip.AddrPort
}

// benchEnv builds a server holding benchTorrents × benchPeers peers (a fifth of them seeders),
// each its own user in private mode, and returns the announces (with valid connection IDs at
// the env's fixed clock) that keep the swarms as they are.
func benchEnv(b *testing.B, private, v6 bool) (*env, []benchPacket) {
	b.Helper()
	e := newEnv(b, func(c *config.Config) { c.PrivateEnabled = private })
	e.s.recorder = discard{}
	ctx := context.Background()
	st := &models.SiteState{}
	if private {
		for i := range benchPeers {
			st.Users = append(st.Users, models.User{ID: uint64(i + 1), Passkey: fmt.Sprintf("%032d", i+1), CanLeech: true})
		}
		for tn := range benchTorrents {
			st.Torrents = append(st.Torrents, models.Torrent{ID: uint64(tn + 1), InfoHash: benchHash(tn)})
		}
		require.NoError(b, e.tkr.ReplaceSite(ctx, st))
	}
	pkts := make([]benchPacket, 0, benchTorrents*benchPeers)
	for tn := range benchTorrents {
		for i := range benchPeers {
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i), byte(tn >> 8), byte(tn)}), 40000)
			if v6 {
				from = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(tn), 14: byte(tn >> 8), 13: byte(i)}), 40000)
			}
			a := ann{infoHash: benchHash(tn), peerID: fmt.Sprintf("-qB4620-%012d", i), left: 1000, event: 2, numWant: 50, port: 6881}
			if i%5 == 0 {
				a.left = 0
			}
			var opts []byte
			if private {
				opts = urlData(fmt.Sprintf("/%032d/announce", i+1))
			}
			pkt := announcePacket(e.connID(from), uint32(tn*benchPeers+i), a, opts...)
			if resp := e.do(pkt, from); binary.BigEndian.Uint32(resp) != actionAnnounce {
				b.Fatalf("warm-up announce failed: %q", resp[8:])
			}
			binary.BigEndian.PutUint32(pkt[80:], 0) // then regular announces
			pkts = append(pkts, benchPacket{pkt, from})
		}
	}
	return e, pkts
}

// discard is a Recorder that keeps nothing, so that benchmarks measure the request path only.
type discard struct{}

func (discard) Record(stats.Request) {}

func benchHash(tn int) models.InfoHash {
	var h models.InfoHash
	binary.BigEndian.PutUint64(h[:], uint64(tn)*0x9e3779b97f4a7c15)
	return h
}

// BenchmarkAnnounce is one announce through the UDP handling path without the socket: header,
// connection ID check, parse (with BEP 41 URLData in private mode), the core on a warm memory
// swarm (1000 torrents × 20 peers, 50 wanted) and the encoding of the answer into the reader's
// reused buffer.
func BenchmarkAnnounce(b *testing.B) {
	for _, bc := range []struct {
		name        string
		private, v6 bool
	}{{"public-ipv4", false, false}, {"public-ipv6", false, true}, {"private-ipv4", true, false}} {
		b.Run(bc.name, func(b *testing.B) {
			e, pkts := benchEnv(b, bc.private, bc.v6)
			runAnnounces(b, e, pkts)
		})
	}
}

// runAnnounces times b.N announces of pkts through e's worker: torrent i%1000, peer
// (i/1000)%20, so that every announce meets a different swarm.
func runAnnounces(b *testing.B, e *env, pkts []benchPacket) {
	out := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := &pkts[(i%benchTorrents)*benchPeers+(i/benchTorrents)%benchPeers]
		out = e.w.handle(p.pkt, p.from, false, out[:0])
		if len(out) < announceHdrLen {
			b.Fatalf("answer %q", out)
		}
	}
}

// BenchmarkConnect is one connect: a connection ID computed and encoded.
func BenchmarkConnect(b *testing.B) {
	e := newEnv(b, nil)
	pkt := connectPacket(1)
	out := make([]byte, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = e.w.handle(pkt, v4Client, false, out[:0])
	}
}

// BenchmarkConnectionIDCheck is the check of a bad connection ID and its truncated error
// packet: what a flood of forged requests costs.
func BenchmarkConnectionIDCheck(b *testing.B) {
	e := newEnv(b, nil)
	pkt := scrapePacket(12345, 1, hashOf("a"))
	out := make([]byte, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = e.w.handle(pkt, v4Client, false, out[:0])
	}
}

// BenchmarkScrape is one scrape of 10 hashes of the warm swarm.
func BenchmarkScrape(b *testing.B) {
	e, _ := benchEnv(b, false, false)
	hashes := make([]models.InfoHash, 10)
	for i := range hashes {
		hashes[i] = benchHash(i * 97)
	}
	pkt := scrapePacket(e.connID(v4Client), 1, hashes...)
	out := make([]byte, 0, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out = e.w.handle(pkt, v4Client, false, out[:0])
	}
}

// serveBench serves e's server on a loopback socket with batch and returns its address.
func serveBench(b *testing.B, e *env, batch int) netip.AddrPort {
	b.Helper()
	e.s.batch = batch
	e.s.readers = 2
	conn, err := Listen("127.0.0.1:0")
	require.NoError(b, err)
	done := make(chan error, 1)
	go func() { done <- e.s.Serve(conn) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(b, e.s.Shutdown(ctx))
		require.NoError(b, <-done)
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// benchClient is a loopback client socket with announces whose connection IDs are valid for
// its address.
type benchClient struct {
	conn *net.UDPConn
	pkts [][]byte
	buf  []byte
}

func newBenchClient(b *testing.B, e *env, pkts []benchPacket) *benchClient {
	b.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close() })
	self := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	id := e.connID(self)
	c := &benchClient{conn: conn, buf: make([]byte, 4096)}
	for _, p := range pkts {
		pkt := append([]byte(nil), p.pkt...)
		binary.BigEndian.PutUint64(pkt, id)
		c.pkts = append(c.pkts, pkt)
	}
	return c
}

// roundTrip sends announce i and waits for its answer.
func (c *benchClient) roundTrip(b *testing.B, to netip.AddrPort, i int) bool {
	if _, err := c.conn.WriteToUDPAddrPort(c.pkts[i%len(c.pkts)], to); err != nil {
		b.Error(err)
		return false
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.conn.ReadFromUDPAddrPort(c.buf)
	if err != nil || n < announceHdrLen || binary.BigEndian.Uint32(c.buf) != actionAnnounce {
		b.Errorf("answer %q: %v", c.buf[:n], err)
		return false
	}
	return true
}

// BenchmarkAnnounceLoopback is one announce through a loopback socket: the client's write, the
// server's read, the handling path above, the server's write and the client's read. allocs/op
// counts both sides. "sequential" is one client waiting for each answer, so batches hold one
// datagram; "parallel" keeps 32 clients per CPU in flight, so recvmmsg returns several at once.
func BenchmarkAnnounceLoopback(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch-%d/sequential", batch), func(b *testing.B) {
			e, pkts := benchEnv(b, false, false)
			e.clock.set(time.Now())
			to := serveBench(b, e, batch)
			c := newBenchClient(b, e, pkts)
			for i := range 100 { // warm the readers' buffers
				c.roundTrip(b, to, i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if !c.roundTrip(b, to, i) {
					return
				}
			}
		})
		b.Run(fmt.Sprintf("batch-%d/parallel", batch), func(b *testing.B) {
			e, pkts := benchEnv(b, false, false)
			e.clock.set(time.Now())
			to := serveBench(b, e, batch)
			const perProc = 32
			clients := make(chan *benchClient, perProc*runtime.GOMAXPROCS(0))
			for range cap(clients) {
				c := newBenchClient(b, e, pkts)
				for i := range 10 {
					c.roundTrip(b, to, i)
				}
				clients <- c
			}
			var seq atomic.Int64
			b.SetParallelism(perProc)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var c *benchClient
				select {
				case c = <-clients:
				default:
					b.Error("too few clients")
					return
				}
				i := int(seq.Add(1)) * 7919
				for pb.Next() {
					i++
					if !c.roundTrip(b, to, i) {
						return
					}
				}
			})
		})
	}
}

// BenchmarkAnnounceFlood keeps a window of 256 announces in flight from 4 client sockets that
// write without waiting and then collect the answers: the server's readers then find many
// datagrams queued, as under real load, and batching can pay. ns/op is the time per answered
// announce, clients included.
func BenchmarkAnnounceFlood(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch-%d", batch), func(b *testing.B) {
			e, pkts := benchEnv(b, false, false)
			e.clock.set(time.Now())
			to := serveBench(b, e, batch)
			const clients, window = 4, 64
			cs := make([]*benchClient, clients)
			for i := range cs {
				cs[i] = newBenchClient(b, e, pkts)
				cs[i].roundTrip(b, to, i)
			}
			var lost atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			per := (b.N + clients - 1) / clients
			var done atomic.Int64
			errc := make(chan error, clients)
			for ci, c := range cs {
				go func() {
					i := ci * 7919
					for left := per; left > 0; {
						n := min(left, window)
						for range n {
							i++
							if _, err := c.conn.WriteToUDPAddrPort(c.pkts[i%len(c.pkts)], to); err != nil {
								errc <- err
								return
							}
						}
						for range n {
							_ = c.conn.SetReadDeadline(time.Now().Add(time.Second))
							if _, _, err := c.conn.ReadFromUDPAddrPort(c.buf); err != nil {
								lost.Add(1) // dropped by a full socket buffer
							}
						}
						left -= n
						done.Add(int64(n))
					}
					errc <- nil
				}()
			}
			for range clients {
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if n := lost.Load(); n > 0 {
				b.ReportMetric(float64(n)/float64(done.Load()), "lost/op")
			}
		})
	}
}

// BenchmarkAnnounceLimiter is BenchmarkAnnounce's public IPv4 case with the rate limiter off
// and on (a rate no peer reaches, 20,000 addresses in a table of 65,536 buckets): what the
// limiter costs an announce that it lets through.
func BenchmarkAnnounceLimiter(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("limiter=%v", map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
			e, pkts := benchEnv(b, false, false)
			if on {
				l, err := ratelimit.New(ratelimit.Config{
					Announce: ratelimit.Rate{PerSecond: 1e9, Burst: 1e9}, IPv4Prefix: 32, IPv6Prefix: 64, Slots: 1 << 16,
				}, nil)
				require.NoError(b, err)
				e.s.limiter = l
			}
			runAnnounces(b, e, pkts)
		})
	}
}

// BenchmarkAnnounceLimiterPaired is BenchmarkAnnounceLimiter in one process: one warm server
// answers alternating slices of 20,000 announces without the limiter and with it (see
// ratelimittest.Paired), and on/off is the median of the pairs' ratios, steadier on a busy
// machine than two separate benchmarks. off-ns/op and on-ns/op are the means of each side.
func BenchmarkAnnounceLimiterPaired(b *testing.B) {
	e, pkts := benchEnv(b, false, false)
	l, err := ratelimit.New(ratelimit.Config{
		Announce: ratelimit.Rate{PerSecond: 1e9, Burst: 1e9}, IPv4Prefix: 32, IPv6Prefix: 64, Slots: 1 << 16,
	}, nil)
	require.NoError(b, err)
	out := make([]byte, 0, 2048)
	i := 0
	b.ReportAllocs()
	ratelimittest.Paired(b, ratelimittest.DefaultSlice, func(on bool) {
		e.s.limiter = nil
		if on {
			e.s.limiter = l
		}
	}, func(n int) {
		for range n {
			p := &pkts[(i%benchTorrents)*benchPeers+(i/benchTorrents)%benchPeers]
			i++
			out = e.w.handle(p.pkt, p.from, false, out[:0])
			if len(out) < announceHdrLen {
				b.Fatalf("answer %q", out)
			}
		}
	})
}

// BenchmarkAnnounceAccessList is BenchmarkAnnounce's public IPv4 case without an access list
// and with a deny list of 1 million hashes (none of the swarms' torrents among them): what the
// list's lookup costs an announce.
func BenchmarkAnnounceAccessList(b *testing.B) {
	hs := make([]models.InfoHash, 1_000_000)
	for i := range hs {
		binary.BigEndian.PutUint64(hs[i][:], uint64(i)*0x2545f4914f6cdd1d+1)
		binary.BigEndian.PutUint64(hs[i][8:], uint64(i))
	}
	list := accesslist.FromHashes(accesslist.Deny, hs)
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "list=none", true: "list=1M"}[on], func(b *testing.B) {
			e, pkts := benchEnv(b, false, false)
			if on {
				e.tkr.SetAccessList(list)
			}
			runAnnounces(b, e, pkts)
		})
	}
}
