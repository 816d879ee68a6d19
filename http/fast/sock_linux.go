package fast

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// sock is the socket under a TLS connection accepted by the raw accept loop: a net.Conn for
// crypto/tls that reads and writes its descriptor with plain non-blocking system calls until a
// call would block, and becomes an *os.File on the runtime's poller then, with deadlines as
// usual (as a plain connection does, raw_linux.go). A handshake reads the client's hello and
// writes the server's flight that way, and waits on the poller only for the client's second
// flight; the connection never pays for what net.Conn does at accept (its local address,
// TCP_NODELAY and four keep-alive options, each a system call) before it has to wait.
//
// It also holds back a closing connection's writes (hold): its last answer and the TLS
// close_notify alert then leave in one send just before the close, not in two.
//
// The connection's goroutine reads and writes it; Close and the deadlines may come from
// another (Shutdown, the budget, net/http), so the state is under mu, which a raw system call
// holds for its duration (it does not block).
type sock struct {
	mu     sync.Mutex
	fd     int      // the descriptor while raw, else -1
	f      *os.File // the socket on the poller, once a call would have blocked
	remote netip.AddrPort
	closed bool
	// nodelay is set once TCP_NODELAY is.
	nodelay bool
	// rdl and wdl are the deadlines, applied to f when it is made.
	rdl, wdl time.Time
	// hold gathers writes in pending (up to maxHold bytes) until Close.
	hold    bool
	pending *[]byte
}

// maxHold is the most a closing connection's held writes may take: well under the send buffer
// of any TCP socket (tcp_wmem's minimum is 4 KiB), so that Close's one send never waits.
const maxHold = 4 << 10

// holdBufs are the buffers of held writes.
var holdBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxHold); return &b }}

// newSock returns the socket of descriptor fd, raw, from remote.
func newSock(fd int, remote netip.AddrPort) *sock { return &sock{fd: fd, remote: remote} }

// holdWrites holds the writes from now on until Close (see sock).
func (k *sock) holdWrites() {
	k.mu.Lock()
	k.hold = true
	k.mu.Unlock()
}

// Read reads once without blocking while the socket is raw, and waits on the poller once it is
// not, or once nothing was there to read.
func (k *sock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return 0, net.ErrClosed
	}
	f := k.f
	if f == nil {
		n, wouldBlock, err := readFD(k.fd, p)
		switch {
		case n > 0:
			k.mu.Unlock()
			return n, nil
		case err != nil:
			k.mu.Unlock()
			return 0, fmt.Errorf("read from %s: %w", k.remote, err)
		case !wouldBlock:
			k.mu.Unlock()
			return 0, io.EOF
		}
		if f, err = k.pollableLocked(); err != nil {
			k.mu.Unlock()
			return 0, err
		}
	}
	k.mu.Unlock()
	n, err := f.Read(p)
	return n, netError("read", err)
}

// Write writes p, without blocking while the socket is raw and takes all of it; what it does
// not take is written on the poller. Held writes are gathered for Close instead.
func (k *sock) Write(p []byte) (int, error) {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return 0, net.ErrClosed
	}
	if k.hold {
		if k.pending == nil {
			k.pending = holdBufs.Get().(*[]byte)
		}
		if len(*k.pending)+len(p) <= maxHold {
			*k.pending = append(*k.pending, p...)
			k.mu.Unlock()
			return len(p), nil
		}
		// Too much to hold: what is held goes first, then p, as usual.
		if n, err := k.writeHeldLocked(); err != nil {
			k.mu.Unlock()
			return n, err
		}
	}
	return k.writeUnlock(p)
}

// writeHeldLocked writes the held bytes and gives their buffer back; for Write, when held
// bytes and p exceed maxHold. It unlocks mu for the write and locks it again.
func (k *sock) writeHeldLocked() (int, error) {
	b := k.pending
	k.pending = nil
	if len(*b) == 0 {
		holdBufs.Put(b)
		return 0, nil
	}
	_, err := k.writeUnlock(*b)
	*b = (*b)[:0]
	holdBufs.Put(b)
	k.mu.Lock()
	if err == nil && k.closed {
		err = net.ErrClosed
	}
	return 0, err
}

// writeUnlock writes all of p, raw while the socket takes it and then on the poller, and
// unlocks mu (held by the caller) before it waits.
func (k *sock) writeUnlock(p []byte) (int, error) {
	total := 0
	if k.f == nil {
		for total < len(p) {
			n, err := sendmsg(k.fd, p[total:], 0)
			if n > 0 {
				total += n
			}
			if err == nil || errors.Is(err, syscall.EINTR) {
				continue
			}
			if !errors.Is(err, syscall.EAGAIN) {
				k.mu.Unlock()
				return total, fmt.Errorf("write to %s: %w", k.remote, err)
			}
			break
		}
		if total == len(p) {
			k.mu.Unlock()
			return total, nil
		}
		if _, err := k.pollableLocked(); err != nil {
			k.mu.Unlock()
			return total, err
		}
	}
	f := k.f
	if !k.nodelay {
		k.setNoDelay(f)
	}
	k.mu.Unlock()
	n, err := f.Write(p[total:])
	return total + n, netError("write", err)
}

