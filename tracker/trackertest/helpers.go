package trackertest

import (
	"testing"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// Announce runs one announce on c and fails tb on an error.
func Announce(tb testing.TB, c tracker.Conn, ih models.InfoHash, u tracker.PeerUpdate, sel tracker.Selection) tracker.AnnounceResult {
	tb.Helper()
	return announce(tb, c, ih, u, sel)
}

// Scrape returns the counts of ih on c, failing tb on an error.
func Scrape(tb testing.TB, c tracker.Conn, ih models.InfoHash) models.TorrentStats {
	tb.Helper()
	return scrape(tb, c, ih)
}

// Handed returns the keys of the peers in res, failing on a peer listed in the wrong family.
func Handed(tb testing.TB, res *tracker.AnnounceResult) []models.PeerKey {
	tb.Helper()
	return handed(tb, res)
}

// KeySet turns keys into a set, failing on a peer handed out twice.
func KeySet(tb testing.TB, keys []models.PeerKey) map[models.PeerKey]bool {
	tb.Helper()
	return keySet(tb, keys)
}

// Observe lists the peers of ih (those a seeder is handed, with seeder) without changing them.
func Observe(tb testing.TB, c tracker.Conn, ih models.InfoHash, seeder bool) map[models.PeerKey]bool {
	tb.Helper()
	return observe(tb, c, ih, seeder)
}
