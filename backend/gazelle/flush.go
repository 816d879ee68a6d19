package gazelle

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang/glog"
)

// The table that makes retried batches exactly-once (see Conn and writeBatch).
const (
	createFlushesSQL = "CREATE TABLE IF NOT EXISTS chihaya_flushes (" +
		"id BIGINT UNSIGNED NOT NULL PRIMARY KEY, at DATETIME NOT NULL) ENGINE=InnoDB"
	markFlushSQL   = "INSERT INTO chihaya_flushes (id, at) VALUES (?, NOW())"
	maxFlushSQL    = "SELECT IFNULL(MAX(id), 0) FROM chihaya_flushes"
	pruneFlushSQL  = "DELETE FROM chihaya_flushes WHERE at < NOW() - INTERVAL 1 DAY"
	pruneFlushEach = time.Hour
)

// chihaya_baselines holds every peer's last counters, so that a restart (or a crash after a
// flush) loses no credit: xbt_files_users is Gazelle's view of the live swarms and is emptied at
// each start, as Ocelot does, so it cannot keep them. A row is written with each flush for every
// peer that announced, in the batch's transaction, and deleted once its last_seen is older than
// the tracker's baseline_lifetime.
const (
	createBaselinesSQL = "CREATE TABLE IF NOT EXISTS chihaya_baselines (" +
		"uid INT UNSIGNED NOT NULL, fid INT UNSIGNED NOT NULL, peer_id BINARY(20) NOT NULL, " +
		"uploaded BIGINT NOT NULL, downloaded BIGINT NOT NULL, corrupt BIGINT NOT NULL, " +
		"first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, announced INT UNSIGNED NOT NULL, " +
		"PRIMARY KEY (fid, uid, peer_id), KEY last_seen (last_seen)) ENGINE=InnoDB"
	// pruneBaselinesSQL deletes expired baselines a chunk at a time, so that no statement holds
	// its locks for long.
	pruneBaselinesSQL   = "DELETE FROM chihaya_baselines WHERE last_seen < ? LIMIT 10000"
	pruneBaselinesChunk = 10000
	pruneBaselinesEach  = time.Hour
)

// maxBackoff caps the wait between retries of a failed flush.
const maxBackoff = time.Minute

// backoff returns the wait before retry number n (1 for the first) of something first tried
// every base: base, 2×base, 4×base… up to maxBackoff (and never below base).
func backoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return max(min(d, maxBackoff), base)
}

// errApplied says that a batch's marker row is already in chihaya_flushes: an earlier attempt
// committed it (its COMMIT's reply was lost), so the batch must not be written again.
var errApplied = errors.New("gazelle: batch already applied")

// rowError is a statement that the database refused because of one of its rows' data (a
// foreign key, a value out of range…): the server is up, and the batch is retried at once with
// that statement written row by row.
type rowError struct {
	kind stmtKind
	err  error
}

func (e *rowError) Error() string { return fmt.Sprintf("%s: %v", e.kind, e.err) }
func (e *rowError) Unwrap() error { return e.err }

// rowErrorCodes are the server errors that one row's data causes and that writing it again
// will cause again.
var rowErrorCodes = map[uint16]bool{
	1048: true, // ER_BAD_NULL_ERROR
	1062: true, // ER_DUP_ENTRY (a unique key other than the one ON DUPLICATE KEY handles)
	1264: true, // ER_WARN_DATA_OUT_OF_RANGE
	1265: true, // WARN_DATA_TRUNCATED
	1292: true, // ER_TRUNCATED_WRONG_VALUE
	1364: true, // ER_NO_DEFAULT_FOR_FIELD
	1366: true, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
	1406: true, // ER_DATA_TOO_LONG
	1451: true, // ER_ROW_IS_REFERENCED_2
	1452: true, // ER_NO_REFERENCED_ROW_2 (a foreign key to a deleted user or torrent)
	1690: true, // ER_DATA_OUT_OF_RANGE
	3819: true, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
	4025: true, // ER_CONSTRAINT_FAILED (MariaDB)
}

