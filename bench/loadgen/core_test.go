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

// TestFillVerifyAgainstCore fills the real core and checks by scrape that it stored every peer:
// distinct peer IDs and distinct ip:port, ten peers per torrent. A verify that expects more
// peers than were sent must report mismatches, so the check can fail.
func TestFillVerifyAgainstCore(t *testing.T) {
	addr := startCore(t)
	fill := Config{Mode: ModeUDPFill, Target: addr, Sockets: 8, Conns: 32, FillPeers: 1000, FillTorrents: 100, Timeout: time.Second}
	res, err := Run(context.Background(), fill, nil)
	require.NoError(t, err)
	assert.Zero(t, res.Errors, "first error: %s", res.FirstError)
	assert.Equal(t, uint64(1000), res.Kinds["announce"])

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
			v := fill
			v.Mode, v.FillPeers, v.VerifySample = ModeUDPVerify, tt.peers, 100
			res, err := Run(context.Background(), v, nil)
			require.NoError(t, err)
			require.NotNil(t, res.Verify)
			assert.Equal(t, 100, res.Verify.Torrents)
			assert.Equal(t, uint64(1000), res.Verify.Got)
			assert.Equal(t, uint64(tt.peers), res.Verify.Want)
			assert.Equal(t, tt.mismatches, res.Verify.Mismatches)
		})
	}
}
