package gazelle

import (
	"context"
	"database/sql"
	"errors"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

var layouts = []Schema{OPSnet, WhatCD}

// openWriter opens a Conn on a fresh seeded database of the layout (doing the startup reset)
// whose flusher does not tick during the test unless edit shortens flush_interval, so that the
// test flushes with flushNow. It returns the Conn, closed when the test ends, and a second
// connection for checking the tables.
func openWriter(t *testing.T, layout Schema, edit func(p *Params)) (*Conn, *sql.DB) {
	t.Helper()
	dsn := testDB(t, layout)
	return openOn(t, dsn, layout, edit), checkDB(t, dsn)
}

// openOn opens a Conn on dsn, closed when the test ends.
func openOn(t *testing.T, dsn string, layout Schema, edit func(p *Params)) *Conn {
	t.Helper()
	p := DefaultParams()
	p.DSN = dsn
	p.Schema = layout
	p.FlushInterval = time.Hour
	if edit != nil {
		edit(&p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, c.Close(ctx))
	})
	return c
}

// checkDB opens a plain connection to dsn for the test's own queries.
func checkDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	cfg.MultiStatements = true
	cfg.ParseTime = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// flushNow writes everything queued, as a tick of the flusher does.
func flushNow(t *testing.T, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.flush(ctx))
	require.Zero(t, c.pendingRows())
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := db.ExecContext(ctx, q, args...)
	require.NoError(t, err, q)
}

func queryRow(t *testing.T, db *sql.DB, q string, args []any, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, db.QueryRowContext(ctx, q, args...).Scan(dest...), q)
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	queryRow(t, db, q, args, &n)
	return n
}

// userTotals returns a user's Uploaded and Downloaded in the layout's users table.
func userTotals(t *testing.T, db *sql.DB, layout Schema, uid uint64) (up, down int64) {
	t.Helper()
	q := "SELECT Uploaded, Downloaded FROM users_leech_stats WHERE UserID = ?"
	if layout == WhatCD {
		q = "SELECT Uploaded, Downloaded FROM users_main WHERE ID = ?"
	}
	queryRow(t, db, q, []any{uid}, &up, &down)
	return up, down
}

type torrentState struct {
	Seeders, Leechers, Snatched int64
	Balance                     int64
	LastAction                  sql.NullTime
}

