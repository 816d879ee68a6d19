// Package stats aggregates what the tracker does into metrics. The request path hands it events
// over a buffered channel and never waits: when the buffer is full the event is dropped and the
// drop is counted. One goroutine, Run, owns the aggregates.
//
// This first version counts announces, scrapes and reaped peers and logs memory use; the /stats
// and /metrics endpoints build on it.
package stats

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

type kind uint8

const (
	announceEvent kind = iota
	scrapeEvent
	reapEvent
)

type event struct {
	kind  kind
	peers int
}

// Totals is a snapshot of the aggregates.
type Totals struct {
	Announces   uint64
	Scrapes     uint64
	PeersReaped uint64
	Dropped     uint64
}

// Stats is a tracker.Observer that aggregates in its own goroutine.
type Stats struct {
	events      chan event
	dropped     atomic.Uint64
	totals      atomic.Pointer[Totals]
	includeMem  bool
	verboseMem  bool
	memInterval time.Duration
}

var _ tracker.Observer = (*Stats)(nil)

// New returns a Stats configured by cfg. Nothing is aggregated until Run is called.
func New(cfg *config.Config) *Stats {
	s := &Stats{
		events:      make(chan event, cfg.StatsBufferSize),
		includeMem:  cfg.IncludeMemStats,
		verboseMem:  cfg.VerboseMemStats,
		memInterval: cfg.MemStatsInterval.Duration,
	}
	s.totals.Store(&Totals{})
	return s
}

func (s *Stats) record(e event) {
	select {
	case s.events <- e:
	default:
		s.dropped.Add(1)
	}
}

// ObserveAnnounce records one announce.
func (s *Stats) ObserveAnnounce(*models.Announce, *tracker.AnnounceResult) {
	s.record(event{kind: announceEvent})
}

// ObserveScrape records one scrape.
func (s *Stats) ObserveScrape(*models.Scrape) { s.record(event{kind: scrapeEvent}) }

// ObserveReap records one reaping pass.
func (s *Stats) ObserveReap(r tracker.ReapResult) { s.record(event{kind: reapEvent, peers: r.Peers}) }

// Totals returns the latest aggregates, with the drop count.
func (s *Stats) Totals() Totals {
	t := *s.totals.Load()
	t.Dropped = s.dropped.Load()
	return t
}

// Run aggregates events until ctx ends.
func (s *Stats) Run(ctx context.Context) {
	var memTick <-chan time.Time
	if s.includeMem {
		t := time.NewTicker(s.memInterval)
		defer t.Stop()
		memTick = t.C
	}
	cur := Totals{}
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.events:
			switch e.kind {
			case announceEvent:
				cur.Announces++
			case scrapeEvent:
				cur.Scrapes++
			case reapEvent:
				cur.PeersReaped += uint64(e.peers)
			}
			snap := cur
			s.totals.Store(&snap)
		case <-memTick:
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if s.verboseMem {
				glog.Infof("stats: heap %d B in use, %d B sys, %d GCs, last pause %s",
					m.HeapInuse, m.Sys, m.NumGC, time.Duration(m.PauseNs[(m.NumGC+255)%256]))
			} else if glog.V(1) {
				glog.Infof("stats: heap %d B in use", m.HeapInuse)
			}
		}
	}
}
