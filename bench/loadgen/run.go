package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The modes Run knows.
const (
	ModeHTTPAnnounce = "http-announce" // HTTP announces, keep-alive or a connection per request
	ModeHTTPScrape   = "http-scrape"   // HTTP scrapes of Config.ScrapeHashes hashes
	ModeUDP          = "udp"           // BEP 15 connect, announce and scrape, aquatic's mix
	ModeUDPFill      = "udp-fill"      // announce each of FillPeers peers once, then stop
	ModeHTTPFill     = "http-fill"     // the same over HTTP keep-alive connections
	ModeUDPVerify    = "udp-verify"    // scrape a sample of the filled torrents and count peers
	ModeHTTPVerify   = "http-verify"   // the same over HTTP (private mode refuses UDP scrapes)
	ModeUDPOpen      = "udp-open"      // open loop: the UDP mix sent at Rate, on a fixed schedule
)

// Config is one run of the generator. Zero values take the defaults of Defaults.
type Config struct {
	Mode   string
	Target string // host:port of the tracker, on loopback

	KeepAlive bool // HTTP: reuse connections; false opens one per request
	// TLS is "" for plain HTTP, "full" for HTTPS with a full handshake on every connection, or
	// "resume" for HTTPS resuming each worker's last session (TLS 1.3 tickets). The
	// generator does not verify the certificate: a client's verification is its own cost.
	TLS          string
	Conns        int // HTTP: connections (workers); UDP: requests in flight, over all sockets
	Sockets      int // UDP: sockets, each from its own source address (1..MaxHosts)
	Torrents     int // torrents in the pool the workload draws from
	Peers        int // distinct simulated peers
	NumWant      int // announce numwant
	ScrapeHashes int // HTTP scrape: hashes per scrape

	Warmup       time.Duration // unmeasured run-in
	Duration     time.Duration // measured window
	Timeout      time.Duration // a request without an answer by then is an error (Timeout)
	ConnectEvery int           // UDP: one request in ConnectEvery is a connect (aquatic: 102)
	ScrapeEvery  int           // UDP: one non-connect request in ScrapeEvery is a scrape (100)

	FillPeers    int  // fills and verifies: the j-th peer announced goes to torrent j % FillTorrents
	FillTorrents int  // (or, with FillPopular, to a torrent drawn by popularity)
	FillPopular  bool // udp-fill: draw torrents from the pool's popularity
	// FillOffset is the first peer of a fill: it announces the peers FillOffset to
	// FillOffset+FillPeers-1 (peer IDs, ports), the j-th of them to torrent j % FillTorrents
	// and as a seeder when FillSeeder(j, FillTorrents). A fill with offset FillPeers after one
	// with offset 0 replaces every peer by a new one in the same torrent and the same role.
	FillOffset   int
	VerifySample int // udp-verify, http-verify: torrents scraped
	// PrivateUsers, when positive, makes http-fill and http-verify send passkeys: peer i
	// announces with the passkey of user PeerUser(i, PrivateUsers); scrapes use user 0's.
	PrivateUsers int

	Rate float64 // udp-open: requests offered per second
}

// Defaults returns c with zero fields set to the defaults.
func Defaults(c Config) Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Conns, 64)
	def(&c.Sockets, 32)
	def(&c.Torrents, 1_000_000)
	def(&c.Peers, 2_000_000)
	def(&c.NumWant, 30)
	def(&c.ScrapeHashes, 1)
	def(&c.ConnectEvery, 102)
	def(&c.ScrapeEvery, 100)
	def(&c.FillTorrents, 100_000)
	def(&c.FillPeers, 1_000_000)
	def(&c.VerifySample, 2000)
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	return c
}

