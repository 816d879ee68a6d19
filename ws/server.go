// Package ws is the WebSocket tracker that WebTorrent and other browser clients announce to
// (protocol.md §2.9): JSON text frames on one long-lived socket per client, over which the
// tracker relays WebRTC offers and answers between the peers of a swarm instead of handing out
// addresses.
//
// Every announce goes through the core (tracker.Tracker.HandleAnnounce) like an HTTP or UDP
// one, so the access list, the client whitelist, private mode's passkeys and the rate limiter
// apply, and the peer is counted in its swarm: a WebRTC peer is stored hidden (it has no
// address to hand out) with its socket's address and port 0. What this package keeps is the
// local index of which socket speaks for which peer, through which offers and answers go; with
// a Relay (the Redis driver's) they also reach peers connected to other instances.
package ws

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/golang/glog"
	"github.com/gorilla/websocket"
	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/clientip"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/tracker"
)

// writeTimeout bounds the writing of one frame to a client.
const writeTimeout = 10 * time.Second

// maxSwarmsPerConn bounds the torrents one socket may announce: the entries a connection holds
// in the index, and the stopped announces its close makes.
const maxSwarmsPerConn = 1024

// Server answers WebSocket upgrades and serves the tracker protocol on them. Its methods are
// safe for concurrent use.
type Server struct {
	tkr          *tracker.Tracker
	ips          *clientip.Resolver
	limiter      *ratelimit.Limiter
	recorder     Recorder
	realIPHeader string
	reqTimeout   time.Duration

	maxMessage  int64
	maxOffers   int
	idleTimeout time.Duration
	ping        time.Duration
	queueLen    int

	up    websocket.Upgrader
	poll  *poller // nil: every socket is read on a goroutine of its own
	idx   *index
	relay relay
	// redis and redisPrefix, when set (WithRedis), make the relay between instances.
	redis       goredis.UniversalClient
	redisPrefix string
	rr          *redisRelay
	relayTiming *relayTiming // nil: the relay's own constants
	// full answers scrapes without info_hash; nil when full_scrape_enabled is off.
	full *fullScrape
	m    metrics

	// scratch holds the room handling messages takes (getScratch).
	scratch sync.Pool
	// base is the context of every call to the core.
	base       context.Context
	cancelBase context.CancelFunc
	// epoch starts the server's clock (clock), which sockets are timed by.
	epoch      time.Time
	stop       chan struct{}
	keeperDone sync.WaitGroup

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// clock is the time since the server started, in nanoseconds, monotonic.
func (s *Server) clock() int64 { return int64(time.Since(s.epoch)) }

// Option configures a Server.
type Option func(*Server)

// WithLimiter has the server check l before every announce and scrape, as HTTP and UDP do.
func WithLimiter(l *ratelimit.Limiter) Option { return func(s *Server) { s.limiter = l } }

// New returns a server for the tracker tkr configured by cfg.
func New(cfg *config.Config, tkr *tracker.Tracker, opts ...Option) (*Server, error) {
	ips, err := clientip.New(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		tkr:          tkr,
		ips:          ips,
		realIPHeader: cfg.RealIPHeader,
		reqTimeout:   cfg.RequestTimeout.Duration,
		maxMessage:   int64(cfg.WSMaxMessageBytes),
		maxOffers:    cfg.WSMaxOffers,
		idleTimeout:  cfg.WSIdleTimeout.Duration,
		ping:         cfg.WSPingInterval.Duration,
		queueLen:     cfg.WSSendQueue,
		idx:          newIndex(),
		conns:        make(map[*conn]struct{}),
	}
	s.up = websocket.Upgrader{
		HandshakeTimeout: writeTimeout,
		// gorilla/websocket answers the handshake only: the tracker reads and writes the frames
		// itself (frame.go). The read buffer it makes regardless is the smallest it takes, and
		// is dropped with its Conn; it makes no write buffer with a pool.
		ReadBufferSize:  maxControlPayload,
		WriteBufferPool: &sync.Pool{},
		// Browsers on any site may use a public tracker, as they may the reference's.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	if cfg.FullScrapeEnabled {
		s.full = &fullScrape{s: s, interval: cfg.FullScrapeInterval.Duration}
	}
	for _, o := range opts {
		o(s)
	}
	s.m.init(s)
	if s.redis != nil {
		if s.rr, err = newRedisRelay(s, s.redis, s.redisPrefix); err != nil {
			return nil, err
		}
		s.relay = s.rr
	}
	if s.poll, err = newPoller(); err != nil {
		glog.Warningf("%v: every WebSocket is read on a goroutine of its own", err)
		s.poll = nil
	}
	s.epoch, s.stop = time.Now(), make(chan struct{})
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.keeperDone.Add(1)
	go s.keep()
	return s, nil
}

// IsUpgrade reports whether r asks for a WebSocket.
func IsUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && headerHas(r.Header, "Connection", "upgrade") &&
		headerHas(r.Header, "Upgrade", "websocket")
}

func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// passkey returns the passkey of an announce path, /announce and / having none; ok is false for
// any other path.
func passkey(path string) (string, bool) {
	switch path {
	case "/", "/announce":
		return "", true
	}
	p, ok := strings.CutSuffix(path, "/announce")
	if !ok || len(p) < 2 || strings.IndexByte(p[1:], '/') >= 0 {
		return "", false
	}
	return p[1:], true
}

// ServeHTTP upgrades r to a WebSocket at /, /announce and /<passkey>/announce, and serves it
// until it closes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pk, ok := passkey(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	socket, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(w, "bad remote address", http.StatusBadRequest)
		return
	}
	var hdr string
	var has bool
	if s.realIPHeader != "" {
		vs := r.Header.Values(s.realIPHeader)
		if has = len(vs) > 0; has {
			hdr = vs[len(vs)-1]
		}
	}
	remote, err := s.ips.Remote(socket.Addr(), hdr, has)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		s.m.upgradeFailed.Add(1)
		return // the upgrader answered
	}
	// From here on the socket is the tracker's: gorilla's Conn, which read nothing past the
	// handshake, is dropped with its buffer, and net/http, when this returns, lets go of the
	// request, its headers and its buffers, which an idle socket would otherwise keep.
	nc := ws.NetConn()
	// net/http's deadlines (http_write_timeout) were the upgrade's; the socket's own rules apply
	// now.
	_ = nc.SetDeadline(time.Time{})
	c := &conn{s: s, nc: nc, remote: remote, passkey: pk, userAgent: strings.Clone(r.UserAgent())}
	now := s.clock()
	c.lastHeard.Store(now)
	c.lastPing = now
	c.fd = -1
	if s.poll != nil && s.poll.take(c, nc) {
		if err := s.poll.add(c); err != nil {
			glog.Errorf("%v: closing a WebSocket", err)
			s.poll.abandon(c)
			_ = nc.Close()
			return
		}
	}
	if !s.track(c) {
		if c.polled {
			s.poll.abandon(c)
		}
		_ = nc.Close()
		return
	}
	s.m.accepted.Add(1)
	if !c.polled {
		go c.serve()
		return
	}
	s.m.polled.Add(1)
	if err := s.poll.start(c); err != nil {
		c.kill()
	}
}

// track registers c for Close and the keeper; it reports false once the server is closed.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Close closes every WebSocket and waits, until ctx ends, for their peers to leave their
// swarms.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.keeperDone.Wait()
	for _, c := range conns {
		c.kill()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if s.poll != nil {
		s.poll.close()
	}
	s.cancelBase()
	if s.rr != nil {
		s.rr.close()
	}
	return err
}
