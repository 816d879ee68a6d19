package http

import (
	"bufio"
	"context"
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

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// fastIH is the info hash the loopback tests announce.
var fastIH = models.InfoHash{'f', 'a', 's', 't', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xfe, 0xff, '%', '+', '&', '='}

func announceReq(proto, extra string, port int, headers ...string) string {
	q := announceQ(fastIH, 'p', port, 10)
	return "GET /announce?" + q + " " + proto + "\r\n" + strings.Join(headers, "") + extra + "\r\n"
}

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

// startFast serves a fresh frontend on addr, with /stats answering "stats", until the test ends.
func startFast(t *testing.T, addr string, mod func(*config.Config)) (*Server, string) {
	t.Helper()
	s := newTestServer(t, mod)
	s.Handle("stats", nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		_, _ = io.WriteString(w, "stats of "+r.URL.RawQuery)
	}))
	return s, serveLoopback(t, s, "tcp", addr).String()
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

func TestFastPathLoopback(t *testing.T) {
	for _, addr := range loopbacks(t) {
		t.Run(addr, func(t *testing.T) {
			_, srvAddr := startFast(t, addr, nil)
			host, _, err := net.SplitHostPort(srvAddr)
			require.NoError(t, err)
			loop := netip.MustParseAddr(host)

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
						d := decodeDict(t, []byte(body(t, r)))
						// BEP 24: the socket's address, which the raw accept path reads itself.
						assert.Equal(t, string(loop.AsSlice()), d["external ip"])
						assert.EqualValues(t, 1800, d["interval"])
					}
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
					"GET /scrape?info_hash=" + escapeBytes(fastIH[:]) + " HTTP/1.1\r\n\r\n" +
					"GET /scrape?info_hash=short HTTP/1.1\r\n\r\n"},
				want: 3,
				check: func(t *testing.T, res []*nethttp.Response) {
					assert.Contains(t, body(t, res[0]), "8:intervali1800e")
					assert.Contains(t, body(t, res[1]), "5:filesd20:")
					assert.Contains(t, body(t, res[2]), "failure reason")
				},
			}, {
				name: "stats handed to net/http",
				send: []string{"GET /stats?pretty HTTP/1.1\r\nHost: x\r\n\r\n"},
				want: 1,
				check: func(t *testing.T, res []*nethttp.Response) {
					assert.Equal(t, nethttp.StatusOK, res[0].StatusCode)
					assert.Equal(t, "stats of pretty", body(t, res[0]))
				},
			}, {
				name: "pipelined announce then stats, answered in order",
				send: []string{announceReq("HTTP/1.1", "", 7006) + "GET /stats?x HTTP/1.1\r\nHost: x\r\n\r\n" + announceReq("HTTP/1.1", "", 7006, "Host: x\r\n")},
				want: 3,
				check: func(t *testing.T, res []*nethttp.Response) {
					assert.Contains(t, body(t, res[0]), "d8:complete")
					assert.Equal(t, "stats of x", body(t, res[1]))
					assert.Contains(t, body(t, res[2]), "d8:complete", "net/http answers announces too")
				},
			}, {
				name: "unknown path is net/http's 404",
				send: []string{"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"},
				want: 1,
				check: func(t *testing.T, res []*nethttp.Response) {
					assert.Equal(t, nethttp.StatusNotFound, res[0].StatusCode)
					assert.Contains(t, body(t, res[0]), "this is a BitTorrent tracker")
				},
			}, {
				name: "request split across writes",
				send: []string{"GET /anno", "unce?" + announceQ(fastIH, 'q', 7007, 0) + " HTTP/1.1\r\nHo", "st: x\r\n\r\n"},
				want: 1,
				check: func(t *testing.T, res []*nethttp.Response) {
					assert.Contains(t, body(t, res[0]), "d8:complete")
				},
			}, {
				name:   "head too large",
				send:   []string{"GET /announce HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeaderBytes) + "\r\n\r\n"},
				want:   1,
				closed: true,
				check: func(t *testing.T, res []*nethttp.Response) {
					assert.Equal(t, nethttp.StatusRequestHeaderFieldsTooLarge, res[0].StatusCode)
				},
			}} {
				t.Run(tc.name, func(t *testing.T) {
					c := dial(t, srvAddr)
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
		})
	}
}

func TestFastPathKeepAliveOff(t *testing.T) {
	_, addr := startFast(t, "127.0.0.1:0", func(cfg *config.Config) { cfg.HTTPKeepAlive = false })
	c := dial(t, addr)
	br := bufio.NewReader(c)
	_, err := io.WriteString(c, announceReq("HTTP/1.1", "", 7100)+announceReq("HTTP/1.1", "", 7100))
	require.NoError(t, err)
	res := readAnswers(t, br, 1)
	assert.True(t, res[0].Close)
	assertClosed(t, br)
}

func TestFastPathTimeouts(t *testing.T) {
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
			_, addr := startFast(t, "127.0.0.1:0", func(cfg *config.Config) {
				cfg.HTTPReadHeaderTimeout = config.Duration{Duration: 300 * time.Millisecond}
				cfg.HTTPIdleTimeout = config.Duration{Duration: 300 * time.Millisecond}
			})
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

func TestFastPathShutdown(t *testing.T) {
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
	_, err = io.WriteString(handed, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
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
}
