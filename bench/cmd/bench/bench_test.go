package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/bench/loadgen"
	"github.com/chihaya/chihaya/config"
)

func TestParseShapes(t *testing.T) {
	tests := []struct {
		in      string
		want    []shape
		wantErr string
	}{
		{"1M/1M,1M/1", []shape{{1_000_000, 1_000_000}, {1_000_000, 1}}, ""},
		{" 10M/1M , 100k/10k,", []shape{{10_000_000, 1_000_000}, {100_000, 10_000}}, ""},
		{"1500/3", []shape{{1500, 3}}, ""},
		{"1M", nil, "want PEERS/TORRENTS"},
		{"1M/2M", nil, "more torrents than peers"},
		{"0/1", nil, "positive count"},
		{"1G/1", nil, "positive count"},
		{"-5/1", nil, "positive count"},
		{"3000M/1", nil, "positive count"},
		{"", nil, "no shape"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseShapes(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	assert.Equal(t, "10M/1M", shape{10_000_000, 1_000_000}.String())
	assert.Equal(t, "100k/1", shape{100_000, 1}.String())
	assert.Equal(t, "1500/3", shape{1500, 3}.String())
}

func TestSocketsFor(t *testing.T) {
	tests := []struct {
		peers, want int
		wantErr     bool
	}{
		{100_000, 32, false},
		{2_000_000, 32, false},   // 32 x 64,512 ports hold 2,064,384 peers
		{2_100_000, 33, false},   // one more source address
		{10_000_000, 156, false}, // ceil(10M / 64,512)
		{20_000_000, 0, true},    // more than 253 addresses
	}
	for _, tt := range tests {
		got, err := socketsFor(tt.peers)
		if tt.wantErr {
			assert.Error(t, err, "%d peers", tt.peers)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tt.want, got, "%d peers", tt.peers)
		assert.GreaterOrEqual(t, got*loadgen.PortsPerHost, tt.peers)
	}
}

// exampleConfig reads the repository's example_config.json as the bench does.
func exampleConfig(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "example_config.json"))
	require.NoError(t, err)
	var cf map[string]any
	require.NoError(t, json.Unmarshal(raw, &cf))
	return cf
}

// TestConfigsValidate checks that the configs the bench writes for Chihaya pass Chihaya's own
// validation, so that a workload never dies at start: the churn keys at several timeouts
// (peer_timeout must exceed announce, min_announce must not), and private mode.
func TestConfigsValidate(t *testing.T) {
	tests := []struct {
		name string
		keys map[string]any
		want func(t *testing.T, c *config.Config)
	}{
		{"plain", nil, func(t *testing.T, c *config.Config) {
			assert.Equal(t, "127.0.0.1:6881", c.Addr)
		}},
		{"churn, 1 minute", churnKeys(time.Minute), func(t *testing.T, c *config.Config) {
			assert.Equal(t, time.Minute, c.PeerTimeout.Duration)
			assert.Equal(t, time.Second, c.ReapInterval.Duration)
			assert.Less(t, c.Announce.Duration, c.PeerTimeout.Duration)
		}},
		{"churn, 4 seconds", churnKeys(4 * time.Second), func(t *testing.T, c *config.Config) {
			assert.Equal(t, 4*time.Second, c.PeerTimeout.Duration)
			assert.Less(t, c.Announce.Duration, c.PeerTimeout.Duration)
		}},
		{"churn, 10 minutes", churnKeys(10 * time.Minute), func(t *testing.T, c *config.Config) {
			assert.Equal(t, 10*time.Minute, c.PeerTimeout.Duration)
		}},
		{"private", privateKeys("u:p@tcp(127.0.0.1:1)/db"), func(t *testing.T, c *config.Config) {
			assert.True(t, c.PrivateEnabled)
			assert.Equal(t, "gazelle", c.Backend.Name)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			over := map[string]any{"addr": "127.0.0.1:6881", "udp_addr": "127.0.0.1:6881"}
			for k, v := range tt.keys {
				over[k] = v
			}
			b, err := chihayaConfig(exampleConfig(t), over)
			require.NoError(t, err)
			c, err := config.Parse(b, "bench.json")
			require.NoError(t, err)
			tt.want(t, c)
		})
	}
}

func TestParseMetricsAndGC(t *testing.T) {
	text := func(count, sum, longest string) string {
		return `# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 1.2e-05
go_gc_duration_seconds{quantile="1"} ` + longest + `
go_gc_duration_seconds_sum ` + sum + `
go_gc_duration_seconds_count ` + count + `
chihaya_gazelle_queue_rows{table="peers"} 12
chihaya_gazelle_queue_rows{table="users"} 3
chihaya_gazelle_dropped_total 0
not a sample line
`
	}
	before, err := parseMetrics(strings.NewReader(text("10", "0.001", "0.0002")))
	require.NoError(t, err)
	after, err := parseMetrics(strings.NewReader(text("14", "0.0025", "0.0008")))
	require.NoError(t, err)
	assert.Equal(t, 15.0, sumPrefix(before, "chihaya_gazelle_queue_rows{"))
	assert.Equal(t, 0.0, sumPrefix(before, "nothing_like_it"))
	g := gcDelta(before, after)
	assert.True(t, g.ok)
	assert.Equal(t, 4.0, g.count)
	assert.InDelta(t, float64(1500*time.Microsecond), float64(g.total), 1000)
	assert.InDelta(t, float64(800*time.Microsecond), float64(g.maxPause), 1000)
	assert.False(t, gcDelta(map[string]float64{}, after).ok, "no collector figures before: none at all")
}

func TestParseRcvbufErrors(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 856 3 115 860 11521 0\n" +
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdpLite: 0 0 0 0 7 0\n"
	assert.Equal(t, uint64(11521), parseRcvbufErrors(snmp))
	assert.Zero(t, parseRcvbufErrors("Ip: Forwarding\nIp: 1\n"))
}

func TestReadEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	require.NoError(t, os.WriteFile(path, []byte("export CHIHAYA_MYSQL_DSN='chihaya:pw@tcp(127.0.0.1:33306)/'\nexport CHIHAYA_MYSQL_DIR='/tmp/it'\\''s'\n"), 0o600))
	env, err := readEnvFile(path)
	require.NoError(t, err)
	assert.Equal(t, "chihaya:pw@tcp(127.0.0.1:33306)/", env["CHIHAYA_MYSQL_DSN"])
	assert.Equal(t, "/tmp/it's", env["CHIHAYA_MYSQL_DIR"])
}

func TestMedianOpenAndSpread(t *testing.T) {
	mk := func(tracker string, p99 float64) openRow {
		var r openRow
		r.tracker = tracker
		r.res.P99us = p99
		return r
	}
	med, spr := openMedians([]openRow{mk(chihaya, 300), mk(chihaya, 100), mk(chihaya, 200), mk(opentracker, 50), mk(opentracker, 70)})
	assert.Equal(t, 200.0, med[chihaya].res.P99us)
	assert.Equal(t, 50.0, med[opentracker].res.P99us, "the lower middle of an even count")
	assert.InDelta(t, 100.0, spr[chihaya], 1e-9)
	assert.InDelta(t, 40.0, spr[opentracker], 1e-9)
}
