package gazelle

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// loadBaselinesOf loads c's site state and returns its baselines, sorted.
func loadBaselinesOf(t *testing.T, c *Conn) []models.Baseline {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Load(ctx)
	require.NoError(t, err)
	sortBaselines(s.Baselines)
	return s.Baselines
}

// closeNow closes c, as SIGTERM does, and requires that everything was written.
func closeNow(t *testing.T, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Close(ctx))
}

// TestBaselinesAcrossRestarts opens the database four times in a row, as four starts of the
// tracker do, with and without announces in between: each start's Load hands over the peers'
// latest counters, whatever the previous starts saw, while xbt_files_users is emptied each time.
func TestBaselinesAcrossRestarts(t *testing.T) {
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			dsn := testDB(t, layout)
			db := checkDB(t, dsn)
			now := time.Now().Truncate(time.Second)
			at := func(d *models.AnnounceDelta, minutes int) {
				d.FirstSeen, d.Time = now.Add(-time.Hour), now.Add(time.Duration(minutes-60)*time.Minute)
			}

			// First start: alice's peer is created and moves bytes; bob's stops.
			c := openOn(t, dsn, layout, nil)
			assert.Empty(t, loadBaselinesOf(t, c))
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Created, d.Event, d.Announces = true, models.Started, 1
				at(d, 0)
			}))
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Uploaded, d.Downloaded, d.Corrupt, d.UploadedDelta, d.DownloadedDelta, d.CorruptDelta = 100, 200, 3, 100, 200, 3
				at(d, 10)
			}))
			record(t, c, announce(2, 1, func(d *models.AnnounceDelta) {
				d.PeerID, d.Created, d.Removed, d.Event, d.Uploaded, d.Announces = peerB, true, true, models.Stopped, 50, 1
				at(d, 10)
			}))
			flushNow(t, c)
			closeNow(t, c)
			alice := models.Baseline{UserID: 1, TorrentID: 1, PeerID: peerA, Uploaded: 100, Downloaded: 200, Corrupt: 3,
				FirstSeen: now.Add(-time.Hour), LastSeen: now.Add(-50 * time.Minute), Announces: 2}
			bob := models.Baseline{UserID: 2, TorrentID: 1, PeerID: peerB, Uploaded: 50,
				FirstSeen: now.Add(-time.Hour), LastSeen: now.Add(-50 * time.Minute), Announces: 1}

			// Second and third starts, no announces: the baselines stay.
			for start := 2; start <= 3; start++ {
				c = openOn(t, dsn, layout, nil)
				assert.Zero(t, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"), "start %d", start)
				assert.Equal(t, []models.Baseline{alice, bob}, loadBaselinesOf(t, c), "start %d", start)
				closeNow(t, c)
			}

			// Fourth start: a heartbeat (a light xbt_files_users row) still moves the baseline
			// on; it is written by the shutdown flush.
			c = openOn(t, dsn, layout, nil)
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Uploaded, d.Downloaded, d.Corrupt, d.Announces = 100, 200, 3, 3
				at(d, 40)
			}))
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Uploaded, d.Downloaded, d.Corrupt, d.Announces = 100, 200, 3, 4
				at(d, 50)
			}))
			closeNow(t, c)
			assert.Equal(t, 1, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"), "one peer announced since the start")
			alice.LastSeen, alice.Announces = now.Add(-10*time.Minute), 4

			c = openOn(t, dsn, layout, nil)
			assert.Equal(t, []models.Baseline{alice, bob}, loadBaselinesOf(t, c), "fifth start")
		})
	}
}

