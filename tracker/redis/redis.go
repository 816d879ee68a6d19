// Package redis is the "redis" tracker driver: swarms held in a Redis server (or a Redis
// Cluster), shared by every tracker process that points at it. Import it for its side effect of
// registering the driver:
//
//	import _ "github.com/chihaya/chihaya/tracker/redis"
//
// Its params (all optional, decoded strictly) are:
//
//	{"addr": "127.0.0.1:6379", "username": "", "password": "", "db": 0, "pool_size": 0,
//	 "dial_timeout": "5s", "read_timeout": "3s", "write_timeout": "3s",
//	 "key_prefix": "chihaya:", "cluster_addrs": ["host:port", ...], "site_cache_ttl": "2s"}
//
// With cluster_addrs set, addr and db are ignored and the client is a cluster client. The
// driver needs Redis 6.2 or later (ZADD LT).
//
// # Data layout
//
// Every key starts with key_prefix (P). The keys of one torrent carry the hash tag {H}, H being
// the hex info hash, so that they share a cluster slot and one Lua script may touch them all:
//
//	P{H}:s  sorted set of seeders' members, scored by the unix second of their last announce
//	P{H}:l  sorted set of leechers' members, likewise
//	P{H}:p  hash from peer key to the peer's stored value
//	P{H}:t  hash holding "n", the torrent's snatch count; its existence is the torrent's. "h"
//	        counts its hidden entries (absent: none). A torrent the site registered also holds
//	        "id" and "fl" (freeleech type).
//	P{H}:k  set of the user IDs (decimal) holding a freeleech token for the torrent
//	P{H}:x  hash from session key (peer ID + user, 24 bytes) to the peer's accounting session,
//	        "uploaded:downloaded:corrupt:first:last:announces" (unix seconds), kept across stops
//	        and reaps so that the next announce is credited from it (private mode)
//	P{H}:y  sorted set of session keys scored by their last announce, for pruning
//
// A peer key is the 25-byte string peer ID (20) + family (1, models.Family) + user (4, big
// endian; 0 in public mode), i.e. the packed models.PeerKey, so the IPv4 and IPv6 endpoints of a
// dual-stacked peer are two entries. A peer's member in P{H}:s or P{H}:l is its key followed by
// the suffix hidden ('0' or '1') + port (2, big endian) + address (4 bytes for IPv4, 16 for
// IPv6): 32 or 44 bytes that are exactly what an announce hands out, so that selecting peers is
// a ZRANGE by rank over a window of the sets, with no hash read and no parsing per peer. Its
// value in P{H}:p is the same suffix + seeder ('0' or '1') + "time:uploaded:downloaded" in
// decimal: one HGET tells an announce the previous entry and which member to replace when the
// endpoint, the hidden flag or the seeder flag changes. (Data written by versions before this
// layout is not read back: flush such keys when upgrading.)
//
// Global keys: P + "torrents", a sorted set of info hashes (raw 20 bytes) scored by a lower
// bound of the time of the torrent's oldest peer, 0 when it has none: a reaping pass reads only
// the torrents scored before the cutoff (ZRANGEBYSCORE) and never scans the keyspace, then
// reaps each with one script (ZREMRANGEBYSCORE semantics, also deleting the peers' hash fields)
// that sets the score to the real oldest time. An announce lowers the score (ZADD LT) only
// when it adds an entry or empties the swarm: a re-announce only makes its peer younger, so
// it leaves the index alone, and in cluster mode needs no second round trip. P + "sessions" is
// the same for sessions: info hashes scored by a lower bound of their oldest session's last
// announce, read by Prune. P + "counts" holds the swarm counters (t, s4, s6, l4, l6) that every
// script changing a swarm keeps up to date, so that SwarmCounts reads five numbers.
//
// Site-wide keys share the hash tag {site}: P{site}:users (hash from passkey to
// "id:canLeech:protected"), P{site}:whitelist (list of peer ID prefixes), P{site}:reasons (hash
// from info hash to "unixnano:reason") with P{site}:reasons:t (the same scored by unix
// microseconds, for pruning), and P{site}:registered (set of registered info hashes).
//
// An announce is one EVALSHA round trip (falling back to EVAL once after a server restart):
// the script updates the peer, the snatch count, the session and the global keys, and returns
// one binary string, which the driver parses into the caller's buffers without allocating per
// peer: the counts, the previous entry and session, the site attributes and the members of up
// to Want peers taken from a random offset of the candidates (leechers, then seeders unless
// the requester seeds), wrapping around; with a preferred subnet, the first maxPreferScan
// candidates are scanned for peers inside it first, as the memory driver does.
//
// In private mode the core also asks for the user by passkey and for the whitelist. Those live
// in another slot than the torrent, so no script may read them; instead each process caches
// them for site_cache_ttl (found and unknown passkeys alike, so unknown passkeys cannot flood
// Redis), and a cache miss is one pipelined round trip that also refreshes the whitelist when
// due. UpdateSite and ReplaceSite drop what they change from this process's cache at once;
// other processes see a change within site_cache_ttl. "0s" turns the cache off.
//
// In cluster mode the global keys live in other slots than the torrent, so the scripts do not
// touch them; the driver applies what the script replies with a second, pipelined round trip,
// when there is anything to apply (a new entry, a stop, a changed swarm size or session).
// The index is then only a hint that may lag by one update, and the reaping script re-reads the
// real swarm, so nothing is lost, only reaped a pass later. One race remains: when a reaping
// pass drops a registered torrent left without peers from the index just as an announce brings
// it a new peer, the pass's removal may land last, and the torrent is indexed again by its next
// new entry rather than at once. When the second round trip fails, the swarm was updated all the
// same: the announce succeeds, and the update is deferred in a bounded queue of the process and
// applied again by the next reaping pass (or along with a later announce's), in a form that is
// right whenever it lands; the counters' deltas go through a script that the server runs only
// before the client's deadline, so that a pipeline a stalled server runs after the client gave
// up is not counted twice (see global.go).
//
// Every Redis error is counted in chihaya_redis_errors_total{op} (see Pool.Collectors). The
// go-redis client redials by itself, so a restarted or resumed server is used again without
// restarting the tracker.
package redis

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

