package redis

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// pendingStep is one call on a pendingGlobals: add (ih set), addCounts (counts set) or take
// (take > 0, with what it must return).
type pendingStep struct {
	ih             string
	index, session int64
	counts         [5]int64

	take       int
	wantTaken  []pendingEntry
	wantCounts [5]int64
}

func stepAdd(ih string, index, session int64) pendingStep {
	return pendingStep{ih: ih, index: index, session: session}
}

func stepCounts(c ...int64) pendingStep {
	var s pendingStep
	copy(s.counts[:], c)
	return s
}

func stepTake(n int, counts [5]int64, es ...pendingEntry) pendingStep {
	return pendingStep{take: n, wantTaken: es, wantCounts: counts}
}

func entry(ih string, index, session int64) pendingEntry {
	return pendingEntry{ih: ih, pendingScores: pendingScores{index, session}}
}

// TestPendingGlobals checks the queue of deferred updates: scores merge to the lowest per
// torrent, each family on its own; torrents come out in the order they were first deferred;
// the bound drops the oldest; counter deltas add up into one sum.
func TestPendingGlobals(t *testing.T) {
	none := [5]int64{}
	for _, tt := range []struct {
		name        string
		max         int
		steps       []pendingStep
		wantDropped int
		// wantRest is what a final take of everything returns.
		wantRest   []pendingEntry
		wantCounts [5]int64
	}{
		{name: "empty"},
		{
			name:  "nothing to defer",
			steps: []pendingStep{stepAdd("a", -1, -1), stepCounts(0, 0, 0, 0, 0)},
		},
		{
			name:     "index scores merge to the lowest",
			steps:    []pendingStep{stepAdd("a", 50, -1), stepAdd("a", 30, -1), stepAdd("a", 40, -1)},
			wantRest: []pendingEntry{entry("a", 30, -1)},
		},
		{
			name:     "a removal (0) wins over any score",
			steps:    []pendingStep{stepAdd("a", 50, -1), stepAdd("a", 0, -1), stepAdd("a", 20, -1)},
			wantRest: []pendingEntry{entry("a", 0, -1)},
		},
		{
			name:     "index and session scores merge each on its own",
			steps:    []pendingStep{stepAdd("a", 50, -1), stepAdd("a", -1, 70), stepAdd("a", 60, 20), stepAdd("a", -1, 90)},
			wantRest: []pendingEntry{entry("a", 50, 20)},
		},
		{
			name:     "order of first deferral, kept by a merge",
			steps:    []pendingStep{stepAdd("b", 5, -1), stepAdd("a", 7, -1), stepAdd("c", -1, 3), stepAdd("b", 1, -1)},
			wantRest: []pendingEntry{entry("b", 1, -1), entry("a", 7, -1), entry("c", -1, 3)},
		},
		{
			name:        "the bound drops the oldest",
			max:         2,
			steps:       []pendingStep{stepAdd("a", 1, -1), stepAdd("b", 2, -1), stepAdd("c", 3, -1), stepAdd("d", 4, -1)},
			wantDropped: 2,
			wantRest:    []pendingEntry{entry("c", 3, -1), entry("d", 4, -1)},
		},
		{
			name:     "a merge at the bound drops nothing",
			max:      2,
			steps:    []pendingStep{stepAdd("a", 1, -1), stepAdd("b", 2, -1), stepAdd("a", 0, -1), stepAdd("b", -1, 9)},
			wantRest: []pendingEntry{entry("a", 0, -1), entry("b", 2, 9)},
		},
		{
			name:       "counter deltas add up",
			steps:      []pendingStep{stepCounts(1, 1, 0, 0, 0), stepCounts(0, 0, 0, 1, 0), stepCounts(1, 0, 1, 0, -1)},
			wantCounts: [5]int64{2, 1, 1, 1, -1},
		},
		{
			name:  "counter deltas that cancel leave nothing",
			steps: []pendingStep{stepCounts(1, 1, 0, 0, 0), stepCounts(-1, -1, 0, 0, 0)},
		},
		{
			name: "take hands out the oldest and every delta",
			steps: []pendingStep{
				stepAdd("a", 1, -1), stepAdd("b", 2, -1), stepCounts(1, 0, 0, 0, 0), stepAdd("c", 3, -1),
				stepTake(2, [5]int64{1, 0, 0, 0, 0}, entry("a", 1, -1), entry("b", 2, -1)),
				stepCounts(0, 1, 0, 0, 0), stepAdd("a", 5, -1),
			},
			wantRest:   []pendingEntry{entry("c", 3, -1), entry("a", 5, -1)},
			wantCounts: [5]int64{0, 1, 0, 0, 0},
		},
		{
			name: "taken back after a failure, a torrent merges with what came meanwhile",
			steps: []pendingStep{
				stepAdd("a", 10, -1),
				stepTake(10, none, entry("a", 10, -1)),
				stepAdd("a", 20, -1), // meanwhile
				stepAdd("a", 10, -1), // the failed flush defers it again
			},
			wantRest: []pendingEntry{entry("a", 10, -1)},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := pendingGlobals{max: tt.max}
			if q.max == 0 {
				q.max = maxPending
			}
			dropped := 0
			for i, s := range tt.steps {
				switch {
				case s.take > 0:
					es, counts := q.take(s.take)
					assert.Equal(t, s.wantTaken, es, "step %d: taken", i)
					assert.Equal(t, s.wantCounts, counts, "step %d: counts taken", i)
				case s.ih != "":
					dropped += q.add(s.ih, s.index, s.session)
				default:
					q.addCounts(s.counts)
				}
				assert.LessOrEqual(t, len(q.order), q.max, "step %d", i)
				assert.Len(t, q.byHash, len(q.order), "step %d: map and order agree", i)
			}
			assert.Equal(t, tt.wantDropped, dropped, "dropped")
			wantSize := len(tt.wantRest)
			if tt.wantCounts != none {
				wantSize++
			}
			assert.EqualValues(t, wantSize, q.size.Load(), "size")
			es, counts := q.take(maxPending)
			assert.Equal(t, tt.wantRest, es, "rest")
			assert.Equal(t, tt.wantCounts, counts, "counts")
			assert.Zero(t, q.size.Load(), "size after taking everything")
			es, counts = q.take(maxPending)
			assert.Empty(t, es)
			assert.Equal(t, none, counts)
		})
	}
}