func mysqlCode(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// nextBatch returns the batch to write: the one that failed before, or else the open buffers
// sealed into a new one (fresh), or nil when nothing is queued. Only the flusher calls it.
func (c *Conn) nextBatch() (b *batch, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sealed != nil {
		return c.sealed, false
	}
	if c.open.rows() == 0 {
		return nil, false
	}
	c.batchSeq++
	b = newBatch(c.batchBase+c.batchSeq, c.open)
	if c.spare != nil {
		c.open, c.spare = c.spare, nil
	} else {
		c.open = newBuffers()
	}
	c.sealed = b
	return b, true
}

// batchDone retires a batch that is in the database (written now, or found applied).
func (c *Conn) batchDone(b *batch) (msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sealed = nil
	c.pending -= b.rows
	if b.bufs.reset() {
		c.spare = b.bufs
	}
	return c.checkLevel()
}

// flush writes the batch that failed before, if any, then everything queued since, and
// returns the first error. Only the flusher (the run goroutine, or Close once it has stopped)
// calls it.
func (c *Conn) flush(ctx context.Context) error {
	for {
		b, fresh := c.nextBatch()
		if b == nil {
			return nil
		}
		if err := c.writeBatchRetrying(ctx, b); err != nil {
			return err
		}
		if msg := c.batchDone(b); msg != "" {
			glog.Info(msg)
		}
		if fresh {
			return nil
		}
	}
}

// writeBatchRetrying writes b, and writes it again at once, row by row for the statement at
// fault, when the database refuses a row's data.
func (c *Conn) writeBatchRetrying(ctx context.Context, b *batch) error {
	b.prepare()
	for {
		dropped, err := c.writeBatch(ctx, b)
		var re *rowError
		switch {
		case err == nil:
			total := 0
			for t := range numTables {
				// A peer's xbt_files_users and chihaya_baselines rows count as one peer row, but
				// either may be refused.
				c.metrics.flushed.WithLabelValues(t.String()).Add(float64(max(b.counts[t]-dropped[t], 0)))
				total += dropped[t]
			}
			if total > 0 {
				c.metrics.dropped.Add(float64(total))
				glog.Errorf("gazelle: flush batch %d: dropped %d rows the database refused (the first of each statement are logged above)", b.id, total)
			}
			return nil
		case errors.Is(err, errApplied):
			glog.Warningf("gazelle: flush batch %d: already in the database (an earlier attempt committed; its reply was lost): not writing it again", b.id)
			for t := range numTables {
				c.metrics.flushed.WithLabelValues(t.String()).Add(float64(b.counts[t]))
			}
			return nil
		case errors.As(err, &re) && b.rowByRow&(1<<re.kind) == 0:
			c.metrics.flushErrors.Inc()
			glog.Warningf("gazelle: flush batch %d: %v; writing %s row by row", b.id, err, re.kind)
			b.rowByRow |= 1 << re.kind
		default:
			return err
		}
	}
}

// writeBatch writes b in one transaction that begins by inserting b's marker row into
// chihaya_flushes. A duplicate key there means an earlier attempt committed b, and it returns
// errApplied; otherwise the statements follow in order (users, torrents, snatches, peers,
// tokens) and the transaction commits. Any error rolls the whole transaction back, so the
// batch is either applied once with its marker or not at all, and the marker is checked before
// anything else on every retry. It returns how many rows written row by row were refused, by
// table.
//
// FlushTimeout bounds each step (connecting and BEGIN, each statement, COMMIT) rather than the
// whole transaction, so that a big batch left by an outage is not cut short, while a server
// that stops answering fails the attempt within FlushTimeout.
func (c *Conn) writeBatch(ctx context.Context, b *batch) (dropped [numTables]int, err error) {
	txCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The transaction lives as long as txCtx; only its start is bounded here.
	timer := time.AfterFunc(c.params.FlushTimeout, cancel)
	tx, err := c.db.BeginTx(txCtx, nil)
	if !timer.Stop() && err == nil {
		_ = tx.Rollback()
		err = context.DeadlineExceeded
	}
	if err != nil {
		return dropped, fmt.Errorf("begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := c.step(txCtx, func(ctx context.Context) error {
		_, err := tx.ExecContext(ctx, markFlushSQL, b.id)
		return err
	}); err != nil {
		if mysqlCode(err) == 1062 {
			return dropped, errApplied
		}
		return dropped, fmt.Errorf("mark batch %d in chihaya_flushes: %w", b.id, err)
	}
	for k := range numStmts {
		n, err := c.exec(txCtx, tx, b, k)
		dropped[k.table()] += n
		if err != nil {
			return dropped, err
		}
	}
	committed = true
	if err := c.commitWithin(txCtx, tx); err != nil {
		return dropped, fmt.Errorf("commit: %w", err)
	}
	return dropped, nil
}

// step runs one statement with FlushTimeout.
func (c *Conn) step(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.params.FlushTimeout)
	defer cancel()
	return f(ctx)
}

