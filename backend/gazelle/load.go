package gazelle

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/tracker/models"
)

// queries are the startup loads of one layout (protocol.md §3.4). Each selects in primary-key
// order, which costs InnoDB nothing and makes a load deterministic.
type queries struct {
	// users selects ID, torrent_pass, can_leech and protected (Ocelot's Visible='0' OR
	// IP='127.0.0.1': the user's IP is not written to xbt_files_users and xbt_snatched) of
	// the enabled users.
	users string
	// torrents selects ID, info_hash, freetorrent and the snatch count of every torrent.
	torrents string
	// tokens selects UserID and TorrentID of the unexpired freeleech tokens on torrents that
	// still exist. Expired is compared with '0' as Ocelot does, which is right whether the
	// column is a tinyint or an enum('0','1').
	tokens string
	// whitelist selects the allowed peer_id prefixes.
	whitelist string
}

const (
	usersQuery = "SELECT ID, torrent_pass, can_leech, IFNULL(Visible = '0' OR IP = '127.0.0.1', 0) " +
		"FROM users_main WHERE Enabled = '1' ORDER BY ID"
	tokensQuery = "SELECT uf.UserID, uf.TorrentID FROM users_freeleeches AS uf " +
		"JOIN torrents AS t ON t.ID = uf.TorrentID WHERE uf.Expired = '0' ORDER BY uf.UserID, uf.TorrentID"
	whitelistQuery = "SELECT peer_id FROM xbt_client_whitelist WHERE peer_id IS NOT NULL ORDER BY id"
	// baselinesQuery reads the peers' last counters that chihaya_baselines keeps, those last
	// seen at or after its argument. It has no ORDER BY: the table may hold millions of rows.
	baselinesQuery = "SELECT uid, fid, peer_id, uploaded, downloaded, corrupt, first_seen, last_seen, announced " +
		"FROM chihaya_baselines WHERE last_seen >= ?"
	// readOnlyBaselinesQuery reads the same from the active rows of xbt_files_users, for a
	// read-only Conn, which leaves the database as it finds it (chihaya_baselines may not
	// even exist beside Ocelot).
	readOnlyBaselinesQuery = "SELECT uid, fid, peer_id, uploaded, downloaded, corrupt, " +
		"CAST(mtime AS SIGNED) - CAST(timespent AS SIGNED), mtime, announced FROM xbt_files_users WHERE active = 1"
)

// saveBaselinesSQL copies every row of xbt_files_users into chihaya_baselines before the startup
// truncate, where it is newer than the baseline kept there: rows written by Ocelot or by an
// older Chihaya, or by this one when a flush wrote both tables (then they are equal). Being
// idempotent, it can run again after a crash between it and the truncate.
var saveBaselinesSQL = func() string {
	const t = "chihaya_baselines."
	set := make([]string, 0, 6)
	for _, col := range []string{"uploaded", "downloaded", "corrupt", "first_seen", "announced"} {
		set = append(set, t+col+" = IF(VALUES(last_seen) > "+t+"last_seen, VALUES("+col+"), "+t+col+")")
	}
	// Last: MariaDB and MySQL assign left to right, and the others compare with the old value.
	set = append(set, t+"last_seen = GREATEST("+t+"last_seen, VALUES(last_seen))")
	return "INSERT INTO chihaya_baselines (uid,fid,peer_id,uploaded,downloaded,corrupt,first_seen,last_seen,announced) " +
		"SELECT x.uid, x.fid, x.peer_id, GREATEST(x.uploaded, 0), GREATEST(x.downloaded, 0), GREATEST(x.corrupt, 0), " +
		"CAST(x.mtime AS SIGNED) - CAST(x.timespent AS SIGNED), x.mtime, GREATEST(x.announced, 0) " +
		"FROM xbt_files_users AS x WHERE x.uid > 0 AND x.fid > 0 ON DUPLICATE KEY UPDATE " + strings.Join(set, ", ")
}()

