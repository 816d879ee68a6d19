package chihaya

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// startTest starts a tracker on cfg (validated first) and shuts it down when the test ends.
func startTest(t *testing.T, cfg *config.Config) *Chihaya {
	t.Helper()
	require.NoError(t, cfg.Validate())
	c, err := Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, c.Shutdown(ctx))
	})
	return c
}

// loopbackClient is an HTTP client whose connections come from the loopback address src.
func loopbackClient(src string) *nethttp.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return &nethttp.Client{Timeout: 5 * time.Second, Transport: &nethttp.Transport{DialContext: d.DialContext}}
}

func getBody(t *testing.T, c *nethttp.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, nethttp.StatusOK, resp.StatusCode, "%s", body)
	return string(body)
}

// udpAsk sends one request to the tracker's UDP socket from src and returns the answer's action
// and body after the transaction ID; it connects first, from the same socket.
func udpAsk(t *testing.T, tracker net.Addr, src string, build func(id uint64) []byte) (uint32, []byte) {
	t.Helper()
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, tracker.(*net.UDPAddr))
	require.NoError(t, err)
	defer conn.Close()
	buf := make([]byte, 1500)
	roundTrip := func(pkt []byte) []byte {
		_, err := conn.Write(pkt)
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
		n, err := conn.Read(buf)
		require.NoError(t, err)
		return buf[:n]
	}
	connect := binary.BigEndian.AppendUint64(nil, 0x41727101980)
	connect = binary.BigEndian.AppendUint64(connect, 1) // action 0, transaction 1
	resp := roundTrip(connect)
	require.Len(t, resp, 16)
	resp = roundTrip(build(binary.BigEndian.Uint64(resp[8:])))
	require.GreaterOrEqual(t, len(resp), 8)
	return binary.BigEndian.Uint32(resp), append([]byte(nil), resp[8:]...)
}

func udpAnnounce(ih, peerID string) func(uint64) []byte {
	return func(id uint64) []byte {
		b := binary.BigEndian.AppendUint64(nil, id)
		b = binary.BigEndian.AppendUint32(b, 1)
		b = binary.BigEndian.AppendUint32(b, 2)
		b = append(b, ih...)
		b = append(b, peerID...)
		b = binary.BigEndian.AppendUint64(b, 0)
		b = binary.BigEndian.AppendUint64(b, 100) // left: a leecher
		b = binary.BigEndian.AppendUint64(b, 0)
		b = binary.BigEndian.AppendUint32(b, 2) // started
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
		return binary.BigEndian.AppendUint16(b, 7000)
	}
}

func udpScrape(ih string) func(uint64) []byte {
	return func(id uint64) []byte {
		b := binary.BigEndian.AppendUint64(nil, id)
		b = binary.BigEndian.AppendUint32(b, 2)
		b = binary.BigEndian.AppendUint32(b, 3)
		return append(b, ih...)
	}
}

// TestRateLimitPerAddress floods the tracker from 127.0.0.1 over HTTP and UDP (one budget for
// both) while 127.0.0.2 is served: the flooder gets bencoded failures with intervals and UDP
// error packets past its burst, what was refused never reached the driver, and the refusals
// are counted.
func TestRateLimitPerAddress(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.RateLimit.AnnounceRate, cfg.RateLimit.AnnounceBurst = 0.01, 5
	cfg.RateLimit.ScrapeRate, cfg.RateLimit.ScrapeBurst = 0.01, 2
	c := startTest(t, cfg)
	base := "http://" + c.Addr().String()
	flooder, other := loopbackClient("127.0.0.1"), loopbackClient("127.0.0.2")
	const ih = "rate-limited-torrent"
	announce := func(peer string) string {
		return base + "/announce?info_hash=" + url.QueryEscape(ih) + "&peer_id=" + url.QueryEscape(peer) +
			"&port=7000&uploaded=0&downloaded=0&left=100&event=started"
	}
	limited := "too many requests from your address"

	ok, refused := 0, 0
	for i := 0; i < 20; i++ {
		body := getBody(t, flooder, announce(fmt.Sprintf("-XX0001-flood-%06d", i)))
		if strings.Contains(body, limited) {
			refused++
			assert.Contains(t, body, "8:intervali", "a refusal carries the interval")
			assert.Contains(t, body, "12:min intervali", "and the min interval")
		} else {
			require.Contains(t, body, "8:completei", body)
			ok++
		}
	}
	assert.Equal(t, 5, ok, "the burst goes through")
	assert.Equal(t, 15, refused)

	// Another address is served, over HTTP and UDP.
	assert.Contains(t, getBody(t, other, announce("-XX0001-other-000001")), "8:completei")
	action, body := udpAsk(t, c.UDPAddr(), "127.0.0.2", udpAnnounce(ih, "-XX0001-other-000002"))
	assert.Equal(t, uint32(1), action, "127.0.0.2's UDP announce: %q", body)
	// The flooder's budget is spent over UDP too.
	action, body = udpAsk(t, c.UDPAddr(), "127.0.0.1", udpAnnounce(ih, "-XX0001-flood-udp-01"))
	assert.Equal(t, uint32(3), action)
	assert.Contains(t, string(body), limited)

	// Only what was let through reached the swarm: 5 of the flooder's, 2 of the other's.
	scrape := base + "/scrape?info_hash=" + url.QueryEscape(ih)
	assert.Contains(t, getBody(t, other, scrape), "10:incompletei7e")
	// Scrapes have their own budget: 127.0.0.2 has one scrape left, then is refused.
	assert.Contains(t, getBody(t, other, scrape), "10:incompletei7e")
	assert.Contains(t, getBody(t, other, scrape), limited)
	action, body = udpAsk(t, c.UDPAddr(), "127.0.0.2", udpScrape(ih))
	assert.Equal(t, uint32(3), action)
	assert.Contains(t, string(body), limited)
	action, _ = udpAsk(t, c.UDPAddr(), "127.0.0.1", udpScrape(ih))
	assert.Equal(t, uint32(2), action, "the flooder's scrapes were not spent by its announces")

	metrics := getBody(t, other, base+"/metrics")
	assert.Regexp(t, regexp.MustCompile(`(?m)^chihaya_ratelimit_limited_total\{action="announce"\} 16$`), metrics)
	assert.Regexp(t, regexp.MustCompile(`(?m)^chihaya_ratelimit_limited_total\{action="scrape"\} 2$`), metrics)
}

