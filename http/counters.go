package http

import (
	"errors"
	"sync/atomic"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// counters are the HTTP frontend's own figures for the site's stats report (Ocelot's labels):
// connections, bytes, the longest request head, control requests and failures by Ocelot's
// categories. Each is one atomic add where it happens; nothing allocates.
type counters struct {
	// opened counts connections accepted; open those not closed yet (on the fast path or handed
	// over to net/http); peak is the most open at once.
	opened, open, peak atomic.Int64
	// bytesRead and bytesWritten count the bytes of every HTTP connection.
	bytesRead, bytesWritten atomic.Uint64
	// maxHead is the longest request head the fast path read (announces and scrapes).
	maxHead atomic.Int64
	// tlsHandshakeErrors counts TLS handshakes that failed or timed out.
	tlsHandshakeErrors atomic.Uint64
	// control counts update and report requests.
	control atomic.Uint64
	// Failures as Ocelot counts them: a wrong update or report secret, an unknown passkey (or
	// report key), a client the tracker refuses as configured (peer ID, compact, whitelist),
	// and a request it could not read.
	badSecret, badReportSecret, badKey, badClient, badHTTP atomic.Uint64
}

func (c *counters) opening() {
	c.opened.Add(1)
	setMax(&c.peak, c.open.Add(1))
}

func (c *counters) closing() { c.open.Add(-1) }

// setMax raises a to v when v is larger.
func setMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// failure counts an announce's or a scrape's failure in Ocelot's category, if it has one.
// Failures Ocelot counts nowhere (an unregistered torrent, leeching forbidden, the tracker's
// own errors) are not counted here either.
func (c *counters) failure(err error) {
	var ce models.ClientError
	if !errors.As(err, &ce) {
		return
	}
	switch ce {
	case models.ErrPasskeyNotFound, models.ErrAnnounceKeyMissing, models.ErrAnnounceKeyNotFound:
		c.badKey.Add(1)
	case models.ErrMissingPeerID, models.ErrInvalidPeerID, models.ErrCompactOnly, tracker.ErrClientNotWhitelisted:
		c.badClient.Add(1)
	case models.ErrMalformedRequest, models.ErrMissingInfoHash, models.ErrInvalidInfoHash,
		models.ErrMissingPort, models.ErrInvalidPort, models.ErrInvalidNumber, models.ErrInvalidEvent,
		models.ErrInvalidIP, models.ErrTooManyInfoHashes, models.ErrMissingUploaded,
		models.ErrMissingDownloaded, models.ErrMissingLeft, models.ErrDuplicateParameter,
		models.ErrNotFound, models.ErrUnknownReport:
		c.badHTTP.Add(1)
	}
}