// queries returns the startup loads of the layout. It must be one of the known schemas.
func (s Schema) queries() queries {
	q := queries{users: usersQuery, tokens: tokensQuery, whitelist: whitelistQuery}
	switch s {
	case WhatCD:
		q.torrents = "SELECT ID, info_hash, freetorrent, Snatched FROM torrents ORDER BY ID"
	default:
		// A LEFT JOIN, unlike Ocelot's, so that a torrent whose torrents_leech_stats row is
		// missing is still served (with no snatches) instead of being unregistered.
		q.torrents = "SELECT t.ID, t.info_hash, t.freetorrent, IFNULL(tls.Snatched, 0) FROM torrents AS t " +
			"LEFT JOIN torrents_leech_stats AS tls ON tls.TorrentID = t.ID ORDER BY t.ID"
	}
	return q
}

// Load reads the site's state for the tracker: the enabled users, every torrent, the unexpired
// freeleech tokens and the client whitelist, all from one consistent snapshot (a read-only
// REPEATABLE READ transaction), so a token never names a torrent the same load did not see.
//
// Baselines are the peers' last counters kept in chihaya_baselines (see the package
// documentation), those last seen within the baseline lifetime, in no particular order. They
// lag the tracker's memory by up to a flush, so a tracker should use a baseline only for a peer
// it does not hold. A read-only Conn reads them from the active rows of xbt_files_users.
//
// Users with an empty torrent_pass are left out (the bare /announce would otherwise
// authenticate as them), and so are torrents whose info_hash is not 20 bytes; both are logged.
// Torrents' Seeders and Leechers are zero: peers live in the tracker's memory only. The call
// honours ctx and may be repeated, for a reload.
func (c *Conn) Load(ctx context.Context) (*models.SiteState, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	tx, err := c.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("gazelle: load from %s: begin: %w", c.where, err)
	}
	// Read-only: there is nothing to commit, and rolling back ends the snapshot as well.
	defer func() { _ = tx.Rollback() }()

	var s models.SiteState
	if s.Users, err = c.loadUsers(ctx, tx); err != nil {
		return nil, fmt.Errorf("gazelle: load users: %w", err)
	}
	if s.Torrents, err = c.loadTorrents(ctx, tx); err != nil {
		return nil, fmt.Errorf("gazelle: load torrents: %w", err)
	}
	if s.Tokens, err = c.loadTokens(ctx, tx); err != nil {
		return nil, fmt.Errorf("gazelle: load tokens: %w", err)
	}
	if s.Whitelist, err = c.loadWhitelist(ctx, tx); err != nil {
		return nil, fmt.Errorf("gazelle: load whitelist: %w", err)
	}
	if c.params.ReadOnly {
		s.Baselines, err = loadBaselines(ctx, tx, readOnlyBaselinesQuery)
	} else {
		s.Baselines, err = loadBaselines(ctx, tx, baselinesQuery, time.Now().Add(-c.baselineLifetime()).Unix())
	}
	if err != nil {
		return nil, fmt.Errorf("gazelle: load baselines: %w", err)
	}
	return &s, nil
}

// loadBaselines reads baselines with query, which selects uid, fid, peer_id, the session
// totals, the session's first and last announce in unix seconds, and the announce count. Rows
// without a user or a torrent are skipped and negative values read as 0.
func loadBaselines(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]models.Baseline, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var (
		out    []models.Baseline
		peerID sql.RawBytes
	)
	for rows.Next() {
		var (
			b                     models.Baseline
			uid, fid              int64
			first, last, announce int64
		)
		if err := rows.Scan(&uid, &fid, &peerID, &b.Uploaded, &b.Downloaded, &b.Corrupt, &first, &last, &announce); err != nil {
			return nil, err
		}
		if uid <= 0 || fid <= 0 {
			continue
		}
		b.UserID, b.TorrentID = uint64(uid), uint64(fid)
		copy(b.PeerID[:], peerID)
		b.Uploaded, b.Downloaded, b.Corrupt = max(b.Uploaded, 0), max(b.Downloaded, 0), max(b.Corrupt, 0)
		b.LastSeen = time.Unix(last, 0)
		b.FirstSeen = time.Unix(min(first, last), 0)
		b.Announces = int(max(announce, 0))
		out = append(out, b)
	}
	return out, rows.Err()
}

