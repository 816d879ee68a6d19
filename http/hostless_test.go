package http_test

// Tests of HostlessListener through its exported API: the rewriting over scripted connections,
// and legacy Gazelle's exact bytes over TCP to a whole private-mode tracker started with
// chihaya.Start, which is what wraps the listener.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	nethttp "net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

// headLimit is the frontend's header limit (maxHeaderBytes in server.go).
const headLimit = 16 << 10

const hostLine = "Host: localhost\r\n"

// scriptConn is a net.Conn whose reads return the script's chunks one by one (each at most
// len(p) at a time), then io.EOF. A chunk with an error and no data returns the error once.
type scriptConn struct {
	net.Conn
	chunks []chunk
}

type chunk struct {
	data []byte
	err  error
}

func (c *scriptConn) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 {
		ch := &c.chunks[0]
		if len(ch.data) == 0 {
			err := ch.err
			c.chunks = c.chunks[1:]
			if err != nil {
				return 0, err
			}
			continue
		}
		n := copy(p, ch.data)
		ch.data = ch.data[n:]
		return n, nil
	}
	return 0, io.EOF
}

func (c *scriptConn) Close() error { return nil }

// oneConnListener accepts c once.
type oneConnListener struct {
	net.Listener
	c net.Conn
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if l.c == nil {
		return nil, net.ErrClosed
	}
	c := l.c
	l.c = nil
	return c, nil
}

// hostless returns c as HostlessListener hands it out.
func hostless(t testing.TB, c net.Conn) net.Conn {
	t.Helper()
	conn, err := http.HostlessListener(&oneConnListener{c: c}).Accept()
	require.NoError(t, err)
	return conn
}

// splitInto cuts s into pieces of n bytes.
func splitInto(s string, n int) []chunk {
	var out []chunk
	for len(s) > 0 {
		k := min(n, len(s))
		out = append(out, chunk{data: []byte(s[:k])})
		s = s[k:]
	}
	return out
}

// readThrough reads everything the hostless conn makes of the script, with reads of size rd.
func readThrough(t testing.TB, chunks []chunk, rd int) (string, error) {
	t.Helper()
	c := hostless(t, &scriptConn{chunks: chunks})
	var out []byte
	p := make([]byte, rd)
	for range 1 << 20 {
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		if err != nil {
			return string(out), err
		}
	}
	t.Fatal("Read never ended")
	return "", nil
}

