package redis

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/tracker/models"
)

// Operations that label chihaya_redis_errors_total.
const (
	opAnnounce = "announce"
	opScrape   = "scrape"
	opReap     = "reap"
	opCounts   = "counts"
	opSite     = "site"
	// opGlobal counts the failed updates of the global keys in cluster mode, which are
	// deferred (see global.go).
	opGlobal = "global"
)

// metrics are a Pool's own; Collectors hands them to the registry the caller owns.
type metrics struct {
	errors  *prometheus.CounterVec
	byOp    map[string]prometheus.Counter
	pending prometheus.GaugeFunc
	dropped prometheus.Counter
}

func newMetrics(pending *pendingGlobals) *metrics {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "redis", Name: "errors_total",
			Help: "Redis commands of the tracker driver that failed (unreachable, slow past the deadline, or refused), by operation.",
		}, []string{"op"}),
		byOp: make(map[string]prometheus.Counter),
		pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "chihaya", Subsystem: "redis", Name: "global_pending",
			Help: "Updates of the global keys (torrent index, session index, swarm counters) that failed in cluster mode and wait to be applied again: torrents, plus one while counter deltas wait.",
		}, func() float64 { return float64(pending.size.Load()) }),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "redis", Name: "global_dropped_total",
			Help: "Deferred updates of the torrent index dropped because too many torrents were pending (cluster mode).",
		}),
	}
	// Every label value exists from the start, at zero, and the hot path looks up no label.
	for _, op := range []string{opAnnounce, opScrape, opReap, opCounts, opSite, opGlobal} {
		m.byOp[op] = m.errors.WithLabelValues(op)
	}
	return m
}

// Collectors returns the driver's metrics for the caller to register:
// chihaya_redis_errors_total{op}, op being one of announce, scrape, reap, counts (swarm
// gauges), site (private-mode site state) and global (cluster mode: an update of the global
// keys that failed and was deferred); chihaya_redis_global_pending, the deferred updates
// waiting; and chihaya_redis_global_dropped_total, those the queue's bound dropped. Each call
// returns the same collectors.
func (p *Pool) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.metrics.errors, p.metrics.pending, p.metrics.dropped}
}

// fail counts err under op, unless it is an answer rather than a failure (an unknown torrent
// or passkey) or the caller gave up (a cancelled context), and returns it.
func (p *Pool) fail(op string, err error) error {
	var ce models.ClientError
	if err != nil && !errors.As(err, &ce) && !errors.Is(err, context.Canceled) {
		p.metrics.byOp[op].Inc()
	}
	return err
}
