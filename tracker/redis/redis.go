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
//	 "key_prefix": "chihaya:", "cluster_addrs": ["host:port", ...]}
//
// With cluster_addrs set, addr and db are ignored and the client is a cluster client.
//
// # Data layout
//
// Every key starts with key_prefix (P). The keys of one torrent carry the hash tag {H}, H being
// the hex info hash, so that they share a cluster slot and one Lua script may touch them all:
//
//	P{H}:s  sorted set of seeders, scored by the unix second of their last announce
//	P{H}:l  sorted set of leechers, likewise
//	P{H}:p  hash from peer member to its endpoint and counters
//	P{H}:t  hash holding "n", the torrent's snatch count; its existence is the torrent's
//
// A peer member is the 25-byte string peer ID (20) + family (1, models.Family) + user (4, big
// endian; 0 in public mode), i.e. the packed models.PeerKey, so the IPv4 and IPv6 endpoints of a
// dual-stacked peer are two members. Its value in P{H}:p is addr (16, IPv4 in the first 4) +
// port (2, big endian) + hidden ('0' or '1') + "uploaded:downloaded" in decimal.
//
// P + "torrents" is a global sorted set of info hashes (raw 20 bytes) scored by the time of the
// torrent's oldest peer, 0 when it has none: a reaping pass reads only the torrents scored
// before the cutoff (ZRANGEBYSCORE) and never scans the keyspace, then reaps each with one
// script (ZREMRANGEBYSCORE semantics, also deleting the peers' hash fields).
//
// An announce is one EVALSHA round trip (redis.Script falls back to EVAL once after a server
// restart): the script updates the peer, the snatch count and the index entry, and returns the
// previous entry, the counts and up to Want peers taken from a random offset of the candidates
// (leechers, then seeders unless the requester seeds), wrapping around.
//
// In cluster mode the global index lives in another slot than the torrent, so the scripts do not
// touch it; the driver updates it with a second command after each script. The index is then
// only a hint that may lag by one update: a torrent never leaves it while it has peers, and the
// reaping script re-reads the real swarm, so nothing is lost, only reaped a pass later.
//
// Not supported yet: Selection.Prefer (preferred subnet; ignored), private mode (site store),
// PrevPeer.Corrupt/Restored/FirstSeen/Announces, and the SwarmCounter capability.
package redis

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
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
}

// DefaultParams are the params a config leaves unset.
func DefaultParams() Params {
	return Params{
		Addr:         "127.0.0.1:6379",
		DialTimeout:  config.Duration{Duration: 5 * time.Second},
		ReadTimeout:  config.Duration{Duration: 3 * time.Second},
		WriteTimeout: config.Duration{Duration: 3 * time.Second},
		KeyPrefix:    "chihaya:",
	}
}

const knownKeys = `"addr", "username", "password", "db", "pool_size", "dial_timeout", "read_timeout", "write_timeout", "key_prefix", "cluster_addrs"`

// ParseParams decodes and checks raw params over the defaults. An error names the key.
func ParseParams(raw json.RawMessage) (Params, error) {
	p := DefaultParams()
	if t := bytes.TrimSpace(raw); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return p, fmt.Errorf("params: %w (known keys: %s)", err, knownKeys)
		}
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
	index   string
	cluster bool
	conn    conn
}

// conn is the tracker.Conn of a Pool: the pool's methods, with a Close that gives nothing back.
type conn struct{ *Pool }

// Close implements tracker.Conn; the client's connections stay with the client.
func (conn) Close() error { return nil }

var (
	_ tracker.Pool = (*Pool)(nil)
	_ tracker.Conn = (*conn)(nil)
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
	pool := &Pool{
		client:  goredis.NewUniversalClient(opts),
		prefix:  p.KeyPrefix,
		index:   p.KeyPrefix + "torrents",
		cluster: cluster,
	}
	pool.conn.Pool = pool
	return pool
}

// Client returns the underlying client (for tests and tools).
func (p *Pool) Client() goredis.UniversalClient { return p.client }

// Get returns the pool's connection; it does not allocate.
func (p *Pool) Get() (tracker.Conn, error) { return &p.conn, nil }

// Close closes the client and its network connections.
func (p *Pool) Close() error { return p.client.Close() }

