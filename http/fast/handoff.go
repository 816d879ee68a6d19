package fast

import (
	"errors"
	"net"
	nethttp "net/http"
	"sync"
	"syscall"
	"time"

	"github.com/golang/glog"
)

// The hand-over: the first request the fast path does not serve (handoff) gives its
// connection to net/http for the rest of its life. The bytes already read are replayed to it
// first (replayConn), through a listener fed by a channel (handoffListener) that Serve has
// net/http serve; the connection stays counted in the budget until net/http closes it
// (trackedConn), and net/http's ConnState tells the budget when it is idle (connState).

// handoff gives the connection, with what was read of it and not answered, to net/http.
func (c *conn) handoff() {
	nc, err := c.netConn()
	if err != nil {
		glog.Errorf("http: hand %s over to net/http: %v", c.remote, err)
		return
	}
	// Deadlines are net/http's to set from now on; it sets them per request.
	_ = nc.SetDeadline(time.Time{})
	c.handed = true
	var hc net.Conn = &replayConn{Conn: nc, prefix: append([]byte(nil), c.in[c.r:c.w]...), n: &c.s.counters}
	if c.s.cfg.AddHost {
		hc = newHostlessConn(hc)
	}
	tc := &trackedConn{Conn: hc, s: c.s}
	tc.ent.owner = tc
	c.s.mu.Lock()
	c.conn = nil
	ok := c.s.table.replace(&c.ent, &tc.ent)
	c.s.mu.Unlock()
	if !ok {
		_ = nc.Close() // shed meanwhile
		return
	}
	c.hand.deliver(tc)
}

// replayConn is a connection whose first bytes were read already: Read returns them first.
// It counts the bytes it reads and writes in n (the replayed ones were counted when read).
type replayConn struct {
	net.Conn
	prefix []byte
	n      *counters
}

// Read returns the replayed bytes, then the connection's.
func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil // let go of the copy: a WebSocket lives on
		}
		return n, nil
	}
	n, err := c.Conn.Read(p)
	c.n.bytesRead.Add(uint64(max(n, 0)))
	return n, err
}

// Write writes p to the connection.
func (c *replayConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.bytesWritten.Add(uint64(max(n, 0)))
	return n, err
}

// errNoDescriptor is the answer of SyscallConn and TakeDescriptor for a connection that is
// not a plain socket.
var errNoDescriptor = errors.New("fast: the connection has no descriptor of its own")

// SyscallConn gives the socket's descriptor once the replayed bytes are read (reads and writes
// through it are not counted).
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok && len(c.prefix) == 0 {
		return sc.SyscallConn()
	}
	return nil, errNoDescriptor
}

// CloseWrite shuts down the writing side when the connection can, as a *net.TCPConn does.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// handoffListener is the listener net/http serves: it accepts the connections the fast path
// hands over.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept returns the next connection handed over, or net.ErrClosed once closed.
func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; connections handed over afterwards are closed.
func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is the address of the real listener.
func (l *handoffListener) Addr() net.Addr { return l.addr }

func (l *handoffListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

// trackedConn is a connection handed over to net/http, counted in the budget until net/http
// closes it. net/http's ConnState tells it when it is idle.
type trackedConn struct {
	net.Conn
	s    *Server
	ent  connEntry
	once sync.Once
}

// shed closes the connection under net/http, which then closes it through Close. It is called
// with Server.mu held.
func (tc *trackedConn) shed() { _ = tc.Conn.Close() }

// Close closes the connection and uncounts it.
func (tc *trackedConn) Close() error {
	tc.once.Do(func() {
		tc.s.mu.Lock()
		tc.s.table.remove(&tc.ent)
		tc.s.mu.Unlock()
	})
	return tc.Conn.Close()
}

// CloseWrite shuts down the writing side when the connection can, as a *net.TCPConn does.
func (tc *trackedConn) CloseWrite() error {
	if cw, ok := tc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return tc.Conn.Close()
}

// connState follows net/http's connections through their keep-alive waits, and counts one
// closed (for the stats report) when net/http is done with it.
func (s *Server) connState(nc net.Conn, st nethttp.ConnState) {
	if st == nethttp.StateClosed || st == nethttp.StateHijacked {
		s.counters.closing()
	}
	tc, ok := nc.(*trackedConn)
	if !ok {
		return
	}
	switch st {
	case nethttp.StateIdle:
		s.mu.Lock()
		ok = s.table.wait(&tc.ent, tierIdle)
		s.mu.Unlock()
	case nethttp.StateActive:
		ok = tc.ent.active()
	}
	if !ok {
		_ = tc.Conn.Close()
	}
}
