//go:build unix

package gazelle

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// mariadbScript is .ci/mariadb.sh, from this package's directory.
var mariadbScript = filepath.Join("..", "..", ".ci", "mariadb.sh")

// server is a MariaDB server of the test's own, started with .ci/mariadb.sh, that the test may
// stop, restart and freeze without disturbing the shared one.
type server struct {
	dsn, dir string
}

// ownServer starts a server for the test and stops it (removing its directory) when the test
// ends. Like testDB it needs CHIHAYA_MYSQL_DSN, the sign that MariaDB is installed.
func ownServer(t *testing.T) *server {
	t.Helper()
	serverDSN(t)
	env := filepath.Join(t.TempDir(), "mariadb.env")
	out := script(t, 2*time.Minute, "start", env)
	f, err := os.Open(env)
	require.NoError(t, err, "mariadb.sh start: %s", out)
	defer f.Close()
	s := &server{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		v = strings.Trim(v, "'")
		switch k {
		case "CHIHAYA_MYSQL_DSN":
			s.dsn = v
		case "CHIHAYA_MYSQL_DIR":
			s.dir = v
		}
	}
	require.NotEmpty(t, s.dsn)
	require.NotEmpty(t, s.dir)
	t.Cleanup(func() { script(t, time.Minute, "stop", s.dir) })
	return s
}

// script runs .ci/mariadb.sh with args, failing the test when it fails.
func script(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", append([]string{mariadbScript}, args...)...).CombinedOutput()
	require.NoError(t, err, "mariadb.sh %s: %s", strings.Join(args, " "), out)
	return string(out)
}

func (s *server) stop(t *testing.T)  { script(t, time.Minute, "stop-keep", s.dir) }
func (s *server) start(t *testing.T) { script(t, time.Minute, "start-existing", s.dir) }

// signal sends sig to the server's mariadbd.
func (s *server) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "pid"))
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, sig))
}

// feeder records announces in the background, as a tracker under load does, and keeps the
// totals the database must end up with.
type feeder struct {
	c    *Conn
	stop chan struct{}
	done sync.WaitGroup

	mu       sync.Mutex
	up, down map[uint64]int64 // by user
	balance  map[uint64]int64 // by torrent
	snatches map[uint64]int64
	n        int
	errs     int
	slowest  time.Duration
}

func startFeeder(c *Conn) *feeder {
	f := &feeder{
		c: c, stop: make(chan struct{}),
		up: map[uint64]int64{}, down: map[uint64]int64{}, balance: map[uint64]int64{}, snatches: map[uint64]int64{},
	}
	for g := range 4 {
		f.done.Add(1)
		go f.run(uint64(g))
	}
	return f
}

func (f *feeder) run(g uint64) {
	defer f.done.Done()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	users := []uint64{1, 3, 5}
	for i := uint64(0); ; i++ {
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
		uid, tid := users[(i+g)%3], i%3+1
		d := announce(uid, tid, func(d *models.AnnounceDelta) {
			d.PeerID[19] = byte(g)
			d.CreditedUp, d.CreditedDown = int64(i%7+1), int64(i%5)
			d.UploadedDelta, d.DownloadedDelta = d.CreditedUp, d.CreditedDown+1
			d.Snatched = i%10 == 0
			d.Time = time.Now()
		})
		start := time.Now()
		err := f.c.RecordAnnounce(context.Background(), d)
		took := time.Since(start)
		f.mu.Lock()
		f.n++
		f.slowest = max(f.slowest, took)
		if err != nil {
			f.errs++
		} else {
			f.up[uid] += d.CreditedUp
			f.down[uid] += d.CreditedDown
			f.balance[tid] += d.UploadedDelta - d.DownloadedDelta
			if d.Snatched {
				f.snatches[tid]++
			}
		}
		f.mu.Unlock()
	}
}

// waitFor lets the feeder record at least n more announces.
func (f *feeder) waitFor(t *testing.T, n int) {
	t.Helper()
	f.mu.Lock()
	target := f.n + n
	f.mu.Unlock()
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.n >= target
	}, 30*time.Second, 5*time.Millisecond)
}

func (f *feeder) halt() {
	close(f.stop)
	f.done.Wait()
}