// torrentRowOf returns a torrent's counters in the layout's table; ok is false when it has no
// row there.
func torrentRowOf(t *testing.T, db *sql.DB, layout Schema, tid uint64) (s torrentState, ok bool) {
	t.Helper()
	q := "SELECT Seeders, Leechers, Snatched, Balance, last_action FROM torrents_leech_stats WHERE TorrentID = ?"
	if layout == WhatCD {
		q = "SELECT Seeders, Leechers, Snatched, Balance, last_action FROM torrents WHERE ID = ?"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := db.QueryRowContext(ctx, q, tid).Scan(&s.Seeders, &s.Leechers, &s.Snatched, &s.Balance, &s.LastAction)
	if errors.Is(err, sql.ErrNoRows) {
		return s, false
	}
	require.NoError(t, err)
	return s, true
}

// TestCreditedBytes feeds the deltas the core computes for each freeleech rule and checks the
// users table and users_freeleeches after a flush.
func TestCreditedBytes(t *testing.T) {
	tests := []struct {
		name  string
		delta func(d *models.AnnounceDelta)
		// user 1 starts at 1000 up, 500 down; token (1, 2) at 0.
		up, down, tokenDown int64
	}{
		{"normal", func(d *models.AnnounceDelta) {
			d.UploadedDelta, d.DownloadedDelta, d.CreditedUp, d.CreditedDown = 100, 50, 100, 50
		}, 1100, 550, 0},
		{"free", func(d *models.AnnounceDelta) {
			d.UploadedDelta, d.DownloadedDelta, d.CreditedUp = 100, 50, 100
		}, 1100, 500, 0},
		{"neutral", func(d *models.AnnounceDelta) {
			d.UploadedDelta, d.DownloadedDelta = 100, 50
		}, 1000, 500, 0},
		{"token", func(d *models.AnnounceDelta) {
			d.UploadedDelta, d.DownloadedDelta, d.CreditedUp, d.Token, d.TokenDown = 100, 50, 100, true, 50
		}, 1100, 500, 50},
	}
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					c, db := openWriter(t, layout, nil)
					record(t, c, announce(1, 2, tt.delta))
					flushNow(t, c)
					up, down := userTotals(t, db, layout, 1)
					assert.Equal(t, tt.up, up, "Uploaded")
					assert.Equal(t, tt.down, down, "Downloaded")
					var tokenDown int64
					queryRow(t, db, "SELECT Downloaded FROM users_freeleeches WHERE UserID = 1 AND TorrentID = 2", nil, &tokenDown)
					assert.Equal(t, tt.tokenDown, tokenDown)
					// Other users are untouched.
					up, down = userTotals(t, db, layout, 3)
					assert.Equal(t, [2]int64{42, 0}, [2]int64{up, down})
				})
			}

			t.Run("merged and additive across flushes", func(t *testing.T) {
				c, db := openWriter(t, layout, nil)
				for range 3 {
					record(t, c, announce(3, 1, func(d *models.AnnounceDelta) { d.CreditedUp, d.CreditedDown = 10, 1 }))
				}
				record(t, c, announce(3, 4, func(d *models.AnnounceDelta) { d.Token, d.TokenDown = true, 7 }))
				record(t, c, announce(3, 4, func(d *models.AnnounceDelta) { d.Token, d.TokenDown = true, 8 }))
				record(t, c, announce(2, 1, func(d *models.AnnounceDelta) { d.Token, d.TokenDown = true, 9 }))
				require.Equal(t, [numTables]int{1, 2, 0, 3, 2}, c.queueCounts())
				flushNow(t, c)
				record(t, c, announce(3, 1, func(d *models.AnnounceDelta) { d.CreditedUp, d.CreditedDown = 10, 1 }))
				flushNow(t, c)
				up, down := userTotals(t, db, layout, 3)
				assert.Equal(t, [2]int64{42 + 40, 4}, [2]int64{up, down})
				var got int64
				queryRow(t, db, "SELECT Downloaded FROM users_freeleeches WHERE UserID = 3 AND TorrentID = 4", nil, &got)
				assert.Equal(t, int64(99+15), got)
				queryRow(t, db, "SELECT Downloaded FROM users_freeleeches WHERE UserID = 2 AND TorrentID = 1", nil, &got)
				assert.Equal(t, int64(123456+9), got, "an expired token's row still counts")
			})
		})
	}
}

