package gazelle

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang/glog"

	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

func init() {
	backend.Register("gazelle", Driver{})
}

// ErrClosed is returned by a Conn's methods after Close.
var ErrClosed = errors.New("gazelle: connection closed")

// ErrQueueFull is returned by RecordAnnounce and RecordReap when some of the rows they produced
// were refused because queue_limit rows are already waiting for the database. The rest of the
// delta was queued; the refused rows are counted in chihaya_gazelle_dropped_total.
var ErrQueueFull = errors.New("gazelle: write queue full; rows dropped")

// Driver opens connections to Gazelle databases.
type Driver struct{}

// openTimeout bounds Driver.New's startup reset (reading the peers' baselines, the truncate and
// the reset of the swarm counts) on a database that hangs.
const openTimeout = 5 * time.Minute

// New parses and validates params (see Params and ParseParams), opens the database and pings
// it, waiting no longer than the DSN's timeout (10s when it sets none), then does the startup
// reset (see Open). An unreachable database is an error that names its address and user, never
// its password.
func (Driver) New(params json.RawMessage) (backend.Conn, error) {
	p, err := ParseParams(params)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return Open(ctx, p)
}

// Conn is a connection to a Gazelle database. It is safe for concurrent use.
//
// Its write path has one goroutine, the flusher, which owns the batch being written; the
// request path only merges into the open buffers under mu.
type Conn struct {
	db      *sql.DB
	params  Params
	queries queries
	writes  writes
	// where names the database in errors: network, address, user and database, no password.
	where string

	closed atomic.Bool

	mu sync.Mutex
	// open receives RecordAnnounce's rows; sealed is the batch being written or retried.
	open, spare *buffers
	sealed      *batch
	// pending counts the rows in open and sealed; peerLimit is where peer rows stop.
	pending, peerLimit int
	// level is the queue's fill last logged: 0 below 50%, 1, 2 from 90%, 3 full.
	level int
	// peerMemo maps a peer (hashed) to the fingerprint of its last queued row; torrentMemo a
	// torrent to its last queued counts. They choose heavy or light rows and skip unchanged
	// torrents.
	peerMemo    generations[uint64, uint64]
	torrentMemo generations[uint64, torrentMemo]
	seed        maphash.Seed
	agents      map[string]string
	// baselineLife is how long a baseline is kept after its peer was last seen, in
	// nanoseconds (see KeepBaselines).
	baselineLife atomic.Int64

	// batchBase+batchSeq is the last batch's ID (see prepareWrites).
	batchBase, batchSeq uint64

	// commit ends a batch's transaction; tests replace it to lose a COMMIT's reply.
	commit func(*sql.Tx) error

	expire  *expirer
	metrics *metrics

	started   bool
	runCtx    context.Context
	runCancel context.CancelFunc
	quit      chan struct{}
	runDone   chan struct{}
}

// newConn makes a Conn on db without touching it; Open prepares the database and starts the
// flusher.
func newConn(p Params, db *sql.DB, where string) *Conn {
	c := &Conn{
		db:          db,
		params:      p,
		queries:     p.Schema.queries(),
		writes:      p.Schema.writes(),
		where:       where,
		open:        newBuffers(),
		peerLimit:   max(int(float64(p.QueueLimit)*peerShare), 1),
		peerMemo:    newGenerations[uint64, uint64](),
		torrentMemo: newGenerations[uint64, torrentMemo](),
		seed:        maphash.MakeSeed(),
		agents:      make(map[string]string),
		commit:      (*sql.Tx).Commit,
		quit:        make(chan struct{}),
		runDone:     make(chan struct{}),
	}
	c.runCtx, c.runCancel = context.WithCancel(context.Background())
	c.baselineLife.Store(int64(config.Default().BaselineLifetime.Duration))
	c.metrics = newMetrics(c)
	if p.SiteURL != "" && !p.ReadOnly {
		prefix, _ := p.expireURL() // validated
		c.expire = newExpirer(prefix, p.QueueLimit, p.FlushInterval, c.metrics)
	}
	return c
}

// Open validates p, opens its database and pings it, waiting no longer than ctx allows nor than
// the DSN's timeout (10s when it sets none). Errors name the database's address and user, never
// its password.
//
// Unless p.ReadOnly, it then creates chihaya_flushes if it is missing (an error if it cannot),
// does Ocelot's startup reset (see the package documentation; failures there are logged, as
// Ocelot does, and the tracker starts anyway), and starts the flusher and, with a site_url,
// the token expiry callback.
func Open(ctx context.Context, p Params) (*Conn, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	cfg, err := p.mysqlConfig()
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("%s(%s)/%s as user %q", cfg.Net, cfg.Addr, cfg.DBName, cfg.User)
	// A connector keeps what a DSN cannot carry, such as the logger.
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("gazelle: open %s: %w", where, err)
	}
	db := sql.OpenDB(connector)
	// Connections older than a server's usual wait_timeout are retired before the server drops
	// them under a query.
	db.SetConnMaxLifetime(5 * time.Minute)
	db.SetConnMaxIdleTime(time.Minute)

	pingCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("gazelle: connect to %s: %w", where, err)
	}
	c := newConn(p, db, where)
	if !p.ReadOnly {
		if err := c.prepareWrites(ctx); err != nil {
			_ = db.Close()
			return nil, err
		}
		c.startupReset(ctx)
	}
	c.start()
	return c, nil
}

