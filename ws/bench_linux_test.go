package ws

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory"
)

// benchSwarm is a server and a swarm of polled sockets on socket pairs, each peer announced,
// whose other ends are read (and dropped) by goroutines of their own, as clients would.
func benchSwarm(tb testing.TB, peers int) (*Server, []*conn) {
	tb.Helper()
	cfg := config.Default()
	cfg.WSSendQueue = 1024 // as wsbench: the readers of the other ends may lag behind
	require.NoError(tb, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = pool.Close() })
	tkr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(tb, err)
	s, err := New(&cfg, tkr)
	require.NoError(tb, err)
	conns := make([]*conn, peers)
	for i := range conns {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		require.NoError(tb, err)
		require.NoError(tb, syscall.SetNonblock(fds[0], true))
		mine, theirs := net.Pipe()
		_ = theirs.Close()
		c := &conn{s: s, nc: mine, fd: fds[0], polled: true, remote: netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)})}
		c.lastHeard.Store(s.clock())
		conns[i] = c
		require.NoError(tb, s.poll.add(c))
		require.True(tb, s.track(c))
		s.m.polled.Add(1)
		require.NoError(tb, s.poll.start(c))
		go func(fd int) {
			defer syscall.Close(fd)
			buf := make([]byte, 64<<10)
			for {
				if n, err := syscall.Read(fd, buf); n <= 0 || err != nil {
					return
				}
			}
		}(fds[1])
		sc := s.getScratch()
		s.handle(c, announceMessage(byte('A'+i), 0, 0), sc)
		sc.flushAll()
		sc.release()
	}
	require.Zero(tb, s.m.failures.Load())
	// Closing the server closes the sockets: the readers of the other ends see their end.
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(tb, s.Close(ctx))
	})
	return s, conns
}

// BenchmarkAnnounce is one WebTorrent announce with 5 offers of 500 bytes in a swarm of 20
// peers: parsed, through the core, answered and relayed, every frame written to its socket.
func BenchmarkAnnounce(b *testing.B) {
	s, conns := benchSwarm(b, 20)
	msg := announceMessage('A', 5, 500)
	buf := make([]byte, len(msg))
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		copy(buf, msg) // a message is unmasked and read in place; the next one is fresh
		sc := s.getScratch()
		s.handle(conns[0], buf, sc)
		sc.flushAll()
		sc.release()
	}
	b.StopTimer()
	require.Equal(b, uint64(b.N)*5, s.m.offersRelayed.Load(), "every offer relayed")
}