// Result is what a run measured. Counts are over the measured window only, except for the fill
// and verify modes, which count everything.
type Result struct {
	Mode       string             `json:"mode"`
	Responses  uint64             `json:"responses"` // answers judged OK
	Errors     uint64             `json:"errors"`    // all other verdicts
	ByVerdict  map[string]uint64  `json:"by_verdict,omitempty"`
	FirstError string             `json:"first_error,omitempty"`
	Seconds    float64            `json:"seconds"`
	PerSecond  float64            `json:"per_second"`
	P50us      float64            `json:"p50_us"`
	P99us      float64            `json:"p99_us"`
	P999us     float64            `json:"p999_us"`
	Reconnects uint64             `json:"reconnects,omitempty"` // HTTP keep-alive: connections the server closed
	Resumed    uint64             `json:"resumed,omitempty"`    // HTTPS: connections that resumed a session
	Handshakes uint64             `json:"handshakes,omitempty"` // HTTPS: connections made
	Kinds      map[string]uint64  `json:"kinds,omitempty"`      // UDP: OK answers per action
	WarmupErrs uint64             `json:"warmup_errors,omitempty"`
	Verify     *VerifyResult      `json:"verify,omitempty"`
	Open       *OpenResult        `json:"open,omitempty"`
	Extra      map[string]float64 `json:"extra,omitempty"`
}

// OpenResult is what an open-loop run adds: what was offered, what never came back, and how
// late the generator itself sent (a late send counts in the latency all the same).
type OpenResult struct {
	Offered  float64 `json:"offered"`    // requests per second on the schedule
	Sent     uint64  `json:"sent"`       // requests scheduled in the measured window
	Lost     uint64  `json:"lost"`       // of those, never answered (lost or later than the drain)
	LagP50us float64 `json:"lag_p50_us"` // send time minus scheduled time
	LagP99us float64 `json:"lag_p99_us"`
	LagMaxus float64 `json:"lag_max_us"`
}

// VerifyResult compares the peers a tracker reports by scrape with the peers a fill sent.
type VerifyResult struct {
	Torrents   int    `json:"torrents"`   // torrents scraped
	Mismatches int    `json:"mismatches"` // torrents whose seeders+leechers differ from what was sent
	Want       uint64 `json:"want"`       // peers sent to the scraped torrents
	Got        uint64 `json:"got"`        // seeders+leechers the tracker reported for them
	// The same split by role: a torrent differs when either count differs.
	WantSeeders  uint64 `json:"want_seeders"`
	GotSeeders   uint64 `json:"got_seeders"`
	WantLeechers uint64 `json:"want_leechers"`
	GotLeechers  uint64 `json:"got_leechers"`
}

// Phases of a run, shared by the workers.
const (
	phaseWarmup = iota
	phaseMeasure
	phaseStop
)

// stats is one worker's tally; only that worker writes it.
type stats struct {
	hist       Histogram
	verdicts   [numVerdicts]uint64
	kinds      [4]uint64
	reconnects uint64
	resumed    uint64
	handshakes uint64
	warmupErrs uint64
	firstErr   string
}

// note records one answer (or its absence) if the run is measuring.
func (s *stats) note(phase int32, v Verdict, lat time.Duration, detail string) {
	switch phase {
	case phaseMeasure:
		s.verdicts[v]++
		if v == OK {
			s.hist.Record(lat)
		}
	case phaseWarmup:
		if v != OK {
			s.warmupErrs++
		}
	default:
		return
	}
	if v != OK && s.firstErr == "" {
		s.firstErr = v.String() + ": " + detail
	}
}

// run is the state shared by the workers of one Run.
type run struct {
	cfg       Config
	phase     atomic.Int32
	pop       Popularity
	torrentOf []uint32        // peer -> torrent
	started   []atomic.Uint64 // bitset: peer has announced "started"
}

// Marker is called by Run at the start and at the end of the measured window ("start", "end"),
// so that a caller can sample the tracker's CPU time right at the boundaries.
type Marker func(event string)

