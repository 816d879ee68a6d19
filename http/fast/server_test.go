package fast

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	nethttp "net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The package's tests serve real loopback connections with a Handler that echoes the Request
// it was given (echoHandler), and hand everything else to a net/http handler that says it
// answered (nextHandler): what they check is what the connections do, and what crosses the
// seam. Package http's tests run the tracker through the same server.

// testConfig is the configuration's defaults, as package http passes them.
func testConfig() Config {
	return Config{
		KeepAlive:           true,
		ReadHeaderTimeout:   5 * time.Second,
		IdleTimeout:         2 * time.Minute,
		WriteTimeout:        10 * time.Second,
		RequestTimeout:      10 * time.Second,
		MaxConnections:      896, // derived from an open files limit of 1024
		MaxConnectionsPerIP: 1024,
	}
}

// echoHandler answers a request with its fields, one "name=value" line each (see echoed).
type echoHandler struct{}

func (echoHandler) ServeFast(req *Request, out []byte) []byte {
	route := map[Route]string{RouteAnnounce: "announce", RouteScrape: "scrape"}[req.Route]
	out = append(out, "route="+route+"\n"...)
	out = append(out, "remote="+req.Remote.String()+"\n"...)
	out = append(out, "passkey="+string(req.Passkey)+"\n"...)
	out = append(out, "query="+string(req.Query)+"\n"...)
	out = append(out, "ua="+string(req.UserAgent)+"\n"...)
	out = append(out, "realip="+string(req.RealIP)+" "+strconv.FormatBool(req.HasRealIP)+"\n"...)
	_, deadline := req.Context.Deadline()
	out = append(out, "deadline="+strconv.FormatBool(deadline)+"\n"...)
	return out
}

// echoed reads an echoHandler answer back.
func echoed(t *testing.T, body string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "line %q of %q", line, body)
		m[k] = v
	}
	return m
}

// nextHandler is net/http's side: it answers "net/http: <path>?<query>", and 404 under
// /missing.
var nextHandler = nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
	if strings.HasPrefix(r.URL.Path, "/missing") {
		nethttp.NotFound(w, r)
		return
	}
	_, _ = io.WriteString(w, "net/http: "+r.URL.Path+"?"+r.URL.RawQuery)
})

// newTestServer returns a server with testConfig changed by mod, the echo handler and
// nextHandler.
func newTestServer(t testing.TB, mod func(*Config)) *Server {
	t.Helper()
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, echoHandler{}, nextHandler)
	require.NoError(t, err)
	return s
}

// serveLoopback serves s on a loopback listener until the test ends.
func serveLoopback(tb testing.TB, s *Server, network, addr string) net.Addr {
	tb.Helper()
	ln, err := net.Listen(network, addr)
	require.NoError(tb, err)
	return serveListener(tb, s, ln)
}

// serveListener serves s on ln until the test ends.
func serveListener(tb testing.TB, s *Server, ln net.Listener) net.Addr {
	tb.Helper()
	return serveUntilCleanup(tb, s, ln, func() error { return s.Serve(ln) })
}

// serveTLSListener serves s on ln over TLS with cfg until the test ends.
func serveTLSListener(tb testing.TB, s *Server, ln net.Listener, cfg *tls.Config) net.Addr {
	tb.Helper()
	return serveUntilCleanup(tb, s, ln, func() error { return s.ServeTLS(ln, cfg) })
}

// serveUntilCleanup runs serve, which serves s on ln, until the test ends; then it shuts s
// down and checks that both return nil.
func serveUntilCleanup(tb testing.TB, s *Server, ln net.Listener, serve func() error) net.Addr {
	tb.Helper()
	done := make(chan error, 1)
	go func() { done <- serve() }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(tb, s.Shutdown(ctx))
		assert.NoError(tb, <-done)
	})
	return ln.Addr()
}

// announceQ is an announce's query string with port; its bytes matter to the echo only.
func announceQ(port int) string {
	return "info_hash=%66ast%00%01%02%03%04%05%06%07%08%09%FE%FF%25%2B%26%3D&peer_id=pppppppppppppppppppp&port=" +
		strconv.Itoa(port) + "&uploaded=0&downloaded=0&left=10"
}

// announceReq is an announce head in proto with headers, and extra before its end.
func announceReq(proto, extra string, port int, headers ...string) string {
	return "GET /announce?" + announceQ(port) + " " + proto + "\r\n" + strings.Join(headers, "") + extra + "\r\n"
}

func TestNewRefusesABadBudget(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{name: "no connections", mod: func(c *Config) { c.MaxConnections = 0 }, want: "max connections 0"},
		{name: "negative per address", mod: func(c *Config) { c.MaxConnectionsPerIP = -1 }, want: "per address -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.mod(&cfg)
			s, err := New(cfg, echoHandler{}, nextHandler)
			require.Error(t, err)
			assert.Nil(t, s)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestShutdown(t *testing.T) {
	s := newTestServer(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	idle := dial(t, ln.Addr().String())
	br := bufio.NewReader(idle)
	_, err = io.WriteString(idle, announceReq("HTTP/1.1", "", 7300))
	require.NoError(t, err)
	readAnswers(t, br, 1)
	handed := dial(t, ln.Addr().String())
	_, err = io.WriteString(handed, "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	hbr := bufio.NewReader(handed)
	readAnswers(t, hbr, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx), "idle connections do not hold Shutdown up")
	require.NoError(t, <-served)
	assertClosed(t, br)
	assertClosed(t, hbr)
	_, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	assert.Error(t, err, "nothing listens after Shutdown")
	assert.NoError(t, s.Serve(ln), "Serve after Shutdown returns at once")
	assert.NoError(t, s.ServeTLS(ln, testTLSConfig(t)), "ServeTLS after Shutdown returns at once")
}
