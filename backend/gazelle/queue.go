package gazelle

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"net/netip"
	"time"

	"github.com/chihaya/chihaya/tracker/models"
)

// table names one buffer of queued rows: a label value of the queue metrics and the order in
// which a batch is written (protocol.md §3.5: users, torrents, snatches, peers, tokens).
type table uint8

const (
	tableUsers table = iota
	tableTorrents
	tableSnatches
	tablePeers
	tableTokens
	numTables
)

// tableExpire labels the token expiries waiting for the site's callback in the metrics. They
// are not database rows and have their own bound.
const tableExpire = numTables

var tableNames = [...]string{"users", "torrents", "snatches", "peers", "tokens", "expiretoken"}

func (t table) String() string { return tableNames[t] }

// userRow is a user's credited transfer, additive.
type userRow struct {
	up, down int64
}

// torrentRow is a torrent's swarm counts (absolute, the latest wins) and its snatches and
// balance since the last flush (additive).
type torrentRow struct {
	seeders, leechers int64
	snatched          int64
	balance           int64
}

// peerKey is xbt_files_users' primary key.
type peerKey struct {
	uid, tid uint64
	peerID   models.PeerID
}

// peerRow is one xbt_files_users row, heavy (every column) or light (Ocelot's heartbeat:
// timespent, announced and mtime only), and the peer's chihaya_baselines row, which every row
// writes in full: uploaded, downloaded and corrupt (set in light rows too), firstSeen, lastSeen
// and announced. Values are already clamped to the columns' ranges.
type peerRow struct {
	heavy      bool
	active     bool
	uploaded   int64
	downloaded int64
	upspeed    int64
	downspeed  int64
	remaining  int64
	corrupt    int64
	timespent  int64
	announced  int64
	// ip is written as its text; the zero Addr writes '' (protected users, IPv6).
	ip        netip.Addr
	useragent string
	mtime     int64
	// firstSeen and lastSeen are the session's start and this announce, in unix seconds.
	firstSeen, lastSeen int64
}

// mergePeer folds a newer row for the same peer into an older one. A heavy row replaces
// whatever was queued; a light row after a heavy one keeps the heavy row's columns and takes
// the heartbeat's (and its zero speeds, as Ocelot's light row sets them). The baseline's
// columns are always the newer row's.
func mergePeer(old, next peerRow) peerRow {
	if next.heavy || !old.heavy {
		return next
	}
	old.timespent, old.announced, old.mtime = next.timespent, next.announced, next.mtime
	old.upspeed, old.downspeed = 0, 0
	// A light row's counters are the heavy row's (it is light because they did not change),
	// but the baseline is the latest announce's whatever the rule.
	old.uploaded, old.downloaded, old.corrupt = next.uploaded, next.downloaded, next.corrupt
	old.firstSeen, old.lastSeen = next.firstSeen, next.lastSeen
	return old
}

// snatchRow is one xbt_snatched row.
type snatchRow struct {
	uid, tid uint64
	tstamp   int64
	ip       netip.Addr
}

// tokenKey is users_freeleeches' primary key, and a token expiry for the site's callback.
type tokenKey struct {
	uid, tid uint64
}

// buffers are the rows queued for one batch, merged per key where the semantics allow.
type buffers struct {
	users    map[uint64]userRow
	torrents map[uint64]torrentRow
	peers    map[peerKey]peerRow
	snatches []snatchRow
	tokens   map[tokenKey]int64
}

func newBuffers() *buffers {
	return &buffers{
		users:    make(map[uint64]userRow),
		torrents: make(map[uint64]torrentRow),
		peers:    make(map[peerKey]peerRow),
		tokens:   make(map[tokenKey]int64),
	}
}

// count returns the rows queued in t.
func (b *buffers) count(t table) int {
	switch t {
	case tableUsers:
		return len(b.users)
	case tableTorrents:
		return len(b.torrents)
	case tableSnatches:
		return len(b.snatches)
	case tablePeers:
		return len(b.peers)
	case tableTokens:
		return len(b.tokens)
	}
	return 0
}

// rows returns the rows queued in every table.
func (b *buffers) rows() int {
	return len(b.users) + len(b.torrents) + len(b.snatches) + len(b.peers) + len(b.tokens)
}

