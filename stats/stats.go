package stats

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// Action is the kind of a tracker request.
type Action uint8

// The request kinds.
const (
	Announce Action = iota
	Scrape
	numActions
)

// String returns "announce" or "scrape".
func (a Action) String() string {
	if a == Scrape {
		return "scrape"
	}
	return "announce"
}

// Transport names the frontend a request came through.
type Transport uint8

// The frontends.
const (
	HTTP Transport = iota
	UDP
	// WebSocket is the WebSocket tracker's (package ws): an announce, an answer (which counts as
	// an announce) or a scrape message.
	WebSocket
	numTransports
)

// String returns "http", "udp" or "ws".
func (t Transport) String() string {
	switch t {
	case UDP:
		return "udp"
	case WebSocket:
		return "ws"
	}
	return "http"
}

// Request describes one answered request. It is passed by value and holds no pointer but Err,
// so recording it does not allocate.
type Request struct {
	Transport Transport
	Action    Action
	Family    models.Family
	// Event is the announce's event; meaningful for successful announces.
	Event models.Event
	// Err is the failure the client was told about, or nil.
	Err      error
	Duration time.Duration
}

// Swarm reports the sizes of all swarms; *tracker.Tracker implements it.
type Swarm interface {
	SwarmCounts(ctx context.Context) (models.SwarmCounts, error)
}

// event is a Request, or a reaping pass when reap is set.
type event struct {
	req            Request
	reap           bool
	reapedTorrents int32
	reapedPeers    int64
}

// Stats aggregates tracker events. Record and ObserveReap are safe for concurrent use and never
// block; everything else is owned by the goroutine running Run.
type Stats struct {
	events  chan event
	dropped atomic.Uint64
	start   time.Time
	swarm   Swarm

	includeMem  bool
	verboseMem  bool
	memInterval time.Duration
	mem         atomic.Pointer[memSample]

	// perSecond[a] holds math.Float64bits of the action's mean rate over the last minute.
	perSecond [numActions]atomic.Uint64
	// total[a] and failed[a] count the action's requests since start, failures included in
	// total; the aggregator writes them, Requests reads them.
	total, failed [numActions]atomic.Uint64

	reg     *prometheus.Registry
	metrics *metrics

	// syncs asks Run to drain what is pending now; running says Run is there to ask.
	syncs   chan chan struct{}
	running atomic.Bool
}

var _ tracker.Observer = (*Stats)(nil)

// New returns a Stats configured by cfg that reads swarm sizes from swarm (which may be nil).
// Nothing is aggregated until Run is called.
func New(cfg *config.Config, swarm Swarm) *Stats {
	s := &Stats{
		events:      make(chan event, cfg.StatsBufferSize),
		start:       time.Now(),
		swarm:       swarm,
		includeMem:  cfg.IncludeMemStats,
		verboseMem:  cfg.VerboseMemStats,
		memInterval: cfg.MemStatsInterval.Duration,
		reg:         prometheus.NewRegistry(),
		syncs:       make(chan chan struct{}),
	}
	s.metrics = newMetrics(s)
	s.reg.MustRegister(s.metrics.collectors()...)
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return s
}

// syncTimeout bounds how long a metrics request waits for the pending events to be counted.
const syncTimeout = time.Second

