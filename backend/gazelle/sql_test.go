package gazelle

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatementShapes(t *testing.T) {
	const (
		opsUsers = "INSERT INTO users_leech_stats (UserID, Uploaded, Downloaded) VALUES (?,?,?),(?,?,?) " +
			"ON DUPLICATE KEY UPDATE Uploaded = Uploaded + VALUES(Uploaded), Downloaded = Downloaded + VALUES(Downloaded)"
		opsTorrents = "INSERT INTO torrents_leech_stats (TorrentID,Seeders,Leechers,Snatched,Balance) VALUES (?,?,?,?,?),(?,?,?,?,?) " +
			"ON DUPLICATE KEY UPDATE Seeders=VALUES(Seeders), Leechers=VALUES(Leechers), Snatched=Snatched+VALUES(Snatched), " +
			"Balance=Balance+VALUES(Balance), last_action = IF(VALUES(Seeders) > 0, NOW(), last_action)"
		opsSnatches = "INSERT IGNORE INTO xbt_snatched (uid, fid, tstamp, IP) VALUES (?,?,?,?),(?,?,?,?)"
		heavy       = "INSERT INTO xbt_files_users (uid,fid,active,uploaded,downloaded,upspeed,downspeed,remaining,corrupt," +
			"timespent,announced,ip,peer_id,useragent,mtime) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?),(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) " +
			"ON DUPLICATE KEY UPDATE active=VALUES(active), uploaded=VALUES(uploaded), downloaded=VALUES(downloaded), " +
			"upspeed=VALUES(upspeed), downspeed=VALUES(downspeed), remaining=VALUES(remaining), corrupt=VALUES(corrupt), " +
			"timespent=VALUES(timespent), announced=VALUES(announced), mtime=VALUES(mtime)"
		light = "INSERT INTO xbt_files_users (uid,fid,timespent,announced,peer_id,mtime) VALUES (?,?,?,?,?,?),(?,?,?,?,?,?) " +
			"ON DUPLICATE KEY UPDATE upspeed=0, downspeed=0, timespent=VALUES(timespent), announced=VALUES(announced), mtime=VALUES(mtime)"
		baselines = "INSERT INTO chihaya_baselines (uid,fid,peer_id,uploaded,downloaded,corrupt,first_seen,last_seen,announced) " +
			"VALUES (?,?,?,?,?,?,?,?,?),(?,?,?,?,?,?,?,?,?) ON DUPLICATE KEY UPDATE uploaded=VALUES(uploaded), " +
			"downloaded=VALUES(downloaded), corrupt=VALUES(corrupt), first_seen=VALUES(first_seen), last_seen=VALUES(last_seen), " +
			"announced=VALUES(announced)"
		tokens = "INSERT INTO users_freeleeches (UserID, TorrentID, Downloaded) VALUES (?,?,?),(?,?,?) " +
			"ON DUPLICATE KEY UPDATE Downloaded = Downloaded + VALUES(Downloaded)"
		wcdUsers = "UPDATE users_main AS u JOIN (SELECT ? AS ID, ? AS Uploaded, ? AS Downloaded UNION ALL SELECT ?,?,?) AS d " +
			"ON u.ID = d.ID SET u.Uploaded = u.Uploaded + d.Uploaded, u.Downloaded = u.Downloaded + d.Downloaded"
		wcdTorrents = "UPDATE torrents AS t JOIN (SELECT ? AS ID, ? AS Seeders, ? AS Leechers, ? AS Snatched, ? AS Balance " +
			"UNION ALL SELECT ?,?,?,?,?) AS d ON t.ID = d.ID SET t.Seeders = d.Seeders, t.Leechers = d.Leechers, " +
			"t.Snatched = t.Snatched + d.Snatched, t.Balance = t.Balance + d.Balance, t.last_action = IF(d.Seeders > 0, NOW(), t.last_action)"
		wcdSnatches = "INSERT INTO xbt_snatched (uid, fid, tstamp, IP) VALUES (?,?,?,?),(?,?,?,?)"
	)
	tests := []struct {
		layout Schema
		want   [numStmts]string
		reset  string
	}{
		{OPSnet, [numStmts]string{opsUsers, opsTorrents, opsSnatches, heavy, light, baselines, tokens}, "UPDATE torrents_leech_stats SET Seeders = 0, Leechers = 0"},
		{WhatCD, [numStmts]string{wcdUsers, wcdTorrents, wcdSnatches, heavy, light, baselines, tokens}, "UPDATE torrents SET Seeders = 0, Leechers = 0"},
	}
	for _, tt := range tests {
		t.Run(string(tt.layout), func(t *testing.T) {
			w := tt.layout.writes()
			for k := range numStmts {
				assert.Equal(t, tt.want[k], w.stmts[k].sql(2), "%s", k)
				one := w.stmts[k].sql(1)
				assert.Equal(t, strings.Count(one, "?"), w.stmts[k].cols, "%s: one row's placeholders", k)
				full := w.stmts[k].sql(chunkRows)
				assert.Equal(t, chunkRows*w.stmts[k].cols, strings.Count(full, "?"), "%s: a full chunk", k)
				assert.Equal(t, w.stmts[k].build(chunkRows), full)
			}
			assert.Equal(t, tt.reset, w.resetCounts)
		})
	}
}

