//go:build !linux

package http

import (
	"errors"
	"net"
	"os"
)

// Elsewhere than on Linux every connection is a net.Conn from the listener's Accept.

func rawListener(net.Listener, int) (*os.File, bool) { return nil, false }

func (s *Server) rawAcceptLoop(*os.File, bool, *handoffListener) error {
	return errors.New("http: raw accept is Linux only")
}

func (c *fastConn) rawRead([]byte) (int, bool, error) { return 0, false, errNotPollable }

func (c *fastConn) rawWrite([]byte, bool) (int, error) { return 0, errNotPollable }

func (c *fastConn) rawClose() {}

func (c *fastConn) pollable() bool { return false }

// netConn returns the connection as a net.Conn.
func (c *fastConn) netConn() (net.Conn, error) {
	if nc, ok := c.conn.(net.Conn); ok {
		return nc, nil
	}
	return nil, errNotPollable
}
