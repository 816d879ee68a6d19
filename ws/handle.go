package ws

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/tracker/models"
)

// handle answers one message. Bad input gets a failure on this socket only. An idle socket
// keeps nothing of its last message.
func (s *Server) handle(c *conn, msg []byte) {
	s.handleMessage(c, msg)
	c.rq.reset()
	c.offers = nil
}

func (s *Server) handleMessage(c *conn, msg []byte) {
	rq := &c.rq
	if err := rq.parse(msg); err != nil {
		s.m.bad[badJSON].Add(1)
		c.fail("", nil, err)
		return
	}
	switch rq.Action {
	case "announce":
		s.announce(c, rq)
	case "scrape":
		s.scrape(c, rq)
	default:
		s.m.bad[badInvalid].Add(1)
		c.fail("", nil, errBadAction)
	}
}

// fail queues a failure message. Errors that are not a models.ClientError are the tracker's own:
// they are logged and the client is told no more than that.
func (c *conn) fail(action string, ih *models.InfoHash, err error) {
	var ce models.ClientError
	if !errors.As(err, &ce) {
		glog.Errorf("ws: %s %s: %v", c.remote, action, err)
		ce = models.ErrInternal
	} else if glog.V(2) {
		glog.Infof("ws: %s %s: %v", c.remote, action, err)
	}
	c.s.m.failures.Add(1)
	c.send(appendFailure(nil, action, ih, string(ce)))
}

// WriteAnnounce keeps the core's counts for the answer, which is written after the announce.
func (c *conn) WriteAnnounce(resp *models.AnnounceResponse) error {
	c.resp = *resp
	c.resp.IPv4Peers, c.resp.IPv6Peers = nil, nil
	return nil
}

// WriteScrape keeps the core's counts for the answer.
func (c *conn) WriteScrape(resp *models.ScrapeResponse) error {
	c.files = append(c.files[:0], resp.Files...)
	return nil
}

func (s *Server) announce(c *conn, rq *request) {
	var ih models.InfoHash
	var id, to models.PeerID
	if !binary(rq.InfoHash, (*[20]byte)(&ih)) {
		s.m.bad[badInvalid].Add(1)
		c.fail("", nil, errBadInfoHash)
		return
	}
	if !binary(rq.PeerID, (*[20]byte)(&id)) {
		s.m.bad[badInvalid].Add(1)
		c.fail("", nil, errBadPeerID)
		return
	}
	answer := present(rq.Answer)
	if answer && !binary(rq.ToPeerID, (*[20]byte)(&to)) {
		s.m.bad[badInvalid].Add(1)
		c.fail("", nil, errBadToPeerID)
		return
	}
	ev, ok := event(rq.Event)
	if !ok {
		s.m.bad[badInvalid].Add(1)
		c.fail("announce", &ih, models.ErrInvalidEvent)
		return
	}
	c.offers = rq.Offers
	if len(c.offers) > s.maxOffers {
		s.m.offersCut.Add(uint64(len(c.offers) - s.maxOffers))
		c.offers = c.offers[:s.maxOffers]
	}
	if answer {
		s.m.messages[msgAnswer].Add(1)
	} else {
		s.m.messages[msgAnnounce].Add(1)
	}
	if s.limiter != nil && !s.limiter.Allow(ratelimit.Announce, c.remote, time.Now()) {
		c.fail("announce", &ih, models.ErrRateLimited)
		return
	}

	j := c.joined[ih]
	if j == nil && ev != models.Stopped && len(c.joined) >= maxSwarmsPerConn {
		c.fail("announce", &ih, errTooManySwarms)
		return
	}
	a := models.Announce{
		InfoHash: ih, PeerID: id, Passkey: c.passkey, UserAgent: c.userAgent,
		Endpoint: netip.AddrPortFrom(c.remote, 0), Remote: c.remote, Event: ev,
		NumWant: 0, CompactOne: true, WebRTC: true,
	}
	// An answer carries no counters: it repeats the peer's last ones, as the reference never
	// turns a seeder back into a leecher on one.
	known := j != nil && j.id == id
	var okUp, okDown, okLeft bool
	a.Uploaded, okUp = number(rq.Uploaded)
	a.Downloaded, okDown = number(rq.Downloaded)
	a.Left, okLeft = number(rq.Left)
	if !okUp && known {
		a.Uploaded = j.up
	}
	if !okDown && known {
		a.Downloaded = j.down
	}
	if !okLeft {
		// null or absent (a client without the metadata sends Infinity, which JSON makes null):
		// a leecher, unless this socket's peer was seeding.
		a.Left = leftOf(known && j.seeder)
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.reqTimeout)
	err := s.tkr.HandleAnnounce(ctx, &a, c)
	cancel()
	if err != nil {
		c.fail("announce", &ih, err)
		return
	}
	if j != nil && j.id != id && j.registered {
		// The socket announces ih under another peer ID now: the old one is gone.
		s.idx.leave(&ih, &j.id, c)
	}
	if ev == models.Stopped {
		if j != nil {
			s.idx.leave(&ih, &id, c)
			if s.relay != nil {
				s.relay.Leave(&ih, &id)
			}
			delete(c.joined, ih)
		}
	} else {
		if j == nil {
			j = &joined{}
			c.joined[ih] = j
		}
		if !j.registered || j.id != id {
			s.idx.join(&ih, &id, c)
			if s.relay != nil {
				s.relay.Join(&ih, &id)
			}
		}
		*j = joined{id: id, seeder: a.Left == 0, up: a.Uploaded, down: a.Downloaded, registered: true}
	}

	if !answer {
		interval, _ := s.tkr.AnnounceInterval()
		secs := int((interval + 5*time.Second - 1) / (5 * time.Second))
		c.send(appendAnnounceReply(nil, &ih, secs, c.resp.Complete, c.resp.Incomplete))
	}
	if len(c.offers) > 0 && ev != models.Stopped {
		s.relayOffers(c, &ih, &id)
	}
	if answer {
		s.relayAnswer(c, &ih, &id, &to, rq)
	}
}