// Run runs one workload against cfg.Target and returns what it measured. It returns an error
// only when the run could not be made at all (bad config, no connection ID); failed requests
// are counted in the result.
func Run(ctx context.Context, cfg Config, mark Marker) (*Result, error) {
	cfg = Defaults(cfg)
	if mark == nil {
		mark = func(string) {}
	}
	if cfg.Sockets > MaxHosts {
		return nil, fmt.Errorf("loadgen: %d sockets: at most %d source addresses", cfg.Sockets, MaxHosts)
	}
	if cfg.TLS != "" && cfg.TLS != "full" && cfg.TLS != "resume" {
		return nil, fmt.Errorf("loadgen: tls %q: want \"\", \"full\" or \"resume\"", cfg.TLS)
	}
	r := &run{cfg: cfg, pop: NewPopularity(cfg.Torrents, cfg.Peers)}
	switch cfg.Mode {
	case ModeUDPFill:
		return r.fill(ctx)
	case ModeHTTPFill:
		return r.httpFill(ctx)
	case ModeUDPVerify, ModeHTTPVerify:
		return r.verify(ctx)
	case ModeHTTPAnnounce, ModeUDP, ModeUDPOpen:
		hosts := MaxHosts
		if cfg.Mode != ModeHTTPAnnounce {
			hosts = cfg.Sockets
		}
		if cfg.Peers > hosts*PortsPerHost {
			return nil, fmt.Errorf("loadgen: %d peers need more than %d source addresses of %d ports", cfg.Peers, hosts, PortsPerHost)
		}
		if cfg.Peers < hosts {
			return nil, fmt.Errorf("loadgen: %d peers: want at least one per source address (%d)", cfg.Peers, hosts)
		}
		r.torrentOf = make([]uint32, cfg.Peers)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range r.torrentOf {
			r.torrentOf[i] = uint32(r.pop.Draw(rng))
		}
		r.started = make([]atomic.Uint64, (cfg.Peers+63)/64)
	case ModeHTTPScrape:
	default:
		return nil, fmt.Errorf("loadgen: unknown mode %q", cfg.Mode)
	}
	if cfg.Mode == ModeUDPOpen {
		return r.open(ctx, mark)
	}

	var workers []func(*stats)
	var err error
	switch cfg.Mode {
	case ModeHTTPAnnounce, ModeHTTPScrape:
		workers = r.httpWorkers()
	case ModeUDP:
		if workers, err = r.udpWorkers(ctx); err != nil {
			return nil, err
		}
	}
	all := make([]stats, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w(&all[i])
		}()
	}
	sleep(ctx, cfg.Warmup)
	t0 := time.Now()
	r.phase.Store(phaseMeasure)
	mark("start")
	sleep(ctx, cfg.Duration)
	r.phase.Store(phaseStop)
	elapsed := time.Since(t0)
	mark("end")
	wg.Wait()
	return summarize(cfg.Mode, all, elapsed), nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func summarize(mode string, all []stats, elapsed time.Duration) *Result {
	var sum stats
	res := &Result{Mode: mode, ByVerdict: map[string]uint64{}, Seconds: elapsed.Seconds()}
	for i := range all {
		s := &all[i]
		sum.hist.Merge(&s.hist)
		for v, c := range s.verdicts {
			sum.verdicts[v] += c
		}
		for k, c := range s.kinds {
			sum.kinds[k] += c
		}
		sum.reconnects += s.reconnects
		sum.resumed += s.resumed
		sum.handshakes += s.handshakes
		sum.warmupErrs += s.warmupErrs
		if res.FirstError == "" {
			res.FirstError = s.firstErr
		}
	}
	for v, c := range sum.verdicts {
		if c == 0 {
			continue
		}
		res.ByVerdict[Verdict(v).String()] = c
		if Verdict(v) == OK {
			res.Responses = c
		} else {
			res.Errors += c
		}
	}
	if mode == ModeUDP || mode == ModeUDPFill || mode == ModeHTTPFill {
		res.Kinds = map[string]uint64{
			"connect": sum.kinds[ActionConnect], "announce": sum.kinds[ActionAnnounce], "scrape": sum.kinds[ActionScrape],
		}
	}
	if elapsed > 0 {
		res.PerSecond = float64(res.Responses) / elapsed.Seconds()
	}
	res.P50us = float64(sum.hist.Quantile(0.50)) / 1e3
	res.P99us = float64(sum.hist.Quantile(0.99)) / 1e3
	res.P999us = float64(sum.hist.Quantile(0.999)) / 1e3
	res.Reconnects = sum.reconnects
	res.Resumed, res.Handshakes = sum.resumed, sum.handshakes
	res.WarmupErrs = sum.warmupErrs
	return res
}

// markStarted reports whether peer i had not announced yet, and marks it.
func (r *run) markStarted(i int) bool {
	bit := uint64(1) << (i % 64)
	return r.started[i/64].Or(bit)&bit == 0
}

// errNoConnID means a UDP socket never got a connection ID.
var errNoConnID = errors.New("no answer to connect")
