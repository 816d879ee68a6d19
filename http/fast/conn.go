package fast

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	nethttp "net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/golang/glog"
)

// One connection on the fast path: one goroutine per connection reads request heads into a
// pooled buffer, parses them with ParseHead, has the Handler answer them, and writes the
// answers from a second pooled buffer, several pipelined answers in one write. A warm
// keep-alive connection allocates nothing per request.
//
// The first request the fast path does not serve (any other route, method or protocol, a body,
// a header it cannot read) hands the connection over to net/http for the rest of its life
// (handoff.go).

const (
	// inSize is the read buffer a connection starts with; a longer head grows it up to
	// MaxHeadBytes.
	inSize = 4 << 10
	// flushAt is how much pipelined output is gathered before it is written.
	flushAt = 32 << 10
	// maxPooledOut is the largest output buffer kept for reuse.
	maxPooledOut = 64 << 10
	// deadlineSlack is how stale a read or write deadline may be before it is set again: a
	// deadline is a timer update, and a second more or less of a timeout counts for nothing.
	deadlineSlack = time.Second
	// lingerTime bounds how long a refused connection is read after its answer, so that closing
	// it with unread input does not reset the answer away (net/http waits as long).
	lingerTime = 500 * time.Millisecond
)

// connIO is what the fast path needs of a connection: a net.Conn, or on Linux the *os.File of
// a socket accepted by the raw accept loop (raw_linux.go).
type connIO interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// conn is one connection on the fast path. It is used by its own goroutine only, except
// for Shutdown, which may wake or close it through conn (read and written under Server.mu) and
// cancel its ctx.
type conn struct {
	s *Server
	// conn is the connection, or nil while fd holds it instead: a socket from the raw accept
	// loop is read and written with plain non-blocking system calls until it would block, and
	// becomes a pollable conn then (raw_linux.go).
	conn   connIO
	fd     int
	remote netip.AddrPort
	// tls is the connection while its TLS handshake is to be done, else nil.
	tls *tls.Conn
	// sock is the socket under a TLS connection from the raw accept loop, else nil.
	sock *sock
	hand *handoffListener

	in   []byte // in[r:w] is read and not yet answered
	r, w int
	// headStart is when the first bytes of a partial head arrived, for read_header_timeout.
	headStart time.Time
	out       []byte
	// mark is where the answer being made starts in out.
	mark int
	// inline is set while the connection is served on an accepting goroutine; moved asks for
	// it to continue on its own. tracked is set once Shutdown knows of it.
	inline, moved, tracked bool
	// closing is set while answering a request after which the connection closes.
	closing bool
	// handed is set once net/http has the connection (it counts it closed then).
	handed bool
	http10 bool
	first  bool

	readDeadline, writeDeadline time.Time

	dateSec int64
	date    []byte

	h   Head
	req Request
	ctx *RequestContext
	// ent counts the connection in the budget (table.go).
	ent connEntry
}

func (s *Server) newConn() *conn {
	c := &conn{
		s:    s,
		in:   make([]byte, inSize),
		out:  make([]byte, 0, 1024),
		date: make([]byte, 0, len(nethttp.TimeFormat)),
		ctx:  NewRequestContext(s.base, s.cfg.RequestTimeout),
		fd:   -1,
	}
	c.ent.owner = c
	return c
}

// serveConn answers nc, which acceptLoop counted in s.accepting, until it closes, times out,
// is handed over or the server shuts down.
func (s *Server) serveConn(nc net.Conn, hand *handoffListener) {
	c := s.conns.Get().(*conn)
	c.conn, c.hand, c.first = nc, hand, true
	c.tls, _ = nc.(*tls.Conn)
	c.remote = remoteAddrPort(nc)
	s.serveAccepted(c)
}

// serveAccepted answers c, whose connection and remote address are set and which an accept
// loop counted in s.accepting.
func (s *Server) serveAccepted(c *conn) {
	c.tracked = s.track(c)
	s.accepting.Done() // tracked (and counted in connWG) or refused: Shutdown may go on
	if !c.tracked {
		c.closeConn()
		s.release(c)
		return
	}
	s.run(c)
}

// run serves c, whose connection and remote address are set.
//
// With c.inline set, run runs on an accepting goroutine (raw_linux.go) and must not
// wait: when the connection would block it continues on a goroutine of its own.
func (s *Server) run(c *conn) {
	if !c.tracked {
		if !s.track(c) {
			c.closeConn()
			s.release(c)
			return
		}
		c.tracked = true
	}
	defer func() {
		if v := recover(); v != nil {
			glog.Errorf("http: panic serving %s: %v", c.remote, v)
			c.ctx.End()
			c.req = Request{}
			c.out = c.out[:c.mark] // the answers before this request's still go out
			c.inline, c.moved = false, false
			c.refuse(nethttp.StatusInternalServerError)
		}
		if c.moved {
			c.inline, c.moved = false, false
			go s.resume(c)
			return
		}
		s.untrack(c)
	}()
	c.serve()
}

// resume continues a connection that would have blocked its accepting goroutine.
func (s *Server) resume(c *conn) {
	if c.fd >= 0 && !c.pollable() {
		s.untrack(c)
		return
	}
	s.run(c)
}

