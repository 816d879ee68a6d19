package memory

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// storedPeer is one peer as the pool holds it, for comparing two pools.
type storedPeer struct {
	ih       models.InfoHash
	key      swarmKey
	addr     netip.AddrPort
	seeder   bool
	hidden   bool
	seen     uint32 // the stamp's bits
	up, down int64
}

// dump lists every peer and every torrent's snatches in a pool, sorted.
func dump(tb testing.TB, p *Pool) ([]storedPeer, map[models.InfoHash]uint32) {
	tb.Helper()
	var out []storedPeer
	snatches := make(map[models.InfoHash]uint32)
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.RLock()
		for ti := range s.recs {
			t := &s.recs[ti]
			if !t.used {
				continue
			}
			snatches[t.ih] = t.snatches
			for j := range t.ents() {
				up, down := t.counters(j)
				out = append(out, storedPeer{ih: t.ih, key: t.key(j), addr: t.addrPort(j), seeder: j < t.seeders(),
					hidden: t.ents()[j].flags&flagHidden != 0, seen: t.ents()[j].seen.bits(), up: up, down: down})
			}
		}
		s.mu.RUnlock()
	}
	sort.Slice(out, func(a, b int) bool {
		return fmt.Sprint(out[a].ih, out[a].key) < fmt.Sprint(out[b].ih, out[b].key)
	})
	return out, snatches
}

// mixedPool holds every kind of peer a snapshot must keep: IPv4 and IPv6, seeders and leechers,
// hidden ones, users, zero, small and huge counters, swarms small and past indexAt, snatches.
func mixedPool(t *testing.T) *Pool {
	t.Helper()
	p := NewPool(16)
	for tn := 0; tn < 40; tn++ {
		n := 1 + tn*3 // up to 118 peers: past indexAt
		for i := 0; i < n; i++ {
			u := peer(i, models.Family(i%2), i%3 == 0)
			u.Time = t0.Add(-time.Duration(i) * time.Second)
			u.Hidden = i%7 == 0
			u.Key.User = uint32(i % 4)
			u.Uploaded, u.Downloaded = int64(i*1000), int64(i*7)
			if i%11 == 0 {
				u.Uploaded = 1 << 50 // past an acct
			}
			u.Completed = u.Seeder && i%2 == 0
			announce(t, p, hash(tn), u, all(0))
		}
	}
	return p
}

func TestSnapshotRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swarms.snap")
	src := mixedPool(t)
	src.SetSnapshot(path, time.Minute)
	n, err := src.WriteSnapshot(context.Background())
	require.NoError(t, err)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, fi.Size(), n)

	dst := NewPool(7) // another shard count: the file does not depend on it
	dst.SetSnapshot(path, time.Minute)
	r, err := dst.Restore(context.Background(), t0.Add(-time.Hour), false)
	require.NoError(t, err)
	want, wantSn := dump(t, src)
	got, gotSn := dump(t, dst)
	assert.Equal(t, want, got)
	assert.Equal(t, wantSn, gotSn)
	assert.Equal(t, len(want), r.Peers)
	assert.Zero(t, r.Stale)
	assert.Zero(t, r.Skipped)
	// The pool serves as before: the restored index finds a peer of a large swarm.
	st := scrape(t, dst, hash(39))
	assert.Equal(t, 118, st.Seeders+st.Leechers)
}

func TestSnapshotDropsStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swarms.snap")
	src := NewPool(4)
	src.SetSnapshot(path, time.Minute)
	for i := 0; i < 10; i++ {
		u := peer(i, models.IPv4, false)
		u.Time = t0.Add(time.Duration(i-10) * time.Minute)
		announce(t, src, hash(1), u, all(0))
	}
	_, err := src.WriteSnapshot(context.Background())
	require.NoError(t, err)
	dst := NewPool(4)
	dst.SetSnapshot(path, time.Minute)
	r, err := dst.Restore(context.Background(), t0.Add(-6*time.Minute), false)
	require.NoError(t, err)
	assert.Equal(t, 6, r.Peers)
	assert.Equal(t, 4, r.Stale)
	assert.Equal(t, 6, scrape(t, dst, hash(1)).Leechers)
}

func TestSnapshotRegisteredOnlyCreatesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swarms.snap")
	src := mixedPool(t)
	src.SetSnapshot(path, time.Minute)
	_, err := src.WriteSnapshot(context.Background())
	require.NoError(t, err)
	dst := NewPool(4)
	dst.SetSnapshot(path, time.Minute)
	r, err := dst.Restore(context.Background(), time.Time{}, true)
	require.NoError(t, err)
	assert.Zero(t, r.Peers)
	assert.Positive(t, r.Skipped)
	assert.False(t, scrape(t, dst, hash(3)).Registered)
}

func TestSnapshotMissingFileStartsEmpty(t *testing.T) {
	p := NewPool(4)
	p.SetSnapshot(filepath.Join(t.TempDir(), "none.snap"), time.Minute)
	r, err := p.Restore(context.Background(), time.Time{}, false)
	require.NoError(t, err)
	assert.Zero(t, r.Peers)
}

// validSnapshot returns the bytes of mixedPool's snapshot.
func validSnapshot(t testing.TB, p *Pool) []byte {
	path := filepath.Join(t.TempDir(), "ok.snap")
	p.SetSnapshot(path, time.Minute)
	_, err := p.WriteSnapshot(context.Background())
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// fixCRC sets b's trailer to the checksum of the rest, so that a test reaches the parser.
func fixCRC(b []byte) {
	if len(b) >= snapHeader+snapTrailer {
		binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	}
}

func TestSnapshotRefusesBadFiles(t *testing.T) {
	good := validSnapshot(t, mixedPool(t))
	tests := []struct {
		name string
		data func() []byte
		want error
	}{
		{"empty", func() []byte { return []byte{} }, ErrSnapshotTruncated},
		{"foreign", func() []byte { return []byte(`{"not":"a snapshot"}`) }, ErrSnapshotForeign},
		{"magic only", func() []byte { return []byte(snapMagic[:5]) }, ErrSnapshotTruncated},
		{"header only", func() []byte { return slices.Clone(good[:snapHeader]) }, ErrSnapshotTruncated},
		{"truncated", func() []byte { return slices.Clone(good[:len(good)/2]) }, ErrSnapshotChecksum},
		{"flipped bit", func() []byte { b := slices.Clone(good); b[len(b)/3] ^= 4; return b }, ErrSnapshotChecksum},
		{"version", func() []byte { b := slices.Clone(good); b[8] = 9; fixCRC(b); return b }, ErrSnapshotVersion},
		{"peer count", func() []byte {
			b := slices.Clone(good)
			b[len(b)-snapTrailer+8]++
			fixCRC(b)
			return b
		}, ErrSnapshotCorrupt},
		{"trailing bytes", func() []byte {
			b := slices.Clone(good[:len(good)-snapTrailer])
			b = append(b, 0, 0, 0)
			b = append(b, good[len(good)-snapTrailer:]...)
			fixCRC(b)
			return b
		}, ErrSnapshotCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "swarms.snap")
			data := tt.data()
			require.NoError(t, os.WriteFile(path, data, 0o600))
			p := NewPool(4)
			p.SetSnapshot(path, time.Minute)
			_, err := p.Restore(context.Background(), time.Time{}, false)
			require.ErrorIs(t, err, tt.want)
			var se *SnapshotError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, path, se.Path)
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), "moved aside")
			// Moved aside, whole, never deleted; the pool is empty.
			_, err = os.Stat(path)
			assert.ErrorIs(t, err, os.ErrNotExist)
			ents, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, ents, 1)
			assert.True(t, strings.HasPrefix(ents[0].Name(), "swarms.snap.bad-"), ents[0].Name())
			kept, err := os.ReadFile(filepath.Join(dir, ents[0].Name()))
			require.NoError(t, err)
			assert.Equal(t, data, kept)
			got, _ := dump(t, p)
			assert.Empty(t, got)
		})
	}
}

func TestSnapshotWriteLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	p := mixedPool(t)
	p.SetSnapshot(filepath.Join(dir, "swarms.snap"), time.Minute)
	for i := 0; i < 2; i++ {
		_, err := p.WriteSnapshot(context.Background())
		require.NoError(t, err)
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	assert.Equal(t, "swarms.snap", ents[0].Name())
}

