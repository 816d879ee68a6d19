package http_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	nethttp "net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/anacrolix/torrent/tracker/shared"
	"github.com/anacrolix/torrent/types/infohash"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/tlscert/tlscerttest"
)

// httpsTracker is a whole tracker serving HTTPS (and no plain HTTP unless mod sets addr) with
// a certificate of a throwaway CA.
type httpsTracker struct {
	c        *chihaya.Chihaya
	announce *url.URL
	ca       *tlscerttest.CA
	dir      string
	certFile string
}

func startHTTPS(t *testing.T, addr string, mod func(*config.Config)) *httpsTracker {
	t.Helper()
	ca := tlscerttest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, 1)
	cfg := config.Default()
	cfg.Addr = ""
	cfg.TLSAddr = addr
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	if mod != nil {
		mod(&cfg)
	}
	require.NoError(t, cfg.Validate())
	c, err := chihaya.Start(&cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, c.Shutdown(ctx))
	})
	if cfg.Addr == "" {
		require.Nil(t, c.Addr(), "no plain HTTP listener")
	}
	u, err := url.Parse("https://" + c.TLSAddr().String() + "/announce")
	require.NoError(t, err)
	return &httpsTracker{c: c, announce: u, ca: ca, dir: dir, certFile: certFile}
}

// dialTLS opens a TLS connection to the tracker that trusts only the test's CA.
func (h *httpsTracker) dialTLS(t *testing.T, cfg *tls.Config) *tls.Conn {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = h.ca.Pool()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", h.c.TLSAddr().String(), cfg)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func serialOf(c *tls.Conn) int64 {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

const tlsQ = "info_hash=tlstlstlstlstlstlstl&peer_id=-TL0001-000000000001&port=7000&uploaded=0&downloaded=0&left=0"

func TestE2EHTTPSAnacrolix(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
	}{
		{"ipv4", "127.0.0.1:0"},
		{"ipv6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.addr == "[::1]:0" && !ipv6Available() {
				t.Skip("no IPv6 loopback")
			}
			h := startHTTPS(t, tc.addr, nil)
			dialer := &countingDialer{}
			cl := httpTracker.NewClient(h.announce, httpTracker.NewClientOpts{AllowKeepAlive: true, DialContext: dialer.DialContext})
			t.Cleanup(func() { _ = cl.Close() })
			ctx := ctxT(t)
			ih := infohash.T(peerIDOf("https-swarm-hash...."))
			resp, err := cl.Announce(ctx, httpTracker.AnnounceRequest{InfoHash: ih, PeerId: peerIDOf("-AZ0001-seeder000001"), Port: 7001, Event: shared.Started}, httpTracker.AnnounceOpt{})
			require.NoError(t, err)
			assert.Equal(t, int32(1800), resp.Interval)
			resp, err = cl.Announce(ctx, httpTracker.AnnounceRequest{InfoHash: ih, PeerId: peerIDOf("-AZ0001-leecher00001"), Port: 7002, Left: 100, Event: shared.Started, NumWant: -1}, httpTracker.AnnounceOpt{})
			require.NoError(t, err)
			assert.Equal(t, int32(1), resp.Seeders)
			assert.Equal(t, int32(1), resp.Leechers)
			require.Len(t, resp.Peers, 1)
			assert.Equal(t, 7001, resp.Peers[0].Port)
			out, err := cl.Scrape(ctx, []infohash.T{ih})
			require.NoError(t, err)
			assert.Equal(t, int32(1), out[0].Seeders)
			assert.Equal(t, int32(1), out[0].Leechers)
			assert.Equal(t, int32(1), dialer.n.Load(), "two announces and a scrape over one TLS connection")
		})
	}
}

