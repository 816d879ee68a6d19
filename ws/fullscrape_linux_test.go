package ws

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// readServerFrame reads one whole frame the server wrote to fd (blocking, 10 s at most) and
// returns its payload.
func readServerFrame(t *testing.T, fd int) []byte {
	t.Helper()
	require.NoError(t, syscall.SetNonblock(fd, false))
	tv := syscall.Timeval{Sec: 10}
	require.NoError(t, syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv))
	f := fdReader(fd)
	head := make([]byte, 2, 10)
	_, err := io.ReadFull(f, head)
	require.NoError(t, err)
	size := int(head[1] & 0x7f)
	switch size {
	case 126:
		_, err = io.ReadFull(f, head[2:4])
		size = int(binary.BigEndian.Uint16(head[2:4]))
	case 127:
		_, err = io.ReadFull(f, head[2:10])
		size = int(binary.BigEndian.Uint64(head[2:10]))
	}
	require.NoError(t, err)
	payload := make([]byte, size)
	_, err = io.ReadFull(f, payload)
	require.NoError(t, err)
	return payload
}

// fdReader reads a descriptor with read(2) (an *os.File would close it when collected).
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	n, err := syscall.Read(int(fd), p)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// TestFullScrapeBound: at most maxFullScrapes sockets have a full scrape's answer in flight; the
// next one is refused until they have taken theirs, then answered.
func TestFullScrapeBound(t *testing.T) {
	s, tkr := memoryServer(t, func(cfg *config.Config) {
		cfg.FullScrapeEnabled = true
		cfg.FullScrapeInterval = config.Duration{Duration: time.Hour}
	})
	// Enough torrents that an answer (about 400 KB) is more than a socket pair holds.
	const torrents = 4000
	addr := netip.MustParseAddr("127.0.0.1")
	for i := range torrents {
		var ih models.InfoHash
		binary.BigEndian.PutUint32(ih[:], uint32(i))
		a := models.Announce{InfoHash: ih, PeerID: models.PeerID{1}, Endpoint: netip.AddrPortFrom(addr, 6881),
			Remote: addr, Event: models.Started, Left: 1, NumWant: 0}
		require.NoError(t, tkr.HandleAnnounce(context.Background(), &a, discard{}))
	}
	scrape := func(c *conn) {
		sc := s.getScratch()
		s.handle(c, []byte(`{"action":"scrape"}`), sc)
		sc.flushAll()
		sc.release()
	}
	checkAnswer := func(payload []byte) {
		var m struct {
			Files map[string]any `json:"files"`
		}
		require.NoError(t, json.Unmarshal(payload, &m), "%.200s", payload)
		assert.Len(t, m.Files, torrents)
	}

	conns, clients := make([]*conn, maxFullScrapes+1), make([]int, maxFullScrapes+1)
	for i := range conns {
		conns[i], clients[i] = pairConn(t, s, i)
		t.Cleanup(func() { _ = syscall.Close(clients[i]) })
	}
	for _, c := range conns[:maxFullScrapes] {
		scrape(c)
	}
	// Their clients read nothing yet: the answers are in flight, and one more is refused.
	scrape(conns[maxFullScrapes])
	var failure map[string]any
	require.NoError(t, json.Unmarshal(readServerFrame(t, clients[maxFullScrapes]), &failure))
	assert.Equal(t, string(errFullScrapeBusy), failure["failure reason"])

	for _, fd := range clients[:maxFullScrapes] {
		checkAnswer(readServerFrame(t, fd))
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.full.inFlight.Load() != 0 {
		require.True(t, time.Now().Before(deadline), "%d full scrapes still in flight", s.full.inFlight.Load())
		time.Sleep(time.Millisecond)
	}
	scrape(conns[maxFullScrapes])
	checkAnswer(readServerFrame(t, clients[maxFullScrapes]))
}
