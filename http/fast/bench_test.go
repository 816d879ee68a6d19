package fast_test

import (
	"bytes"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http"
	"github.com/chihaya/chihaya/http/fast"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/ratelimit/ratelimittest"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
)

// The fast path in process, with the tracker's Handler (package http's Server) over a memory
// swarm: head parsing, the tracker core, and the answer, head and body, written into the
// connection's output buffer. Package http's BenchmarkLoopbackAnnounce adds the sockets.

// benchConn is a connection of a fast server whose Handler is a frontend over a memory swarm
// with the default configuration changed by mod.
func benchConn(b *testing.B, mod func(*config.Config), opts ...http.Option) *fast.BenchConn {
	b.Helper()
	cfg := config.Default()
	if mod != nil {
		mod(&cfg)
	}
	tkr, err := tracker.New(&cfg, memory.NewPool(8), noop.Conn{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	hs, err := http.NewServer(&cfg, tkr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	fs, err := fast.New(fast.Config{
		KeepAlive:      cfg.HTTPKeepAlive,
		RequestTimeout: cfg.RequestTimeout.Duration,
		RealIPHeader:   cfg.RealIPHeader,
		MaxConnections: 1,
	}, hs, hs.Handler())
	if err != nil {
		b.Fatal(err)
	}
	return fast.NewBenchConn(fs, netip.MustParseAddrPort("192.0.2.7:51413"))
}

// benchAnnounce is a keep-alive re-announce of one peer: the answer is the same every time.
func benchAnnounce(port int) []byte {
	q := "info_hash=%DE%AD%BE%EF%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%80&peer_id=-qB4630-benchbenchbe&port=" +
		strconv.Itoa(port) + "&uploaded=0&downloaded=0&left=100&compact=1&no_peer_id=1&key=3AF13DE0&numwant=50"
	return []byte("GET /announce?" + q + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: qBittorrent/4.6.3\r\nAccept-Encoding: gzip\r\n\r\n")
}

// BenchmarkFastAnnounce runs announces through the fast path in process. request_timeout 0
// shows what the request context's timer costs.
func BenchmarkFastAnnounce(b *testing.B) {
	for _, timeout := range []time.Duration{10 * time.Second, 0} {
		b.Run("request_timeout="+timeout.String(), func(b *testing.B) {
			c := benchConn(b, func(cfg *config.Config) { cfg.RequestTimeout.Duration = timeout })
			req := benchAnnounce(6881)
			out, v := c.Answer(req)
			if v != fast.HeadOK || !bytes.HasPrefix(out, []byte("HTTP/1.1 200 OK\r\n")) || !bytes.Contains(out, []byte("\r\n\r\nd8:complete")) {
				b.Fatalf("answer %v %q", v, out)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, v := c.Answer(req); v != fast.HeadOK {
					b.Fatal(v)
				}
			}
		})
	}
}

// BenchmarkFastAnnounceLimiter is a fast-path announce from one of 20,000 client addresses in
// turn, with the rate limiter off and on (a rate no client reaches, in a table of 65,536
// buckets): what the limiter costs an HTTP announce it lets through.
func BenchmarkFastAnnounceLimiter(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "limiter=off", true: "limiter=on"}[on], func(b *testing.B) {
			var opts []http.Option
			if on {
				l, err := ratelimit.New(ratelimit.Config{
					Announce: ratelimit.Rate{PerSecond: 1e9, Burst: 1e9}, IPv4Prefix: 32, IPv6Prefix: 64, Slots: 1 << 16,
				}, nil)
				if err != nil {
					b.Fatal(err)
				}
				opts = append(opts, http.WithLimiter(l))
			}
			c := benchConn(b, nil, opts...)
			req := benchAnnounce(6881)
			remotes := make([]netip.AddrPort, 20000)
			for i := range remotes {
				remotes[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 51413)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.SetRemote(remotes[i%len(remotes)])
				i++
				if _, v := c.Answer(req); v != fast.HeadOK {
					b.Fatal(v)
				}
			}
		})
	}
}

// BenchmarkFastAnnounceLimiterPaired is BenchmarkFastAnnounceLimiter in one process: one warm
// connection answers alternating slices of 20,000 announces (from 20,000 addresses in turn)
// with the limiter's rates off, as a tracker runs without rate_limit, and on (see
// ratelimittest.Paired); on/off is the median of the pairs' ratios. off-ns/op and on-ns/op are
// the means of each side.
func BenchmarkFastAnnounceLimiterPaired(b *testing.B) {
	l, err := ratelimit.New(ratelimit.Config{IPv4Prefix: 32, IPv6Prefix: 64, Slots: 1 << 16}, nil)
	if err != nil {
		b.Fatal(err)
	}
	c := benchConn(b, nil, http.WithLimiter(l))
	req := benchAnnounce(6881)
	remotes := make([]netip.AddrPort, 20000)
	for i := range remotes {
		remotes[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 51413)
	}
	on := ratelimit.Rate{PerSecond: 1e9, Burst: 1e9}
	i := 0
	b.ReportAllocs()
	ratelimittest.Paired(b, ratelimittest.DefaultSlice, func(limit bool) {
		if limit {
			l.SetRates(on, ratelimit.Rate{})
		} else {
			l.SetRates(ratelimit.Rate{}, ratelimit.Rate{})
		}
	}, func(n int) {
		for range n {
			c.SetRemote(remotes[i%len(remotes)])
			i++
			if _, v := c.Answer(req); v != fast.HeadOK {
				b.Fatal(v)
			}
		}
	})
}
