package tracker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// benchSwarm builds a tracker holding torrents × peers (a fifth of them seeders), each peer
// its own user in private mode, and returns the announces that keep the swarms as they are.
func benchSwarm(b *testing.B, private bool, torrents, peers int) (*tracker.Tracker, []models.Announce) {
	b.Helper()
	cfg := config.Default()
	if private {
		cfg.PrivateEnabled = true
		cfg.SitePassword, cfg.ReportPassword = "site-secret", "report-secret"
	}
	require.NoError(b, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(b, err)
	b.Cleanup(func() { pool.Close() })
	tr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(b, err)
	ctx := context.Background()
	if private {
		st := &models.SiteState{}
		for i := 0; i < peers; i++ {
			st.Users = append(st.Users, models.User{ID: uint64(i + 1), Passkey: fmt.Sprintf("%032d", i+1), CanLeech: true})
		}
		for tn := 0; tn < torrents; tn++ {
			st.Torrents = append(st.Torrents, models.Torrent{ID: uint64(tn + 1), InfoHash: hash(tn)})
		}
		require.NoError(b, tr.ReplaceSite(ctx, st))
	}
	anns := make([]models.Announce, 0, torrents*peers)
	for tn := 0; tn < torrents; tn++ {
		for i := 0; i < peers; i++ {
			a := leecher(hash(tn), numPid(i), ipv4(i).String())
			if private {
				a.Passkey = fmt.Sprintf("%032d", i+1)
			}
			a.UserAgent = "qBittorrent/4.6.2"
			if i%5 == 0 {
				a.Left = 0
			}
			a.Event = models.Started
			require.NoError(b, tr.HandleAnnounce(ctx, a, nopWriter{}))
			a.Event, a.NumWant = models.None, 50
			anns = append(anns, *a)
		}
	}
	return tr, anns
}

func benchmarkHandleAnnounce(b *testing.B, private bool) {
	const torrents, peers = 1000, 20
	tr, anns := benchSwarm(b, private, torrents, peers)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Spread the announces over torrents and peers: torrent i%1000, peer (i/1000)%20.
		a := &anns[(i%torrents)*peers+(i/torrents)%peers]
		if err := tr.HandleAnnounce(ctx, a, nopWriter{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandleAnnouncePrivate and BenchmarkHandleAnnouncePublic announce into the same warm
// swarms (1000 torrents × 20 peers): their difference is what private mode costs (the passkey
// lookup, the site whitelist, sessions, per-user selection).
func BenchmarkHandleAnnouncePrivate(b *testing.B) { benchmarkHandleAnnounce(b, true) }

func BenchmarkHandleAnnouncePublic(b *testing.B) { benchmarkHandleAnnounce(b, false) }

func BenchmarkHandleAnnouncePrivateParallel(b *testing.B) { benchmarkParallel(b, true) }

func BenchmarkHandleAnnouncePublicParallel(b *testing.B) { benchmarkParallel(b, false) }

func benchmarkParallel(b *testing.B, private bool) {
	const torrents, peers = 1000, 20
	tr, anns := benchSwarm(b, private, torrents, peers)
	b.ReportAllocs()
	b.ResetTimer()
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := int(seq.Add(1)) * 104729 // each goroutine starts elsewhere
		for pb.Next() {
			i += 7919
			a := &anns[i%len(anns)]
			if err := tr.HandleAnnounce(ctx, a, nopWriter{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