// TestDatabaseOutage records announces without pause while the database is stopped and
// started again, then frozen (SIGSTOP) and thawed, which may also leave a COMMIT applied whose
// reply never came: every delta lands exactly once, and recording never waits.
func TestDatabaseOutage(t *testing.T) {
	srv := ownServer(t)
	for _, layout := range layouts {
		t.Run(string(layout), func(t *testing.T) {
			dsn := testDBOn(t, srv.dsn, layout)
			// A short dial and I/O timeout, so that the frozen server fails flushes quickly.
			c := openOn(t, dsn+"?timeout=1s&readTimeout=2s&writeTimeout=2s", layout, func(p *Params) {
				p.FlushInterval = 50 * time.Millisecond
				p.FlushTimeout = time.Second
			})
			db := checkDB(t, dsn)
			up0, down0 := map[uint64]int64{}, map[uint64]int64{}
			for _, uid := range []uint64{1, 3, 5} {
				up0[uid], down0[uid] = userTotals(t, db, layout, uid)
			}
			bal0, snatch0 := map[uint64]int64{}, map[uint64]int64{}
			for tid := uint64(1); tid <= 3; tid++ {
				s, _ := torrentRowOf(t, db, layout, tid)
				bal0[tid], snatch0[tid] = s.Balance, s.Snatched
			}
			flushed := func() float64 { return counterValue(t, c.metrics.flushed.WithLabelValues("users")) }
			failedFlushes := func() float64 { return counterValue(t, c.metrics.flushErrors) }

			f := startFeeder(c)
			defer func() {
				select {
				case <-f.stop:
				default:
					f.halt()
				}
			}()
			require.Eventually(t, func() bool { return flushed() > 0 }, 30*time.Second, 10*time.Millisecond, "writes before the outage")

			t.Log("stopping the server")
			srv.stop(t)
			errs := failedFlushes()
			require.Eventually(t, func() bool { return failedFlushes() >= errs+2 }, 30*time.Second, 10*time.Millisecond)
			f.waitFor(t, 200)
			t.Logf("starting the server again (%d rows queued)", c.pendingRows())
			srv.start(t)
			written := flushed()
			require.Eventually(t, func() bool { return flushed() > written }, 60*time.Second, 10*time.Millisecond, "writes after the restart")

			t.Log("freezing the server")
			srv.signal(t, syscall.SIGSTOP)
			errs = failedFlushes()
			frozen := true
			defer func() {
				if frozen {
					srv.signal(t, syscall.SIGCONT)
				}
			}()
			require.Eventually(t, func() bool { return failedFlushes() >= errs+2 }, 30*time.Second, 10*time.Millisecond)
			f.waitFor(t, 200)
			t.Logf("thawing the server (%d rows queued)", c.pendingRows())
			srv.signal(t, syscall.SIGCONT)
			frozen = false
			f.waitFor(t, 100)
			f.halt()
			require.Eventually(t, func() bool { return c.pendingRows() == 0 }, 60*time.Second, 10*time.Millisecond, "the queue drains")

			f.mu.Lock()
			defer f.mu.Unlock()
			t.Logf("%d announces recorded, slowest %s, %d failed flushes", f.n, f.slowest, int(failedFlushes()))
			assert.Zero(t, f.errs, "nothing refused")
			assert.Less(t, f.slowest, time.Second, "recording never waits for the database")
			for _, uid := range []uint64{1, 3, 5} {
				up, down := userTotals(t, db, layout, uid)
				assert.Equal(t, up0[uid]+f.up[uid], up, "user %d uploaded", uid)
				assert.Equal(t, down0[uid]+f.down[uid], down, "user %d downloaded", uid)
			}
			var snatches int64
			for tid := uint64(1); tid <= 3; tid++ {
				s, _ := torrentRowOf(t, db, layout, tid)
				assert.Equal(t, bal0[tid]+f.balance[tid], s.Balance, "torrent %d balance", tid)
				assert.Equal(t, snatch0[tid]+f.snatches[tid], s.Snatched, "torrent %d snatched", tid)
				snatches += f.snatches[tid]
			}
			assert.Equal(t, int(snatches), count(t, db, "SELECT COUNT(*) FROM xbt_snatched"))
			assert.Zero(t, counterValue(t, c.metrics.dropped))
		})
	}
}