func TestTorrentWrites(t *testing.T) {
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			c, db := openWriter(t, layout, nil)
			for tid := uint64(1); tid <= 3; tid++ {
				s, ok := torrentRowOf(t, db, layout, tid)
				require.True(t, ok)
				assert.Zero(t, s.Seeders+s.Leechers, "the startup reset clears the counts of torrent %d", tid)
			}

			start := time.Now().Add(-time.Second)
			// Torrent 1: a peer joins and moves bytes; torrent 2: a snatch with no seeders left
			// (last_action stays NULL); torrent 3: two snatches; torrent 4 has no
			// torrents_leech_stats row in opsnet; torrent 99 does not exist.
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Created, d.Seeders, d.Leechers = true, 1, 2
				d.UploadedDelta, d.DownloadedDelta, d.CorruptDelta = 100, 30, 5
			}))
			record(t, c, announce(1, 2, func(d *models.AnnounceDelta) {
				d.Snatched, d.Seeders, d.Leechers, d.DownloadedDelta = true, 0, 3, 40
			}))
			for uid := uint64(1); uid <= 2; uid++ {
				record(t, c, announce(uid, 3, func(d *models.AnnounceDelta) { d.Snatched, d.Seeders, d.Leechers = true, 2, 0 }))
			}
			record(t, c, announce(1, 4, func(d *models.AnnounceDelta) { d.Seeders, d.Leechers = 1, 0 }))
			record(t, c, announce(1, 99, func(d *models.AnnounceDelta) { d.Seeders, d.Leechers = 1, 0 }))
			flushNow(t, c)

			s, _ := torrentRowOf(t, db, layout, 1)
			assert.Equal(t, torrentState{Seeders: 1, Leechers: 2, Snatched: 3, Balance: 65}, withoutTime(s))
			require.True(t, s.LastAction.Valid)
			assert.False(t, s.LastAction.Time.Before(start.Truncate(time.Second)), "last_action is NOW() while there are seeders")

			s, _ = torrentRowOf(t, db, layout, 2)
			assert.Equal(t, torrentState{Seeders: 0, Leechers: 3, Snatched: 1, Balance: -140}, withoutTime(s))
			assert.False(t, s.LastAction.Valid, "last_action does not move without seeders")

			s, _ = torrentRowOf(t, db, layout, 3)
			assert.Equal(t, torrentState{Seeders: 2, Snatched: 14, Balance: 300}, withoutTime(s))

			s, ok := torrentRowOf(t, db, layout, 4)
			require.True(t, ok)
			assert.Equal(t, torrentState{Seeders: 1}, withoutTime(s))

			_, ok = torrentRowOf(t, db, layout, 99)
			if layout == OPSnet {
				assert.True(t, ok, "Ocelot 2.x's INSERT makes a torrents_leech_stats row for any ID")
			} else {
				assert.False(t, ok, "whatcd updates existing torrents only")
				assert.Zero(t, count(t, db, "SELECT COUNT(*) FROM torrents WHERE ID = 99"))
			}

			// Balance keeps adding across flushes; the counts are absolute.
			record(t, c, announce(2, 1, func(d *models.AnnounceDelta) {
				d.Created, d.Seeders, d.Leechers, d.DownloadedDelta = true, 1, 3, 20
			}))
			flushNow(t, c)
			s, _ = torrentRowOf(t, db, layout, 1)
			assert.Equal(t, torrentState{Seeders: 1, Leechers: 3, Snatched: 3, Balance: 45}, withoutTime(s))

			t.Run("reap", func(t *testing.T) {
				require.NoError(t, c.RecordReap(context.Background(), []models.TorrentStats{
					{ID: 1, Seeders: 0, Leechers: 1, Snatches: 3}, {ID: 3, Seeders: 1, Leechers: 0},
				}))
				flushNow(t, c)
				s, _ := torrentRowOf(t, db, layout, 1)
				assert.Equal(t, torrentState{Seeders: 0, Leechers: 1, Snatched: 3, Balance: 45}, withoutTime(s))
				s, _ = torrentRowOf(t, db, layout, 3)
				assert.Equal(t, torrentState{Seeders: 1, Snatched: 14, Balance: 300}, withoutTime(s))
			})
		})
	}
}

func withoutTime(s torrentState) torrentState {
	s.LastAction = sql.NullTime{}
	return s
}

type xfuRow struct {
	Active                        int
	Uploaded, Downloaded          int64
	UpSpeed, DownSpeed            int64
	Remaining, Corrupt            int64
	TimeSpent, Announced          int64
	IP                            string
	UserAgent                     string
	MTime, Completed, Connectable int64
}

func xfu(t *testing.T, db *sql.DB, uid, tid uint64, id models.PeerID) xfuRow {
	t.Helper()
	var r xfuRow
	queryRow(t, db, "SELECT active, uploaded, downloaded, upspeed, downspeed, remaining, corrupt, timespent, announced, "+
		"ip, useragent, mtime, completed, connectable FROM xbt_files_users WHERE uid = ? AND fid = ? AND peer_id = ?",
		[]any{uid, tid, id[:]}, &r.Active, &r.Uploaded, &r.Downloaded, &r.UpSpeed, &r.DownSpeed, &r.Remaining, &r.Corrupt,
		&r.TimeSpent, &r.Announced, &r.IP, &r.UserAgent, &r.MTime, &r.Completed, &r.Connectable)
	return r
}

