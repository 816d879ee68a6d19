package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"
	goredis "github.com/redis/go-redis/v9"
)

// Updates of the global keys in cluster mode.
//
// A script cannot touch the global keys in cluster mode (the index, the counters and the
// session index live in other slots than the torrent), so it replies with a global, which the
// driver applies in a second, pipelined round trip. When that round trip fails (the master of
// a global key is down, paused, or slow past the deadline), the swarm was updated all the same:
// the update is deferred rather than lost. The pool keeps it in a bounded queue
// (pendingGlobals) and applies it again at the start of every reaping pass, and along with the
// next announce that updates the global keys anyway, until it goes through. Every failure is
// counted in chihaya_redis_errors_total{op="global"}; an announce whose script succeeded is
// answered successfully all the same.
//
// A deferred update may land late, after updates that this or another process applied in the
// meantime, so what is kept is not the command that failed but a form of it that stays right
// whenever it lands:
//
//   - Counter deltas add up in any order: the queue keeps their sum.
//   - An index (or session index) score is kept as a ZADD LT, the lowest per torrent. The score
//     is a lower bound of the time of the torrent's oldest peer (session), and a lower bound
//     applied late is still one: at worst a reaping pass visits the torrent sooner, and the
//     reaping script re-reads the real swarm and sets the exact score or removes the entry. So
//     an exact score (from a reaping pass) is deferred as a ZADD LT of it, and a removal as a
//     ZADD LT 0: a late removal could drop the entry of a torrent that gained a peer in the
//     meantime and leave it unreaped, whereas a score of 0 has the next pass (Prune, for the
//     session index) look at the torrent and remove the entry itself if it is still due.
//     Since every deferred score is a ZADD LT, merging by torrent (the minimum) and applying
//     in any order give the same result.
//
// Counter deltas are the one part that is not idempotent. HINCRBY cannot tell a first
// application from a repeat without a token per call, and such tokens (one key per announce
// that changes a swarm, kept as long as a retry may come, and one more command each) would
// cost every announce. Yet the common failure is a server that stalls (paused, swapping, busy
// with a long command): the client gives up at its deadline while its pipeline waits in the
// server's socket buffer, and runs when the server resumes, so that a blind re-application
// would count twice. Hence the deltas go through countsScript, which applies them only if the
// server's clock has not passed the client's deadline less a margin: a pipeline that runs
// after the client gave up changes no counter (its scores are harmless, as above), and one
// that runs in time is answered in time.
// The script replies with the server's time, from which the pool keeps the offset between
// its clock and the server's. What stays ambiguous, and is accepted: a reply lost although the
// script ran in time (the connection broke just after, or the reply took longer than the
// margin), and go-redis's own retry of a pipeline whose connection broke (it sends the
// node's commands again); a re-application then counts twice. Both are rare, and the counters
// feed SwarmCounts (statistics), not any announce.

// Special values of global.index.
const (
	indexKeep   = -1 // leave the index entry alone
	indexRemove = -2 // remove it
)

// global is what a script could not do to the global keys in cluster mode, for applyGlobals.
type global struct {
	ih string
	// index is the torrent's new index score, or indexKeep or indexRemove. With indexLT it
	// only lowers the score (or adds the entry).
	index   int64
	indexLT bool
	// counts are the deltas of the swarm counters t, s4, s6, l4, l6.
	counts [5]int64
	// sessionAt, when not negative, lowers the torrent's session index score to it (sets it,
	// with sessionExact); a negative one leaves it, and removeSessions drops the entry.
	sessionAt      int64
	sessionExact   bool
	removeSessions bool
}

// changes tells whether applyGlobals has anything to do for g.
func (g *global) changes() bool {
	return g.index != indexKeep || g.counts != [5]int64{} || g.sessionAt >= 0 || g.removeSessions
}

var countFields = [5]string{"t", "s4", "s6", "l4", "l6"}

// deltas reads the five counter deltas of a script reply into g.
func deltas(g *global, v []any) {
	for i := range g.counts {
		g.counts[i] = asInt(v[i])
	}
}

const (
	// maxPending bounds the torrents whose deferred scores a pool keeps; past it the oldest
	// go, counted in chihaya_redis_global_dropped_total (such a torrent is indexed again by its
	// next new peer). The counter deltas are one sum, whatever their number.
	maxPending = 1 << 16
	// announceFlush is how many pending torrents an announce that updates the global keys
	// carries along in its pipeline.
	announceFlush = 32
	// flushBatch is how many globals, or pending torrents, one pipeline carries.
	flushBatch = 1024
	// maxCountsMargin bounds what countsDeadline takes off the client's deadline.
	maxCountsMargin = 100 * time.Millisecond
	// globalHoldFor is how long announces defer their updates of the global keys without
	// trying after one failed; a reaping pass that applies the queue ends it sooner.
	globalHoldFor = time.Second
)

