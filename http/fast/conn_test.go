package fast

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	nethttp "net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/http/tlscert/tlscerttest"
)

// loopbacks are the address families the tests run over; ::1 only where it exists.
func loopbacks(t *testing.T) []string {
	t.Helper()
	addrs := []string{"127.0.0.1:0"}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		_ = ln.Close()
		addrs = append(addrs, "[::1]:0")
	}
	return addrs
}

// plainListener hides a *net.TCPListener's type, so that Serve runs its net.Listener accept
// loop instead of the raw one.
type plainListener struct{ net.Listener }

// A feed is one of the ways connections reach the fast path: the raw accept loop (Linux), a
// listener's Accept, and TLS.
type feed struct {
	name  string
	serve func(s *Server, ln net.Listener) error
	// dial connects to addr as a client of the feed does.
	dial func(t *testing.T, addr string) net.Conn
}

// testCA is the throwaway CA of the TLS feed.
var testCA *tlscerttest.CA

// testTLSConfig is a server configuration with a certificate of a throwaway CA (testCA).
func testTLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	if testCA == nil {
		testCA = tlscerttest.NewCA(t)
	}
	chain, key := testCA.Issue(t, 1)
	cert, err := tls.X509KeyPair(chain, key)
	require.NoError(t, err)
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
}

func feeds(t *testing.T) []feed {
	t.Helper()
	cfg := testTLSConfig(t)
	return []feed{
		{name: "raw accept", serve: func(s *Server, ln net.Listener) error { return s.Serve(ln) }, dial: dial},
		{name: "net.Listener", serve: func(s *Server, ln net.Listener) error { return s.Serve(plainListener{ln}) }, dial: dial},
		{name: "TLS", serve: func(s *Server, ln net.Listener) error { return s.ServeTLS(ln, cfg) }, dial: dialTLS},
	}
}

// startFeed serves s through f on a new listener on addr until the test ends.
func startFeed(t *testing.T, s *Server, f feed, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	return serveUntilCleanup(t, s, ln, func() error { return f.serve(s, ln) }).String()
}

// dial connects to addr with a deadline that bounds the whole test's exchange.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialTLS is dial over TLS, trusting testCA.
func dialTLS(t *testing.T, addr string) net.Conn {
	t.Helper()
	c := tls.Client(dial(t, addr), &tls.Config{RootCAs: testCA.Pool(), ServerName: "localhost"})
	require.NoError(t, c.Handshake())
	return c
}

// readAnswers reads n answers from br.
func readAnswers(t *testing.T, br *bufio.Reader, n int) []*nethttp.Response {
	t.Helper()
	var out []*nethttp.Response
	for range n {
		res, err := nethttp.ReadResponse(br, nil)
		require.NoError(t, err)
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		res.Body = io.NopCloser(strings.NewReader(string(body)))
		out = append(out, res)
	}
	return out
}

func body(t *testing.T, res *nethttp.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(b)
}

// assertClosed checks that the server closed the connection after what was read.
func assertClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	_, err := br.ReadByte()
	assert.ErrorIs(t, err, io.EOF)
}

// assertOpen checks that the connection still serves: one more announce is answered.
func assertOpen(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_, err := io.WriteString(c, announceReq("HTTP/1.1", "", 6999, "Host: x\r\n"))
	require.NoError(t, err)
	res := readAnswers(t, br, 1)[0]
	assert.Equal(t, nethttp.StatusOK, res.StatusCode)
}

// panicHandler answers as echoHandler does, but panics on the query "panic".
type panicHandler struct{ echoHandler }

func (h panicHandler) ServeFast(req *Request, out []byte) []byte {
	if string(req.Query) == "panic" {
		panic("kaboom")
	}
	return h.echoHandler.ServeFast(req, out)
}

func TestConnLoopback(t *testing.T) {
	for _, f := range feeds(t) {
		for _, addr := range loopbacks(t) {
			t.Run(f.name+" "+addr, func(t *testing.T) {
				s, err := New(func() Config { c := testConfig(); c.RealIPHeader = "X-Real-IP"; return c }(), panicHandler{}, nextHandler)
				require.NoError(t, err)
				srvAddr := startFeed(t, s, f, addr)
				host, _, err := net.SplitHostPort(srvAddr)
				require.NoError(t, err)
				loop := netip.MustParseAddr(host)
				testConnCases(t, f, srvAddr, loop)
			})
		}
	}
}

