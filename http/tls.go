package http

import (
	"crypto/tls"
	"net"
	"time"

	"github.com/golang/glog"
)

// TLSListener returns a listener whose connections speak TLS with cfg (see tlscert.Store's
// Config), for Serve: announces and scrapes on them are answered by the fast path, as on plain
// connections, and the rest is handed over to net/http decrypted. Serve completes each
// handshake on the connection's own goroutine, after the connection budget has admitted it,
// within http_read_header_timeout. Wrap it in HostlessListener, not the other way round.
func TLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	return &tlsListener{Listener: ln, cfg: cfg}
}

type tlsListener struct {
	net.Listener
	cfg *tls.Config
}

// Accept waits for the next connection and wraps it; the handshake happens on first use.
func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, l.cfg), nil
}

// handshake completes the TLS handshake of c, whose connection is a *tls.Conn, within
// http_read_header_timeout; it reports false when the connection is done.
func (c *fastConn) handshake(tc *tls.Conn) bool {
	s := c.s
	var deadline time.Time
	if s.headerTimeout > 0 {
		deadline = time.Now().Add(s.headerTimeout)
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
