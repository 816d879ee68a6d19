// Package memory is the "memory" tracker driver: swarms held in this process's memory, in
// shards by info hash with one lock per shard, so that announces for different torrents rarely
// contend. A shard keeps its torrents in one slab, found through its own open-addressing index
// (table.go). A swarm is one pointer-free block of 32-byte entries (swarm.go), followed by side
// arrays that only swarms with such peers get (users in private mode, the rest of IPv6
// addresses, non-zero session counters), so that a public IPv4 peer costs little more than its
// entry. Import it for its side effect of registering the driver:
//
//	import _ "github.com/chihaya/chihaya/tracker/memory"
//
// Its params are {"shards": N, "max_torrents": T, "max_peers": P, "snapshot_path": F,
// "snapshot_interval": D}: the number of shards (default 1024), and the most torrents and peers
// announces may create (0, the default: no limit). Past a limit an announce that would add a
// torrent or a peer is refused with models.ErrTorrentLimit or models.ErrPeerLimit; swarms and
// peers already there go on as before. With snapshot_path set, the swarms are written to that
// file every snapshot_interval (default 5m) and at shutdown, and read back at start
// (snapshot.go).
package memory

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// DefaultShards is the number of shards when params do not say.
const DefaultShards = 1024

// MaxShards bounds the shard count a config may ask for.
const MaxShards = 1 << 20

func init() {
	tracker.Register("memory", Driver{})
}

// Driver opens memory pools.
type Driver struct{}

// Params is the "params" section of the memory driver's config.
type Params struct {
	Shards      int   `json:"shards"`
	MaxTorrents int64 `json:"max_torrents"`
	MaxPeers    int64 `json:"max_peers"`
	// SnapshotPath is the file the swarms are saved to and restored from; empty: none.
	SnapshotPath string `json:"snapshot_path"`
	// SnapshotInterval is how often a snapshot is written while serving.
	SnapshotInterval config.Duration `json:"snapshot_interval"`
}

// DefaultSnapshotInterval is how often a snapshot is written when params do not say.
const DefaultSnapshotInterval = 5 * time.Minute

// New decodes params and opens a pool.
func (Driver) New(raw json.RawMessage) (tracker.Pool, error) {
	p := Params{Shards: DefaultShards, SnapshotInterval: config.Duration{Duration: DefaultSnapshotInterval}}
	if err := config.DecodeParams(raw, &p); err != nil {
		return nil, err
	}
	if p.Shards < 1 || p.Shards > MaxShards {
		return nil, fmt.Errorf("params: key \"shards\": must be between 1 and %d, got %d", MaxShards, p.Shards)
	}
	if p.MaxTorrents < 0 {
		return nil, fmt.Errorf("params: key \"max_torrents\": must be 0 (no limit) or more, got %d", p.MaxTorrents)
	}
	if p.MaxPeers < 0 {
		return nil, fmt.Errorf("params: key \"max_peers\": must be 0 (no limit) or more, got %d", p.MaxPeers)
	}
	if p.SnapshotPath != "" && p.SnapshotInterval.Duration < time.Second {
		return nil, fmt.Errorf("params: key \"snapshot_interval\": must be at least 1s, got %s", p.SnapshotInterval.Duration)
	}
	pool := NewPool(p.Shards)
	pool.SetLimits(p.MaxTorrents, p.MaxPeers)
	pool.SetSnapshot(p.SnapshotPath, p.SnapshotInterval.Duration)
	return pool, nil
}

// SetLimits makes the pool refuse announces that would create a torrent past maxTorrents or
// add a peer past maxPeers (0: no limit). Call it before the pool serves.
func (p *Pool) SetLimits(maxTorrents, maxPeers int64) {
	var u *usage
	if maxTorrents > 0 || maxPeers > 0 {
		u = &usage{maxTorrents: maxTorrents, maxPeers: maxPeers}
	}
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		if u != nil {
			u.torrents.Add(int64(s.n))
			for ti := range s.recs {
				if s.recs[ti].used {
					u.peers.Add(int64(s.recs[ti].n))
				}
			}
		}
		s.usage = u
		s.mu.Unlock()
	}
}

