package fast

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sockPair returns a sock over the server side of a loopback TCP connection, raw, and the
// client side.
func sockPair(t *testing.T) (*sock, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	client, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	require.NoError(t, client.SetDeadline(time.Now().Add(10*time.Second)))
	sc, err := ln.Accept()
	require.NoError(t, err)
	// A descriptor of its own, non-blocking, as accept4 gives the raw accept loop.
	f, err := sc.(*net.TCPConn).File()
	require.NoError(t, err)
	_ = sc.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	require.NoError(t, err)
	_ = f.Close()
	require.NoError(t, syscall.SetNonblock(fd, true))
	k := newSock(fd, netip.MustParseAddrPort(client.LocalAddr().String()))
	t.Cleanup(func() { _ = k.Close() })
	return k, client
}

// TestSockRawThenPolled: a sock reads and writes raw until a read finds nothing, and waits on
// the poller from then on, with the deadline set while it was raw.
func TestSockRawThenPolled(t *testing.T) {
	k, client := sockPair(t)
	_, err := client.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 16)
	require.Eventually(t, func() bool {
		n, _, err := syscall.Recvfrom(k.fd, buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err == nil && n == 5
	}, 5*time.Second, time.Millisecond, "the client's bytes arrive")
	n, err := k.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf[:n]), "read raw")
	assert.Nil(t, k.f, "still raw")

	n, err = k.Write([]byte("answer"))
	require.NoError(t, err)
	assert.Equal(t, 6, n)
	got := make([]byte, 6)
	_, err = io.ReadFull(client, got)
	require.NoError(t, err)
	assert.Equal(t, "answer", string(got))

	// Nothing to read: the sock goes on the poller, and the read deadline set while raw holds.
	require.NoError(t, k.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = k.Read(buf)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout(), "a timeout: %v", err)
	assert.True(t, isTemporaryNetErr(err), "crypto/tls keeps a connection whose read timed out only when the error says temporary: %v", err)
	assert.NotNil(t, k.f, "on the poller")

	// Later reads wait for the client.
	require.NoError(t, k.SetReadDeadline(time.Time{}))
	go func() { _, _ = client.Write([]byte("more")) }()
	n, err = k.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "more", string(buf[:n]))

	// A past deadline wakes a blocked read (Shutdown and the budget wake connections so).
	errc := make(chan error, 1)
	go func() { _, err := k.Read(buf); errc <- err }()
	time.Sleep(10 * time.Millisecond) // let it block (a read that has not started fails alike)
	require.NoError(t, k.SetReadDeadline(pastDeadline))
	select {
	case err := <-errc:
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout())
	case <-time.After(5 * time.Second):
		t.Fatal("a past deadline did not wake the read")
	}

	// The client closing is io.EOF.
	require.NoError(t, k.SetReadDeadline(time.Time{}))
	_ = client.Close()
	_, err = k.Read(buf)
	assert.ErrorIs(t, err, io.EOF)
}

// isTemporaryNetErr reports whether err is a net.Error that says it is temporary, as crypto/tls
// asks.
func isTemporaryNetErr(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}

// TestSockHold: held writes leave only at Close, in one send, on a raw and on a polled sock; a
// write too large to hold sends what is held first, in order.
func TestSockHold(t *testing.T) {
	for _, polled := range []bool{false, true} {
		name := "raw"
		if polled {
			name = "polled"
		}
		t.Run(name, func(t *testing.T) {
			k, client := sockPair(t)
			if polled {
				require.NoError(t, k.SetReadDeadline(pastDeadline))
				_, err := k.Read(make([]byte, 1))
				require.Error(t, err)
				require.NotNil(t, k.f)
			}
			k.holdWrites()
			_, err := k.Write([]byte("answer,"))
			require.NoError(t, err)
			_, err = k.Write([]byte("close_notify"))
			require.NoError(t, err)
			require.NoError(t, k.SetWriteDeadline(pastDeadline)) // as crypto/tls does after its alert
			// Nothing has left yet.
			require.NoError(t, client.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
			_, err = client.Read(make([]byte, 1))
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			require.True(t, ne.Timeout(), "held bytes were sent before Close: %v", err)
			require.NoError(t, client.SetReadDeadline(time.Now().Add(5*time.Second)))

			require.NoError(t, k.Close())
			all, err := io.ReadAll(client)
			require.NoError(t, err)
			assert.Equal(t, "answer,close_notify", string(all))
			assert.ErrorIs(t, k.Close(), net.ErrClosed)
			_, err = k.Write([]byte("x"))
			assert.ErrorIs(t, err, net.ErrClosed)
		})
	}
	t.Run("too large to hold", func(t *testing.T) {
		k, client := sockPair(t)
		k.holdWrites()
		_, err := k.Write([]byte("first,"))
		require.NoError(t, err)
		big := make([]byte, maxHold)
		for i := range big {
			big[i] = 'b'
		}
		go func() {
			_, _ = k.Write(big)
			_ = k.Close()
		}()
		all, err := io.ReadAll(client)
		require.NoError(t, err)
		assert.Equal(t, "first,"+string(big), string(all))
	})
}

// TestSockCloseWakesRead: Close from another goroutine (Shutdown gives up) ends a blocked read.
func TestSockCloseWakesRead(t *testing.T) {
	k, _ := sockPair(t)
	errc := make(chan error, 1)
	go func() { _, err := k.Read(make([]byte, 8)); errc <- err }()
	require.Eventually(t, func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.f != nil
	}, 5*time.Second, time.Millisecond, "the read waits on the poller")
	require.NoError(t, k.Close())
	select {
	case err := <-errc:
		assert.True(t, errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed), "%v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the read")
	}
}

// TestTLSConnectionClose: over the raw accept loop, TLS clients asking Connection: close get
// their answers and a clean end (the held answer and alert leave at Close, TestSockHold), and
// the goroutines serving TLS are kept for the next connections, up to maxIdleWorkers, and let
// go at Shutdown.
func TestTLSConnectionClose(t *testing.T) {
	s := newTestServer(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg := testTLSConfig(t)
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(ln, cfg) }()
	for i := range 20 {
		c := tls.Client(dial(t, ln.Addr().String()), &tls.Config{RootCAs: testCA.Pool(), ServerName: "localhost"})
		_, err := io.WriteString(c, announceReq("HTTP/1.1", "", 7100+i, "Host: x\r\nConnection: close\r\n"))
		require.NoError(t, err)
		br := bufio.NewReader(c)
		res := readAnswers(t, br, 1)[0]
		assert.Equal(t, 200, res.StatusCode)
		assert.True(t, res.Close)
		_, err = br.ReadByte()
		assert.ErrorIs(t, err, io.EOF, "connection %d: a clean close", i)
		_ = c.Close()
	}
	require.Eventually(t, func() bool { return s.idleWorkers.Load() >= 1 }, 5*time.Second, time.Millisecond,
		"a worker waits for the next connection")
	assert.LessOrEqual(t, s.idleWorkers.Load(), int32(maxIdleWorkers))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx))
	require.NoError(t, <-done)
	require.Eventually(t, func() bool { return s.idleWorkers.Load() == 0 }, 5*time.Second, time.Millisecond,
		"Shutdown lets the idle workers go")
}
