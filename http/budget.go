package http

import (
	"errors"
	"net"
	nethttp "net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/config"
)

// What the Server does with the connection budget (conns.go): admitting, shedding and
// uncounting its connections, the handed-over ones included, and logging accept failures
// rarely.

// acceptLogEvery is the least time between two log lines about failing accepts.
const acceptLogEvery = 10 * time.Second

// pastDeadline wakes a blocked Read at once.
var pastDeadline = time.Unix(1, 0)

// WithFileLimit tells the server the process's open files limit, from which max_connections 0
// is derived (config.DefaultMaxConnections). Without it the server assumes 1024, the usual
// default soft limit.
func WithFileLimit(n uint64) Option {
	return func(s *Server) { s.fileLimit = n }
}

// ConnectionLimits returns the budget in force: max_connections (derived when configured as
// 0) and max_connections_per_ip (0: no cap).
func (s *Server) ConnectionLimits() (maxConns, perIP int) {
	return s.table.max, s.table.perAddr
}

// newTable sets up the budget from cfg and the file limit.
func (s *Server) newTable(cfg *config.Config) {
	n := cfg.MaxConnections
	if n == 0 {
		limit := s.fileLimit
		if limit == 0 {
			limit = 1024
		}
		n = config.DefaultMaxConnections(limit)
	}
	s.table = newConnTable(n, cfg.MaxConnectionsPerIP)
	s.srv.ConnState = s.connState
}

// capped reports whether max_connections_per_ip applies to a connection from a: it does not to
// a trusted proxy, whose connections carry many clients.
func (s *Server) capped(a netip.Addr) bool { return !s.ips.TrustedProxy(a) }

// shed wakes the connection's goroutine, blocked in Read, to close it. It is called with
// Server.mu held, which guards conn; a raw socket is not blocked and sees its state instead.
func (c *fastConn) shed() {
	if c.conn != nil {
		_ = c.conn.SetReadDeadline(pastDeadline)
	}
}

// wait marks c as waiting for its client before a blocking read: idle between requests of a
// keep-alive connection, else waiting for a head. It reports false when c was shed.
func (c *fastConn) wait() bool {
	tier := tierHead
	if c.w == 0 && !c.first {
		tier = tierIdle
	}
	c.s.mu.Lock()
	ok := c.s.table.wait(&c.ent, tier)
	c.s.mu.Unlock()
	return ok
}

// trackedConn is a connection handed over to net/http, counted in the budget until net/http
// closes it. net/http's ConnState tells it when it is idle.
type trackedConn struct {
	net.Conn
	s    *Server
	ent  connEntry
	once sync.Once
}

// shed closes the connection under net/http, which then closes it through Close. It is called
// with Server.mu held.
func (tc *trackedConn) shed() { _ = tc.Conn.Close() }

// Close closes the connection and uncounts it.
func (tc *trackedConn) Close() error {
	tc.once.Do(func() {
		tc.s.mu.Lock()
		tc.s.table.remove(&tc.ent)
		tc.s.mu.Unlock()
	})
	return tc.Conn.Close()
}

// errNoDescriptor is the answer of SyscallConn and TakeDescriptor for a connection that is
// not a plain socket.
var errNoDescriptor = errors.New("http: the connection has no descriptor of its own")

// CloseWrite shuts down the writing side when the connection can, as a *net.TCPConn does.
func (tc *trackedConn) CloseWrite() error {
	if cw, ok := tc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return tc.Conn.Close()
}

// connState follows net/http's connections through their keep-alive waits, and counts one
// closed (for the stats report) when net/http is done with it.
func (s *Server) connState(nc net.Conn, st nethttp.ConnState) {
	if st == nethttp.StateClosed || st == nethttp.StateHijacked {
		s.counters.closing()
	}
	tc, ok := nc.(*trackedConn)
	if !ok {
		return
	}
	switch st {
	case nethttp.StateIdle:
		s.mu.Lock()
		ok = s.table.wait(&tc.ent, tierIdle)
		s.mu.Unlock()
	case nethttp.StateActive:
		ok = tc.ent.active()
	}
	if !ok {
		_ = tc.Conn.Close()
	}
}