func TestHostlessRewrite(t *testing.T) {
	legacy := "GET /s/update?action=x HTTP/1.1\r\nConnection: Close\r\n\r\n"
	legacyFixed := "GET /s/update?action=x HTTP/1.1\r\nHost: localhost\r\nConnection: Close\r\n\r\n"
	opsnet := "GET /s/update?action=x HTTP/1.1\r\nHost: tracker.example\r\nConnection: Close\r\n\r\n"
	// A body that looks like a Host-less head.
	body := "GET /fake HTTP/1.1\r\nX: y\r\n\r\n\r\n"
	huge := "GET /x HTTP/1.1\r\nX-Big: " + strings.Repeat("a", headLimit) + "\r\n\r\n"
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{name: "legacy Gazelle", in: legacy, want: legacyFixed},
		{name: "OPSnet Gazelle", in: opsnet, want: opsnet},
		{name: "host in lower case", in: "GET / HTTP/1.1\r\nhost: a\r\n\r\n", want: "GET / HTTP/1.1\r\nhost: a\r\n\r\n"},
		{name: "host in upper case", in: "GET / HTTP/1.1\r\nHOST: a\r\n\r\n", want: "GET / HTTP/1.1\r\nHOST: a\r\n\r\n"},
		{name: "no headers at all", in: "GET / HTTP/1.1\r\n\r\n", want: "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"},
		{name: "bare line feeds", in: "GET / HTTP/1.1\nConnection: close\n\n", want: "GET / HTTP/1.1\nHost: localhost\r\nConnection: close\n\n"},
		{name: "HTTP/1.0 needs no host", in: "GET / HTTP/1.0\r\n\r\n", want: "GET / HTTP/1.0\r\n\r\n"},
		{name: "a header that only starts like host", in: "GET / HTTP/1.1\r\nHostname: a\r\n\r\n", want: "GET / HTTP/1.1\r\nHost: localhost\r\nHostname: a\r\n\r\n"},
		{name: "pipelined", in: legacy + opsnet + legacy, want: legacyFixed + opsnet + legacyFixed},
		{name: "body passes untouched",
			in:   "POST / HTTP/1.1\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body + legacy,
			want: "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body + legacyFixed},
		{name: "empty body",
			in:   "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n" + legacy,
			want: "GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n" + legacyFixed},
		{name: "chunked bodies end the rewriting",
			in:   "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + legacy,
			want: "POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + legacy},
		{name: "a bad content length ends the rewriting",
			in:   "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n" + legacy,
			want: "GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1x\r\n\r\n" + legacy},
		{name: "conflicting content lengths end the rewriting",
			in:   "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n" + legacy,
			want: "GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n" + legacy},
		{name: "a head over the limit passes untouched", in: huge + legacy, want: huge + legacy},
		{name: "an unfinished head passes untouched", in: "GET / HTTP/1.1\r\nConnection: cl", want: "GET / HTTP/1.1\r\nConnection: cl"},
		{name: "leading empty line", in: "\r\n" + legacy, want: "\r\n" + legacy},
		{name: "garbage", in: "\x00\xff\r\n\n\x16\x03\x01", want: "\x00\xff\r\n\n\x16\x03\x01"},
		{name: "empty", in: "", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, piece := range []int{1, 2, 3, 7, 64, 4096, 1 << 20} {
				for _, rd := range []int{1, 5, 4096} {
					got, err := readThrough(t, splitInto(tc.in, piece), rd)
					assert.ErrorIs(t, err, io.EOF)
					require.Equal(t, tc.want, got, "pieces of %d, reads of %d", piece, rd)
				}
			}
		})
	}
}

func TestHostlessTimeoutKeepsThePartialHead(t *testing.T) {
	// net/http interrupts its background read with a past deadline; the head read so far must
	// survive it.
	timeout := &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}
	c := hostless(t, &scriptConn{chunks: []chunk{
		{data: []byte("GET / HTTP/1.1\r\nConn")},
		{err: timeout},
		{data: []byte("ection: close\r\n\r\n")},
	}})
	p := make([]byte, 4096)
	n, err := c.Read(p)
	assert.Zero(t, n)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())

	n, err = c.Read(p)
	require.NoError(t, err)
	assert.Equal(t, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", string(p[:n]))
}

func TestHostlessConnErrorsPassThrough(t *testing.T) {
	reset := errors.New("connection reset by peer")
	// The partial head goes out as it came; the script then ends.
	got, err := readThrough(t, []chunk{{data: []byte("GET / HTTP/1.1\r\n")}, {err: reset}}, 4096)
	assert.Equal(t, "GET / HTTP/1.1\r\n", got)
	assert.ErrorIs(t, err, io.EOF)

	c := hostless(t, &scriptConn{chunks: []chunk{{err: reset}}})
	_, err = c.Read(make([]byte, 10))
	assert.ErrorIs(t, err, reset)
}

// siteBackend is a backend driver whose site holds what the test put in site.
type siteBackend struct{ site *models.SiteState }

func (b siteBackend) New(json.RawMessage) (backend.Conn, error) { return b, nil }
func (siteBackend) RecordAnnounce(context.Context, *models.AnnounceDelta) error {
	return nil
}
func (siteBackend) Close(context.Context) error { return nil }
func (b siteBackend) Load(context.Context) (*models.SiteState, error) {
	st := *b.site
	return &st, nil
}

var (
	siteSecret   = strings.Repeat("s", 32)
	reportSecret = strings.Repeat("r", 32)
	alice        = strings.Repeat("a", 32)
	bob          = strings.Repeat("b", 32)
	siteHash     = models.InfoHash([]byte("\x12\x34Vx\x9a\xbc+~ab\x00\xff-_.AZ09\x20"))
)

func init() {
	backend.Register("hostless-test-site", siteBackend{site: &models.SiteState{
		Users:    []models.User{{ID: 1, Passkey: alice, CanLeech: true}},
		Torrents: []models.Torrent{{ID: 10, InfoHash: siteHash}},
	}})
}