// startupReset is Ocelot's reset at start (protocol.md §3.4), after keeping the baselines: it
// saves the rows of xbt_files_users in chihaya_baselines, truncates xbt_files_users, and sets
// every torrent's Seeders and Leechers to 0. Like Ocelot, it logs a failure and carries on; if
// the rows cannot be saved, the table is not truncated, so they are not lost.
func (c *Conn) startupReset(ctx context.Context) {
	if _, err := c.db.ExecContext(ctx, saveBaselinesSQL); err != nil {
		glog.Errorf("gazelle: startup reset: save xbt_files_users in chihaya_baselines in %s: %v; not truncating it", c.where, err)
	} else {
		if _, err := c.db.ExecContext(ctx, "TRUNCATE xbt_files_users"); err != nil {
			glog.Errorf("gazelle: startup reset: truncate xbt_files_users in %s: %v", c.where, err)
		}
	}
	if _, err := c.db.ExecContext(ctx, c.writes.resetCounts); err != nil {
		glog.Errorf("gazelle: startup reset: %s in %s: %v", c.writes.resetCounts, c.where, err)
	}
	glog.Infof("gazelle: startup reset: saved the peers' counters in chihaya_baselines, cleared xbt_files_users and the swarm counts")
}

func (c *Conn) loadUsers(ctx context.Context, tx *sql.Tx) ([]models.User, error) {
	rows, err := tx.QueryContext(ctx, c.queries.users)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var (
		users     []models.User
		noPasskey int
	)
	for rows.Next() {
		var (
			u         models.User
			canLeech  int64
			protected bool
		)
		if err := rows.Scan(&u.ID, &u.Passkey, &canLeech, &protected); err != nil {
			return nil, err
		}
		if u.Passkey == "" {
			noPasskey++
			continue
		}
		u.CanLeech = canLeech != 0
		u.Protected = protected
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if noPasskey > 0 {
		glog.Warningf("gazelle: load users: left out %d enabled users with an empty torrent_pass", noPasskey)
	}
	return users, nil
}

func (c *Conn) loadTorrents(ctx context.Context, tx *sql.Tx) ([]models.Torrent, error) {
	rows, err := tx.QueryContext(ctx, c.queries.torrents)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var (
		torrents []models.Torrent
		badHash  int
		firstBad uint64
		// RawBytes point into the driver's buffer until the next Next: no allocation per row
		// for columns that are copied or parsed at once.
		hash, free sql.RawBytes
	)
	for rows.Next() {
		var (
			t        models.Torrent
			snatched int64
		)
		if err := rows.Scan(&t.ID, &hash, &free, &snatched); err != nil {
			return nil, err
		}
		if len(hash) != len(t.InfoHash) {
			if badHash == 0 {
				firstBad = t.ID
			}
			badHash++
			continue
		}
		copy(t.InfoHash[:], hash)
		t.Freeleech = parseFreeleech(free)
		t.Snatches = int(snatched)
		torrents = append(torrents, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if badHash > 0 {
		glog.Warningf("gazelle: load torrents: left out %d torrents whose info_hash is not 20 bytes (the first has ID %d)",
			badHash, firstBad)
	}
	return torrents, nil
}

// parseFreeleech maps torrents.freetorrent to a FreeleechType as Ocelot does: '1' is free, '2'
// neutral, and anything else (including an empty or NULL enum) normal.
func parseFreeleech(v []byte) models.FreeleechType {
	if len(v) == 1 {
		switch v[0] {
		case '1':
			return models.Free
		case '2':
			return models.Neutral
		}
	}
	return models.Normal
}

func (c *Conn) loadTokens(ctx context.Context, tx *sql.Tx) ([]models.Token, error) {
	rows, err := tx.QueryContext(ctx, c.queries.tokens)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tokens []models.Token
	for rows.Next() {
		var t models.Token
		if err := rows.Scan(&t.UserID, &t.TorrentID); err != nil {
			return nil, err
		}
		tokens = append(tokens, t)
	}
	return tokens, rows.Err()
}

func (c *Conn) loadWhitelist(ctx context.Context, tx *sql.Tx) ([]string, error) {
	rows, err := tx.QueryContext(ctx, c.queries.whitelist)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var prefixes []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		prefixes = append(prefixes, p)
	}
	return prefixes, rows.Err()
}

var _ backend.SiteLoader = (*Conn)(nil)
