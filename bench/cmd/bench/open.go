package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// openRow is one round of the open-loop workload (udp-open) against one tracker.
type openRow struct {
	row
	// gc is Chihaya's collector over the run (warm-up, window and drain), from its
	// go_gc_duration_seconds; ok is false for opentracker or when /metrics could not be read.
	gc gcStats
	// drops are the datagrams the kernel dropped over the run for a full socket receive
	// buffer (RcvbufErrors of /proc/net/snmp, all sockets of the network namespace): a
	// tracker that falls behind for a moment loses requests there.
	drops uint64
}

// gcStats is what go_gc_duration_seconds tells of the collections between two readings.
type gcStats struct {
	ok       bool
	count    float64       // collections
	total    time.Duration // their pauses, summed
	maxPause time.Duration // the longest pause of the recent collections (quantile 1)
}

// gcDelta returns the collections between the readings before and after.
func gcDelta(before, after map[string]float64) gcStats {
	const name = "go_gc_duration_seconds"
	c0, ok0 := before[name+"_count"]
	c1, ok1 := after[name+"_count"]
	if !ok0 || !ok1 {
		return gcStats{}
	}
	return gcStats{
		ok:       true,
		count:    c1 - c0,
		total:    time.Duration((after[name+"_sum"] - before[name+"_sum"]) * 1e9),
		maxPause: time.Duration(after[name+`{quantile="1"}`] * 1e9),
	}
}

// openRate returns the rate udp-open offers: -open-rate, else half of opentracker's saturated
// rate in the udp workload of this run, else half of what a calibration round of udp measures
// against opentracker. It also says where the rate came from.
func (e *env) openRate(ctx context.Context, med map[medKey]row) (float64, string, error) {
	if e.o.openRate > 0 {
		return e.o.openRate, "-open-rate", nil
	}
	if ot, ok := med[medKey{"udp", opentracker}]; ok && ot.res.PerSecond > 0 {
		return ot.res.PerSecond / 2, fmt.Sprintf("half of opentracker's saturated rate in this run's udp workload (%.0f/s)", ot.res.PerSecond), nil
	}
	i := slices.IndexFunc(workloads(e.o), func(w workload) bool { return w.name == "udp" })
	m, err := e.measure(ctx, workloads(e.o)[i], opentracker)
	if err != nil {
		return 0, "", fmt.Errorf("udp-open: calibration round against opentracker: %w", err)
	}
	fmt.Fprintf(os.Stderr, "  %-15s %-12s calibration: %9.0f resp/s  tracker CPU %3.0f%%\n", "udp-open", opentracker, m.res.PerSecond, 100*m.trackerUtil())
	if m.res.PerSecond <= 0 {
		return 0, "", fmt.Errorf("udp-open: calibration round against opentracker answered nothing")
	}
	return m.res.PerSecond / 2, fmt.Sprintf("half of opentracker's saturated udp rate in a calibration round (%.0f/s)", m.res.PerSecond), nil
}

// measureOpen runs one round of udp-open at rate against a fresh tracker t.
func (e *env) measureOpen(ctx context.Context, t string, rate float64) (openRow, error) {
	p, addr, err := e.startTracker(ctx, t)
	if err != nil {
		return openRow{}, err
	}
	defer p.stop()
	m := openRow{row: row{workload: "udp-open", tracker: t}}
	var before map[string]float64
	if t == chihaya {
		before, _ = metrics(addr) // before the run: reading /metrics costs the tracker CPU
	}
	drops0 := udpRcvbufErrors()
	var c0, g0 uint64
	res, err := e.loadgen(ctx, func(ev string, gen int) {
		switch ev {
		case "start":
			c0, g0 = p.cpuTicks(), cpuTicks(gen)
		case "end":
			m.cpuTicks, m.genTicks = p.cpuTicks()-c0, cpuTicks(gen)-g0
			m.rssKB = p.rssKB()
		}
	}, "-mode", "udp-open", "-target", addr, "-rate", strconv.FormatFloat(rate, 'f', 0, 64),
		"-marks", "-warmup", e.o.warmup.String(), "-duration", e.o.duration.String())
	if err != nil {
		return openRow{}, err
	}
	if res.Open == nil {
		return openRow{}, fmt.Errorf("udp-open: the generator printed no open-loop figures")
	}
	m.drops = udpRcvbufErrors() - drops0
	if before != nil {
		if after, err := metrics(addr); err == nil {
			m.gc = gcDelta(before, after)
		}
	}
	if p.exited() {
		return openRow{}, fmt.Errorf("tracker exited during the run (log: %s)", tail(p.log))
	}
	m.res = *res
	return m, nil
}

// medianOpen returns the round with the median p99 (the lower middle of an even count).
func medianOpen(rs []openRow) openRow {
	return medianBy(rs, func(r openRow) float64 { return float64(r.res.P99us) })
}

// udpRcvbufErrors returns the UDP datagrams dropped so far for a full receive buffer in this
// network namespace (Udp RcvbufErrors of /proc/net/snmp), or 0 when it cannot be read.
func udpRcvbufErrors() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	return parseRcvbufErrors(string(b))
}

// parseRcvbufErrors reads Udp RcvbufErrors from the text of /proc/net/snmp: a header line of
// field names and a line of values, both starting "Udp:".
func parseRcvbufErrors(snmp string) uint64 {
	var names []string
	for _, line := range strings.Split(snmp, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
		return 0
	}
	return 0
}