// errNoCommitReply is a COMMIT that got no reply within FlushTimeout: it may or may not have
// been applied, which the batch's marker tells on the retry.
var errNoCommitReply = errors.New("no reply within flush_timeout (the retry will tell whether it was applied)")

// commitWithin commits tx, waiting no longer than FlushTimeout or ctx: the MySQL driver does
// not cancel a COMMIT, which would otherwise hold the flusher (and Close) for as long as a
// frozen server keeps its connection open. An abandoned COMMIT ends when its connection does.
func (c *Conn) commitWithin(ctx context.Context, tx *sql.Tx) error {
	done := make(chan error, 1)
	go func() { done <- c.commit(tx) }()
	t := time.NewTimer(c.params.FlushTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errNoCommitReply
	case <-ctx.Done():
		return fmt.Errorf("%w (the retry will tell whether it was applied)", ctx.Err())
	}
}

// exec runs statement k of b: in chunks of chunkRows rows, or row by row when b.rowByRow says
// so, skipping (and counting) the rows the database refuses as data.
func (c *Conn) exec(ctx context.Context, tx *sql.Tx, b *batch, k stmtKind) (dropped int, err error) {
	n := b.nrows[k]
	if n == 0 {
		return 0, nil
	}
	sh := c.writes.stmts[k]
	args := b.args[k]
	if b.rowByRow&(1<<k) != 0 {
		one := sh.sql(1)
		for i := range n {
			row := args[i*sh.cols : (i+1)*sh.cols]
			if err := c.step(ctx, func(ctx context.Context) error {
				_, err := tx.ExecContext(ctx, one, row...)
				return err
			}); err != nil {
				if rowErrorCodes[mysqlCode(err)] {
					dropped++
					if dropped <= maxDropLogs {
						glog.Warningf("gazelle: flush batch %d: %s: dropping row %v: %v", b.id, k, printable(row), err)
					}
					continue
				}
				return dropped, fmt.Errorf("%s: %w", k, err)
			}
		}
		return dropped, nil
	}
	for off := 0; off < n; off += chunkRows {
		m := min(chunkRows, n-off)
		if err := c.step(ctx, func(ctx context.Context) error {
			_, err := tx.ExecContext(ctx, sh.sql(m), args[off*sh.cols:(off+m)*sh.cols]...)
			return err
		}); err != nil {
			if rowErrorCodes[mysqlCode(err)] {
				return 0, &rowError{kind: k, err: err}
			}
			return 0, fmt.Errorf("%s: %w", k, err)
		}
	}
	return 0, nil
}

// maxDropLogs is how many refused rows of one statement are logged one by one.
const maxDropLogs = 10

// printable renders a row's arguments for a log line, a peer_id as hex.
func printable(row []any) []any {
	out := make([]any, len(row))
	for i, v := range row {
		if b, ok := v.([]byte); ok {
			out[i] = fmt.Sprintf("%x", b)
		} else {
			out[i] = v
		}
	}
	return out
}

