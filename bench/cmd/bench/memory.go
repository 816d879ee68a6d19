package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chihaya/chihaya/bench/loadgen"
)

// shape is one swarm shape of the memory workloads: peers over torrents, peer j to torrent
// j mod torrents.
type shape struct{ peers, torrents int }

func (s shape) String() string { return count(s.peers) + "/" + count(s.torrents) }

// count writes n as the shapes flag reads it: 1M, 100k, or digits.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// parseCount reads a positive count with an optional k (thousand) or M (million) suffix.
func parseCount(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "M"):
		mult, s = 1_000_000, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "k"):
		mult, s = 1000, strings.TrimSuffix(s, "k")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > (1<<31)/mult {
		return 0, fmt.Errorf("%q: want a positive count such as 1000, 100k or 1M", s)
	}
	return n * mult, nil
}

// parseShapes reads -mem-shapes: comma-separated PEERS/TORRENTS, such as "1M/1M,1M/1".
func parseShapes(s string) ([]shape, error) {
	var out []shape
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, t, ok := strings.Cut(f, "/")
		if !ok {
			return nil, fmt.Errorf("-mem-shapes: %q: want PEERS/TORRENTS, such as 1M/1M", f)
		}
		peers, err := parseCount(p)
		if err != nil {
			return nil, fmt.Errorf("-mem-shapes: peers %w", err)
		}
		torrents, err := parseCount(t)
		if err != nil {
			return nil, fmt.Errorf("-mem-shapes: torrents %w", err)
		}
		if torrents > peers {
			return nil, fmt.Errorf("-mem-shapes: %q: more torrents than peers leaves torrents empty", f)
		}
		out = append(out, shape{peers, torrents})
	}
	if len(out) == 0 {
		return nil, errors.New("-mem-shapes: no shape")
	}
	return out, nil
}

// socketsFor returns the UDP sockets (source addresses) a fill needs so that peers up to n
// have distinct ip:port: at least 32, as the generator's other workloads use.
func socketsFor(n int) (int, error) {
	s := max(32, (n+loadgen.PortsPerHost-1)/loadgen.PortsPerHost)
	if s > loadgen.MaxHosts {
		return 0, fmt.Errorf("%d peers need more than %d source addresses", n, loadgen.MaxHosts)
	}
	return s, nil
}

// memRow is one tracker's measurement in a memory workload.
type memRow struct {
	workload   string
	tracker    string
	proto      string // what the peers were announced over: udp or http
	peers      int
	torrents   int
	users      int    // private mode: users the peers announce as
	rss0, rss1 uint64 // kB
	fill       loadgen.Result
	verify     loadgen.VerifyResult
	// Private mode: the gazelle backend's rows dropped (queue full) during the fill, and how
	// long its queue took to drain after it.
	dropped float64
	drain   time.Duration
}

func (m memRow) perPeer() float64 {
	return (float64(m.rss1) - float64(m.rss0)) * 1024 / float64(m.peers)
}

func (m memRow) shape() shape { return shape{m.peers, m.torrents} }

// memSpec is one memory measurement to make.
type memSpec struct {
	workload, tracker, proto string
	shape
	private bool
}

