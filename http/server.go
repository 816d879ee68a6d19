// Package http is Chihaya's HTTP frontend (BEP 3, 7, 23, 24, 48): it parses announces and
// scrapes from the raw query string into tracker models, runs them through the core, and
// bencodes the answers. Routes:
//
//	GET /announce            GET /scrape
//	GET /:passkey/announce   GET /:passkey/scrape
//	GET /:site_password/update?action=…   GET /:report_password/report?get=…   (private mode, control.go)
//
// In public mode the passkey segment is accepted and ignored, so a torrent made for a private
// deployment still works against a public one; private mode gives it meaning.
//
// The connections are package fast's: it reads announces and scrapes itself and hands them to
// Server.ServeFast (fast.Handler), and gives every other request to net/http, which serves
// Server.Handler. This package keeps what an announce means: routing, query parsing
// (parse.go, package query), address resolving (package clientip) and bencoding (writer.go).
package http

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/golang/glog"
	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/clientip"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/fast"
	"github.com/chihaya/chihaya/http/query"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// Server is the HTTP frontend. Its handlers are safe for concurrent use.
type Server struct {
	tkr            *tracker.Tracker
	ips            *clientip.Resolver
	limiter        *ratelimit.Limiter
	realIPHeader   string
	requestTimeout time.Duration

	recorder Recorder
	counters counters
	queues   QueueReporter

	// Private mode's update and report endpoints (control.go); ctl is nil in public mode.
	ctl         *control
	reportStats ReportStats

	router *httprouter.Router
	// websocket serves the requests that ask for an upgrade (WithWebSocket), at every path.
	websocket nethttp.Handler
	extra     map[string]nethttp.Handler
	// full serves full scrapes; nil when full_scrape_enabled is off.
	full *fullScrape
	// prefixes are handlers of whole subtrees (such as "/admin/"), for any method.
	prefixes []prefixHandler
	scratch  sync.Pool

	// conns serves the connections: the fast path, which answers through ServeFast, and the
	// hand-over of everything else to net/http, which serves route.
	conns *fast.Server
	// fileLimit is the open files limit max_connections 0 is derived from (WithFileLimit).
	fileLimit uint64
}

type scratch struct {
	q  query.Params
	a  models.Announce
	sc models.Scrape
	w  writer
	rq request
}

// Recorder is told of every answered request, for metrics; *stats.Stats implements it. Record
// is called on the request path and must not block.
type Recorder interface {
	Record(r stats.Request)
}

// Option configures a Server.
type Option func(*Server)

// WithRecorder has the server report every answered request to r.
func WithRecorder(r Recorder) Option {
	return func(s *Server) { s.recorder = r }
}

// WithWebSocket has h serve every request with an Upgrade header (the WebSocket tracker).
func WithWebSocket(h nethttp.Handler) Option {
	return func(s *Server) { s.websocket = h }
}

// WithLimiter has the server refuse announces and scrapes over l's rates (a nil l limits
// nothing).
func WithLimiter(l *ratelimit.Limiter) Option {
	return func(s *Server) { s.limiter = l }
}

// WithFileLimit tells the server the process's open files limit, from which max_connections 0
// is derived (config.DefaultMaxConnections). Without it the server assumes 1024, the usual
// default soft limit.
func WithFileLimit(n uint64) Option {
	return func(s *Server) { s.fileLimit = n }
}