func testConnCases(t *testing.T, f feed, srvAddr string, loop netip.Addr) {
	for _, tc := range []struct {
		name   string
		send   []string // written one after another
		check  func(t *testing.T, res []*nethttp.Response)
		want   int // answers
		closed bool
	}{{
		name: "keep-alive",
		send: []string{announceReq("HTTP/1.1", "", 7001, "Host: x\r\n"), announceReq("HTTP/1.1", "", 7001)},
		want: 2,
		check: func(t *testing.T, res []*nethttp.Response) {
			for _, r := range res {
				assert.Equal(t, nethttp.StatusOK, r.StatusCode)
				assert.Equal(t, "text/plain", r.Header.Get("Content-Type"))
				assert.Equal(t, "no-cache", r.Header.Get("Cache-Control"))
				assert.NotEmpty(t, r.Header.Get("Date"))
				assert.False(t, r.Close)
				e := echoed(t, body(t, r))
				assert.Equal(t, "announce", e["route"])
				// The socket's address, which the raw accept path reads itself.
				ap := netip.MustParseAddrPort(e["remote"])
				assert.Equal(t, loop, ap.Addr())
				assert.NotZero(t, ap.Port())
				assert.Equal(t, announceQ(7001), e["query"])
				assert.Empty(t, e["passkey"])
				assert.Equal(t, " false", e["realip"])
				assert.Equal(t, "true", e["deadline"], "request_timeout bounds the context")
			}
		},
	}, {
		name: "what crosses the seam",
		send: []string{"GET /pk123/scrape?info_hash=%00 HTTP/1.1\r\nUser-Agent: qBittorrent/4.6.3\r\n" +
			"X-Real-IP: 192.0.2.1\r\nx-real-ip: 192.0.2.9\r\n\r\n"},
		want: 1,
		check: func(t *testing.T, res []*nethttp.Response) {
			e := echoed(t, body(t, res[0]))
			assert.Equal(t, map[string]string{
				"route": "scrape", "remote": e["remote"], "passkey": "pk123", "query": "info_hash=%00",
				"ua": "qBittorrent/4.6.3", "realip": "192.0.2.9 true", "deadline": "true",
			}, e)
		},
	}, {
		name:   "HTTP/1.0 closes",
		send:   []string{announceReq("HTTP/1.0", "", 7002)},
		want:   1,
		closed: true,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.True(t, res[0].Close, "Connection: close")
		},
	}, {
		name: "HTTP/1.0 keep-alive",
		send: []string{announceReq("HTTP/1.0", "", 7003, "Connection: keep-alive\r\n")},
		want: 1,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, "keep-alive", res[0].Header.Get("Connection"))
		},
	}, {
		name:   "connection close",
		send:   []string{announceReq("HTTP/1.1", "", 7004, "Connection: close\r\n")},
		want:   1,
		closed: true,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.True(t, res[0].Close)
		},
	}, {
		name: "pipelined in order",
		send: []string{announceReq("HTTP/1.1", "", 7005) +
			"GET /scrape?info_hash=one HTTP/1.1\r\n\r\n" +
			"GET /scrape?info_hash=two HTTP/1.1\r\n\r\n"},
		want: 3,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, announceQ(7005), echoed(t, body(t, res[0]))["query"])
			assert.Equal(t, "info_hash=one", echoed(t, body(t, res[1]))["query"])
			assert.Equal(t, "info_hash=two", echoed(t, body(t, res[2]))["query"])
		},
	}, {
		name: "stats handed to net/http",
		send: []string{"GET /stats?pretty HTTP/1.1\r\nHost: x\r\n\r\n"},
		want: 1,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, nethttp.StatusOK, res[0].StatusCode)
			assert.Equal(t, "net/http: /stats?pretty", body(t, res[0]))
		},
	}, {
		name: "pipelined announce then stats, answered in order",
		send: []string{announceReq("HTTP/1.1", "", 7006) + "GET /stats?x HTTP/1.1\r\nHost: x\r\n\r\n" + announceReq("HTTP/1.1", "", 7006, "Host: x\r\n")},
		want: 3,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, "announce", echoed(t, body(t, res[0]))["route"])
			assert.Equal(t, "net/http: /stats?x", body(t, res[1]))
			assert.Equal(t, "net/http: /announce?"+announceQ(7006), body(t, res[2]), "net/http has the rest of the connection")
		},
	}, {
		name: "unknown path is net/http's 404",
		send: []string{"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"},
		want: 1,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, nethttp.StatusNotFound, res[0].StatusCode)
			assert.Equal(t, "404 page not found\n", body(t, res[0]))
		},
	}, {
		name: "request split across writes",
		send: []string{"GET /anno", "unce?" + announceQ(7007) + " HTTP/1.1\r\nHo", "st: x\r\n\r\n"},
		want: 1,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, announceQ(7007), echoed(t, body(t, res[0]))["query"])
		},
	}, {
		name:   "head too large",
		send:   []string{"GET /announce HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHeadBytes) + "\r\n\r\n"},
		want:   1,
		closed: true,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, nethttp.StatusRequestHeaderFieldsTooLarge, res[0].StatusCode)
		},
	}, {
		name:   "a panic is answered 500 after the answers before it",
		send:   []string{announceReq("HTTP/1.1", "", 7008) + "GET /announce?panic HTTP/1.1\r\n\r\n" + announceReq("HTTP/1.1", "", 7008)},
		want:   2,
		closed: true,
		check: func(t *testing.T, res []*nethttp.Response) {
			assert.Equal(t, announceQ(7008), echoed(t, body(t, res[0]))["query"])
			assert.Equal(t, nethttp.StatusInternalServerError, res[1].StatusCode)
			assert.True(t, res[1].Close)
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.dial(t, srvAddr)
			br := bufio.NewReader(c)
			for _, s := range tc.send {
				_, err := io.WriteString(c, s)
				require.NoError(t, err)
				time.Sleep(time.Millisecond) // let split writes arrive apart
			}
			res := readAnswers(t, br, tc.want)
			tc.check(t, res)
			if tc.closed {
				assertClosed(t, br)
			} else {
				assertOpen(t, c, br)
			}
		})
	}
}

