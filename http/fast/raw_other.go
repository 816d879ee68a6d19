//go:build !linux

package fast

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
)

// Elsewhere than on Linux every connection is a net.Conn from the listener's Accept.

func rawListener(net.Listener, int) (*os.File, bool) { return nil, false }

func (s *Server) rawAcceptLoop(*os.File, *handoffListener, *tls.Config) error {
	return errors.New("http: raw accept is Linux only")
}

func (c *conn) rawRead([]byte) (int, bool, error) { return 0, false, errNotPollable }

func (c *conn) rawWrite([]byte, bool) (int, error) { return 0, errNotPollable }

func (c *conn) rawClose() {}

func (c *conn) pollable() bool { return false }

// netConn returns the connection as a net.Conn.
func (c *conn) netConn() (net.Conn, error) {
	if nc, ok := c.conn.(net.Conn); ok {
		return nc, nil
	}
	return nil, errNotPollable
}

// sock is Linux only: elsewhere a TLS connection is over the listener's net.Conn.
type sock struct{}

func (*sock) holdWrites() {}