// commitCutter is a TCP proxy in front of MariaDB that, when armed, forwards the next COMMIT
// to the server and then cuts the connection as the server's reply arrives: the transaction is
// committed, and the client never learns it.
type commitCutter struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	// hang swallows the reply and keeps the connection open instead of cutting it, like a
	// server that froze after committing.
	hang  atomic.Bool
	cuts  atomic.Int32
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newCommitCutter(t *testing.T, target string) *commitCutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &commitCutter{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *commitCutter) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(client, server)
	}
}

func (p *commitCutter) pipe(client, server net.Conn) {
	var cutNext atomic.Bool
	go func() {
		defer p.wg.Done()
		defer client.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				if cutNext.Load() {
					if p.hang.Load() {
						if cutNext.CompareAndSwap(true, false) {
							p.cuts.Add(1)
						}
						// From now on the client hears nothing on this connection.
						for {
							if _, err := server.Read(buf); err != nil {
								return
							}
						}
					}
					p.cuts.Add(1)
					_ = server.Close()
					return
				}
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer p.wg.Done()
	defer server.Close()
	// Client to server, packet by packet: 3 bytes of length, a sequence number, the payload.
	r := bufio.NewReader(client)
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		payload := make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		if len(payload) > 0 && payload[0] == 0x03 /* COM_QUERY */ && string(payload[1:]) == "COMMIT" &&
			p.armed.CompareAndSwap(true, false) {
			cutNext.Store(true)
		}
		if _, err := server.Write(append(hdr[:], payload...)); err != nil {
			return
		}
	}
}

// TestCommitReplyLost loses a real COMMIT's reply on the wire, by cutting the connection or by
// never answering: the flush fails although the batch is in the database, and the retry finds
// its marker and writes nothing twice.
func TestCommitReplyLost(t *testing.T) {
	for _, tt := range []struct {
		layout Schema
		hang   bool
	}{{OPSnet, false}, {WhatCD, false}, {OPSnet, true}} {
		layout := tt.layout
		name := string(layout) + "/connection cut"
		if tt.hang {
			name = string(layout) + "/no reply"
		}
		t.Run(name, func(t *testing.T) {
			dsn := testDB(t, layout)
			cfg, err := mysql.ParseDSN(dsn)
			require.NoError(t, err)
			proxy := newCommitCutter(t, cfg.Addr)
			proxy.hang.Store(tt.hang)
			cfg.Addr = proxy.ln.Addr().String()
			c := openOn(t, cfg.FormatDSN(), layout, func(p *Params) { p.FlushTimeout = 500 * time.Millisecond })
			db := checkDB(t, dsn)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			record(t, c, announce(1, 3, func(d *models.AnnounceDelta) {
				d.CreditedUp, d.CreditedDown, d.UploadedDelta, d.Snatched, d.Token, d.TokenDown = 7, 3, 7, true, true, 4
			}))
			proxy.armed.Store(true)
			start := time.Now()
			err = c.flush(ctx)
			require.Error(t, err)
			t.Logf("flush: %v", err)
			assert.Less(t, time.Since(start), 5*time.Second, "a COMMIT without reply fails within flush_timeout")
			require.Equal(t, int32(1), proxy.cuts.Load())
			require.Equal(t, 5, c.pendingRows(), "the batch is kept")
			up, down := userTotals(t, db, layout, 1)
			require.Equal(t, [2]int64{1007, 503}, [2]int64{up, down}, "the server committed it")

			record(t, c, announce(1, 3, func(d *models.AnnounceDelta) { d.CreditedUp, d.UploadedDelta = 10, 10 }))
			require.NoError(t, c.flush(ctx), "the retry finds the batch applied and drops it")
			require.NoError(t, c.flush(ctx), "then writes what came since")
			assert.Zero(t, c.pendingRows())
			up, down = userTotals(t, db, layout, 1)
			assert.Equal(t, [2]int64{1017, 503}, [2]int64{up, down}, "each delta applied once")
			s, _ := torrentRowOf(t, db, layout, 3)
			assert.Equal(t, int64(13), s.Snatched)
			assert.Equal(t, int64(300+17), s.Balance)
			assert.Equal(t, 1, count(t, db, "SELECT COUNT(*) FROM xbt_snatched"))
			var tokenDown int64
			queryRow(t, db, "SELECT Downloaded FROM users_freeleeches WHERE UserID = 1 AND TorrentID = 3", nil, &tokenDown)
			assert.Equal(t, int64(4), tokenDown)
		})
	}
}
