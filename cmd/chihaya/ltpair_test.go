//go:build linux

package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// ltpairTimeout bounds the two-session run. The leecher completes within a few seconds once
// it has the seeder; without a usable connection ID it never gets one.
const ltpairTimeout = 45 * time.Second

// TestLibtorrentSharedConnectionID runs two libtorrent sessions in one Python process, a
// seeder and a leecher on different ports, against the real tracker over udp://. libtorrent
// keeps one cache of UDP connection IDs per tracker for the whole process, so the leecher
// announces from its own socket with the ID the seeder's socket was given. The test passes when
// the leecher holds the payload byte for byte, the scrape counts both as seeders, and the
// tracker refused no connection ID.
func TestLibtorrentSharedConnectionID(t *testing.T) {
	if testing.Short() {
		t.Skip("runs python3-libtorrent; skipped in -short mode")
	}
	ctx, cancel := boundedContext(t, buildTimeout+ltpairTimeout)
	defer cancel()
	requireKinds(ctx, t, clientKinds["libtorrent"])
	bin := buildTracker(ctx, t, t.TempDir())

	s := &swarm{t: t, root: t.TempDir(), scheme: "udp"}
	s.startTracker(ctx, bin)
	s.makeTorrent(ctx)
	seedDir := filepath.Join(s.root, "seeder")
	leechDir := filepath.Join(s.root, "leecher")
	for _, d := range []string{seedDir, leechDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.writePayload(filepath.Join(seedDir, payloadName))
	script, err := filepath.Abs(filepath.Join("testdata", "ltpair.py"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pair := s.start(ctx, "ltpair", s.root, append(pythonEnv(), "HOME="+s.root), systemPython, "-u", script,
		"--torrent", s.torrent, "--seed-dir", seedDir, "--leech-dir", leechDir,
		"--seed-port", strconv.Itoa(freePort(t)), "--leech-port", strconv.Itoa(freePort(t)))

	s.waitFor(ctx, "the leecher to hold the payload and the scrape to count both as seeders", func() (bool, string, error) {
		sum, err := fileSHA256(filepath.Join(leechDir, payloadName))
		have := err == nil && sum == s.payload
		st, err := s.scrape(ctx)
		if err != nil {
			return false, "", err
		}
		return have && st.complete == 2 && st.incomplete == 0, "scrape " + st.String() + ", leecher done: " + strconv.FormatBool(have), nil
	})
	elapsed := time.Since(start)
	t.Logf("leecher complete after %v", elapsed.Round(time.Millisecond))

	metrics := s.metrics(ctx)
	if n := metricValue(t, metrics, `chihaya_udp_rejected_packets_total{reason="connection_id"}`); n != 0 {
		t.Errorf("the tracker refused %d connection IDs", n)
	}
	// Both sessions announced on one connect: the leecher used the seeder's ID. (libtorrent
	// asks for a new ID once its cached one is a minute old, so a slow run may see two.)
	connects := metricValue(t, metrics, `chihaya_udp_packets_total{action="connect",family="ipv4"}`)
	announces := metricValue(t, metrics, `chihaya_udp_packets_total{action="announce",family="ipv4"}`)
	t.Logf("udp connects %d, announces %d", connects, announces)
	if elapsed < 50*time.Second && connects != 1 {
		t.Errorf("%d connects, want 1: the leecher did not reuse the seeder's connection ID, so the case is not exercised", connects)
	}
	if announces < 2 {
		t.Errorf("%d udp announces, want one per session at least", announces)
	}
	pair.stop()
	s.trackerProc.stop()
	if err := s.trackerProc.err; err != nil {
		t.Errorf("tracker did not exit cleanly on SIGTERM: %v", err)
	}
}

// metrics returns the tracker's /metrics text.
func (s *swarm) metrics(ctx context.Context) string {
	t := s.t
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, s.tracker+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return string(body)
}

// metricValue returns the value of the sample named exactly series (name and labels) in the
// Prometheus text, 0 when it is absent.
func metricValue(t *testing.T, text, series string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\d+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return n
}
