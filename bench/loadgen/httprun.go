package loadgen

import (
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"syscall"
	"time"
)

// dialer returns a dialer from source address host: spreading connections over 253 source
// addresses multiplies the ephemeral ports available, and IP_BIND_ADDRESS_NO_PORT lets the kernel
// pick the port at connect time, per 4-tuple, rather than at bind time.
func dialer(host int, timeout time.Duration) *net.Dialer {
	ip := HostIP(host)
	return &net.Dialer{
		Timeout:   timeout,
		LocalAddr: &net.TCPAddr{IP: net.IP(ip[:])},
		Control:   bindNoPort,
	}
}

// closeAbort closes c with SO_LINGER 0: the client sends RST instead of FIN, so no socket is
// left in TIME_WAIT on either side. It is what keeps a connection-per-request run from
// exhausting the ephemeral ports of loopback; it also spares the tracker the FIN handshake, the
// same for every tracker measured.
func closeAbort(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn() // no close_notify: the connection is reset, as a plain one is
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// httpWorker is one connection's worth of load.
type httpWorker struct {
	r    *run
	id   int
	host int // source address index
	rng  *rand.Rand
	req  []byte
	rr   *ResponseReader
	resp Response
	hash [][20]byte
	addr string
	// tls is the worker's TLS configuration, nil for plain HTTP; with Config.TLS "resume" it
	// has a session cache of its own.
	tls *tls.Config
}

// dial connects from source address host and, for HTTPS, completes the handshake, counting it
// (and whether it resumed a session) in s during the measured window.
func (w *httpWorker) dial(s *stats, host int, phase int32) (net.Conn, error) {
	c, err := dialer(host, w.r.cfg.Timeout).Dial("tcp", w.addr)
	if err != nil || w.tls == nil {
		return c, err
	}
	tc := tls.Client(c, w.tls)
	_ = tc.SetDeadline(time.Now().Add(w.r.cfg.Timeout))
	if err := tc.Handshake(); err != nil {
		closeAbort(c)
		return nil, err
	}
	if phase == phaseMeasure {
		s.handshakes++
		if tc.ConnectionState().DidResume {
			s.resumed++
		}
	}
	return tc, nil
}

func (r *run) httpWorkers() []func(*stats) {
	ws := make([]func(*stats), r.cfg.Conns)
	for i := range ws {
		w := &httpWorker{
			r:    r,
			id:   i,
			host: i % MaxHosts,
			rng:  rand.New(rand.NewPCG(uint64(i), 7)),
			req:  make([]byte, 0, 1024),
			rr:   NewResponseReader(MaxResponse),
			hash: make([][20]byte, 0, r.cfg.ScrapeHashes),
			addr: r.cfg.Target,
		}
		if r.cfg.TLS != "" {
			// X25519 and P-256 only, as the OpenSSL 3.0 of today's BitTorrent clients offer (and
			// nginx on it accepts): Go would offer the post-quantum X25519MLKEM768 first, which
			// costs a Go server several times the key exchange of X25519.
			w.tls = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"},
				CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
			if r.cfg.TLS == "resume" {
				w.tls.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
		}
		if r.cfg.KeepAlive {
			ws[i] = w.keepAlive
		} else {
			ws[i] = w.perRequest
		}
	}
	return ws
}

// next builds the next request into w.req and returns the source address it must come from.
func (w *httpWorker) next(close bool) int {
	cfg := &w.r.cfg
	w.req = w.req[:0]
	if cfg.Mode == ModeHTTPScrape {
		w.hash = w.hash[:0]
	draw:
		for len(w.hash) < cfg.ScrapeHashes {
			h := InfoHash(w.r.pop.Draw(w.rng))
			for _, o := range w.hash {
				if o == h {
					continue draw // distinct hashes: the answer must hold one entry each
				}
			}
			w.hash = append(w.hash, h)
		}
		w.req = AppendScrape(w.req, w.addr, w.hash, close)
		return w.host
	}
	// Announce. No two workers share a peer, so that a peer's announces are sequential, as a
	// real client's are. Keep-alive connections send peers of their own source address (the
	// sharers connections on one address split its peers); connections per request take the
	// peers i = id (mod Conns) and dial from each peer's address.
	var i int
	if cfg.KeepAlive {
		sharers := (cfg.Conns + MaxHosts - 1) / MaxHosts
		sub := w.id / MaxHosts
		per := (cfg.Peers - w.host + MaxHosts - 1) / MaxHosts
		i = w.host + MaxHosts*(sub+sharers*w.rng.IntN(max(1, (per-sub)/sharers)))
	} else {
		i = w.id + cfg.Conns*w.rng.IntN(max(1, (cfg.Peers-w.id)/cfg.Conns))
	}
	a := AnnounceParams{
		InfoHash: InfoHash(int(w.r.torrentOf[i])),
		PeerID:   PeerID(i),
		Port:     PeerPort(i, MaxHosts),
		Left:     1000,
		NumWant:  cfg.NumWant,
	}
	if IsSeeder(i) {
		a.Left = 0
	}
	if w.r.markStarted(i) {
		a.Event = "started"
	}
	w.req = AppendAnnounce(w.req, w.addr, &a, close)
	return PeerHost(i, MaxHosts)
}

// judge reads and judges one answer.
func (w *httpWorker) judge(c net.Conn) (Verdict, string, error) {
	err := w.rr.Read(c, &w.resp)
	switch {
	case errors.Is(err, errStatus):
		return Malformed, "HTTP status " + strconv.Itoa(w.resp.Status), nil
	case err != nil:
		return TransportError, err.Error(), err
	}
	var v Verdict
	var reason []byte
	if w.r.cfg.Mode == ModeHTTPScrape {
		v, reason = CheckScrapeBody(w.resp.Body, len(w.hash))
	} else {
		v, reason = CheckAnnounceBody(w.resp.Body)
	}
	if v != OK {
		if reason == nil {
			reason = w.resp.Body
			if len(reason) > 80 {
				reason = reason[:80]
			}
		}
		return v, string(reason), nil
	}
	return OK, "", nil
}

// perRequest dials, sends one request, reads its answer and closes, over and over. The latency
// includes the dial, as a client that opens a connection per announce sees it.
func (w *httpWorker) perRequest(s *stats) {
	for {
		phase := w.r.phase.Load()
		if phase == phaseStop {
			return
		}
		host := w.next(true)
		t0 := time.Now()
		c, err := w.dial(s, host, phase)
		if err != nil {
			s.note(phase, TransportError, 0, err.Error())
			backoff()
			continue
		}
		_ = c.SetDeadline(t0.Add(w.r.cfg.Timeout))
		w.rr.Reset()
		if _, err = c.Write(w.req); err != nil {
			s.note(phase, TransportError, 0, err.Error())
			closeAbort(c)
			continue
		}
		v, detail, _ := w.judge(c)
		lat := time.Since(t0)
		closeAbort(c)
		s.note(w.r.phase.Load(), v, lat, detail)
	}
}

// keepAlive keeps one connection open and sends requests one after the other. A server that
// closes the connection between answers (opentracker does after every answer) is redialled and
// the request resent: that is counted in Reconnects, not as an error.
func (w *httpWorker) keepAlive(s *stats) {
	var c net.Conn
	defer func() {
		if c != nil {
			closeAbort(c)
		}
	}()
	served := 0
	resend := false
	var deadline time.Time
	for {
		phase := w.r.phase.Load()
		if phase == phaseStop {
			return
		}
		if c == nil {
			var err error
			c, err = w.dial(s, w.host, phase)
			if err != nil {
				s.note(phase, TransportError, 0, err.Error())
				c = nil
				backoff()
				continue
			}
			w.rr.Reset()
			served = 0
			deadline = time.Time{}
		}
		if !resend {
			w.next(false)
		}
		resend = false
		t0 := time.Now()
		if t0.After(deadline.Add(-w.r.cfg.Timeout / 2)) {
			deadline = t0.Add(w.r.cfg.Timeout)
			_ = c.SetDeadline(deadline)
		}
		_, err := c.Write(w.req)
		var v Verdict
		var detail string
		if err == nil {
			v, detail, err = w.judge(c)
		}
		if err != nil && served > 0 && !w.rr.Buffered() && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			// The server closed the connection after its last answer: redial and resend.
			closeAbort(c)
			c = nil
			if phase == phaseMeasure {
				s.reconnects++
			}
			resend = true
			continue
		}
		s.note(w.r.phase.Load(), v, time.Since(t0), detail)
		served++
		if err != nil || w.resp.Close {
			if err == nil && phase == phaseMeasure {
				s.reconnects++
			}
			closeAbort(c)
			c = nil
		}
	}
}

// backoff slows a worker whose dial failed, so that a dead target is not spun on.
func backoff() { time.Sleep(10 * time.Millisecond) }