// relayOffers sends offer i to the i-th of min(len(offers), max) random other peers of the swarm.
func (s *Server) relayOffers(c *conn, ih *models.InfoHash, from *models.PeerID) {
	if s.relay != nil {
		s.relay.Offers(c, ih, from, c.offers)
		return
	}
	s.relayLocal(c, ih, from, c.offers)
}

// relayLocal relays offers to this instance's peers only.
func (s *Server) relayLocal(c *conn, ih *models.InfoHash, from *models.PeerID, offers []offer) {
	c.picked = s.idx.pick(ih, from, len(offers), c.picked[:0])
	for i, m := range c.picked {
		o := &offers[i]
		if m.c.send(appendRelay(nil, ih, from, "offer", o.Offer, o.OfferID)) {
			s.m.offersRelayed.Add(1)
		}
	}
	clear(c.picked)
}

// relayAnswer sends an answer to the peer it is for, if it is still connected.
func (s *Server) relayAnswer(c *conn, ih *models.InfoHash, from, to *models.PeerID, rq *request) {
	msg := appendRelay(nil, ih, from, "answer", rq.Answer, rq.OfferID)
	if dst := s.idx.lookup(ih, to); dst != nil {
		if dst.send(msg) {
			s.m.answersRelayed.Add(1)
		}
		return
	}
	if s.relay != nil && s.relay.Answer(ih, to, msg) {
		return
	}
	s.m.answersLost.Add(1)
}

func (s *Server) scrape(c *conn, rq *request) {
	s.m.messages[msgScrape].Add(1)
	var hashes []models.InfoHash
	switch {
	case !present(rq.InfoHash):
	case rq.InfoHash[0] == '"':
		var ih models.InfoHash
		if !binary(rq.InfoHash, (*[20]byte)(&ih)) {
			s.m.bad[badInvalid].Add(1)
			c.fail("", nil, errBadInfoHash)
			return
		}
		hashes = append(hashes, ih)
	case rq.InfoHash[0] == '[':
		var raws []json.RawMessage
		if json.Unmarshal(rq.InfoHash, &raws) != nil {
			s.m.bad[badInvalid].Add(1)
			c.fail("", nil, errBadInfoHash)
			return
		}
		if len(raws) > s.tkr.MaxScrapeInfoHashes() {
			c.fail("scrape", nil, errTooManyHashes)
			return
		}
		hashes = make([]models.InfoHash, len(raws))
		for i, raw := range raws {
			if !binary(raw, (*[20]byte)(&hashes[i])) {
				s.m.bad[badInvalid].Add(1)
				c.fail("", nil, errBadInfoHash)
				return
			}
		}
	default:
		s.m.bad[badInvalid].Add(1)
		c.fail("", nil, errBadInfoHash)
		return
	}
	if s.limiter != nil && !s.limiter.Allow(ratelimit.Scrape, c.remote, time.Now()) {
		c.fail("scrape", nil, models.ErrRateLimited)
		return
	}
	if len(hashes) == 0 {
		c.fail("scrape", nil, errNoScrapeHashes)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.reqTimeout)
	err := s.tkr.HandleScrape(ctx, &models.Scrape{Passkey: c.passkey, InfoHashes: hashes}, c)
	cancel()
	if err != nil {
		c.fail("scrape", nil, err)
		return
	}
	interval, _ := s.tkr.AnnounceInterval()
	c.send(appendScrape(nil, c.files, int((interval+time.Second-1)/time.Second)))
}
