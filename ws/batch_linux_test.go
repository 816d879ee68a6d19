package ws

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
)

// packetConn is a polled socket of s on a SOCK_SEQPACKET pair, from 127.0.0.(1+i), whose other
// end (returned) reads one packet per write the server made: the test counts the writes.
func packetConn(t *testing.T, s *Server, i int) (*conn, int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.SetNonblock(fds[0], true))
	require.NoError(t, syscall.SetNonblock(fds[1], true))
	t.Cleanup(func() { _ = syscall.Close(fds[1]) })
	mine, theirs := net.Pipe()
	_ = theirs.Close()
	c := &conn{s: s, nc: mine, fd: fds[0], polled: true, remote: netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)})}
	c.lastHeard.Store(s.clock())
	require.NoError(t, s.poll.add(c))
	require.True(t, s.track(c))
	s.m.polled.Add(1)
	require.NoError(t, s.poll.start(c))
	return c, fds[1]
}

// packets reads the packets waiting at fd (each one write of the server) and returns the
// payloads of the frames in each.
func packets(t *testing.T, fd int) [][]string {
	t.Helper()
	var got [][]string
	buf := make([]byte, 256<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EAGAIN {
			return got
		}
		require.NoError(t, err)
		var frames []string
		for p := buf[:n]; len(p) > 0; {
			require.GreaterOrEqual(t, len(p), 2)
			require.Equal(t, byte(0x80|opText), p[0], "a final text frame")
			size, head := int(p[1]&0x7f), 2
			switch size {
			case 126:
				size, head = int(binary.BigEndian.Uint16(p[2:])), 4
			case 127:
				size, head = int(binary.BigEndian.Uint64(p[2:])), 10
			}
			require.GreaterOrEqual(t, len(p), head+size)
			frames = append(frames, string(p[head:head+size]))
			p = p[head+size:]
		}
		got = append(got, frames)
	}
}

// TestBatchWritesOnce: what the readers of one batch queue to a socket is written to it in one
// write, when the batch's last reader is done, and not before.
func TestBatchWritesOnce(t *testing.T) {
	s := benchServer(t)
	const peers = 4
	conns := make([]*conn, peers)
	clients := make([]int, peers)
	for i := range conns {
		conns[i], clients[i] = packetConn(t, s, i)
		sc := s.getScratch()
		s.handle(conns[i], announceMessage(byte('A'+i), 0, 0), sc)
		sc.flushAll()
		sc.release()
		require.Len(t, packets(t, clients[i]), 1, "peer %d's answer", i)
	}

	// Peers 1 to 3 announce with 3 offers each in one batch: each offer goes to one of the
	// 3 others, so peer 0 gets 3 offers, and peers 1 to 3 their answer and 2 offers each.
	b := newBatch()
	for i := 1; i < peers; i++ {
		b.hold()
		sc := s.getScratch()
		s.handle(conns[i], announceMessage(byte('A'+i), 3, 100), sc)
		b.join(sc)
		sc.release()
		b.done()
	}
	for i := range clients {
		assert.Empty(t, packets(t, clients[i]), "peer %d was written before the batch's end", i)
	}
	b.done() // the poller's reference: the batch is over
	for i := range clients {
		got := packets(t, clients[i])
		require.Len(t, got, 1, "peer %d: one write", i)
		var offers, answers int
		for _, f := range got[0] {
			switch {
			case strings.Contains(f, `"offer":`):
				offers++
			case strings.Contains(f, `"complete":`):
				answers++
			}
		}
		if i == 0 {
			assert.Equal(t, [2]int{3, 0}, [2]int{offers, answers}, "peer 0: offers, answers")
		} else {
			assert.Equal(t, [2]int{2, 1}, [2]int{offers, answers}, "peer %d: offers, answers", i)
		}
	}
	assert.Zero(t, s.m.failures.Load())
	assert.Equal(t, uint64(9), s.m.offersRelayed.Load())
}