// NewServer returns a frontend for tkr configured by cfg.
func NewServer(cfg *config.Config, tkr *tracker.Tracker, opts ...Option) (*Server, error) {
	ips, err := clientip.New(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		tkr:            tkr,
		ips:            ips,
		realIPHeader:   cfg.RealIPHeader,
		requestTimeout: cfg.RequestTimeout.Duration,
		extra:          make(map[string]nethttp.Handler),
	}
	for _, o := range opts {
		o(s)
	}
	if cfg.PrivateEnabled {
		s.ctl = newControl(cfg)
	}
	if cfg.FullScrapeEnabled {
		s.full = &fullScrape{tkr: tkr, interval: cfg.FullScrapeInterval.Duration}
	}
	s.scratch.New = func() any { return new(scratch) }

	r := httprouter.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = false
	r.GET("/:first", s.serveOne)
	r.GET("/:first/:action", s.serveTwo)
	r.NotFound = nethttp.HandlerFunc(s.notFound)
	r.PanicHandler = s.panicked
	s.router = r

	maxConns := cfg.MaxConnections
	if maxConns == 0 {
		limit := s.fileLimit
		if limit == 0 {
			limit = 1024
		}
		maxConns = config.DefaultMaxConnections(limit)
	}
	s.conns, err = fast.New(fast.Config{
		KeepAlive:           cfg.HTTPKeepAlive,
		ReadHeaderTimeout:   cfg.HTTPReadHeaderTimeout.Duration,
		IdleTimeout:         cfg.HTTPIdleTimeout.Duration,
		WriteTimeout:        cfg.HTTPWriteTimeout.Duration,
		RequestTimeout:      cfg.RequestTimeout.Duration,
		RealIPHeader:        cfg.RealIPHeader,
		MaxConnections:      maxConns,
		MaxConnectionsPerIP: cfg.MaxConnectionsPerIP,
		// A trusted proxy's connections carry many clients.
		Uncapped: ips.TrustedProxy,
		// Legacy Gazelle sends its updates and reports without a Host header.
		AddHost: cfg.PrivateEnabled,
	}, s, nethttp.HandlerFunc(s.route))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Handle serves h at the one-segment path "/"+name (such as "stats"), beside announce and
// scrape. It must be called before Serve.
func (s *Server) Handle(name string, h nethttp.Handler) {
	s.extra[name] = h
}

type prefixHandler struct {
	prefix string
	h      nethttp.Handler
}

// HandlePrefix serves h for every path under prefix (such as "/admin/"), whatever the method,
// before announce, scrape and the one-segment handlers. It must be called before Serve.
func (s *Server) HandlePrefix(prefix string, h nethttp.Handler) {
	s.prefixes = append(s.prefixes, prefixHandler{prefix, h})
}

// Handler returns the frontend's HTTP handler.
func (s *Server) Handler() nethttp.Handler { return nethttp.HandlerFunc(s.route) }

// route sends a request the fast path did not take to a prefix handler, else to the router.
func (s *Server) route(w nethttp.ResponseWriter, r *nethttp.Request) {
	if s.websocket != nil && r.Header.Get("Upgrade") != "" {
		// WebSocket (issue 20): the fast path hands every request with an Upgrade header over.
		s.websocket.ServeHTTP(w, r)
		return
	}
	for _, p := range s.prefixes {
		if strings.HasPrefix(r.URL.Path, p.prefix) {
			p.h.ServeHTTP(w, r)
			return
		}
	}
	s.router.ServeHTTP(w, r)
}

// Serve accepts plain HTTP connections on ln until Shutdown. It returns nil after a graceful
// shutdown. Announces and scrapes are answered by the fast path (package fast), through
// ServeFast; a connection that sends anything else is handed over to net/http, which serves
// Handler.
func (s *Server) Serve(ln net.Listener) error { return s.conns.Serve(ln) }

// ServeTLS is Serve over TLS with cfg (see tlscert.Store's Config): the same routes, the same
// fast path.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) error { return s.conns.ServeTLS(ln, cfg) }

// Shutdown stops accepting connections and waits for requests in flight, or for ctx to end.
// Idle connections are closed at once; a connection closes after the answer it is making.
// When ctx ends first, the requests still running see their context cancelled, every
// connection is closed, and Shutdown returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error { return s.conns.Shutdown(ctx) }

// ConnectionLimits returns the budget in force: max_connections (derived when configured as
// 0) and max_connections_per_ip (0: no cap).
func (s *Server) ConnectionLimits() (maxConns, perIP int) { return s.conns.Limits() }

// Collectors returns the frontend's connection metrics (chihaya_http_*), to register on a
// registry.
func (s *Server) Collectors() []prometheus.Collector { return s.conns.Collectors() }

func (s *Server) serveOne(w nethttp.ResponseWriter, r *nethttp.Request, ps httprouter.Params) {
	switch action := ps.ByName("first"); action {
	case "announce":
		s.serveAnnounce(w, r, "")
	case "scrape":
		s.serveScrape(w, r, "")
	default:
		if h, ok := s.extra[action]; ok {
			h.ServeHTTP(w, r)
			return
		}
		s.notFound(w, r)
	}
}

func (s *Server) serveTwo(w nethttp.ResponseWriter, r *nethttp.Request, ps httprouter.Params) {
	if s.ctl != nil && r.URL.RawQuery == "" && !r.URL.ForceQuery {
		switch ps.ByName("action") {
		case "announce", "scrape", "update", "report":
			nothingToSee(w)
			return
		}
	}
	switch ps.ByName("action") {
	case "announce":
		s.serveAnnounce(w, r, ps.ByName("first"))
	case "scrape":
		s.serveScrape(w, r, ps.ByName("first"))
	default:
		// "update" and "report" under the site's secrets, in private mode only.
		if s.serveControl(w, r, ps.ByName("first"), ps.ByName("action")) {
			return
		}
		s.notFound(w, r)
	}
}

// nothingToSeePage is Ocelot's answer to a request without a query string: what a browser
// shows when a user opens their announce URL.
const nothingToSeePage = `<html><head><meta name="robots" content="noindex, nofollow" /></head><body>Nothing to see here</body></html>`

var textHTML = []string{"text/html"}

// nothingToSee answers, in private mode, /<passkey>/announce (or scrape, update, report) without
// a query string as Ocelot does: with a plain page, whatever the passkey. No BitTorrent client
// announces without a query and Gazelle always sends one, so only people see it.
func nothingToSee(w nethttp.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = textHTML
	h["Cache-Control"] = noCache
	h["Content-Length"] = []string{strconv.Itoa(len(nothingToSeePage))}
	w.WriteHeader(nethttp.StatusOK)
	_, _ = io.WriteString(w, nothingToSeePage)
}

func (s *Server) notFound(w nethttp.ResponseWriter, _ *nethttp.Request) {
	s.counters.badHTTP.Add(1)
	w.Header()["Content-Type"] = textPlain
	w.WriteHeader(nethttp.StatusNotFound)
	_, _ = w.Write([]byte("404 not found: this is a BitTorrent tracker; announce to /announce\n"))
}

func (s *Server) panicked(w nethttp.ResponseWriter, r *nethttp.Request, v any) {
	glog.Errorf("http: panic serving %s %q: %v", r.RemoteAddr, r.URL.RawQuery, v)
	nethttp.Error(w, "internal server error", nethttp.StatusInternalServerError)
}

func (s *Server) serveAnnounce(w nethttp.ResponseWriter, r *nethttp.Request, passkey string) {
	s.serve(stats.Announce, w, r, passkey)
}

func (s *Server) serveScrape(w nethttp.ResponseWriter, r *nethttp.Request, passkey string) {
	if s.full != nil && passkey == "" && !strings.Contains(r.URL.RawQuery, "info_hash=") {
		s.serveFullScrape(w, r)
		return
	}
	s.serve(stats.Scrape, w, r, passkey)
}

// serveFullScrape answers a scrape of nothing with every torrent (full_scrape_enabled).
func (s *Server) serveFullScrape(w nethttp.ResponseWriter, r *nethttp.Request) {
	start := time.Now()
	rq := &request{fromText: r.RemoteAddr, path: r.URL.Path}
	err := s.full.serve(w, r)
	if err != nil {
		glog.Errorf("http: %s full scrape: %v", rq.from(), err)
		wr := &writer{}
		interval, minInterval := s.tkr.Intervals()
		_ = wr.writeFailure(string(models.ErrInternal), interval, minInterval)
		_ = wr.writeTo(w)
	}
	if s.recorder != nil {
		s.recorder.Record(stats.Request{Transport: stats.HTTP, Action: stats.Scrape, Err: err, Duration: time.Since(start)})
	}
}

// request is what announce and scrape need of one request, from net/http or the fast path.
// Its strings may alias the fast path's read buffer: they are valid during the request only.
type request struct {
	ctx       context.Context
	query     string
	passkey   string
	userAgent string
	// remote is the socket's address, unmapped and without a zone; remoteErr is set instead when
	// it could not be read.
	remote    netip.Addr
	remoteErr error
	// realIP is the last line of real_ip_header; hasRealIP tells an empty one from none.
	realIP    string
	hasRealIP bool
	// For logs: the socket's address and port (fromText from net/http, else fromAddr), and the
	// URL path.
	fromText string
	fromAddr netip.AddrPort
	path     string
}

// from is the client's socket address and port, for logs.
func (rq *request) from() string {
	if rq.fromText != "" {
		return rq.fromText
	}
	return rq.fromAddr.String()
}

// serve runs one announce or scrape from net/http with pooled scratch space.
func (s *Server) serve(action stats.Action, w nethttp.ResponseWriter, r *nethttp.Request, passkey string) {
	start := time.Now()
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	sc.w.reset()

	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	rq := &sc.rq
	*rq = request{ctx: ctx, query: r.URL.RawQuery, passkey: passkey, userAgent: r.UserAgent(), fromText: r.RemoteAddr, path: r.URL.Path}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil {
		rq.remoteErr = fmt.Errorf("http: remote address %q: %w", r.RemoteAddr, err)
	} else {
		rq.remote = ap.Addr().Unmap().WithZone("")
	}
	if s.realIPHeader != "" {
		if vals := r.Header.Values(s.realIPHeader); len(vals) > 0 {
			rq.realIP, rq.hasRealIP = vals[len(vals)-1], true
		}
	}
	s.handle(action, sc, start)
	if sc.w.ready {
		if err := sc.w.writeTo(w); err != nil && glog.V(2) {
			// The client is gone: there is no one to answer, and it is not the tracker's failure.
			glog.Infof("http: write to %s: %v", rq.from(), err)
		}
	}
	sc.rq = request{}
}

// ServeFast answers an announce or a scrape the fast path read (fast.Handler): the answer, or
// the failure, is bencoded straight into the connection's output out.
func (s *Server) ServeFast(req *fast.Request, out []byte) []byte {
	sc := s.scratch.Get().(*scratch)
	sc.w.reset()
	own := sc.w.buf
	sc.w.buf, sc.w.start = out, len(out)
	rq := &sc.rq
	*rq = request{
		ctx:       req.Context,
		query:     unsafeString(req.Query),
		passkey:   unsafeString(req.Passkey),
		userAgent: unsafeString(req.UserAgent),
		remote:    req.Remote.Addr(),
		realIP:    unsafeString(req.RealIP),
		hasRealIP: req.HasRealIP,
		fromAddr:  req.Remote,
	}
	if glog.V(2) {
		rq.path = pathForLog(req)
	}
	action := stats.Announce
	if req.Route == fast.RouteScrape {
		action = stats.Scrape
	}
	s.handle(action, sc, req.Start)
	out = sc.w.buf
	sc.w.buf, sc.w.start = own[:0], 0
	*rq = request{}
	s.scratch.Put(sc)
	return out
}

// pathForLog is the path of a fast-path request, for logs.
func pathForLog(req *fast.Request) string {
	p := "/announce"
	if req.Route == fast.RouteScrape {
		p = "/scrape"
	}
	if len(req.Passkey) > 0 {
		return "/" + string(req.Passkey) + p
	}
	return p
}

// unsafeString returns b's bytes as a string without copying; it is valid while b is unchanged.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// handle runs the announce or scrape of sc.rq, answers a failure if there was one, and reports
// the request to the recorder. The answer goes to sc.w, for the caller to send.
func (s *Server) handle(action stats.Action, sc *scratch, start time.Time) {
	rq := &sc.rq
	var err error
	if action == stats.Announce {
		sc.a.Remote = netip.Addr{}
		err = s.announce(rq, sc, start)
	} else {
		err = s.scrape(rq, sc, start)
	}
	if err != nil && sc.w.ready {
		// The answer is made and the core failed after it: the client gets the answer, and
		// the error is logged only.
		if glog.V(2) {
			glog.Infof("http: %s after the answer: %v", rq.from(), err)
		}
		err = nil
	} else if err != nil {
		s.fail(&sc.w, rq, err)
		s.counters.failure(err)
	}
	s.record(action, rq, sc, err, start)
}

// record reports one answered request to the recorder, if there is one. The family is the
// resolved client's for an announce (which may be behind a trusted proxy), else the socket's.
func (s *Server) record(action stats.Action, rq *request, sc *scratch, err error, start time.Time) {
	if s.recorder == nil {
		return
	}
	family := models.IPv4
	event := models.None
	if action == stats.Announce && sc.a.Remote.IsValid() {
		family = models.FamilyOf(sc.a.Remote)
		event = sc.a.Event
	} else if rq.remote.Is6() {
		family = models.IPv6
	}
	s.recorder.Record(stats.Request{
		Transport: stats.HTTP,
		Action:    action,
		Family:    family,
		Event:     event,
		Err:       err,
		Duration:  time.Since(start),
	})
}

// announce runs the announce of rq; start is when the request began, the limiter's time (a
// reading of the clock costs more than the rest of the limiter's check).
func (s *Server) announce(rq *request, sc *scratch, start time.Time) error {
	// The limiter's line of its table loads while the query is parsed (a memory read, with many
	// client addresses, that the check would otherwise wait for).
	hint := s.limiter.Prefetch(ratelimit.Announce, rq.remote)
	if err := sc.q.Parse(rq.query); err != nil {
		return models.ErrMalformedRequest
	}
	a := &sc.a
	if err := parseAnnounce(&sc.q, a, s.ctl != nil); err != nil {
		return err
	}
	a.Passkey = rq.passkey
	a.UserAgent = rq.userAgent
	if err := s.resolve(rq, &sc.q, a); err != nil {
		return err
	}
	if !s.limiter.AllowHinted(ratelimit.Announce, a.Remote, start, hint) {
		return models.ErrRateLimited
	}
	return s.tkr.HandleAnnounce(rq.ctx, a, &sc.w)
}

// scrape runs the scrape of rq; start is when the request began, the limiter's time.
func (s *Server) scrape(rq *request, sc *scratch, start time.Time) error {
	if err := sc.q.Parse(rq.query); err != nil {
		return models.ErrMalformedRequest
	}
	if err := parseScrape(&sc.q, &sc.sc, s.tkr.MaxScrapeInfoHashes(), s.ctl != nil); err != nil {
		return err
	}
	sc.sc.Passkey = rq.passkey
	if s.limiter != nil {
		remote, err := s.remoteAddr(rq)
		if err != nil {
			return err
		}
		if !s.limiter.Allow(ratelimit.Scrape, remote, start) {
			return models.ErrRateLimited
		}
	}
	return s.tkr.HandleScrape(rq.ctx, &sc.sc, &sc.w)
}

// fail answers err as a bencoded failure. Texts of models.ClientError go to the client as they
// are; anything else is logged and the client is told only that the tracker failed.
func (s *Server) fail(w *writer, rq *request, err error) {
	var ce models.ClientError
	if !errors.As(err, &ce) {
		glog.Errorf("http: %s %s: %v", rq.from(), rq.path, err)
		ce = models.ErrInternal
	} else if glog.V(2) {
		glog.Infof("http: %s %s: %v", rq.from(), rq.path, err)
	}
	interval, minInterval := s.tkr.FailureIntervals()
	_ = w.writeFailure(string(ce), interval, minInterval)
}

// failHTTP answers err as a bencoded failure through net/http (see fail).
func (s *Server) failHTTP(w nethttp.ResponseWriter, rq *request, err error) {
	var wr writer
	s.fail(&wr, rq, err)
	if werr := wr.writeTo(w); werr != nil && glog.V(2) {
		glog.Infof("http: write failure to %s: %v", rq.from(), werr)
	}
}

// resolve sets the announce's endpoints by the rules of clientip: the socket's address, or the
// last address in real_ip_header when the socket belongs to a trusted proxy; the ip, ipv4 and
// ipv6 parameters count only when allow_ip_spoofing is on.
func (s *Server) resolve(rq *request, q *query.Params, a *models.Announce) error {
	remote, err := s.remoteAddr(rq)
	if err != nil {
		return err
	}
	clientip.Begin(a, remote)
	if !s.ips.Spoofing() {
		return nil
	}
	port := a.Endpoint.Port()
	for _, key := range [...]string{"ip", "ipv4", "ipv6"} {
		v, ok := q.Get(key)
		if !ok || len(v) == 0 {
			continue
		}
		ap, ok := parseEndpoint(string(v), port)
		if !ok || (key == "ipv4" && !ap.Addr().Is4()) || (key == "ipv6" && !ap.Addr().Is6()) {
			return models.ErrInvalidIP
		}
		s.ips.Claim(a, ap)
	}
	return nil
}

// parseEndpoint parses "addr", "addr:port" or "[addr]:port"; without a port it uses port.
func parseEndpoint(s string, port uint16) (netip.AddrPort, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.Port() != 0
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), port), true
}

// remoteAddr is the client's address (see clientip.Resolver.Remote).
func (s *Server) remoteAddr(rq *request) (netip.Addr, error) {
	if rq.remoteErr != nil {
		return netip.Addr{}, rq.remoteErr
	}
	return s.ips.Remote(rq.remote, rq.realIP, rq.hasRealIP)
}
