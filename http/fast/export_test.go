package fast

import "net/netip"

// BenchConn is a connection without a socket, for the benchmarks of package fast_test, which
// run package http's Handler: Answer does with a head what the connection's loop does, but for
// the reading and the writing.
type BenchConn struct{ c *conn }

// NewBenchConn returns a connection of s from remote.
func NewBenchConn(s *Server, remote netip.AddrPort) *BenchConn {
	c := s.newConn()
	c.remote = remote
	return &BenchConn{c: c}
}

// SetRemote changes the connection's remote address.
func (b *BenchConn) SetRemote(remote netip.AddrPort) { b.c.remote = remote }

// Answer parses raw, has the Handler answer it, and returns the whole answer (head and body);
// it is valid until the next call.
func (b *BenchConn) Answer(raw []byte) ([]byte, Verdict) {
	c := b.c
	c.out = c.out[:0]
	if _, v := ParseHead(raw, MaxHeadBytes, c.s.cfg.RealIPHeader, &c.h); v != HeadOK {
		return nil, v
	}
	c.answer()
	return c.out, HeadOK
}
