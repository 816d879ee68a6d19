//go:build linux

package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// restartPeer is one client in TestCreditAcrossRestarts: its session counters so far, which
// the site must have credited in full.
type restartPeer struct {
	passkey  string
	uid      int
	peer     string
	up, down int64 // added by each announce
	left     int64

	started          bool
	total, totalDown int64
}

// end signals the tracker (SIGTERM, or SIGKILL to its process group, as a crash or kill -9
// does) and waits for it to exit; after SIGTERM the exit must be clean. The exit status is put
// back for startPrivate's cleanup, which then need not wait for it.
func (p *privateTracker) end(sig syscall.Signal) {
	p.t.Helper()
	if sig == syscall.SIGKILL {
		require.NoError(p.t, syscall.Kill(-p.cmd.Process.Pid, sig))
	} else {
		require.NoError(p.t, p.cmd.Process.Signal(sig))
	}
	select {
	case err := <-p.done:
		p.done <- err
		if sig != syscall.SIGKILL {
			require.NoError(p.t, err, "exit after %s\n%s", sig, tail(p.log, 30))
		}
	case <-time.After(30 * time.Second):
		p.t.Fatalf("tracker did not exit after %s\n%s", sig, tail(p.log, 30))
	}
}

// TestCreditAcrossRestarts stops and starts the tracker binary several times in a row, with
// SIGTERM and with SIGKILL, with and without announces between the restarts, and then has a
// leecher announce where it left off (higher counters, no started event, as a client does after
// the tracker went away): every byte of each session is credited once, to the user and to the
// torrent's Balance, and xbt_files_users shows only the peers announced since the last start.
func TestCreditAcrossRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())

	// Steps: "A" and "E" are an announce by alice's or erin's peer on torrent 1 (the first a
	// started with zero counters, each later one adding to them), followed by waiting for the
	// flush that credits it; "term" is a SIGTERM and a new start, "kill" a SIGKILL and a new
	// start. Every case ends with alice announcing where she left off.
	tests := []struct {
		name  string
		steps string
	}{
		{"two restarts in a row", "A A term term A"},
		{"three restarts in a row", "A A term term term A"},
		{"two restarts, the peer announcing between them", "A A term A term A"},
		{"three restarts, another peer announcing between them", "A A term E E term E term A"},
		{"three restarts, both peers announcing between them", "A A E term A E term A E term A"},
		{"kill -9 after a restart", "A A term kill A"},
		{"kill -9 after a restart and a flush", "A A term A kill A"},
		{"kill -9 twice after restarts", "A A term E E kill term kill A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := gazelleDB(t)
			db, err := sql.Open("mysql", dsn)
			require.NoError(t, err)
			defer db.Close()

			peers := map[string]*restartPeer{
				"A": {passkey: alicePasskey, uid: 1, peer: "r1", up: 100, down: 200, left: 5000},
				"E": {passkey: erinPasskey, uid: 5, peer: "r5", up: 30, down: 10, left: 800},
			}
			type stats struct{ up, down int64 }
			base := map[int]stats{}
			for _, p := range peers {
				var s stats
				s.up, s.down = userStats(t, db, p.uid)
				base[p.uid] = s
			}
			baseBalance := torrentBalance(t, db, 1)

			p := startPrivate(ctx, t, bin, dsn, "200ms")
			announcedSinceStart := map[int]bool{}
			for i, step := range strings.Fields(tt.steps) {
				switch step {
				case "term", "kill":
					if step == "term" {
						p.end(syscall.SIGTERM)
					} else {
						p.end(syscall.SIGKILL)
					}
					p = startPrivate(ctx, t, bin, dsn, "200ms")
					clear(announcedSinceStart)
					// Ocelot's view: the table holds the peers announced since the start.
					assert.Zero(t, countRows(t, db, "SELECT COUNT(*) FROM xbt_files_users"), "step %d (%s): xbt_files_users after the start", i, step)
					continue
				}
				pr := peers[step]
				a := ann{passkey: pr.passkey, ih: normalTorrent, peer: pr.peer, left: pr.left}
				if !pr.started {
					a.event, pr.started = "started", true
				} else {
					pr.total, pr.totalDown = pr.total+pr.up, pr.totalDown+pr.down
					a.up, a.down = pr.total, pr.totalDown
				}
				body := p.announce(t, a)
				require.NotContains(t, body, "failure reason", "step %d (%s)", i, step)
				announcedSinceStart[pr.uid] = true

				// Everything so far is credited, once: to each user, and to the torrent.
				want := ""
				balance := baseBalance
				for _, k := range []string{"A", "E"} {
					q := peers[k]
					want += fmt.Sprintf("user %d: %d/%d; ", q.uid, base[q.uid].up+q.total, base[q.uid].down+q.totalDown)
					balance += q.total - q.totalDown
				}
				want += fmt.Sprintf("balance %d", balance)
				eventually(t, 20*time.Second, fmt.Sprintf("step %d (%s) to be credited", i, step), func() (bool, string) {
					got := ""
					for _, k := range []string{"A", "E"} {
						q := peers[k]
						up, down := userStats(t, db, q.uid)
						got += fmt.Sprintf("user %d: %d/%d; ", q.uid, up, down)
					}
					got += fmt.Sprintf("balance %d", torrentBalance(t, db, 1))
					return got == want, fmt.Sprintf("got %q, want %q", got, want)
				})
				var active int
				var xup, xdown int64
				eventually(t, 20*time.Second, fmt.Sprintf("step %d (%s): the peer's xbt_files_users row", i, step), func() (bool, string) {
					err := db.QueryRow("SELECT active, uploaded, downloaded FROM xbt_files_users WHERE uid = ? AND fid = 1", pr.uid).Scan(&active, &xup, &xdown)
					if err != nil {
						return false, err.Error()
					}
					return xup == pr.total && xdown == pr.totalDown, fmt.Sprintf("uploaded %d downloaded %d", xup, xdown)
				})
				assert.Equal(t, 1, active, "step %d (%s)", i, step)
				assert.Equal(t, len(announcedSinceStart), countRows(t, db, "SELECT COUNT(*) FROM xbt_files_users"),
					"step %d (%s): one row per peer announced since the start", i, step)
			}

			// The shutdown flush writes nothing twice.
			p.end(syscall.SIGTERM)
			for _, k := range []string{"A", "E"} {
				q := peers[k]
				up, down := userStats(t, db, q.uid)
				assert.Equal(t, base[q.uid].up+q.total, up, "user %d uploaded", q.uid)
				assert.Equal(t, base[q.uid].down+q.totalDown, down, "user %d downloaded", q.uid)
			}
			assert.Equal(t, baseBalance+peers["A"].total-peers["A"].totalDown+peers["E"].total-peers["E"].totalDown, torrentBalance(t, db, 1))
		})
	}
}

func torrentBalance(t *testing.T, db *sql.DB, tid int) int64 {
	t.Helper()
	var b int64
	require.NoError(t, db.QueryRow("SELECT Balance FROM torrents_leech_stats WHERE TorrentID = ?", tid).Scan(&b))
	return b
}

func countRows(t *testing.T, db *sql.DB, query string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(query).Scan(&n))
	return n
}
