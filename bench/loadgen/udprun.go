package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"time"
)

// maxWindow is the most requests one socket keeps in flight: the slot is the low byte of the
// transaction ID.
const maxWindow = 256

// udpSocket is one source address's socket and its connection ID.
type udpSocket struct {
	conn   *net.UDPConn
	connID uint64
	host   int
	buf    []byte
	out    []byte
}

// dialUDP opens a socket from source address host, connected to target.
func dialUDP(host int, target string) (*udpSocket, error) {
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("loadgen: resolve %s: %w", target, err)
	}
	ip := HostIP(host)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IP(ip[:])}, raddr)
	if err != nil {
		return nil, fmt.Errorf("loadgen: udp socket from %v: %w", net.IP(ip[:]), err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	return &udpSocket{conn: c, host: host, buf: make([]byte, 8192), out: make([]byte, 0, 2048)}, nil
}

// dialConnected opens n sockets, from source addresses 0 to n-1, connected to target, each with
// a connection ID; on an error it closes those it opened.
func dialConnected(ctx context.Context, n int, target string) ([]*udpSocket, error) {
	socks := make([]*udpSocket, n)
	for k := range socks {
		u, err := dialUDP(k, target)
		if err == nil {
			if err = u.connect(ctx, 5*time.Second); err != nil {
				_ = u.conn.Close()
			}
		}
		if err != nil {
			for _, s := range socks[:k] {
				_ = s.conn.Close()
			}
			return nil, err
		}
		socks[k] = u
	}
	return socks, nil
}

// connect gets a connection ID, retrying a few times within timeout.
func (u *udpSocket) connect(ctx context.Context, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for try := uint32(1); time.Now().Before(end) && ctx.Err() == nil; try++ {
		tx := 0xC0000000 | try
		if _, err := u.conn.Write(AppendUDPConnect(u.out[:0], tx)); err != nil {
			return fmt.Errorf("loadgen: udp connect: %w", err)
		}
		_ = u.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, err := u.conn.Read(u.buf)
			if err != nil {
				break
			}
			if _, id, ok := UDPHeader(u.buf[:n]); !ok || id != tx {
				continue
			}
			v, cid := CheckUDP(u.buf[:n], ActionConnect, 0)
			if v != OK {
				return fmt.Errorf("loadgen: udp connect: answer %s", v)
			}
			u.connID = cid
			return nil
		}
	}
	return fmt.Errorf("loadgen: udp connect from 127.0.0.%d: %w", FirstHost+u.host, errNoConnID)
}

// slot is one request in flight.
type slot struct {
	tx      uint32
	action  uint32
	nHashes int
	peer    int // fill: the peer announced, to resend it
	sent    time.Time
	busy    bool
}

// udpWorker drives one socket with a window of requests in flight.
type udpWorker struct {
	r       *run
	u       *udpSocket
	rng     *rand.Rand
	slots   []slot
	seq     uint32
	hashes  [][20]byte
	perSock int
}

func (r *run) udpWorkers(ctx context.Context) ([]func(*stats), error) {
	cfg := &r.cfg
	window := (cfg.Conns + cfg.Sockets - 1) / cfg.Sockets
	window = max(1, min(window, maxWindow))
	socks, err := dialConnected(ctx, cfg.Sockets, cfg.Target)
	if err != nil {
		return nil, err
	}
	ws := make([]func(*stats), cfg.Sockets)
	for k, u := range socks {
		w := &udpWorker{
			r: r, u: u, rng: rand.New(rand.NewPCG(uint64(k), 11)),
			slots: make([]slot, window), hashes: make([][20]byte, 0, 10),
			perSock: (cfg.Peers - k + cfg.Sockets - 1) / cfg.Sockets,
		}
		ws[k] = w.loop
	}
	return ws, nil
}

