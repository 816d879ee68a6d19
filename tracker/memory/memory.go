// Package memory is the "memory" tracker driver: swarms held in this process's memory, in maps
// sharded by info hash with one lock per shard, so that announces for different torrents rarely
// contend. Import it for its side effect of registering the driver:
//
//	import _ "github.com/chihaya/chihaya/tracker/memory"
//
// Its params are {"shards": N}, the number of shards (default 1024).
package memory

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

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
	Shards int `json:"shards"`
}

// New decodes params and opens a pool.
func (Driver) New(raw json.RawMessage) (tracker.Pool, error) {
	p := Params{Shards: DefaultShards}
	if len(bytes.TrimSpace(raw)) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("params: %w (known keys: \"shards\")", err)
		}
	}
	if p.Shards < 1 || p.Shards > MaxShards {
		return nil, fmt.Errorf("params: key \"shards\": must be between 1 and %d, got %d", MaxShards, p.Shards)
	}
	return NewPool(p.Shards), nil
}

// Pool is the memory driver's storage. It is its own tracker.Conn: the shards are shared and
// each carries its own lock, so a connection needs no state of its own.
type Pool struct {
	shards []shard
	site   site
}

// NewPool returns an empty pool with n shards (n ≥ 1).
func NewPool(n int) *Pool {
	p := &Pool{shards: make([]shard, n)}
	for i := range p.shards {
		p.shards[i].torrents = make(map[models.InfoHash]*torrent)
	}
	p.site.init()
	return p
}

type shard struct {
	mu       sync.RWMutex
	torrents map[models.InfoHash]*torrent
	// pad keeps two shards' locks off one cache line.
	_ [40]byte
}

// entry is one stored peer endpoint. It holds no pointers, so the garbage collector never scans
// the swarms.
type entry struct {
	id         models.PeerID
	addr       [16]byte
	port       uint16
	family     models.Family
	hidden     bool   // stored but never handed out
	seen       uint32 // unix seconds of the last announce
	user       uint32 // the site's user ID in private mode
	uploaded   int64
	downloaded int64
}

func (e *entry) addrPort() netip.AddrPort {
	var a netip.Addr
	if e.family == models.IPv4 {
		a = netip.AddrFrom4([4]byte(e.addr[:4]))
	} else {
		a = netip.AddrFrom16(e.addr)
	}
	return netip.AddrPortFrom(a, e.port)
}

func (e *entry) key() models.PeerKey {
	return models.PeerKey{ID: e.id, Family: e.family, User: e.user}
}

// torrent is one swarm: seeders and leechers in two dense slices, and an index from PeerKey to
// a position. A non-negative index i is leechers[i]; a negative one is seeders[-i-1].
type torrent struct {
	seeders  []entry
	leechers []entry
	index    map[models.PeerKey]int32
	snatches int

	// site is set for a torrent registered by the site (private mode); nil in public mode.
	site *siteTorrent
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
	t := s.torrents[ih]
	if t == nil {
		if !u.Create {
			return models.ErrTorrentNotFound
		}
		if u.Remove {
			// A stopped peer of an unknown torrent leaves nothing behind.
			res.Seeders, res.Leechers, res.Snatches = 0, 0, 0
			return nil
		}
		t = &torrent{index: make(map[models.PeerKey]int32, 1)}
		s.torrents[ih] = t
	}

	idx, found := t.index[u.Key]
	if found {
		e := t.at(idx)
		res.Prev = tracker.PrevPeer{
			Found:      true,
			Seeder:     idx < 0,
			Uploaded:   e.uploaded,
			Downloaded: e.downloaded,
			Time:       time.Unix(int64(e.seen), 0),
		}
	}
	if t.site != nil {
		t.site.announce(u, res)
	}

	switch {
	case u.Remove:
		if found {
			t.remove(idx)
		}
	default:
		e := entry{
			id:         u.Key.ID,
			port:       u.AddrPort.Port(),
			family:     u.Key.Family,
			hidden:     u.Hidden,
			seen:       uint32(u.Time.Unix()),
			user:       u.Key.User,
			uploaded:   u.Uploaded,
			downloaded: u.Downloaded,
		}
		e.addr = u.AddrPort.Addr().As16()
		if e.family == models.IPv4 {
			a4 := u.AddrPort.Addr().Unmap().As4()
			e.addr = [16]byte{}
			copy(e.addr[:4], a4[:])
		}
		if u.Completed && u.Seeder && !res.Prev.Seeder {
			t.snatches++
			res.Snatched = true
		}
		switch {
		case found && (idx < 0) == u.Seeder:
			*t.at(idx) = e
		case found:
			t.remove(idx)
			t.insert(e, u.Seeder)
		default:
			t.insert(e, u.Seeder)
		}
	}

	res.Seeders, res.Leechers, res.Snatches = len(t.seeders), len(t.leechers), t.snatches
	if sel.Want > 0 {
		t.selectPeers(u.Key, sel, res)
	}
	return nil
}

func (t *torrent) at(idx int32) *entry {
	if idx < 0 {
		return &t.seeders[-idx-1]
	}
	return &t.leechers[idx]
}

func (t *torrent) insert(e entry, seeder bool) {
	if seeder {
		t.seeders = append(t.seeders, e)
		t.index[e.key()] = -int32(len(t.seeders))
		return
	}
	t.leechers = append(t.leechers, e)
	t.index[e.key()] = int32(len(t.leechers) - 1)
}