func init() {
	tracker.Register("redis", Driver{})
}

// Driver opens redis pools.
type Driver struct{}

// Params is the "params" section of the redis driver's config.
type Params struct {
	Addr         string          `json:"addr"`
	Username     string          `json:"username"`
	Password     string          `json:"password"`
	DB           int             `json:"db"`
	PoolSize     int             `json:"pool_size"`
	DialTimeout  config.Duration `json:"dial_timeout"`
	ReadTimeout  config.Duration `json:"read_timeout"`
	WriteTimeout config.Duration `json:"write_timeout"`
	KeyPrefix    string          `json:"key_prefix"`
	ClusterAddrs []string        `json:"cluster_addrs"`
	// SiteCacheTTL is how long a process trusts its cached users and whitelist (private mode).
	SiteCacheTTL config.Duration `json:"site_cache_ttl"`
}

// DefaultParams are the params a config leaves unset.
func DefaultParams() Params {
	return Params{
		Addr:         "127.0.0.1:6379",
		DialTimeout:  config.Duration{Duration: 5 * time.Second},
		ReadTimeout:  config.Duration{Duration: 3 * time.Second},
		WriteTimeout: config.Duration{Duration: 3 * time.Second},
		KeyPrefix:    "chihaya:",
		SiteCacheTTL: config.Duration{Duration: 2 * time.Second},
	}
}

// ParseParams decodes and checks raw params over the defaults. An error names the key.
func ParseParams(raw json.RawMessage) (Params, error) {
	p := DefaultParams()
	if err := config.DecodeParams(raw, &p); err != nil {
		return p, err
	}
	switch {
	case p.Addr == "" && len(p.ClusterAddrs) == 0:
		return p, errors.New(`params: key "addr": must not be empty`)
	case p.DB < 0:
		return p, fmt.Errorf(`params: key "db": must not be negative, got %d`, p.DB)
	case p.PoolSize < 0:
		return p, fmt.Errorf(`params: key "pool_size": must not be negative, got %d`, p.PoolSize)
	case p.DialTimeout.Duration < 0:
		return p, errors.New(`params: key "dial_timeout": must not be negative`)
	case p.ReadTimeout.Duration < 0:
		return p, errors.New(`params: key "read_timeout": must not be negative`)
	case p.WriteTimeout.Duration < 0:
		return p, errors.New(`params: key "write_timeout": must not be negative`)
	case p.SiteCacheTTL.Duration < 0:
		return p, errors.New(`params: key "site_cache_ttl": must not be negative`)
	case strings.ContainsAny(p.KeyPrefix, "{}"):
		return p, errors.New(`params: key "key_prefix": must not contain '{' or '}' (hash tags are the driver's)`)
	}
	for i, a := range p.ClusterAddrs {
		if a == "" {
			return p, fmt.Errorf(`params: key "cluster_addrs": entry %d is empty`, i)
		}
	}
	return p, nil
}

// New decodes params and opens a pool. It does not contact the server: the first command does.
func (Driver) New(raw json.RawMessage) (tracker.Pool, error) {
	p, err := ParseParams(raw)
	if err != nil {
		return nil, err
	}
	return NewPool(p), nil
}