// pendingScores are the lowest index and session index scores deferred for one torrent, to be
// applied with ZADD LT; -1 for none.
type pendingScores struct{ index, session int64 }

// pendingEntry is one torrent's deferred scores, as take hands them out.
type pendingEntry struct {
	ih string
	pendingScores
}

// pendingGlobals is a pool's queue of deferred updates of the global keys (see the comment at
// the top of this file): per torrent, the lowest scores to apply, in the order the torrents
// were first deferred; and the sum of the counter deltas. It is safe for concurrent use.
type pendingGlobals struct {
	max int
	// size is the number of torrents queued, plus one while the counter deltas are not all
	// zero. It is read without the lock, so that an announce with nothing pending takes none.
	size atomic.Int64

	mu     sync.Mutex
	byHash map[string]pendingScores
	order  []string // the torrents of byHash, oldest first
	counts [5]int64
}

// lowest merges two scores of which -1 means none.
func lowest(a, b int64) int64 {
	switch {
	case a < 0:
		return b
	case b < 0:
		return a
	}
	return min(a, b)
}

// add defers the scores of ih (-1: none), merged with those already deferred, and returns how
// many of the oldest torrents it dropped to stay within q.max.
func (q *pendingGlobals) add(ih string, index, session int64) (dropped int) {
	if index < 0 && session < 0 {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if s, ok := q.byHash[ih]; ok {
		q.byHash[ih] = pendingScores{lowest(s.index, index), lowest(s.session, session)}
		return 0
	}
	if q.byHash == nil {
		q.byHash = make(map[string]pendingScores)
	}
	q.byHash[ih] = pendingScores{index, session}
	q.order = append(q.order, ih)
	for len(q.order) > max(q.max, 1) {
		delete(q.byHash, q.order[0])
		q.order[0] = ""
		q.order = q.order[1:]
		dropped++
	}
	q.resize()
	return dropped
}

// addCounts defers counter deltas.
func (q *pendingGlobals) addCounts(d [5]int64) {
	if d == ([5]int64{}) {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range d {
		q.counts[i] += d[i]
	}
	q.resize()
}

// take removes and returns the n oldest torrents (fewer if fewer are queued) and the whole sum
// of the counter deltas.
func (q *pendingGlobals) take(n int) ([]pendingEntry, [5]int64) {
	if q.size.Load() == 0 {
		return nil, [5]int64{}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var es []pendingEntry
	if n = min(n, len(q.order)); n > 0 {
		es = make([]pendingEntry, n)
		for i, ih := range q.order[:n] {
			es[i] = pendingEntry{ih, q.byHash[ih]}
			delete(q.byHash, ih)
			q.order[i] = ""
		}
		q.order = q.order[n:]
		if len(q.order) == 0 {
			q.order = nil
		}
	}
	counts := q.counts
	q.counts = [5]int64{}
	q.resize()
	return es, counts
}

func (q *pendingGlobals) resize() {
	n := int64(len(q.byHash))
	if q.counts != ([5]int64{}) {
		n++
	}
	q.size.Store(n)
}

// deferScores queues the scores of ih (-1: none), counting and logging what the bound drops.
func (p *Pool) deferScores(ih string, index, session int64) {
	n := p.pending.add(ih, index, session)
	if n == 0 {
		return
	}
	p.metrics.dropped.Add(float64(n))
	total := p.dropped.Add(uint64(n))
	if bits.Len64(total) != bits.Len64(total-uint64(n)) { // at 1, 2, 4, 8... drops
		glog.Warningf("redis: %d deferred updates of the torrent index dropped so far (more than %d torrents pending); those torrents are indexed again by their next new peer", total, p.pending.max)
	}
}

// deferGlobal queues all of g in its deferred form (see the comment at the top of this file).
func (p *Pool) deferGlobal(g *global) {
	index, session := int64(-1), int64(-1)
	switch {
	case g.index >= 0:
		index = g.index
	case g.index == indexRemove:
		index = 0
	}
	switch {
	case g.removeSessions:
		session = 0
	case g.sessionAt >= 0:
		session = g.sessionAt
	}
	p.deferScores(g.ih, index, session)
	p.pending.addCounts(g.counts)
}

// globalOp is one index or session index command of a pipeline, with the score to defer should
// it fail.
type globalOp struct {
	cmd      goredis.Cmder
	ih       string
	sessions bool
	score    int64
}

// globalCmds are the commands that queueGlobals queued, for settle.
type globalCmds struct {
	ops    []globalOp
	counts *goredis.Cmd // the countsScript call, nil without deltas
	deltas [5]int64
	buf    [2]globalOp // ops' first array: an announce queues at most two
}

// queueGlobals queues on pipe the commands of gs, then those of the pending entries es, then
// one countsScript call with the sum of their counter deltas and counts, and records them in
// rec.
func (p *Pool) queueGlobals(ctx context.Context, pipe goredis.Pipeliner, rec *globalCmds, gs []global, es []pendingEntry, counts [5]int64) {
	if rec.ops == nil {
		rec.ops = rec.buf[:0]
	}
	op := func(cmd goredis.Cmder, ih string, sessions bool, score int64) {
		rec.ops = append(rec.ops, globalOp{cmd: cmd, ih: ih, sessions: sessions, score: score})
	}
	for i := range gs {
		g := &gs[i]
		z := goredis.Z{Score: float64(g.index), Member: g.ih}
		switch {
		case g.index >= 0 && g.indexLT:
			op(pipe.ZAddLT(ctx, p.index, z), g.ih, false, g.index)
		case g.index >= 0:
			op(pipe.ZAdd(ctx, p.index, z), g.ih, false, g.index)
		case g.index == indexRemove:
			op(pipe.ZRem(ctx, p.index, g.ih), g.ih, false, 0)
		}
		z = goredis.Z{Score: float64(g.sessionAt), Member: g.ih}
		switch {
		case g.removeSessions:
			op(pipe.ZRem(ctx, p.sessions, g.ih), g.ih, true, 0)
		case g.sessionAt >= 0 && g.sessionExact:
			op(pipe.ZAdd(ctx, p.sessions, z), g.ih, true, g.sessionAt)
		case g.sessionAt >= 0:
			op(pipe.ZAddLT(ctx, p.sessions, z), g.ih, true, g.sessionAt)
		}
		for j, d := range g.counts {
			counts[j] += d
		}
	}
	for _, e := range es {
		if e.index >= 0 {
			op(pipe.ZAddLT(ctx, p.index, goredis.Z{Score: float64(e.index), Member: e.ih}), e.ih, false, e.index)
		}
		if e.session >= 0 {
			op(pipe.ZAddLT(ctx, p.sessions, goredis.Z{Score: float64(e.session), Member: e.ih}), e.ih, true, e.session)
		}
	}
	if counts != ([5]int64{}) {
		rec.deltas = counts
		rec.counts = p.countsCmd(ctx, false, counts)
		_ = pipe.Process(ctx, rec.counts)
	}
}

// countsCmd returns the command that runs countsScript for deltas d: by digest, or with eval
// by source.
func (p *Pool) countsCmd(ctx context.Context, eval bool, d [5]int64) *goredis.Cmd {
	verb, script := "evalsha", countsSHA
	if eval {
		verb, script = "eval", countsEval
	}
	return goredis.NewCmd(ctx, verb, script, "1", &p.counts, p.countsDeadline(ctx, time.Now()), d[0], d[1], d[2], d[3], d[4])
}

// countsDeadline returns the time, in unix milliseconds of the server's clock, after which the
// server must not apply counter deltas sent now: the time at which the client gives up
// waiting for the reply (the context's deadline or the read timeout, whichever is first), less
// a quarter of the time left up to maxCountsMargin, so that a reply sent by then arrives in
// time.
func (p *Pool) countsDeadline(ctx context.Context, now time.Time) int64 {
	end := now.Add(p.readTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end = dl
	}
	margin := min(max(end.Sub(now)/4, 0), maxCountsMargin)
	return end.Add(-margin).UnixMilli() + p.clockOffset.Load()
}

// errCountsLate is the failure of counter deltas that reached the server after their deadline.
var errCountsLate = errors.New("the counter deltas reached the server after their deadline")

// settle defers what the pipeline that ran rec did not apply, and returns why (nil when it
// applied everything). pipeErr is the pipeline's error; done is when it returned.
func (p *Pool) settle(ctx context.Context, rec *globalCmds, pipeErr error, done time.Time) error {
	var first error
	for _, o := range rec.ops {
		// A command with an error may have run (its reply was lost): applying its ZADD LT
		// again is harmless.
		if err := o.cmd.Err(); err != nil {
			first = cmp.Or(first, err)
			if o.sessions {
				p.deferScores(o.ih, -1, o.score)
			} else {
				p.deferScores(o.ih, o.score, -1)
			}
		}
	}
	if rec.counts == nil {
		return first
	}
	// The script ran if and only if its reply was read (go-redis may set an error on a
	// command whose reply it read, when it gives up on other commands of the pipeline).
	v, _ := rec.counts.Val().(int64)
	err := rec.counts.Err()
	if v == 0 && isNoScript(err) {
		// The node does not know the script (it restarted, or no process ran it there yet), so
		// nothing ran: send it again with its source, which the node then keeps.
		cmd := p.countsCmd(ctx, true, rec.deltas)
		_ = p.client.Process(ctx, cmd)
		v, _ = cmd.Val().(int64)
		err, pipeErr, done = cmd.Err(), cmd.Err(), time.Now()
	}
	if v != 0 && pipeErr == nil {
		// The script ran at the server's time |v|, before done by the client's clock, so
		// |v| - done is at most the offset between the clocks: an estimate that errs on the
		// side of refusing sooner.
		p.clockOffset.Store(max(v, -v) - done.UnixMilli())
	}
	switch {
	case v > 0:
		return first
	case v < 0:
		err = errCountsLate
	case err == nil:
		err = errors.New("counter deltas: no reply")
	}
	p.pending.addCounts(rec.deltas)
	return cmp.Or(first, err)
}

// globalErr wraps and counts the failure of an update of the global keys, which was deferred.
func (p *Pool) globalErr(err error) error {
	return p.fail(opGlobal, fmt.Errorf("redis: global keys (deferred): %w", err))
}

// settleGlobals settles rec after a pipeline that also carried other commands, and counts a
// failure.
func (p *Pool) settleGlobals(ctx context.Context, rec *globalCmds, pipeErr error) {
	if err := p.settle(ctx, rec, pipeErr, time.Now()); err != nil {
		_ = p.globalErr(err)
	}
}

// applyGlobals applies gs in pipelines of flushBatch (cluster mode), the first one carrying
// along up to flush pending torrents and the pending counter deltas. What is not applied is
// deferred; after a failed pipeline the rest of gs is deferred without being tried. A failure
// is counted under opGlobal and returned.
func (p *Pool) applyGlobals(ctx context.Context, gs []global, flush int) error {
	var es []pendingEntry
	var counts [5]int64
	if flush > 0 && p.pending.size.Load() > 0 {
		es, counts = p.pending.take(flush)
	}
	if len(gs) == 0 && len(es) == 0 && counts == ([5]int64{}) {
		return nil
	}
	var first error
	for lo := 0; ; lo += flushBatch {
		batch := gs[lo:min(lo+flushBatch, len(gs))]
		if first != nil {
			for i := range batch {
				p.deferGlobal(&batch[i])
			}
		} else {
			var rec globalCmds
			_, err := p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
				p.queueGlobals(ctx, pipe, &rec, batch, es, counts)
				return nil
			})
			first = p.settle(ctx, &rec, err, time.Now())
			es, counts = nil, [5]int64{}
		}
		if lo+flushBatch >= len(gs) {
			break
		}
	}
	if first != nil {
		return p.globalErr(first)
	}
	return nil
}

// flushPending applies the deferred updates, flushBatch torrents a pipeline, until none is left
// or one pipeline fails (what it did not apply is queued again).
func (p *Pool) flushPending(ctx context.Context) error {
	for rounds := p.pending.size.Load()/flushBatch + 1; rounds > 0 && p.pending.size.Load() > 0; rounds-- {
		if err := p.applyGlobals(ctx, nil, flushBatch); err != nil {
			return err
		}
	}
	return nil
}

// countsLua applies the swarm counters' deltas unless the server's clock has passed the
// client's deadline (see the comment at the top of this file). KEYS: counts. ARGV: deadline
// (unix milliseconds), then the deltas of t, s4, s6, l4, l6. Reply: the server's time in unix
// milliseconds, negated when it applied nothing because the deadline had passed.
const countsLua = `
redis.replicate_commands() -- writes after TIME (Redis 6.2; a no-op since 7.0)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[1]) then return -now end
local names = {'t', 's4', 's6', 'l4', 'l6'}
for i = 1, 5 do
  local d = tonumber(ARGV[i + 1])
  if d ~= 0 then redis.call('HINCRBY', KEYS[1], names[i], d) end
end
return now
`

var (
	countsScript = goredis.NewScript(countsLua)
	// The script's digest and source, boxed once.
	countsSHA  any = countsScript.Hash()
	countsEval any = countsLua
)
