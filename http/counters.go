package http

import (
	"errors"
	"sync/atomic"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// counters are the HTTP frontend's own figures for the site's stats report (Ocelot's labels):
// control requests and failures by Ocelot's categories. Those of the connections (opened,
// bytes, the longest head) are package fast's (fast.Counts). Each is one atomic add where it
// happens; nothing allocates.
type counters struct {
	// control counts update and report requests.
	control atomic.Uint64
	// Failures as Ocelot counts them: a wrong update or report secret, an unknown passkey (or
	// report key), a client the tracker refuses as configured (peer ID, compact, whitelist),
	// and a request it could not read.
	badSecret, badReportSecret, badKey, badClient, badHTTP atomic.Uint64
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
