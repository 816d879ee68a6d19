package udp

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

// testPasskey is the user of private-mode tests.
const testPasskey = "0123456789abcdef0123456789abcdef"

// testTorrent is registered in private-mode tests.
var testTorrent = models.InfoHash([]byte("private-torrent-hash"))

// fakeClock is a settable clock for connection IDs.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// recorder keeps what the server records.
type recorder struct {
	mu   sync.Mutex
	reqs []stats.Request
}

func (r *recorder) Record(req stats.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
}

func (r *recorder) all() []stats.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stats.Request(nil), r.reqs...)
}

// env is a server on a fresh memory swarm, its clock and a worker to answer with.
type env struct {
	s     *Server
	tkr   *tracker.Tracker
	clock *fakeClock
	w     *worker
	rec   *recorder
}

// newEnv builds an env from config.Default() changed by mod. In private mode it registers the
// user testPasskey and the torrent testTorrent.
func newEnv(t testing.TB, mod func(*config.Config)) *env {
	t.Helper()
	cfg := config.Default()
	if mod != nil {
		mod(&cfg)
	}
	if cfg.PrivateEnabled {
		cfg.SitePassword, cfg.ReportPassword = "site", "report"
	}
	require.NoError(t, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Close() })
	return newEnvOn(t, &cfg, pool)
}

func newEnvOn(t testing.TB, cfg *config.Config, pool tracker.Pool) *env {
	t.Helper()
	tkr, err := tracker.New(cfg, pool, noop.Conn{}, nil)
	require.NoError(t, err)
	rec := &recorder{}
	s, err := NewServer(cfg, tkr, WithRecorder(rec))
	require.NoError(t, err)
	clock := &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 30, 0, time.UTC)}
	s.now = clock.now
	if cfg.PrivateEnabled {
		ctx := context.Background()
		conn, err := pool.Get()
		require.NoError(t, err)
		_, ok := conn.(tracker.SiteStore)
		require.NoError(t, conn.Close())
		if ok {
			require.NoError(t, tkr.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddUser,
				User: models.User{ID: 7, Passkey: testPasskey, CanLeech: true}}))
			require.NoError(t, tkr.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddTorrent,
				Torrent: models.Torrent{ID: 9, InfoHash: testTorrent}}))
		}
	}
	return &env{s: s, tkr: tkr, clock: clock, w: newWorker(s), rec: rec}
}

// do answers pkt from addr, as a reader would.
func (e *env) do(pkt []byte, from netip.AddrPort) []byte {
	return e.w.handle(pkt, from, false, nil)
}

// connID returns a connection ID valid for from now.
func (e *env) connID(from netip.AddrPort) uint64 {
	var s idScratch
	return e.s.ids.issue(&s, from, e.s.now())
}

var (
	v4Client  = netip.MustParseAddrPort("10.0.0.1:40000")
	v4Client2 = netip.MustParseAddrPort("10.0.0.2:40000")
	v6Client  = netip.MustParseAddrPort("[2001:db8::1]:40000")
	v6Client2 = netip.MustParseAddrPort("[2001:db8::2]:40000")
	// mappedClient is v4Client as a dual-stack socket reports it.
	mappedClient = netip.AddrPortFrom(netip.AddrFrom16(v4Client.Addr().As16()), v4Client.Port())
)

func connectPacket(txID uint32) []byte {
	b := binary.BigEndian.AppendUint64(nil, protocolID)
	b = binary.BigEndian.AppendUint32(b, actionConnect)
	return binary.BigEndian.AppendUint32(b, txID)
}

func headerPacket(connID uint64, action, txID uint32) []byte {
	b := binary.BigEndian.AppendUint64(nil, connID)
	b = binary.BigEndian.AppendUint32(b, action)
	return binary.BigEndian.AppendUint32(b, txID)
}

// ann is an announce request's fixed fields.
type ann struct {
	infoHash                 models.InfoHash
	peerID                   string
	downloaded, left, upload int64
	event                    uint32
	ip                       [4]byte
	key                      uint32
	numWant                  int32
	port                     uint16
}

func announcePacket(connID uint64, txID uint32, a ann, options ...byte) []byte {
	b := headerPacket(connID, actionAnnounce, txID)
	b = append(b, a.infoHash[:]...)
	var pid [20]byte
	copy(pid[:], a.peerID)
	b = append(b, pid[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(a.downloaded))
	b = binary.BigEndian.AppendUint64(b, uint64(a.left))
	b = binary.BigEndian.AppendUint64(b, uint64(a.upload))
	b = binary.BigEndian.AppendUint32(b, a.event)
	b = append(b, a.ip[:]...)
	b = binary.BigEndian.AppendUint32(b, a.key)
	b = binary.BigEndian.AppendUint32(b, uint32(a.numWant))
	b = binary.BigEndian.AppendUint16(b, a.port)
	return append(b, options...)
}

func scrapePacket(connID uint64, txID uint32, hashes ...models.InfoHash) []byte {
	b := headerPacket(connID, actionScrape, txID)
	for _, h := range hashes {
		b = append(b, h[:]...)
	}
	return b
}

// urlData encodes s as BEP 41 URLData options of at most 255 bytes each, then EndOfOptions.
func urlData(s string) []byte {
	var b []byte
	for len(s) > 0 {
		n := min(len(s), 255)
		b = append(append(b, optionURLData, byte(n)), s[:n]...)
		s = s[n:]
	}
	return append(b, optionEnd)
}

// announceResp is a decoded announce answer.
type announceResp struct {
	txID                        uint32
	interval, leechers, seeders uint32
	peers                       []netip.AddrPort
}

func decodeAnnounce(t testing.TB, b []byte, v6 bool) announceResp {
	t.Helper()
	require.GreaterOrEqual(t, len(b), announceHdrLen, "announce answer %x", b)
	require.Equal(t, actionAnnounce, binary.BigEndian.Uint32(b), "not an announce answer: %q", b)
	r := announceResp{
		txID:     binary.BigEndian.Uint32(b[4:]),
		interval: binary.BigEndian.Uint32(b[8:]),
		leechers: binary.BigEndian.Uint32(b[12:]),
		seeders:  binary.BigEndian.Uint32(b[16:]),
	}
	stride := 6
	if v6 {
		stride = 18
	}
	peers := b[announceHdrLen:]
	require.Zero(t, len(peers)%stride, "peers of %d bytes are not %d-byte entries", len(peers), stride)
	for ; len(peers) > 0; peers = peers[stride:] {
		addr, _ := netip.AddrFromSlice(peers[:stride-2])
		r.peers = append(r.peers, netip.AddrPortFrom(addr, binary.BigEndian.Uint16(peers[stride-2:])))
	}
	return r
}

// decodeError returns an error packet's transaction ID and message.
func decodeError(t testing.TB, b []byte) (uint32, string) {
	t.Helper()
	require.GreaterOrEqual(t, len(b), errorHdrLen, "error packet %x", b)
	require.Equal(t, actionError, binary.BigEndian.Uint32(b), "not an error packet: %q", b)
	return binary.BigEndian.Uint32(b[4:]), string(b[8:])
}

func hashOf(s string) models.InfoHash {
	var h models.InfoHash
	copy(h[:], s)
	return h
}
