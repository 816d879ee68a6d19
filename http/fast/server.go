package fast

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Handler answers the fast path's requests: it is the seam between this package (the
// connections) and the tracker's HTTP frontend (routes, query parsing, address resolving,
// bencoding), which implements it.
type Handler interface {
	// ServeFast answers req: it appends the answer's body (bencoded) to out, the connection's
	// output buffer, and returns the result; the fast path puts a 200 answer's head in front of
	// the body (text/plain, with its Content-Length) and writes it. ServeFast must leave
	// out[:len(out)] as it is, and must not keep req, its byte slices or out after it returns.
	// It is called on the connection's goroutine, for one request of a connection at a time,
	// and concurrently for different connections. A panic is answered 500, and the connection
	// closes.
	ServeFast(req *Request, out []byte) []byte
}

// Request is an announce or a scrape read by the fast path, as the Handler is given it. Its
// byte slices alias the connection's read buffer: they are valid until ServeFast returns.
type Request struct {
	// Context ends when request_timeout passes, or when Shutdown gives up waiting.
	Context context.Context
	Route   Route
	Passkey []byte // the first path segment of /:passkey/announce, or nil
	Query   []byte // the raw query string, without the "?"
	// UserAgent is the User-Agent header's value, or nil.
	UserAgent []byte
	// RealIP is the value of the last Config.RealIPHeader line; HasRealIP tells an empty one
	// from none.
	RealIP    []byte
	HasRealIP bool
	// Remote is the socket's remote address, unmapped and without a zone.
	Remote netip.AddrPort
	// Start is when the fast path began answering the request.
	Start time.Time
}

// Config is what the fast server needs of the configuration.
type Config struct {
	// KeepAlive keeps connections open between requests (http_keep_alive).
	KeepAlive bool
	// ReadHeaderTimeout bounds a request head, and a TLS handshake (http_read_header_timeout);
	// IdleTimeout the wait for the next request (http_idle_timeout); WriteTimeout the writing
	// of answers (http_write_timeout). 0 is none.
	ReadHeaderTimeout, IdleTimeout, WriteTimeout time.Duration
	// RequestTimeout bounds each request's Context (request_timeout); 0 is none.
	RequestTimeout time.Duration
	// RealIPHeader is the header a Request carries as RealIP (real_ip_header), or "".
	RealIPHeader string
	// MaxConnections is the connection budget (max_connections), at least 1.
	MaxConnections int
	// MaxConnectionsPerIP caps the connections of one IPv4 address or IPv6 /64
	// (max_connections_per_ip); 0 is no cap.
	MaxConnectionsPerIP int
	// Uncapped reports whether connections from an address are spared MaxConnectionsPerIP (a
	// trusted proxy carries many clients); nil spares none.
	Uncapped func(netip.Addr) bool
	// AddHost gives every HTTP/1.1 request head handed over to net/http without a Host header
	// the line "Host: localhost", which net/http would otherwise refuse with 400: legacy
	// Gazelle (WhatCD) sends its update and report requests so (see hostless.go).
	AddHost bool
}

// Server serves connections: announces and scrapes on the fast path, through its Handler, and
// everything else through net/http. It is safe for concurrent use.
type Server struct {
	cfg Config
	h   Handler
	// srv serves the connections handed over (handoff.go).
	srv *nethttp.Server

	// base is the parent of every request's context; Shutdown cancels it when it gives up
	// waiting.
	base       context.Context
	cancelBase context.CancelFunc
	conns      sync.Pool // *conn
	shutting   atomic.Bool
	mu         sync.Mutex
	listeners  map[io.Closer]struct{}
	active     map[*conn]struct{}
	connWG     sync.WaitGroup
	// accepting counts connections acceptLoop accepted whose goroutine has not tracked them
	// yet (see track).
	accepting sync.WaitGroup
	// serving counts the Serve and ServeTLS calls that have not returned.
	serving sync.WaitGroup
	// work hands TLS connections to idle workers, idleWorkers counts them, and stop, closed
	// by Shutdown, lets them go (tls.go).
	work        chan *conn
	idleWorkers atomic.Int32
	stop        chan struct{}
	stopOnce    sync.Once

	// The connection budget (budget.go), under mu like the rest: every connection is counted
	// in table from accept to close.
	table          *connTable
	acceptErrors   uint64
	acceptLogNext  time.Time
	acceptLogQuiet int

	counters counters
}

