package fast

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/golang/glog"
)

// On Linux a TCP listener is accepted from with accept4 on its raw descriptor, and a new
// connection is served with plain non-blocking read, write and close calls until it would
// block. A client that opens a connection for one announce, as most do, then costs four system
// calls (accept4, read, write, close) instead of the nine or so of a net.Conn, which registers
// with the poller, asks for its local address, sets TCP_NODELAY and keep-alive, and deregisters.
// A connection that has to wait (a request that has not arrived yet, keep-alive, a full socket
// buffer) becomes an *os.File on the runtime's poller then, with deadlines as usual. A TLS
// listener is accepted from the same way: its sockets go to crypto/tls as a sock
// (sock_linux.go), which does the same under the handshake.

// rawListener returns a duplicate of ln's descriptor on the runtime's poller, when the raw
// accept loop can serve ln: a *net.TCPListener's own raw descriptor cannot wait for readability.
// Closing the duplicate as well as ln stops the listening socket.
//
// It also sets TCP_DEFER_ACCEPT on the socket, for about deferSeconds, so that a connection is
// accepted once its first bytes are there: the accepting goroutine can then answer it at once
// instead of handing it to a goroutine of its own to wait. A client that connects and sends
// nothing is never seen (the kernel drops it), which costs a silent client nothing but memory
// in the kernel.
func rawListener(ln net.Listener, deferSeconds int) (*os.File, bool) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, false
	}
	f, err := tl.File()
	if err != nil {
		return nil, false
	}
	// Not f.Fd(), which would put the shared socket in blocking mode.
	setDeferAccept(f, deferSeconds)
	return f, true
}

// setDeferAccept sets TCP_DEFER_ACCEPT on the listening socket of sc; a failure is logged at
// -v=1, the listener working as well without it.
func setDeferAccept(sc syscall.Conn, deferSeconds int) {
	if deferSeconds <= 0 {
		return
	}
	rc, err := sc.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, deferSeconds)
		})
		err = errors.Join(err, serr)
	}
	if err != nil && glog.V(1) {
		glog.Infof("http: set TCP_DEFER_ACCEPT: %v", err)
	}
}

// acceptorsPerProc is how many goroutines per processor take turns accepting on a listener.
// Each serves the connection it accepted inline, as long as it does not have to wait on the
// client, which spares a goroutine (and the growth of its stack) per connection; while one is
// held up by a slow driver (redis), the others go on accepting.
const acceptorsPerProc = 16

// rawAcceptLoop accepts connections on lf until it fails, speaking TLS with tlsCfg when it is
// set; it returns nil when Shutdown closed the listener.
func (s *Server) rawAcceptLoop(lf *os.File, hand *handoffListener, tlsCfg *tls.Config) error {
	rc, err := lf.SyscallConn()
	if err != nil {
		return fmt.Errorf("http: raw listener: %w", err)
	}
	n := acceptorsPerProc * runtime.GOMAXPROCS(0)
	errc := make(chan error, n)
	for range n {
		go func() { errc <- s.rawAccept(rc, hand, tlsCfg) }()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			_ = lf.Close() // stops the other acceptors
		}
	}
	return first
}

// rawAccept is one accepting goroutine. It serves a plain connection inline; a TLS connection,
// whose handshake waits for the client at least once, goes to a goroutine of its own (tls.go).
func (s *Server) rawAccept(rc syscall.RawConn, hand *handoffListener, tlsCfg *tls.Config) error {
	var (
		nfd    int
		remote netip.AddrPort
		aerr   error
		delay  time.Duration
	)
	accept := func(fd uintptr) bool {
		nfd, remote, aerr = accept4(int(fd))
		// Returning false waits on the poller until the listener is readable.
		return !errors.Is(aerr, syscall.EAGAIN)
	}
	for {
		if err := rc.Read(accept); err != nil {
			if s.shutting.Load() || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("http: accept: %w", err)
		}
		switch {
		case aerr == nil:
		case errors.Is(aerr, syscall.EINTR), errors.Is(aerr, syscall.ECONNABORTED):
			continue
		case errors.Is(aerr, syscall.EMFILE), errors.Is(aerr, syscall.ENFILE),
			errors.Is(aerr, syscall.ENOBUFS), errors.Is(aerr, syscall.ENOMEM):
			// Out of descriptors or memory: back off as net/http does, having shed a
			// waiting connection to free a descriptor. The listener stays readable, so
			// without the sleep this would spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.acceptFailed(aerr, delay)
			time.Sleep(delay)
			continue
		default:
			if s.shutting.Load() {
				return nil
			}
			return fmt.Errorf("http: accept: %w", aerr)
		}
		delay = 0
		c := s.conns.Get().(*conn)
		c.hand, c.first, c.remote = hand, true, remote
		if tlsCfg != nil {
			c.sock = newSock(nfd, remote)
			c.tls = tls.Server(c.sock, tlsCfg)
			c.conn = c.tls
			s.accepting.Add(1)
			s.dispatch(c)
			continue
		}
		c.fd, c.inline = nfd, true
		s.run(c)
	}
}