// serve is the connection's loop: answer what is buffered, write, read more.
func (c *conn) serve() {
	s := c.s
	if c.tls != nil {
		tc := c.tls
		c.tls = nil
		if !c.handshake(tc) {
			return
		}
	}
	if len(c.out) > 0 {
		// Resumed with output that did not fit in the socket: it goes first.
		if c.flush() != nil || c.closing {
			return
		}
	}
	for {
	answer:
		for c.r < c.w {
			n, v := ParseHead(c.in[c.r:c.w], MaxHeadBytes, s.cfg.RealIPHeader, &c.h)
			switch v {
			case HeadOK:
				setMax(&s.counters.maxHead, int64(n))
				c.answer()
				c.r += n
				c.headStart = time.Time{}
				if c.closing {
					if c.sock != nil {
						// The answer leaves with the close_notify alert (sock).
						c.sock.holdWrites()
					}
					_ = c.flush()
					return
				}
				if len(c.out) >= flushAt && c.flush() != nil {
					return
				}
				continue
			case HeadHandoff:
				if c.flush() == nil {
					c.handoff()
				}
				return
			case HeadTooLarge:
				if c.flush() == nil {
					c.refuse(nethttp.StatusRequestHeaderFieldsTooLarge)
				}
				return
			}
			break answer // HeadIncomplete
		}
		if len(c.out) > 0 && c.flush() != nil {
			return
		}
		if !c.read() {
			return
		}
	}
}

