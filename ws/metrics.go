package ws

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/tracker/models"
)

// relay carries offers and answers to WebRTC peers connected to other instances that share the
// swarms (the Redis driver's). Its methods must not block the caller for long.
type relay interface {
	// Join and Leave tell the other instances that this one speaks for peer id of ih's swarm.
	Join(ih *models.InfoHash, id *models.PeerID)
	Leave(ih *models.InfoHash, id *models.PeerID)
	// Offers relays offer i to the i-th of up to len(offers) random other peers of the swarm,
	// on any instance, this one included.
	Offers(sc *scratch, c *conn, ih *models.InfoHash, from *models.PeerID, offers []offer)
	// Answer sends msg to peer to on another instance; it reports whether it found one. msg is
	// the caller's: Answer copies what it keeps.
	Answer(ih *models.InfoHash, to *models.PeerID, msg []byte) bool
}

const (
	badJSON = iota
	badInvalid
	badTooLarge
	numBad
)

var badNames = [numBad]string{"not_json", "invalid", "too_large"}

const (
	msgAnnounce = iota
	msgAnswer
	msgScrape
	numMsg
)

var msgNames = [numMsg]string{"announce", "answer", "scrape"}

// metrics are the WebSocket tracker's counters.
type metrics struct {
	s              *Server
	accepted       atomic.Uint64
	polled         atomic.Int64
	upgradeFailed  atomic.Uint64
	messages       [numMsg]atomic.Uint64
	bad            [numBad]atomic.Uint64
	failures       atomic.Uint64
	offersRelayed  atomic.Uint64
	offersCut      atomic.Uint64
	answersRelayed atomic.Uint64
	answersLost    atomic.Uint64
	slowDropped    atomic.Uint64
	idleClosed     atomic.Uint64
	remoteSent     atomic.Uint64
	remoteDropped  atomic.Uint64
	remoteReceived atomic.Uint64
	remoteLost     atomic.Uint64
	remoteErrors   atomic.Uint64
}

func (m *metrics) init(s *Server) { m.s = s }

var (
	descOpen = prometheus.NewDesc("chihaya_ws_connections_open",
		"WebSocket connections open.", nil, nil)
	descPolled = prometheus.NewDesc("chihaya_ws_connections_polled",
		"WebSocket connections open that the poller reads; the others (under TLS) have a goroutine each.", nil, nil)
	descAccepted = prometheus.NewDesc("chihaya_ws_connections_total",
		"WebSocket connections accepted.", nil, nil)
	descUpgradeFailed = prometheus.NewDesc("chihaya_ws_upgrade_failures_total",
		"WebSocket upgrade requests refused by the handshake.", nil, nil)
	descPeers = prometheus.NewDesc("chihaya_ws_peers",
		"WebRTC peers this instance holds sockets for, over all swarms.", nil, nil)
	descMessages = prometheus.NewDesc("chihaya_ws_messages_total",
		"WebSocket messages received, by kind (an announce with an answer is an answer).", []string{"kind"}, nil)
	descBad = prometheus.NewDesc("chihaya_ws_bad_messages_total",
		"WebSocket messages refused before the core, by reason (too_large closes the socket).", []string{"reason"}, nil)
	descFailures = prometheus.NewDesc("chihaya_ws_failures_total",
		"Failure messages sent.", nil, nil)
	descOffers = prometheus.NewDesc("chihaya_ws_offers_relayed_total",
		"WebRTC offers queued to the socket of another peer of this instance.", nil, nil)
	descOffersCut = prometheus.NewDesc("chihaya_ws_offers_ignored_total",
		"Offers past ws_max_offers in one announce, ignored.", nil, nil)
	descAnswers = prometheus.NewDesc("chihaya_ws_answers_relayed_total",
		"WebRTC answers queued to the socket of the peer they are for, or published to its instance.", nil, nil)
	descAnswersLost = prometheus.NewDesc("chihaya_ws_answers_undeliverable_total",
		"Answers for a peer no instance holds a socket for.", nil, nil)
	descSlow = prometheus.NewDesc("chihaya_ws_slow_peers_dropped_total",
		"Sockets closed because their send queue (ws_send_queue) was full.", nil, nil)
	descIdle = prometheus.NewDesc("chihaya_ws_idle_closed_total",
		"Sockets closed after ws_idle_timeout without a message or a pong.", nil, nil)
	descRemoteSent = prometheus.NewDesc("chihaya_ws_relay_published_total",
		"Offers and answers published to other instances (redis driver).", nil, nil)
	descRemoteDropped = prometheus.NewDesc("chihaya_ws_relay_dropped_total",
		"Offers and answers for other instances dropped: the relay's queue was full, or publishing failed.", nil, nil)
	descRemoteReceived = prometheus.NewDesc("chihaya_ws_relay_received_total",
		"Offers and answers received from other instances.", nil, nil)
	descRemoteLost = prometheus.NewDesc("chihaya_ws_relay_undeliverable_total",
		"Offers and answers received from other instances for a peer this one no longer holds.", nil, nil)
	descRemoteErrors = prometheus.NewDesc("chihaya_ws_relay_errors_total",
		"Redis commands of the relay that failed (joins, leaves, picks; an offer then goes to local peers only).", nil, nil)
)

// Collectors returns the WebSocket tracker's Prometheus collectors.
func (s *Server) Collectors() []prometheus.Collector { return []prometheus.Collector{collector{s}} }

type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descPolled, descAccepted, descUpgradeFailed, descPeers, descMessages,
		descBad, descFailures, descOffers, descOffersCut, descAnswers, descAnswersLost, descSlow, descIdle,
		descRemoteSent, descRemoteDropped, descRemoteReceived, descRemoteLost, descRemoteErrors} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s, m := c.s, &c.s.m
	s.mu.Lock()
	open := len(s.conns)
	s.mu.Unlock()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(descPolled, prometheus.GaugeValue, float64(m.polled.Load()))
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(s.idx.peers()))
	counter(descAccepted, m.accepted.Load())
	counter(descUpgradeFailed, m.upgradeFailed.Load())
	for i := range m.messages {
		counter(descMessages, m.messages[i].Load(), msgNames[i])
	}
	for i := range m.bad {
		counter(descBad, m.bad[i].Load(), badNames[i])
	}
	counter(descFailures, m.failures.Load())
	counter(descOffers, m.offersRelayed.Load())
	counter(descOffersCut, m.offersCut.Load())
	counter(descAnswers, m.answersRelayed.Load())
	counter(descAnswersLost, m.answersLost.Load())
	counter(descSlow, m.slowDropped.Load())
	counter(descIdle, m.idleClosed.Load())
	counter(descRemoteSent, m.remoteSent.Load())
	counter(descRemoteDropped, m.remoteDropped.Load())
	counter(descRemoteReceived, m.remoteReceived.Load())
	counter(descRemoteLost, m.remoteLost.Load())
	counter(descRemoteErrors, m.remoteErrors.Load())
}