// memory loads s.peers peers over s.torrents torrents into a fresh tracker over s.proto (udp or
// http) and reports its RSS growth per peer, then checks by scrape that it stored them.
func (e *env) memory(ctx context.Context, s memSpec) (memRow, error) {
	var p *proc
	var addr string
	var err error
	if s.private {
		p, addr, err = e.startPrivate(ctx)
	} else {
		p, addr, err = e.startTracker(ctx, s.tracker)
	}
	if err != nil {
		return memRow{}, err
	}
	defer p.stop()
	time.Sleep(time.Second) // let a Go runtime finish its start-up allocations
	m := memRow{workload: s.workload, tracker: s.tracker, proto: s.proto, peers: s.peers, torrents: s.torrents, rss0: rssKB(p.pid())}
	common := []string{"-target", addr, "-fill-peers", strconv.Itoa(s.peers), "-fill-torrents", strconv.Itoa(s.torrents)}
	if s.private {
		m.users = e.privateUsers(s.peers)
		common = append(common, "-private-users", strconv.Itoa(m.users))
	}
	sockets, err := socketsFor(s.peers)
	if err != nil {
		return memRow{}, err
	}
	fill := []string{"-mode", "udp-fill", "-conns", strconv.Itoa(e.o.udpConns), "-sockets", strconv.Itoa(sockets)}
	if s.proto == "http" {
		fill = []string{"-mode", "http-fill", "-conns", strconv.Itoa(e.o.httpConns)}
	}
	res, err := e.loadgen(ctx, nil, append(fill, common...)...)
	if err != nil {
		return memRow{}, err
	}
	m.fill = *res
	if s.private {
		if m.drain, m.dropped, err = waitQueueDrained(ctx, addr, 10*time.Minute); err != nil {
			return memRow{}, err
		}
	}
	m.rss1 = settledRSS(ctx, p)
	verify := "udp-verify"
	if s.private {
		verify = "http-verify" // private mode answers UDP scrapes with an error
	}
	vr, err := e.verify(ctx, verify, common)
	if err != nil {
		return memRow{}, err
	}
	m.verify = vr
	if p.exited() {
		return memRow{}, fmt.Errorf("tracker exited (log: %s)", tail(p.log))
	}
	return m, nil
}

// verify runs the generator's verify mode with args and returns its counts.
func (e *env) verify(ctx context.Context, mode string, args []string) (loadgen.VerifyResult, error) {
	res, err := e.loadgen(ctx, nil, append([]string{"-mode", mode}, args...)...)
	if err != nil {
		return loadgen.VerifyResult{}, err
	}
	if res.Verify == nil {
		return loadgen.VerifyResult{}, errors.New("verify printed no counts")
	}
	return *res.Verify, nil
}

// settledRSS returns p's RSS once it has settled: sampled every 250 ms, at least 5 s after the
// call, once the samples of the last 5 s differ by under 1% (a Go runtime that collects and
// returns memory to the OS after a burst takes a few seconds), and at most 20 s after the call.
func settledRSS(ctx context.Context, p *proc) uint64 {
	const (
		tick    = 250 * time.Millisecond
		window  = 20 // samples in 5 s: a Go tracker hands its garbage back a few seconds after a burst
		longest = 20 * time.Second
	)
	var samples []uint64
	end := time.Now().Add(longest)
	for {
		samples = append(samples, p.rssKB())
		if n := len(samples); n > window {
			last := samples[n-window-1:]
			lo, hi := last[0], last[0]
			for _, v := range last {
				lo, hi = min(lo, v), max(hi, v)
			}
			if float64(hi-lo) < 0.01*float64(hi) {
				return samples[n-1]
			}
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return samples[len(samples)-1]
		}
		time.Sleep(tick)
	}
}

// churnRow is the churn workload's measurement.
type churnRow struct {
	tracker  string
	peers    int
	torrents int
	timeout  time.Duration
	rss0     uint64 // kB, fresh
	before   uint64 // kB, after the fill
	peak     uint64 // kB, after the replacements, before the reaper removed the first peers
	after    uint64 // kB, after the reaper removed them
	// peakStored is what a scrape sample found at the peak (it must hold both generations),
	// afterStored what it found once the reaper was done (the replacements only).
	peakStored, afterStored loadgen.VerifyResult
	reapWait                time.Duration // from the end of the replacements to the reaper done
	fill, churn             loadgen.Result
}

func (c churnRow) ratio() float64 {
	if c.before == 0 {
		return 0
	}
	return float64(c.after) / float64(c.before)
}

// churnKeys are the config keys laid over Chihaya's for the churn workload: a reaper that runs
// every second and a peer timeout of timeout (with announce intervals below it, as config
// validation requires).
func churnKeys(timeout time.Duration) map[string]any {
	announce := max(timeout/4, time.Second)
	return map[string]any{
		"announce":      announce.String(),
		"min_announce":  (announce / 2).String(),
		"peer_timeout":  timeout.String(),
		"reap_interval": "1s",
	}
}