func TestDriverSnapshotParams(t *testing.T) {
	tests := []struct {
		name, params string
		path         string
		interval     time.Duration
		err          string
	}{
		{name: "off", params: `{}`, interval: DefaultSnapshotInterval},
		{name: "on", params: `{"snapshot_path": "/tmp/x.snap"}`, path: "/tmp/x.snap", interval: DefaultSnapshotInterval},
		{name: "interval", params: `{"snapshot_path": "/tmp/x.snap", "snapshot_interval": "30s"}`, path: "/tmp/x.snap", interval: 30 * time.Second},
		{name: "too short", params: `{"snapshot_path": "/tmp/x.snap", "snapshot_interval": "10ms"}`, err: "snapshot_interval"},
		{name: "not a duration", params: `{"snapshot_interval": 5}`, err: "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl, err := Driver{}.New([]byte(tt.params))
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			p := pl.(*Pool)
			assert.Equal(t, tt.path, p.snap.path)
			assert.Equal(t, tt.interval, p.snap.interval)
		})
	}
}

// FuzzSnapshot feeds the reader arbitrary files. The checksum is made right first, so that
// the fuzzer reaches the parser; a file the reader accepts must load without breaking the
// pool's invariants, and writing the pool again must give a file that reads back the same.
func FuzzSnapshot(f *testing.F) {
	var seeds [][]byte
	small := NewPool(2)
	for i := 0; i < 3; i++ {
		u := peer(i, models.Family(i%2), i == 0)
		u.Key.User = uint32(i)
		u.Uploaded = int64(i) << 40
		announce(f, small, hash(i%2), u, all(0))
	}
	seeds = append(seeds, validSnapshot(f, small), []byte(snapMagic), nil)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = slices.Clone(b)
		fixCRC(b)
		if _, err := decodeSnapshot(b, idHasher{}, nil); err != nil {
			return
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "in.snap")
		require.NoError(t, os.WriteFile(path, b, 0o600))
		p := NewPool(3)
		p.SetSnapshot(path, time.Minute)
		_, err := p.Restore(context.Background(), time.Time{}, false)
		require.NoError(t, err)
		before, sn := dump(t, p)
		// Every restored swarm answers an announce and a scrape.
		for ih := range sn {
			var res tracker.AnnounceResult
			sel := all(50)
			u := peer(1_000_000, models.IPv4, false)
			require.NoError(t, p.Announce(context.Background(), ih, &u, &sel, &res))
			u.Remove = true
			require.NoError(t, p.Announce(context.Background(), ih, &u, &sel, &res))
		}
		out := filepath.Join(dir, "out.snap")
		p.SetSnapshot(out, time.Minute)
		_, err = p.WriteSnapshot(context.Background())
		require.NoError(t, err)
		q := NewPool(5)
		q.SetSnapshot(out, time.Minute)
		_, err = q.Restore(context.Background(), time.Time{}, false)
		require.NoError(t, err)
		after, _ := dump(t, q)
		require.Len(t, after, len(before))
	})
}

// BenchmarkSnapshot is issue 17's measurement at 1,000,000 IPv4 peers over 100,000 torrents,
// seen over the last 30 minutes, with counters: the time to write a snapshot (budget 2 s), to
// read it into an empty pool (budget 2 s), and the bytes per peer on disk (budget 32).
func BenchmarkSnapshot(b *testing.B) {
	const torrents, perTorrent = 100_000, 10
	src := NewPool(DefaultShards)
	loadPublic(b, src, torrents, perTorrent, load{counters: true})
	now := t0.Add(1800 * time.Second)
	path := filepath.Join(b.TempDir(), "swarms.snap")
	src.SetSnapshot(path, time.Minute)
	ctx := context.Background()
	b.Run("write", func(b *testing.B) {
		var n int64
		for i := 0; i < b.N; i++ {
			var err error
			if n, err = src.writeSnapshotFile(ctx, path, now); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)/float64(torrents*perTorrent), "bytes/peer")
		b.ReportMetric(float64(n), "bytes")
	})
	b.Run("read", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dst := NewPool(DefaultShards)
			dst.SetSnapshot(path, time.Minute)
			b.StartTimer()
			r, err := dst.Restore(ctx, t0.Add(-time.Second), false)
			if err != nil {
				b.Fatal(err)
			}
			if r.Peers != torrents*perTorrent {
				b.Fatalf("restored %d peers, want %d", r.Peers, torrents*perTorrent)
			}
		}
	})
}

