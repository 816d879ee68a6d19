package trackertest

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// Announce runs one announce on c and fails tb on an error.
func Announce(tb testing.TB, c tracker.Conn, ih models.InfoHash, u tracker.PeerUpdate, sel tracker.Selection) tracker.AnnounceResult {
	tb.Helper()
	return announce(tb, c, ih, u, sel)
}

// Scrape returns the counts of ih on c, failing tb on an error.
func Scrape(tb testing.TB, c tracker.Conn, ih models.InfoHash) models.TorrentStats {
	tb.Helper()
	return scrape(tb, c, ih)
}

// Handed returns the keys of the peers in res, failing on a peer listed in the wrong family.
func Handed(tb testing.TB, res *tracker.AnnounceResult) []models.PeerKey {
	tb.Helper()
	return handed(tb, res)
}

// KeySet turns keys into a set, failing on a peer handed out twice.
func KeySet(tb testing.TB, keys []models.PeerKey) map[models.PeerKey]bool {
	tb.Helper()
	return keySet(tb, keys)
}

// Observe lists the peers of ih (those a seeder is handed, with seeder) without changing them.
func Observe(tb testing.TB, c tracker.Conn, ih models.InfoHash, seeder bool) map[models.PeerKey]bool {
	tb.Helper()
	return observe(tb, c, ih, seeder)
}

// V4 returns peer n's IPv4 address and port (10.x.y.z).
func V4(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), uint16(1000+n%60000))
}

// V6 returns peer n's IPv6 address and port (in 2001:db8:ff00::/40).
func V6(n int) netip.AddrPort {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff}
	binary.BigEndian.PutUint32(a[12:], uint32(n))
	return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(2000+n%60000))
}

// PeerIDOf returns the ID of a handed-out peer: its ID field, or, from a driver that keeps no
// peer IDs (AnnounceResult.NoPeerIDs), PID(n) for an address that is V4(n) or V6(n) but for
// the port, and for any other address an ID made of the endpoint's bytes (unique per
// endpoint, and no PID's).
func PeerIDOf(p models.Peer) models.PeerID {
	if p.ID != (models.PeerID{}) {
		return p.ID
	}
	a := p.AddrPort.Addr().Unmap()
	switch {
	case a.Is4() && a.As4()[0] == 10:
		b := a.As4()
		return PID(int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
	case a.Is6():
		b := a.As16()
		if [5]byte(b[:5]) == [5]byte{0x20, 0x01, 0x0d, 0xb8, 0xff} {
			return PID(int(binary.BigEndian.Uint32(b[12:])))
		}
	}
	var id models.PeerID
	a16 := p.AddrPort.Addr().As16()
	copy(id[:16], a16[:])
	binary.BigEndian.PutUint16(id[16:], p.AddrPort.Port())
	id[18], id[19] = 0xff, 0xff
	return id
}

// Key returns peer n's key in family f.
func Key(n int, f models.Family) models.PeerKey { return models.PeerKey{ID: PID(n), Family: f} }

// Peer returns the update of peer n in family f at T0: a seeder or a leecher, created when
// missing, without counters.
func Peer(n int, f models.Family, seeder bool) tracker.PeerUpdate {
	ap := V4(n)
	if f == models.IPv6 {
		ap = V6(n)
	}
	return tracker.PeerUpdate{Key: Key(n, f), AddrPort: ap, Seeder: seeder, Create: true, Time: T0}
}

// All selects up to want peers of either family.
func All(want int) tracker.Selection { return tracker.Selection{Want: want, IPv4: true, IPv6: true} }
