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
// pseudo-random function of the client's address (not its port) and a time window. It is safe
// for concurrent use; each caller brings its own scratch block, so that nothing is allocated.
//
// The port is left out on purpose: libtorrent keeps one cache of connection IDs per tracker for
// the whole process and sends an ID from whichever of its sockets announces next, and a NAT may
// rebind a client's source port within an ID's life. An ID still proves that its holder
// receives datagrams at the address, which is what the amplification rules rest on.
type connIDs struct {
	block cipher.Block
}

// idScratch is the 32-byte message (and the MAC's working space) of one computation: the
// address block, then the window block.
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

// The MAC is AES-128 as a CBC-MAC over one fixed-length, two-block message, which makes it a
// PRF: block one is the address as 16 bytes (IPv4 as IPv4-mapped IPv6), block two the window
// and zero padding. The ID is the first 8 bytes of the tag. Block one's encryption does not
// depend on the window, so a check computes it once for both windows.

// head encrypts block one, the address, into s[:16].
func (c *connIDs) head(s *idScratch, addr netip.Addr) {
	s16 := (*[16]byte)(s[:16])
	*s16 = addr.Unmap().As16()
	c.block.Encrypt(s[:16], s[:16])
}

// tail finishes the MAC for window w after head: it returns the ID and leaves s[:16] as head
// left it, so that it can be called again for another window.
func (c *connIDs) tail(s *idScratch, w int64) uint64 {
	binary.BigEndian.PutUint64(s[16:24], uint64(w))
	clear(s[24:])
	for i := 0; i < 16; i++ {
		s[16+i] ^= s[i]
	}
	c.block.Encrypt(s[16:], s[16:])
	return binary.BigEndian.Uint64(s[16:24])
}

// issue returns the connection ID of addr's address at now.
func (c *connIDs) issue(s *idScratch, addr netip.AddrPort, now time.Time) uint64 {
	c.head(s, addr.Addr())
	return c.tail(s, window(now))
}

// valid reports whether id was issued to addr's address, from any port, in now's window or the
// one before, in constant time.
func (c *connIDs) valid(s *idScratch, addr netip.AddrPort, id uint64, now time.Time) bool {
	w := window(now)
	c.head(s, addr.Addr())
	cur := c.tail(s, w) ^ id
	prev := c.tail(s, w-1) ^ id
	return isZero(cur)|isZero(prev) == 1
}

// isZero returns 1 when x is 0 and 0 otherwise, without branching on x.
func isZero(x uint64) uint64 { return ((x | -x) >> 63) ^ 1 }