// New returns a server whose fast path answers through h, and which hands every other request
// to next.
func New(cfg Config, h Handler, next nethttp.Handler) (*Server, error) {
	if cfg.MaxConnections < 1 {
		return nil, fmt.Errorf("http: max connections %d: want at least 1", cfg.MaxConnections)
	}
	if cfg.MaxConnectionsPerIP < 0 {
		return nil, fmt.Errorf("http: max connections per address %d: want 0 or more", cfg.MaxConnectionsPerIP)
	}
	s := &Server{
		cfg:       cfg,
		h:         h,
		listeners: make(map[io.Closer]struct{}),
		active:    make(map[*conn]struct{}),
		table:     newConnTable(cfg.MaxConnections, cfg.MaxConnectionsPerIP),
		work:      make(chan *conn),
		stop:      make(chan struct{}),
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.conns.New = func() any { return s.newConn() }
	s.srv = &nethttp.Server{
		Handler:           next,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    MaxHeadBytes,
		ConnState:         s.connState,
	}
	s.srv.SetKeepAlivesEnabled(cfg.KeepAlive)
	return s, nil
}

// Serve accepts plain TCP connections on ln until Shutdown; it returns nil after a graceful
// shutdown. On Linux a *net.TCPListener is served by the raw accept loop (raw_linux.go), any
// other listener by its Accept.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, nil) }

// ServeTLS accepts connections on ln and speaks TLS on them with cfg (see tlscert.Store's
// Config), until Shutdown; it returns nil after a graceful shutdown. Each handshake is made on
// the connection's own goroutine, once the connection budget has admitted it, within
// ReadHeaderTimeout (tls.go); the rest is as on Serve's connections, over TLS.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) error {
	if cfg == nil {
		return errors.New("http: ServeTLS without a TLS configuration")
	}
	return s.serve(ln, cfg)
}

// serve is Serve, or ServeTLS when tlsCfg is set.
func (s *Server) serve(ln net.Listener, tlsCfg *tls.Config) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.serving.Add(1)
	s.mu.Unlock()
	defer s.serving.Done()

	hand := newHandoffListener(ln.Addr())
	handErr := make(chan error, 1)
	go func() { handErr <- s.srv.Serve(hand) }()
	deferSeconds := max(1, int(s.cfg.ReadHeaderTimeout/time.Second))
	var err error
	if lf, ok := rawListener(ln, deferSeconds); ok {
		if s.listen(lf) {
			err = s.rawAcceptLoop(lf, hand, tlsCfg)
		}
		_ = lf.Close()
		s.mu.Lock()
		delete(s.listeners, lf)
		s.mu.Unlock()
	} else {
		err = s.acceptLoop(ln, tlsCfg, hand)
	}
	_ = hand.Close()
	if herr := <-handErr; err == nil && !errors.Is(herr, nethttp.ErrServerClosed) && !errors.Is(herr, net.ErrClosed) {
		err = fmt.Errorf("http: handed-over connections: %w", herr)
	}
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
	return err
}

// listen registers l for Shutdown to close; it reports false when Shutdown has begun.
func (s *Server) listen(l io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

// acceptLoop starts a goroutine per connection, speaking TLS with tlsCfg when it is set, until
// ln fails; it returns nil when Shutdown closed ln.
func (s *Server) acceptLoop(ln net.Listener, tlsCfg *tls.Config, hand *handoffListener) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) || isResourceErr(err) {
				// Out of file descriptors and the like: back off as net/http does, having
				// shed a waiting connection to free one.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.acceptFailed(err, delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("http: accept: %w", err)
		}
		delay = 0
		if tlsCfg != nil {
			// The handshake happens on first use, on the connection's goroutine (tls.go).
			nc = tls.Server(nc, tlsCfg)
		}
		s.accepting.Add(1)
		go s.serveConn(nc, hand)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// Shutdown stops accepting connections and waits for requests in flight, or for ctx to end.
// Idle connections are closed at once; a connection closes after the answer it is making.
// When ctx ends first, the requests still running see their context cancelled, every
// connection is closed, and Shutdown returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	s.mu.Lock()
	s.shutting.Store(true)
	for ln := range s.listeners {
		_ = ln.Close()
	}
	for c := range s.active {
		// Wakes a connection blocked in Read; see conn.read. A raw socket never blocks.
		if c.conn != nil {
			_ = c.conn.SetReadDeadline(pastDeadline)
		}
	}
	s.mu.Unlock()

	httpErr := s.srv.Shutdown(ctx)
	done := make(chan struct{})
	go func() {
		// First the accept loops, then the connections they were starting, then every
		// connection: each of these only starts ones counted by the next.
		s.serving.Wait()
		s.accepting.Wait()
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return httpErr
	case <-ctx.Done():
	}
	s.cancelBase()
	s.mu.Lock()
	for c := range s.active {
		c.ctx.Cancel()
		if c.conn != nil {
			_ = c.conn.Close()
		}
	}
	s.mu.Unlock()
	return fmt.Errorf("http: shutdown: %w", ctx.Err())
}
