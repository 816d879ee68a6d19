package gazelle

import (
	"bytes"
	"cmp"
	"slices"
	"strings"
)

// stmtKind is one statement of a batch, in the order a batch writes them.
type stmtKind uint8

const (
	stmtUsers stmtKind = iota
	stmtTorrents
	stmtSnatches
	stmtHeavyPeers
	stmtLightPeers
	stmtBaselines
	stmtTokens
	numStmts
)

// table returns the buffer a statement writes.
func (k stmtKind) table() table {
	switch k {
	case stmtUsers:
		return tableUsers
	case stmtTorrents:
		return tableTorrents
	case stmtSnatches:
		return tableSnatches
	case stmtTokens:
		return tableTokens
	}
	return tablePeers
}

func (k stmtKind) String() string {
	switch k {
	case stmtHeavyPeers:
		return "peers (heavy)"
	case stmtLightPeers:
		return "peers (light)"
	case stmtBaselines:
		return "peers (baselines)"
	}
	return k.table().String()
}

// chunkRows is the most rows one statement writes; a bigger buffer is written as several
// statements of the same shape in the same transaction.
const chunkRows = 1000

// shape is a multi-row statement: head, then one group of placeholders per row joined by sep
// (the first row's group may differ, to name the columns of a derived table), then tail.
type shape struct {
	head, first, row, sep, tail string
	cols                        int
	// full caches the statement for chunkRows rows.
	full string
}

func newShape(head, first, row, sep, tail string) *shape {
	s := &shape{head: head, first: first, row: row, sep: sep, tail: tail, cols: strings.Count(row, "?")}
	s.full = s.build(chunkRows)
	return s
}

// sql returns the statement for n rows.
func (s *shape) sql(n int) string {
	if n == chunkRows {
		return s.full
	}
	return s.build(n)
}

func (s *shape) build(n int) string {
	var b strings.Builder
	b.Grow(len(s.head) + len(s.first) + (n-1)*(len(s.sep)+len(s.row)) + len(s.tail))
	b.WriteString(s.head)
	b.WriteString(s.first)
	for i := 1; i < n; i++ {
		b.WriteString(s.sep)
		b.WriteString(s.row)
	}
	b.WriteString(s.tail)
	return b.String()
}

// values returns a shape of INSERT … VALUES (?,…),(?,…) … tail.
func values(head, row, tail string) *shape {
	return newShape(head+" VALUES ", row, row, ",", tail)
}

// writes are the statements of one layout, by kind, plus its startup reset of the swarm counts.
type writes struct {
	stmts       [numStmts]*shape
	resetCounts string
}

// The statements both layouts share (protocol.md §3.4).
const (
	heavyPeersHead = "INSERT INTO xbt_files_users (uid,fid,active,uploaded,downloaded,upspeed,downspeed," +
		"remaining,corrupt,timespent,announced,ip,peer_id,useragent,mtime)"
	heavyPeersTail = " ON DUPLICATE KEY UPDATE active=VALUES(active), uploaded=VALUES(uploaded), " +
		"downloaded=VALUES(downloaded), upspeed=VALUES(upspeed), downspeed=VALUES(downspeed), " +
		"remaining=VALUES(remaining), corrupt=VALUES(corrupt), timespent=VALUES(timespent), " +
		"announced=VALUES(announced), mtime=VALUES(mtime)"
	lightPeersHead = "INSERT INTO xbt_files_users (uid,fid,timespent,announced,peer_id,mtime)"
	lightPeersTail = " ON DUPLICATE KEY UPDATE upspeed=0, downspeed=0, timespent=VALUES(timespent), " +
		"announced=VALUES(announced), mtime=VALUES(mtime)"
	// baselinesHead and baselinesTail write chihaya_baselines (see createBaselinesSQL): the
	// latest counters of every peer in the batch, heavy or light, so that they outlive
	// xbt_files_users' truncate at the next start.
	baselinesHead = "INSERT INTO chihaya_baselines (uid,fid,peer_id,uploaded,downloaded,corrupt,first_seen,last_seen,announced)"
	baselinesTail = " ON DUPLICATE KEY UPDATE uploaded=VALUES(uploaded), downloaded=VALUES(downloaded), " +
		"corrupt=VALUES(corrupt), first_seen=VALUES(first_seen), last_seen=VALUES(last_seen), announced=VALUES(announced)"
	tokensHead = "INSERT INTO users_freeleeches (UserID, TorrentID, Downloaded)"
	tokensTail = " ON DUPLICATE KEY UPDATE Downloaded = Downloaded + VALUES(Downloaded)"
)