func TestConnKeepAliveOff(t *testing.T) {
	s := newTestServer(t, func(cfg *Config) { cfg.KeepAlive = false })
	addr := serveLoopback(t, s, "tcp", "127.0.0.1:0").String()
	c := dial(t, addr)
	br := bufio.NewReader(c)
	_, err := io.WriteString(c, announceReq("HTTP/1.1", "", 7100)+announceReq("HTTP/1.1", "", 7100))
	require.NoError(t, err)
	res := readAnswers(t, br, 1)
	assert.True(t, res[0].Close)
	assertClosed(t, br)
}

func TestConnTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name string
		// send is written, then the client stays quiet or trickles.
		send    string
		trickle bool
	}{
		{name: "idle new connection"},
		{name: "idle after a request", send: announceReq("HTTP/1.1", "", 7200)},
		{name: "partial head", send: "GET /announce?x HTTP/1.1\r\n"},
		{name: "slowloris trickling a head", send: "GET /announce?x HTTP/1.1\r\n", trickle: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, func(cfg *Config) {
				cfg.ReadHeaderTimeout = 300 * time.Millisecond
				cfg.IdleTimeout = 300 * time.Millisecond
			})
			addr := serveLoopback(t, s, "tcp", "127.0.0.1:0").String()
			c := dial(t, addr)
			start := time.Now()
			_, err := io.WriteString(c, tc.send)
			require.NoError(t, err)
			closed := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, c)
				closed <- err
			}()
			deadline := time.After(5 * time.Second)
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case err := <-closed:
					// EOF, or a reset when the server closed with the trickle unread.
					var ne net.Error
					assert.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closes the connection: %v", err)
					assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond, "not before the timeout")
					return
				case <-tick.C:
					if tc.trickle {
						_, _ = io.WriteString(c, "X: y\r\n")
					}
				case <-deadline:
					t.Fatal("the connection was never closed")
				}
			}
		})
	}
}
