package ws

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// poller watches the server's plain TCP sockets with an epoll instance of its own, so that no
// goroutine waits on an idle socket, and Go's netpoller keeps nothing for it either: the
// socket's descriptor is taken from the HTTP frontend's connection after the handshake
// (descriptorTaker), and read and written with plain system calls. The epoll descriptor itself
// is in Go's netpoller: the poller's goroutine parks there while no socket is ready, and holds
// no thread.
//
// Each socket is registered once, edge-triggered. When it turns readable the poller queues it
// for its reader goroutines (dispatch), one of which reads it (conn.readable) until it has read
// less than it had room for (all there was); if the socket turns readable again meanwhile, the
// poller tells that reader to read once more rather than queuing it again, so that one
// goroutine at a time reads a socket and a wakeup costs no system call to arm the socket
// again. The readers are a pool that grows while they are all busy with sockets queued (up to
// maxReaders; past that, and a full queue, a socket gets a goroutine of its own). The sockets
// of one epoll_wait are a batch: what their readers queue is written when the last of them is
// done, each socket once (batch.go). When a socket that could not take all its frames turns
// writable, the poller starts a goroutine that writes the rest (conn.resumeWrite). Events carry the socket's slot in the poller and the slot's generation,
// so that an event for a socket finished meanwhile finds nothing.
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

	// Readers: work holds the sockets found readable, for the reader goroutines that wait on
	// it (idle of them; workers in all, at most maxReaders; starting: started and not yet
	// running), which keep their grown stacks from one socket to the next where a goroutine
	// per wakeup started afresh each time.
	work     chan readWork
	idle     atomic.Int32
	workers  atomic.Int32
	starting atomic.Int32
	quit     chan struct{}
}

// readWork is a socket to read, of a poller batch.
type readWork struct {
	c *conn
	b *batch
}

// maxReaders bounds the reader goroutines, and 2*maxReaders the sockets queued for them. When
// they are all busy (their calls to the core may wait on a remote driver) and the queue is full,
// a socket gets a goroutine of its own, as each did before there were readers.
const maxReaders = 64

// descriptorTaker is a connection that hands its socket's descriptor over (the HTTP frontend's
// connections do, but those under TLS).
type descriptorTaker interface {
	TakeDescriptor() (int, error)
}

// watched is what the poller asks of a socket: data or a close from the client, and room to
// write, as they come.
const watched = syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET

// pollBatch is the most sockets one pass of the poller takes (one epoll_wait): the readers of
// those it finds readable are one batch, whose frames are written at its end (batch.go).
const pollBatch = 1024

// epollET is EPOLLET, which package syscall spells as a negative int.
const epollET = 1 << 31

const (
	readEvents  = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR
	writeEvents = syscall.EPOLLOUT | syscall.EPOLLHUP | syscall.EPOLLERR
)

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
	p := &poller{epfd: fd, file: f, rc: rc, events: make([]syscall.EpollEvent, pollBatch), done: make(chan struct{}),
		work: make(chan readWork, 2*maxReaders), quit: make(chan struct{})}
	p.waitFn = p.wait
	go p.run()
	return p, nil
}

// take takes nc's descriptor for the poller, when nc gives it.
func (p *poller) take(c *conn, nc net.Conn) bool {
	t, ok := nc.(descriptorTaker)
	if !ok {
		return false
	}
	fd, err := t.TakeDescriptor()
	if err != nil {
		return false
	}
	c.fd, c.polled = fd, true
	return true
}

// run dispatches ready sockets until close.
func (p *poller) run() {
	defer close(p.done)
	// Read returns when the descriptor closes; wait returns false whenever it has drained the
	// ready sockets, for Go's netpoller to wake it when there are more.
	_ = p.rc.Read(p.waitFn)
}