// writes returns the statements of the layout. It must be one of the known schemas.
//
// OPSnet's are Ocelot 2.x's, but for Balance, which is added to rather than overwritten:
// Ocelot keeps each torrent's balance in memory from zero at its start and writes that
// absolute value, so a restart resets it; we write this process's deltas, so nothing is lost
// across restarts and no in-memory total is needed.
//
// WhatCD's users_main and torrents have NOT NULL columns without defaults (Username,
// torrent_pass, GroupID, info_hash…), so Ocelot 1.0's INSERT … ON DUPLICATE KEY UPDATE into
// them fails with error 1364 under a strict sql_mode (MariaDB's default since 10.2.4) even
// when every row exists, and under a lax one it would create a junk row for an ID that is
// gone (which Ocelot then deleted with DELETE FROM torrents WHERE info_hash = ""). For those
// two tables we write the same values with one multi-row UPDATE … JOIN over a derived table
// instead: existing rows change exactly as Ocelot's statement changes them, missing ones are
// left alone, and no cleanup is needed. xbt_snatched takes INSERT IGNORE in OPSnet only, as
// in Ocelot 2.x.
func (s Schema) writes() writes {
	var w writes
	switch s {
	case WhatCD:
		w.stmts[stmtUsers] = newShape(
			"UPDATE users_main AS u JOIN (",
			"SELECT ? AS ID, ? AS Uploaded, ? AS Downloaded", "SELECT ?,?,?", " UNION ALL ",
			") AS d ON u.ID = d.ID SET u.Uploaded = u.Uploaded + d.Uploaded, u.Downloaded = u.Downloaded + d.Downloaded")
		w.stmts[stmtTorrents] = newShape(
			"UPDATE torrents AS t JOIN (",
			"SELECT ? AS ID, ? AS Seeders, ? AS Leechers, ? AS Snatched, ? AS Balance", "SELECT ?,?,?,?,?", " UNION ALL ",
			") AS d ON t.ID = d.ID SET t.Seeders = d.Seeders, t.Leechers = d.Leechers, "+
				"t.Snatched = t.Snatched + d.Snatched, t.Balance = t.Balance + d.Balance, "+
				"t.last_action = IF(d.Seeders > 0, NOW(), t.last_action)")
		w.stmts[stmtSnatches] = values("INSERT INTO xbt_snatched (uid, fid, tstamp, IP)", "(?,?,?,?)", "")
		w.resetCounts = "UPDATE torrents SET Seeders = 0, Leechers = 0"
	default:
		w.stmts[stmtUsers] = values("INSERT INTO users_leech_stats (UserID, Uploaded, Downloaded)", "(?,?,?)",
			" ON DUPLICATE KEY UPDATE Uploaded = Uploaded + VALUES(Uploaded), Downloaded = Downloaded + VALUES(Downloaded)")
		w.stmts[stmtTorrents] = values("INSERT INTO torrents_leech_stats (TorrentID,Seeders,Leechers,Snatched,Balance)", "(?,?,?,?,?)",
			" ON DUPLICATE KEY UPDATE Seeders=VALUES(Seeders), Leechers=VALUES(Leechers), "+
				"Snatched=Snatched+VALUES(Snatched), Balance=Balance+VALUES(Balance), "+
				"last_action = IF(VALUES(Seeders) > 0, NOW(), last_action)")
		w.stmts[stmtSnatches] = values("INSERT IGNORE INTO xbt_snatched (uid, fid, tstamp, IP)", "(?,?,?,?)", "")
		w.resetCounts = "UPDATE torrents_leech_stats SET Seeders = 0, Leechers = 0"
	}
	w.stmts[stmtHeavyPeers] = values(heavyPeersHead, "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", heavyPeersTail)
	w.stmts[stmtLightPeers] = values(lightPeersHead, "(?,?,?,?,?,?)", lightPeersTail)
	w.stmts[stmtBaselines] = values(baselinesHead, "(?,?,?,?,?,?,?,?,?)", baselinesTail)
	w.stmts[stmtTokens] = values(tokensHead, "(?,?,?)", tokensTail)
	return w
}

