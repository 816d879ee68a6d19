package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Schedule is the fixed send schedule of an open-loop run: request k is due at Start + k/Rate,
// whatever became of the requests before it. Latency is measured from that due time, so that
// a tracker that stalls is charged for every request that waited behind the stall (no
// coordinated omission), and a generator that sends late is charged too (its lag is reported).
type Schedule struct {
	Start time.Time
	Rate  float64 // requests per second, positive
}

// At returns when request k is due.
func (s Schedule) At(k int64) time.Time {
	return s.Start.Add(time.Duration(float64(k) * 1e9 / s.Rate))
}

// Due returns how many requests are due by now: the number of k >= 0 with At(k) <= now.
func (s Schedule) Due(now time.Time) int64 {
	if now.Before(s.Start) {
		return 0
	}
	n := int64(float64(now.Sub(s.Start))*s.Rate/1e9) + 1
	for n > 0 && s.At(n-1).After(now) {
		n--
	}
	for !s.At(n).After(now) {
		n++
	}
	return n
}

// openSlot is one request of an open-loop socket, shared by its sender and its reader: the
// sender writes at and meta, then publishes tx; the reader claims the slot by swapping tx to 0.
type openSlot struct {
	tx   atomic.Uint32
	at   atomic.Int64  // due time, ns after the run's base
	meta atomic.Uint32 // action | hashes<<8 | measured<<16
}

const openMeasured = 1 << 16

// openSock is one source address of an open-loop run.
type openSock struct {
	u      *udpSocket
	connID atomic.Uint64
	ring   []openSlot
	mask   uint32
	// The sender's own.
	seq     uint32
	rng     *rand.Rand
	hashes  [][20]byte
	perSock int
	sent    uint64 // measured requests sent
	// The reader's own, read by Run once the reader is done.
	stats    stats
	answered uint64 // measured requests answered, whatever the verdict
}

// openRing returns a ring size, a power of two, that holds every request a socket sends within
// timeout at rate/sockets per second, twice over.
func openRing(rate float64, sockets int, timeout time.Duration) int {
	need := uint64(2*rate/float64(sockets)*timeout.Seconds()) + 1
	return max(1024, 1<<bits.Len64(need))
}

// open runs the UDP mix (aquatic's, as ModeUDP) open-loop: requests are sent at cfg.Rate on
// a fixed schedule, round-robin over the sockets, whether or not earlier ones were answered.
// Each socket has a reader that matches answers to requests. After the window the readers wait
// up to Timeout for the last answers; measured requests still unanswered are Lost.
func (r *run) open(ctx context.Context, mark Marker) (*Result, error) {
	cfg := &r.cfg
	if cfg.Rate <= 0 {
		return nil, fmt.Errorf("loadgen: udp-open: rate %v: want a positive rate", cfg.Rate)
	}
	// The sender sleeps in nanosleep on a thread of its own; the readers need a P meanwhile.
	if runtime.GOMAXPROCS(0) < 2 {
		prev := runtime.GOMAXPROCS(2)
		defer runtime.GOMAXPROCS(prev)
	}
	size := openRing(cfg.Rate, cfg.Sockets, cfg.Timeout)
	us, err := dialConnected(ctx, cfg.Sockets, cfg.Target)
	if err != nil {
		return nil, err
	}
	socks := make([]*openSock, cfg.Sockets)
	for k, u := range us {
		s := &openSock{
			u: u, ring: make([]openSlot, size), mask: uint32(size - 1),
			rng: rand.New(rand.NewPCG(uint64(k), 13)), hashes: make([][20]byte, 0, 10),
			perSock: (cfg.Peers - k + cfg.Sockets - 1) / cfg.Sockets,
		}
		s.connID.Store(u.connID)
		socks[k] = s
	}
	base := time.Now().Add(time.Millisecond)
	sched := Schedule{Start: base, Rate: cfg.Rate}
	warmEnd := base.Add(cfg.Warmup)
	end := warmEnd.Add(cfg.Duration)

	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.u.conn.Close()
			r.openRead(s, base, done)
		}()
	}
	var lag Histogram
	senderErr := make(chan error, 1)
	go func() {
		// Locked and never unlocked: the thread, whose timer slack openSend lowers, ends with
		// the goroutine.
		runtime.LockOSThread()
		senderErr <- r.openSend(ctx, socks, sched, warmEnd, end, mark, &lag)
		close(done)
	}()
	err = <-senderErr
	wg.Wait()
	if err != nil {
		return nil, err
	}

	all := make([]stats, len(socks))
	var sent, answered uint64
	for k, s := range socks {
		all[k] = s.stats
		sent += s.sent
		answered += s.answered
	}
	res := summarize(ModeUDP, all, cfg.Duration)
	res.Mode = ModeUDPOpen
	res.Seconds = cfg.Duration.Seconds()
	res.PerSecond = float64(res.Responses) / res.Seconds
	lost := sent - min(sent, answered)
	if lost > 0 {
		res.Errors += lost
		res.ByVerdict[Timeout.String()] += lost
		if res.FirstError == "" {
			res.FirstError = fmt.Sprintf("%s: %d requests never answered", Timeout, lost)
		}
	}
	res.Open = &OpenResult{
		Offered: cfg.Rate, Sent: sent, Lost: lost,
		LagP50us: float64(lag.Quantile(0.5)) / 1e3, LagP99us: float64(lag.Quantile(0.99)) / 1e3,
		LagMaxus: float64(lag.Max()) / 1e3,
	}
	return res, nil
}

