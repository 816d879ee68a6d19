package fast

import (
	"crypto/tls"
	"time"

	"github.com/golang/glog"
)

// TLS is the second way to feed the fast path (Server.ServeTLS): a TLS connection is served as
// a net.Conn, its handshake made by its own goroutine, once the budget has admitted it, within
// read_header_timeout. Reads and writes then go through crypto/tls; the head parser, the
// buffers, keep-alive, pipelining and the hand-over are the same as on plain TCP. On Linux the
// net.Conn under crypto/tls is a sock (sock_linux.go) from the raw accept loop.
//
// The goroutines that serve TLS connections are kept for the next one (dispatch) rather than
// started anew for each: a handshake grows a goroutine's stack several times over, and a kept
// goroutine has grown it already.

// maxIdleWorkers bounds the goroutines kept waiting for a TLS connection to serve.
const maxIdleWorkers = 64

// dispatch has an idle worker goroutine serve c, accepted and counted in s.accepting, or starts
// one.
func (s *Server) dispatch(c *conn) {
	select {
	case s.work <- c:
	default:
		go s.worker(c)
	}
}

// worker serves c, then the connections dispatch hands it, until more than maxIdleWorkers
// wait or Shutdown begins.
func (s *Server) worker(c *conn) {
	for {
		s.serveAccepted(c)
		if s.idleWorkers.Add(1) > maxIdleWorkers {
			s.idleWorkers.Add(-1)
			return
		}
		select {
		case c = <-s.work:
			s.idleWorkers.Add(-1)
		case <-s.stop:
			s.idleWorkers.Add(-1)
			return
		}
	}
}

// handshake completes the TLS handshake of c, whose connection is a *tls.Conn, within
// http_read_header_timeout; it reports false when the connection is done.
func (c *conn) handshake(tc *tls.Conn) bool {
	s := c.s
	var deadline time.Time
	if t := s.cfg.ReadHeaderTimeout; t > 0 {
		deadline = time.Now().Add(t)
	}
	if err := tc.SetDeadline(deadline); err != nil {
		return false
	}
	c.readDeadline = deadline
	// Shutdown and the budget wake a connection by a past read deadline: one set before the
	// deadline above was missed, so look again.
	if s.shutting.Load() || c.ent.shedNow() {
		return false
	}
	// Not HandshakeContext: it starts a goroutine per handshake to watch the context, and the
	// past read deadline of Shutdown and of the budget interrupts a handshake already.
	err := tc.Handshake()
	if err == nil {
		err = tc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		s.counters.tlsHandshakeErrors.Add(1)
		if glog.V(2) {
			glog.Infof("http: TLS handshake with %s: %v", c.remote, err)
		}
		return false
	}
	c.writeDeadline = time.Time{}
	return true
}
