// Package gazelle is the "gazelle" backend driver: it connects a private tracker to the MariaDB
// (or MySQL) database of a Gazelle site, in the way Ocelot does, so that Chihaya can replace
// Ocelot without changes to Gazelle. It knows both layouts of that database, OPSnet's (transfer
// totals in users_leech_stats and torrents_leech_stats) and classic WhatCD's (the same columns
// in users_main and torrents); the schema param picks one.
//
// Import it for its side effect of registering the driver:
//
//	import _ "github.com/chihaya/chihaya/backend/gazelle"
//
// # Reading
//
// At startup and on SIGUSR1 the tracker calls Load for the site's state: enabled users,
// torrents, unexpired freeleech tokens and the client whitelist (protocol.md §3.4, "Startup
// loads"), plus the peers' baselines kept in chihaya_baselines.
//
// # Baselines
//
// A peer's baseline is its last counters (uploaded, downloaded, corrupt), when its session
// began and when it last announced, and how many announces it made: what the tracker credits
// its next announce from. They live in chihaya_baselines, a table of Chihaya's own created at
// Open (primary key fid, uid, peer_id), not in xbt_files_users, which is Gazelle's view of the
// live swarms and is emptied at every start. Every batch writes the row of each peer it
// holds, heavy or light, stopped or not, in its one transaction (so a baseline is as durable
// as the credit next to it, kill -9 included); Load hands back those last seen within the
// tracker's baseline_lifetime (see Conn.KeepBaselines), and the flusher deletes the older ones
// an hour apart (and at its first tick), so the table holds no more than the peers seen
// within that lifetime, as the tracker's memory does.
//
// # Startup reset
//
// Unless readonly, Open does Ocelot's reset, since peers live in the tracker's memory: it
// truncates xbt_files_users and sets every torrent's Seeders and Leechers to 0. Unlike Ocelot
// it first copies every row of xbt_files_users into chihaya_baselines where it is newer than
// the baseline kept there (rows Ocelot, or a Chihaya before chihaya_baselines, wrote), so that
// switching from either loses no credit either; if the copy fails, nothing is truncated. A
// read-only Conn leaves the database alone and reads its baselines from the active rows of
// xbt_files_users.
//
// # Writing
//
// RecordAnnounce queues what an announce changed into in-memory buffers, merged per key, and
// never waits for the database. Every flush_interval a goroutine writes them (protocol.md
// §3.4–3.5) in one transaction, one multi-row statement per table (chunked by 1000 rows), in
// Ocelot's order:
//
//   - users: the credited upload and download, added to users_leech_stats (opsnet) or
//     users_main (whatcd);
//   - torrents: absolute Seeders and Leechers, Snatched plus the snatches, Balance plus
//     uploaded − downloaded − corrupt, and last_action = NOW() while there are seeders, into
//     torrents_leech_stats (opsnet) or torrents (whatcd). Ocelot writes Balance as the absolute
//     value it keeps in memory from 0 at each start; we add this process's deltas, so a restart
//     loses nothing. A torrent's row is written when an announce changed its swarm, counts or
//     balance, and at least hourly while it is announced, as Ocelot does; RecordReap writes the
//     counts the reaper changed. For whatcd, whose users_main and torrents refuse Ocelot's
//     INSERT … ON DUPLICATE KEY UPDATE under a strict sql_mode, users and torrents are written
//     with an equivalent multi-row UPDATE … JOIN (see Schema.writes);
//   - snatches: one xbt_snatched row per completed download (INSERT IGNORE for opsnet);
//   - peers: xbt_files_users, heavy rows (every column) when the peer changed and Ocelot's light
//     heartbeat rows otherwise (see Conn.RecordAnnounce for the rule). The ip column (and
//     xbt_snatched.IP) is the empty string for protected users and for IPv6 peers, which
//     Gazelle's varchar(15) cannot hold; then every peer's row of chihaya_baselines;
//   - tokens: users_freeleeches.Downloaded plus the download a freeleech token made free.
//
// # Nothing lost, nothing twice
//
// A batch that fails is kept, unchanged, and retried on later ticks with backoff (the flush
// interval doubling up to a minute); what arrives meanwhile merges into the next batch. Each
// batch carries a sequence number, unique across starts, and its transaction begins by
// inserting that number into chihaya_flushes (created at Open). If a COMMIT succeeded but its
// reply was lost, the retry's insert hits a duplicate key, which proves the batch is applied:
// it is dropped instead of being written twice. Markers older than a day are pruned once no
// batch is pending.
//
// The queue is bounded by queue_limit rows. When it is full, rows for keys already queued keep
// merging, and a row for a new key is refused: RecordAnnounce returns ErrQueueFull and the row
// is counted in chihaya_gazelle_dropped_total; the announce itself is unaffected. Peer rows,
// the most numerous and the least valuable (the next announce rewrites them), are refused from
// 90% on. The fill is logged when it passes 50%, 90% and 100%.
//
// A row the database refuses for its data (a foreign key to a deleted torrent, say) would
// otherwise block the queue forever: the statement is then written row by row and such rows
// are dropped, logged and counted. Each step of a flush (BEGIN, each statement, COMMIT) must
// answer within flush_timeout; a COMMIT that does not is abandoned, and its batch's marker tells
// the retry whether it was applied.
//
// Close stops accepting, flushes until the queue is empty or its context ends, and says how
// many rows it could not write.
//
// # Token expiry callback
//
// When a user completes a torrent on a freeleech token, the driver tells the site, like Ocelot
// (protocol.md §3.9): GET <site_url>/tools.php?key=<site_password>&type=expiretoken&
// action=ocelot&tokens=<uid>:<tid>,…, batched per flush tick (or sooner past 350 characters) and
// retried with backoff (1s doubling to a minute) until the site answers 200.
//
// # Metrics
//
// Conn.Collectors returns chihaya_gazelle_queue_rows{table}, chihaya_gazelle_flushed_rows_total
// {table}, chihaya_gazelle_flush_errors_total, chihaya_gazelle_dropped_total and
// chihaya_gazelle_callback_errors_total.
package gazelle
