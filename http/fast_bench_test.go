package http

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/tlscert/tlscerttest"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

// benchServer is a frontend over a memory swarm with the default configuration.
func benchServer(tb testing.TB, mod func(*config.Config)) *Server {
	tb.Helper()
	cfg := config.Default()
	if mod != nil {
		mod(&cfg)
	}
	tkr, err := tracker.New(&cfg, memory.NewPool(8), noop.Conn{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := NewServer(&cfg, tkr)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// benchAnnounce is a keep-alive re-announce of one peer: the answer is the same every time.
func benchAnnounce(port int) []byte {
	ih := models.InfoHash{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0x80}
	q := "info_hash=" + escapeBytes(ih[:]) + "&peer_id=-qB4630-benchbenchbe&port=" + strconv.Itoa(port) +
		"&uploaded=0&downloaded=0&left=100&compact=1&no_peer_id=1&key=3AF13DE0&numwant=50"
	return []byte("GET /announce?" + q + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: qBittorrent/4.6.3\r\nAccept-Encoding: gzip\r\n\r\n")
}

// respReader reads HTTP answers with a Content-Length from a connection into a fixed buffer,
// without allocating, so that a benchmark's allocations are the server's.
type respReader struct {
	conn net.Conn
	buf  []byte
	n    int
}

// next reads one answer and returns its body; it is valid until the next call.
func (r *respReader) next() ([]byte, error) {
	for {
		if end := bytes.Index(r.buf[:r.n], []byte("\r\n\r\n")); end >= 0 {
			headLen := end + 4
			i := bytes.Index(r.buf[:end], []byte("\r\nContent-Length: "))
			if i < 0 {
				return nil, errNoLength
			}
			j := i + len("\r\nContent-Length: ")
			k := bytes.IndexByte(r.buf[j:end+2], '\r')
			length, ok := parseUint(r.buf[j:j+k], 1<<20)
			if !ok {
				return nil, errNoLength
			}
			total := headLen + int(length)
			for r.n < total {
				m, err := r.conn.Read(r.buf[r.n:])
				r.n += m
				if err != nil {
					return nil, err
				}
			}
			body := r.buf[headLen:total]
			// The caller reads body before the next call; move what follows to the front then.
			rest := copy(r.buf[len(r.buf)/2:], r.buf[total:r.n])
			copy(r.buf, r.buf[len(r.buf)/2:len(r.buf)/2+rest])
			r.n = rest
			return body, nil
		}
		m, err := r.conn.Read(r.buf[r.n:])
		r.n += m
		if err != nil {
			return nil, err
		}
	}
}

type benchError string

func (e benchError) Error() string { return string(e) }

const errNoLength = benchError("answer without a Content-Length")

// serveLoopback serves s on a loopback listener until the test ends.
func serveLoopback(tb testing.TB, s *Server, network, addr string) net.Addr {
	tb.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Error(err)
		}
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	return ln.Addr()
}

// announceExchange returns a function that sends one announce on conn and checks its answer.
func announceExchange(b *testing.B, conn net.Conn) func() {
	req := benchAnnounce(6881)
	rd := &respReader{conn: conn, buf: make([]byte, 64<<10)}
	return func() {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		body, err := rd.next()
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.HasPrefix(body, []byte("d8:complete")) {
			b.Fatalf("answer %q", body)
		}
	}
}

// BenchmarkLoopbackAnnounce sends announces one at a time over a real loopback keep-alive
// connection, through the fast path (package fast) and ServeFast; the client does not
// allocate, so allocs/op are the server's. Package fast's BenchmarkFastAnnounce is the same
// in process, without the sockets.
func BenchmarkLoopbackAnnounce(b *testing.B) {
	s := benchServer(b, nil)
	addr := serveLoopback(b, s, "tcp", "127.0.0.1:0")
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	exchange := announceExchange(b, conn)
	for range 100 {
		exchange() // warm the pools and the connection's buffers
	}
	b.ReportAllocs()
	for b.Loop() {
		exchange()
	}
}

// serveTLSBench serves a warm bench server over TLS on loopback with a throwaway CA's
// certificate, until the benchmark ends.
func serveTLSBench(b *testing.B) (net.Listener, *tlscerttest.CA) {
	s := benchServer(b, nil)
	ca := tlscerttest.NewCA(b)
	chain, key := ca.Issue(b, 1)
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(ln, tlsCfg) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			b.Error(err)
		}
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return ln, ca
}

// BenchmarkLoopbackAnnounceTLS is BenchmarkLoopbackAnnounce over TLS (TLS 1.3, one keep-alive
// connection); allocs/op count the client's tls.Conn too.
func BenchmarkLoopbackAnnounceTLS(b *testing.B) {
	ln, ca := serveTLSBench(b)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	exchange := announceExchange(b, conn)
	for range 100 {
		exchange()
	}
	b.ReportAllocs()
	for b.Loop() {
		exchange()
	}
}

// BenchmarkLoopbackHandshakeTLS opens a TLS connection per announce (full handshake, TLS 1.3,
// ECDSA P-256); the client's handshake is in the figures too.
func BenchmarkLoopbackHandshakeTLS(b *testing.B) {
	ln, ca := serveTLSBench(b)
	req := benchAnnounce(6881)
	cfg := &tls.Config{RootCAs: ca.Pool()}
	b.ReportAllocs()
	for b.Loop() {
		conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		rd := &respReader{conn: conn, buf: make([]byte, 4<<10)}
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := rd.next(); err != nil {
			b.Fatal(err)
		}
		_ = conn.Close()
	}
}
