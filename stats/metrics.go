package stats

import (
	"context"
	"time"

	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/tracker/models"
)

const namespace = "chihaya"

// durationBuckets resolve sub-millisecond answers: an announce through the memory driver takes
// tens of microseconds.
var durationBuckets = []float64{
	10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10,
}

type metrics struct {
	requests       *prometheus.CounterVec
	announces      *prometheus.CounterVec
	failures       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	latency        *prometheus.SummaryVec
	peersReaped    prometheus.Counter
	torrentsReaped prometheus.Counter
	dropped        prometheus.CounterFunc
	startTime      prometheus.Gauge
	swarm          *swarmCollector

	// The series every request touches, looked up once so that the aggregator hashes no
	// labels per event.
	// requestsBy holds HTTP's series from the start, the other transports' from their first
	// request (so that a frontend turned off shows none).
	requestsBy  [numTransports][numActions][2]prometheus.Counter
	durationBy  [numActions]prometheus.Observer
	latencyBy   [numActions]prometheus.Observer
	announcesBy [models.Paused + 1]prometheus.Counter
}

func newMetrics(s *Stats) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "Tracker requests answered, failures included, by transport, action and address family.",
		}, []string{"transport", "action", "family"}),
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "announces_total",
			Help: "Announces answered successfully, by event.",
		}, []string{"event"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "failures_total",
			Help: "Requests answered with a failure, by action and kind.",
		}, []string{"action", "kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Time from a parsed request to its written answer, by action.",
			Buckets: durationBuckets,
		}, []string{"action"}),
		latency: prometheus.NewSummaryVec(prometheus.SummaryOpts{
			Namespace: namespace, Name: "request_latency_seconds",
			Help:       "Quantiles of request_duration_seconds over the last two to four minutes, by action.",
			Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001},
			// Every observation goes into one stream per age bucket, so few buckets keep the
			// aggregator cheap; quantiles cover the last MaxAge plus up to one bucket more.
			MaxAge:     4 * time.Minute,
			AgeBuckets: 2,
		}, []string{"action"}),
		peersReaped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "peers_reaped_total",
			Help: "Peers dropped by the reaper for not announcing within peer_timeout.",
		}),
		torrentsReaped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "torrents_reaped_total",
			Help: "Empty torrents deleted by the reaper.",
		}),
		dropped: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "stats", Name: "events_dropped_total",
			Help: "Stats events dropped because the stats buffer was full.",
		}, func() float64 { return float64(s.dropped.Load()) }),
		startTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "start_time_seconds",
			Help: "Unix time the tracker started.",
		}),
		swarm: &swarmCollector{s: s},
	}
	m.startTime.Set(float64(s.start.UnixNano()) / 1e9)
	// Create the common series up front, so that they read 0 rather than being absent.
	for a := Action(0); a < numActions; a++ {
		m.durationBy[a] = m.duration.WithLabelValues(a.String())
		m.latencyBy[a] = m.latency.WithLabelValues(a.String())
		for f := models.IPv4; f <= models.IPv6; f++ {
			m.requestsBy[HTTP][a][f] = m.requests.WithLabelValues(HTTP.String(), a.String(), f.String())
		}
	}
	for e := models.None; e <= models.Paused; e++ {
		m.announcesBy[e] = m.announces.WithLabelValues(eventName(e))
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.requests, m.announces, m.failures, m.duration, m.latency,
		m.peersReaped, m.torrentsReaped, m.dropped, m.startTime, m.swarm,
	}
}

var (
	torrentsDesc = prometheus.NewDesc(namespace+"_torrents", "Torrents in the tracker's swarm storage.", nil, nil)
	seedersDesc  = prometheus.NewDesc(namespace+"_seeders", "Seeders now, by address family.", []string{"family"}, nil)
	leechersDesc = prometheus.NewDesc(namespace+"_leechers", "Leechers now, by address family.", []string{"family"}, nil)
)

// swarmCollector reads swarm sizes from the tracker driver at collection time.
type swarmCollector struct{ s *Stats }

func (c *swarmCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- torrentsDesc
	ch <- seedersDesc
	ch <- leechersDesc
}

func (c *swarmCollector) Collect(ch chan<- prometheus.Metric) {
	if c.s.swarm == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sc, err := c.s.swarm.SwarmCounts(ctx)
	if err != nil {
		glog.Errorf("stats: read swarm sizes: %v", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(torrentsDesc, prometheus.GaugeValue, float64(sc.Torrents))
	ch <- prometheus.MustNewConstMetric(seedersDesc, prometheus.GaugeValue, float64(sc.Seeders[0]), "ipv4")
	ch <- prometheus.MustNewConstMetric(seedersDesc, prometheus.GaugeValue, float64(sc.Seeders[1]), "ipv6")
	ch <- prometheus.MustNewConstMetric(leechersDesc, prometheus.GaugeValue, float64(sc.Leechers[0]), "ipv4")
	ch <- prometheus.MustNewConstMetric(leechersDesc, prometheus.GaugeValue, float64(sc.Leechers[1]), "ipv6")
}
