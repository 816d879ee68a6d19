package ws

import (
	"errors"
	"net/netip"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker/models"
)

// handle answers one message, with sc's room. Bad input gets a failure on this socket only.
// Nothing of the message is kept past it: what is relayed is copied into the queues of the
// sockets it goes to. Announces (answers included) and scrapes are recorded as requests.
func (s *Server) handle(c *conn, msg []byte, sc *scratch) {
	rq := &sc.rq
	if err := rq.parse(msg, s.maxOffers); err != nil {
		s.m.bad[badJSON].Add(1)
		c.fail(sc, "", nil, err)
		return
	}
	now := time.Now()
	switch action(rq.Action) {
	case "announce":
		ev, err := s.announce(c, sc, now)
		s.record(c, stats.Announce, ev, err, now)
	case "scrape":
		err := s.scrape(c, sc, now)
		s.record(c, stats.Scrape, models.None, err, now)
	default:
		s.m.bad[badInvalid].Add(1)
		c.fail(sc, "", nil, errBadAction)
	}
}

// Recorder is told of every announce and scrape answered (*stats.Stats is one).
type Recorder interface {
	Record(r stats.Request)
}

// WithRecorder has the server report every announce (answers included) and scrape to r, as
// requests of transport stats.WebSocket.
func WithRecorder(r Recorder) Option { return func(s *Server) { s.recorder = r } }

func (s *Server) record(c *conn, action stats.Action, ev models.Event, err error, start time.Time) {
	if s.recorder == nil {
		return
	}
	s.recorder.Record(stats.Request{Transport: stats.WebSocket, Action: action, Family: models.FamilyOf(c.remote),
		Event: ev, Err: err, Duration: time.Since(start)})
}

// fail queues a failure message, and returns err. Errors that are not a models.ClientError are
// the tracker's own: they are logged and the client is told no more than that.
func (c *conn) fail(sc *scratch, action string, ih *models.InfoHash, err error) error {
	var ce models.ClientError
	if !errors.As(err, &ce) {
		glog.Errorf("ws: %s %s: %v", c.remote, action, err)
		ce = models.ErrInternal
	} else if glog.V(2) {
		glog.Infof("ws: %s %s: %v", c.remote, action, err)
	}
	c.s.m.failures.Add(1)
	sc.msg = appendFailure(sc.msg[:0], action, ih, string(ce))
	c.send(sc.msg, sc)
	return err
}

func (s *Server) announce(c *conn, sc *scratch, now time.Time) (models.Event, error) {
	hint := s.limiter.Prefetch(ratelimit.Announce, c.remote) // loads while the IDs are decoded
	rq := &sc.rq
	// The announce and its IDs live in sc: the core and the relay keep pointers to them past
	// what escape analysis can see, which would put them on the heap per message.
	ih, id, to := &sc.ih, &sc.id, &sc.to
	if !decodeBinary(rq.InfoHash, (*[20]byte)(ih)) {
		s.m.bad[badInvalid].Add(1)
		return models.None, c.fail(sc, "", nil, errBadInfoHash)
	}
	if !decodeBinary(rq.PeerID, (*[20]byte)(id)) {
		s.m.bad[badInvalid].Add(1)
		return models.None, c.fail(sc, "", nil, errBadPeerID)
	}
	answer := present(rq.Answer)
	if answer && !decodeBinary(rq.ToPeerID, (*[20]byte)(to)) {
		s.m.bad[badInvalid].Add(1)
		return models.None, c.fail(sc, "", nil, errBadToPeerID)
	}
	ev, ok := event(rq.Event)
	if !ok {
		s.m.bad[badInvalid].Add(1)
		return models.None, c.fail(sc, "announce", ih, models.ErrInvalidEvent)
	}
	if rq.NumOffers > len(rq.Offers) {
		s.m.offersCut.Add(uint64(rq.NumOffers - len(rq.Offers)))
	}
	if answer {
		s.m.messages[msgAnswer].Add(1)
	} else {
		s.m.messages[msgAnnounce].Add(1)
	}
	if s.limiter != nil && !s.limiter.AllowHinted(ratelimit.Announce, c.remote, now, hint) {
		return ev, c.fail(sc, "announce", ih, models.ErrRateLimited)
	}

	j := c.joinedOf(ih)
	if j == nil && ev != models.Stopped && len(c.joined) >= maxSwarmsPerConn {
		return ev, c.fail(sc, "announce", ih, errTooManySwarms)
	}
	a := &sc.a
	*a = models.Announce{
		InfoHash: *ih, PeerID: *id, Passkey: c.passkey, UserAgent: c.userAgent,
		Endpoint: netip.AddrPortFrom(c.remote, 0), Remote: c.remote, Event: ev,
		NumWant: 0, CompactOne: true, WebRTC: true,
	}
	// An answer carries no counters: it repeats the peer's last ones, as the reference never
	// turns a seeder back into a leecher on one.
	known := j != nil && j.id == *id
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

	sc.ctx.Begin(now)
	err := s.tkr.HandleAnnounce(sc.ctx, a, sc)
	sc.ctx.End()
	if err != nil {
		return ev, c.fail(sc, "announce", ih, err)
	}
	if j != nil && j.id != *id && j.registered {
		// The socket announces ih under another peer ID now: the old one is gone, here and
		// for the other instances.
		s.idx.leave(ih, &j.id, c)
		if s.relay != nil {
			s.relay.Leave(ih, &j.id)
		}
	}
	if ev == models.Stopped {
		if j != nil {
			s.idx.leave(ih, id, c)
			if s.relay != nil {
				s.relay.Leave(ih, id)
			}
			c.forgetJoined(ih)
		}
	} else {
		if j == nil {
			c.joined = append(c.joined, joined{ih: *ih})
			j = &c.joined[len(c.joined)-1]
		}
		if !j.registered || j.id != *id {
			s.idx.join(ih, id, c)
			if s.relay != nil {
				s.relay.Join(ih, id)
			}
		}
		*j = joined{ih: *ih, id: *id, seeder: a.Left == 0, up: a.Uploaded, down: a.Downloaded, registered: true}
	}

	if !answer {
		interval, _ := s.tkr.AnnounceInterval()
		secs := int((interval + 5*time.Second - 1) / (5 * time.Second))
		sc.msg = appendAnnounceReply(sc.msg[:0], ih, secs, sc.resp.Complete, sc.resp.Incomplete)
		c.send(sc.msg, sc)
	}
	if len(rq.Offers) > 0 && ev != models.Stopped {
		if s.relay != nil {
			s.relay.Offers(sc, c, ih, id, rq.Offers)
		} else {
			s.relayLocal(sc, ih, id, rq.Offers)
		}
	}
	if answer {
		s.relayAnswer(sc, ih, id, to)
	}
	return ev, nil
}