// remove deletes the entry at idx by moving the last entry of its slice into its place.
func (t *torrent) remove(idx int32) {
	list, pos := &t.leechers, int(idx)
	if idx < 0 {
		list, pos = &t.seeders, int(-idx-1)
	}
	delete(t.index, (*list)[pos].key())
	last := len(*list) - 1
	if pos != last {
		(*list)[pos] = (*list)[last]
		t.index[(*list)[pos].key()] = idx
	}
	*list = (*list)[:last]
	if cap(*list) > 64 && len(*list) < cap(*list)/4 {
		*list = append([]entry(nil), *list...)
	}
}

// maxPreferScan bounds how many entries one announce inspects to find peers in the requester's
// own subnet, so that preferred_subnet never makes an announce O(swarm size) on huge swarms.
const maxPreferScan = 4096

// selectPeers appends up to sel.Want peers to res. Candidates are the leechers and, unless the
// requester seeds, the seeders. It takes a window of consecutive candidates from a random start,
// wrapping around, which hands every peer out equally often without copying or shuffling the
// swarm. With sel.Prefer set, peers inside that subnet go first.
func (t *torrent) selectPeers(self models.PeerKey, sel *tracker.Selection, res *tracker.AnnounceResult) {
	n := len(t.leechers)
	if !sel.Seeder {
		n += len(t.seeders)
	}
	if n == 0 {
		return
	}
	want := sel.Want
	start := 0
	if n > 1 {
		start = rand.IntN(n)
	}
	got, scanned := 0, 0
	if sel.Prefer.IsValid() {
		scanned = min(n, maxPreferScan)
		for i := 0; i < scanned && got < want; i++ {
			e := t.candidate((start + i) % n)
			if t.eligible(e, self, sel) && sel.Prefer.Contains(e.addrPort().Addr()) {
				got += appendPeer(e, res)
			}
		}
	}
	for i := 0; i < n && got < want; i++ {
		e := t.candidate((start + i) % n)
		if !t.eligible(e, self, sel) {
			continue
		}
		if i < scanned && sel.Prefer.Contains(e.addrPort().Addr()) {
			continue // handed out by the first pass
		}
		got += appendPeer(e, res)
	}
}

// candidate returns the i-th candidate: leechers first, then seeders.
func (t *torrent) candidate(i int) *entry {
	if i < len(t.leechers) {
		return &t.leechers[i]
	}
	return &t.seeders[i-len(t.leechers)]
}

func (t *torrent) eligible(e *entry, self models.PeerKey, sel *tracker.Selection) bool {
	if e.id == self.ID || e.hidden || (sel.SkipOwnUser && e.user == self.User) {
		return false // not itself in either family, not hidden, not its own user's
	}
	if e.family == models.IPv4 {
		return sel.IPv4
	}
	return sel.IPv6
}

func appendPeer(e *entry, res *tracker.AnnounceResult) int {
	p := models.Peer{ID: e.id, AddrPort: e.addrPort()}
	if e.family == models.IPv4 {
		res.IPv4Peers = append(res.IPv4Peers, p)
	} else {
		res.IPv6Peers = append(res.IPv6Peers, p)
	}
	return 1
}

// Scrape implements tracker.Conn.
func (p *Pool) Scrape(_ context.Context, files []models.TorrentStats) error {
	for i := range files {
		f := &files[i]
		s := p.shardFor(f.InfoHash)
		s.mu.RLock()
		if t := s.torrents[f.InfoHash]; t != nil {
			f.Seeders, f.Leechers, f.Snatches, f.Registered = len(t.seeders), len(t.leechers), t.snatches, true
			if t.site != nil {
				f.ID = t.site.id
			}
		} else {
			f.Seeders, f.Leechers, f.Snatches, f.Registered = 0, 0, 0, false
		}
		s.mu.RUnlock()
	}
	return nil
}

// Reap implements tracker.Conn. It locks one shard at a time.
func (p *Pool) Reap(ctx context.Context, cutoff time.Time, purgeEmpty bool) (tracker.ReapResult, error) {
	var r tracker.ReapResult
	limit := cutoff.Unix()
	for i := range p.shards {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		s := &p.shards[i]
		s.mu.Lock()
		for ih, t := range s.torrents {
			n := t.reap(limit)
			r.Peers += n
			if t.site != nil {
				// The site's torrents stay registered however empty; the site is told their
				// new counts.
				if n > 0 {
					r.Changed = append(r.Changed, models.TorrentStats{
						InfoHash: ih, ID: t.site.id, Seeders: len(t.seeders), Leechers: len(t.leechers),
						Snatches: t.snatches, Registered: true,
					})
				}
				continue
			}
			if purgeEmpty && len(t.seeders) == 0 && len(t.leechers) == 0 {
				delete(s.torrents, ih)
				r.Torrents++
			}
		}
		s.mu.Unlock()
	}
	return r, nil
}

func (t *torrent) reap(limit int64) int {
	n := 0
	for i := len(t.seeders) - 1; i >= 0; i-- {
		if int64(t.seeders[i].seen) < limit {
			t.remove(-int32(i) - 1)
			n++
		}
	}
	for i := len(t.leechers) - 1; i >= 0; i-- {
		if int64(t.leechers[i].seen) < limit {
			t.remove(int32(i))
			n++
		}
	}
	return n
}
