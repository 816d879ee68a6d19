package udp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/clientip"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
)

// readBufSize is the most of a datagram a reader keeps: a scrape of 101 hashes, far more than
// MaxScrapeInfoHashes, or an announce with 1950 bytes of options. Each buffer has one byte
// more, so that a longer datagram shows as oversized rather than silently cut.
const readBufSize = 2048

// socketBufferSize is asked of the kernel for each socket's receive and send buffers, to absorb
// bursts; the kernel may grant less (net.core.rmem_max).
const socketBufferSize = 4 << 20

// Recorder is told of every announce and scrape answered, for metrics; *stats.Stats implements
// it. Record is called on the request path and must not block.
type Recorder interface {
	Record(r stats.Request)
}

// Option configures a Server.
type Option func(*Server)

// WithLimiter has the server refuse announces and scrapes over l's rates with an error packet
// (a nil l limits nothing).
func WithLimiter(l *ratelimit.Limiter) Option {
	return func(s *Server) { s.limiter = l }
}

// WithRecorder has the server report every answered announce and scrape to r.
func WithRecorder(r Recorder) Option {
	return func(s *Server) { s.recorder = r }
}

// WithConnectionIDKey has the server issue and accept connection IDs under key instead of a
// fresh random secret, so that a process that takes over the socket in an upgrade accepts the
// IDs its predecessor issued (see Server.ConnectionIDKey).
func WithConnectionIDKey(key [16]byte) Option {
	return func(s *Server) {
		if ids, err := newConnIDs(key[:]); err == nil {
			s.ids, s.key = ids, key
		}
	}
}

// Server is the UDP frontend. One Server may serve several sockets.
type Server struct {
	tkr       *tracker.Tracker
	ips       *clientip.Resolver
	limiter   *ratelimit.Limiter
	private   bool
	maxScrape int
	readers   int
	batch     int
	recorder  Recorder
	ids       *connIDs
	key       [16]byte // ids' secret
	metrics   *metrics

	// now is the clock of connection IDs; tests replace it.
	now func() time.Time

	// ctx is the context of every request: cancelled when Shutdown gives up waiting.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	conns    []*net.UDPConn
	shutdown bool
	wg       sync.WaitGroup

	errLogged     atomic.Int64 // unix ns of the last error logged
	errSuppressed atomic.Int64
}

// NewServer returns a frontend for tkr configured by cfg, with a fresh random connection-ID
// secret.
func NewServer(cfg *config.Config, tkr *tracker.Tracker, opts ...Option) (*Server, error) {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("udp: connection ID secret: %w", err)
	}
	ids, err := newConnIDs(key[:])
	if err != nil {
		return nil, err
	}
	resolver, err := clientip.New(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		tkr:       tkr,
		ips:       resolver,
		private:   cfg.PrivateEnabled,
		maxScrape: min(tkr.MaxScrapeInfoHashes(), MaxScrapeInfoHashes),
		readers:   cfg.UDPReaders,
		batch:     max(cfg.UDPBatchSize, 1),
		ids:       ids,
		key:       key,
		metrics:   newMetrics(),
		now:       time.Now,
	}
	if s.readers <= 0 {
		s.readers = runtime.GOMAXPROCS(0)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// ConnectionIDKey returns the secret the server's connection IDs are keyed with, for a
// successor process's WithConnectionIDKey. It must not leave the host.
func (s *Server) ConnectionIDKey() [16]byte { return s.key }

// Collectors returns the frontend's own metrics (chihaya_udp_*), to register on a registry.
func (s *Server) Collectors() []prometheus.Collector { return s.metrics.collectors() }

// Listen opens a UDP socket on addr. A wildcard address such as ":6881" is one dual-stack
// socket that serves IPv4 (as IPv4-mapped addresses) and IPv6 alike.
func Listen(addr string) (*net.UDPConn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	// Best effort: the kernel caps both at its own maximum.
	_ = conn.SetReadBuffer(socketBufferSize)
	_ = conn.SetWriteBuffer(socketBufferSize)
	return conn, nil
}

// Serve answers datagrams on conn with the configured number of readers until Shutdown, which
// closes conn. It returns nil after Shutdown.
func (s *Server) Serve(conn *net.UDPConn) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = conn.Close()
		return nil
	}
	s.conns = append(s.conns, conn)
	s.wg.Add(s.readers)
	s.mu.Unlock()

	ios := make([]packetIO, s.readers)
	var err error
	for i := range ios {
		if ios[i], err = s.newIO(conn); err != nil {
			break
		}
	}
	if err != nil {
		s.wg.Add(-s.readers)
		_ = conn.Close()
		return fmt.Errorf("udp: %w", err)
	}
	var done sync.WaitGroup
	for _, io := range ios {
		done.Add(1)
		go func() {
			defer s.wg.Done()
			defer done.Done()
			s.read(io, newWorker(s))
		}()
	}
	done.Wait()
	return nil
}

