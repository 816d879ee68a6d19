package tracker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// Driver opens pools of connections to one kind of swarm storage. A driver registers itself
// with Register from its package's init, in the manner of database/sql.
type Driver interface {
	// New validates params (the driver's own section of the config, possibly empty) and opens a
	// pool. An error names the offending key.
	New(params json.RawMessage) (Pool, error)
}

// Pool hands out connections to swarm storage. It is safe for concurrent use.
type Pool interface {
	// Get returns a connection; the caller gives it back with Conn.Close. Get must not allocate
	// once warm, since the core calls it for every request.
	Get() (Conn, error)
	// Close releases the storage. No Conn may be used after it.
	Close() error
}

// PeerUpdate says what an announce does to the announcing peer's entry. The core derives it from
// the announce's event and the peer's state; a driver applies it exactly.
type PeerUpdate struct {
	Key      models.PeerKey
	AddrPort netip.AddrPort
	// Remove deletes the entry (event stopped) instead of storing it.
	Remove bool
	// Seeder stores the peer as a seeder (left = 0), otherwise as a leecher.
	Seeder bool
	// Completed, together with Seeder, counts one snatch on the torrent unless the stored entry
	// was already a seeder. A completed event from a peer that still has bytes left counts none.
	Completed bool
	// Create allows the torrent to be created when it is unknown; without it an unknown torrent
	// is ErrTorrentNotFound (private mode).
	Create bool
	// Hidden stores the peer without handing it out to others (a leecher whose user may not
	// leech).
	Hidden bool
	// Counters asks the driver to keep Uploaded, Downloaded and Corrupt so that the peer's next
	// announce finds them in PrevPeer. Without it a driver may keep none and report zeros: the
	// core leaves it unset when nothing consumes the deltas they feed (a public tracker with the
	// noop backend), which saves the memory driver a third of its bytes per peer.
	Counters bool
	// Secondary marks the update of an announce's second endpoint (the other address family
	// of a dual-stacked client), which the core applies before the main one: the peer's
	// session takes its counters but does not count the announce, which the main update
	// counts once.
	Secondary  bool
	Uploaded   int64
	Downloaded int64
	Corrupt    int64
	Time       time.Time
}

// Selection says which peers an announce wants back.
type Selection struct {
	// Want is the most peers to return, over both families together.
	Want int
	// Seeder is true when the requester is a seeder: it is then handed leechers only.
	Seeder bool
	// IPv4 and IPv6 say which families to hand out.
	IPv4, IPv6 bool
	// Prefer, when valid, is the requester's own subnet: peers inside it are handed out first.
	Prefer netip.Prefix
	// SkipOwnUser hands out no peer of the requester's own user (private mode).
	SkipOwnUser bool
}

// PrevPeer is the announcing peer's entry as it was before the update.
type PrevPeer struct {
	// Found is true when the peer was in the swarm.
	Found bool
	// Restored is true when the peer was not in the swarm but its baseline was remembered
	// (it was reaped, or the tracker restarted): the counters below are that baseline.
	Restored   bool
	Seeder     bool
	Uploaded   int64
	Downloaded int64
	Corrupt    int64
	// Time is the previous announce; FirstSeen the session's first; Announces their number.
	Time      time.Time
	FirstSeen time.Time
	Announces int
}

// AnnounceResult is what a driver fills for one announce. The caller owns the peer slices and
// passes them in with length 0; the driver appends at most Selection.Want peers in total.
type AnnounceResult struct {
	Prev     PrevPeer
	Snatched bool
	// TorrentID and Freeleech are the registered torrent's site attributes, and Token tells
	// whether the announcing user holds a freeleech token for it (private mode).
	TorrentID uint64
	Freeleech models.FreeleechType
	Token     bool

	Seeders   int
	Leechers  int
	Snatches  int
	IPv4Peers []models.Peer
	IPv6Peers []models.Peer
	// NoPeerIDs is set by a driver that keeps no peer IDs (the memory driver keeps a hash):
	// the peers' ID fields are zero, and dictionary-model answers leave "peer id" out.
	NoPeerIDs bool
}

// ReapResult counts what one reaping pass removed.
type ReapResult struct {
	Peers    int
	Torrents int
	// Changed holds the new counts of the registered (site) torrents that lost peers.
	Changed []models.TorrentStats
}

// Conn is a connection to swarm storage. A Conn is used by one goroutine at a time; the storage
// behind it is shared and must stay consistent under concurrent use from many Conns.
type Conn interface {
	// Announce applies u to the torrent's swarm and, in the same critical section, appends the
	// peers chosen by sel to res. It never hands the announcing peer any entry with its own peer
	// ID, in either family. Counts in res are taken after the update. An unknown torrent without u.Create is
	// models.ErrTorrentNotFound.
	Announce(ctx context.Context, ih models.InfoHash, u *PeerUpdate, sel *Selection, res *AnnounceResult) error
	// Scrape sets the counts of each entry of files, whose InfoHash the caller filled. Unknown
	// torrents get zero counts and Registered false.
	Scrape(ctx context.Context, files []models.TorrentStats) error
	// Reap removes every peer whose last announce is before cutoff and, when purgeEmpty is
	// set, every torrent left with no peers.
	Reap(ctx context.Context, cutoff time.Time, purgeEmpty bool) (ReapResult, error)
	// Close gives the connection back to its pool.
	Close() error
}

var (
	driversMu sync.RWMutex
	drivers   = make(map[string]Driver)
)

// Register makes a tracker driver available under name. It panics when driver is nil or name is
// taken: both are programming errors found at init.
func Register(name string, driver Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if driver == nil {
		panic("tracker: Register driver is nil")
	}
	if _, dup := drivers[name]; dup {
		panic("tracker: Register called twice for driver " + name)
	}
	drivers[name] = driver
}

// Drivers returns the names of the registered drivers, sorted.
func Drivers() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	names := make([]string, 0, len(drivers))
	for name := range drivers {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Open opens a pool with the driver that cfg names, passing it cfg's params.
func Open(cfg config.DriverConfig) (Pool, error) {
	name := cfg.Name
	driversMu.RLock()
	driver, ok := drivers[name]
	driversMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("tracker: unknown driver %q (forgotten import?); registered: %s",
			name, strings.Join(Drivers(), ", "))
	}
	pool, err := driver.New(cfg.Params)
	if err != nil {
		return nil, fmt.Errorf("tracker: driver %q: %w", name, err)
	}
	return pool, nil
}
