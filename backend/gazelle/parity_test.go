package gazelle

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/chihaya/chihaya/tracker/models"
)

// TestQueueSizes: the stats report's "items in … queue" are the rows waiting per table, the
// sealed batch's included.
func TestQueueSizes(t *testing.T) {
	c := queueConn(DefaultParams())
	sizes := func() [5]int {
		u, tr, p, s, tk := c.QueueSizes()
		return [5]int{u, tr, p, s, tk}
	}
	assert.Equal(t, [5]int{}, sizes())
	// Credit for user 1 on torrent 1, a snatch by user 2 on torrent 2 (a token's download).
	record(t, c, announce(1, 1, func(d *models.AnnounceDelta) { d.UploadedDelta, d.CreditedUp = 10, 10 }))
	record(t, c, announce(2, 2, func(d *models.AnnounceDelta) {
		d.PeerID, d.Snatched, d.Token, d.TokenDown, d.Left = peerB, true, true, 5, 0
	}))
	assert.Equal(t, [5]int{1, 2, 2, 1, 1}, sizes(), "users, torrents, peers, snatches, tokens")
	b, fresh := c.nextBatch()
	assert.True(t, fresh)
	record(t, c, announce(3, 1, nil))
	assert.Equal(t, [5]int{1, 2, 3, 1, 1}, sizes(), "the sealed batch counts until written")
	c.batchDone(b)
	assert.Equal(t, [5]int{0, 0, 1, 0, 0}, sizes(), "only the peer row queued since (torrent 1's counts did not change)")
}