// openSend sends every request of the schedule due before end, round-robin over the sockets,
// sleeping between them, and records how late each measured one went out.
func (r *run) openSend(ctx context.Context, socks []*openSock, sched Schedule, warmEnd, end time.Time, mark Marker, lag *Histogram) error {
	setTimerSlack()
	base := sched.Start
	started := false
	var k int64
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("loadgen: udp-open: %w", ctx.Err())
		}
		now := time.Now()
		if !started && !now.Before(warmEnd) {
			started = true
			mark("start")
		}
		for due := sched.Due(now); k < due; k++ {
			at := sched.At(k)
			if !at.Before(end) {
				mark("end")
				return nil
			}
			measured := !at.Before(warmEnd)
			s := socks[k%int64(len(socks))]
			r.openSendOne(s, at.Sub(base), measured)
			if measured {
				s.sent++
				lag.Record(time.Since(at))
			}
		}
		sleepUntil(sched.At(k), 5*time.Millisecond)
	}
}

// openSendOne sends socket s's next request of the mix, due at (ns after the base).
func (r *run) openSendOne(s *openSock, at time.Duration, measured bool) {
	cfg := &r.cfg
	s.seq++
	if s.seq == 0 {
		s.seq = 1 // 0 marks a free slot
	}
	tx := s.seq
	sl := &s.ring[tx&s.mask]
	meta := uint32(0)
	if measured {
		meta = openMeasured
	}
	out := s.u.out[:0]
	switch {
	case s.rng.IntN(cfg.ConnectEvery) == 0:
		meta |= ActionConnect
		out = AppendUDPConnect(out, tx)
	case s.rng.IntN(cfg.ScrapeEvery) == 0:
		s.hashes = s.hashes[:0]
		n := 1 + s.rng.IntN(10)
		for range n {
			s.hashes = append(s.hashes, InfoHash(r.pop.Draw(s.rng)))
		}
		meta |= ActionScrape | uint32(n)<<8
		out = AppendUDPScrape(out, s.connID.Load(), tx, s.hashes)
	default:
		meta |= ActionAnnounce
		peer := s.u.host + cfg.Sockets*s.rng.IntN(max(1, s.perSock))
		a := UDPAnnounce{
			ConnID: s.connID.Load(), TxID: tx,
			InfoHash: InfoHash(int(r.torrentOf[peer])),
			PeerID:   PeerID(peer),
			Left:     1000,
			Key:      uint32(peer),
			NumWant:  int32(cfg.NumWant),
			Port:     PeerPort(peer, cfg.Sockets),
		}
		if IsSeeder(peer) {
			a.Left = 0
		}
		if r.markStarted(peer) {
			a.Event = EventStarted
		}
		out = AppendUDPAnnounce(out, &a)
	}
	sl.at.Store(int64(at))
	sl.meta.Store(meta)
	sl.tx.Store(tx)
	// A failed send (a full socket buffer) shows up as a lost request.
	_, _ = s.u.conn.Write(out)
}

// openRead judges the answers of socket s until the sender is done and every measured request
// is answered, or Timeout after the sender is done.
func (r *run) openRead(s *openSock, base time.Time, done <-chan struct{}) {
	var drainEnd time.Time
	for {
		select {
		case <-done:
			if drainEnd.IsZero() {
				drainEnd = time.Now().Add(r.cfg.Timeout)
			}
			if s.answered >= s.sent || time.Now().After(drainEnd) {
				return
			}
		default:
		}
		_ = s.u.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := s.u.conn.Read(s.u.buf)
		now := time.Now()
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				s.stats.note(phaseMeasure, TransportError, 0, err.Error())
				backoff()
			}
			continue
		}
		r.openAnswer(s, s.u.buf[:n], now.Sub(base))
	}
}

// openAnswer matches one packet to its slot and judges it; at is its arrival, ns after the base.
func (r *run) openAnswer(s *openSock, p []byte, at time.Duration) {
	_, tx, ok := UDPHeader(p)
	if !ok {
		s.stats.note(phaseMeasure, Malformed, 0, "short UDP packet")
		return
	}
	sl := &s.ring[tx&s.mask]
	if tx == 0 || sl.tx.Load() != tx {
		s.stats.note(phaseMeasure, Unexpected, 0, "UDP answer to no request in flight")
		return
	}
	due, meta := sl.at.Load(), sl.meta.Load()
	if !sl.tx.CompareAndSwap(tx, 0) {
		s.stats.note(phaseMeasure, Unexpected, 0, "UDP answer to no request in flight")
		return
	}
	action, nHashes := meta&0xff, int(meta>>8&0xff)
	v, cid := CheckUDP(p, action, nHashes)
	detail := ""
	switch {
	case v == OK && action == ActionConnect:
		s.connID.Store(cid)
	case v == Failure:
		detail = string(p[8:])
	case v != OK:
		detail = fmt.Sprintf("UDP answer of %d bytes to action %d", len(p), action)
	}
	phase := int32(phaseWarmup)
	if meta&openMeasured != 0 {
		phase = phaseMeasure
		s.answered++
		if v == OK {
			s.stats.kinds[action]++
		}
	}
	s.stats.note(phase, v, at-time.Duration(due), detail)
}