// send fills slot i with the next request of aquatic's mix and sends it.
func (w *udpWorker) send(i int) {
	cfg := &w.r.cfg
	s := &w.slots[i]
	w.seq++
	s.tx = w.seq<<8 | uint32(i)
	s.busy = true
	out := w.u.out[:0]
	switch {
	case w.rng.IntN(cfg.ConnectEvery) == 0:
		s.action = ActionConnect
		out = AppendUDPConnect(out, s.tx)
	case w.rng.IntN(cfg.ScrapeEvery) == 0:
		s.action = ActionScrape
		w.hashes = w.hashes[:0]
		n := 1 + w.rng.IntN(10) // aquatic: 1 to scrape_max_torrents (10) hashes
		for range n {
			w.hashes = append(w.hashes, InfoHash(w.r.pop.Draw(w.rng)))
		}
		s.nHashes = n
		out = AppendUDPScrape(out, w.u.connID, s.tx, w.hashes)
	default:
		s.action = ActionAnnounce
		// Slot i of socket k announces the peers k + S*(i + W*j), so no peer has two announces
		// in flight.
		W := len(w.slots)
		peer := w.u.host + cfg.Sockets*(i+W*w.rng.IntN(max(1, (w.perSock-i)/W)))
		a := UDPAnnounce{
			ConnID: w.u.connID, TxID: s.tx,
			InfoHash: InfoHash(int(w.r.torrentOf[peer])),
			PeerID:   PeerID(peer),
			Left:     1000,
			Key:      uint32(peer),
			NumWant:  int32(cfg.NumWant),
			Port:     PeerPort(peer, cfg.Sockets),
		}
		if IsSeeder(peer) {
			a.Left = 0
		}
		if w.r.markStarted(peer) {
			a.Event = EventStarted
		}
		out = AppendUDPAnnounce(out, &a)
	}
	s.sent = time.Now()
	// A failed send (a full socket buffer) shows up as a timeout of this slot.
	_, _ = w.u.conn.Write(out)
}

// loop keeps the window full until the run stops.
func (w *udpWorker) loop(s *stats) {
	defer w.u.conn.Close()
	timeout := w.r.cfg.Timeout
	for i := range w.slots {
		w.send(i)
	}
	var deadline time.Time
	lastScan := time.Now()
	for {
		phase := w.r.phase.Load()
		if phase == phaseStop {
			return
		}
		now := time.Now()
		if now.After(deadline.Add(-50 * time.Millisecond)) {
			deadline = now.Add(100 * time.Millisecond)
			_ = w.u.conn.SetReadDeadline(deadline)
		}
		n, err := w.u.conn.Read(w.u.buf)
		now = time.Now()
		if err == nil {
			w.answer(s, phase, w.u.buf[:n], now)
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			s.note(phase, TransportError, 0, err.Error())
			backoff()
		}
		if now.Sub(lastScan) > 100*time.Millisecond {
			lastScan = now
			for i := range w.slots {
				if w.slots[i].busy && now.Sub(w.slots[i].sent) > timeout {
					s.note(phase, Timeout, 0, "no UDP answer")
					w.send(i)
				}
			}
		}
	}
}

// answer matches a packet to its slot, judges it and sends the slot's next request.
func (w *udpWorker) answer(s *stats, phase int32, p []byte, now time.Time) {
	_, tx, ok := UDPHeader(p)
	if !ok {
		s.note(phase, Malformed, 0, "short UDP packet")
		return
	}
	i := int(tx & 0xff)
	if i >= len(w.slots) || !w.slots[i].busy || w.slots[i].tx != tx {
		s.note(phase, Unexpected, 0, "UDP answer to no request in flight")
		return
	}
	sl := &w.slots[i]
	v, cid := CheckUDP(p, sl.action, sl.nHashes)
	detail := ""
	switch {
	case v == OK && sl.action == ActionConnect:
		w.u.connID = cid
	case v == Failure:
		detail = string(p[8:])
	case v != OK:
		detail = fmt.Sprintf("UDP answer of %d bytes to action %d", len(p), sl.action)
	}
	if v == OK && phase == phaseMeasure {
		s.kinds[sl.action]++
	}
	s.note(phase, v, now.Sub(sl.sent), detail)
	sl.busy = false
	w.send(i)
}