// TestSaveBaselines checks the startup copy of xbt_files_users into chihaya_baselines: a row
// newer than the kept baseline replaces it, an older one does not, negative values read as 0,
// rows without a user are left out, and copying twice (a crash before the truncate, then a new
// start) changes nothing.
func TestSaveBaselines(t *testing.T) {
	dsn := testDB(t, OPSnet)
	db := checkDB(t, dsn)
	now := time.Now().Unix()
	mustExec(t, db, createBaselinesSQL)
	mustExec(t, db, "INSERT INTO chihaya_baselines (uid, fid, peer_id, uploaded, downloaded, corrupt, first_seen, last_seen, announced) VALUES "+
		"(1, 1, ?, 500, 500, 0, ?, ?, 5), (1, 2, ?, 500, 500, 0, ?, ?, 5)", peerA[:], now-1000, now-100, peerA[:], now-1000, now-100)
	xbt := "INSERT INTO xbt_files_users (uid, fid, active, uploaded, downloaded, corrupt, timespent, announced, peer_id, mtime) VALUES " +
		"(1, 1, 1, 600, 700, 1, 950, 6, ?, ?), (1, 2, 1, 1, 1, 0, 800, 9, ?, ?), (2, 1, 0, -5, 8, -1, 10, -2, ?, ?), (0, 1, 1, 9, 9, 9, 0, 1, ?, ?)"
	xbtArgs := []any{peerA[:], now - 50, peerA[:], now - 200, peerB[:], now - 30, peerB[:], now}
	mustExec(t, db, xbt, xbtArgs...)

	type row struct {
		uid, fid                          uint64
		up, down, corrupt, first, last, n int64
	}
	read := func() []row {
		rows, err := db.Query("SELECT uid, fid, uploaded, downloaded, corrupt, first_seen, last_seen, announced FROM chihaya_baselines ORDER BY uid, fid")
		require.NoError(t, err)
		defer rows.Close()
		var out []row
		for rows.Next() {
			var r row
			require.NoError(t, rows.Scan(&r.uid, &r.fid, &r.up, &r.down, &r.corrupt, &r.first, &r.last, &r.n))
			out = append(out, r)
		}
		require.NoError(t, rows.Err())
		return out
	}
	want := []row{
		{1, 1, 600, 700, 1, now - 1000, now - 50, 6},  // newer: replaced
		{1, 2, 500, 500, 0, now - 1000, now - 100, 5}, // older: kept
		{2, 1, 0, 8, 0, now - 40, now - 30, 0},        // clamped, and kept though stopped
	}
	c := openOn(t, dsn, OPSnet, nil)
	assert.Equal(t, want, read())
	assert.Zero(t, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"))

	// A crash after the copy and before the truncate leaves the rows in xbt_files_users: the
	// next start copies them again to the same effect.
	mustExec(t, db, xbt, xbtArgs...)
	c.startupReset(context.Background())
	assert.Equal(t, want, read())
	assert.Zero(t, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"))
}

// TestPruneBaselines keeps chihaya_baselines bounded by the tracker's baseline_lifetime: Load
// leaves out what expired, and the flusher's first tick deletes it, many chunks of it if need
// be.
func TestPruneBaselines(t *testing.T) {
	dsn := testDB(t, OPSnet)
	db := checkDB(t, dsn)
	now := time.Now().Unix()
	mustExec(t, db, createBaselinesSQL)
	const expired = 2*pruneBaselinesChunk + 17
	mustExec(t, db, "INSERT INTO chihaya_baselines (uid, fid, peer_id, uploaded, downloaded, corrupt, first_seen, last_seen, announced) "+
		"SELECT seq, 1, ?, 1, 1, 0, ?, ?, 1 FROM seq_1_to_"+strconv.Itoa(expired), peerA[:], now-7200, now-7200)
	mustExec(t, db, "INSERT INTO chihaya_baselines (uid, fid, peer_id, uploaded, downloaded, corrupt, first_seen, last_seen, announced) VALUES "+
		"(1, 2, ?, 7, 7, 0, ?, ?, 1)", peerA[:], now-60, now-60)

	c := openOn(t, dsn, OPSnet, func(p *Params) { p.FlushInterval = 50 * time.Millisecond })
	c.KeepBaselines(time.Hour)
	bl := loadBaselinesOf(t, c)
	require.Len(t, bl, 1, "only the baseline seen within the lifetime")
	assert.Equal(t, uint64(2), bl[0].TorrentID)

	left := func() int {
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM chihaya_baselines").Scan(&n); err != nil {
			return -1
		}
		return n
	}
	assert.Eventually(t, func() bool { return left() == 1 }, 30*time.Second, 20*time.Millisecond, "the expired baselines are pruned")

	// A lifetime of 0 forgets every baseline last seen before now: the flusher prunes again
	// when the lifetime changes.
	c.KeepBaselines(-time.Second)
	assert.Eventually(t, func() bool { return left() == 0 }, 30*time.Second, 20*time.Millisecond, "every baseline is pruned")

	// Pruning with nothing expired deletes nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := c.pruneBaselines(ctx, time.Now())
	require.NoError(t, err)
	assert.Zero(t, n)
}