// The system calls of the raw path are made with syscall.RawSyscall: on non-blocking sockets
// they do not block, and the scheduler need not hand the processor to another thread for them.
// With syscall.Syscall, a call that the hypervisor makes last over 20µs (a close that sends the
// FIN) is taken for a blocking one, and the runtime's monitor wakes every 20µs to look.

// accept4 accepts a connection, non-blocking and close-on-exec, on the listening socket fd,
// and returns its remote address, unmapped, without allocating.
func accept4(fd int) (int, netip.AddrPort, error) {
	var rsa syscall.RawSockaddrAny
	n := uint32(syscall.SizeofSockaddrAny)
	for {
		r, _, errno := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)),
			uintptr(unsafe.Pointer(&n)), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return -1, netip.AddrPort{}, errno
		}
		return int(r), rawSockaddrAddrPort(&rsa), nil
	}
}

// rawSockaddrAddrPort is the address and port of an AF_INET or AF_INET6 socket address.
func rawSockaddrAddrPort(rsa *syscall.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		a := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		a := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&a.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// rawRead reads once from the raw socket; wouldBlock reports that nothing was there yet. A
// closed connection is n == 0 and err == nil with wouldBlock false.
func (c *conn) rawRead(p []byte) (n int, wouldBlock bool, err error) {
	if len(p) == 0 {
		return 0, false, errNotPollable
	}
	n, wouldBlock, err = readFD(c.fd, p)
	if err != nil {
		return 0, false, fmt.Errorf("http: read from %s: %w", c.remote, err)
	}
	return n, wouldBlock, nil
}

// rawWrite writes what the socket takes of p without blocking. When last is set the
// connection closes right after: MSG_MORE holds the answer back until the close, so that it
// leaves in one segment with the FIN, and the client acknowledges both at once.
func (c *conn) rawWrite(p []byte, last bool) (int, error) {
	flags := 0
	if last {
		flags = syscall.MSG_MORE
	}
	total := 0
	for total < len(p) {
		n, err := sendmsg(c.fd, p[total:], flags)
		if n > 0 {
			total += n
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN):
			return total, nil
		default:
			return total, fmt.Errorf("http: write to %s: %w", c.remote, err)
		}
	}
	return total, nil
}

func (c *conn) rawClose() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(c.fd), 0, 0)
	c.fd = -1
}

// pollable moves the raw socket onto the runtime's poller, as an *os.File, so that it can wait
// with deadlines. It sets TCP_NODELAY, as net does, so that pipelined answers are not held
// back by Nagle's algorithm.
func (c *conn) pollable() bool {
	if err := syscall.SetsockoptInt(c.fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		if glog.V(2) {
			glog.Infof("http: %s: set TCP_NODELAY: %v", c.remote, err)
		}
	}
	f := os.NewFile(uintptr(c.fd), "")
	c.s.mu.Lock()
	c.conn, c.fd = f, -1
	c.s.mu.Unlock()
	return true
}

// netConn returns the connection as a net.Conn, for net/http or for CloseWrite.
func (c *conn) netConn() (net.Conn, error) {
	if c.fd >= 0 && !c.pollable() {
		return nil, errNotPollable
	}
	switch x := c.conn.(type) {
	case net.Conn:
		return x, nil
	case *os.File:
		nc, err := net.FileConn(x)
		_ = x.Close()
		c.s.mu.Lock()
		if err != nil {
			c.conn = nil
		} else {
			c.conn = nc
		}
		c.s.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("http: %s: %w", c.remote, err)
		}
		return nc, nil
	}
	return nil, errNotPollable
}

// sendmsg is send(2) without the allocation of syscall.Sendto's address conversion.
func sendmsg(fd int, p []byte, flags int) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(ptr), uintptr(len(p)), uintptr(flags|syscall.MSG_NOSIGNAL), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}