// batch is a sealed set of buffers, written in one transaction together with its row in
// chihaya_flushes. Once sealed it never changes (except that rows the database refuses as
// data are dropped when it is written row by row), so that a retry writes exactly what the
// first attempt did and the marker row can tell whether that attempt committed.
type batch struct {
	id     uint64
	bufs   *buffers
	rows   int
	counts [numTables]int

	// args holds each statement's arguments, cols per row in key order; built on first use.
	args     [numStmts][]any
	nrows    [numStmts]int
	prepared bool
	// rowByRow marks the statements that failed on a row's data: they are written one row at
	// a time, and a row the database refuses as data is dropped (logged and counted) instead
	// of blocking the queue forever.
	rowByRow uint8
}

func newBatch(id uint64, b *buffers) *batch {
	bt := &batch{id: id, bufs: b, rows: b.rows()}
	for t := range numTables {
		bt.counts[t] = b.count(t)
	}
	return bt
}

// prepare turns the buffers into each statement's arguments, sorted by primary key so that
// the statements are deterministic and lock rows in index order.
func (bt *batch) prepare() {
	if bt.prepared {
		return
	}
	bt.prepared = true
	b := bt.bufs

	uids := sortedKeys(b.users)
	args := make([]any, 0, 3*len(uids))
	for _, id := range uids {
		r := b.users[id]
		args = append(args, id, r.up, r.down)
	}
	bt.set(stmtUsers, args, len(uids))

	tids := sortedKeys(b.torrents)
	args = make([]any, 0, 5*len(tids))
	for _, id := range tids {
		r := b.torrents[id]
		args = append(args, id, r.seeders, r.leechers, r.snatched, r.balance)
	}
	bt.set(stmtTorrents, args, len(tids))

	args = make([]any, 0, 4*len(b.snatches))
	for _, s := range b.snatches {
		args = append(args, s.uid, s.tid, s.tstamp, ipText(s))
	}
	bt.set(stmtSnatches, args, len(b.snatches))

	keys := make([]peerKey, 0, len(b.peers))
	for k := range b.peers {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b peerKey) int {
		if c := cmp.Compare(a.uid, b.uid); c != 0 {
			return c
		}
		if c := cmp.Compare(a.tid, b.tid); c != 0 {
			return c
		}
		return bytes.Compare(a.peerID[:], b.peerID[:])
	})
	var heavy, light []any
	nh, nl := 0, 0
	base := make([]any, 0, 9*len(keys))
	for i := range keys {
		k := &keys[i]
		r := b.peers[*k]
		base = append(base, k.uid, k.tid, k.peerID[:], r.uploaded, r.downloaded, r.corrupt, r.firstSeen, r.lastSeen, r.announced)
		if r.heavy {
			active := int64(0)
			if r.active {
				active = 1
			}
			ip := ""
			if r.ip.IsValid() {
				ip = r.ip.String()
			}
			heavy = append(heavy, k.uid, k.tid, active, r.uploaded, r.downloaded, r.upspeed, r.downspeed,
				r.remaining, r.corrupt, r.timespent, r.announced, ip, k.peerID[:], r.useragent, r.mtime)
			nh++
		} else {
			light = append(light, k.uid, k.tid, r.timespent, r.announced, k.peerID[:], r.mtime)
			nl++
		}
	}
	bt.set(stmtHeavyPeers, heavy, nh)
	bt.set(stmtLightPeers, light, nl)
	bt.set(stmtBaselines, base, len(keys))

	tks := make([]tokenKey, 0, len(b.tokens))
	for k := range b.tokens {
		tks = append(tks, k)
	}
	slices.SortFunc(tks, func(a, b tokenKey) int {
		if c := cmp.Compare(a.uid, b.uid); c != 0 {
			return c
		}
		return cmp.Compare(a.tid, b.tid)
	})
	args = make([]any, 0, 3*len(tks))
	for _, k := range tks {
		args = append(args, k.uid, k.tid, b.tokens[k])
	}
	bt.set(stmtTokens, args, len(tks))
}

func (bt *batch) set(k stmtKind, args []any, n int) {
	bt.args[k], bt.nrows[k] = args, n
}

func ipText(s snatchRow) string {
	if s.ip.IsValid() {
		return s.ip.String()
	}
	return ""
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
