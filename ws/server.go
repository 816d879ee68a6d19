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
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"
	"github.com/gorilla/websocket"
	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/clientip"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// writeTimeout bounds the writing of one frame to a client.
const writeTimeout = 10 * time.Second

// readBufferSize is each socket's read buffer; longer messages are read through it in pieces.
const readBufferSize = 1024

// maxSwarmsPerConn bounds the torrents one socket may announce: the entries a connection holds
// in the index, and the stopped announces its close makes.
const maxSwarmsPerConn = 1024

// Server answers WebSocket upgrades and serves the tracker protocol on them. Its methods are
// safe for concurrent use.
type Server struct {
	tkr          *tracker.Tracker
	ips          *clientip.Resolver
	limiter      *ratelimit.Limiter
	realIPHeader string
	reqTimeout   time.Duration

	maxMessage  int64
	maxOffers   int
	idleTimeout time.Duration
	ping        time.Duration
	queueLen    int

	up    websocket.Upgrader
	idx   *index
	relay relay
	// redis and redisPrefix, when set (WithRedis), make the relay between instances.
	redis       goredis.UniversalClient
	redisPrefix string
	rr          *redisRelay
	m           metrics

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

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
		// An idle socket holds a small read buffer of its own rather than net/http's 4 KiB one;
		// writes borrow a buffer from the pool only while they write.
		ReadBufferSize:  readBufferSize,
		WriteBufferPool: &sync.Pool{},
		// Browsers on any site may use a public tracker, as they may the reference's.
		CheckOrigin: func(*http.Request) bool { return true },
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
	c := &conn{s: s, ws: ws, remote: remote, passkey: pk, userAgent: strings.Clone(r.UserAgent()),
		joined: make(map[models.InfoHash]*joined)}
	if !s.track(c) {
		_ = ws.Close()
		return
	}
	s.m.accepted.Add(1)
	// The socket is read on a goroutine of its own, and this one returns: net/http then lets go
	// of the request, its headers and its buffers, which an idle socket would otherwise keep.
	go c.serve()
}

// track registers c for Close; it reports false once the server is closed.
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
	s.closed = true
	for c := range s.conns {
		c.kill()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if s.rr != nil {
		s.rr.close()
	}
	return err
}

// joined is what a connection knows of a peer it announced: its ID and last counters, which an
// answer message (which carries none) repeats.
type joined struct {
	id         models.PeerID
	seeder     bool
	up, down   int64
	registered bool // in the index
}

// conn is one WebSocket. Its reader runs on a goroutine of its own; a writer goroutine runs
// only while its send queue is not empty.
type conn struct {
	s         *Server
	ws        *websocket.Conn
	remote    netip.Addr
	passkey   string
	userAgent string

	// The reader's own state.
	joined map[models.InfoHash]*joined
	rq     request
	offers []offer
	picked []member
	buf    []byte
	resp   models.AnnounceResponse
	files  []models.TorrentStats

	mu      sync.Mutex
	queue   [][]byte
	writing bool
	dead    bool
	slow    bool
	pinger  *time.Timer

	idle atomic.Bool // the read deadline passed
}

// serve reads messages until the socket fails or closes, then removes the connection's peers.
func (c *conn) serve() {
	defer c.s.untrack(c)
	s := c.s
	nc := c.ws.NetConn()
	// net/http's write deadline (http_write_timeout) is the upgrade's; from now on the socket's
	// own rules apply.
	_ = nc.SetDeadline(time.Time{})
	c.ws.SetReadLimit(s.maxMessage)
	c.extend()
	c.ws.SetPongHandler(func(string) error { c.extend(); return nil })
	if s.ping > 0 {
		c.mu.Lock()
		c.pinger = time.AfterFunc(s.ping, c.sendPing)
		c.mu.Unlock()
	}
	for {
		bp, err := c.read()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				s.m.bad[badTooLarge].Add(1)
			case errors.As(err, &ne) && ne.Timeout():
				s.m.idleClosed.Add(1)
			}
			break
		}
		c.extend()
		s.handle(c, *bp)
		if cap(*bp) <= maxPooledRead {
			readPool.Put(bp)
		}
	}
	c.mu.Lock()
	if c.pinger != nil {
		c.pinger.Stop()
	}
	c.mu.Unlock()
	c.kill()
	s.leaveAll(c)
}