// startPrivate runs a whole private-mode tracker on loopback and returns its address.
func startPrivate(t *testing.T, format string) string {
	t.Helper()
	c, _ := startTracker(t, "127.0.0.1:0", func(cfg *config.Config) {
		cfg.PrivateEnabled = true
		cfg.Backend = config.DriverConfig{Name: "hostless-test-site"}
		cfg.SitePassword, cfg.ReportPassword = siteSecret, reportSecret
		cfg.ReportFormat = format
	})
	return c.Addr().String()
}

// rawExchange writes each of writes to a fresh connection to addr and reads until EOF, as
// Gazelle's fsockopen client does.
func rawExchange(t *testing.T, addr string, writes ...string) string {
	t.Helper()
	resp, err := rawTry(addr, writes...)
	require.NoError(t, err)
	return resp
}

func rawTry(addr string, writes ...string) (string, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return "", err
	}
	for _, w := range writes {
		if _, err := io.WriteString(conn, w); err != nil {
			return "", err
		}
	}
	resp, err := io.ReadAll(conn)
	return string(resp), err
}

// assertGazelleSuccess checks a raw answer the way both Gazelle generations do, and more.
func assertGazelleSuccess(t *testing.T, resp string) {
	t.Helper()
	require.True(t, strings.HasPrefix(resp, "HTTP/1.1 200 OK\r\n"), "status line of %q", resp)
	head, body, ok := strings.Cut(resp, "\r\n\r\n")
	require.True(t, ok, "no end of head in %q", resp)
	assert.Contains(t, head, "\r\nContent-Length: 7\r\n")
	assert.NotContains(t, strings.ToLower(head), "transfer-encoding")
	assert.Equal(t, "success", body)
	// Legacy Gazelle: the text after the last "\n" of the raw response.
	assert.Equal(t, "success", resp[strings.LastIndexByte(resp, '\n')+1:])
}

func legacyUpdate(query string) string {
	return "GET /" + siteSecret + "/update?" + query + " HTTP/1.1\r\nConnection: Close\r\n\r\n"
}

func legacyReport(query string) string {
	return "GET /" + reportSecret + "/report?" + query + " HTTP/1.1\r\nConnection: Close\r\n\r\n"
}

// userReport returns the text report of a user's peers.
func userReport(t *testing.T, addr, passkey string) string {
	t.Helper()
	resp := rawExchange(t, addr, legacyReport("get=user&key="+passkey))
	require.True(t, strings.HasPrefix(resp, "HTTP/1.1 200 OK\r\n"), resp)
	_, body, _ := strings.Cut(resp, "\r\n\r\n")
	return body
}

// announceHash has the user with passkey announce siteHash as a seeder over HTTP.
func announceHash(t *testing.T, addr, passkey string, peer byte) map[string]any {
	t.Helper()
	q := "info_hash=" + escapeAll(siteHash[:]) + "&peer_id=" + strings.Repeat(string(rune(peer)), 20) +
		"&port=6881&uploaded=0&downloaded=0&left=0&compact=1"
	resp, err := nethttp.Get("http://" + addr + "/" + passkey + "/announce?" + q)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var d map[string]any
	require.NoError(t, bencode.Unmarshal(b, &d), "%q", b)
	return d
}