// TestDeferGlobal checks the deferred form of each kind of update: every score becomes a
// ZADD LT of it, a removal a ZADD LT 0, and the deltas are added.
func TestDeferGlobal(t *testing.T) {
	for _, tt := range []struct {
		name string
		g    global
		want []pendingEntry
	}{
		{"nothing", global{index: indexKeep, sessionAt: -1}, nil},
		{"index lowered", global{index: 100, indexLT: true, sessionAt: -1}, []pendingEntry{entry("h", 100, -1)}},
		{"index set by a reap", global{index: 100, sessionAt: -1}, []pendingEntry{entry("h", 100, -1)}},
		{"index removed", global{index: indexRemove, sessionAt: -1}, []pendingEntry{entry("h", 0, -1)}},
		{"session lowered", global{index: indexKeep, sessionAt: 50}, []pendingEntry{entry("h", -1, 50)}},
		{"session set by a prune", global{index: indexKeep, sessionAt: 50, sessionExact: true}, []pendingEntry{entry("h", -1, 50)}},
		{"session removed", global{index: indexKeep, sessionAt: -1, removeSessions: true}, []pendingEntry{entry("h", -1, 0)}},
		{"torrent dropped", global{index: indexRemove, sessionAt: -1, removeSessions: true, counts: [5]int64{-1, -2, 0, -3, 0}}, []pendingEntry{entry("h", 0, 0)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(DefaultParams())
			defer p.Close()
			tt.g.ih = "h"
			p.deferGlobal(&tt.g)
			es, counts := p.pending.take(maxPending)
			assert.Equal(t, tt.want, es)
			assert.Equal(t, tt.g.counts, counts)
		})
	}
}