// churn fills a fresh Chihaya with peers, then replaces every peer by a new one (new peer ID,
// new port, same torrent and role; the first peers never announce again), waits until the
// reaper has removed the first peers (a scrape sample counts the replacements only), and
// reads RSS after each phase.
func (e *env) churn(ctx context.Context) (churnRow, error) {
	o := e.o
	c := churnRow{tracker: chihaya, peers: o.memPeers, torrents: o.memTorrents, timeout: o.churnTimeout}
	p, addr, err := e.startChihaya(ctx, chihaya, churnKeys(o.churnTimeout))
	if err != nil {
		return c, err
	}
	defer p.stop()
	time.Sleep(time.Second)
	c.rss0 = rssKB(p.pid())
	sockets, err := socketsFor(2 * o.memPeers)
	if err != nil {
		return c, err
	}
	fill := func(offset int) (*loadgen.Result, error) {
		return e.loadgen(ctx, nil, "-mode", "udp-fill", "-conns", strconv.Itoa(o.udpConns), "-sockets", strconv.Itoa(sockets),
			"-target", addr, "-fill-peers", strconv.Itoa(o.memPeers), "-fill-torrents", strconv.Itoa(o.memTorrents),
			"-fill-offset", strconv.Itoa(offset))
	}
	verifyArgs := func(peers int) []string {
		return []string{"-target", addr, "-fill-peers", strconv.Itoa(peers), "-fill-torrents", strconv.Itoa(o.memTorrents)}
	}
	start := time.Now()
	res, err := fill(0)
	if err != nil {
		return c, fmt.Errorf("fill: %w", err)
	}
	c.fill = *res
	c.before = settledRSS(ctx, p)
	res, err = fill(o.memPeers)
	if err != nil {
		return c, fmt.Errorf("replacements: %w", err)
	}
	c.churn = *res
	churned := time.Now()
	if churned.Sub(start) >= o.churnTimeout {
		return c, fmt.Errorf("the fill and the replacements took %s, more than the peer timeout %s: raise -churn-timeout",
			churned.Sub(start).Round(time.Second), o.churnTimeout)
	}
	if c.peakStored, err = e.verify(ctx, "udp-verify", verifyArgs(2*o.memPeers)); err != nil {
		return c, err
	}
	c.peak = rssKB(p.pid())
	// The first peers expire peer_timeout after their announce; the reaper runs every second.
	deadline := time.Now().Add(o.churnTimeout + time.Minute)
	for {
		vr, err := e.verify(ctx, "udp-verify", verifyArgs(o.memPeers))
		if err != nil {
			return c, err
		}
		if vr.Mismatches == 0 {
			c.afterStored = vr
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return c, fmt.Errorf("the reaper did not remove the first peers within %s of the replacements: %d/%d peers in the sample",
				time.Since(churned).Round(time.Second), vr.Got, vr.Want)
		}
		time.Sleep(time.Second)
	}
	c.reapWait = time.Since(churned)
	c.after = settledRSS(ctx, p)
	if p.exited() {
		return c, fmt.Errorf("tracker exited (log: %s)", tail(p.log))
	}
	return c, nil
}

// metrics reads a Prometheus text exposition from http://addr/metrics: each sample's value by
// its name and labels as written ("go_gc_duration_seconds{quantile=\"1\"}").
func metrics(addr string) (map[string]float64, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP status %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the samples of a Prometheus text exposition; comments and malformed lines
// are skipped.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[strings.TrimSpace(line[:i])] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// sumPrefix sums the samples whose name and labels start with prefix.
func sumPrefix(m map[string]float64, prefix string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// waitQueueDrained polls the tracker's metrics until the gazelle backend's queues are empty,
// and returns how long that took and how many rows it dropped.
func waitQueueDrained(ctx context.Context, addr string, limit time.Duration) (time.Duration, float64, error) {
	start := time.Now()
	for {
		m, err := metrics(addr)
		if err != nil {
			return 0, 0, err
		}
		if _, ok := m[`chihaya_gazelle_dropped_total`]; !ok {
			return 0, 0, errors.New("metrics: no chihaya_gazelle_dropped_total: is the gazelle backend on?")
		}
		if sumPrefix(m, "chihaya_gazelle_queue_rows{") == 0 {
			return time.Since(start), m["chihaya_gazelle_dropped_total"], nil
		}
		if time.Since(start) > limit || ctx.Err() != nil {
			return 0, 0, fmt.Errorf("the gazelle queues still hold %.0f rows after %s", sumPrefix(m, "chihaya_gazelle_queue_rows{"), limit)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fileExists reports whether path names a file.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