// BenchmarkAnnounceDuringSnapshot reports the 50th and 99th percentile of an announce into
// the 1,000,000-peer pool while snapshots are written back to back, and without: it measures
// and reports, and asserts nothing about timing.
func BenchmarkAnnounceDuringSnapshot(b *testing.B) {
	const torrents, perTorrent = 100_000, 10
	p := NewPool(DefaultShards)
	loadPublic(b, p, torrents, perTorrent, load{counters: true})
	p.SetSnapshot(filepath.Join(b.TempDir(), "swarms.snap"), time.Minute)
	ctx := context.Background()
	for _, during := range []bool{false, true} {
		name := "idle"
		if during {
			name = "snapshotting"
		}
		b.Run(name, func(b *testing.B) {
			stop := make(chan struct{})
			done := make(chan int)
			go func() {
				n := 0
				for during {
					select {
					case <-stop:
						done <- n
						return
					default:
					}
					if _, err := p.WriteSnapshot(ctx); err != nil {
						panic(err)
					}
					n++
				}
				done <- n
			}()
			lat := make([]time.Duration, 0, b.N)
			u := tracker.PeerUpdate{Create: true, Key: models.PeerKey{Family: models.IPv4}, Time: t0}
			sel := tracker.Selection{Want: 50, IPv4: true}
			var res tracker.AnnounceResult
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				n := (i * 7919) % (torrents * perTorrent)
				binary.BigEndian.PutUint64(u.Key.ID[:8], 0x2d5453303030312d)
				binary.BigEndian.PutUint64(u.Key.ID[8:16], uint64(n))
				u.AddrPort = v4(n)
				res.IPv4Peers = res.IPv4Peers[:0]
				start := time.Now()
				if err := p.Announce(ctx, hash(n%torrents), &u, &sel, &res); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			close(stop)
			snaps := <-done
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
			b.ReportMetric(float64(snaps), "snapshots")
		})
	}
}