// Sync returns once every event recorded before the call has been counted (or ctx ends, or
// a second has passed), so that /stats and /metrics include every request answered before they
// were asked for rather than miss the last drain interval's. Without Run it returns at once.
func (s *Stats) Sync(ctx context.Context) {
	if !s.running.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	done := make(chan struct{})
	select {
	case s.syncs <- done:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// SetSwarm sets where swarm sizes are read from. It must be called before Run.
func (s *Stats) SetSwarm(swarm Swarm) { s.swarm = swarm }

// Registry returns the registry that /metrics serves, so that other parts (such as a backend
// driver) can register metrics of their own.
func (s *Stats) Registry() *prometheus.Registry { return s.reg }

// Record hands r to the aggregator. It never blocks: when the buffer is full, r is dropped and
// counted in chihaya_stats_events_dropped_total. A nil *Stats records nothing.
func (s *Stats) Record(r Request) {
	if s == nil {
		return
	}
	s.send(event{req: r})
}

// ObserveReap records one reaping pass; it implements tracker.Observer. A nil *Stats records
// nothing.
func (s *Stats) ObserveReap(r tracker.ReapResult) {
	if s == nil {
		return
	}
	s.send(event{reap: true, reapedPeers: int64(r.Peers), reapedTorrents: int32(r.Torrents)})
}

func (s *Stats) send(e event) {
	select {
	case s.events <- e:
	default:
		s.dropped.Add(1)
	}
}

// RequestCounts are the announces and scrapes answered since start, over HTTP, UDP and
// WebSocket, as typed values for reports (the site's stats report among them).
type RequestCounts struct {
	// Announces and Scrapes count every request, failures included.
	Announces, AnnounceFailures uint64
	Scrapes, ScrapeFailures     uint64
	// PerSecond is the mean rate of announces and scrapes together over the last minute.
	PerSecond float64
}

// Requests returns the request counts aggregated so far (events still buffered are not in
// them). A nil *Stats returns zeros.
func (s *Stats) Requests() RequestCounts {
	if s == nil {
		return RequestCounts{}
	}
	return RequestCounts{
		Announces:        s.total[Announce].Load(),
		AnnounceFailures: s.failed[Announce].Load(),
		Scrapes:          s.total[Scrape].Load(),
		ScrapeFailures:   s.failed[Scrape].Load(),
		PerSecond: math.Float64frombits(s.perSecond[Announce].Load()) +
			math.Float64frombits(s.perSecond[Scrape].Load()),
	}
}

// Dropped returns how many events were dropped because the buffer was full.
func (s *Stats) Dropped() uint64 { return s.dropped.Load() }

// window is the per-second history behind the "per second over the last minute" rates.
const window = 60

// drainInterval is how often the aggregator empties the event buffer. Draining in batches,
// rather than waking on every event, keeps the request path's send a plain buffered-channel
// write: no goroutine is woken per request. The buffer must hold what arrives in one interval.
const drainInterval = 10 * time.Millisecond

// Run aggregates events until ctx ends, then applies what is still buffered.
func (s *Stats) Run(ctx context.Context) {
	drain := time.NewTicker(drainInterval)
	defer drain.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	var memTick <-chan time.Time
	if s.includeMem {
		s.sampleMem()
		t := time.NewTicker(s.memInterval)
		defer t.Stop()
		memTick = t.C
	}
	s.running.Store(true)
	defer s.running.Store(false)
	var (
		ring   [window][numActions]uint64
		cur    [numActions]uint64
		filled int
		slot   int
	)
	for {
		select {
		case <-ctx.Done():
			s.drain(&cur)
			return
		case <-drain.C:
			s.drain(&cur)
		case done := <-s.syncs:
			s.drain(&cur)
			close(done)
		case <-second.C:
			s.drain(&cur)
			ring[slot] = cur
			cur = [numActions]uint64{}
			slot = (slot + 1) % window
			if filled < window {
				filled++
			}
			for a := Action(0); a < numActions; a++ {
				var sum uint64
				for i := 0; i < filled; i++ {
					sum += ring[i][a]
				}
				s.perSecond[a].Store(math.Float64bits(float64(sum) / float64(filled)))
			}
		case <-memTick:
			s.sampleMem()
		}
	}
}

// maxQuantileSamples bounds how many events of one drain go into the latency summary. Its
// streams cost far more per observation than counters and histograms, so under load the summary
// sees a uniform sample (every stride-th event) and everything else sees every event.
const maxQuantileSamples = 64

// drain applies every event buffered now.
func (s *Stats) drain(cur *[numActions]uint64) {
	stride := max(1, len(s.events)/maxQuantileSamples)
	for i := 0; ; i++ {
		select {
		case e := <-s.events:
			s.apply(e, cur, i%stride == 0)
		default:
			return
		}
	}
}

func (s *Stats) apply(e event, cur *[numActions]uint64, sample bool) {
	m := s.metrics
	if e.reap {
		m.peersReaped.Add(float64(e.reapedPeers))
		m.torrentsReaped.Add(float64(e.reapedTorrents))
		return
	}
	r := &e.req
	if r.Action >= numActions || r.Family > models.IPv6 || r.Event > models.Paused || r.Transport >= numTransports {
		return // not a request a frontend can describe
	}
	action := r.Action.String()
	c := m.requestsBy[r.Transport][r.Action][r.Family]
	if c == nil {
		c = m.requests.WithLabelValues(r.Transport.String(), action, r.Family.String())
		m.requestsBy[r.Transport][r.Action][r.Family] = c
	}
	c.Inc()
	cur[r.Action]++
	s.total[r.Action].Add(1)
	secs := r.Duration.Seconds()
	m.durationBy[r.Action].Observe(secs)
	if sample {
		m.latencyBy[r.Action].Observe(secs)
	}
	if r.Err != nil {
		s.failed[r.Action].Add(1)
		m.failures.WithLabelValues(action, FailureKind(r.Err)).Inc()
		return
	}
	if r.Action == Announce {
		m.announcesBy[r.Event].Inc()
	}
}

func eventName(e models.Event) string {
	if e == models.None {
		return "none"
	}
	return e.String()
}

// FailureKind names the kind of a failure for the "kind" label: a short, bounded name for each
// failure a client can be told about, "other" for client failures without one, and "internal"
// for the tracker's own errors.
func FailureKind(err error) string {
	var ce models.ClientError
	if !errors.As(err, &ce) {
		return "internal"
	}
	if kind, ok := failureKinds[ce]; ok {
		return kind
	}
	return "other"
}

var failureKinds = map[models.ClientError]string{
	models.ErrMalformedRequest:      "malformed_request",
	models.ErrMissingInfoHash:       "missing_info_hash",
	models.ErrInvalidInfoHash:       "invalid_info_hash",
	models.ErrMissingPeerID:         "missing_peer_id",
	models.ErrInvalidPeerID:         "invalid_peer_id",
	models.ErrMissingPort:           "missing_port",
	models.ErrInvalidPort:           "invalid_port",
	models.ErrInvalidNumber:         "invalid_number",
	models.ErrMissingUploaded:       "missing_parameter",
	models.ErrMissingDownloaded:     "missing_parameter",
	models.ErrMissingLeft:           "missing_parameter",
	models.ErrDuplicateParameter:    "duplicate_parameter",
	models.ErrInvalidEvent:          "invalid_event",
	models.ErrInvalidIP:             "invalid_ip",
	models.ErrTooManyInfoHashes:     "too_many_info_hashes",
	models.ErrTorrentNotFound:       "torrent_not_found",
	models.ErrInternal:              "internal",
	models.ErrUnavailable:           "unavailable",
	models.ErrRateLimited:           "rate_limited",
	models.ErrTorrentLimit:          "torrent_limit",
	models.ErrPeerLimit:             "peer_limit",
	models.ErrNotAuthorized:         "not_authorized",
	tracker.ErrClientNotWhitelisted: "client_not_whitelisted",
	models.ErrPasskeyNotFound:       "passkey_not_found",
	models.ErrLeechingForbidden:     "leeching_forbidden",
	models.ErrCompactOnly:           "compact_only",
	models.ErrAuthentication:        "authentication",
	models.ErrBadConnectionID:       "bad_connection_id",
	models.ErrBadProtocolID:         "bad_protocol_id",
	models.ErrUnknownAction:         "unknown_action",
	models.ErrPrivateScrape:         "private_scrape",
}

type memSample struct {
	at         time.Time
	goroutines int
	rss        uint64
	ms         runtime.MemStats
}

func (s *Stats) sampleMem() {
	m := &memSample{at: time.Now(), goroutines: runtime.NumGoroutine(), rss: readRSS()}
	runtime.ReadMemStats(&m.ms)
	s.mem.Store(m)
}