func TestE2EHTTPSPipelining(t *testing.T) {
	h := startHTTPS(t, "127.0.0.1:0", func(c *config.Config) { c.Addr = "127.0.0.1:0" })
	c := h.dialTLS(t, &tls.Config{NextProtos: []string{"h2", "http/1.1"}})
	st := c.ConnectionState()
	assert.Equal(t, "http/1.1", st.NegotiatedProtocol, "ALPN http/1.1, never h2")
	assert.GreaterOrEqual(t, st.Version, uint16(tls.VersionTLS12))
	assert.Len(t, st.PeerCertificates, 2, "the chain is served whole")

	// Two announces, a scrape and a route the fast path hands over to net/http, in one write.
	reqs := "GET /announce?" + tlsQ + " HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /announce?" + strings.NewReplacer("000000000001", "000000000002", "left=0", "left=5").Replace(tlsQ) + " HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /scrape?info_hash=tlstlstlstlstlstlstl HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	_, err := io.WriteString(c, reqs)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	var bodies []string
	for range 4 {
		res, err := nethttp.ReadResponse(br, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		assert.Equal(t, nethttp.StatusOK, res.StatusCode)
		assert.False(t, res.Close, "keep-alive")
		bodies = append(bodies, string(b))
	}
	assert.Contains(t, bodies[0], "8:intervali1800e")
	assert.Contains(t, bodies[1], "8:completei1e")
	assert.Contains(t, bodies[2], "5:filesd20:tlstlstlstlstlstlstld8:completei1e")
	assert.Contains(t, bodies[3], "ok")

	// The same tracker over plain HTTP sees the peers announced over TLS.
	res, err := nethttp.Get("http://" + h.c.Addr().String() + "/scrape?info_hash=tlstlstlstlstlstlstl")
	require.NoError(t, err)
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	assert.Contains(t, string(b), "8:completei1e10:downloadedi0e10:incompletei1e")
}

// metricsText is the tracker's /metrics, read over HTTPS.
func metricsText(t *testing.T, h *httpsTracker) string {
	t.Helper()
	hc := &nethttp.Client{Timeout: 5 * time.Second, Transport: &nethttp.Transport{TLSClientConfig: &tls.Config{RootCAs: h.ca.Pool()}}}
	defer hc.CloseIdleConnections()
	res, err := hc.Get("https://" + h.c.TLSAddr().String() + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(b)
}

func TestE2EHTTPSHandshakeTimeout(t *testing.T) {
	h := startHTTPS(t, "127.0.0.1:0", func(c *config.Config) {
		c.HTTPReadHeaderTimeout = config.Duration{Duration: 300 * time.Millisecond}
		c.StatsEnabled = true
	})
	// A client that connects and never says hello is closed within http_read_header_timeout.
	c, err := net.DialTimeout("tcp", h.c.TLSAddr().String(), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "timeout", "the server closed it, not our deadline")
	assert.Less(t, time.Since(start), 3*time.Second)

	// A plain HTTP request on the TLS port fails the handshake; the tracker carries on.
	c2, err := net.DialTimeout("tcp", h.c.TLSAddr().String(), 5*time.Second)
	require.NoError(t, err)
	defer c2.Close()
	require.NoError(t, c2.SetDeadline(time.Now().Add(5*time.Second)))
	_, _ = io.WriteString(c2, "GET /announce?"+tlsQ+" HTTP/1.1\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(c2)
	assert.NotContains(t, string(b), "interval")
	require.Eventually(t, func() bool {
		return strings.Contains(metricsText(t, h), "chihaya_http_tls_handshake_errors_total 2")
	}, 5*time.Second, 20*time.Millisecond, "both failed handshakes counted")
	tc := h.dialTLS(t, nil)
	_, err = io.WriteString(tc, "GET /announce?"+tlsQ+" HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	res, err := nethttp.ReadResponse(bufio.NewReader(tc), nil)
	require.NoError(t, err)
	assert.Equal(t, nethttp.StatusOK, res.StatusCode)
}

// TestE2EHTTPSCertificateReload renews the certificate under a running tracker: a reload
// (what SIGHUP runs) and a change of the files each put the new one in service for new
// connections, while a connection opened before keeps working; a bad renewal keeps the old.
func TestE2EHTTPSCertificateReload(t *testing.T) {
	h := startHTTPS(t, "127.0.0.1:0", nil)
	old := h.dialTLS(t, nil)
	require.Equal(t, int64(1), serialOf(old))
	br := bufio.NewReader(old)
	announceOn := func(c *tls.Conn, br *bufio.Reader) {
		t.Helper()
		_, err := io.WriteString(c, "GET /announce?"+tlsQ+" HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		res, err := nethttp.ReadResponse(br, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		assert.Contains(t, string(b), "8:intervali")
	}
	announceOn(old, br)
	ctx := ctxT(t)

	// Renewed, then SIGHUP's reload.
	h.ca.IssueFiles(t, h.dir, 2)
	_, err := h.c.ReloadOperator(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), serialOf(h.dialTLS(t, nil)))
	announceOn(old, br)

	// Renewed on disk only: the watch picks it up.
	h.ca.IssueFiles(t, h.dir, 3)
	require.Eventually(t, func() bool {
		c := h.dialTLS(t, nil)
		defer c.Close()
		return serialOf(c) == 3
	}, 5*time.Second, 20*time.Millisecond)
	announceOn(old, br)

	// A bad renewal: the reload fails naming the file, and the certificate in service stays.
	require.NoError(t, os.WriteFile(h.certFile+".new", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600))
	require.NoError(t, os.Rename(h.certFile+".new", h.certFile))
	_, err = h.c.ReloadOperator(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), h.certFile)
	assert.Equal(t, int64(3), serialOf(h.dialTLS(t, nil)))
	announceOn(old, br)
}

func TestStartRefusesABadCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := tlscerttest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, dir, 1)
	bad := filepath.Join(dir, "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("hello"), 0o600))
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"bad certificate", bad, keyFile, bad},
		{"bad key", certFile, bad, bad},
		{"missing certificate", filepath.Join(dir, "missing.pem"), keyFile, "missing.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Addr = "127.0.0.1:0"
			cfg.TLSAddr = "127.0.0.1:0"
			cfg.TLSCertFile, cfg.TLSKeyFile = tc.cert, tc.key
			require.NoError(t, cfg.Validate())
			c, err := chihaya.Start(&cfg)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestE2EHTTPSBudgetAndRateLimit: the connection budget and the rate limits cover TLS
// connections as plain ones.
func TestE2EHTTPSBudgetAndRateLimit(t *testing.T) {
	h := startHTTPS(t, "127.0.0.1:0", func(c *config.Config) {
		c.MaxConnectionsPerIP = 2
		c.RateLimit.AnnounceRate = 0.001
		c.RateLimit.AnnounceBurst = 3
	})
	exchange := func(c *tls.Conn, br *bufio.Reader) (string, error) {
		if _, err := io.WriteString(c, "GET /announce?"+tlsQ+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		res, err := nethttp.ReadResponse(br, nil)
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	c1, c2 := h.dialTLS(t, nil), h.dialTLS(t, nil)
	br1, br2 := bufio.NewReader(c1), bufio.NewReader(c2)
	for i, cb := range []struct {
		c  *tls.Conn
		br *bufio.Reader
	}{{c1, br1}, {c2, br2}} {
		body, err := exchange(cb.c, cb.br)
		require.NoError(t, err)
		assert.Contains(t, body, "8:intervali1800e")
		// The server's goroutine goes idle after the answer, not when the client reads it:
		// under load c2's could otherwise go idle first, and be the oldest idle one.
		require.Eventually(t, func() bool { return idleConns(t, h.c) == i+1 }, 10*time.Second, time.Millisecond,
			"connection %d idle on the server", i+1)
	}
	// A third connection from the address sheds its oldest idle one, c1.
	c3 := h.dialTLS(t, nil)
	body, err := exchange(c3, bufio.NewReader(c3))
	require.NoError(t, err)
	assert.Contains(t, body, "8:intervali1800e", "the burst of 3 allows a third announce")
	_, err = br1.ReadByte()
	require.Error(t, err, "c1 was shed")
	assert.NotContains(t, err.Error(), "timeout", "closed by the server, not by our deadline")

	// The fourth announce is over the rate.
	body, err = exchange(c2, br2)
	require.NoError(t, err)
	assert.Contains(t, body, "too many requests from your address")
}

// idleConns is the tracker's gauge of idle keep-alive connections.
func idleConns(t *testing.T, c *chihaya.Chihaya) int {
	t.Helper()
	fams, err := c.Stats().Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() == "chihaya_http_connections_idle" {
			for _, m := range f.GetMetric() {
				return int(m.GetGauge().GetValue())
			}
		}
	}
	t.Fatal("no chihaya_http_connections_idle gauge")
	return 0
}
