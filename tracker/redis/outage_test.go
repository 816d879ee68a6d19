package redis

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

// throwawayServer is a redis-server of the test's own on a loopback port.
type throwawayServer struct {
	t    *testing.T
	bin  string
	addr string
	port int
	cmd  *exec.Cmd
}

// throwawayRedis starts a redis-server of the test's own on a free loopback port and stops it
// (resuming it first, should it be paused) at cleanup.
func throwawayRedis(t *testing.T) *throwawayServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		const msg = "redis-server not installed: run `bash .ci/redis.sh` once (it installs it)"
		if os.Getenv("CHIHAYA_REQUIRE_REDIS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	s := &throwawayServer{t: t, bin: bin, port: port, addr: "127.0.0.1:" + strconv.Itoa(port)}
	t.Cleanup(s.stop)
	s.start()
	return s
}

// start runs the server and waits until it answers, polling with a deadline.
func (s *throwawayServer) start() {
	t := s.t
	t.Helper()
	s.cmd = exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--daemonize", "no")
	require.NoError(t, s.cmd.Start())
	p := DefaultParams()
	p.Addr = s.addr
	probe := NewPool(p)
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := probe.client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		require.True(t, time.Now().Before(deadline), "redis-server on %s did not answer: %v", s.addr, err)
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the server, resuming it first should it be paused.
func (s *throwawayServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *throwawayServer) signal(sig os.Signal) {
	s.t.Helper()
	require.NoError(s.t, s.cmd.Process.Signal(sig))
}

type discardWriter struct{ n int }

func (w *discardWriter) WriteAnnounce(*models.AnnounceResponse) error { w.n++; return nil }

// TestOutage pauses the server under a tracker core: an announce fails within its request's
// deadline (well before the client's read timeout) with an error the frontends answer as a
// failure, the error is counted, and once the server resumes the same pool works again; so it
// does after the server restarts empty (the scripts are loaded again).
func TestOutage(t *testing.T) {
	srv := throwawayRedis(t)
	p := DefaultParams()
	p.Addr = srv.addr
	p.ReadTimeout = config.Duration{Duration: time.Minute} // only the request's deadline may end the wait
	p.WriteTimeout = p.ReadTimeout
	pool := NewPool(p)
	defer pool.Close()
	cfg := config.Default()
	tr, err := tracker.New(&cfg, pool, nil, nil)
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	for _, c := range pool.Collectors() {
		require.NoError(t, reg.Register(c))
	}
	errorsOf := func(op string) float64 {
		var m dto.Metric
		require.NoError(t, pool.metrics.errors.WithLabelValues(op).Write(&m))
		return m.GetCounter().GetValue()
	}

	a := &models.Announce{
		InfoHash: trackertest.Hash(1), PeerID: trackertest.PID(1),
		Endpoint: netip.MustParseAddrPort("127.0.0.2:6881"), Left: 10, NumWant: 50, Compact: true,
	}
	announce := func(timeout time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		var w discardWriter
		err := tr.HandleAnnounce(ctx, a, &w)
		if err == nil {
			assert.Equal(t, 1, w.n, "answer written")
		}
		return time.Since(start), err
	}
	_, err = announce(5 * time.Second)
	require.NoError(t, err)
	require.Zero(t, errorsOf(opAnnounce))

	srv.signal(syscall.SIGSTOP)
	const requestTimeout = 300 * time.Millisecond
	for i := 1; i <= 3; i++ {
		took, err := announce(requestTimeout)
		require.Error(t, err, "announce %d while paused", i)
		var ce models.ClientError
		assert.False(t, errors.As(err, &ce), "a tracker failure, answered as %q with an interval: %v", models.ErrInternal, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		// A bound far below the read timeout: the request's deadline ended the wait.
		assert.Less(t, took, 20*time.Second, "announce %d", i)
		assert.Equal(t, float64(i), errorsOf(opAnnounce), "errors counted")
	}
	_, err = pool.SwarmCounts(ctxTimeout(t, requestTimeout))
	require.Error(t, err)
	assert.Equal(t, float64(1), errorsOf(opCounts))

	srv.signal(syscall.SIGCONT)
	// The client redials by itself; the first announce after the resume may still meet a
	// connection the outage broke, so allow a few within a deadline.
	recovered := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := announce(2 * time.Second)
			if err == nil {
				return
			}
			require.True(t, time.Now().Before(deadline), "still failing after the %s: %v", what, err)
		}
	}
	recovered("resume")
	counts, err := pool.SwarmCounts(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, 1, counts.Torrents)
	assert.Equal(t, 1, counts.Leechers[models.IPv4])

	// The counter is exposed through the registry under its documented name.
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "chihaya_redis_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	assert.Len(t, got, 6, "one series per op")
	assert.Equal(t, errorsOf(opAnnounce), got[opAnnounce])
	assert.Equal(t, float64(1), got[opCounts])

	// A restarted server has lost the swarm and the scripts: the pool redials and reloads them.
	srv.stop()
	srv.start()
	recovered("restart")
	counts, err = pool.SwarmCounts(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, 1, counts.Torrents, "the swarm starts anew")
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
