//go:build !linux

package ws

import (
	"errors"
	"net"
)

// poller is Linux's only: elsewhere every socket is read on a goroutine of its own.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("ws: no poller on this system") }

func (p *poller) take(*conn, net.Conn) bool { return false }
func (p *poller) add(*conn) error           { return errors.ErrUnsupported }
func (p *poller) start(*conn) error         { return errors.ErrUnsupported }
func (p *poller) forget(*conn)              {}
func (p *poller) abandon(*conn)             {}
func (p *poller) close()                    {}

// A socket is never polled here: these are never called.
func (c *conn) readNow([]byte) (int, error)  { return 0, errors.ErrUnsupported }
func (c *conn) writeNow([]byte) (int, error) { return 0, errors.ErrUnsupported }
func (c *conn) shutdown()                    {}
func (c *conn) closeFD()                     {}
