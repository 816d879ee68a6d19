package gazelle

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Conn's own; Collectors hands them to the registry the caller owns.
type metrics struct {
	queue          *queueCollector
	flushed        *prometheus.CounterVec
	flushedExpire  prometheus.Counter
	flushErrors    prometheus.Counter
	dropped        prometheus.Counter
	callbackErrors prometheus.Counter
}

func newMetrics(c *Conn) *metrics {
	m := &metrics{
		queue: &queueCollector{c: c, desc: prometheus.NewDesc(
			"chihaya_gazelle_queue_rows",
			"Rows waiting to be written to the Gazelle database, by buffer (expiretoken: token expiries waiting for the site's callback).",
			[]string{"table"}, nil)},
		flushed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "gazelle", Name: "flushed_rows_total",
			Help: "Rows written to the Gazelle database (or, for expiretoken, acknowledged by the site), by buffer.",
		}, []string{"table"}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "gazelle", Name: "flush_errors_total",
			Help: "Failed attempts to write a batch to the Gazelle database; the batch is kept and retried.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "gazelle", Name: "dropped_total",
			Help: "Rows lost: refused because the write queue was full, or refused by the database for their data.",
		}),
		callbackErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "gazelle", Name: "callback_errors_total",
			Help: "Failed token expiry callbacks to the site; each is retried until it succeeds.",
		}),
	}
	// Every label value exists from the start, at zero.
	for t := range numTables {
		m.flushed.WithLabelValues(t.String())
	}
	m.flushedExpire = m.flushed.WithLabelValues(tableExpire.String())
	return m
}

// Collectors returns the driver's metrics for the caller to register:
// chihaya_gazelle_queue_rows{table}, chihaya_gazelle_flushed_rows_total{table},
// chihaya_gazelle_flush_errors_total, chihaya_gazelle_dropped_total and
// chihaya_gazelle_callback_errors_total. table is one of users, torrents, snatches, peers,
// tokens and expiretoken. Each call returns the same collectors.
func (c *Conn) Collectors() []prometheus.Collector {
	m := c.metrics
	return []prometheus.Collector{m.queue, m.flushed, m.flushErrors, m.dropped, m.callbackErrors}
}

// queueCollector reads the queue's size when scraped, so that queuing a row costs no metric
// update.
type queueCollector struct {
	c    *Conn
	desc *prometheus.Desc
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	counts := q.c.queueCounts()
	for t := range numTables {
		ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(counts[t]), t.String())
	}
	n := 0
	if q.c.expire != nil {
		n = q.c.expire.queued()
	}
	ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(n), tableExpire.String())
}