// wait takes the ready sockets without blocking and starts their readers and writers. It
// reports false when there are none left, to be called again once the epoll descriptor is
// readable.
func (p *poller) wait(fd uintptr) bool {
	for {
		n, err := syscall.EpollWait(int(fd), p.events, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return true // closed
		}
		b := newBatch()
		for i := range n {
			ev := &p.events[i]
			c := p.lookup(uint32(ev.Fd), uint32(ev.Pad))
			if c == nil {
				continue
			}
			var read, write bool
			c.mu.Lock()
			if ev.Events&readEvents != 0 && !c.dead {
				if read = !c.reading; read {
					c.reading = true
				} else {
					c.more = true
				}
			}
			if ev.Events&writeEvents != 0 {
				if write = c.wantWrite; write {
					c.wantWrite = false
				} else {
					c.canWrite = true
				}
			}
			c.mu.Unlock()
			if read {
				b.hold()
				p.dispatch(c, b)
			}
			if write {
				go c.resumeWrite()
			}
		}
		b.done()
		p.grow()
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

// add registers c's socket, not watched yet (start). It fails only if epoll does.
func (p *poller) add(c *conn) error {
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
	if err := p.ctl(c.fd, syscall.EPOLL_CTL_ADD, epollET, slot, c.gen); err != nil {
		p.forget(c)
		return err
	}
	return nil
}

// start has the poller watch c's socket, added and tracked. What the socket holds already is
// reported at once.
func (p *poller) start(c *conn) error {
	p.mu.Lock()
	p.slots[c.slot] = c
	p.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return net.ErrClosed
	}
	return p.ctl(c.fd, syscall.EPOLL_CTL_MOD, watched, c.slot, c.gen)
}

// forget frees c's slot; the socket is closed (which takes it out of the epoll set) or about to
// be.
func (p *poller) forget(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if int(c.slot) >= len(p.slots) || p.gens[c.slot] != c.gen || p.slots[c.slot] != nil && p.slots[c.slot] != c {
		return
	}
	p.slots[c.slot] = nil
	p.gens[c.slot]++
	p.free = append(p.free, c.slot)
}

// abandon gives up a socket added and never started: the poller forgets it, and its descriptor
// is closed.
func (p *poller) abandon(c *conn) {
	p.forget(c)
	_ = syscall.Close(c.fd)
	c.fd = -1
}

func (p *poller) ctl(fd, op int, events uint32, slot, gen uint32) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(slot), Pad: int32(gen)}
	if err := syscall.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("ws: epoll_ctl: %w", err)
	}
	return nil
}

// dispatch has c read, as one of batch b, by a reader goroutine.
func (p *poller) dispatch(c *conn, b *batch) {
	select {
	case p.work <- readWork{c, b}:
	default:
		go c.readable(b) // the queue is full
	}
}

// grow starts one more reader when sockets are queued, no reader is idle and none is starting
// already: at the end of a poller pass, and whenever a reader takes a socket. The readers that
// wait on the core (a remote driver) are thus joined by others one after the other, up to
// maxReaders, while the queue holds sockets.
func (p *poller) grow() {
	if len(p.work) == 0 || p.idle.Load() > 0 || p.starting.Load() > 0 {
		return
	}
	if n := p.workers.Add(1); n > maxReaders {
		p.workers.Add(-1)
		return
	}
	p.starting.Add(1)
	go p.reader()
}

// reader reads the sockets dispatched to it until the poller closes.
func (p *poller) reader() {
	p.starting.Add(-1)
	for {
		p.idle.Add(1)
		select {
		case w := <-p.work:
			p.idle.Add(-1)
			p.grow()
			w.c.readable(w.b)
		case <-p.quit:
			p.idle.Add(-1)
			p.workers.Add(-1)
			return
		}
	}
}

// close stops the poller and its readers; the sockets are the server's to close.
func (p *poller) close() {
	_ = p.file.Close()
	<-p.done
	close(p.quit)
	// Work queued and not taken (none once every socket is finished) is read on its own.
	for {
		select {
		case w := <-p.work:
			go w.c.readable(w.b)
		default:
			return
		}
	}
}

// errClosed is a read of a socket the client closed.
var errClosed = errors.New("ws: socket closed")

// readNow reads what the polled socket has without waiting: 0 and nil when it has nothing.
// Only the socket's reader calls it, and the descriptor stays open while it reads (closeFD).
func (c *conn) readNow(p []byte) (int, error) {
	n, err := syscall.Read(c.fd, p)
	for err == syscall.EINTR {
		n, err = syscall.Read(c.fd, p)
	}
	switch {
	case err == syscall.EAGAIN:
		return 0, nil
	case err != nil:
		return 0, err
	case n == 0:
		return 0, errClosed
	}
	return n, nil
}

// writeNow writes what the polled socket takes of p without waiting. Only the socket's writer
// calls it, and the descriptor stays open while it writes (closeFD).
func (c *conn) writeNow(p []byte) (int, error) {
	n, err := syscall.Write(c.fd, p)
	for err == syscall.EINTR {
		n, err = syscall.Write(c.fd, p)
	}
	switch {
	case err == syscall.EAGAIN:
		return 0, nil
	case err != nil:
		return 0, err
	}
	return n, nil
}

// shutdown ends both ways of the polled socket, which its reader then finds at its end. It is
// called with c.mu held.
func (c *conn) shutdown() {
	if c.fd >= 0 {
		_ = syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
	}
}

// closeFD closes the polled socket's descriptor once it is finished and neither read nor
// written, nor to be written (its close frame may wait for the end of a poller batch): a
// descriptor closed under a reader or a writer could be another socket's by the time they use
// it. It is called with c.mu held; the flush that ends a write calls it again (take).
func (c *conn) closeFD() {
	if c.fd >= 0 && c.finished.Load() && !c.reading && c.state == writeIdle {
		_ = syscall.Close(c.fd)
		c.fd = -1
	}
}