// TestBatchArgs checks what a batch hands each statement: sorted by key, heavy and light peers
// apart, columns in the statements' order.
func TestBatchArgs(t *testing.T) {
	b := newBuffers()
	b.users[9] = userRow{up: 1, down: 2}
	b.users[3] = userRow{up: 3, down: 4}
	b.torrents[5] = torrentRow{seeders: 1, leechers: 2, snatched: 1, balance: -7}
	b.snatches = []snatchRow{{uid: 3, tid: 5, tstamp: 100, ip: netip.MustParseAddr("203.0.113.7")}, {uid: 9, tid: 5, tstamp: 101}}
	b.peers[peerKey{uid: 9, tid: 5, peerID: peerB}] = peerRow{uploaded: 7, downloaded: 8, corrupt: 9, timespent: 60, announced: 2, mtime: 200,
		firstSeen: 140, lastSeen: 200}
	b.peers[peerKey{uid: 3, tid: 5, peerID: peerA}] = peerRow{heavy: true, active: true, uploaded: 10, downloaded: 20,
		upspeed: 1, downspeed: 2, remaining: 30, corrupt: 4, timespent: 5, announced: 6,
		ip: netip.MustParseAddr("203.0.113.7"), useragent: "ua", mtime: 300, firstSeen: 295, lastSeen: 300}
	b.peers[peerKey{uid: 3, tid: 5, peerID: peerB}] = peerRow{heavy: true, mtime: 301, firstSeen: 301, lastSeen: 301}
	b.tokens[tokenKey{uid: 9, tid: 5}] = 50
	b.tokens[tokenKey{uid: 3, tid: 5}] = 60

	bt := newBatch(42, b)
	assert.Equal(t, 10, bt.rows)
	assert.Equal(t, [numTables]int{2, 1, 2, 3, 2}, bt.counts)
	bt.prepare()
	want := [numStmts][]any{
		stmtUsers:    {uint64(3), int64(3), int64(4), uint64(9), int64(1), int64(2)},
		stmtTorrents: {uint64(5), int64(1), int64(2), int64(1), int64(-7)},
		stmtSnatches: {uint64(3), uint64(5), int64(100), "203.0.113.7", uint64(9), uint64(5), int64(101), ""},
		stmtHeavyPeers: { // peerB ("-TR…") sorts before peerA ("-qB…")
			uint64(3), uint64(5), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0), int64(0),
			"", peerB[:], "", int64(301),
			uint64(3), uint64(5), int64(1), int64(10), int64(20), int64(1), int64(2), int64(30), int64(4), int64(5), int64(6),
			"203.0.113.7", peerA[:], "ua", int64(300),
		},
		stmtLightPeers: {uint64(9), uint64(5), int64(60), int64(2), peerB[:], int64(200)},
		stmtBaselines: { // every peer, heavy or light, in key order
			uint64(3), uint64(5), peerB[:], int64(0), int64(0), int64(0), int64(301), int64(301), int64(0),
			uint64(3), uint64(5), peerA[:], int64(10), int64(20), int64(4), int64(295), int64(300), int64(6),
			uint64(9), uint64(5), peerB[:], int64(7), int64(8), int64(9), int64(140), int64(200), int64(2),
		},
		stmtTokens: {uint64(3), uint64(5), int64(60), uint64(9), uint64(5), int64(50)},
	}
	for k := range numStmts {
		assert.Equal(t, want[k], bt.args[k], "%s", k)
		if len(want[k]) > 0 {
			assert.Equal(t, len(want[k])/OPSnet.writes().stmts[k].cols, bt.nrows[k], "%s rows", k)
		}
	}
}

func TestBackoff(t *testing.T) {
	var got []time.Duration
	for n := 1; n <= 8; n++ {
		got = append(got, backoff(3*time.Second, n))
	}
	assert.Equal(t, []time.Duration{3 * time.Second, 6 * time.Second, 12 * time.Second, 24 * time.Second,
		48 * time.Second, time.Minute, time.Minute, time.Minute}, got)
	assert.Equal(t, 2*time.Minute, backoff(2*time.Minute, 3), "never below the interval")

	e := newExpirer("http://x/", 10, time.Second, newMetrics(queueConn(DefaultParams())))
	got = got[:0]
	for n := 1; n <= 8; n++ {
		got = append(got, e.backoff(n))
	}
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, time.Minute, time.Minute}, got)
}

func TestSanitizeUserAgent(t *testing.T) {
	var buf [maxUserAgent]byte
	require.Equal(t, "a?b", string(sanitizeUserAgent(&buf, "a\x7fb")))
	assert.True(t, cleanUserAgent("uTorrent/3.5.5(45852)"))
	assert.False(t, cleanUserAgent("tab\there"))
	assert.False(t, cleanUserAgent(strings.Repeat("a", 52)))
	assert.True(t, cleanUserAgent(strings.Repeat("a", 51)))
}