// TestSettle checks what settle defers from a pipeline's outcome: the commands that failed
// (whether or not they ran), and the counter deltas unless the script's reply says it applied
// them, even when go-redis marked it failed.
func TestSettle(t *testing.T) {
	ctx := context.Background()
	errTimeout := errors.New("i/o timeout")
	zadd := func(err error) goredis.Cmder {
		c := goredis.NewIntCmd(ctx, "zadd")
		c.SetErr(err)
		return c
	}
	counts := func(v any, err error) *goredis.Cmd {
		c := goredis.NewCmd(ctx, "evalsha")
		if v != nil {
			c.SetVal(v)
		}
		c.SetErr(err)
		return c
	}
	deltas := [5]int64{1, 0, 1, 0, 0}
	for _, tt := range []struct {
		name       string
		rec        globalCmds
		pipeErr    error
		wantErr    bool
		want       []pendingEntry
		wantCounts [5]int64
	}{
		{name: "nothing queued"},
		{
			name: "all applied",
			rec: globalCmds{
				ops:    []globalOp{{cmd: zadd(nil), ih: "a", score: 5}, {cmd: zadd(nil), ih: "a", sessions: true, score: 6}},
				counts: counts(int64(1_700_000_000_000), nil), deltas: deltas,
			},
		},
		{
			name: "failed scores are deferred",
			rec: globalCmds{ops: []globalOp{
				{cmd: zadd(nil), ih: "a", score: 5},
				{cmd: zadd(errTimeout), ih: "b", score: 7},
				{cmd: zadd(errTimeout), ih: "b", sessions: true, score: 0},
			}},
			pipeErr: errTimeout,
			wantErr: true,
			want:    []pendingEntry{entry("b", 7, 0)},
		},
		{
			name:       "counts without a reply are deferred",
			rec:        globalCmds{counts: counts(nil, errTimeout), deltas: deltas},
			pipeErr:    errTimeout,
			wantErr:    true,
			wantCounts: deltas,
		},
		{
			name:       "counts refused for their deadline are deferred",
			rec:        globalCmds{counts: counts(int64(-1_700_000_000_000), nil), deltas: deltas},
			wantErr:    true,
			wantCounts: deltas,
		},
		{
			name: "counts applied although marked failed are not deferred",
			rec: globalCmds{
				ops:    []globalOp{{cmd: zadd(errTimeout), ih: "a", score: 5}},
				counts: counts(int64(1_700_000_000_000), context.DeadlineExceeded), deltas: deltas,
			},
			pipeErr: errTimeout,
			wantErr: true,
			want:    []pendingEntry{entry("a", 5, -1)},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(DefaultParams())
			defer p.Close()
			err := p.settle(ctx, &tt.rec, tt.pipeErr, time.Now())
			if tt.wantErr {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
			es, c := p.pending.take(maxPending)
			assert.Equal(t, tt.want, es)
			assert.Equal(t, tt.wantCounts, c)
		})
	}
}

// TestSettleClockOffset checks that a clean reply of the counts script sets the estimate of the
// server's clock minus the client's, and that countsDeadline uses it.
func TestSettleClockOffset(t *testing.T) {
	ctx := context.Background()
	p := NewPool(DefaultParams())
	defer p.Close()
	done := time.UnixMilli(1_700_000_000_000)
	for _, tt := range []struct {
		reply   int64
		pipeErr error
		want    int64
	}{
		{reply: 1_700_000_005_000, want: 5000},
		{reply: -1_699_999_998_000, want: -2000}, // a refusal tells the time too
		{reply: 1_700_000_100_000, pipeErr: errors.New("other node failed"), want: -2000},
	} {
		c := goredis.NewCmd(ctx, "evalsha")
		c.SetVal(tt.reply)
		_ = p.settle(ctx, &globalCmds{counts: c, deltas: [5]int64{1}}, tt.pipeErr, done)
		assert.Equal(t, tt.want, p.clockOffset.Load(), "reply %d", tt.reply)
	}
	p.pending.take(maxPending)

	now := time.UnixMilli(1_800_000_000_000)
	p.clockOffset.Store(0)
	for _, tt := range []struct {
		name    string
		timeout time.Duration // 0: none
		offset  int64
		want    time.Duration // after now
	}{
		{name: "read timeout", want: 3*time.Second - maxCountsMargin},
		{name: "context deadline", timeout: 400 * time.Millisecond, want: 300 * time.Millisecond},
		{name: "short context deadline", timeout: 200 * time.Millisecond, want: 150 * time.Millisecond},
		{name: "expired", timeout: -time.Second, want: -time.Second},
		{name: "offset", timeout: 400 * time.Millisecond, offset: -2000, want: 300*time.Millisecond - 2*time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout != 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, now.Add(tt.timeout))
				defer cancel()
			}
			p.clockOffset.Store(tt.offset)
			assert.Equal(t, now.Add(tt.want).UnixMilli(), p.countsDeadline(ctx, now))
		})
	}
}