// Pool is the memory driver's storage. It is its own tracker.Conn: the shards are shared and
// each carries its own lock, so a connection needs no state of its own.
type Pool struct {
	shards []shard
	site   site
	snap   snapshotState
	// ids keys the peers of every swarm. Restore may replace it before the pool serves.
	ids idHasher
}

// NewPool returns an empty pool with n shards (n ≥ 1).
func NewPool(n int) *Pool {
	p := &Pool{shards: make([]shard, n), ids: poolIDs()}
	p.site.init()
	p.snap.init()
	return p
}

type shard struct {
	mu sync.RWMutex
	table
	// newest is the time of the latest announce stored (unix seconds), against which the
	// reaper and snapshots read the entries' stamps: every entry was stored at it or before.
	newest int64
	// pad keeps two shards' locks off one cache line.
	_ [64]byte
}

func (p *Pool) shardFor(ih models.InfoHash) *shard {
	// Info hashes are SHA-1 or SHA-256 output, so any four bytes are uniform.
	return &p.shards[binary.BigEndian.Uint32(ih[:4])%uint32(len(p.shards))]
}

// Get returns the pool itself.
func (p *Pool) Get() (tracker.Conn, error) { return p, nil }

// Close gives the connection back; for the memory driver it does nothing.
func (p *Pool) Close() error { return nil }

// Announce implements tracker.Conn.
func (p *Pool) Announce(_ context.Context, ih models.InfoHash, u *tracker.PeerUpdate, sel *tracker.Selection, res *tracker.AnnounceResult) error {
	s := p.shardFor(ih)
	s.mu.Lock()
	defer s.mu.Unlock()

	res.Prev = tracker.PrevPeer{}
	res.Snatched, res.TorrentID, res.Freeleech, res.Token = false, 0, models.Normal, false
	res.NoPeerIDs = true
	t := s.get(ih)
	if t == nil {
		if !u.Create {
			return models.ErrTorrentNotFound
		}
		if u.Remove {
			// A stopped peer of an unknown torrent leaves nothing behind.
			res.Seeders, res.Leechers, res.Snatches = 0, 0, 0
			return nil
		}
		if err := s.usage.admit(true); err != nil {
			return err
		}
		var err error
		if t, err = s.add(ih); err != nil {
			return announceErr(ih, err)
		}
	}

	k := p.ids.key(u.Key)
	now := u.Time.Unix()
	s.newest = max(s.newest, now)
	i := t.find(k)
	if i < 0 && !u.Remove {
		if int(t.n) >= maxSwarm {
			return announceErr(ih, errSwarmFull)
		}
		if err := s.usage.admit(false); err != nil {
			return err
		}
	}
	if i >= 0 {
		up, down := t.counters(i)
		res.Prev = tracker.PrevPeer{
			Found:      true,
			Seeder:     i < t.seeders(),
			Uploaded:   up,
			Downloaded: down,
			Time:       time.Unix(t.ents()[i].seen.at(now), 0),
		}
	}
	if t.x != nil && t.x.site != nil {
		t.x.site.announce(u, res)
	}

	switch {
	case u.Remove:
		if i >= 0 {
			t.remove(i)
			s.usage.addPeers(-1)
		}
	default:
		var pe pending
		pe.key = k
		if u.Counters {
			// Only kept when asked: without a consumer of deltas they are bytes for nothing.
			pe.up, pe.down = u.Uploaded, u.Downloaded
		}
		pe.e.id, pe.e.port, pe.e.seen = k.id, u.AddrPort.Port(), stampOf(now)
		var flags uint8
		if u.Hidden {
			flags |= flagHidden
		}
		a := u.AddrPort.Addr()
		if !k.v6 {
			pe.e.addr = a.Unmap().As4()
		} else {
			a16 := a.As16()
			flags |= flagIPv6
			copy(pe.hi6[:], a16[:12])
			copy(pe.e.addr[:], a16[12:])
		}
		pe.e.flags = flags
		if u.Completed && u.Seeder && !res.Prev.Seeder {
			t.snatches++
			res.Snatched = true
		}
		switch {
		case i >= 0 && (i < t.seeders()) == u.Seeder:
			if t.ents()[i].flags&flagBig != 0 {
				delete(t.x.big, k)
			}
			t.set(i, &pe)
		case i >= 0:
			t.remove(i)
			t.insert(&pe, u.Seeder)
		default:
			t.insert(&pe, u.Seeder)
			s.usage.addPeers(1)
		}
	}

	res.Seeders, res.Leechers, res.Snatches = t.seeders(), t.leechers(), int(t.snatches)
	if sel.Want > 0 {
		t.selectPeers(k, sel, res)
	}
	return nil
}