// relayLocal sends offer i to the i-th of min(len(offers), max) random other peers of the
// swarm on this instance.
func (s *Server) relayLocal(sc *scratch, ih *models.InfoHash, from *models.PeerID, offers []offer) {
	sc.picked = s.idx.pick(ih, from, len(offers), sc.picked[:0])
	for i, m := range sc.picked {
		o := &offers[i]
		sc.msg = appendRelay(sc.msg[:0], ih, from, "offer", o.Offer, o.OfferID)
		if m.c.send(sc.msg, sc) {
			s.m.offersRelayed.Add(1)
		}
	}
	clear(sc.picked)
}

// relayAnswer sends an answer to the peer it is for, if it is still connected.
func (s *Server) relayAnswer(sc *scratch, ih *models.InfoHash, from, to *models.PeerID) {
	rq := &sc.rq
	sc.msg = appendRelay(sc.msg[:0], ih, from, "answer", rq.Answer, rq.OfferID)
	if dst := s.idx.lookup(ih, to); dst != nil {
		if dst.send(sc.msg, sc) {
			s.m.answersRelayed.Add(1)
		}
		return
	}
	if s.relay != nil && s.relay.Answer(ih, to, sc.msg) {
		return
	}
	s.m.answersLost.Add(1)
}

func (s *Server) scrape(c *conn, sc *scratch, now time.Time) error {
	rq := &sc.rq
	s.m.messages[msgScrape].Add(1)
	hashes := sc.hashes[:0]
	switch {
	case !present(rq.InfoHash):
	case rq.InfoHash[0] == '"':
		var ih models.InfoHash
		if !decodeBinary(rq.InfoHash, (*[20]byte)(&ih)) {
			s.m.bad[badInvalid].Add(1)
			return c.fail(sc, "", nil, errBadInfoHash)
		}
		hashes = append(hashes, ih)
	case rq.InfoHash[0] == '[':
		n := elements(rq.InfoHash, nil)
		if n > s.tkr.MaxScrapeInfoHashes() {
			return c.fail(sc, "scrape", nil, errTooManyHashes)
		}
		p := parser{b: rq.InfoHash, i: 1}
		p.space()
		for more := p.peek() != ']'; more; more, _ = p.next(']') {
			start := p.i
			p.value(0) // checked by parse
			var ih models.InfoHash
			if !decodeBinary(p.b[start:p.i], (*[20]byte)(&ih)) {
				s.m.bad[badInvalid].Add(1)
				return c.fail(sc, "", nil, errBadInfoHash)
			}
			hashes = append(hashes, ih)
		}
	default:
		s.m.bad[badInvalid].Add(1)
		return c.fail(sc, "", nil, errBadInfoHash)
	}
	sc.hashes = hashes
	if s.limiter != nil && !s.limiter.Allow(ratelimit.Scrape, c.remote, now) {
		return c.fail(sc, "scrape", nil, models.ErrRateLimited)
	}
	if len(hashes) == 0 {
		if s.full != nil && !present(rq.InfoHash) && c.passkey == "" {
			if err := s.full.request(c, sc); err != nil {
				return c.fail(sc, "scrape", nil, err)
			}
			return nil
		}
		return c.fail(sc, "scrape", nil, errNoScrapeHashes)
	}
	sc.ctx.Begin(now)
	err := s.tkr.HandleScrape(sc.ctx, &models.Scrape{Passkey: c.passkey, InfoHashes: hashes}, sc)
	sc.ctx.End()
	if err != nil {
		return c.fail(sc, "scrape", nil, err)
	}
	interval, _ := s.tkr.AnnounceInterval()
	sc.msg = appendScrape(sc.msg[:0], sc.files, int((interval+time.Second-1)/time.Second))
	c.send(sc.msg, sc)
	return nil
}
