//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
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

	udptracker "github.com/anacrolix/torrent/tracker/udp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upgradeClient announces and scrapes without pause until stopped, counting what it sent and
// every request that failed (a transport error, a timeout, a failure reason).
type upgradeClient struct {
	name     string
	ih       [20]byte
	peers    int // announces cycle over this many peer IDs
	requests atomic.Int64
	failures atomic.Int64
	mu       sync.Mutex
	errs     []string // the first few failures
}

func (c *upgradeClient) fail(err error) {
	c.failures.Add(1)
	c.mu.Lock()
	if len(c.errs) < 5 {
		c.errs = append(c.errs, err.Error())
	}
	c.mu.Unlock()
}

func (c *upgradeClient) peerID(i int) [20]byte {
	return [20]byte([]byte(fmt.Sprintf("-UP0001-%-5s%07d", c.name, i%c.peers)))
}

// runHTTP sends announces and scrapes to base through hc until ctx ends.
func (c *upgradeClient) runHTTP(ctx context.Context, hc *http.Client, base string) {
	get := func(u string) error {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		switch {
		case err != nil:
			return err
		case resp.StatusCode != http.StatusOK || strings.Contains(string(body), "failure reason"):
			return fmt.Errorf("status %d: %q", resp.StatusCode, body)
		}
		return nil
	}
	for i := 0; ctx.Err() == nil; i++ {
		id := c.peerID(i)
		u := fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=100&compact=1",
			base, pct(c.ih[:]), pct(id[:]), 20000+i%c.peers)
		if i%2 == 1 {
			u = base + "/scrape?info_hash=" + pct(c.ih[:])
		}
		err := get(u)
		if ctx.Err() != nil {
			return // stopped mid-request: not a failure of the tracker
		}
		c.requests.Add(1)
		if err != nil {
			c.fail(err)
		}
	}
}

// runUDP sends BEP 15 announces and scrapes through cc until ctx ends. Its timeout is shorter
// than the client's first retransmission (15 s), so a datagram the tracker dropped counts.
func (c *upgradeClient) runUDP(ctx context.Context, cc *udptracker.ConnClient) {
	for i := 0; ctx.Err() == nil; i++ {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		if i%2 == 0 {
			_, _, err = cc.Announce(rctx, udptracker.AnnounceRequest{
				InfoHash: c.ih, PeerId: c.peerID(i), Left: 100, NumWant: -1, Port: uint16(21000 + i%c.peers),
			}, udptracker.Options{})
		} else {
			_, err = cc.Client.Scrape(rctx, []udptracker.InfoHash{c.ih})
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.requests.Add(1)
		if err != nil {
			c.fail(err)
		}
	}
}

// readPID reads the tracker's -pidfile.
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// swapBinary puts the file src at dst by rename, as an install does, so that a running dst
// keeps its own inode.
func swapBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	tmp := dst + ".new"
	require.NoError(t, os.WriteFile(tmp, b, 0o755))
	require.NoError(t, os.Rename(tmp, dst))
}