// sendPing pings the client, which answers with a pong that keeps the socket from going idle,
// and arms the next ping.
func (c *conn) sendPing() {
	if c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)) != nil {
		return
	}
	c.mu.Lock()
	if !c.dead {
		c.pinger.Reset(c.s.ping)
	}
	c.mu.Unlock()
}

// readPool holds the buffers messages are read into: only a socket handling a message holds
// one. A message is never kept past its handling (relays copy what they send).
var readPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledRead is the largest read buffer put back in readPool.
const maxPooledRead = 64 << 10

// read reads the next data message into a buffer of readPool.
func (c *conn) read() (*[]byte, error) {
	_, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	bp := readPool.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*bp = b
			return bp, nil
		}
		if err != nil {
			*bp = b[:0]
			readPool.Put(bp)
			return nil, err
		}
	}
}

// extend moves the idle deadline on: any message or pong keeps the socket.
func (c *conn) extend() {
	if c.s.idleTimeout > 0 {
		_ = c.ws.SetReadDeadline(time.Now().Add(c.s.idleTimeout))
	}
}

// send queues msg, which the queue then owns. A peer whose queue is full is too slow to keep:
// its socket is closed, and its reader removes it from its swarms. send never blocks.
func (c *conn) send(msg []byte) bool {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return false
	}
	if len(c.queue) >= c.s.queueLen {
		c.dead, c.slow = true, true
		c.mu.Unlock()
		c.s.m.slowDropped.Add(1)
		_ = c.ws.NetConn().Close()
		return false
	}
	c.queue = append(c.queue, msg)
	if !c.writing {
		c.writing = true
		go c.flush()
	}
	c.mu.Unlock()
	return true
}

// flush writes the queue until it is empty. Each batch of queued messages goes out in one
// write: text frames built here, whole, so that the control frames gorilla writes itself (pings,
// pongs, a close), each one write of its own, never land inside one.
func (c *conn) flush() {
	nc := c.ws.NetConn()
	bp := framePool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledFrames {
			framePool.Put(bp)
		}
	}()
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		if len(batch) == 0 || c.dead {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		out := (*bp)[:0]
		for _, msg := range batch {
			out = appendTextFrame(out, msg)
		}
		*bp = out
		_ = nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := nc.Write(out); err != nil {
			c.kill()
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			return
		}
	}
}

// framePool holds the buffers batches of frames are built in: only writing sockets hold one.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledFrames is the largest buffer put back in framePool.
const maxPooledFrames = 1 << 20

// appendTextFrame appends msg as one unmasked, final text frame (RFC 6455 §5.2), as a server
// sends them.
func appendTextFrame(dst, msg []byte) []byte {
	const finText = 0x81
	n := len(msg)
	switch {
	case n < 126:
		dst = append(dst, finText, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, finText, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, finText, 127, byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, msg...)
}

// kill closes the socket; the reader then finds it closed.
func (c *conn) kill() {
	c.mu.Lock()
	c.dead = true
	c.queue = nil
	c.mu.Unlock()
	_ = c.ws.NetConn().Close()
}

// leaveAll removes the connection's peers from every swarm it announced, as stopped announces.
func (s *Server) leaveAll(c *conn) {
	for ih, j := range c.joined {
		if !j.registered {
			continue
		}
		s.idx.leave(&ih, &j.id, c)
		if s.relay != nil {
			s.relay.Leave(&ih, &j.id)
		}
		a := models.Announce{
			InfoHash: ih, PeerID: j.id, Passkey: c.passkey, UserAgent: c.userAgent,
			Endpoint: netip.AddrPortFrom(c.remote, 0), Remote: c.remote,
			Event: models.Stopped, Uploaded: j.up, Downloaded: j.down, Left: leftOf(j.seeder),
			CompactOne: true, WebRTC: true,
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.reqTimeout)
		if err := s.tkr.HandleAnnounce(ctx, &a, discard{}); err != nil && glog.V(2) {
			glog.Infof("ws: %s: stopped on close: %v", c.remote, err)
		}
		cancel()
	}
	clear(c.joined)
}

type discard struct{}

func (discard) WriteAnnounce(*models.AnnounceResponse) error { return nil }

func leftOf(seeder bool) int64 {
	if seeder {
		return 0
	}
	return 1
}