// TestBatchReadBounded: in its batch, a socket is read at most batchReads times, however much it
// holds (a client that sends without end cannot hold up the batch's writes); it is read to its
// end after that.
func TestBatchReadBounded(t *testing.T) {
	s := benchServer(t)
	// A socket of the server's that the poller does not watch: the test is its reader.
	c, client := pairSocket(t, s, 0)
	t.Cleanup(func() { _ = syscall.Close(client) })
	require.True(t, s.track(c))
	serverFD := c.fd

	// 1 MB of pongs, all in the socket at once.
	require.NoError(t, syscall.SetsockoptInt(client, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4<<20))
	pong := clientFrame(true, opPong, []byte("0123456789"), [4]byte{1, 2, 3, 4})
	var flood []byte
	for len(flood) < 1<<20 {
		flood = append(flood, pong...)
	}
	n, err := syscall.Write(client, flood)
	require.NoError(t, err)
	require.Equal(t, len(flood), n)
	unread := func() int {
		v, err := unix.IoctlGetInt(serverFD, unix.SIOCINQ)
		require.NoError(t, err)
		return v
	}

	sc := s.getScratch()
	ok, drained := c.readPolled(sc, batchReads)
	sc.release()
	assert.True(t, ok)
	assert.False(t, drained, "stopped at batchReads")
	assert.Equal(t, len(flood)-batchReads*readBufferSize, unread(), "batchReads reads of a buffer each")

	// The reader's loop: its batch's share, then the rest on its own, until the client closes.
	require.NoError(t, syscall.Shutdown(client, syscall.SHUT_WR))
	b := newBatch()
	b.hold()
	c.mu.Lock()
	c.reading = true
	c.mu.Unlock()
	c.readable(b)
	// It read every pong (a bad frame would have closed the socket with a close frame, which
	// would be the first thing on the client's end) up to the client's close, which ends it.
	assert.True(t, c.finished.Load(), "the client's close ends the connection")
	var buf [16]byte
	n, err = syscall.Read(client, buf[:])
	assert.Zero(t, n, "%q, %v", buf[:n], err)
	assert.Equal(t, int32(1), b.refs.Load(), "the reader let go of its batch")
	b.done()
}

// TestBatchCloseFrameWritten: a socket whose reader closes it with a close frame (here, for a
// frame a client must not send) while other readers of its batch are still at work gets its
// close frame when the batch ends, then its end.
func TestBatchCloseFrameWritten(t *testing.T) {
	s := benchServer(t)
	// A socket of the server's that the poller does not watch: the test is its reader.
	c, client := pairSocket(t, s, 0)
	t.Cleanup(func() { _ = syscall.Close(client) })
	require.True(t, s.track(c))

	_, err := syscall.Write(client, []byte{0x80 | opText, 2, 'h', 'i'}) // not masked: 1002
	require.NoError(t, err)
	b := newBatch() // the poller's reference, which stands for another reader still at work
	b.hold()
	c.mu.Lock()
	c.reading = true
	c.mu.Unlock()
	c.readable(b)
	assert.True(t, c.finished.Load())
	b.done()

	var buf [16]byte
	n, err := syscall.Read(client, buf[:])
	require.NoError(t, err)
	require.Equal(t, []byte{0x80 | opClose, 2, closeProtocolError >> 8, closeProtocolError & 0xff}, buf[:n])
	n, err = syscall.Read(client, buf[:])
	assert.Zero(t, n, "%v", err)
}

// blockingRecorder blocks the first request it is told of until release is closed, as a core
// waiting on a remote driver would hold its reader.
type blockingRecorder struct {
	first            atomic.Bool
	blocked, release chan struct{}
}

func (r *blockingRecorder) Record(stats.Request) {
	if r.first.CompareAndSwap(false, true) {
		close(r.blocked)
		<-r.release
	}
}

// TestBlockedReaderHoldsUpNoOther: while one socket's reader waits (on the core), the poller's
// other readers, or new ones, answer the other sockets.
func TestBlockedReaderHoldsUpNoOther(t *testing.T) {
	cfg := config.Default()
	require.NoError(t, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Close() })
	tkr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(t, err)
	rec := &blockingRecorder{blocked: make(chan struct{}), release: make(chan struct{})}
	s, err := New(&cfg, tkr, WithRecorder(rec))
	require.NoError(t, err)
	released := false
	t.Cleanup(func() {
		if !released {
			close(rec.release)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, s.Close(ctx))
	})

	const others = 8
	clients := make([]int, others+1)
	for i := range clients {
		_, clients[i] = pairConn(t, s, i)
		t.Cleanup(func() { _ = syscall.Close(clients[i]) })
	}
	send := func(i int) {
		_, err := syscall.Write(clients[i], clientFrame(true, opText, announceMessage(byte('A'+i), 0, 0), [4]byte{1, 2, 3, 4}))
		require.NoError(t, err)
	}
	send(0)
	select {
	case <-rec.blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("the first announce never reached the recorder")
	}
	for i := 1; i <= others; i++ {
		send(i)
	}
	for i := 1; i <= others; i++ {
		assert.Contains(t, string(readServerFrame(t, clients[i])), `"complete":`, "socket %d answered", i)
	}
	close(rec.release)
	released = true
	assert.Contains(t, string(readServerFrame(t, clients[0])), `"complete":`)
}