// TestSnapshotDeltaMerge is an upgrade's handover: the old pool's snapshot is restored in the
// new one, both go on serving for a while, and the old pool's delta (what changed since its
// snapshot) is merged into the new: peers that arrived or changed on the old side are there,
// the new side's later announces win, and downloaded counts add up.
func TestSnapshotDeltaMerge(t *testing.T) {
	ih := hash(1)
	path := filepath.Join(t.TempDir(), "swarms.snap")
	old := NewPool(4)
	old.SetSnapshot(path, time.Minute)
	for i := 0; i < 6; i++ {
		u := peer(i, models.IPv4, i == 0)
		u.Completed = i == 0
		u.Time = t0.Add(-2 * time.Hour)
		announce(t, old, ih, u, all(0))
	}
	require.Equal(t, 1, scrape(t, old, ih).Snatches)
	_, err := old.WriteSnapshot(context.Background())
	require.NoError(t, err)
	since := t0.Add(-time.Hour)

	// The old process after its snapshot: a new peer, a leecher that completes, a re-announce.
	later := func(n int, seeder, completed bool, at time.Time, port uint16) tracker.PeerUpdate {
		u := peer(n, models.IPv4, seeder)
		u.Completed, u.Time = completed, at
		u.AddrPort = netip.AddrPortFrom(u.AddrPort.Addr(), port)
		return u
	}
	announce(t, old, ih, later(10, false, false, since, 1010), all(0))
	announce(t, old, ih, later(1, true, true, since, 1001), all(0))
	announce(t, old, ih, later(2, false, false, since, 1002), all(0))
	announce(t, old, hash(2), later(20, true, true, since, 1020), all(0)) // a torrent new since

	// The new process restored the snapshot and serves: peer 2 announces again (later), peer 3
	// completes.
	nu := NewPool(8)
	nu.SetSnapshot(path, time.Minute)
	nu.ExpectDelta()
	r, err := nu.Restore(context.Background(), t0.Add(-3*time.Hour), false)
	require.NoError(t, err)
	require.Equal(t, 6, r.Peers)
	announce(t, nu, ih, later(2, false, false, since.Add(time.Minute), 2002), all(0))
	announce(t, nu, ih, later(3, true, true, since.Add(time.Minute), 2003), all(0))

	var buf strings.Builder
	_, err = old.WriteDelta(context.Background(), &buf, since)
	require.NoError(t, err)
	m, err := nu.MergeDelta(context.Background(), strings.NewReader(buf.String()), t0.Add(-3*time.Hour), false)
	require.NoError(t, err)
	assert.Equal(t, 3, m.Peers, "peers 10, 1 and 20")
	assert.Equal(t, 1, m.Skipped, "peer 2: the new process heard from it later")

	got, _ := dump(t, nu)
	ports := make(map[models.PeerID]uint16)
	seeders := make(map[models.PeerID]bool)
	for _, sp := range got {
		id := peerIDOf(t, nu, sp.key.id)
		ports[id], seeders[id] = sp.addr.Port(), sp.seeder
	}
	assert.Equal(t, uint16(1010), ports[pid(10)], "a peer that arrived on the old side")
	assert.Equal(t, uint16(1001), ports[pid(1)])
	assert.True(t, seeders[pid(1)], "completed on the old side")
	assert.Equal(t, uint16(2002), ports[pid(2)], "the later announce wins")
	assert.Equal(t, uint16(1020), ports[pid(20)])
	st := scrape(t, nu, ih)
	assert.Equal(t, 3, st.Snatches, "1 before the snapshot, 1 on each side after")
	assert.Equal(t, 3, st.Seeders)
	assert.Equal(t, 4, st.Leechers)
	assert.Equal(t, 1, scrape(t, nu, hash(2)).Snatches)

	// A delta cut short is refused whole.
	_, err = nu.MergeDelta(context.Background(), strings.NewReader(buf.String()[:buf.Len()-1]), time.Time{}, false)
	require.ErrorIs(t, err, ErrSnapshotChecksum)
}

// TestSnapshotPrivateMode restores into a pool whose site is loaded first, as private mode
// does: the peers of registered torrents come back with their users and counters, the
// downloaded count stays the site's, and a torrent the site no longer lists is not created.
func TestSnapshotPrivateMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swarms.snap")
	src := NewPool(4)
	src.SetSnapshot(path, time.Minute)
	addTorrent(t, src, 1, hash(1), models.Normal)
	addTorrent(t, src, 2, hash(2), models.Normal)
	for i := 0; i < 4; i++ {
		for _, ih := range []models.InfoHash{hash(1), hash(2)} {
			u := peer(i, models.IPv4, i == 0)
			u.Create = false
			u.Key.User = uint32(10 + i)
			u.Uploaded, u.Downloaded = int64(100*i), int64(7*i)
			announce(t, src, ih, u, all(0))
		}
	}
	_, err := src.WriteSnapshot(context.Background())
	require.NoError(t, err)

	dst := NewPool(4)
	dst.SetSnapshot(path, time.Minute)
	siteUpdate(t, dst, models.SiteUpdate{Action: models.AddTorrent, Torrent: models.Torrent{ID: 1, InfoHash: hash(1), Snatches: 42}})
	r, err := dst.Restore(context.Background(), time.Time{}, true)
	require.NoError(t, err)
	assert.Equal(t, 4, r.Peers)
	assert.Equal(t, 4, r.Skipped, "torrent 2 is no longer registered")
	st := scrape(t, dst, hash(1))
	assert.Equal(t, []int{1, 3, 42}, []int{st.Seeders, st.Leechers, st.Snatches})
	assert.False(t, scrape(t, dst, hash(2)).Registered)

	want, _ := dump(t, src)
	got, _ := dump(t, dst)
	var want1 []storedPeer
	for _, sp := range want {
		if sp.ih == hash(1) {
			want1 = append(want1, sp)
		}
	}
	assert.Equal(t, want1, got, "users, counters, addresses and times as they were")
}

