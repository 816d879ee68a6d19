package fast

import (
	"errors"
	"net/netip"
	"syscall"
	"time"

	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus"
)

// What the Server does with the connection budget (table.go): admitting, shedding and
// uncounting its connections (the handed-over ones in handoff.go), logging accept failures
// rarely, and the budget's metrics.

// acceptLogEvery is the least time between two log lines about failing accepts.
const acceptLogEvery = 10 * time.Second

// pastDeadline wakes a blocked Read at once.
var pastDeadline = time.Unix(1, 0)

// Limits returns the budget in force: Config.MaxConnections and Config.MaxConnectionsPerIP.
func (s *Server) Limits() (maxConns, perIP int) {
	return s.table.max, s.table.perAddr
}

// capped reports whether max_connections_per_ip applies to a connection from a: it does not to
// a trusted proxy, whose connections carry many clients.
func (s *Server) capped(a netip.Addr) bool { return s.cfg.Uncapped == nil || !s.cfg.Uncapped(a) }

// shed wakes the connection's goroutine, blocked in Read, to close it. It is called with
// Server.mu held, which guards conn; a raw socket is not blocked and sees its state instead.
func (c *conn) shed() {
	if c.conn != nil {
		_ = c.conn.SetReadDeadline(pastDeadline)
	}
}

// wait marks c as waiting for its client before a blocking read: idle between requests of a
// keep-alive connection, else waiting for a head. It reports false when c was shed.
func (c *conn) wait() bool {
	tier := tierHead
	if c.w == 0 && !c.first {
		tier = tierIdle
	}
	c.s.mu.Lock()
	ok := c.s.table.wait(&c.ent, tier)
	c.s.mu.Unlock()
	return ok
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

// Collectors returns the connection metrics (chihaya_http_connections_*,
// chihaya_http_accept_errors_total, chihaya_http_tls_handshake_errors_total), to register on a
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