func TestHostlessLegacyGazelleOverTCP(t *testing.T) {
	addr := startPrivate(t, "text")

	t.Run("legacy Gazelle, no Host", func(t *testing.T) {
		assert.Equal(t, "Passkey not found", announceHash(t, addr, bob, 'b')["failure reason"])
		assertGazelleSuccess(t, rawExchange(t, addr, legacyUpdate("action=add_user&passkey="+bob+"&id=2&visible=1")))
		assert.NotContains(t, announceHash(t, addr, bob, 'b'), "failure reason")
		assert.Equal(t, "0 leeching\n1 seeding\nsuccess", userReport(t, addr, bob))
	})

	t.Run("OPSnet Gazelle, with Host", func(t *testing.T) {
		resp := rawExchange(t, addr, "GET /"+siteSecret+"/update?action=remove_user&passkey="+bob+" HTTP/1.1\r\nHost: tracker.example\r\nConnection: Close\r\n\r\n")
		assertGazelleSuccess(t, resp)
		assert.Equal(t, "Passkey not found", announceHash(t, addr, bob, 'b')["failure reason"])
	})

	t.Run("pipelined", func(t *testing.T) {
		first := "GET /" + siteSecret + "/update?action=add_user&passkey=" + bob + "&id=2 HTTP/1.1\r\n\r\n"
		resp := rawExchange(t, addr, first+legacyUpdate("action=change_passkey&oldpasskey="+bob+"&newpasskey="+strings.Repeat("c", 32)))
		require.Equal(t, 2, strings.Count(resp, "HTTP/1.1 200 OK\r\n"), resp)
		second := strings.Index(resp[1:], "HTTP/1.1 200 OK") + 1
		assertGazelleSuccess(t, resp[:second])
		assertGazelleSuccess(t, resp[second:])
		assert.Equal(t, "success", userReport(t, addr, bob), "bob's passkey was changed")
		// The same user (ID 2) under the new passkey: its peer from before is still in the swarm.
		assert.Equal(t, "0 leeching\n1 seeding\nsuccess", userReport(t, addr, strings.Repeat("c", 32)))
	})

	t.Run("one byte per write", func(t *testing.T) {
		req := legacyUpdate("action=remove_user&passkey=" + strings.Repeat("c", 32))
		assertGazelleSuccess(t, rawExchange(t, addr, strings.Split(req, "")...))
		assert.Equal(t, "success", userReport(t, addr, strings.Repeat("c", 32)))
	})

	t.Run("a wrong secret", func(t *testing.T) {
		resp := rawExchange(t, addr, "GET /"+strings.Repeat("x", 32)+"/update?action=remove_user&passkey="+alice+" HTTP/1.1\r\nConnection: Close\r\n\r\n")
		assert.True(t, strings.HasSuffix(resp, "\r\n\r\nd14:failure reason22:Authentication failure8:intervali5400e12:min intervali5400ee"), resp)
		assert.NotContains(t, announceHash(t, addr, alice, 'a'), "failure reason")
	})

	t.Run("stats", func(t *testing.T) {
		resp := rawExchange(t, addr, legacyReport("get=stats"))
		require.True(t, strings.HasPrefix(resp, "HTTP/1.1 200 OK\r\n"), resp)
		assert.Regexp(t, `\r\n\r\nUptime: 0 days, 00:00:\d\d\n\d+ connections opened\n\d+ open connections\n\d+ connections/s\n\d+ requests handled\n`, resp)
		assert.Regexp(t, `\n\d+ seeders tracked\n[1-9]\d* bytes read\n[1-9]\d* bytes written\n1800 announce interval\n0 announce jitter\nsuccess$`, resp)
	})

	for _, tc := range []struct {
		name string
		in   string
	}{
		{name: "garbage", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"},
		{name: "no request line", in: "\r\n\r\n"},
		{name: "a header without a colon", in: "GET / HTTP/1.1\r\nnonsense\r\n\r\n"},
		{name: "a head over the limit", in: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 2*headLimit) + "\r\n\r\n"},
		{name: "half a head, then close", in: "GET /" + siteSecret + "/upd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
			_, err = io.WriteString(conn, tc.in)
			require.NoError(t, err)
			require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			// The server answers 4xx and closes, or just closes (a reset included).
			resp, err := io.ReadAll(conn)
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the connection open")
			if len(resp) > 0 {
				assert.True(t, strings.HasPrefix(string(resp), "HTTP/1.1 4"), "answer %q", resp)
			}
		})
	}

	// The tracker still serves after all that.
	assertGazelleSuccess(t, rawExchange(t, addr, legacyUpdate("action=trace_user&passkey="+alice+"&trace=1")))
}