func TestPeerWrites(t *testing.T) {
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			c, db := openWriter(t, layout, nil)
			at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }

			// Heavy: the peer is created.
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Created, d.Event, d.Announces, d.Time = true, models.Started, 1, t0
				d.Uploaded, d.Downloaded, d.Left = 10, 20, 1000
				d.UserAgent = "qBittorrent/4.2.5 " + strings.Repeat("x", 40)
			}))
			flushNow(t, c)
			assert.Equal(t, xfuRow{Active: 1, Uploaded: 10, Downloaded: 20, Remaining: 1000, Announced: 1,
				IP: "203.0.113.7", UserAgent: ("qBittorrent/4.2.5 " + strings.Repeat("x", 40))[:51],
				MTime: t0.Unix(), Connectable: 1}, xfu(t, db, 1, 1, peerA))

			// Heavy: bytes moved.
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Announces, d.Time = 2, at(30)
				d.Uploaded, d.Downloaded, d.Left, d.Corrupt = 110, 520, 500, 3
				d.UploadedDelta, d.DownloadedDelta, d.CorruptDelta = 100, 500, 3
				d.UpSpeed, d.DownSpeed = 55, 277
			}))
			flushNow(t, c)
			heavy := xfuRow{Active: 1, Uploaded: 110, Downloaded: 520, UpSpeed: 55, DownSpeed: 277, Remaining: 500, Corrupt: 3,
				TimeSpent: 1800, Announced: 2, IP: "203.0.113.7", UserAgent: ("qBittorrent/4.2.5 " + strings.Repeat("x", 40))[:51],
				MTime: at(30).Unix(), Connectable: 1}
			assert.Equal(t, heavy, xfu(t, db, 1, 1, peerA))

			// Light: nothing changed; only the heartbeat columns move, and the speeds drop to 0.
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Announces, d.Time = 3, at(60)
				d.Uploaded, d.Downloaded, d.Left, d.Corrupt = 110, 520, 500, 3
				d.Endpoint = netip.MustParseAddrPort("198.51.100.9:6881") // not written by either form
			}))
			require.False(t, c.open.peers[peerKey{uid: 1, tid: 1, peerID: peerA}].heavy)
			flushNow(t, c)
			light := heavy
			light.UpSpeed, light.DownSpeed, light.TimeSpent, light.Announced, light.MTime = 0, 0, 3600, 3, at(60).Unix()
			assert.Equal(t, light, xfu(t, db, 1, 1, peerA))

			// Heavy: stopped.
			record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
				d.Announces, d.Time, d.Event, d.Removed = 4, at(61), models.Stopped, true
				d.Uploaded, d.Downloaded, d.Left, d.Corrupt = 110, 520, 500, 3
			}))
			flushNow(t, c)
			stopped := light
			stopped.Active, stopped.TimeSpent, stopped.Announced, stopped.MTime = 0, 3660, 4, at(61).Unix()
			assert.Equal(t, stopped, xfu(t, db, 1, 1, peerA))

			// Protected users and IPv6 peers are written with no IP; the same peer_id under another
			// user is another row.
			record(t, c, announce(3, 1, func(d *models.AnnounceDelta) { d.Created, d.Protected = true, true }))
			record(t, c, announce(5, 1, func(d *models.AnnounceDelta) {
				d.Created, d.Endpoint = true, netip.MustParseAddrPort("[2001:db8::1]:6881")
			}))
			flushNow(t, c)
			assert.Equal(t, "", xfu(t, db, 3, 1, peerA).IP)
			assert.Equal(t, "", xfu(t, db, 5, 1, peerA).IP)
			assert.Equal(t, 3, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"))
		})
	}
}

func TestSnatchWrites(t *testing.T) {
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			c, db := openWriter(t, layout, nil)
			record(t, c, announce(1, 2, func(d *models.AnnounceDelta) { d.Snatched, d.Time = true, t0 }))
			record(t, c, announce(3, 2, func(d *models.AnnounceDelta) { d.Snatched, d.Protected, d.Time = true, true, t0.Add(time.Second) }))
			record(t, c, announce(1, 2, func(d *models.AnnounceDelta) { d.Snatched, d.Time = true, t0.Add(2*time.Second) }))
			flushNow(t, c)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rows, err := db.QueryContext(ctx, "SELECT uid, fid, tstamp, IP, seedtime FROM xbt_snatched ORDER BY tstamp")
			require.NoError(t, err)
			defer rows.Close()
			type snatch struct {
				UID, FID, TStamp int64
				IP               string
				SeedTime         int64
			}
			var got []snatch
			for rows.Next() {
				var s snatch
				require.NoError(t, rows.Scan(&s.UID, &s.FID, &s.TStamp, &s.IP, &s.SeedTime))
				got = append(got, s)
			}
			require.NoError(t, rows.Err())
			assert.Equal(t, []snatch{
				{1, 2, t0.Unix(), "203.0.113.7", 0},
				{3, 2, t0.Unix() + 1, "", 0},
				{1, 2, t0.Unix() + 2, "203.0.113.7", 0},
			}, got)
			s, _ := torrentRowOf(t, db, layout, 2)
			assert.Equal(t, int64(3), s.Snatched)
		})
	}
}

