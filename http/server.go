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
package http

import (
	"context"
	"errors"
	"fmt"
	"net"
	nethttp "net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/golang/glog"
	"github.com/julienschmidt/httprouter"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/query"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// maxHeaderBytes bounds a request's line and headers. A scrape of 74 fully escaped hashes is
// about 5 KiB.
const maxHeaderBytes = 16 << 10

// Server is the HTTP frontend. Its handlers are safe for concurrent use.
type Server struct {
	tkr            *tracker.Tracker
	allowSpoofing  bool
	realIPHeader   string
	trusted        []netip.Prefix
	requestTimeout time.Duration

	recorder Recorder

	// Private mode's update and report endpoints (control.go); ctl is nil in public mode.
	ctl         *control
	reportStats ReportStats

	router  *httprouter.Router
	extra   map[string]nethttp.Handler
	srv     *nethttp.Server
	scratch sync.Pool
}

type scratch struct {
	q  query.Params
	a  models.Announce
	sc models.Scrape
	w  writer
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

// NewServer returns a frontend for tkr configured by cfg.
func NewServer(cfg *config.Config, tkr *tracker.Tracker, opts ...Option) (*Server, error) {
	trusted, err := cfg.TrustedProxyPrefixes()
	if err != nil {
		return nil, err
	}
	s := &Server{
		tkr:            tkr,
		allowSpoofing:  cfg.AllowIPSpoofing,
		realIPHeader:   cfg.RealIPHeader,
		trusted:        trusted,
		requestTimeout: cfg.RequestTimeout.Duration,
		extra:          make(map[string]nethttp.Handler),
	}
	for _, o := range opts {
		o(s)
	}
	if cfg.PrivateEnabled {
		s.ctl = newControl(cfg)
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

	s.srv = &nethttp.Server{
		Handler:           r,
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout.Duration,
		WriteTimeout:      cfg.HTTPWriteTimeout.Duration,
		IdleTimeout:       cfg.HTTPIdleTimeout.Duration,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          nil,
	}
	s.srv.SetKeepAlivesEnabled(cfg.HTTPKeepAlive)
	return s, nil
}

// Handle serves h at the one-segment path "/"+name (such as "stats"), beside announce and
// scrape. It must be called before Serve.
func (s *Server) Handle(name string, h nethttp.Handler) {
	s.extra[name] = h
}

// Handler returns the frontend's HTTP handler.
func (s *Server) Handler() nethttp.Handler { return s.router }

// Serve accepts connections on ln until Shutdown. It returns nil after a graceful shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, nethttp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for requests in flight, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

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

func (s *Server) notFound(w nethttp.ResponseWriter, _ *nethttp.Request) {
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
	s.serve(stats.Scrape, w, r, passkey)
}

// serve runs one announce or scrape with pooled scratch space, answers a failure if there was
// one, and reports the request to the recorder.
func (s *Server) serve(action stats.Action, w nethttp.ResponseWriter, r *nethttp.Request, passkey string) {
	start := time.Now()
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	sc.w.w, sc.w.sent = w, false
	defer func() { sc.w.w = nil }()

	var err error
	if action == stats.Announce {
		sc.a.Remote = netip.Addr{}
		err = s.announce(r, passkey, sc)
	} else {
		err = s.scrape(r, passkey, sc)
	}
	if err != nil && sc.w.sent {
		// The answer went out and writing it failed: the client is gone. There is no one to
		// answer, and it is not the tracker's failure.
		if glog.V(2) {
			glog.Infof("http: write to %s: %v", r.RemoteAddr, err)
		}
		err = nil
	} else if err != nil {
		s.fail(&sc.w, r, err)
	}
	s.record(action, r, sc, err, start)
}

// record reports one answered request to the recorder, if there is one. The family is the
// resolved client's for an announce (which may be behind a trusted proxy), else the socket's.
func (s *Server) record(action stats.Action, r *nethttp.Request, sc *scratch, err error, start time.Time) {
	if s.recorder == nil {
		return
	}
	family := models.IPv4
	event := models.None
	if action == stats.Announce && sc.a.Remote.IsValid() {
		family = models.FamilyOf(sc.a.Remote)
		event = sc.a.Event
	} else if strings.HasPrefix(r.RemoteAddr, "[") {
		// net/http writes IPv6 remote addresses as "[addr]:port" and IPv4 ones, mapped or
		// not, as "a.b.c.d:port".
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

func (s *Server) announce(r *nethttp.Request, passkey string, sc *scratch) error {
	if err := sc.q.Parse(r.URL.RawQuery); err != nil {
		return models.ErrMalformedRequest
	}
	a := &sc.a
	if err := parseAnnounce(&sc.q, a); err != nil {
		return err
	}
	a.Passkey = passkey
	a.UserAgent = r.UserAgent()
	if err := s.resolve(r, &sc.q, a); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	return s.tkr.HandleAnnounce(ctx, a, &sc.w)
}

func (s *Server) scrape(r *nethttp.Request, passkey string, sc *scratch) error {
	if err := sc.q.Parse(r.URL.RawQuery); err != nil {
		return models.ErrMalformedRequest
	}
	if err := parseScrape(&sc.q, &sc.sc, s.tkr.MaxScrapeInfoHashes()); err != nil {
		return err
	}
	sc.sc.Passkey = passkey
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	return s.tkr.HandleScrape(ctx, &sc.sc, &sc.w)
}

// fail answers err as a bencoded failure. Texts of models.ClientError go to the client as they
// are; anything else is logged and the client is told only that the tracker failed.
func (s *Server) fail(w *writer, r *nethttp.Request, err error) {
	var ce models.ClientError
	if !errors.As(err, &ce) {
		glog.Errorf("http: %s %s: %v", r.RemoteAddr, r.URL.Path, err)
		ce = models.ErrInternal
	} else if glog.V(2) {
		glog.Infof("http: %s %s: %v", r.RemoteAddr, r.URL.Path, err)
	}
	interval, minInterval := s.tkr.Intervals()
	if werr := w.writeFailure(string(ce), interval, minInterval); werr != nil && glog.V(2) {
		glog.Infof("http: write failure to %s: %v", r.RemoteAddr, werr)
	}
}

// resolve sets the announce's endpoints. The address is the socket's, or the last address in
// real_ip_header when the socket belongs to a trusted proxy; the ip, ipv4 and ipv6 parameters
// count only when allow_ip_spoofing is on.
func (s *Server) resolve(r *nethttp.Request, q *query.Params, a *models.Announce) error {
	remote, err := s.remoteAddr(r)
	if err != nil {
		return err
	}
	a.Remote = remote
	port := a.Endpoint.Port()
	a.Endpoint = netip.AddrPortFrom(remote, port)
	if !s.allowSpoofing {
		return nil
	}
	for _, key := range [...]string{"ip", "ipv4", "ipv6"} {
		v, ok := q.Get(key)
		if !ok || len(v) == 0 {
			continue
		}
		ap, ok := parseEndpoint(string(v), port)
		if !ok || (key == "ipv4" && !ap.Addr().Is4()) || (key == "ipv6" && !ap.Addr().Is6()) {
			return models.ErrInvalidIP
		}
		if models.FamilyOf(ap.Addr()) == models.FamilyOf(remote) {
			a.Endpoint = ap
		} else {
			a.Other = ap
		}
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

func (s *Server) remoteAddr(r *nethttp.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("http: remote address %q: %w", r.RemoteAddr, err)
	}
	remote := ap.Addr().Unmap().WithZone("")
	if s.realIPHeader == "" || !s.isTrusted(remote) {
		return remote, nil
	}
	vals := r.Header.Values(s.realIPHeader)
	if len(vals) == 0 {
		return remote, nil
	}
	last := vals[len(vals)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(last))
	if err != nil {
		return netip.Addr{}, models.ErrInvalidIP
	}
	return addr.Unmap().WithZone(""), nil
}

func (s *Server) isTrusted(a netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