// start starts the flusher and the token expiry callback; read-only Conns have neither.
func (c *Conn) start() {
	if c.params.ReadOnly {
		return
	}
	c.started = true
	go c.run()
	if c.expire != nil {
		c.expire.start(c.runCtx)
	}
}

// KeepBaselines sets how long chihaya_baselines keeps a peer's counters after it was last
// seen: the tracker's baseline_lifetime, so that the database forgets a baseline when the
// tracker's memory does. Until it is called, the default baseline_lifetime applies. A negative
// lifetime is taken as 0.
func (c *Conn) KeepBaselines(lifetime time.Duration) {
	c.baselineLife.Store(int64(max(lifetime, 0)))
}

func (c *Conn) baselineLifetime() time.Duration {
	return time.Duration(c.baselineLife.Load())
}

// RecordAnnounce queues the rows that d produces for the site's database, copying what it
// keeps; it never waits for the database and allocates nothing once its maps have grown. Only
// private-mode deltas (UserID and TorrentID set) are recorded; others, and every delta of a
// read-only Conn, are ignored.
//
// The rows, merged with those queued for the same key since the last flush:
//
//   - the user's CreditedUp and CreditedDown, added;
//   - the torrent's Seeders and Leechers (the latest wins), one more snatch when Snatched, and
//     UploadedDelta − DownloadedDelta − CorruptDelta added to its Balance; only when the
//     announce created or removed the peer, snatched, started, moved bytes, or changed the
//     counts, or the torrent's row was last queued an hour ago (Ocelot's rule);
//   - an xbt_snatched row when Snatched, with the time and the IP;
//   - the peer's xbt_files_users row: heavy (active is 0 when Removed; uploaded and downloaded
//     are the session totals; remaining is Left; timespent is Time − FirstSeen; announced is
//     Announces; useragent is cut to 51 bytes of printable ASCII) when the announce created or
//     removed the peer, carried an event, had a non-zero delta, or when its Left or session
//     totals differ from the last row this Conn queued for the peer (or there is none);
//     otherwise Ocelot's light heartbeat (timespent, announced, mtime; speeds set to 0);
//   - the peer's chihaya_baselines row, whichever the xbt_files_users row: its session totals,
//     FirstSeen, Time and Announces;
//   - TokenDown added to users_freeleeches.Downloaded when Token is set.
//
// The IP written is the empty string for a protected user and for IPv6, which Gazelle's varchar(15) ip
// columns cannot hold. When the user completes the torrent on a freeleech token (Token and
// Snatched), the site is told to expire the token (see the package documentation).
//
// When the queue is full it returns ErrQueueFull (see there). After Close it returns ErrClosed.
func (c *Conn) RecordAnnounce(_ context.Context, d *models.AnnounceDelta) error {
	if d == nil || d.UserID == 0 || d.TorrentID == 0 || c.params.ReadOnly {
		if c.closed.Load() {
			return ErrClosed
		}
		return nil
	}
	now := d.Time
	if now.IsZero() {
		now = time.Now()
	}
	hk := peerHash(c.seed, &peerKey{uid: d.UserID, tid: d.TorrentID, peerID: d.PeerID})
	state := peerState(c.seed, d)
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return ErrClosed
	}
	refused := c.queue(d, now, hk, state)
	// Under c.mu, so that Close, once it has set closed, drains every expiry queued.
	if d.Token && d.Snatched && c.expire != nil && !c.expire.add(tokenKey{uid: d.UserID, tid: d.TorrentID}) {
		refused++
	}
	msg := c.checkLevel()
	c.mu.Unlock()
	if msg != "" {
		glog.Warning(msg)
	}
	if refused > 0 {
		c.metrics.dropped.Add(float64(refused))
		return ErrQueueFull
	}
	return nil
}

// QueueSizes returns how many rows wait to be written to each table, those of the batch being
// written included: users_leech_stats, torrents_leech_stats, xbt_snatched, xbt_files_users and
// users_freeleeches (Ocelot's "items in … queue" report labels).
func (c *Conn) QueueSizes() (users, torrents, peers, snatches, tokens int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := func(t table) int {
		k := c.open.count(t)
		if c.sealed != nil {
			k += c.sealed.counts[t]
		}
		return k
	}
	return n(tableUsers), n(tableTorrents), n(tablePeers), n(tableSnatches), n(tableTokens)
}

