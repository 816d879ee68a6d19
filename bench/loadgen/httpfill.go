package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// httpFill announces each of FillPeers peers once (started, numwant 0) over Conns keep-alive
// connections and returns when all are answered. Connection w comes from source address
// w mod hosts, hosts = min(Conns, MaxHosts), and sends the peers i = w (mod Conns) from
// FillOffset on, whose address is that source address and port PeerPort(i, hosts). A server
// that closes the connection (opentracker) is redialled and the announce resent. With
// PrivateUsers, peer i announces with the passkey of user PeerUser(i, PrivateUsers).
func (r *run) httpFill(ctx context.Context) (*Result, error) {
	cfg := &r.cfg
	hosts := min(cfg.Conns, MaxHosts)
	if cfg.FillOffset < 0 || cfg.FillOffset+cfg.FillPeers > hosts*PortsPerHost {
		return nil, fmt.Errorf("loadgen: peers %d to %d need more than %d connections", cfg.FillOffset, cfg.FillOffset+cfg.FillPeers, cfg.Conns)
	}
	if cfg.Conns > MaxHosts && cfg.Conns%MaxHosts != 0 {
		return nil, fmt.Errorf("loadgen: http-fill: -conns over %d must be a multiple of it", MaxHosts)
	}
	r.phase.Store(phaseMeasure)
	all := make([]stats, cfg.Conns)
	errs := make([]error, cfg.Conns)
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = r.httpFillConn(ctx, w, hosts, &all[w])
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	res := summarize(ModeHTTPFill, all, elapsed)
	res.Extra = map[string]float64{"peers": float64(cfg.FillPeers)}
	return res, nil
}

func (r *run) httpFillConn(ctx context.Context, w, hosts int, s *stats) error {
	cfg := &r.cfg
	host := w % hosts
	rr := NewResponseReader(MaxResponse)
	req := make([]byte, 0, 1024)
	var resp Response
	var c net.Conn
	defer func() {
		if c != nil {
			closeAbort(c)
		}
	}()
	served, tries := 0, 0
	first, end := cfg.FillOffset, cfg.FillOffset+cfg.FillPeers
	var passkey [PasskeyLen]byte
	for i := first + ((w-first%cfg.Conns)%cfg.Conns+cfg.Conns)%cfg.Conns; i < end; {
		if ctx.Err() != nil {
			return fmt.Errorf("loadgen: http-fill: %w", ctx.Err())
		}
		if tries > 20 {
			return fmt.Errorf("loadgen: http-fill: peer %d not stored after %d tries: %s", i, tries, s.firstErr)
		}
		if c == nil {
			var err error
			if c, err = dialer(host, cfg.Timeout).Dial("tcp", cfg.Target); err != nil {
				s.note(phaseMeasure, TransportError, 0, err.Error())
				c = nil
				tries++
				backoff()
				continue
			}
			rr.Reset()
			served = 0
		}
		a := AnnounceParams{
			InfoHash: InfoHash((i - first) % cfg.FillTorrents), PeerID: PeerID(i), Port: PeerPort(i, hosts),
			Left: 1000, Event: "started", NumWant: 0,
		}
		if FillSeeder(i-first, cfg.FillTorrents) {
			a.Left = 0
		}
		if cfg.PrivateUsers > 0 {
			passkey = Passkey(PeerUser(i, cfg.PrivateUsers))
			a.Passkey = passkey[:]
		}
		req = AppendAnnounce(req[:0], cfg.Target, &a, false)
		t0 := time.Now()
		_ = c.SetDeadline(t0.Add(cfg.Timeout))
		_, err := c.Write(req)
		if err == nil {
			err = rr.Read(c, &resp)
		}
		if err != nil && served > 0 && !rr.Buffered() && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
			closeAbort(c) // closed by the server after its last answer: redial, resend
			c = nil
			s.reconnects++
			continue
		}
		v, detail := TransportError, ""
		switch {
		case errors.Is(err, errStatus):
			v, detail = Malformed, fmt.Sprintf("HTTP status %d", resp.Status)
		case err != nil:
			detail = err.Error()
		default:
			var reason []byte
			v, reason = CheckAnnounceBody(resp.Body)
			detail = string(reason)
		}
		s.note(phaseMeasure, v, time.Since(t0), detail)
		served++
		if v == OK {
			s.kinds[ActionAnnounce]++
			i += cfg.Conns
			tries = 0
		} else {
			tries++
		}
		if err != nil || resp.Close {
			if err == nil {
				s.reconnects++
			}
			closeAbort(c)
			c = nil
		}
	}
	return nil
}