// reuseLimit is the size up to which a written batch's maps are cleared and reused; larger ones
// (left by an outage) are left to the garbage collector rather than kept at their peak size.
const reuseLimit = 4096

// reset empties b for reuse, or reports false when it is too big to be worth keeping.
func (b *buffers) reset() bool {
	if b.rows() > reuseLimit || cap(b.snatches) > reuseLimit {
		return false
	}
	clear(b.users)
	clear(b.torrents)
	clear(b.peers)
	clear(b.tokens)
	b.snatches = b.snatches[:0]
	return true
}

// generations is a map whose entries are forgotten when they have not been touched for one to
// two rotations: the driver's memory of peers and torrents it has written, which must not grow
// with peers that left without a stopped event (reaped) or torrents that were deleted.
type generations[K comparable, V any] struct {
	cur, prev map[K]V
}

func newGenerations[K comparable, V any]() generations[K, V] {
	return generations[K, V]{cur: make(map[K]V), prev: make(map[K]V)}
}

func (g *generations[K, V]) get(k K) (V, bool) {
	if v, ok := g.cur[k]; ok {
		return v, true
	}
	v, ok := g.prev[k]
	return v, ok
}

func (g *generations[K, V]) put(k K, v V) {
	g.cur[k] = v
	delete(g.prev, k)
}

func (g *generations[K, V]) remove(k K) {
	delete(g.cur, k)
	delete(g.prev, k)
}

func (g *generations[K, V]) rotate() {
	g.prev = g.cur
	g.cur = make(map[K]V, len(g.prev))
}

func (g *generations[K, V]) len() int { return len(g.cur) + len(g.prev) }

// memoGeneration is how often the memories rotate: a peer or torrent not announced for one to
// two of these is forgotten, and its next row is written in full.
const memoGeneration = time.Hour

// torrentRefresh is how often a torrent that is announced is written even when nothing changed
// (Ocelot's last_flushed + 3600), which keeps last_action fresh while it has seeders.
const torrentRefresh = time.Hour

// torrentMemo is what was last queued for a torrent.
type torrentMemo struct {
	seeders, leechers int64
	at                int64 // unix seconds
}

// peerState fingerprints the columns of a peer that a light row would leave stale: its session
// totals and what it has left.
func peerState(seed maphash.Seed, d *models.AnnounceDelta) uint64 {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(d.Left))
	binary.LittleEndian.PutUint64(b[8:], uint64(d.Uploaded))
	binary.LittleEndian.PutUint64(b[16:], uint64(d.Downloaded))
	binary.LittleEndian.PutUint64(b[24:], uint64(d.Corrupt))
	return maphash.Bytes(seed, b[:])
}

// peerHash condenses a peer's key to 64 bits for the memory of written peers, which holds one
// entry per live peer and so is kept small. A collision could only make a changed peer's row
// light if its state fingerprint collided as well.
func peerHash(seed maphash.Seed, k *peerKey) uint64 {
	var b [36]byte
	binary.LittleEndian.PutUint64(b[0:], k.uid)
	binary.LittleEndian.PutUint64(b[8:], k.tid)
	copy(b[16:], k.peerID[:])
	return maphash.Bytes(seed, b[:])
}

// heavyPeer reports whether an announce changed its peer's xbt_files_users row beyond the
// heartbeat columns, so that it must be written in full (Ocelot's peer_changed): the peer was
// created or removed, the event was not a regular announce, a delta is non-zero, or its left or
// its session totals differ from the last row queued for it (which catches a client that
// restarted its counters without a started event). A peer this Conn has not queued a row for
// since it started (or for an hour or two) is always heavy.
func heavyPeer(d *models.AnnounceDelta, known bool, lastState, state uint64) bool {
	return d.Created || d.Removed || d.Event != models.None ||
		d.UploadedDelta != 0 || d.DownloadedDelta != 0 || d.CorruptDelta != 0 ||
		!known || lastState != state
}

// torrentChanged reports whether an announce must write its torrent's row (Ocelot's
// update_torrent, plus any change of the counts): the swarm or the balance changed, or the row
// was not written for torrentRefresh.
func torrentChanged(d *models.AnnounceDelta, known bool, last torrentMemo, now int64) bool {
	return d.Created || d.Removed || d.Snatched || d.Event == models.Started ||
		d.UploadedDelta != 0 || d.DownloadedDelta != 0 || d.CorruptDelta != 0 ||
		!known || last.seeders != int64(d.Seeders) || last.leechers != int64(d.Leechers) ||
		now-last.at >= int64(torrentRefresh/time.Second)
}