// acceptFailed handles an accept that failed with a temporary error: for want of file
// descriptors it sheds the oldest waiting connection, so that the next accept finds one. It
// logs the error at most once per acceptLogEvery, with how many were not logged.
func (s *Server) acceptFailed(err error, delay time.Duration) {
	s.mu.Lock()
	s.acceptErrors++
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		s.table.shedForFiles()
	}
	now := time.Now()
	if now.Before(s.acceptLogNext) {
		s.acceptLogQuiet++
		s.mu.Unlock()
		return
	}
	quiet := s.acceptLogQuiet
	s.acceptLogNext, s.acceptLogQuiet = now.Add(acceptLogEvery), 0
	s.mu.Unlock()
	if quiet > 0 {
		glog.Errorf("http: accept: %v; retrying in %v (%d more accept errors since the last line, which shows at most every %v)", err, delay, quiet, acceptLogEvery)
	} else {
		glog.Errorf("http: accept: %v; retrying in %v (shown at most every %v)", err, delay, acceptLogEvery)
	}
}

// isResourceErr reports whether an accept failed for want of descriptors, buffers or memory.
func isResourceErr(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// Collectors returns the frontend's connection metrics (chihaya_http_*), to register on a
// registry.
func (s *Server) Collectors() []prometheus.Collector { return []prometheus.Collector{connCollector{s}} }

var (
	descConnsOpen = prometheus.NewDesc("chihaya_http_connections_open",
		"HTTP connections open, handed over to net/http or not.", nil, nil)
	descConnsIdle = prometheus.NewDesc("chihaya_http_connections_idle",
		"HTTP connections open and idle between two requests.", nil, nil)
	descConnsMax = prometheus.NewDesc("chihaya_http_connections_max",
		"The connection budget, max_connections (derived from the open files limit when configured as 0).", nil, nil)
	descConnsPerIP = prometheus.NewDesc("chihaya_http_connections_per_ip_max",
		"max_connections_per_ip: the connections one IPv4 address or IPv6 /64 may hold (0: no cap).", nil, nil)
	descRefused = prometheus.NewDesc("chihaya_http_connections_refused_total",
		"Connections closed at accept because the budget was full of busy connections, by limit.", []string{"reason"}, nil)
	descShed = prometheus.NewDesc("chihaya_http_connections_shed_total",
		"Waiting connections closed to make room for new ones, by limit and by what they waited for (idle: the next request; head: a request).", []string{"reason", "state"}, nil)
	descAcceptErrors = prometheus.NewDesc("chihaya_http_accept_errors_total",
		"Accepts that failed with a temporary error (such as too many open files) and were retried.", nil, nil)
	descTLSHandshakeErrors = prometheus.NewDesc("chihaya_http_tls_handshake_errors_total",
		"TLS handshakes on tls_addr that failed or timed out (http_read_header_timeout).", nil, nil)
)

// connCollector reads the budget's figures under Server.mu when scraped.
type connCollector struct{ s *Server }

func (c connCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnsOpen, descConnsIdle, descConnsMax, descConnsPerIP, descRefused, descShed, descAcceptErrors, descTLSHandshakeErrors} {
		ch <- d
	}
}

func (c connCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	t := s.table
	open, idle := t.open, t.waiting(tierIdle)
	refused, shed := t.refused, t.shed
	acceptErrors := s.acceptErrors
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descConnsOpen, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(descTLSHandshakeErrors, prometheus.CounterValue, float64(s.counters.tlsHandshakeErrors.Load()))
	ch <- prometheus.MustNewConstMetric(descConnsIdle, prometheus.GaugeValue, float64(idle))
	ch <- prometheus.MustNewConstMetric(descConnsMax, prometheus.GaugeValue, float64(t.max))
	ch <- prometheus.MustNewConstMetric(descConnsPerIP, prometheus.GaugeValue, float64(t.perAddr))
	for _, r := range []limitReason{reasonMaxConnections, reasonPerIP} {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(refused[r]), limitReasonNames[r])
	}
	for r := range numLimitReasons {
		for tier := tierIdle; tier < numTiers; tier++ {
			ch <- prometheus.MustNewConstMetric(descShed, prometheus.CounterValue, float64(shed[r][tier]), limitReasonNames[r], tierNames[tier])
		}
	}
	ch <- prometheus.MustNewConstMetric(descAcceptErrors, prometheus.CounterValue, float64(acceptErrors))
}
