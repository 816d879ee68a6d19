package ws

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// poller watches idle sockets for the server with an epoll instance of its own, so that no
// goroutine waits on an idle socket. The epoll descriptor is itself in Go's netpoller: the
// poller's goroutine parks there while no socket is readable, and holds no thread.
//
// Each socket is registered once, edge-triggered: when it turns readable the poller starts a
// goroutine that reads it (conn.readable) until it has read less than it had room for (all
// there was); if the socket turns readable again meanwhile, the poller tells that goroutine to
// read once more rather than starting another, so that one goroutine at a time reads a socket
// and a wakeup costs no system call to arm the socket again. Events carry the socket's slot in
// the poller and the slot's generation, so that an event for a socket finished meanwhile finds
// nothing.
type poller struct {
	epfd int
	file *os.File
	rc   syscall.RawConn

	mu    sync.Mutex
	slots []*conn
	gens  []uint32
	free  []uint32

	events []syscall.EpollEvent
	waitFn func(uintptr) bool
	done   chan struct{}
}

// watched is what the poller asks of a socket: data or a close from the client, as they come.
const watched = syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET

// epollET is EPOLLET, which package syscall spells as a negative int.
const epollET = 1 << 31

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("ws: epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("ws: epoll descriptor non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ws-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("ws: epoll descriptor: %w", err)
	}
	p := &poller{epfd: fd, file: f, rc: rc, events: make([]syscall.EpollEvent, 128), done: make(chan struct{})}
	p.waitFn = p.wait
	go p.run()
	return p, nil
}

// run dispatches readable sockets until close.
func (p *poller) run() {
	defer close(p.done)
	// Read returns when the descriptor closes; wait returns false whenever it has drained the
	// ready sockets, for Go's netpoller to wake it when there are more.
	_ = p.rc.Read(p.waitFn)
}

// wait takes the ready sockets without blocking and starts their readers. It reports false
// when there are none left, to be called again once the epoll descriptor is readable.
func (p *poller) wait(fd uintptr) bool {
	for {
		n, err := syscall.EpollWait(int(fd), p.events, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return true // closed
		}
		for i := range n {
			ev := &p.events[i]
			if c := p.lookup(uint32(ev.Fd), uint32(ev.Pad)); c != nil {
				c.mu.Lock()
				start := !c.dead && !c.reading
				if start {
					c.reading = true
				} else {
					c.more = true
				}
				c.mu.Unlock()
				if start {
					go c.readable()
				}
			}
		}
		if n < len(p.events) {
			return false
		}
	}
}

func (p *poller) lookup(slot, gen uint32) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if int(slot) < len(p.slots) && p.gens[slot] == gen {
		return p.slots[slot]
	}
	return nil
}

// add registers c's socket, not watched yet (start): it reports false when the poller cannot
// watch it, and the socket is to be read on a goroutine.
func (p *poller) add(c *conn) bool {
	p.mu.Lock()
	var slot uint32
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		slot = uint32(len(p.slots))
		p.slots = append(p.slots, nil)
		p.gens = append(p.gens, 0)
	}
	c.slot, c.gen = slot, p.gens[slot]
	p.mu.Unlock()
	// No event asked: nothing comes until start (an error or a hang-up, reported regardless,
	// finds no conn in the slot).
	if p.ctl(c, syscall.EPOLL_CTL_ADD, epollET) != nil {
		p.mu.Lock()
		p.gens[slot]++
		p.free = append(p.free, slot)
		p.mu.Unlock()
		return false
	}
	return true
}

// start has the poller watch c's socket, added and tracked. What the socket holds already is
// reported at once.
func (p *poller) start(c *conn) error {
	p.mu.Lock()
	p.slots[c.slot] = c
	p.mu.Unlock()
	return p.ctl(c, syscall.EPOLL_CTL_MOD, watched)
}

// forget frees c's slot; the socket is closed (which takes it out of the epoll set) or about to
// be.
func (p *poller) forget(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gens[c.slot] != c.gen {
		return
	}
	p.slots[c.slot] = nil
	p.gens[c.slot]++
	p.free = append(p.free, c.slot)
}

// ctlOp is an epoll_ctl on a socket's descriptor, through its RawConn, with its function bound
// once (a closure per call would be allocated).
type ctlOp struct {
	epfd int
	op   int
	ev   syscall.EpollEvent
	err  error
	fn   func(uintptr)
}

var ctlPool = sync.Pool{New: func() any {
	o := new(ctlOp)
	o.fn = func(fd uintptr) { o.err = syscall.EpollCtl(o.epfd, o.op, int(fd), &o.ev) }
	return o
}}

func (p *poller) ctl(c *conn, op int, events uint32) error {
	o := ctlPool.Get().(*ctlOp)
	o.epfd, o.op, o.err = p.epfd, op, nil
	o.ev = syscall.EpollEvent{Events: events, Fd: int32(c.slot), Pad: int32(c.gen)}
	err := c.rc.Control(o.fn)
	if err == nil {
		err = o.err
	}
	ctlPool.Put(o)
	if err != nil {
		return fmt.Errorf("ws: epoll_ctl: %w", err)
	}
	return nil
}

// close stops the poller; the sockets are the server's to close.
func (p *poller) close() {
	_ = p.file.Close()
	<-p.done
}

// rawIO is a read or a write on a descriptor through its RawConn, whose functions it binds
// once: a closure made per call would be allocated.
type rawIO struct {
	p       []byte
	n       int
	err     error
	readFn  func(uintptr) bool
	writeFn func(uintptr) bool
}

var rawPool = sync.Pool{New: func() any {
	r := new(rawIO)
	r.readFn = func(fd uintptr) bool {
		r.n, r.err = syscall.Read(int(fd), r.p)
		return true
	}
	r.writeFn = func(fd uintptr) bool {
		r.n, r.err = syscall.Write(int(fd), r.p)
		return true
	}
	return r
}}

// errClosed is a read of a socket the client closed.
var errClosed = errors.New("ws: socket closed")

// readNow reads what the socket has without waiting: 0 and nil when it has nothing.
func (c *conn) readNow(p []byte) (int, error) {
	r := rawPool.Get().(*rawIO)
	r.p = p
	err := c.rc.Read(r.readFn)
	n, rerr := r.n, r.err
	r.p, r.err = nil, nil
	rawPool.Put(r)
	switch {
	case err != nil:
		return 0, err
	case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
		return 0, nil
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, errClosed
	}
	return n, nil
}

// writeNow writes what the socket takes of p without waiting.
func (c *conn) writeNow(p []byte) (int, error) {
	r := rawPool.Get().(*rawIO)
	r.p = p
	err := c.rc.Write(r.writeFn)
	n, werr := r.n, r.err
	r.p, r.err = nil, nil
	rawPool.Put(r)
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN || werr == syscall.EINTR:
		return 0, nil
	case werr != nil:
		return 0, werr
	}
	return n, nil
}
