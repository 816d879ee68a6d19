package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestScheduleDue(t *testing.T) {
	start := time.Unix(1000, 0)
	tests := []struct {
		name  string
		rate  float64
		after time.Duration
		want  int64
	}{
		{"before the start", 1000, -time.Nanosecond, 0},
		{"at the start: request 0", 1000, 0, 1},
		{"just before request 1", 1000, time.Millisecond - 1, 1},
		{"at request 1", 1000, time.Millisecond, 2},
		{"one second", 1000, time.Second, 1001},
		{"a rate that does not divide a second", 3, time.Second, 4},
		{"high rate", 250_000, 10 * time.Millisecond, 2501},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Schedule{Start: start, Rate: tt.rate}
			assert.Equal(t, tt.want, s.Due(start.Add(tt.after)))
		})
	}
}

// TestScheduleAgrees checks Due against At at random instants: exactly the requests due at or
// before now are counted, for rates whose intervals are not whole nanoseconds.
func TestScheduleAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for range 2000 {
		s := Schedule{Start: time.Unix(0, r.Int64N(1e18)), Rate: 1 + r.Float64()*300_000}
		now := s.Start.Add(time.Duration(r.Int64N(int64(10 * time.Second))))
		n := s.Due(now)
		require.Positive(t, n)
		require.False(t, s.At(n-1).After(now), "request %d due at %v, after now %v", n-1, s.At(n-1), now)
		require.True(t, s.At(n).After(now), "request %d due at %v, not after now %v", n, s.At(n), now)
		require.False(t, s.At(n).Before(s.At(n-1)), "the schedule goes back")
	}
}

func TestOpenRing(t *testing.T) {
	tests := []struct {
		rate    float64
		sockets int
		timeout time.Duration
		want    int
	}{
		{1000, 32, 2 * time.Second, 1024},
		{100_000, 32, 2 * time.Second, 16384}, // 12,500 in flight at most: twice that, rounded up
		{1_000_000, 1, time.Second, 1 << 21},
	}
	for _, tt := range tests {
		got := openRing(tt.rate, tt.sockets, tt.timeout)
		assert.Equal(t, tt.want, got, "rate %v", tt.rate)
		assert.GreaterOrEqual(t, float64(got), 2*tt.rate/float64(tt.sockets)*tt.timeout.Seconds())
	}
}

// stallingTracker is a minimal BEP 15 server that answers every request at once, except that
// after its stallAfter-th packet it stops reading for stall: the requests sent meanwhile wait
// in its socket buffer, as they would behind a collector pause.
func stallingTracker(t *testing.T, stallAfter int, stall time.Duration) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	require.NoError(t, c.SetReadBuffer(4<<20))
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = c.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		out := make([]byte, 0, 2048)
		for n := 1; ; n++ {
			m, from, err := c.ReadFromUDP(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil || m < 16 {
				continue
			}
			p := buf[:m]
			out = out[:0]
			tx := binary.BigEndian.Uint32(p[12:])
			if binary.BigEndian.Uint64(p) == udpProtocolID {
				out = binary.BigEndian.AppendUint32(out, ActionConnect)
				out = binary.BigEndian.AppendUint32(out, tx)
				out = binary.BigEndian.AppendUint64(out, 42)
			} else {
				action := binary.BigEndian.Uint32(p[8:])
				out = binary.BigEndian.AppendUint32(out, action)
				out = binary.BigEndian.AppendUint32(out, tx)
				if action == ActionAnnounce {
					out = append(out, make([]byte, 12)...) // interval, leechers, seeders; no peers
				} else {
					out = append(out, make([]byte, 12*((m-16)/20))...)
				}
			}
			_, _ = c.WriteToUDP(out, from)
			if n == stallAfter {
				time.Sleep(stall) // the fake's behaviour, not a wait for a condition
			}
		}
	}()
	return c.LocalAddr().String()
}

// TestOpenChargesStalls checks that open-loop latency counts from the schedule: a 200 ms stall
// of the server in a 1 s window at 1,000 requests a second delays about 200 requests, the first
// by about 200 ms, so the p99 must be well above 100 ms while the p50 stays small, and nothing
// is lost. A generator that waited for answers before sending (closed loop) would have sent
// only its window during the stall and reported a p99 near the p50.
func TestOpenChargesStalls(t *testing.T) {
	addr := stallingTracker(t, 300, 200*time.Millisecond)
	res, err := Run(context.Background(), Config{
		Mode: ModeUDPOpen, Target: addr, Sockets: 2, Torrents: 100, Peers: 1000, Rate: 1000,
		Warmup: 0, Duration: time.Second, Timeout: 2 * time.Second,
	}, nil)
	require.NoError(t, err)
	require.NotNil(t, res.Open)
	assert.Zero(t, res.Errors, "verdicts %v, first error: %s", res.ByVerdict, res.FirstError)
	assert.Zero(t, res.Open.Lost)
	assert.Greater(t, res.P99us, 150_000.0, "p99 %v µs", res.P99us)
	assert.Less(t, res.P50us, 50_000.0, "p50 %v µs", res.P50us)
	assert.InDelta(t, 1000, res.PerSecond, 10)
}
