package udp

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/tracker/models"
)

// packetKind is the action of a received datagram, as the packets metric labels it.
type packetKind uint8

const (
	kindConnect packetKind = iota
	kindAnnounce
	kindScrape
	kindUnknown
	numKinds
)

var kindNames = [numKinds]string{"connect", "announce", "scrape", "unknown"}

// rejectReason is why a datagram got a truncated error packet or no answer, before it reached
// the core.
type rejectReason uint8

const (
	rejectShort        rejectReason = iota // shorter than the 16-byte header: no answer
	rejectProtocolID                       // a connect without the protocol ID
	rejectConnectionID                     // a bad or expired connection ID
	rejectAction                           // an action the server does not take
	numReasons
)

var reasonNames = [numReasons]string{"short", "protocol_id", "connection_id", "action"}

// metrics are the UDP frontend's own series. Answered announces and scrapes are counted by the
// stats package (chihaya_requests_total{transport="udp"}), like HTTP requests; these count what
// only UDP has. Every series is looked up once, so the request path only adds to counters.
type metrics struct {
	packetsVec  *prometheus.CounterVec
	rejectedVec *prometheus.CounterVec
	writeErrors prometheus.Counter
	readErrors  prometheus.Counter
	batch       prometheus.Histogram

	packets  [numKinds][2]prometheus.Counter
	rejected [numReasons]prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		packetsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "udp", Name: "packets_total",
			Help: "UDP tracker datagrams received with a whole header, by action and address family.",
		}, []string{"action", "family"}),
		rejectedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "udp", Name: "rejected_packets_total",
			Help: "UDP datagrams refused before the tracker core: too short, no protocol ID, a bad or expired connection ID, an unknown action.",
		}, []string{"reason"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "udp", Name: "write_errors_total",
			Help: "UDP answers the kernel refused to send.",
		}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "chihaya", Subsystem: "udp", Name: "read_errors_total",
			Help: "Failed reads from the UDP socket, other than its closing.",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "chihaya", Subsystem: "udp", Name: "read_batch_datagrams",
			Help:    "Datagrams one read system call returned (recvmmsg batches; always 1 without batching).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
	}
	for k := packetKind(0); k < numKinds; k++ {
		for f := models.IPv4; f <= models.IPv6; f++ {
			m.packets[k][f] = m.packetsVec.WithLabelValues(kindNames[k], f.String())
		}
	}
	for r := rejectReason(0); r < numReasons; r++ {
		m.rejected[r] = m.rejectedVec.WithLabelValues(reasonNames[r])
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.packetsVec, m.rejectedVec, m.writeErrors, m.readErrors, m.batch}
}