// torrentKeys returns the four keys of ih, plus the index key unless in cluster mode.
func (p *Pool) torrentKeys(ih models.InfoHash) []string {
	base := p.prefix + "{" + hex.EncodeToString(ih[:]) + "}:"
	keys := []string{base + "s", base + "l", base + "p", base + "t"}
	if !p.cluster {
		keys = append(keys, p.index)
	}
	return keys
}

const memberLen = 25

func member(k models.PeerKey) string {
	var b [memberLen]byte
	copy(b[:20], k.ID[:])
	b[20] = byte(k.Family)
	binary.BigEndian.PutUint32(b[21:], k.User)
	return string(b[:])
}

func endpointValue(u *tracker.PeerUpdate) string {
	b := make([]byte, 19, 48)
	addr := u.AddrPort.Addr()
	if u.Key.Family == models.IPv4 {
		if a := addr.Unmap(); a.Is4() {
			a4 := a.As4()
			copy(b[:4], a4[:])
		}
	} else if addr.IsValid() {
		a16 := addr.As16()
		copy(b[:16], a16[:])
	}
	binary.BigEndian.PutUint16(b[16:18], u.AddrPort.Port())
	b[18] = '0'
	if u.Hidden {
		b[18] = '1'
	}
	b = strconv.AppendInt(b, u.Uploaded, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, u.Downloaded, 10)
	return string(b)
}

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Announce implements tracker.Conn with one script call.
func (p *Pool) Announce(ctx context.Context, ih models.InfoHash, u *tracker.PeerUpdate, sel *tracker.Selection, res *tracker.AnnounceResult) error {
	res.Prev = tracker.PrevPeer{}
	res.Snatched, res.TorrentID, res.Freeleech, res.Token = false, 0, models.Normal, false
	res.Seeders, res.Leechers, res.Snatches = 0, 0, 0
	want := sel.Want
	if want < 0 {
		want = 0
	}
	keys := p.torrentKeys(ih)
	v, err := announceScript.Run(ctx, p.client, keys,
		member(u.Key), endpointValue(u), u.Time.Unix(),
		bit(u.Remove), bit(u.Seeder), bit(u.Completed), bit(u.Create),
		want, bit(sel.Seeder), bit(sel.IPv4), bit(sel.IPv6), bit(sel.SkipOwnUser),
		rand.Int64N(1<<52), string(ih[:]), bit(!p.cluster), int(models.IPv4),
	).Slice()
	if err != nil {
		return fmt.Errorf("redis: announce %x: %w", ih[:], err)
	}
	if len(v) == 1 && asInt(v[0]) == -1 {
		return models.ErrTorrentNotFound
	}
	if len(v) < 9 {
		return fmt.Errorf("redis: announce %x: short script reply (%d values)", ih[:], len(v))
	}
	if asInt(v[0]) == 1 {
		res.Prev.Found = true
		res.Prev.Seeder = asInt(v[1]) == 1
		res.Prev.Time = time.Unix(asInt(v[2]), 0)
		if err := parseCounters(asString(v[3]), &res.Prev); err != nil {
			return fmt.Errorf("redis: announce %x: stored peer: %w", ih[:], err)
		}
	}
	res.Snatched = asInt(v[4]) == 1
	res.Seeders, res.Leechers, res.Snatches = int(asInt(v[5])), int(asInt(v[6])), int(asInt(v[7]))
	if p.cluster && asInt(v[8]) >= 0 {
		if err := p.client.ZAdd(ctx, p.index, goredis.Z{Score: float64(asInt(v[8])), Member: string(ih[:])}).Err(); err != nil {
			return fmt.Errorf("redis: announce %x: index: %w", ih[:], err)
		}
	}
	for i := 9; i+1 < len(v); i += 2 {
		peer, fam, err := decodePeer(asString(v[i]), asString(v[i+1]))
		if err != nil {
			return fmt.Errorf("redis: announce %x: stored peer: %w", ih[:], err)
		}
		if fam == models.IPv4 {
			res.IPv4Peers = append(res.IPv4Peers, peer)
		} else {
			res.IPv6Peers = append(res.IPv6Peers, peer)
		}
	}
	return nil
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

func parseCounters(val string, prev *tracker.PrevPeer) error {
	if len(val) < 19 {
		return fmt.Errorf("value of %d bytes", len(val))
	}
	up, down, ok := strings.Cut(val[19:], ":")
	if !ok {
		return errors.New("no counters")
	}
	var err1, err2 error
	prev.Uploaded, err1 = strconv.ParseInt(up, 10, 64)
	prev.Downloaded, err2 = strconv.ParseInt(down, 10, 64)
	return errors.Join(err1, err2)
}

func decodePeer(m, val string) (models.Peer, models.Family, error) {
	if len(m) != memberLen || len(val) < 18 {
		return models.Peer{}, 0, fmt.Errorf("member of %d bytes, value of %d", len(m), len(val))
	}
	var peer models.Peer
	copy(peer.ID[:], m[:20])
	fam := models.Family(m[20])
	var a netip.Addr
	if fam == models.IPv4 {
		a = netip.AddrFrom4([4]byte([]byte(val[:4])))
	} else {
		a = netip.AddrFrom16([16]byte([]byte(val[:16])))
	}
	peer.AddrPort = netip.AddrPortFrom(a, binary.BigEndian.Uint16([]byte(val[16:18])))
	return peer, fam, nil
}

// Scrape implements tracker.Conn with one pipelined round trip.
func (p *Pool) Scrape(ctx context.Context, files []models.TorrentStats) error {
	if len(files) == 0 {
		return nil
	}
	type cmds struct {
		n    *goredis.StringCmd
		s, l *goredis.IntCmd
	}
	cs := make([]cmds, len(files))
	_, err := p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for i := range files {
			k := p.torrentKeys(files[i].InfoHash)
			cs[i] = cmds{n: pipe.HGet(ctx, k[3], "n"), s: pipe.ZCard(ctx, k[0]), l: pipe.ZCard(ctx, k[1])}
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis: scrape: %w", err)
	}
	for i := range files {
		f := &files[i]
		f.ID = 0
		n, err := cs[i].n.Int()
		if errors.Is(err, goredis.Nil) {
			f.Seeders, f.Leechers, f.Snatches, f.Registered = 0, 0, 0, false
			continue
		}
		if err != nil {
			return fmt.Errorf("redis: scrape %x: %w", f.InfoHash[:], err)
		}
		f.Seeders, f.Leechers, f.Snatches, f.Registered = int(cs[i].s.Val()), int(cs[i].l.Val()), n, true
	}
	return nil
}

// reapPage is how many index entries one ZRANGEBYSCORE reads.
const reapPage = 1000

// Reap implements tracker.Conn: it reads the torrents whose oldest peer is before cutoff from
// the index, then reaps each with one script.
func (p *Pool) Reap(ctx context.Context, cutoff time.Time, purgeEmpty bool) (tracker.ReapResult, error) {
	var r tracker.ReapResult
	if err := ctx.Err(); err != nil {
		return r, err
	}
	limit := strconv.FormatInt(cutoff.Unix(), 10)
	var hashes []string
	for offset := int64(0); ; offset += reapPage {
		page, err := p.client.ZRangeByScore(ctx, p.index, &goredis.ZRangeBy{
			Min: "-inf", Max: "(" + limit, Offset: offset, Count: reapPage,
		}).Result()
		if err != nil {
			return r, fmt.Errorf("redis: reap: index: %w", err)
		}
		hashes = append(hashes, page...)
		if len(page) < reapPage {
			break
		}
	}
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if len(h) != len(models.InfoHash{}) {
			continue
		}
		ih := models.InfoHash([]byte(h))
		v, err := reapScript.Run(ctx, p.client, p.torrentKeys(ih), limit, bit(purgeEmpty), h, bit(!p.cluster)).Slice()
		if err != nil {
			return r, fmt.Errorf("redis: reap %x: %w", ih[:], err)
		}
		if len(v) < 3 {
			return r, fmt.Errorf("redis: reap %x: short script reply", ih[:])
		}
		r.Peers += int(asInt(v[0]))
		r.Torrents += int(asInt(v[1]))
		if p.cluster {
			var err error
			if score := asInt(v[2]); score < 0 {
				err = p.client.ZRem(ctx, p.index, h).Err()
			} else {
				err = p.client.ZAdd(ctx, p.index, goredis.Z{Score: float64(score), Member: h}).Err()
			}
			if err != nil {
				return r, fmt.Errorf("redis: reap %x: index: %w", ih[:], err)
			}
		}
	}
	return r, nil
}
