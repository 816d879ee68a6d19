package udp_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawSocket is a UDP socket of a hand-written BEP 15 client: what it sends is exactly what the
// test writes.
type rawSocket struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newRawSocket(t *testing.T, network string, to netip.AddrPort) *rawSocket {
	t.Helper()
	conn, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(to))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &rawSocket{t: t, conn: conn, to: net.UDPAddrFromAddrPort(to)}
}

func (r *rawSocket) port() uint16 { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

// roundTrip sends pkt and returns the answer, failing the test after a few tries.
func (r *rawSocket) roundTrip(pkt []byte) []byte {
	r.t.Helper()
	buf := make([]byte, 2048)
	for try := 0; try < 3; try++ {
		_, err := r.conn.Write(pkt)
		require.NoError(r.t, err)
		require.NoError(r.t, r.conn.SetReadDeadline(time.Now().Add(2*time.Second)))
		n, err := r.conn.Read(buf)
		if err == nil {
			return buf[:n]
		}
	}
	r.t.Fatalf("no answer from %v", r.to)
	return nil
}

// connect returns a connection ID issued to this socket.
func (r *rawSocket) connect() uint64 {
	r.t.Helper()
	pkt := binary.BigEndian.AppendUint64(nil, 0x41727101980)
	pkt = binary.BigEndian.AppendUint32(pkt, 0)
	pkt = binary.BigEndian.AppendUint32(pkt, 7)
	resp := r.roundTrip(pkt)
	require.Len(r.t, resp, 16)
	require.Equal(r.t, uint32(0), binary.BigEndian.Uint32(resp))
	require.Equal(r.t, uint32(7), binary.BigEndian.Uint32(resp[4:]))
	return binary.BigEndian.Uint64(resp[8:])
}

// announce sends a leecher's (left > 0) or a seeder's announce with id and returns the action
// and the rest of the answer after the transaction ID.
func (r *rawSocket) announce(id uint64, ih, peerID string, left int64, event uint32) (uint32, []byte) {
	r.t.Helper()
	pkt := binary.BigEndian.AppendUint64(nil, id)
	pkt = binary.BigEndian.AppendUint32(pkt, 1)
	pkt = binary.BigEndian.AppendUint32(pkt, 8)
	pkt = append(pkt, ih...)
	pkt = append(pkt, peerID...)
	pkt = binary.BigEndian.AppendUint64(pkt, 0)
	pkt = binary.BigEndian.AppendUint64(pkt, uint64(left))
	pkt = binary.BigEndian.AppendUint64(pkt, 0)
	pkt = binary.BigEndian.AppendUint32(pkt, event)
	pkt = binary.BigEndian.AppendUint32(pkt, 0)       // IP: the source's
	pkt = binary.BigEndian.AppendUint32(pkt, 99)      // key
	pkt = binary.BigEndian.AppendUint32(pkt, 1<<31-1) // num_want: as many as there are
	pkt = binary.BigEndian.AppendUint16(pkt, r.port())
	resp := r.roundTrip(pkt)
	require.GreaterOrEqual(r.t, len(resp), 8)
	require.Equal(r.t, uint32(8), binary.BigEndian.Uint32(resp[4:]), "transaction ID")
	return binary.BigEndian.Uint32(resp), resp[8:]
}

// TestE2EConnectionIDAcrossPorts is libtorrent's case with a client written by hand: a
// connection ID obtained on one socket is sent from another socket of the same address, and
// the tracker takes it; from another address it does not.
func TestE2EConnectionIDAcrossPorts(t *testing.T) {
	for _, tc := range []struct {
		name, listen, network string
		peerLen               int
	}{
		{"ipv4", "127.0.0.1:0", "udp4", 6},
		{"ipv6", "[::1]:0", "udp6", 18},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.network == "udp6" && !ipv6Available() {
				t.Skip("no IPv6 loopback")
			}
			c := startTracker(t, tc.listen, nil)
			to := netip.MustParseAddrPort(c.UDPAddr().String())
			seeder := newRawSocket(t, tc.network, to)
			leecher := newRawSocket(t, tc.network, to)
			require.NotEqual(t, seeder.port(), leecher.port())
			ih := "ports-across-info-ha"

			id := seeder.connect()
			action, body := seeder.announce(id, ih, "-XX0001-seeder-00001", 0, 2)
			require.Equal(t, uint32(1), action, "seeder's announce: %q", body)

			// The leecher never connected: it uses the seeder's ID, as libtorrent does.
			action, body = leecher.announce(id, ih, "-XX0001-leecher-0001", 1000, 2)
			require.Equal(t, uint32(1), action, "leecher's announce with the seeder's ID: %q", body)
			require.Len(t, body, 12+tc.peerLen, "interval, leechers, seeders and one peer")
			assert.Equal(t, uint32(1), binary.BigEndian.Uint32(body[4:]), "leechers")
			assert.Equal(t, uint32(1), binary.BigEndian.Uint32(body[8:]), "seeders")
			peer := body[12:]
			assert.Equal(t, seeder.port(), binary.BigEndian.Uint16(peer[tc.peerLen-2:]), "the peer handed out is the seeder")

			// Another address of the loopback never gets the ID through.
			if tc.network == "udp4" {
				other, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, net.UDPAddrFromAddrPort(to))
				if err != nil {
					t.Skipf("no 127.0.0.2: %v", err)
				}
				t.Cleanup(func() { _ = other.Close() })
				r := &rawSocket{t: t, conn: other, to: net.UDPAddrFromAddrPort(to)}
				action, body = r.announce(id, ih, "-XX0001-intruder-001", 1000, 2)
				assert.Equal(t, uint32(3), action, "an ID from another address is refused")
				assert.Contains(t, string(body), "connection ID")
			}
		})
	}
}