// newIO returns a reader's own batched I/O on conn, or unbatched I/O where batching is off or
// not available.
func (s *Server) newIO(conn *net.UDPConn) (packetIO, error) {
	if s.batch > 1 {
		if io, err := newBatchIO(conn, newSlots(s.batch)); err != nil || io != nil {
			return io, err
		}
	}
	return &simpleIO{conn: conn, slots: newSlots(1)}, nil
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// read is one reader: it answers a batch of datagrams, sends the answers and reads the next
// batch, until the socket is closed.
func (s *Server) read(io packetIO, w *worker) {
	slots := io.buffers()
	backoff := time.Duration(0)
	for {
		n, err := io.recv()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.closing() {
				return
			}
			// Reading a UDP socket hardly fails but for its closing; do not spin if it does.
			s.metrics.readErrors.Inc()
			s.logf("udp: read: %v", err)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.metrics.batch.Observe(float64(n))
		for i := range slots[:n] {
			sl := &slots[i]
			if !sl.from.IsValid() {
				sl.out = sl.out[:0]
				continue
			}
			pkt := sl.in[:min(sl.n, readBufSize)]
			sl.out = w.handle(pkt, sl.from, sl.n > readBufSize, sl.out[:0])
		}
		failed, err := io.send(n)
		if err != nil && (errors.Is(err, net.ErrClosed) || s.closing()) {
			return
		}
		if failed > 0 {
			s.metrics.writeErrors.Add(float64(failed))
			if glog.V(2) {
				glog.Infof("udp: %d answers not sent: %v", failed, err)
			}
		}
	}
}

// Shutdown stops the readers, waits for them to answer what they had read, or for ctx to end,
// and then closes the sockets. Requests still running then see their context cancelled. The
// readers are woken by a read deadline rather than by closing the sockets, so that the answers
// to the batches they hold can still be sent; datagrams not yet read stay queued on the socket,
// for another process that shares it (an upgrade) to answer.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now())
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var errs []error
	closeAll := func() {
		for _, c := range conns {
			if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		closeAll()
		s.cancel()
		return ctx.Err()
	}
	closeAll()
	s.cancel()
	return errors.Join(errs...)
}

// errorLogEvery bounds how often errors caused by traffic are logged: bad traffic must not be
// able to flood the logs.
const errorLogEvery = 10 * time.Second

// logf logs an error, or counts it when one was logged less than errorLogEvery ago; the next
// line says how many were not logged.
func (s *Server) logf(format string, args ...any) {
	now := time.Now().UnixNano()
	last := s.errLogged.Load()
	if now-last < int64(errorLogEvery) || !s.errLogged.CompareAndSwap(last, now) {
		s.errSuppressed.Add(1)
		return
	}
	if n := s.errSuppressed.Swap(0); n > 0 {
		format += " (%d more since the last such line)"
		args = append(args, n)
	}
	glog.Errorf(format, args...)
}

// slot is one datagram of a batch and its answer.
type slot struct {
	in   []byte // readBufSize+1 bytes; in[:n] holds the datagram
	n    int
	from netip.AddrPort
	out  []byte // the answer; empty for none
}

func newSlots(n int) []slot {
	slots := make([]slot, n)
	for i := range slots {
		slots[i].in = make([]byte, readBufSize+1)
		slots[i].out = make([]byte, 0, 512)
	}
	return slots
}

// packetIO moves batches of datagrams between one reader's slots and a socket. Each reader has
// its own; its methods are called by that reader only.
type packetIO interface {
	// buffers returns the slots that recv fills and send answers from.
	buffers() []slot
	// recv blocks until at least one datagram arrives, fills the first slots with what arrived
	// and returns how many.
	recv() (int, error)
	// send sends the non-empty answers of the first n slots to where their datagrams came from.
	// failed counts the answers the kernel refused, err says why.
	send(n int) (failed int, err error)
}

// simpleIO reads and writes one datagram per system call.
type simpleIO struct {
	conn  *net.UDPConn
	slots []slot
}

func (io *simpleIO) buffers() []slot { return io.slots }

func (io *simpleIO) recv() (int, error) {
	sl := &io.slots[0]
	n, _, _, from, err := io.conn.ReadMsgUDPAddrPort(sl.in, nil)
	if err != nil {
		return 0, err
	}
	sl.n, sl.from = n, from
	return 1, nil
}

func (io *simpleIO) send(n int) (int, error) {
	sl := &io.slots[0]
	if n == 0 || len(sl.out) == 0 {
		return 0, nil
	}
	if _, err := io.conn.WriteToUDPAddrPort(sl.out, sl.from); err != nil {
		return 1, err
	}
	return 0, nil
}