// maxPreferScan bounds how many entries one announce inspects to find peers in the requester's
// own subnet, so that preferred_subnet never makes an announce O(swarm size) on huge swarms.
const maxPreferScan = 4096

// selectPeers appends up to sel.Want peers to res. Candidates are the leechers and, unless the
// requester seeds, the seeders. It takes a window of consecutive candidates from a random start,
// wrapping around, which hands every peer out equally often without copying or shuffling the
// swarm. With sel.Prefer set, peers inside that subnet go first.
func (t *torrent) selectPeers(self swarmKey, sel *tracker.Selection, res *tracker.AnnounceResult) {
	lo := 0
	if sel.Seeder {
		lo = t.seeders()
	}
	n := int(t.n) - lo
	if n <= 0 {
		return
	}
	v := view{ents: t.ents(), hi6: t.hi6(), users: t.users(), self: self, sel: sel}
	want := sel.Want
	start := 0
	if n > 1 {
		start = rand.IntN(n)
	}
	got, scanned := 0, 0
	if sel.Prefer.IsValid() {
		scanned = min(n, maxPreferScan)
		for k := 0; k < scanned && got < want; k++ {
			i := lo + (start+k)%n
			if v.eligible(i) && sel.Prefer.Contains(v.addrPort(i).Addr()) {
				v.appendPeer(i, res)
				got++
			}
		}
	}
	for k := 0; k < n && got < want; k++ {
		i := lo + (start+k)%n
		if !v.eligible(i) {
			continue
		}
		if k < scanned && sel.Prefer.Contains(v.addrPort(i).Addr()) {
			continue // handed out by the first pass
		}
		v.appendPeer(i, res)
		got++
	}
}

// view is a torrent's arrays as one selection reads them, taken from the block once.
type view struct {
	ents  []entry
	hi6   [][12]byte
	users []uint32
	self  swarmKey
	sel   *tracker.Selection
}

func (v *view) eligible(i int) bool {
	e := &v.ents[i]
	if e.id == v.self.id || e.flags&flagHidden != 0 {
		return false // not itself in either family, not hidden
	}
	if v.sel.SkipOwnUser {
		var u uint32
		if v.users != nil {
			u = v.users[i]
		}
		if u == v.self.user {
			return false // not its own user's
		}
	}
	if e.flags&flagIPv6 == 0 {
		return v.sel.IPv4
	}
	return v.sel.IPv6
}

func (v *view) addrPort(i int) netip.AddrPort {
	e := &v.ents[i]
	if e.flags&flagIPv6 == 0 {
		return netip.AddrPortFrom(netip.AddrFrom4(e.addr), e.port)
	}
	return v.addrPort6(i)
}

func (v *view) addrPort6(i int) netip.AddrPort {
	var a [16]byte
	copy(a[:12], v.hi6[i][:])
	copy(a[12:], v.ents[i].addr[:])
	return netip.AddrPortFrom(netip.AddrFrom16(a), v.ents[i].port)
}