// TestMaxTorrents fills the memory driver to its max_torrents with announces of random info
// hashes: the next new torrent is refused over HTTP and UDP, while the torrents already there
// go on taking peers.
func TestMaxTorrents(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.Tracker.Params = []byte(`{"max_torrents": 3}`)
	c := startTest(t, cfg)
	base := "http://" + c.Addr().String()
	client := loopbackClient("127.0.0.1")
	announce := func(ih, peer string) string {
		return getBody(t, client, base+"/announce?info_hash="+url.QueryEscape(ih)+"&peer_id="+url.QueryEscape(peer)+
			"&port=7000&uploaded=0&downloaded=0&left=100")
	}
	full := "tracker full: no new torrents"
	for i := 0; i < 3; i++ {
		assert.Contains(t, announce(fmt.Sprintf("torrent-%012d", i), "-XX0001-peer-0000001"), "8:completei")
	}
	body := announce("torrent-number-four!", "-XX0001-peer-0000001")
	assert.Contains(t, body, full)
	assert.Contains(t, body, "12:min intervali")
	action, pkt := udpAsk(t, c.UDPAddr(), "127.0.0.1", udpAnnounce("torrent-number-five!", "-XX0001-peer-0000002"))
	assert.Equal(t, uint32(3), action)
	assert.Contains(t, string(pkt), full)
	// The torrents already there take new peers, over both.
	assert.Contains(t, announce(fmt.Sprintf("torrent-%012d", 0), "-XX0001-peer-0000003"), "10:incompletei2e")
	action, _ = udpAsk(t, c.UDPAddr(), "127.0.0.1", udpAnnounce(fmt.Sprintf("torrent-%012d", 1), "-XX0001-peer-0000004"))
	assert.Equal(t, uint32(1), action)
	// The stats goroutine counts what the frontends record a few milliseconds later.
	want := regexp.MustCompile(`(?m)^chihaya_failures_total\{action="announce",kind="torrent_limit"\} 2$`)
	assert.Eventually(t, func() bool { return want.MatchString(getBody(t, client, base+"/metrics")) },
		5*time.Second, 20*time.Millisecond, "two torrent_limit failures counted")
}

// TestReloadToAllowListDropsUnlisted turns an allow list on with a reload: the swarms it does
// not name, which it cannot list as refused, are dropped, and the one it names stays.
func TestReloadToAllowListDropsUnlisted(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "chihaya.json")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`{"addr": "127.0.0.1:0"}`), 0o600))
	cfg, err := config.Load(cfgPath)
	require.NoError(t, err)
	c := startTest(t, cfg)
	c.reloadMu.Lock()
	c.configPath = cfgPath
	c.reloadMu.Unlock()
	base := "http://" + c.Addr().String()
	client := loopbackClient("127.0.0.1")
	kept, gone := "allow-listed-torrent", "not-listed-torrent!!"
	for _, ih := range []string{kept, gone} {
		body := getBody(t, client, base+"/announce?info_hash="+url.QueryEscape(ih)+"&peer_id=-XX0001-allow-000001&port=7000&uploaded=0&downloaded=0&left=10")
		require.Contains(t, body, "8:completei", body)
	}
	list := filepath.Join(dir, "allow.list")
	require.NoError(t, os.WriteFile(list, []byte(hex.EncodeToString([]byte(kept))+"\n"), 0o644))
	require.NoError(t, os.WriteFile(cfgPath, []byte(`{"addr": "127.0.0.1:0", "access_list_mode": "allow", "access_list_file": "`+list+`"}`), 0o600))
	_, err = c.ReloadOperator(context.Background())
	require.NoError(t, err)
	counts := func(ih string) int {
		sc, err := c.tkr.TorrentCounts(context.Background(), models.InfoHash([]byte(ih)))
		require.NoError(t, err)
		return sc.Torrents
	}
	assert.Equal(t, 1, counts(kept), "the listed torrent stays")
	assert.Equal(t, 0, counts(gone), "the unlisted torrent's swarm is dropped")
	assert.Contains(t, getBody(t, client, base+"/announce?info_hash="+url.QueryEscape(gone)+"&peer_id=-XX0001-allow-000002&port=7000&uploaded=0&downloaded=0&left=10"),
		"not authorized")
}