// run is the flusher: every FlushInterval it writes what is queued, and when a flush fails it
// keeps the batch and retries on later ticks with backoff. It returns when c.quit closes,
// after its current flush (which c.runCtx, cancelled when Close's context ends, cuts short),
// leaving the rest to Close.
func (c *Conn) run() {
	defer close(c.runDone)
	tick := time.NewTicker(c.params.FlushInterval)
	defer tick.Stop()
	var (
		failures  int
		retryAt   time.Time
		lastPrune = time.Now()
		lastMemo  = time.Now()
		// The first tick prunes the baselines that expired while the tracker was down, and so
		// does the next after KeepBaselines changes the lifetime.
		lastBaselinePrune time.Time
		prunedLife        time.Duration = -1
	)
	for {
		select {
		case <-c.quit:
			return
		case now := <-tick.C:
			if now.Sub(lastMemo) >= memoGeneration {
				lastMemo = now
				c.mu.Lock()
				c.peerMemo.rotate()
				c.torrentMemo.rotate()
				c.mu.Unlock()
			}
			if now.Before(retryAt) {
				continue
			}
			err := c.flush(c.runCtx)
			if err == nil && now.Sub(lastPrune) >= pruneFlushEach && c.pendingRows() == 0 {
				// Only markers of batches this process has resolved are older than a day.
				lastPrune = now
				if perr := c.step(c.runCtx, func(ctx context.Context) error {
					_, err := c.db.ExecContext(ctx, pruneFlushSQL)
					return err
				}); perr != nil {
					glog.Warningf("gazelle: prune chihaya_flushes: %v", perr)
				}
			}
			if life := c.baselineLifetime(); err == nil && (now.Sub(lastBaselinePrune) >= pruneBaselinesEach || life != prunedLife) {
				lastBaselinePrune, prunedLife = now, life
				if n, perr := c.pruneBaselines(c.runCtx, now); perr != nil {
					glog.Warningf("gazelle: prune chihaya_baselines: %v", perr)
				} else if n > 0 {
					glog.Infof("gazelle: pruned %d baselines last seen more than %s ago", n, c.baselineLifetime())
				}
			}
			if err != nil {
				failures++
				c.flushFailed(err)
				wait := backoff(c.params.FlushInterval, failures)
				// Half an interval early, so that the tick the wait ends on is not missed.
				retryAt = now.Add(wait - c.params.FlushInterval/2)
				glog.Errorf("gazelle: flush to %s failed (attempt %d; %d rows queued; retrying in %s): %v",
					c.where, failures, c.pendingRows(), wait, err)
				continue
			}
			if failures > 0 {
				glog.Infof("gazelle: flush to %s succeeded after %d failed attempts", c.where, failures)
			}
			failures, retryAt = 0, time.Time{}
		}
	}
}

// flushFailed counts a failed flush.
func (c *Conn) flushFailed(error) {
	c.metrics.flushErrors.Inc()
}

// drain flushes until nothing is queued or ctx ends, retrying failures with a short backoff
// (at most FlushInterval), and returns the last error when rows remain.
func (c *Conn) drain(ctx context.Context) error {
	wait := 50 * time.Millisecond
	for failures := 0; c.pendingRows() > 0; {
		err := c.flush(ctx)
		if err == nil {
			continue
		}
		c.flushFailed(err)
		if failures++; failures == 1 {
			glog.Errorf("gazelle: closing: flush to %s failed (%d rows queued), retrying until the deadline: %v",
				c.where, c.pendingRows(), err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(wait*2, c.params.FlushInterval)
	}
	return nil
}

// pendingRows returns the rows queued, the batch being retried included.
func (c *Conn) pendingRows() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending
}

// pruneBaselines deletes the baselines last seen before now − the baseline lifetime, a chunk
// per statement, each within FlushTimeout, and returns how many it deleted.
func (c *Conn) pruneBaselines(ctx context.Context, now time.Time) (int64, error) {
	horizon := now.Add(-c.baselineLifetime()).Unix()
	var total int64
	for {
		var n int64
		err := c.step(ctx, func(ctx context.Context) error {
			res, err := c.db.ExecContext(ctx, pruneBaselinesSQL, horizon)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		total += n
		if err != nil || n < pruneBaselinesChunk {
			return total, err
		}
	}
}

// prepareWrites creates chihaya_flushes and chihaya_baselines when they are missing and picks
// the first batch ID: the start time in nanoseconds, or one past the greatest ID already used
// if that is larger (a clock set back). IDs then grow by one per batch, far slower than the
// clock, so no later start can reuse one.
func (c *Conn) prepareWrites(ctx context.Context) error {
	if _, err := c.db.ExecContext(ctx, createFlushesSQL); err != nil {
		return fmt.Errorf("gazelle: create table chihaya_flushes in %s: %w", c.where, err)
	}
	if _, err := c.db.ExecContext(ctx, createBaselinesSQL); err != nil {
		return fmt.Errorf("gazelle: create table chihaya_baselines in %s: %w", c.where, err)
	}
	var maxID uint64
	if err := c.db.QueryRowContext(ctx, maxFlushSQL).Scan(&maxID); err != nil {
		return fmt.Errorf("gazelle: read chihaya_flushes in %s: %w", c.where, err)
	}
	c.batchBase = max(uint64(time.Now().UnixNano()), maxID+1)
	return nil
}
