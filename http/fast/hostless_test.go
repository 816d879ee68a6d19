package fast

// Tests of the Host lines added for legacy Gazelle (Config.AddHost): the rewriting over
// scripted connections, and a server with the option and without it. Package http's tests
// send legacy Gazelle's exact bytes to a whole private-mode tracker.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
	c := newHostlessConn(&scriptConn{chunks: chunks})
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
	huge := "GET /x HTTP/1.1\r\nX-Big: " + strings.Repeat("a", MaxHeadBytes) + "\r\n\r\n"
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
	c := newHostlessConn(&scriptConn{chunks: []chunk{
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

	c := newHostlessConn(&scriptConn{chunks: []chunk{{err: reset}}})
	_, err = c.Read(make([]byte, 10))
	assert.ErrorIs(t, err, reset)
}

// legacyUpdate is an update request as legacy Gazelle sends it: HTTP/1.1 without a Host.
func legacyUpdate(query string) string {
	return "GET /" + strings.Repeat("s", 32) + "/update?" + query + " HTTP/1.1\r\nConnection: Close\r\n\r\n"
}

// TestAddHost: with Config.AddHost, net/http is handed legacy Gazelle's request with a Host and
// answers it; without, it refuses it (so the rewriting tests test something). The fast path
// needs no Host either way.
func TestAddHost(t *testing.T) {
	for _, tc := range []struct {
		name    string
		addHost bool
		want    string
	}{
		{name: "with AddHost", addHost: true, want: "HTTP/1.1 200 OK"},
		{name: "without", addHost: false, want: "HTTP/1.1 400 Bad Request"},
	} {
		for _, f := range feeds(t) {
			t.Run(tc.name+" "+f.name, func(t *testing.T) {
				s := newTestServer(t, func(cfg *Config) { cfg.AddHost = tc.addHost })
				addr := startFeed(t, s, f, "127.0.0.1:0")
				c := f.dial(t, addr)
				// An announce without a Host on the fast path, then the update, pipelined.
				_, err := io.WriteString(c, announceReq("HTTP/1.1", "", 7400)+legacyUpdate("action=trace_user"))
				require.NoError(t, err)
				br := bufio.NewReader(c)
				res := readAnswers(t, br, 1)
				assert.Equal(t, "announce", echoed(t, body(t, res[0]))["route"])
				rest, err := io.ReadAll(br)
				require.NoError(t, err, "the update closes the connection")
				assert.True(t, strings.HasPrefix(string(rest), tc.want), "%q", rest)
				if tc.addHost {
					assert.True(t, strings.HasSuffix(string(rest), "\r\n\r\nnet/http: /"+strings.Repeat("s", 32)+"/update?action=trace_user"), "%q", rest)
				} else {
					assert.Contains(t, string(rest), "missing required Host header")
				}
			})
		}
	}
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
		{name: "announce with host", head: "GET /" + strings.Repeat("a", 32) + "/announce?info_hash=%124Vx%9A%BC%2B~ab%00%FF-_.AZ09%20" +
			"&peer_id=-qB4620-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=0&compact=1 HTTP/1.1\r\n" +
			"Host: tracker.example\r\nUser-Agent: qBittorrent/4.6.2\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n"},
		{name: "update without host", head: legacyUpdate("action=remove_user&passkey=" + strings.Repeat("b", 32))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := newHostlessConn(&loopConn{head: []byte(tc.head)})
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