// TestStartupReset seeds xbt_files_users and the swarm counts as a previous tracker left them:
// Open saves every row of xbt_files_users in chihaya_baselines, then clears both, and Load hands
// the saved rows over as baselines.
func TestStartupReset(t *testing.T) {
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			dsn := testDB(t, layout)
			db := checkDB(t, dsn)
			now := time.Now().Unix()
			mustExec(t, db, "INSERT INTO xbt_files_users (uid, fid, active, uploaded, downloaded, corrupt, timespent, announced, peer_id, mtime) VALUES "+
				"(1, 1, 1, 1000, 2000, 5, 600, 7, ?, ?), (3, 2, 1, 10, 0, 0, 0, 1, ?, ?), "+
				"(1, 3, 0, 99, 98, 0, 60, 2, ?, ?)", peerA[:], now-60, peerB[:], now-600, peerB[:], now-600)

			ro := openOn(t, dsn, layout, func(p *Params) { p.ReadOnly = true })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := ro.Load(ctx)
			require.NoError(t, err)
			assert.Len(t, s.Baselines, 2, "read-only: the current active rows")
			assert.Equal(t, 3, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"), "read-only: no reset")
			assert.Zero(t, count(t, db, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'chihaya_baselines'"),
				"read-only: no table created")
			st, _ := torrentRowOf(t, db, layout, 1)
			assert.Equal(t, int64(5), st.Seeders)

			c := openOn(t, dsn, layout, nil)
			assert.Zero(t, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"), "truncated")
			for tid := uint64(1); tid <= 5; tid++ {
				if st, ok := torrentRowOf(t, db, layout, tid); ok {
					assert.Zero(t, st.Seeders+st.Leechers, "torrent %d", tid)
				}
			}
			st, _ = torrentRowOf(t, db, layout, 3)
			assert.Equal(t, int64(12), st.Snatched, "only the counts are reset")
			assert.Equal(t, int64(300), st.Balance)

			s, err = c.Load(ctx)
			require.NoError(t, err)
			sortBaselines(s.Baselines)
			assert.Equal(t, []models.Baseline{
				{UserID: 1, TorrentID: 1, PeerID: peerA, Uploaded: 1000, Downloaded: 2000, Corrupt: 5,
					FirstSeen: time.Unix(now-660, 0), LastSeen: time.Unix(now-60, 0), Announces: 7},
				// A stopped peer's counters are kept too, as the tracker keeps its session.
				{UserID: 1, TorrentID: 3, PeerID: peerB, Uploaded: 99, Downloaded: 98,
					FirstSeen: time.Unix(now-660, 0), LastSeen: time.Unix(now-600, 0), Announces: 2},
				{UserID: 3, TorrentID: 2, PeerID: peerB, Uploaded: 10,
					FirstSeen: time.Unix(now-600, 0), LastSeen: time.Unix(now-600, 0), Announces: 1},
			}, s.Baselines)

			// Later loads read the baselines as the flushes left them: a stopped peer's too.
			c.KeepBaselines(100 * 365 * 24 * time.Hour) // the deltas are at t0, in 2023
			record(t, c, announce(1, 4, func(d *models.AnnounceDelta) { d.Created, d.Uploaded, d.Announces = true, 77, 1 }))
			record(t, c, announce(1, 5, func(d *models.AnnounceDelta) { d.Created, d.Removed, d.Downloaded = true, true, 5 }))
			flushNow(t, c)
			s, err = c.Load(ctx)
			require.NoError(t, err)
			sortBaselines(s.Baselines)
			require.Len(t, s.Baselines, 5)
			assert.Equal(t, models.Baseline{UserID: 1, TorrentID: 4, PeerID: peerA, Uploaded: 77, FirstSeen: t0,
				LastSeen: t0.Add(30 * time.Minute), Announces: 1}, s.Baselines[2])
			assert.Equal(t, models.Baseline{UserID: 1, TorrentID: 5, PeerID: peerA, Downloaded: 5, FirstSeen: t0,
				LastSeen: t0.Add(30 * time.Minute), Announces: 2}, s.Baselines[3])
		})
	}
}

