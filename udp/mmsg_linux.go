//go:build linux

package udp

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgIO moves up to len(slots) datagrams per system call with recvmmsg(2) and sendmmsg(2). Its
// headers, iovecs and socket addresses are allocated once and point at the reader's slots; it
// parses source addresses from the raw sockaddrs and answers to the same raw sockaddrs, so a
// batch allocates nothing. (golang.org/x/net's ipv4/ipv6 ReadBatch does the same system call
// but allocates a net.UDPAddr and its IP per datagram.)
type mmsgIO struct {
	rc    syscall.RawConn
	slots []slot
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	ohs   []unix.Mmsghdr
	oiovs []unix.Iovec

	// The results of the system calls made in recvF and sendF.
	n          int
	errno      syscall.Errno
	sent, nout int
	failed     int
	// recvF and sendF are bound once: a method value made per call would be allocated.
	recvF, sendF func(fd uintptr) bool
}

// newBatchIO returns batched I/O on conn over slots.
func newBatchIO(conn *net.UDPConn, slots []slot) (packetIO, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	n := len(slots)
	m := &mmsgIO{
		rc:    rc,
		slots: slots,
		hs:    make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		ohs:   make([]unix.Mmsghdr, n),
		oiovs: make([]unix.Iovec, n),
	}
	for i := range slots {
		m.iovs[i].Base = &slots[i].in[0]
		m.iovs[i].SetLen(len(slots[i].in))
		m.hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		m.hs[i].Hdr.Iov = &m.iovs[i]
		m.hs[i].Hdr.SetIovlen(1)
		m.ohs[i].Hdr.Iov = &m.oiovs[i]
		m.ohs[i].Hdr.SetIovlen(1)
	}
	m.recvF = m.recvmmsg
	m.sendF = m.sendmmsg
	return m, nil
}

func (m *mmsgIO) buffers() []slot { return m.slots }

func (m *mmsgIO) recv() (int, error) {
	for i := range m.hs {
		m.hs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		m.hs[i].Hdr.Flags = 0
		m.hs[i].Len = 0
	}
	m.n, m.errno = 0, 0
	if err := m.rc.Read(m.recvF); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", m.errno)
	}
	for i := 0; i < m.n; i++ {
		sl := &m.slots[i]
		sl.n = int(m.hs[i].Len)
		sl.from = addrPortOf(&m.names[i], m.hs[i].Hdr.Namelen)
	}
	return m.n, nil
}

// recvmmsg takes what has arrived, up to a batch, without waiting; it returns false to have
// the runtime's poller wait when nothing has.
func (m *mmsgIO) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hs[0])), uintptr(len(m.hs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			m.n = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			m.errno = e
			return true
		}
	}
}

func (m *mmsgIO) send(n int) (int, error) {
	k := 0
	for i := 0; i < n; i++ {
		sl := &m.slots[i]
		if len(sl.out) == 0 {
			continue
		}
		h := &m.ohs[k]
		h.Hdr.Name = m.hs[i].Hdr.Name
		h.Hdr.Namelen = m.hs[i].Hdr.Namelen
		h.Len = 0
		m.oiovs[k].Base = &sl.out[0]
		m.oiovs[k].SetLen(len(sl.out))
		k++
	}
	if k == 0 {
		return 0, nil
	}
	m.nout, m.sent, m.failed, m.errno = k, 0, 0, 0
	if err := m.rc.Write(m.sendF); err != nil {
		return m.nout - m.sent + m.failed, err
	}
	if m.failed > 0 {
		return m.failed, os.NewSyscallError("sendmmsg", m.errno)
	}
	return 0, nil
}

// sendmmsg sends what is left of the batch; a datagram the kernel refuses is counted and
// skipped. It returns false to wait until the socket can take more.
func (m *mmsgIO) sendmmsg(fd uintptr) bool {
	for m.sent < m.nout {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.ohs[m.sent])), uintptr(m.nout-m.sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false
		case e != 0 || n == 0:
			// sendmmsg reports an error only for the batch's first datagram.
			m.errno = e
			m.failed++
			m.sent++
		default:
			m.sent += int(n)
		}
	}
	return true
}

// addrPortOf returns the address of a raw sockaddr_in or sockaddr_in6, or the zero AddrPort.
func addrPortOf(sa *unix.RawSockaddrInet6, namelen uint32) netip.AddrPort {
	port := func(p *uint16) uint16 {
		b := (*[2]byte)(unsafe.Pointer(p))
		return uint16(b[0])<<8 | uint16(b[1])
	}
	switch {
	case sa.Family == unix.AF_INET6 && namelen >= unix.SizeofSockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port(&sa.Port))
	case sa.Family == unix.AF_INET && namelen >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port))
	}
	return netip.AddrPort{}
}
