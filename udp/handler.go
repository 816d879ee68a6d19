package udp

import (
	"errors"
	"net/netip"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/clientip"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker/models"
)

// maxPasskeys bounds a worker's passkey strings (see worker.passkey).
const maxPasskeys = 4096

// worker answers datagrams with scratch space of its own. A reader goroutine owns one, so
// nothing in it is shared and, once warm, answering allocates nothing.
type worker struct {
	s   *Server
	a   models.Announce
	sc  models.Scrape
	url []byte
	w   writer
	id  idScratch
	// passkeys holds the strings of passkeys the core accepted, so that a returning user's
	// passkey is not a new string on every announce.
	passkeys map[string]string
}

func newWorker(s *Server) *worker {
	return &worker{
		s:        s,
		sc:       models.Scrape{InfoHashes: make([]models.InfoHash, 0, MaxScrapeInfoHashes)},
		url:      make([]byte, 0, readBufSize),
		passkeys: make(map[string]string),
	}
}

// writer is the tracker.AnnounceWriter and tracker.ScrapeWriter of one request: it encodes the
// core's answer after what b holds.
type writer struct {
	b    []byte
	txID uint32
	v6   bool
}

// WriteAnnounce encodes resp with the peers of the request's address family.
func (w *writer) WriteAnnounce(resp *models.AnnounceResponse) error {
	w.b = appendAnnounce(w.b, w.txID, resp, w.v6)
	return nil
}

// WriteScrape encodes resp in request order.
func (w *writer) WriteScrape(resp *models.ScrapeResponse) error {
	w.b = appendScrape(w.b, w.txID, resp.Files)
	return nil
}

// handle answers the datagram pkt from `from`, appending the answer to out, which it returns;
// an answer of zero bytes means none is sent. oversized says the datagram was longer than pkt
// (it did not fit the read buffer). It never panics: a panic below is a bug, logged and
// answered as an internal error.
func (w *worker) handle(pkt []byte, from netip.AddrPort, oversized bool, out []byte) (resp []byte) {
	m := w.s.metrics
	h, ok := parseHeader(pkt)
	if !ok {
		m.rejected[rejectShort].Inc()
		return out
	}
	fam := models.FamilyOf(from.Addr())
	defer func() {
		if v := recover(); v != nil {
			w.s.logf("udp: panic answering %d bytes from %s: %v", len(pkt), from, v)
			resp = appendError(out[:0], h.txID, string(models.ErrInternal), len(pkt))
		}
	}()
	switch h.action {
	case actionConnect:
		m.packets[kindConnect][fam].Inc()
		if h.connID != protocolID {
			m.rejected[rejectProtocolID].Inc()
			return appendError(out, h.txID, string(models.ErrBadProtocolID), len(pkt))
		}
		return appendConnect(out, h.txID, w.s.ids.issue(&w.id, from, w.s.now()))
	case actionAnnounce, actionScrape:
		kind := kindAnnounce
		if h.action == actionScrape {
			kind = kindScrape
		}
		m.packets[kind][fam].Inc()
		var hint ratelimit.Hint
		if kind == kindAnnounce {
			hint = w.s.limiter.Prefetch(ratelimit.Announce, from.Addr())
		}
		if !w.s.ids.valid(&w.id, from, h.connID, w.s.now()) {
			m.rejected[rejectConnectionID].Inc()
			return appendError(out, h.txID, string(models.ErrBadConnectionID), len(pkt))
		}
		if kind == kindAnnounce {
			return w.announce(pkt, from, fam, h.txID, oversized, hint, out)
		}
		return w.scrape(pkt, from, fam, h.txID, oversized, out)
	default:
		m.packets[kindUnknown][fam].Inc()
		m.rejected[rejectAction].Inc()
		return appendError(out, h.txID, string(models.ErrUnknownAction), len(pkt))
	}
}

// announce runs an authenticated announce through the core; hint is the limiter's prefetch of
// the sender's bucket.
func (w *worker) announce(pkt []byte, from netip.AddrPort, fam models.Family, txID uint32, oversized bool, hint ratelimit.Hint, out []byte) []byte {
	start := time.Now()
	fresh, err := w.parseAnnounce(pkt, from, fam, oversized)
	if err == nil && !w.s.limiter.AllowHinted(ratelimit.Announce, w.a.Remote, start, hint) {
		err = models.ErrRateLimited
	}
	if err == nil {
		w.w = writer{b: out, txID: txID, v6: fam == models.IPv6}
		err = w.s.tkr.HandleAnnounce(w.s.ctx, &w.a, &w.w)
		out = w.w.b
		w.w.b = nil
		if fresh && !errors.Is(err, models.ErrPasskeyNotFound) {
			w.keepPasskey()
		}
	}
	if err != nil {
		out = w.fail(out[:0], txID, from, err)
	}
	w.record(stats.Announce, fam, w.a.Event, err, start)
	return out
}