// sortBaselines orders baselines by user, torrent and peer.
func sortBaselines(bs []models.Baseline) {
	sort.Slice(bs, func(i, j int) bool {
		a, b := bs[i], bs[j]
		if a.UserID != b.UserID {
			return a.UserID < b.UserID
		}
		if a.TorrentID != b.TorrentID {
			return a.TorrentID < b.TorrentID
		}
		return string(a.PeerID[:]) < string(b.PeerID[:])
	})
}

// TestExactlyOnce writes the same batch twice, as a retry does after a COMMIT whose reply was
// lost: the second attempt finds its marker and applies nothing.
func TestExactlyOnce(t *testing.T) {
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			c, db := openWriter(t, layout, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			t.Run("same batch twice", func(t *testing.T) {
				record(t, c, announce(1, 1, func(d *models.AnnounceDelta) {
					d.CreditedUp, d.CreditedDown, d.Snatched, d.Token, d.TokenDown, d.UploadedDelta = 7, 3, true, true, 5, 7
				}))
				b, fresh := c.nextBatch()
				require.True(t, fresh)
				b.prepare()
				_, err := c.writeBatch(ctx, b)
				require.NoError(t, err)
				_, err = c.writeBatch(ctx, b)
				require.ErrorIs(t, err, errApplied)
				c.batchDone(b)

				up, down := userTotals(t, db, layout, 1)
				assert.Equal(t, [2]int64{1007, 503}, [2]int64{up, down})
				s, _ := torrentRowOf(t, db, layout, 1)
				assert.Equal(t, int64(4), s.Snatched)
				assert.Equal(t, int64(7), s.Balance)
				assert.Equal(t, 1, count(t, db, "SELECT COUNT(*) FROM xbt_snatched"))
				assert.Equal(t, 1, count(t, db, "SELECT COUNT(*) FROM users_freeleeches WHERE UserID = 1 AND TorrentID = 1 AND Downloaded = 5"))
				assert.Equal(t, 1, count(t, db, "SELECT COUNT(*) FROM chihaya_flushes WHERE id = ?", b.id))
			})

			t.Run("commit reply lost", func(t *testing.T) {
				lose := true
				c.commit = func(tx *sql.Tx) error {
					if err := tx.Commit(); err != nil || !lose {
						return err
					}
					lose = false
					return mysql.ErrInvalidConn // committed, but the client never heard
				}
				defer func() { c.commit = (*sql.Tx).Commit }()
				errsBefore := counterValue(t, c.metrics.flushErrors)

				record(t, c, announce(2, 1, func(d *models.AnnounceDelta) { d.CreditedUp, d.UploadedDelta = 11, 11 }))
				err := c.flush(ctx)
				require.ErrorIs(t, err, mysql.ErrInvalidConn)
				c.flushFailed(err)
				assert.Equal(t, 3, c.pendingRows(), "the batch (user, torrent, peer) is kept")
				// Meanwhile another announce arrives: it goes into the next batch.
				record(t, c, announce(2, 1, func(d *models.AnnounceDelta) { d.CreditedUp, d.UploadedDelta = 13, 13 }))

				require.NoError(t, c.flush(ctx), "the retry finds the batch applied and drops it")
				require.NoError(t, c.flush(ctx))
				assert.Zero(t, c.pendingRows())
				up, _ := userTotals(t, db, layout, 2)
				assert.Equal(t, int64(24), up, "each delta applied once")
				s, _ := torrentRowOf(t, db, layout, 1)
				assert.Equal(t, int64(7+24), s.Balance)
				assert.Equal(t, errsBefore+1, counterValue(t, c.metrics.flushErrors))
			})
		})
	}
}

