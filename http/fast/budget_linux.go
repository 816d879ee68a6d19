package fast

import (
	"fmt"
	"net"
	"syscall"
	"time"
)

// TakeDescriptor hands the socket over to a caller that reads and writes it itself from now on
// (the WebSocket tracker's poller): it returns a duplicate of the socket's descriptor, which the
// caller owns (non-blocking, close-on-exec) and closes, and closes the connection's own, so that
// nothing is kept for the socket in Go's netpoller. The connection stays counted in the budget
// until Close, which closes nothing more. It fails, leaving the connection as it was, when the
// connection under it has no descriptor to give (TLS, bytes still to replay).
func (tc *trackedConn) TakeDescriptor() (int, error) {
	sc, ok := tc.Conn.(syscall.Conn)
	if !ok {
		return -1, errNoDescriptor
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			dupErr = e
			return
		}
		fd = int(r)
	}); err != nil {
		return -1, fmt.Errorf("fast: take a descriptor: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("fast: take a descriptor: %w", dupErr)
	}
	tc.s.mu.Lock()
	inner := tc.Conn
	tc.Conn = takenConn{}
	tc.s.mu.Unlock()
	_ = inner.Close()
	return fd, nil
}

// takenConn is what a trackedConn holds once its socket is taken: none.
type takenConn struct{}

func (takenConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (takenConn) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (takenConn) Close() error                     { return nil }
func (takenConn) LocalAddr() net.Addr              { return takenAddr{} }
func (takenConn) RemoteAddr() net.Addr             { return takenAddr{} }
func (takenConn) SetDeadline(time.Time) error      { return net.ErrClosed }
func (takenConn) SetReadDeadline(time.Time) error  { return net.ErrClosed }
func (takenConn) SetWriteDeadline(time.Time) error { return net.ErrClosed }

// takenAddr is the address of a taken socket's connection: it has none any more.
type takenAddr struct{}

func (takenAddr) Network() string { return "tcp" }
func (takenAddr) String() string  { return "taken" }