// read waits for more input under the right timeout; it reports false when the connection is
// done (closed, timed out, or the server is shutting down).
func (c *conn) read() bool {
	s := c.s
	if c.r == c.w {
		c.r, c.w = 0, 0
	} else if c.r > 0 {
		c.w = copy(c.in, c.in[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.in) {
		// A head longer than the buffer and within the limit (ParseHead would have decided
		// otherwise): grow once, to the limit.
		in := make([]byte, MaxHeadBytes+1)
		copy(in, c.in[:c.w])
		c.in = in
	}
	if c.fd >= 0 {
		// One non-blocking read; a connection with nothing to read becomes pollable.
		n, wouldBlock, err := c.rawRead(c.in[c.w:])
		if n > 0 {
			s.counters.bytesRead.Add(uint64(n))
			c.w += n
			return true
		}
		if !wouldBlock || err != nil || s.shutting.Load() {
			return false
		}
		if c.inline {
			c.moved = true
			return false
		}
		if !c.pollable() {
			return false
		}
	}
	if !c.wait() {
		return false
	}
	now := time.Now()
	var deadline time.Time
	switch {
	case c.w > 0:
		if c.headStart.IsZero() {
			c.headStart = now
		}
		if t := s.cfg.ReadHeaderTimeout; t > 0 {
			deadline = c.headStart.Add(t)
		}
	case c.first || s.cfg.IdleTimeout <= 0:
		if t := s.cfg.ReadHeaderTimeout; t > 0 {
			deadline = now.Add(t)
		}
	default:
		deadline = now.Add(s.cfg.IdleTimeout)
	}
	if deadline.IsZero() != c.readDeadline.IsZero() || deadline.Before(c.readDeadline) ||
		deadline.Sub(c.readDeadline) > deadlineSlack {
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return false
		}
		c.readDeadline = deadline
	}
	// Shutdown sets the flag, then a past deadline, and so does the budget when it sheds the
	// connection: whichever deadline was set last, a connection that missed the flag or the
	// state here is woken by theirs.
	if s.shutting.Load() || c.ent.shedNow() {
		return false
	}
	n, err := c.conn.Read(c.in[c.w:])
	c.w += n
	s.counters.bytesRead.Add(uint64(n))
	if !c.ent.active() {
		return false // shed meanwhile
	}
	if err != nil && n == 0 {
		if bool(glog.V(2)) && !errors.Is(err, net.ErrClosed) {
			glog.Infof("http: read from %s: %v", c.remote, err)
		}
		return false
	}
	return true
}

// answer has the Handler answer the parsed head c.h, and appends its answer to c.out.
func (c *conn) answer() {
	s := c.s
	start := time.Now()
	h := &c.h
	c.first = false
	c.mark = len(c.out)
	c.http10 = h.HTTP10
	c.closing = h.Close || !s.cfg.KeepAlive || s.shutting.Load()
	if sec := start.Unix(); sec != c.dateSec {
		c.dateSec = sec
		c.date = start.UTC().AppendFormat(c.date[:0], nethttp.TimeFormat)
	}
	c.req = Request{
		Context:   c.ctx,
		Route:     h.Route,
		Passkey:   h.Passkey,
		Query:     h.Query,
		UserAgent: h.UserAgent,
		RealIP:    h.RealIP,
		HasRealIP: h.HasRealIP,
		Remote:    c.remote,
		Start:     start,
	}
	c.ctx.Begin(start)
	out := s.h.ServeFast(&c.req, c.out)
	c.ctx.End()
	c.req = Request{}
	c.out = c.frame(out)
}

// Answer heads: status 200, the Content-Type and Cache-Control net/http answers with, and a
// Date.
const answerHead = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\nDate: "

// frame puts a 200 answer's head in front of the body the Handler appended at out[c.mark:].
func (c *conn) frame(out []byte) []byte {
	var buf [256]byte // more than any head below: it stays on the stack
	head := c.appendHead(buf[:0], len(out)-c.mark)
	n := len(out)
	out = append(out, head...) // room for the head; the body moves up into it
	copy(out[c.mark+len(head):], out[c.mark:n])
	copy(out[c.mark:], head)
	return out
}

// appendHead appends the head of a 200 answer whose body is n bytes long.
func (c *conn) appendHead(b []byte, n int) []byte {
	b = append(b, answerHead...)
	b = append(b, c.date...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	switch {
	case c.closing:
		b = append(b, "\r\nConnection: close\r\n\r\n"...)
	case c.http10:
		b = append(b, "\r\nConnection: keep-alive\r\n\r\n"...)
	default:
		b = append(b, "\r\n\r\n"...)
	}
	return b
}

// flush writes the output under write_timeout.
func (c *conn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	if c.fd >= 0 {
		n, err := c.rawWrite(c.out, c.closing)
		c.s.counters.bytesWritten.Add(uint64(max(n, 0)))
		if n == len(c.out) {
			c.out = c.out[:0]
			return nil
		}
		if err != nil {
			return err
		}
		// The socket's buffer is full: wait for room as a pollable connection.
		c.out = c.out[:copy(c.out, c.out[n:])]
		if c.inline {
			c.moved = true
			return errMoved
		}
		if !c.pollable() {
			return errNotPollable
		}
	}
	if t := c.s.cfg.WriteTimeout; t > 0 {
		d := time.Now().Add(t)
		if d.Sub(c.writeDeadline) > deadlineSlack {
			if err := c.conn.SetWriteDeadline(d); err != nil {
				return fmt.Errorf("http: set write deadline: %w", err)
			}
			c.writeDeadline = d
		}
	}
	n, err := c.conn.Write(c.out)
	c.s.counters.bytesWritten.Add(uint64(n))
	c.out = c.out[:0]
	if err != nil && glog.V(2) {
		glog.Infof("http: write to %s: %v", c.remote, err)
	}
	return err
}

// refuse answers status as net/http does when it refuses a request, and closes the connection
// after reading what the client still sends for a while, so that the answer is not reset away.
func (c *conn) refuse(status int) {
	text := strconv.Itoa(status) + " " + nethttp.StatusText(status)
	c.out = append(c.out, "HTTP/1.1 "+text+"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"+text...)
	if c.flush() != nil {
		return
	}
	nc, err := c.netConn()
	if err != nil {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = nc.SetReadDeadline(time.Now().Add(lingerTime))
		for range 64 {
			if _, err := nc.Read(c.in); err != nil {
				break
			}
		}
	}
}

// errMoved is returned when a connection stops on its accepting goroutine to wait on its own.
var errMoved = errors.New("http: connection continues on its own goroutine")

// errNotPollable is returned when a raw socket could not be made pollable.
var errNotPollable = errors.New("http: connection cannot be polled")

// closeConn closes the connection, whichever form it has.
func (c *conn) closeConn() {
	if c.fd >= 0 {
		c.rawClose()
	} else if c.conn != nil {
		_ = c.conn.Close()
	}
}

// track registers c for Shutdown and counts it in the budget; it reports false when the
// budget has no room for c (table.go). A connection accepted while Shutdown begins is still
// tracked and answered (its answer says Connection: close): closing it with its request unread
// would reset it. Shutdown waits for the accept loops and the connections they were starting
// before it waits for connWG, so that no connection is counted after that wait.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := c.remote.Addr()
	if !s.table.admit(&c.ent, keyOf(a), s.capped(a)) {
		return false
	}
	s.active[c] = struct{}{}
	s.connWG.Add(1)
	s.counters.opening()
	return true
}

// untrack closes c's connection, unless net/http has it now, and releases c.
func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.active, c)
	s.table.remove(&c.ent)
	s.mu.Unlock()
	if !c.handed {
		s.counters.closing() // else net/http counts it closed (Server.connState)
	}
	c.closeConn()
	s.release(c)
	s.connWG.Done()
}

// release resets c and puts it back in the pool.
func (s *Server) release(c *conn) {
	c.conn, c.hand, c.fd, c.tls, c.sock = nil, nil, -1, nil, nil
	c.inline, c.moved, c.tracked, c.handed = false, false, false, false
	c.r, c.w = 0, 0
	c.headStart, c.readDeadline, c.writeDeadline = time.Time{}, time.Time{}, time.Time{}
	c.h = Head{}
	if cap(c.out) > maxPooledOut {
		c.out = make([]byte, 0, 1024)
	}
	c.out = c.out[:0]
	if len(c.in) > inSize {
		c.in = make([]byte, inSize)
	}
	s.conns.Put(c)
}

// remoteAddrPort is the connection's remote address, unmapped and without a zone.
func remoteAddrPort(nc net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	switch a := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
		return ap
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}