// RecordReap queues the counts of the torrents whose swarms the reaper changed, as absolute
// Seeders and Leechers (neither snatches nor balance change). Entries without an ID (public
// torrents) are ignored. Like RecordAnnounce it never waits, and returns ErrQueueFull or
// ErrClosed.
func (c *Conn) RecordReap(_ context.Context, torrents []models.TorrentStats) error {
	if c.params.ReadOnly {
		if c.closed.Load() {
			return ErrClosed
		}
		return nil
	}
	now := time.Now().Unix()
	refused := 0
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return ErrClosed
	}
	for i := range torrents {
		if torrents[i].ID != 0 {
			refused += c.queueReap(&torrents[i], now)
		}
	}
	msg := c.checkLevel()
	c.mu.Unlock()
	if msg != "" {
		glog.Warning(msg)
	}
	if refused > 0 {
		c.metrics.dropped.Add(float64(refused))
		return ErrQueueFull
	}
	return nil
}

// checkLevel notes the queue's fill and returns a line to log when it has just passed 50%, 90%
// or 100% on the way up, or dropped back under 50%. c.mu is held.
func (c *Conn) checkLevel() string {
	limit := c.params.QueueLimit
	lvl := 0
	switch {
	case c.pending >= limit:
		lvl = 3
	case c.pending >= c.peerLimit:
		lvl = 2
	case c.pending >= (limit+1)/2:
		lvl = 1
	}
	if lvl == c.level {
		return ""
	}
	prev := c.level
	c.level = lvl
	if lvl < prev {
		if lvl == 0 {
			return fmt.Sprintf("gazelle: write queue back under 50%% (%d of %d rows)", c.pending, limit)
		}
		return ""
	}
	switch lvl {
	case 1:
		return fmt.Sprintf("gazelle: write queue past 50%% (%d of %d rows): is %s reachable?", c.pending, limit, c.where)
	case 2:
		return fmt.Sprintf("gazelle: write queue past 90%% (%d of %d rows): new peer rows are now refused", c.pending, limit)
	}
	return fmt.Sprintf("gazelle: write queue full (%d rows): rows for new users, torrents and peers are refused until %s accepts writes", limit, c.where)
}

// Close stops accepting deltas (RecordAnnounce and RecordReap return ErrClosed from now on),
// writes everything queued, sends the pending token expiries, and closes the database, waiting
// no longer than ctx allows. When ctx ends first the error says how many rows remain unwritten
// (they are lost). Closing twice is not an error.
func (c *Conn) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	c.closed.Store(true)
	c.mu.Unlock()

	var errs []error
	if c.started {
		// Whatever the flusher and the callback are doing ends when ctx does.
		stop := context.AfterFunc(ctx, c.runCancel)
		defer stop()
		close(c.quit)
		// The site and the database are drained side by side, so that either being down does
		// not keep the other's queue from being written.
		var (
			wg        sync.WaitGroup
			expireErr error
		)
		if c.expire != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.expire.stop()
				if n, err := c.expire.drain(ctx); n > 0 {
					expireErr = fmt.Errorf("gazelle: close: %d token expiries not sent to the site: %w", n, err)
				}
			}()
		}
		<-c.runDone
		// The flusher has returned: Close owns the queue now.
		err := c.drain(ctx)
		if n := c.pendingRows(); n > 0 {
			if err == nil {
				err = ctx.Err()
			}
			errs = append(errs, fmt.Errorf("gazelle: close: %d rows remain unwritten (%s): %w", n, c.queueSummary(), err))
		}
		wg.Wait()
		if expireErr != nil {
			errs = append(errs, expireErr)
		}
	}
	c.runCancel()

	if err := c.closeDB(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeDB closes the pool, waiting for queries in flight no longer than ctx allows; with none
// in flight it closes at once, which a ctx that has just ended still leaves time for. When ctx
// ends first the pool is released in the background as those queries end.
func (c *Conn) closeDB(ctx context.Context) error {
	if c.db == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- c.db.Close() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		t := time.NewTimer(100 * time.Millisecond)
		defer t.Stop()
		select {
		case err = <-done:
		case <-t.C:
			err = ctx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("gazelle: close %s: %w", c.where, err)
	}
	return nil
}

// queueSummary lists the rows queued per table.
func (c *Conn) queueSummary() string {
	counts := c.queueCounts()
	parts := make([]string, 0, numTables)
	for t := range numTables {
		if counts[t] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", t, counts[t]))
		}
	}
	return strings.Join(parts, ", ")
}

// queueCounts returns the rows queued per table, the batch being retried included.
func (c *Conn) queueCounts() [numTables]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n [numTables]int
	for t := range numTables {
		n[t] = c.open.count(t)
		if c.sealed != nil {
			n[t] += c.sealed.counts[t]
		}
	}
	return n
}

// mysqlLogger sends the MySQL driver's own messages (dropped connections and the like) to glog
// instead of the standard logger.
type mysqlLogger struct{}

// Print logs the driver's message as a warning.
func (mysqlLogger) Print(v ...any) {
	glog.WarningDepth(1, append([]any{"gazelle: mysql: "}, v...)...)
}

var (
	_ mysql.Logger           = mysqlLogger{}
	_ backend.BaselineKeeper = (*Conn)(nil)
)

// Ping checks that the database answers, for readiness probes.
func (c *Conn) Ping(ctx context.Context) error {
	if err := c.db.PingContext(ctx); err != nil {
		return fmt.Errorf("gazelle: ping %s: %w", c.where, err)
	}
	return nil
}