// Column ranges of Gazelle's schema: values are clamped to them so that one odd announce can
// never fail a batch under a strict sql_mode.
const (
	maxUint32 = math.MaxUint32 // int(10) unsigned: upspeed, downspeed, timespent
	maxInt32  = math.MaxInt32  // int(11): announced, mtime, tstamp
)

func clamp(v, lo, hi int64) int64 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// recordIP returns the address to write to xbt_files_users.ip and xbt_snatched.IP; the zero
// Addr writes the empty string. That is what a protected user gets (Ocelot's rule), and an
// IPv6 peer too: Gazelle's columns are varchar(15), where an IPv6 address fails a strict insert
// (and would poison its batch) or is cut short, and Ocelot is IPv4-only; we leave Gazelle's
// schema alone rather than widen it. An IPv4-mapped address is written as IPv4.
func recordIP(d *models.AnnounceDelta) netip.Addr {
	if d.Protected {
		return netip.Addr{}
	}
	a := d.Endpoint.Addr().Unmap()
	if !a.Is4() {
		return netip.Addr{}
	}
	return a
}

// maxUserAgent is the width of xbt_files_users.useragent, varchar(51).
const maxUserAgent = 51

// cleanUserAgent reports whether ua can be written as it is: printable ASCII and no longer than
// the column.
func cleanUserAgent(ua string) bool {
	if len(ua) > maxUserAgent {
		return false
	}
	for i := 0; i < len(ua); i++ {
		if ua[i] < 0x20 || ua[i] > 0x7e {
			return false
		}
	}
	return true
}

// sanitizeUserAgent writes into buf what is stored of ua: its first 51 bytes, with every byte
// that is not printable ASCII replaced by '?'. Clients send anything in User-Agent; printable
// ASCII fits the column whatever its character set and never fails a strict insert.
func sanitizeUserAgent(buf *[maxUserAgent]byte, ua string) []byte {
	n := copy(buf[:], ua)
	for i := 0; i < n; i++ {
		if buf[i] < 0x20 || buf[i] > 0x7e {
			buf[i] = '?'
		}
	}
	return buf[:n]
}

// maxAgents bounds the interned user agents; past it the table starts over.
const maxAgents = 4096

// internAgent returns the stored form of ua from c.agents, adding it when it is new, so that
// queuing a peer row allocates nothing once the clients in use have been seen. c.mu is held.
func (c *Conn) internAgent(ua string) string {
	if cleanUserAgent(ua) {
		if s, ok := c.agents[ua]; ok {
			return s
		}
		if len(c.agents) >= maxAgents {
			clear(c.agents)
		}
		s := string([]byte(ua)) // ua may alias the caller's buffer
		c.agents[s] = s
		return s
	}
	var buf [maxUserAgent]byte
	b := sanitizeUserAgent(&buf, ua)
	if s, ok := c.agents[string(b)]; ok {
		return s
	}
	if len(c.agents) >= maxAgents {
		clear(c.agents)
	}
	s := string(b)
	c.agents[s] = s
	return s
}

// room reports whether one more row for a new key fits in the queue. Peer rows yield first:
// they may fill only peerShare of it, which keeps the rest for the rows whose loss would lose
// credit (users, tokens) or counts (torrents, snatches). Ocelot likewise bounds only its peer
// queue. c.mu is held.
func (c *Conn) room(t table) bool {
	if t == tablePeers {
		return c.pending < c.peerLimit
	}
	return c.pending < c.params.QueueLimit
}

// peerShare is the share of the queue that peer rows may fill.
const peerShare = 0.9

