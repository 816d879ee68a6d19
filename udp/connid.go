package udp

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// idWindow is the coarse time a connection ID is bound to. An ID is accepted in the window it
// was issued in and the next one.
const idWindow = time.Minute

// connIDs issues and checks connection IDs without keeping state per client: an ID is a keyed
// pseudo-random function of the client's address, port and time window. It is safe for
// concurrent use; each caller brings its own scratch block, so that nothing is allocated.
type connIDs struct {
	block cipher.Block
}

// idScratch is the 32-byte message (and the MAC's working space) of one computation.
type idScratch [32]byte

func newConnIDs(key []byte) (*connIDs, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("udp: connection ID key: %w", err)
	}
	return &connIDs{block: block}, nil
}

// window returns the number of whole windows since the Unix epoch at t.
func window(t time.Time) int64 { return t.Unix() / int64(idWindow/time.Second) }

// sum is AES-128 as a CBC-MAC over one fixed-length message, which makes it a PRF: block one is
// the address as 16 bytes (IPv4 as IPv4-mapped IPv6), block two the port, the window and zero
// padding. The ID is the first 8 bytes of the tag.
func (c *connIDs) sum(s *idScratch, addr netip.AddrPort, w int64) uint64 {
	ip := addr.Addr().Unmap().As16()
	copy(s[:16], ip[:])
	binary.BigEndian.PutUint16(s[16:18], addr.Port())
	binary.BigEndian.PutUint64(s[18:26], uint64(w))
	clear(s[26:])
	c.block.Encrypt(s[:16], s[:16])
	for i := 0; i < 16; i++ {
		s[16+i] ^= s[i]
	}
	c.block.Encrypt(s[16:], s[16:])
	return binary.BigEndian.Uint64(s[16:24])
}

// issue returns the connection ID of addr at now.
func (c *connIDs) issue(s *idScratch, addr netip.AddrPort, now time.Time) uint64 {
	return c.sum(s, addr, window(now))
}

// valid reports whether id was issued to addr in now's window or the one before, in constant
// time.
func (c *connIDs) valid(s *idScratch, addr netip.AddrPort, id uint64, now time.Time) bool {
	w := window(now)
	cur := c.sum(s, addr, w) ^ id
	prev := c.sum(s, addr, w-1) ^ id
	return isZero(cur)|isZero(prev) == 1
}

// isZero returns 1 when x is 0 and 0 otherwise, without branching on x.
func isZero(x uint64) uint64 { return ((x | -x) >> 63) ^ 1 }
