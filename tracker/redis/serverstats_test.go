package redis

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"

	"github.com/chihaya/chihaya/tracker"
)

// serverStats is what the Redis servers behind a pool report about their own work: CPU
// seconds (user + system) and the calls and microseconds of the script commands (EVALSHA and
// EVAL), summed over every master of a cluster.
type serverStats struct {
	cpu         float64
	evals, usec int64
}

// readServerStats reads INFO cpu and INFO commandstats from the servers behind pool, or
// returns false when pool is not a redis pool.
func readServerStats(ctx context.Context, pool tracker.Pool) (serverStats, bool, error) {
	p, ok := pool.(*Pool)
	if !ok {
		return serverStats{}, false, nil
	}
	var (
		mu  sync.Mutex
		sum serverStats
	)
	read := func(ctx context.Context, node *goredis.Client) error {
		info, err := node.Info(ctx, "cpu", "commandstats").Result()
		if err != nil {
			return err
		}
		s := parseServerStats(info)
		mu.Lock()
		defer mu.Unlock()
		sum.cpu += s.cpu
		sum.evals += s.evals
		sum.usec += s.usec
		return nil
	}
	var err error
	switch c := p.client.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, read)
	case *goredis.Client:
		err = read(ctx, c)
	}
	return sum, true, err
}

func parseServerStats(info string) serverStats {
	var s serverStats
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch name {
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(val, 64)
			s.cpu += f
		case "cmdstat_evalsha", "cmdstat_eval":
			for _, kv := range strings.Split(val, ",") {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "calls":
					s.evals += n
				case "usec":
					s.usec += n
				}
			}
		}
	}
	return s
}

// reportServerStats runs fn and reports, for a redis pool, the Redis CPU time per operation
// (redis-cpu-µs/op, all commands and the servers' own housekeeping included) and the
// server's own time per script call (µs/evalsha, from INFO commandstats). Both are measured
// by Redis itself, so other processes on the machine disturb them less than wall time.
func reportServerStats(ctx context.Context, b *testing.B, pool tracker.Pool, fn func()) {
	before, ok, err := readServerStats(ctx, pool)
	if err != nil {
		b.Fatal(err)
	}
	fn()
	if !ok || b.N == 0 {
		return
	}
	b.StopTimer()
	after, _, err := readServerStats(ctx, pool)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric((after.cpu-before.cpu)*1e6/float64(b.N), "redis-cpu-µs/op")
	if calls := after.evals - before.evals; calls > 0 {
		b.ReportMetric(float64(after.usec-before.usec)/float64(calls), "µs/evalsha")
	}
}

func TestParseServerStats(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\r\n# Commandstats\r\n" +
		"cmdstat_evalsha:calls=10,usec=300,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_eval:calls=1,usec=50,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_zadd:calls=99,usec=99,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
	assert.Equal(t, serverStats{cpu: 3.75, evals: 11, usec: 350}, parseServerStats(info))
}