// snapshotV1 encodes peers announced at t0 into one torrent of a version 1 snapshot taken at
// taken, the format before peers were keyed by a hash: whole peer IDs and no key seed.
func snapshotV1(taken time.Time, ih models.InfoHash, ids []models.PeerID, seeders int) []byte {
	b := []byte(snapMagic)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint64(b, uint64(taken.Unix()))
	b = append(b, ih[:]...)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	b = binary.AppendUvarint(b, uint64(seeders))
	b = binary.AppendUvarint(b, 3) // snatches
	for i, id := range ids {
		b = append(b, id[:]...)
		a := v4(i).Addr().As4()
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, v4(i).Port())
		b = binary.AppendUvarint(b, uint64(taken.Sub(t0)/time.Second)<<peerFlagBits)
	}
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(ids)))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// TestSnapshotVersion1 restores a snapshot written before peers were keyed by a hash, as after
// an upgrade across that change: the peers are there, keyed with the pool's seed, so that
// their next announces find them.
func TestSnapshotVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swarms.snap")
	ih := hash(7)
	ids := []models.PeerID{pid(1), pid(2), pid(3)}
	require.NoError(t, os.WriteFile(path, snapshotV1(t0.Add(time.Minute), ih, ids, 1), 0o600))
	p := NewPool(4)
	p.SetSnapshot(path, time.Minute)
	r, err := p.Restore(context.Background(), t0.Add(-time.Hour), false)
	require.NoError(t, err)
	assert.Equal(t, 3, r.Peers)
	st := scrape(t, p, ih)
	assert.Equal(t, []int{1, 2, 3}, []int{st.Seeders, st.Leechers, st.Snatches})
	for i := range ids {
		u := peer(i+1, models.IPv4, i == 0)
		u.Time = t0.Add(2 * time.Minute)
		res := announce(t, p, ih, u, all(0))
		assert.True(t, res.Prev.Found, "peer %d is found by its ID", i+1)
		assert.True(t, t0.Equal(res.Prev.Time), "peer %d: last announce %v", i+1, res.Prev.Time)
	}
	assert.Equal(t, 3, scrape(t, p, ih).Seeders+scrape(t, p, ih).Leechers, "no peer is stored twice")
}

// TestSnapshotKeySeed: a restored pool takes the file's key seed, so that a peer announcing
// after a restart finds its entry; a pool that holds peers already keeps its own seed and skips
// the peers of a file with another.
func TestSnapshotKeySeed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swarms.snap")
	ih := hash(8)
	src := NewPool(2)
	src.ids = idHasher{seed: 41}
	src.SetSnapshot(path, time.Minute)
	announce(t, src, ih, peer(1, models.IPv4, false), all(0))
	announce(t, src, ih, peer(2, models.IPv6, true), all(0))
	_, err := src.WriteSnapshot(context.Background())
	require.NoError(t, err)

	tests := []struct {
		name      string
		before    bool // the pool holds a peer before the restore
		wantSeed  uint64
		wantPeers int
		wantSkip  int
	}{
		{name: "an empty pool takes the file's seed", wantSeed: 41, wantPeers: 2},
		{name: "a pool with peers keeps its seed and skips the file's peers", before: true, wantSeed: 42, wantSkip: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := NewPool(3)
			dst.ids = idHasher{seed: 42}
			dst.SetSnapshot(path, time.Minute)
			if tt.before {
				announce(t, dst, hash(9), peer(5, models.IPv4, false), all(0))
			}
			r, err := dst.Restore(context.Background(), t0.Add(-time.Hour), false)
			require.NoError(t, err)
			assert.Equal(t, tt.wantSeed, dst.ids.seed)
			assert.Equal(t, tt.wantPeers, r.Peers)
			assert.Equal(t, tt.wantSkip, r.Skipped)
			res := announce(t, dst, ih, peer(2, models.IPv6, true), all(0))
			assert.Equal(t, tt.wantPeers > 0, res.Prev.Found, "peer 2 finds its restored entry")
		})
	}
}