// TestUpgradeWithoutGap runs the real binary while four clients announce and scrape without
// pause: over HTTP with a new connection per request, over HTTP on one keep-alive connection,
// and two over UDP. A SIGUSR2 with a successor that exits at once leaves the old process
// serving; a SIGUSR2 with the real binary hands the sockets and the swarms over: no client
// request fails, the swarms filled before are the same, the old PID is gone and the new one
// serves. It runs with the memory driver (swarms handed over in a snapshot) and with the redis
// driver (sockets only; it needs redis-server, skipped without it unless
// CHIHAYA_REQUIRE_REDIS=1).
func TestUpgradeWithoutGap(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	ctx, cancel := boundedContext(t, buildTimeout)
	defer cancel()
	dir := t.TempDir()
	real := buildTracker(ctx, t, dir)
	t.Run("memory", func(t *testing.T) {
		s := &swarm{t: t, root: t.TempDir()}
		runUpgrade(t, s, real, map[string]any{"driver": "memory", "params": map[string]any{
			"snapshot_path": filepath.Join(s.root, "swarms.snap"),
		}})
	})
	t.Run("redis", func(t *testing.T) {
		server, err := exec.LookPath("redis-server")
		if err != nil {
			msg := "redis-server not found: apt-get install redis-server, or run `bash .ci/run`"
			if os.Getenv("CHIHAYA_REQUIRE_REDIS") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		s := &swarm{t: t, root: t.TempDir()}
		port := freePort(t)
		s.start(ctx, "redis", s.root, nil, server, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--save", "", "--appendonly", "no", "--dir", s.root)
		runUpgrade(t, s, real, map[string]any{"driver": "redis", "params": map[string]any{"addr": "127.0.0.1:" + strconv.Itoa(port)}})
	})
}

// runUpgrade is one driver's run of TestUpgradeWithoutGap.
func runUpgrade(t *testing.T, s *swarm, real string, tracker map[string]any) {
	ctx, cancel := boundedContext(t, 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "chihaya-installed")
	swapBinary(t, real, bin)
	pidFile := filepath.Join(s.root, "chihaya.pid")
	cfg := map[string]any{
		"announce": "30m", "min_announce": "15m",
		"rate_limit": map[string]any{"announce_rate": 0, "scrape_rate": 0},
		"tracker":    tracker,
	}
	tr := startConfigured(ctx, s, bin, "tracker", cfg, "-pidfile", pidFile)
	oldPID := tr.proc.cmd.Process.Pid
	s.waitFor(ctx, "the PID file", func() (bool, string, error) {
		pid, err := readPID(pidFile)
		return err == nil && pid == oldPID, fmt.Sprint(pid, err), nil
	})
	hashes := fillSwarms(ctx, t, tr.http, 8)
	before := scrapeAll(ctx, t, tr.http, hashes)

	clients := []*upgradeClient{
		{name: "close", ih: [20]byte([]byte("upgrade-http-close!!")), peers: 25},
		{name: "keep", ih: [20]byte([]byte("upgrade-http-keep!!!")), peers: 25},
		{name: "udp1", ih: [20]byte([]byte("upgrade-udp-1!!!!!!!")), peers: 25},
		{name: "udp2", ih: [20]byte([]byte("upgrade-udp-2!!!!!!!")), peers: 25},
	}
	cctx, stopClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	closing := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	keepAlive := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	run(func() { clients[0].runHTTP(cctx, closing, tr.http) })
	run(func() { clients[1].runHTTP(cctx, keepAlive, tr.http) })
	run(func() { clients[2].runUDP(cctx, udpClient(t, tr.udp)) })
	run(func() { clients[3].runUDP(cctx, udpClient(t, tr.udp)) })
	defer func() { stopClients(); wg.Wait() }()
	progress := func(what string, atLeast map[*upgradeClient]int64) {
		t.Helper()
		s.waitFor(ctx, what, func() (bool, string, error) {
			var st []string
			ok := true
			for _, c := range clients {
				n := c.requests.Load()
				st = append(st, fmt.Sprintf("%s %d", c.name, n))
				ok = ok && n >= atLeast[c]
			}
			return ok, strings.Join(st, ", "), nil
		})
	}
	mark := func(more int64) map[*upgradeClient]int64 {
		m := make(map[*upgradeClient]int64)
		for _, c := range clients {
			m[c] = c.requests.Load() + more
		}
		return m
	}
	progress("every client to have sent 60 requests", mark(60))

	// A successor that exits at once: the old process logs why and goes on serving.
	failing := filepath.Join(t.TempDir(), "exits-at-once")
	require.NoError(t, os.WriteFile(failing, []byte("#!/bin/sh\nexit 3\n"), 0o755))
	swapBinary(t, failing, bin)
	require.NoError(t, syscall.Kill(oldPID, syscall.SIGUSR2))
	waitLog(ctx, s, tr.proc, "upgrade failed, this process ("+strconv.Itoa(oldPID)+") goes on serving")
	progress("every client to go on after the failed upgrade", mark(40))
	pid, err := readPID(pidFile)
	require.NoError(t, err)
	assert.Equal(t, oldPID, pid, "the PID file still names the old process")
	code, metrics := do(ctx, t, http.MethodGet, tr.http+"/metrics", "")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, metrics, `chihaya_upgrades_total{result="failed"} 1`)

	// The real binary: the sockets and swarms go over; the old process exits cleanly.
	swapBinary(t, real, bin)
	s.procs = nil // the old process is meant to exit now
	require.NoError(t, syscall.Kill(oldPID, syscall.SIGUSR2))
	select {
	case <-tr.proc.done:
	case <-ctx.Done():
		t.Fatalf("the old process did not exit after the upgrade\n%s", tail(tr.proc.log, 30))
	}
	require.NoError(t, tr.proc.err, "the old process's exit")
	assert.False(t, alive(oldPID), "the old PID is gone")
	newPID, err := readPID(pidFile)
	require.NoError(t, err)
	require.NotEqual(t, oldPID, newPID)
	require.True(t, alive(newPID), "the new process runs")
	t.Cleanup(func() {
		// The new process is in the test's process group of the old one, whose cleanup ends it
		// too; end it by its PID first, and wait for it to go.
		_ = syscall.Kill(newPID, syscall.SIGTERM)
		deadline := time.Now().Add(stopGrace)
		for alive(newPID) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(newPID) {
			_ = syscall.Kill(newPID, syscall.SIGKILL)
		}
	})
	progress("every client to go on with the new process", mark(60))
	stopClients()
	wg.Wait()

	for _, c := range clients {
		c.mu.Lock()
		assert.Zero(t, c.failures.Load(), "%s: %d of %d requests failed: %v", c.name, c.failures.Load(), c.requests.Load(), c.errs)
		c.mu.Unlock()
		t.Logf("%s: %d requests, %d failed", c.name, c.requests.Load(), c.failures.Load())
		st := httpScrape(ctx, t, tr.http, c.ih[:])
		assert.Equal(t, int64(c.peers), st[0]+st[2], "%s: every peer in the swarm", c.name)
	}
	assert.Equal(t, before, scrapeAll(ctx, t, tr.http, hashes), "the swarms filled before the upgrade")
	logb, err := os.ReadFile(tr.proc.log)
	require.NoError(t, err)
	log := string(logb)
	assert.Contains(t, log, "started by an upgrade (SIGUSR2) of the process "+strconv.Itoa(oldPID))
	if tracker["driver"] == "memory" {
		assert.Contains(t, log, "restored ")
		// The announces the old process answered after its snapshot reach the new one.
		assert.Contains(t, log, "handed the swarms' changes since the snapshot to the new process")
		assert.Contains(t, log, "merged the old process's last changes")
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "upgrade: merged") || strings.Contains(l, "upgrade: handed") {
				t.Log(l)
			}
		}
	}
	assert.NotContains(t, log, "DATA RACE")

	// The new process stops cleanly on SIGTERM and writes its snapshot.
	require.NoError(t, syscall.Kill(newPID, syscall.SIGTERM))
	s.waitFor(ctx, "the new process to exit", func() (bool, string, error) { return !alive(newPID), "", nil })
	logb, err = os.ReadFile(tr.proc.log)
	require.NoError(t, err)
	assert.Contains(t, string(logb)[len(log):], "chihaya: stopped")
}
