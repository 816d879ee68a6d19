package ws

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/tracker/models"
)

// maxFullScrapes bounds the full scrapes whose answers wait for their build or are queued and
// not yet written, at once: the memory full scrapes take is that many copies of the answer at
// most, besides the one kept.
const maxFullScrapes = 8

// fullScrapeTimeout bounds one build of the full scrape's answer.
const fullScrapeTimeout = time.Minute

const errFullScrapeBusy = models.ClientError("too many full scrapes at once, try again later")

// fullScrape answers scrapes without info_hash with every torrent the access list serves, as the
// reference does, when full_scrape_enabled is on (public mode only), as the HTTP frontend does:
// the answer is built at most once per full_scrape_interval, on a goroutine of its own (a
// reader is never held up by it), and kept.
type fullScrape struct {
	s        *Server
	interval time.Duration
	// inFlight counts the full scrapes waiting or queued (conn.fullQueued).
	inFlight atomic.Int32

	mu       sync.Mutex
	msg      []byte // the answer, nil before the first build
	built    time.Time
	building bool
	waiting  []*conn // sockets that wait for the build, one entry per scrape (at most maxFullScrapes)
}

// request answers c's full scrape: with the kept answer while it is fresh, else once it is
// built. The server has at most maxFullScrapes in flight.
func (f *fullScrape) request(c *conn, sc *scratch) error {
	if f.inFlight.Add(1) > maxFullScrapes {
		f.inFlight.Add(-1)
		return errFullScrapeBusy
	}
	f.mu.Lock()
	if f.msg != nil && time.Since(f.built) < f.interval {
		msg := f.msg
		f.mu.Unlock()
		c.sendFull(msg, sc)
		return nil
	}
	f.waiting = append(f.waiting, c)
	if !f.building {
		f.building = true
		go f.build()
	}
	f.mu.Unlock()
	return nil
}

// build builds the answer, keeps it, and sends it to the sockets that wait for it.
func (f *fullScrape) build() {
	s := f.s
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.base, fullScrapeTimeout)
	all, err := s.tkr.AllTorrents(ctx)
	cancel()
	var msg []byte
	if err == nil {
		interval, _ := s.tkr.AnnounceInterval()
		msg = appendScrape(make([]byte, 0, 64+len(all)*96), all, int((interval+time.Second-1)/time.Second))
		if glog.V(1) {
			glog.Infof("ws: full scrape of %d torrents built in %s: %d bytes", len(all), time.Since(start).Round(time.Millisecond), len(msg))
		}
	} else {
		glog.Errorf("ws: full scrape: %v", err)
		s.m.failures.Add(1)
		msg = appendFailure(nil, "scrape", nil, string(models.ErrInternal))
	}
	f.mu.Lock()
	if err == nil {
		f.msg, f.built = msg, time.Now()
	}
	waiting := f.waiting
	f.waiting, f.building = nil, false
	f.mu.Unlock()
	for _, c := range waiting {
		c.sendFull(msg, nil)
	}
}

// sendFull queues a full scrape's answer (or failure) on c, which holds one of the server's
// slots until its queue is written (fullWritten), or from now if it cannot be queued.
func (c *conn) sendFull(msg []byte, sc *scratch) {
	c.mu.Lock()
	c.fullQueued++
	c.mu.Unlock()
	if c.send(msg, sc) {
		return
	}
	c.mu.Lock()
	n := c.fullWritten()
	c.mu.Unlock()
	c.releaseFull(n)
}

// fullWritten ends the full scrapes whose answers the socket queued: it is called, with c.mu
// held, when the queue is all written or the socket dead. It returns how many slots the caller
// is to release (releaseFull) once it lets go of c.mu.
func (c *conn) fullWritten() int32 {
	n := c.fullQueued
	c.fullQueued = 0
	return n
}

func (c *conn) releaseFull(n int32) {
	if n > 0 {
		c.s.full.inFlight.Add(-n)
	}
}