// errorsOf returns chihaya_redis_errors_total{op} of pool.
func errorsOf(t *testing.T, pool *Pool, op string) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, pool.metrics.errors.WithLabelValues(op).Write(&m))
	return m.GetCounter().GetValue()
}

// pidOf returns the process ID of the Redis node behind c, which must run on this host.
func pidOf(ctx context.Context, t *testing.T, c *goredis.Client) int {
	t.Helper()
	host, _, err := net.SplitHostPort(c.Options().Addr)
	require.NoError(t, err)
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		t.Skipf("the node %s is not on loopback: cannot pause it", c.Options().Addr)
	}
	info, err := c.Info(ctx, "server").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			require.NoError(t, err)
			comm, err := os.ReadFile("/proc/" + v + "/comm")
			if err == nil {
				require.Contains(t, string(comm), "redis", "process %d of %s", pid, c.Options().Addr)
			}
			return pid
		}
	}
	t.Fatalf("no process_id in INFO server of %s", c.Options().Addr)
	return 0
}

// TestClusterGlobalDeferred pauses (SIGSTOP) the master that holds the global keys while a
// torrent on another master gains a seeder and a leecher: both announces succeed, answered from
// the updated swarm, and the failed updates of the global keys are counted and kept. The
// pipeline the paused master received runs when it resumes, but too late to change the
// counters. The next reaping pass, which reaps nothing, applies the deferred updates: the
// counters and the index are right (counted once); a later pass reaps the peers and the
// counters go back to zero.
func TestClusterGlobalDeferred(t *testing.T) {
	addrs := clusterAddrs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seed := openClusterPrefix(t, addrs, randomPrefix("probe"))
	defer seed.Close()
	cc, ok := seed.Client().(*goredis.ClusterClient)
	require.True(t, ok, "client is a %T", seed.Client())
	master := func(key string) *goredis.Client {
		t.Helper()
		c, err := cc.MasterForKey(ctx, key)
		require.NoError(t, err, "master of %q", key)
		return c
	}

	// A prefix whose three global keys share a master, and a torrent on another one.
	var prefix, globalAddr string
	for i := 0; prefix == "" && i < 1000; i++ {
		pre := randomPrefix("global")
		a := master(pre + "torrents").Options().Addr
		if master(pre+"counts").Options().Addr == a && master(pre+"sessions").Options().Addr == a {
			prefix, globalAddr = pre, a
		}
	}
	require.NotEmpty(t, prefix, "no prefix with the global keys on one master")
	var ih models.InfoHash
	for n := 0; ; n++ {
		require.Less(t, n, 1000, "no torrent off the master %s", globalAddr)
		ih = models.InfoHash{0: 0xd1, 1: byte(n), 2: byte(n >> 8)}
		if master(torrentKeyOf(prefix, ih)).Options().Addr != globalAddr {
			break
		}
	}
	t.Cleanup(func() { assert.NoError(t, deletePrefix(Params{ClusterAddrs: addrs, KeyPrefix: prefix})) })
	pool := openClusterPrefix(t, addrs, prefix)
	defer pool.Close()
	pc := pool.Client().(*goredis.ClusterClient)
	gm, err := pc.MasterForKey(ctx, pool.counts)
	require.NoError(t, err)
	pid := pidOf(ctx, t, gm)
	// Registered after the key cleanup, so that it runs first: the node resumes whatever happens.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })

	// The counts script is known to the paused master, and the pool holds a pipeline
	// connection to it (go-redis keeps those apart), so that the first announce's pipeline
	// reaches it and runs when it resumes.
	require.NoError(t, countsScript.Load(ctx, pc).Err())
	_, err = pc.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		pipe.HGetAll(ctx, pool.counts)
		return nil
	})
	require.NoError(t, err)

	now := time.Now()
	announce := func(i int, seeder bool, timeout time.Duration) (tracker.AnnounceResult, time.Duration, error) {
		u := tracker.PeerUpdate{
			Key:      models.PeerKey{ID: models.PeerID{0: 0xd1, 1: byte(i)}, Family: models.IPv4},
			AddrPort: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)}), uint16(6881+i)),
			Seeder:   seeder, Create: true, Time: now,
		}
		sel := tracker.Selection{Want: 50, IPv4: true}
		var res tracker.AnnounceResult
		actx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		err := pool.Announce(actx, ih, &u, &sel, &res)
		return res, time.Since(start), err
	}
	counts := func() models.SwarmCounts {
		t.Helper()
		c, err := pool.SwarmCounts(ctx)
		require.NoError(t, err)
		return c
	}
	score := func() (float64, error) { return pc.ZScore(ctx, pool.index, string(ih[:])).Result() }

	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	stopped := time.Now()
	const timeout = 400 * time.Millisecond
	res, took, err := announce(1, true, timeout)
	require.NoError(t, err, "seeder: the swarm was updated")
	assert.Equal(t, 1, res.Seeders)
	assert.Less(t, took, 5*time.Second, "bounded by the request's deadline")
	res, _, err = announce(2, false, timeout)
	require.NoError(t, err, "leecher: the swarm was updated")
	assert.Equal(t, 1, res.Seeders)
	assert.Equal(t, 1, res.Leechers)
	assert.Len(t, res.IPv4Peers, 1, "the seeder handed out")
	require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
	t.Logf("master %s (pid %d) paused for %v", globalAddr, pid, time.Since(stopped))

	// The first failure holds the announces that follow within globalHoldFor from trying: the
	// leecher's update was deferred without a round trip to the paused master.
	assert.Equal(t, float64(1), errorsOf(t, pool, opGlobal), "the seeder's failed update counted, the leecher's not tried")
	assert.Zero(t, errorsOf(t, pool, opAnnounce), "no announce failed")
	assert.EqualValues(t, 2, pool.pending.size.Load(), "the torrent's index entry and the counter deltas wait")

	// The resumed master ran the first announce's pipeline, but past its deadline: the counters
	// are untouched (its ZADD LT of the index went through, harmlessly).
	require.Eventually(t, func() bool { return gm.Ping(ctx).Err() == nil }, 10*time.Second, 20*time.Millisecond)
	stale, err := gm.HGetAll(ctx, pool.counts).Result()
	require.NoError(t, err)
	assert.Empty(t, stale, "counters changed by a pipeline that ran after its deadline")
	_, err = score()
	require.NoError(t, err, "the first announce's pipeline did not run on resume: this test no longer covers that")

	// A pass that reaps nothing applies what was deferred (again, should the first try still
	// meet a connection the pause broke).
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := pool.Reap(ctx, now.Add(-time.Hour), true)
		require.NoError(t, err)
		assert.Zero(t, r.Peers)
		if pool.pending.size.Load() == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "still %d pending", pool.pending.size.Load())
		time.Sleep(50 * time.Millisecond)
	}
	assert.Zero(t, pool.globalHold.Load(), "a pass that applied the queue ends the hold")
	var want models.SwarmCounts
	want.Torrents, want.Seeders[models.IPv4], want.Leechers[models.IPv4] = 1, 1, 1
	assert.Equal(t, want, counts(), "counted once")
	s, err := score()
	require.NoError(t, err, "the torrent is indexed")
	assert.Equal(t, float64(now.Unix()), s)

	// A pass past the peers' time reaps them, and the counters go back to zero.
	r, err := pool.Reap(ctx, now.Add(time.Hour), true)
	require.NoError(t, err)
	assert.Equal(t, 2, r.Peers)
	assert.Equal(t, 1, r.Torrents)
	assert.Equal(t, models.SwarmCounts{}, counts())
	_, err = score()
	assert.ErrorIs(t, err, goredis.Nil, "the purged torrent left the index")
	assert.Zero(t, pool.pending.size.Load())
}

// torrentKeyOf returns a key of ih's hash tag under prefix.
func torrentKeyOf(prefix string, ih models.InfoHash) string {
	p := Pool{prefix: prefix}
	return p.torrentKeys(ih)[keyTorrent]
}