func (v *view) appendPeer(i int, res *tracker.AnnounceResult) {
	e := &v.ents[i]
	if e.flags&flagIPv6 == 0 {
		res.IPv4Peers = append(res.IPv4Peers, models.Peer{AddrPort: netip.AddrPortFrom(netip.AddrFrom4(e.addr), e.port)})
	} else {
		res.IPv6Peers = append(res.IPv6Peers, models.Peer{AddrPort: v.addrPort6(i)})
	}
}

// Scrape implements tracker.Conn.
func (p *Pool) Scrape(_ context.Context, files []models.TorrentStats) error {
	for i := range files {
		f := &files[i]
		s := p.shardFor(f.InfoHash)
		s.mu.RLock()
		if t := s.get(f.InfoHash); t != nil {
			f.Seeders, f.Leechers, f.Snatches, f.Registered = t.seeders(), t.leechers(), int(t.snatches), true
			if t.x != nil && t.x.site != nil {
				f.ID = t.x.site.id
			}
		} else {
			f.Seeders, f.Leechers, f.Snatches, f.Registered = 0, 0, 0, false
		}
		s.mu.RUnlock()
	}
	return nil
}

// reapBatch is about how many entries a reaping pass inspects before it lets go of a shard's
// lock for a moment, so that announces to the shard wait for one batch, not for a whole shard.
const reapBatch = 8192

// announceErr wraps an announce's error. It takes ih by value, so that Announce's own copy does
// not escape to the heap on the way that does not fail.
func announceErr(ih models.InfoHash, err error) error {
	return fmt.Errorf("memory: announce %x: %w", ih[:], err)
}

// Reap implements tracker.Conn. It locks one shard at a time, and lets go of it between
// batches of reapBatch entries.
func (p *Pool) Reap(ctx context.Context, cutoff time.Time, purgeEmpty bool) (tracker.ReapResult, error) {
	var r tracker.ReapResult
	limit := cutoff.Unix()
	for i := range p.shards {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		s := &p.shards[i]
		s.mu.Lock()
		work := 0
		// Places, unlike a map's order, stay put while the lock is let go: a torrent added
		// meanwhile may be skipped until the next pass, none is visited twice.
		for ti := 0; ti < len(s.recs); ti++ {
			if work >= reapBatch {
				s.mu.Unlock()
				work = 0
				s.mu.Lock()
				if ti >= len(s.recs) {
					break
				}
			}
			if !s.recs[ti].used {
				continue
			}
			t := &s.recs[ti]
			ih := t.ih
			work += int(t.n) + 1
			n := t.reap(s.newest, limit)
			r.Peers += n
			s.usage.addPeers(-n)
			if t.x != nil && t.x.site != nil {
				// The site's torrents stay registered however empty; the site is told their
				// new counts.
				if n > 0 {
					r.Changed = append(r.Changed, models.TorrentStats{
						InfoHash: ih, ID: t.x.site.id, Seeders: t.seeders(), Leechers: t.leechers(),
						Snatches: int(t.snatches), Registered: true,
					})
				}
				continue
			}
			if purgeEmpty && t.n == 0 {
				s.drop(ih)
				r.Torrents++
			}
		}
		s.mu.Unlock()
	}
	return r, nil
}

// reap removes the entries last seen before limit, reading their stamps against ref, the
// shard's latest announce.
func (t *torrent) reap(ref, limit int64) int {
	n := 0
	// Going down, every entry that remove moves into place i was already kept; t.ents() is
	// read again each time because remove may reallocate the entries.
	for i := int(t.n) - 1; i >= 0; i-- {
		if t.ents()[i].seen.at(ref) < limit {
			t.remove(i)
			n++
		}
	}
	if n > 0 {
		t.fit()
	}
	return n
}