// Pool is the redis driver's storage. The go-redis client is safe for concurrent use and pools
// its own network connections, so every tracker.Conn is the same stateless value.
type Pool struct {
	client  goredis.UniversalClient
	prefix  string
	cluster bool
	conn    conn
	metrics *metrics
	cache   siteCache

	// Global keys (see the package comment).
	index, counts, sessions                            string
	users, whitelist, reasons, reasonTimes, registered string

	// now is the clock of the site cache; tests replace it.
	now func() time.Time

	// Cluster mode: the updates of the global keys that failed and wait to be applied again
	// (see global.go), how many of them the bound dropped, the client's read timeout, the
	// last estimate of the server's clock minus the client's, in milliseconds, and the time
	// (unix nanoseconds) until which announces defer their updates without trying.
	pending     pendingGlobals
	dropped     atomic.Uint64
	readTimeout time.Duration
	clockOffset atomic.Int64
	globalHold  atomic.Int64
}

// conn is the tracker.Conn of a Pool: the pool's methods, with a Close that gives nothing back.
type conn struct{ *Pool }

// Close implements tracker.Conn; the client's connections stay with the client.
func (conn) Close() error { return nil }

var (
	_ tracker.Pool         = (*Pool)(nil)
	_ tracker.Conn         = (*conn)(nil)
	_ tracker.SwarmCounter = (*conn)(nil)
	_ tracker.SiteStore    = (*conn)(nil)
)

// NewPool opens a client with p (already checked by ParseParams).
func NewPool(p Params) *Pool {
	opts := &goredis.UniversalOptions{
		Addrs:                 []string{p.Addr},
		Username:              p.Username,
		Password:              p.Password,
		DB:                    p.DB,
		PoolSize:              p.PoolSize,
		DialTimeout:           p.DialTimeout.Duration,
		ReadTimeout:           p.ReadTimeout.Duration,
		WriteTimeout:          p.WriteTimeout.Duration,
		ContextTimeoutEnabled: true, // honour the callers' ctx deadlines
	}
	cluster := len(p.ClusterAddrs) > 0
	if cluster {
		opts.Addrs = p.ClusterAddrs
		opts.DB = 0
		opts.IsClusterMode = true
	}
	site := p.KeyPrefix + "{site}:"
	pool := &Pool{
		client:      goredis.NewUniversalClient(opts),
		prefix:      p.KeyPrefix,
		cluster:     cluster,
		index:       p.KeyPrefix + "torrents",
		counts:      p.KeyPrefix + "counts",
		sessions:    p.KeyPrefix + "sessions",
		users:       site + "users",
		whitelist:   site + "whitelist",
		reasons:     site + "reasons",
		reasonTimes: site + "reasons:t",
		registered:  site + "registered",
		now:         time.Now,
		readTimeout: p.ReadTimeout.Duration,
	}
	if pool.readTimeout <= 0 {
		pool.readTimeout = 3 * time.Second // go-redis's default
	}
	pool.pending.max = maxPending
	pool.metrics = newMetrics(&pool.pending)
	pool.cache.init(p.SiteCacheTTL.Duration)
	pool.conn.Pool = pool
	return pool
}

// Client returns the underlying client (for tests and tools).
func (p *Pool) Client() goredis.UniversalClient { return p.client }

// KeyPrefix returns key_prefix: other parts of the tracker that keep state in the same Redis
// (the WebSocket tracker's relay) put their keys under it too.
func (p *Pool) KeyPrefix() string { return p.prefix }

// Get returns the pool's connection; it does not allocate.
func (p *Pool) Get() (tracker.Conn, error) { return &p.conn, nil }

// Close closes the client and its network connections.
func (p *Pool) Close() error { return p.client.Close() }

// Number of torrent keys, and of keys with the global ones appended.
const (
	nTorrentKeys = 7
	nAllKeys     = 10
)

// torrentKeys returns the seven keys of ih, then the index, counts and session index keys
// unless in cluster mode (where the scripts may not touch them).
func (p *Pool) torrentKeys(ih models.InfoHash) []string {
	var hx [40]byte
	hex.Encode(hx[:], ih[:])
	base := p.prefix + "{" + string(hx[:]) + "}:"
	keys := make([]string, nTorrentKeys, nAllKeys)
	for i, suffix := range [nTorrentKeys]string{"s", "l", "p", "t", "k", "x", "y"} {
		keys[i] = base + suffix
	}
	if !p.cluster {
		keys = append(keys, p.index, p.counts, p.sessions)
	}
	return keys
}

// Indexes of the torrent keys.
const (
	keySeeders = iota
	keyLeechers
	keyPeers
	keyTorrent
	keyTokens
	keySessions
	keySessionTimes
)

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func asInt(x any) int64 {
	switch n := x.(type) {
	case int64:
		return n
	case string:
		i, _ := strconv.ParseInt(n, 10, 64)
		return i
	}
	return 0
}

func asString(x any) string {
	s, _ := x.(string)
	return s
}

// Ping checks that Redis answers (in cluster mode, every master), for readiness probes.
func (p *Pool) Ping(ctx context.Context) error {
	if cc, ok := p.client.(*goredis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			return c.Ping(ctx).Err()
		})
	}
	return p.client.Ping(ctx).Err()
}