func TestHostlessReportJSONOverTCP(t *testing.T) {
	addr := startPrivate(t, "json")
	require.NotContains(t, announceHash(t, addr, alice, 'a'), "failure reason")
	resp := rawExchange(t, addr, "GET /"+reportSecret+"/report?get=user&key="+alice+" HTTP/1.1\r\nHost: tracker.example\r\nConnection: Close\r\n\r\n")
	_, body, _ := strings.Cut(resp, "\r\n\r\n")
	assert.JSONEq(t, `{"id":1,"leeching":0,"seeding":1,"deleted":0,"protected":0,"can_leech":1}`, body)

	// The stats come from the running aggregator, which applies requests in batches.
	var doc map[string]struct {
		Type  string `json:"type"`
		Value any    `json:"value"`
	}
	assert.Eventually(t, func() bool {
		doc = nil
		resp, err := rawTry(addr, legacyReport("get=stats"))
		if err != nil {
			return false
		}
		_, body, _ := strings.Cut(resp, "\r\n\r\n")
		if json.Unmarshal([]byte(body), &doc) != nil {
			return false
		}
		return doc["successful announcements"].Value == float64(1)
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, float64(1), doc["successful announcements"].Value)
	assert.Equal(t, float64(1), doc["seeders tracked"].Value)
	assert.Equal(t, "number", doc["announce interval"].Type)
	assert.Equal(t, float64(1800), doc["announce interval"].Value)
}

func TestHostlessNeededForLegacyGazelle(t *testing.T) {
	// Without the wrapper, net/http refuses legacy Gazelle's request: the tests above test
	// something.
	cfg := config.Default()
	cfg.PrivateEnabled = true
	cfg.SitePassword, cfg.ReportPassword = siteSecret, reportSecret
	tkr, err := tracker.New(&cfg, memory.NewPool(4), nil, nil)
	require.NoError(t, err)
	s, err := http.NewServer(&cfg, tkr)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		assert.NoError(t, s.Shutdown(ctxT(t)))
		assert.NoError(t, <-done)
	})
	resp := rawExchange(t, ln.Addr().String(), legacyUpdate("action=trace_user"))
	assert.True(t, strings.HasPrefix(resp, "HTTP/1.1 400 Bad Request"), resp)
	assert.Contains(t, resp, "missing required Host header")
}

// loopConn answers every read with the same request head.
type loopConn struct {
	net.Conn
	head []byte
	off  int
}

func (c *loopConn) Read(p []byte) (int, error) {
	n := copy(p, c.head[c.off:])
	c.off = (c.off + n) % len(c.head)
	return n, nil
}

func BenchmarkHostlessHead(b *testing.B) {
	for _, tc := range []struct {
		name string
		head string
	}{
		{name: "announce with host", head: "GET /" + alice + "/announce?info_hash=" + escapeAll(siteHash[:]) +
			"&peer_id=-qB4620-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=0&compact=1 HTTP/1.1\r\n" +
			"Host: tracker.example\r\nUser-Agent: qBittorrent/4.6.2\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n"},
		{name: "update without host", head: legacyUpdate("action=remove_user&passkey=" + bob)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := hostless(b, &loopConn{head: []byte(tc.head)})
			p := make([]byte, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.head)))
			for b.Loop() {
				if _, err := c.Read(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzHostlessConn checks that the rewriting never panics, does not depend on how the bytes
// are split into reads, and only ever adds whole Host lines.
func FuzzHostlessConn(f *testing.F) {
	f.Add([]byte("GET /s/update?action=x HTTP/1.1\r\nConnection: Close\r\n\r\n"), uint8(1))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n"), uint8(3))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET / HTTP/1.1\n\n"), uint8(2))
	f.Add([]byte("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), uint8(5))
	f.Add([]byte("\r\n\n\x00"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, piece uint8) {
		whole, err := readThrough(t, []chunk{{data: in}}, 4096)
		require.ErrorIs(t, err, io.EOF)
		split, err := readThrough(t, splitInto(string(in), int(piece)%16+1), int(piece)%7+1)
		require.ErrorIs(t, err, io.EOF)
		require.Equal(t, whole, split)
		require.Zero(t, (len(whole)-len(in))%len(hostLine))
		if !bytes.Contains(in, []byte(hostLine)) {
			require.Equal(t, string(in), strings.ReplaceAll(whole, hostLine, ""), "only Host lines are added")
		}
	})
}