// TestRowsRefusedByTheDatabase adds a foreign key, as some Gazelle installs have, and records a
// torrent that does not exist: that row is dropped, the rest of the batch is written.
func TestRowsRefusedByTheDatabase(t *testing.T) {
	c, db := openWriter(t, OPSnet, nil)
	mustExec(t, db, "ALTER TABLE torrents_leech_stats ADD CONSTRAINT tls_torrent FOREIGN KEY (TorrentID) REFERENCES torrents (ID)")
	record(t, c, announce(1, 1, func(d *models.AnnounceDelta) { d.Created, d.CreditedUp, d.Seeders = true, 5, 3 }))
	record(t, c, announce(1, 99, func(d *models.AnnounceDelta) { d.Created, d.CreditedUp, d.Seeders = true, 6, 3 }))
	flushNow(t, c)
	s, _ := torrentRowOf(t, db, OPSnet, 1)
	assert.Equal(t, int64(3), s.Seeders)
	_, ok := torrentRowOf(t, db, OPSnet, 99)
	assert.False(t, ok)
	up, _ := userTotals(t, db, OPSnet, 1)
	assert.Equal(t, int64(1011), up)
	assert.Equal(t, 2, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"))
	assert.Equal(t, 1.0, counterValue(t, c.metrics.dropped))

	// The next batch is written in chunks again.
	record(t, c, announce(1, 1, func(d *models.AnnounceDelta) { d.Seeders = 4 }))
	b, _ := c.nextBatch()
	assert.Zero(t, b.rowByRow)
	c.mu.Lock()
	c.sealed = b
	c.mu.Unlock()
	flushNow(t, c)
	s, _ = torrentRowOf(t, db, OPSnet, 1)
	assert.Equal(t, int64(4), s.Seeders)
}

// TestFlusherTicks lets the flusher write on its own.
func TestFlusherTicks(t *testing.T) {
	c, db := openWriter(t, OPSnet, func(p *Params) { p.FlushInterval = 50 * time.Millisecond })
	record(t, c, announce(1, 1, func(d *models.AnnounceDelta) { d.CreditedUp = 5 }))
	require.Eventually(t, func() bool {
		up, _ := userTotals(t, db, OPSnet, 1)
		return up == 1005
	}, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return c.pendingRows() == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1.0, counterValue(t, c.metrics.flushed.WithLabelValues("users")))
}

func TestCloseFlushes(t *testing.T) {
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			c, db := openWriter(t, layout, nil)
			for uid := uint64(1); uid <= 3; uid++ {
				record(t, c, announce(uid, 1, func(d *models.AnnounceDelta) { d.CreditedUp, d.Created = 1, true }))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, c.Close(ctx))
			assert.ErrorIs(t, c.RecordAnnounce(ctx, announce(1, 1, nil)), ErrClosed)
			up, _ := userTotals(t, db, layout, 1)
			assert.Equal(t, int64(1001), up)
			assert.Equal(t, 3, count(t, db, "SELECT COUNT(*) FROM xbt_files_users"))
		})
	}
}

func TestCloseDatabaseDown(t *testing.T) {
	p := DefaultParams()
	p.FlushInterval = 20 * time.Millisecond
	c := offlineConn(t, p)
	for uid := uint64(1); uid <= 3; uid++ {
		record(t, c, announce(uid, 1, func(d *models.AnnounceDelta) { d.CreditedUp = 1 }))
	}
	require.Eventually(t, func() bool { return counterValue(t, c.metrics.flushErrors) > 0 }, 10*time.Second, 10*time.Millisecond)
	// Announces are still taken while the database is down.
	record(t, c, announce(4, 1, func(d *models.AnnounceDelta) { d.CreditedUp = 1 }))

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Close(ctx)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.Less(t, time.Since(start), 3*time.Second, "Close returns when its context ends")
	assert.Contains(t, err.Error(), "9 rows remain unwritten (users 4, torrents 1, peers 4)")
	assert.Contains(t, err.Error(), "connect: connection refused")
}

func TestCollectors(t *testing.T) {
	c := queueConn(DefaultParams())
	record(t, c, announce(1, 1, func(d *models.AnnounceDelta) { d.CreditedUp = 1 }))
	reg := prometheus.NewPedanticRegistry()
	for _, col := range c.Collectors() {
		require.NoError(t, reg.Register(col))
	}
	families, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]map[string]float64{}
	for _, f := range families {
		got[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			label := ""
			for _, l := range m.GetLabel() {
				label = l.GetValue()
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[f.GetName()][label] = v
		}
	}
	assert.Equal(t, map[string]float64{"users": 1, "torrents": 1, "snatches": 0, "peers": 1, "tokens": 0, "expiretoken": 0},
		got["chihaya_gazelle_queue_rows"])
	assert.Len(t, got["chihaya_gazelle_flushed_rows_total"], 6)
	assert.Contains(t, got, "chihaya_gazelle_flush_errors_total")
	assert.Contains(t, got, "chihaya_gazelle_dropped_total")
	assert.Contains(t, got, "chihaya_gazelle_callback_errors_total")
}
