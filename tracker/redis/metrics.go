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
)

// metrics are a Pool's own; Collectors hands them to the registry the caller owns.
type metrics struct {
	errors *prometheus.CounterVec
	byOp   map[string]prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "redis", Name: "errors_total",
			Help: "Redis commands of the tracker driver that failed (unreachable, slow past the deadline, or refused), by operation.",
		}, []string{"op"}),
		byOp: make(map[string]prometheus.Counter),
	}
	// Every label value exists from the start, at zero, and the hot path looks up no label.
	for _, op := range []string{opAnnounce, opScrape, opReap, opCounts, opSite} {
		m.byOp[op] = m.errors.WithLabelValues(op)
	}
	return m
}

// Collectors returns the driver's metrics for the caller to register:
// chihaya_redis_errors_total{op}, op being one of announce, scrape, reap, counts (swarm
// gauges) and site (private-mode site state). Each call returns the same collectors.
func (p *Pool) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.metrics.errors}
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
