package loadgen

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend"
	_ "github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/udp"
)

// startCore runs Chihaya's real core (memory driver, noop backend) behind its UDP frontend on
// 127.0.0.1 and returns the address; the test stops it.
func startCore(t *testing.T) string {
	t.Helper()
	cfg := config.Default()
	cfg.UDPReaders = 2
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err)
	be, err := backend.Open(cfg.Backend)
	require.NoError(t, err)
	tkr, err := tracker.New(&cfg, pool, be, nil)
	require.NoError(t, err)
	srv, err := udp.NewServer(&cfg, tkr)
	require.NoError(t, err)
	conn, err := udp.Listen("127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(conn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve: %v", err)
		}
		assert.NoError(t, pool.Close())
	})
	return conn.LocalAddr().String()
}

// TestUDPAgainstCore drives the real core with the UDP mix and checks that every answer was
// judged OK and that all three kinds of request were answered.
func TestUDPAgainstCore(t *testing.T) {
	addr := startCore(t)
	res, err := Run(context.Background(), Config{
		Mode: ModeUDP, Target: addr, Conns: 16, Sockets: 4, Torrents: 1000, Peers: 4000,
		Duration: 400 * time.Millisecond, Timeout: 2 * time.Second,
		ConnectEvery: 5, ScrapeEvery: 5, // enough of each kind in a short run
	}, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Errors, "first error: %s", res.FirstError)
	assert.Positive(t, res.Responses)
	assert.Positive(t, res.Kinds["announce"])
	assert.Positive(t, res.Kinds["scrape"])
	assert.Positive(t, res.Kinds["connect"])
	assert.Equal(t, res.Responses, res.Kinds["announce"]+res.Kinds["scrape"]+res.Kinds["connect"])
	assert.Positive(t, res.P50us)
	assert.GreaterOrEqual(t, res.P99us, res.P50us)
}

// TestFillVerifyAgainstCore fills the real core and checks by scrape that it stored every peer
// in its role: distinct peer IDs and distinct ip:port, ten peers per torrent, five of them
// seeding. A verify that expects more peers than were sent must report mismatches, so the
// check can fail; a second fill at an offset adds new peers rather than updating the first.
func TestFillVerifyAgainstCore(t *testing.T) {
	addr := startCore(t)
	fill := Config{Mode: ModeUDPFill, Target: addr, Sockets: 8, Conns: 32, FillPeers: 1000, FillTorrents: 100, Timeout: time.Second}
	res, err := Run(context.Background(), fill, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Errors, "first error: %s", res.FirstError)
	assert.Equal(t, uint64(1000), res.Kinds["announce"])

	verify := func(t *testing.T, peers int) *VerifyResult {
		t.Helper()
		v := fill
		v.Mode, v.FillPeers, v.VerifySample = ModeUDPVerify, peers, 100
		res, err := Run(context.Background(), v, nil)
		require.NoError(t, err)
		require.NotNil(t, res.Verify)
		return res.Verify
	}
	tests := []struct {
		name       string
		peers      int
		mismatches int
	}{
		{"what was sent", 1000, 0},
		{"more than was sent", 1050, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vr := verify(t, tt.peers)
			assert.Equal(t, 100, vr.Torrents)
			assert.Equal(t, uint64(1000), vr.Got)
			assert.Equal(t, uint64(500), vr.GotSeeders)
			assert.Equal(t, uint64(500), vr.GotLeechers)
			assert.Equal(t, uint64(tt.peers), vr.Want)
			assert.Equal(t, tt.mismatches, vr.Mismatches)
		})
	}

	t.Run("replacements add peers", func(t *testing.T) {
		churn := fill
		churn.FillOffset = fill.FillPeers
		res, err := Run(context.Background(), churn, nil)
		require.NoError(t, err)
		assert.Zero(t, res.Errors, "first error: %s", res.FirstError)
		vr := verify(t, 2*fill.FillPeers)
		assert.Zero(t, vr.Mismatches)
		assert.Equal(t, uint64(1000), vr.GotSeeders)
		assert.Equal(t, uint64(1000), vr.GotLeechers)
	})
}

// TestOpenAgainstCore drives the real core open-loop at a rate it sustains easily: every
// request is answered, the rate achieved is the rate offered, and the quantiles are ordered.
func TestOpenAgainstCore(t *testing.T) {
	addr := startCore(t)
	const rate, window = 2000.0, 500 * time.Millisecond
	res, err := Run(context.Background(), Config{
		Mode: ModeUDPOpen, Target: addr, Sockets: 4, Torrents: 1000, Peers: 4000, Rate: rate,
		Warmup: 100 * time.Millisecond, Duration: window, Timeout: time.Second,
		ConnectEvery: 5, ScrapeEvery: 5,
	}, nil)
	require.NoError(t, err)
	require.NotNil(t, res.Open)
	assert.Zero(t, res.Errors, "verdicts %v, first error: %s", res.ByVerdict, res.FirstError)
	assert.Zero(t, res.Open.Lost)
	assert.InDelta(t, rate*window.Seconds(), float64(res.Open.Sent), 1)
	assert.Equal(t, res.Open.Sent, res.Responses)
	assert.InDelta(t, rate, res.PerSecond, rate*0.01)
	assert.Positive(t, res.Kinds["announce"])
	assert.Positive(t, res.Kinds["scrape"])
	assert.Positive(t, res.Kinds["connect"])
	assert.Positive(t, res.P50us)
	assert.LessOrEqual(t, res.P50us, res.P99us)
	assert.LessOrEqual(t, res.P99us, res.P999us)
}
