package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"
)

// fillStall is how long a fill waits for progress before it gives up; connRefresh is how often
// it gets a new connection ID.
const (
	fillStall   = 10 * time.Second
	connRefresh = 30 * time.Second
)

// fill announces each of FillPeers peers once (event started, numwant 0) over UDP and returns
// when every announce has been answered, resending those that time out.
func (r *run) fill(ctx context.Context) (*Result, error) {
	cfg := &r.cfg
	if cfg.FillOffset < 0 {
		return nil, fmt.Errorf("loadgen: fill offset %d: want 0 or more", cfg.FillOffset)
	}
	if cfg.FillOffset+cfg.FillPeers > cfg.Sockets*PortsPerHost {
		return nil, fmt.Errorf("loadgen: peers up to %d need more than %d sockets", cfg.FillOffset+cfg.FillPeers, cfg.Sockets)
	}
	var torrentOf func(j int) int
	seeder := func(j int) bool { return FillSeeder(j, cfg.FillTorrents) }
	if cfg.FillPopular {
		pop := NewPopularity(cfg.Torrents, cfg.FillPeers)
		rng := rand.New(rand.NewPCG(3, 4))
		t := make([]uint32, cfg.FillPeers)
		for i := range t {
			t[i] = uint32(pop.Draw(rng))
		}
		torrentOf = func(j int) int { return int(t[j]) }
		seeder = func(j int) bool { return j%2 == 0 }
	} else {
		torrentOf = func(j int) int { return j % cfg.FillTorrents }
	}
	window := max(1, min((cfg.Conns+cfg.Sockets-1)/cfg.Sockets, maxWindow))
	socks, err := dialConnected(ctx, cfg.Sockets, cfg.Target)
	if err != nil {
		return nil, err
	}
	r.phase.Store(phaseMeasure)
	all := make([]stats, cfg.Sockets)
	retrans := make([]int, cfg.Sockets)
	errs := make([]error, cfg.Sockets)
	t0 := time.Now()
	var wg sync.WaitGroup
	for k, u := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer u.conn.Close()
			retrans[k], errs[k] = r.fillSocket(ctx, u, k, window, torrentOf, seeder, &all[k])
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	res := summarize(ModeUDPFill, all, elapsed)
	total := 0
	for _, n := range retrans {
		total += n
	}
	res.Extra = map[string]float64{"peers": float64(cfg.FillPeers), "retransmits": float64(total)}
	return res, nil
}

// fillSocket announces the peers of socket k (the peers i = k mod S from FillOffset on) with
// window requests in flight.
func (r *run) fillSocket(ctx context.Context, u *udpSocket, k, window int, torrentOf func(int) int, seeder func(int) bool, s *stats) (int, error) {
	cfg := &r.cfg
	slots := make([]slot, window)
	for i := range slots {
		slots[i].action = ActionAnnounce
	}
	first, end := cfg.FillOffset, cfg.FillOffset+cfg.FillPeers
	next := first + ((k-first%cfg.Sockets)%cfg.Sockets+cfg.Sockets)%cfg.Sockets // next peer to announce
	pending := 0
	var seq uint32
	retrans := 0
	// The connection ID is refreshed every connRefresh (trackers accept one for 1 to 2 minutes,
	// and a fill of a million peers can take longer): a slot sends a connect, then the
	// announce it was to send.
	connectDue := time.Now().Add(connRefresh)
	send := func(i, peer int) {
		sl := &slots[i]
		seq++
		sl.tx, sl.peer, sl.busy = seq<<8|uint32(i), peer, true
		if now := time.Now(); !now.Before(connectDue) || sl.action == ActionConnect {
			connectDue = now.Add(connRefresh)
			sl.action, sl.sent = ActionConnect, now
			_, _ = u.conn.Write(AppendUDPConnect(u.out[:0], sl.tx))
			return
		}
		sl.action = ActionAnnounce
		left := int64(1000)
		if seeder(peer - first) {
			left = 0
		}
		a := UDPAnnounce{
			ConnID: u.connID, TxID: sl.tx, InfoHash: InfoHash(torrentOf(peer - first)), PeerID: PeerID(peer),
			Left: left, Event: EventStarted, Key: uint32(peer), NumWant: 0, Port: PeerPort(peer, cfg.Sockets),
		}
		sl.sent = time.Now()
		_, _ = u.conn.Write(AppendUDPAnnounce(u.out[:0], &a))
	}
	for i := range slots {
		if next >= end {
			break
		}
		send(i, next)
		next += cfg.Sockets
		pending++
	}
	lastScan := time.Now()
	lastOK := lastScan
	for pending > 0 {
		if ctx.Err() != nil {
			return retrans, fmt.Errorf("loadgen: fill: %w", ctx.Err())
		}
		_ = u.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := u.conn.Read(u.buf)
		now := time.Now()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return retrans, fmt.Errorf("loadgen: fill: %w", err)
		}
		if err == nil {
			p := u.buf[:n]
			_, tx, ok := UDPHeader(p)
			i := int(tx & 0xff)
			if !ok || i >= len(slots) || !slots[i].busy || slots[i].tx != tx {
				s.note(phaseMeasure, Unexpected, 0, "UDP answer to no request in flight")
			} else {
				sl := &slots[i]
				v, cid := CheckUDP(p, sl.action, 0)
				detail := ""
				if v == Failure {
					detail = string(p[8:])
					connectDue = now // most likely an expired connection ID
				}
				s.note(phaseMeasure, v, now.Sub(sl.sent), detail)
				if sl.action == ActionConnect {
					if v == OK {
						u.connID = cid
						sl.action = ActionAnnounce
						s.kinds[ActionConnect]++
					}
					send(i, sl.peer) // the announce this slot was to send, or the connect again
					continue
				}
				if v == OK {
					s.kinds[ActionAnnounce]++
					lastOK = now
				}
				if v != OK {
					// A refused announce is not stored: resend it so that the counts the verify
					// step compares stay meaningful; the error is counted all the same.
					retrans++
					send(i, sl.peer)
				} else if next < end {
					send(i, next)
					next += cfg.Sockets
				} else {
					sl.busy = false
					pending--
				}
			}
		}
		if now.Sub(lastScan) > 100*time.Millisecond {
			lastScan = now
			for i := range slots {
				if slots[i].busy && now.Sub(slots[i].sent) > cfg.Timeout {
					retrans++
					send(i, slots[i].peer)
				}
			}
		}
		if now.Sub(lastOK) > fillStall {
			return retrans, fmt.Errorf("loadgen: fill: no announce answered for %s (first error: %q)", fillStall, s.firstErr)
		}
		if s.verdicts[Failure] > 1000 {
			return retrans, fmt.Errorf("loadgen: fill: over 1000 refused announces, first: %s", s.firstErr)
		}
	}
	return retrans, nil
}