// queue merges the rows one private-mode announce produces into the open buffers. hk and
// state are the peer's peerHash and peerState, computed before c.mu was taken. It returns the
// number of rows refused because the queue is full. c.mu is held.
func (c *Conn) queue(d *models.AnnounceDelta, now time.Time, hk, state uint64) (refused int) {
	b := c.open
	unix := now.Unix()

	// users: credited deltas, additive.
	if d.CreditedUp != 0 || d.CreditedDown != 0 {
		r, ok := b.users[d.UserID]
		if ok || c.room(tableUsers) {
			if !ok {
				c.pending++
			}
			r.up += max(d.CreditedUp, 0)
			r.down += max(d.CreditedDown, 0)
			b.users[d.UserID] = r
		} else {
			refused++
		}
	}

	// torrents: absolute counts, additive snatches and balance.
	last, known := c.torrentMemo.get(d.TorrentID)
	if torrentChanged(d, known, last, unix) {
		r, ok := b.torrents[d.TorrentID]
		if ok || c.room(tableTorrents) {
			if !ok {
				c.pending++
			}
			r.seeders = max(int64(d.Seeders), 0)
			r.leechers = max(int64(d.Leechers), 0)
			if d.Snatched {
				r.snatched++
			}
			r.balance += d.UploadedDelta - d.DownloadedDelta - d.CorruptDelta
			b.torrents[d.TorrentID] = r
			c.torrentMemo.put(d.TorrentID, torrentMemo{seeders: r.seeders, leechers: r.leechers, at: unix})
		} else {
			refused++
			// Forget it, so that the next announce tries again whatever it changes.
			c.torrentMemo.remove(d.TorrentID)
		}
	}

	// snatches: one row each.
	if d.Snatched {
		if c.room(tableSnatches) {
			c.pending++
			b.snatches = append(b.snatches, snatchRow{uid: d.UserID, tid: d.TorrentID, tstamp: clamp(unix, 0, maxInt32), ip: recordIP(d)})
		} else {
			refused++
		}
	}

	// peers: heavy or light, the latest state wins.
	key := peerKey{uid: d.UserID, tid: d.TorrentID, peerID: d.PeerID}
	lastState, seen := c.peerMemo.get(hk)
	row := peerRow{
		uploaded:   max(d.Uploaded, 0),
		downloaded: max(d.Downloaded, 0),
		corrupt:    max(d.Corrupt, 0),
		timespent:  clamp(int64(now.Sub(d.FirstSeen)/time.Second), 0, maxUint32),
		announced:  clamp(int64(d.Announces), 0, maxInt32),
		mtime:      clamp(unix, 0, maxInt32),
		firstSeen:  d.FirstSeen.Unix(),
		lastSeen:   unix,
	}
	if d.FirstSeen.IsZero() {
		row.timespent, row.firstSeen = 0, unix
	}
	if heavyPeer(d, seen, lastState, state) {
		row.heavy = true
		row.active = !d.Removed
		row.upspeed = clamp(d.UpSpeed, 0, maxUint32)
		row.downspeed = clamp(d.DownSpeed, 0, maxUint32)
		row.remaining = max(d.Left, 0)
		row.ip = recordIP(d)
		row.useragent = c.internAgent(d.UserAgent)
	}
	accepted := true
	if old, ok := b.peers[key]; ok {
		b.peers[key] = mergePeer(old, row)
	} else if c.room(tablePeers) {
		c.pending++
		b.peers[key] = row
	} else {
		refused++
		accepted = false
	}
	if d.Removed || !accepted {
		// A peer that left is forgotten; one whose row was refused is written in full next.
		c.peerMemo.remove(hk)
	} else {
		c.peerMemo.put(hk, state)
	}

	// tokens: download a freeleech token made free, additive.
	if d.Token && d.TokenDown > 0 {
		k := tokenKey{uid: d.UserID, tid: d.TorrentID}
		v, ok := b.tokens[k]
		if ok || c.room(tableTokens) {
			if !ok {
				c.pending++
			}
			b.tokens[k] = v + d.TokenDown
		} else {
			refused++
		}
	}
	return refused
}

// queueReap merges a reaper's counts into the open torrent rows. c.mu is held.
func (c *Conn) queueReap(ts *models.TorrentStats, now int64) (refused int) {
	r, ok := c.open.torrents[ts.ID]
	if !ok && !c.room(tableTorrents) {
		c.torrentMemo.remove(ts.ID)
		return 1
	}
	if !ok {
		c.pending++
	}
	r.seeders = max(int64(ts.Seeders), 0)
	r.leechers = max(int64(ts.Leechers), 0)
	c.open.torrents[ts.ID] = r
	c.torrentMemo.put(ts.ID, torrentMemo{seeders: r.seeders, leechers: r.leechers, at: now})
	return 0
}