// parseAnnounce fills w.a from an announce request. fresh is true when w.a.Passkey is a new
// string, to keep if the core knows it.
func (w *worker) parseAnnounce(pkt []byte, from netip.AddrPort, fam models.Family, oversized bool) (fresh bool, err error) {
	a := &w.a
	ip, err := parseAnnounce(pkt, a)
	if err != nil {
		return false, err
	}
	if oversized {
		// Its options were cut off.
		return false, models.ErrMalformedRequest
	}
	// A datagram has no real-IP header: the address is the source's.
	remote, err := w.s.ips.Remote(from.Addr(), "", false)
	if err != nil {
		return false, err
	}
	clientip.Begin(a, remote)
	if ip != [4]byte{} {
		// The IP field is IPv4 only: over IPv6 it names the peer's other endpoint (BEP 7).
		w.s.ips.Claim(a, netip.AddrPortFrom(netip.AddrFrom4(ip), a.Endpoint.Port()))
	}
	if !w.s.private {
		// The path (and any passkey in it) means nothing to a public tracker, as over HTTP.
		return false, nil
	}
	if w.url, err = parseOptions(pkt[announceLen:], w.url[:0]); err != nil {
		return false, err
	}
	key := passkeyOf(w.url)
	if len(key) == 0 {
		return false, nil
	}
	if s, ok := w.passkeys[string(key)]; ok {
		a.Passkey = s
		return false, nil
	}
	a.Passkey = string(key)
	return true, nil
}

// keepPasskey remembers w.a.Passkey, forgetting every other when there are too many: a bound on
// memory that costs one allocation per user the next time round.
func (w *worker) keepPasskey() {
	if len(w.passkeys) >= maxPasskeys {
		clear(w.passkeys)
	}
	w.passkeys[w.a.Passkey] = w.a.Passkey
}

// scrape runs an authenticated scrape through the core.
func (w *worker) scrape(pkt []byte, from netip.AddrPort, fam models.Family, txID uint32, oversized bool, out []byte) []byte {
	start := time.Now()
	var err error
	switch {
	case w.s.private:
		err = models.ErrPrivateScrape
	case oversized:
		err = models.ErrTooManyInfoHashes
	case !w.s.limiter.Allow(ratelimit.Scrape, from.Addr(), start):
		err = models.ErrRateLimited
	default:
		w.sc.InfoHashes, err = parseScrape(pkt, w.sc.InfoHashes[:0], w.s.maxScrape)
	}
	if err == nil {
		w.w = writer{b: out, txID: txID, v6: fam == models.IPv6}
		err = w.s.tkr.HandleScrape(w.s.ctx, &w.sc, &w.w)
		out = w.w.b
		w.w.b = nil
	}
	if err != nil {
		out = w.fail(out[:0], txID, from, err)
	}
	w.record(stats.Scrape, fam, models.None, err, start)
	return out
}

// fail appends the error packet for err: the text of a models.ClientError, else
// models.ErrInternal, with err logged. The request was authenticated, so the text is whole.
func (w *worker) fail(out []byte, txID uint32, from netip.AddrPort, err error) []byte {
	ce, ok := err.(models.ClientError)
	if !ok && !errors.As(err, &ce) {
		w.s.logf("udp: %s: %v", from, err)
		ce = models.ErrInternal
	} else if glog.V(2) {
		glog.Infof("udp: %s: %v", from, err)
	}
	return appendError(out, txID, string(ce), 0)
}

// record reports one answered announce or scrape to the recorder, if there is one.
func (w *worker) record(action stats.Action, fam models.Family, ev models.Event, err error, start time.Time) {
	if w.s.recorder == nil {
		return
	}
	if err != nil {
		ev = models.None
	}
	w.s.recorder.Record(stats.Request{
		Transport: stats.UDP,
		Action:    action,
		Family:    fam,
		Event:     ev,
		Err:       err,
		Duration:  time.Since(start),
	})
}
