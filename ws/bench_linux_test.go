package ws

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory"
)

// benchServer is a server on a tracker with the memory driver, closed when the test ends.
func benchServer(tb testing.TB) *Server {
	tb.Helper()
	s, _ := memoryServer(tb, func(cfg *config.Config) {
		cfg.WSSendQueue = 1024 // as wsbench: the readers of the other ends may lag behind
	})
	return s
}

// memoryServer is a server on a tracker with the memory driver and config.Default() changed by
// mod, closed (and its sockets with it) when the test ends; it returns the tracker too.
func memoryServer(tb testing.TB, mod func(*config.Config)) (*Server, *tracker.Tracker) {
	tb.Helper()
	cfg := config.Default()
	mod(&cfg)
	require.NoError(tb, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = pool.Close() })
	tkr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(tb, err)
	s, err := New(&cfg, tkr)
	require.NoError(tb, err)
	// Closing the server closes the sockets: the readers of the other ends see their end.
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(tb, s.Close(ctx))
	})
	return s, tkr
}

// pairSocket is a socket of s, the non-blocking end of a socket pair, from 127.0.0.(1+i),
// neither watched by the poller nor tracked; it returns the client's end too, which the
// caller closes.
func pairSocket(tb testing.TB, s *Server, i int) (*conn, int) {
	tb.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(tb, err)
	require.NoError(tb, syscall.SetNonblock(fds[0], true))
	mine, theirs := net.Pipe() // what the HTTP frontend would keep to count the socket
	_ = theirs.Close()
	return &conn{s: s, nc: mine, fd: fds[0], polled: true, remote: netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)})}, fds[1]
}

// pairConn is a polled socket of s, one end of a socket pair, from 127.0.0.(1+i); it returns the
// client's end too.
func pairConn(tb testing.TB, s *Server, i int) (*conn, int) {
	tb.Helper()
	c, client := pairSocket(tb, s, i)
	c.lastHeard.Store(s.clock())
	require.NoError(tb, s.poll.add(c))
	require.True(tb, s.track(c))
	s.m.polled.Add(1)
	require.NoError(tb, s.poll.start(c))
	return c, client
}

// benchSwarm is a server and a swarm of polled sockets on socket pairs, each peer announced,
// whose other ends are read (and dropped) by goroutines of their own, as clients would.
func benchSwarm(tb testing.TB, peers int) (*Server, []*conn) {
	tb.Helper()
	s := benchServer(tb)
	conns := make([]*conn, peers)
	for i := range conns {
		c, theirs := pairConn(tb, s, i)
		conns[i] = c
		go func(fd int) {
			defer syscall.Close(fd)
			buf := make([]byte, 64<<10)
			for {
				if n, err := syscall.Read(fd, buf); n <= 0 || err != nil {
					return
				}
			}
		}(theirs)
		sc := s.getScratch()
		s.handle(c, announceMessage(byte('A'+i), 0, 0), sc)
		sc.flushAll()
		sc.release()
	}
	require.Zero(tb, s.m.failures.Load())
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

// TestPartialFrameKept: a socket idle in the middle of a frame keeps only the bytes it has of it,
// however long the frame says it is, and reads the rest when it comes.
func TestPartialFrameKept(t *testing.T) {
	s := benchServer(t)
	c, client := pairConn(t, s, 0)
	defer syscall.Close(client)
	payload := bytes.Repeat([]byte(" "), 60000)
	copy(payload, `{"action":"scrape"`)
	frame := clientFrame(true, opText, payload, [4]byte{1, 2, 3, 4})
	const head = 8 + 100 // 2 bytes, a 16-bit length, the mask, and 100 bytes of payload
	_, err := syscall.Write(client, frame[:head])
	require.NoError(t, err)
	// c.in is its reader's; with c.mu held and no reader, no reader starts (the poller marks one
	// reading under c.mu before it starts it).
	kept := func() (n, room int, ok bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.reading || c.in == nil {
			return 0, 0, false
		}
		return len(*c.in), cap(*c.in), true
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, room, ok := kept()
		if ok && n == head {
			assert.Less(t, room, 2*head, "an idle socket keeps the bytes it has (in the allocator's size class), no buffer")
			break
		}
		require.True(t, time.Now().Before(deadline), "the socket never read the start of the frame")
		time.Sleep(time.Millisecond)
	}

	_, err = syscall.Write(client, frame[head:])
	require.NoError(t, err)
	// The message, whole, is answered (a failure: it is not JSON).
	require.NoError(t, syscall.SetNonblock(client, false))
	var tv = syscall.Timeval{Sec: 5}
	require.NoError(t, syscall.SetsockoptTimeval(client, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv))
	buf := make([]byte, 256)
	n, err := syscall.Read(client, buf)
	require.NoError(t, err)
	assert.Contains(t, string(buf[:n]), "invalid JSON message")
}