// netError is err of an *os.File's op as a net.Conn gives it: crypto/tls and net/http take a
// timeout for a temporary error only in a net.Error that says so (a past deadline is how
// net/http ends its background read, and the budget and Shutdown wake a connection).
func netError(op string, err error) error {
	var pe *fs.PathError
	if err == nil || err == io.EOF || !errors.As(err, &pe) {
		return err
	}
	if errors.Is(pe.Err, os.ErrClosed) {
		return &net.OpError{Op: op, Net: "tcp", Err: net.ErrClosed}
	}
	return &net.OpError{Op: op, Net: "tcp", Err: pe.Err}
}

// setNoDelay sets TCP_NODELAY on the polled socket f, as net does, so that keep-alive and
// pipelined answers and what net/http writes are not held back by Nagle's algorithm. It is set
// at the first write on the poller: a connection that only answers once, with its close_notify
// (hold), needs none, and the handshake's flight leaves raw before anything is in flight.
func (k *sock) setNoDelay(f *os.File) {
	k.nodelay = true
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		})
	}
}

// pollableLocked puts the raw socket on the runtime's poller, with the deadlines set so far.
func (k *sock) pollableLocked() (*os.File, error) {
	f := os.NewFile(uintptr(k.fd), "")
	if f == nil {
		return nil, errNotPollable
	}
	k.f, k.fd = f, -1
	if !k.rdl.IsZero() {
		if err := f.SetReadDeadline(k.rdl); err != nil {
			return nil, fmt.Errorf("%s: %w", k.remote, err)
		}
	}
	if !k.wdl.IsZero() {
		if err := f.SetWriteDeadline(k.wdl); err != nil {
			return nil, fmt.Errorf("%s: %w", k.remote, err)
		}
	}
	return f, nil
}

// Close sends what is held, in one send that does not wait, and closes the socket.
func (k *sock) Close() error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return net.ErrClosed
	}
	k.closed = true
	b := k.pending
	k.pending, k.hold = nil, false
	f, fd := k.f, k.fd
	k.fd = -1
	k.mu.Unlock()
	if b != nil {
		if len(*b) > 0 {
			k.sendHeld(f, fd, *b)
		}
		*b = (*b)[:0]
		holdBufs.Put(b)
	}
	if f != nil {
		return f.Close()
	}
	if err := syscall.Close(fd); err != nil {
		return fmt.Errorf("close %s: %w", k.remote, err)
	}
	return nil
}

// sendHeld sends the held bytes p on a socket being closed, raw (its write deadline, which
// crypto/tls sets in the past after its close_notify alert, does not apply), with MSG_MORE:
// the close that follows sends them in one segment with the FIN. A socket that takes only part
// of them (it cannot, below maxHold) loses the rest, as a close would.
func (k *sock) sendHeld(f *os.File, fd int, p []byte) {
	send := func(fd uintptr) {
		for len(p) > 0 {
			n, err := sendmsg(int(fd), p, syscall.MSG_MORE)
			if n > 0 {
				p = p[n:]
			}
			if err != nil && !errors.Is(err, syscall.EINTR) {
				return
			}
		}
	}
	if f == nil {
		send(uintptr(fd))
		return
	}
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(send)
	}
}

// SetDeadline sets both deadlines.
func (k *sock) SetDeadline(t time.Time) error {
	if err := k.SetReadDeadline(t); err != nil {
		return err
	}
	return k.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline; a raw socket keeps it until it waits.
func (k *sock) SetReadDeadline(t time.Time) error {
	return k.setDeadline(&k.rdl, t, (*os.File).SetReadDeadline)
}

// SetWriteDeadline sets the write deadline; a raw socket keeps it until it waits.
func (k *sock) SetWriteDeadline(t time.Time) error {
	return k.setDeadline(&k.wdl, t, (*os.File).SetWriteDeadline)
}

// setDeadline keeps t in *d, which is rdl or wdl, and sets it on the polled socket with set.
func (k *sock) setDeadline(d *time.Time, t time.Time, set func(*os.File, time.Time) error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return net.ErrClosed
	}
	*d = t
	if k.f != nil {
		return set(k.f, t)
	}
	return nil
}

// RemoteAddr is the client's address.
func (k *sock) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(k.remote) }

// LocalAddr is the socket's own address (net/http asks for it when it is handed a connection).
func (k *sock) LocalAddr() net.Addr {
	var sa syscall.Sockaddr
	name := func(fd uintptr) { sa, _ = syscall.Getsockname(int(fd)) }
	k.mu.Lock()
	f, fd := k.f, k.fd
	if f == nil && fd >= 0 {
		name(uintptr(fd))
	}
	k.mu.Unlock()
	if f != nil {
		if rc, err := f.SyscallConn(); err == nil {
			_ = rc.Control(name)
		}
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	}
	return &net.TCPAddr{}
}

// readFD reads once from the non-blocking descriptor fd; wouldBlock reports that nothing was
// there yet. A closed connection is n == 0 and err == nil with wouldBlock false.
func readFD(fd int, p []byte) (n int, wouldBlock bool, err error) {
	for {
		r, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(r), false, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, true, nil
		}
		return 0, false, errno
	}
}
