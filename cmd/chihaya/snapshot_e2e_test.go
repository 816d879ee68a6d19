//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fillSwarms announces torrents 0..n-1 with i+3 peers each (102 for 12) over HTTP, a third of them seeders
// that completed, and returns each torrent's info hash.
func fillSwarms(ctx context.Context, t *testing.T, base string, n int) [][]byte {
	t.Helper()
	var hashes [][]byte
	for i := 0; i < n; i++ {
		ih := []byte(fmt.Sprintf("snapshot-torrent-%03d", i))[:20]
		hashes = append(hashes, ih)
		for j := 0; j < i+3; j++ {
			id := []byte(fmt.Sprintf("-qB4620-%06d%06d", i, j))
			if j%3 == 0 {
				httpAnnounce(ctx, t, base, ih, id, 10000+j, 100, "started")
				httpAnnounce(ctx, t, base, ih, id, 10000+j, 0, "completed")
			} else {
				httpAnnounce(ctx, t, base, ih, id, 10000+j, 100, "started")
			}
		}
	}
	return hashes
}

// scrapeAll returns complete, downloaded and incomplete of each torrent.
func scrapeAll(ctx context.Context, t *testing.T, base string, hashes [][]byte) [][]int64 {
	t.Helper()
	var out [][]int64
	for _, ih := range hashes {
		out = append(out, httpScrape(ctx, t, base, ih))
	}
	return out
}

// stopped stops p (SIGTERM), requires a clean exit, takes it off the processes s watches, and
// returns its log.
func (s *swarm) stopped(p *proc) string {
	s.t.Helper()
	p.stop()
	require.NoError(s.t, p.err, "%s's exit", p.name)
	for i, q := range s.procs {
		if q == p {
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			break
		}
	}
	b, err := os.ReadFile(p.log)
	require.NoError(s.t, err)
	return string(b)
}

// TestSnapshotRestart fills swarms in the real binary with the memory driver and a
// snapshot_path, stops it with SIGTERM and starts it again: every torrent's scrape (seeders,
// downloaded, leechers) is the same, and the peers are handed out again. Then a corrupt
// snapshot is moved aside, named in the log, and the tracker starts empty.
func TestSnapshotRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	ctx, cancel := boundedContext(t, operatorTimeout+buildTimeout)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	s := &swarm{t: t, root: t.TempDir()}
	snap := filepath.Join(s.root, "swarms.snap")
	cfg := map[string]any{
		"announce": "30m", "min_announce": "15m",
		"tracker": map[string]any{"driver": "memory", "params": map[string]any{"snapshot_path": snap}},
	}
	tr := startConfigured(ctx, s, bin, "first", cfg)
	waitLog(ctx, s, tr.proc, "no snapshot at "+snap)
	hashes := fillSwarms(ctx, t, tr.http, 12)
	peersBefore := compactPeers(t, httpAnnounce(ctx, t, tr.http, hashes[11], []byte("-qB4620-observer0001"), 9999, 100, ""))
	before := scrapeAll(ctx, t, tr.http, hashes)
	require.Equal(t, []int64{5, 5, 10}, before[11], "torrent 11: 14 peers and the observer, 5 completed")
	assert.Contains(t, s.stopped(tr.proc), "snapshot "+snap+" written")

	tr2 := startConfigured(ctx, s, bin, "second", cfg)
	waitLog(ctx, s, tr2.proc, "restored 103 peers of 12 torrents from snapshot "+snap)
	assert.Equal(t, before, scrapeAll(ctx, t, tr2.http, hashes), "the same scrapes after a restart")
	peersAfter := compactPeers(t, httpAnnounce(ctx, t, tr2.http, hashes[11], []byte("-qB4620-observer0001"), 9999, 100, ""))
	assert.Equal(t, peersBefore, peersAfter, "the same peers handed out")
	s.stopped(tr2.proc)

	// A damaged snapshot: refused, named, moved aside whole; the tracker starts empty.
	data, err := os.ReadFile(snap)
	require.NoError(t, err)
	data[len(data)/2] ^= 0x40
	require.NoError(t, os.WriteFile(snap, data, 0o600))
	tr3 := startConfigured(ctx, s, bin, "third", cfg)
	waitLog(ctx, s, tr3.proc, "snapshot "+snap+": checksum mismatch")
	waitLog(ctx, s, tr3.proc, "moved aside to "+snap+".bad-")
	ents, err := os.ReadDir(s.root)
	require.NoError(t, err)
	var aside []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "swarms.snap.bad-") {
			aside = append(aside, e.Name())
		}
	}
	require.Len(t, aside, 1)
	kept, err := os.ReadFile(filepath.Join(s.root, aside[0]))
	require.NoError(t, err)
	assert.Equal(t, data, kept, "moved aside, not altered")
	assert.Equal(t, []int64{0, 0, 0}, httpScrape(ctx, t, tr3.http, hashes[11]), "started empty")
	s.stopped(tr3.proc)
}
