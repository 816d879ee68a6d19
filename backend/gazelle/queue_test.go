package gazelle

import (
	"context"
	"database/sql"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// offlineConn returns a started Conn whose database refuses connections (a free loopback
// port), so that every flush fails and what is queued stays queued. It is closed when the test
// ends.
func offlineConn(t *testing.T, p Params) *Conn {
	t.Helper()
	c := offlineConnNotStarted(t, p)
	c.start()
	return c
}

// offlineConnNotStarted is offlineConn before start.
func offlineConnNotStarted(t *testing.T, p Params) *Conn {
	t.Helper()
	db, err := sql.Open("mysql", "chihaya:pw@tcp(127.0.0.1:"+strconv.Itoa(freePort(t))+")/gazelle?timeout=1s&interpolateParams=true")
	require.NoError(t, err)
	c := newConn(p, db, "test")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// queueConn returns a Conn without a database or a flusher: for tests of the queue alone.
func queueConn(p Params) *Conn {
	return newConn(p, nil, "test")
}

var (
	peerA = peerID("-qB4250-aaaaaaaaaaaa")
	peerB = peerID("-TR3000-bbbbbbbbbbbb")
	t0    = time.Unix(1700000000, 0)
)

func peerID(s string) models.PeerID {
	var id models.PeerID
	copy(id[:], s)
	return id
}

// announce returns a private-mode delta of user uid on torrent tid from peerA at t0, as the
// core makes for a leecher's regular announce; edit modifies it.
func announce(uid, tid uint64, edit func(d *models.AnnounceDelta)) *models.AnnounceDelta {
	d := &models.AnnounceDelta{
		UserID:    uid,
		TorrentID: tid,
		PeerID:    peerA,
		Endpoint:  netip.MustParseAddrPort("203.0.113.7:51413"),
		UserAgent: "qBittorrent/4.2.5",
		Left:      1000,
		Seeders:   1,
		Leechers:  1,
		FirstSeen: t0,
		Announces: 2,
		Time:      t0.Add(30 * time.Minute),
	}
	if edit != nil {
		edit(d)
	}
	return d
}

func record(t *testing.T, c *Conn, d *models.AnnounceDelta) {
	t.Helper()
	require.NoError(t, c.RecordAnnounce(context.Background(), d))
}

func TestQueueMerges(t *testing.T) {
	c := queueConn(DefaultParams())
	// Two announces of user 1 on torrent 7 and one of user 2, in one flush interval.
	record(t, c, announce(1, 7, func(d *models.AnnounceDelta) {
		d.Created, d.Event, d.Announces = true, models.Started, 1
		d.Seeders, d.Leechers = 0, 1
	}))
	record(t, c, announce(1, 7, func(d *models.AnnounceDelta) {
		d.Uploaded, d.Downloaded, d.Corrupt, d.Left = 300, 200, 10, 800
		d.UploadedDelta, d.DownloadedDelta, d.CorruptDelta = 300, 200, 10
		d.CreditedUp, d.CreditedDown = 300, 200
		d.UpSpeed, d.DownSpeed = 5, 3
		d.Seeders, d.Leechers = 2, 3
	}))
	record(t, c, announce(2, 7, func(d *models.AnnounceDelta) {
		d.PeerID = peerB
		d.Left, d.Snatched, d.Event, d.Seeder = 0, true, models.Completed, true
		d.Uploaded, d.Downloaded = 0, 1000
		d.DownloadedDelta, d.CreditedDown = 1000, 0 // freeleech
		d.Token, d.TokenDown = true, 1000
		d.Seeders, d.Leechers = 3, 2
	}))

	b := c.open
	assert.Equal(t, map[uint64]userRow{1: {up: 300, down: 200}}, b.users, "user 2's delta credited nothing")
	assert.Equal(t, map[uint64]torrentRow{7: {seeders: 3, leechers: 2, snatched: 1, balance: 300 - 200 - 10 - 1000}}, b.torrents)
	require.Len(t, b.snatches, 1)
	assert.Equal(t, snatchRow{uid: 2, tid: 7, tstamp: t0.Add(30 * time.Minute).Unix(), ip: netip.MustParseAddr("203.0.113.7")}, b.snatches[0])
	assert.Equal(t, map[tokenKey]int64{{uid: 2, tid: 7}: 1000}, b.tokens)
	require.Len(t, b.peers, 2)
	p1 := b.peers[peerKey{uid: 1, tid: 7, peerID: peerA}]
	assert.Equal(t, peerRow{
		heavy: true, active: true, uploaded: 300, downloaded: 200, upspeed: 5, downspeed: 3, remaining: 800,
		corrupt: 10, timespent: 1800, announced: 2, ip: netip.MustParseAddr("203.0.113.7"),
		useragent: "qBittorrent/4.2.5", mtime: t0.Add(30 * time.Minute).Unix(),
		firstSeen: t0.Unix(), lastSeen: t0.Add(30 * time.Minute).Unix(),
	}, p1)
	assert.Equal(t, 6, c.pendingRows(), "1 user, 1 torrent, 1 snatch, 2 peers, 1 token")
}

func TestQueueIgnores(t *testing.T) {
	c := queueConn(DefaultParams())
	record(t, c, announce(0, 7, nil))
	record(t, c, announce(1, 0, nil))
	record(t, c, nil)
	assert.Zero(t, c.pendingRows(), "only private-mode deltas are recorded")

	ro := DefaultParams()
	ro.ReadOnly = true
	c = queueConn(ro)
	record(t, c, announce(1, 7, func(d *models.AnnounceDelta) { d.CreditedUp = 5 }))
	assert.Zero(t, c.pendingRows(), "a read-only Conn writes nothing")
}

// TestHeavyLight follows one peer through a session: which xbt_files_users row each announce
// queues, flushing (sealing) between announces.
func TestHeavyLight(t *testing.T) {
	c := queueConn(DefaultParams())
	steps := []struct {
		name  string
		edit  func(d *models.AnnounceDelta)
		heavy bool
	}{
		{"first announce creates the peer", func(d *models.AnnounceDelta) { d.Created, d.Event = true, models.Started }, true},
		{"nothing changed", nil, false},
		{"nothing changed again", nil, false},
		{"left changed alone", func(d *models.AnnounceDelta) { d.Left = 900 }, true},
		{"unchanged at the new left", func(d *models.AnnounceDelta) { d.Left = 900 }, false},
		{"bytes moved", func(d *models.AnnounceDelta) {
			d.Left, d.Uploaded, d.UploadedDelta, d.CreditedUp = 900, 50, 50, 50
		}, true},
		{"unchanged totals", func(d *models.AnnounceDelta) { d.Left, d.Uploaded = 900, 50 }, false},
		{"client restarted its counters (no event)", func(d *models.AnnounceDelta) { d.Left = 900 }, true},
		{"corrupt", func(d *models.AnnounceDelta) { d.Left, d.Corrupt, d.CorruptDelta = 900, 7, 7 }, true},
		{"paused", func(d *models.AnnounceDelta) { d.Left, d.Corrupt, d.Event = 900, 7, models.Paused }, true},
		{"unchanged", func(d *models.AnnounceDelta) { d.Left, d.Corrupt = 900, 7 }, false},
		{"stopped", func(d *models.AnnounceDelta) { d.Left, d.Corrupt, d.Event, d.Removed = 900, 7, models.Stopped, true }, true},
		{"back without started: unknown again", func(d *models.AnnounceDelta) { d.Left, d.Corrupt = 900, 7 }, true},
	}
	for i, s := range steps {
		d := announce(1, 7, s.edit)
		d.Announces = i + 1
		d.Time = t0.Add(time.Duration(i) * time.Minute)
		record(t, c, d)
		require.Len(t, c.open.peers, 1, s.name)
		r := c.open.peers[peerKey{uid: 1, tid: 7, peerID: peerA}]
		assert.Equal(t, s.heavy, r.heavy, s.name)
		assert.Equal(t, int64(i+1), r.announced, s.name)
		assert.Equal(t, int64(i*60), r.timespent, s.name)
		// Heavy or light, the row carries the peer's baseline.
		assert.Equal(t, d.Uploaded, r.uploaded, s.name)
		assert.Equal(t, d.Corrupt, r.corrupt, s.name)
		assert.Equal(t, t0.Unix(), r.firstSeen, s.name)
		assert.Equal(t, d.Time.Unix(), r.lastSeen, s.name)
		if s.heavy {
			assert.Equal(t, !d.Removed, r.active, s.name)
			assert.Equal(t, d.Left, r.remaining, s.name)
		}
		c.open = newBuffers() // as a flush does
		c.pending = 0
	}
}

func TestMergePeer(t *testing.T) {
	heavy := peerRow{heavy: true, active: true, uploaded: 10, upspeed: 5, downspeed: 6, remaining: 3, timespent: 60, announced: 2, mtime: 100, useragent: "ua",
		firstSeen: 40, lastSeen: 100}
	light := peerRow{uploaded: 10, downloaded: 1, corrupt: 2, timespent: 120, announced: 3, mtime: 160, firstSeen: 40, lastSeen: 160}
	heavier := peerRow{heavy: true, active: false, uploaded: 20, timespent: 180, announced: 4, mtime: 220}

	merged := mergePeer(heavy, light)
	assert.True(t, merged.heavy, "a heartbeat does not demote a queued heavy row")
	assert.Equal(t, int64(10), merged.uploaded)
	assert.Equal(t, int64(1), merged.downloaded, "the baseline is the latest announce's")
	assert.Equal(t, int64(2), merged.corrupt)
	assert.Equal(t, int64(40), merged.firstSeen)
	assert.Equal(t, int64(160), merged.lastSeen)
	assert.Equal(t, int64(3), merged.remaining)
	assert.Equal(t, int64(120), merged.timespent)
	assert.Equal(t, int64(3), merged.announced)
	assert.Equal(t, int64(160), merged.mtime)
	assert.Zero(t, merged.upspeed, "the heartbeat's zero speeds win")
	assert.Zero(t, merged.downspeed)
	assert.Equal(t, heavier, mergePeer(merged, heavier), "a heavy row replaces")
	assert.Equal(t, heavier, mergePeer(light, heavier))
	assert.Equal(t, light, mergePeer(peerRow{timespent: 1}, light), "a light row replaces a light row")
}

func TestTorrentRows(t *testing.T) {
	c := queueConn(DefaultParams())
	// The first announce on a torrent writes its row.
	record(t, c, announce(1, 7, nil))
	require.Contains(t, c.open.torrents, uint64(7))
	c.open, c.pending = newBuffers(), 0

	// A heartbeat with the same counts does not…
	record(t, c, announce(1, 7, nil))
	assert.NotContains(t, c.open.torrents, uint64(7))
	// …one with other counts does…
	record(t, c, announce(2, 7, func(d *models.AnnounceDelta) { d.Leechers = 2 }))
	assert.Equal(t, torrentRow{seeders: 1, leechers: 2}, c.open.torrents[7])
	c.open, c.pending = newBuffers(), 0
	// …and so does one an hour after the last row.
	record(t, c, announce(1, 7, func(d *models.AnnounceDelta) { d.Leechers = 2; d.Time = d.Time.Add(time.Hour) }))
	assert.Contains(t, c.open.torrents, uint64(7))
	c.open, c.pending = newBuffers(), 0

	// Balance adds every delta's up − down − corrupt, whatever the freeleech rules credited.
	for _, up := range []int64{100, 200} {
		record(t, c, announce(1, 7, func(d *models.AnnounceDelta) {
			d.Leechers = 2
			d.UploadedDelta, d.DownloadedDelta, d.CorruptDelta = up, 30, 5
		}))
	}
	assert.Equal(t, torrentRow{seeders: 1, leechers: 2, balance: 300 - 60 - 10}, c.open.torrents[7])

	// The reaper's counts replace the announces'.
	require.NoError(t, c.RecordReap(context.Background(), []models.TorrentStats{{ID: 7, Seeders: 0, Leechers: 0}, {ID: 0, Seeders: 9}}))
	assert.Equal(t, torrentRow{balance: 300 - 60 - 10}, c.open.torrents[7])
	assert.Len(t, c.open.torrents, 1, "entries without an ID are ignored")
	require.NoError(t, c.RecordReap(context.Background(), []models.TorrentStats{{ID: 8, Leechers: 4}}))
	assert.Equal(t, torrentRow{leechers: 4}, c.open.torrents[8])
}

func TestRecordedColumns(t *testing.T) {
	long := strings.Repeat("x", 60)
	tests := []struct {
		name string
		edit func(d *models.AnnounceDelta)
		ip   string
		ua   string
	}{
		{"ipv4", nil, "203.0.113.7", "qBittorrent/4.2.5"},
		{"protected user", func(d *models.AnnounceDelta) { d.Protected = true }, "", "qBittorrent/4.2.5"},
		{"ipv6 is not written", func(d *models.AnnounceDelta) { d.Endpoint = netip.MustParseAddrPort("[2001:db8::1]:6881") }, "", "qBittorrent/4.2.5"},
		{"ipv4-mapped is ipv4", func(d *models.AnnounceDelta) { d.Endpoint = netip.MustParseAddrPort("[::ffff:198.51.100.2]:6881") }, "198.51.100.2", "qBittorrent/4.2.5"},
		{"long user agent", func(d *models.AnnounceDelta) { d.UserAgent = long }, "203.0.113.7", long[:51]},
		{"binary user agent", func(d *models.AnnounceDelta) { d.UserAgent = "Tr\xc3\xa4ns\x00mission'\\" }, "203.0.113.7", "Tr??ns?mission'\\"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := queueConn(DefaultParams())
			record(t, c, announce(1, 7, func(d *models.AnnounceDelta) {
				d.Created, d.Snatched = true, true
				if tt.edit != nil {
					tt.edit(d)
				}
			}))
			r := c.open.peers[peerKey{uid: 1, tid: 7, peerID: peerA}]
			require.Len(t, c.open.snatches, 1)
			ip := ""
			if r.ip.IsValid() {
				ip = r.ip.String()
			}
			assert.Equal(t, tt.ip, ip)
			assert.Equal(t, tt.ip, ipText(c.open.snatches[0]))
			assert.Equal(t, tt.ua, r.useragent)
		})
	}
}

func TestColumnsClamped(t *testing.T) {
	c := queueConn(DefaultParams())
	record(t, c, announce(1, 7, func(d *models.AnnounceDelta) {
		d.Created = true
		d.UpSpeed, d.DownSpeed = 1<<40, -5
		d.Left, d.Uploaded = -1, -2
		d.FirstSeen = d.Time.Add(time.Hour) // a clock step
		d.Announces = 1 << 40
		d.Seeders = -1
	}))
	r := c.open.peers[peerKey{uid: 1, tid: 7, peerID: peerA}]
	assert.Equal(t, int64(maxUint32), r.upspeed)
	assert.Zero(t, r.downspeed)
	assert.Zero(t, r.remaining)
	assert.Zero(t, r.uploaded)
	assert.Zero(t, r.timespent)
	assert.Equal(t, int64(maxInt32), r.announced)
	assert.Zero(t, c.open.torrents[7].seeders)
}

func TestInternAgent(t *testing.T) {
	c := queueConn(DefaultParams())
	buf := []byte("Deluge 2.0.3")
	ua := unsafeString(buf)
	s := c.internAgent(ua)
	buf[0] = 'X' // the caller reuses its buffer
	assert.Equal(t, "Deluge 2.0.3", s, "the interned copy does not alias the caller's buffer")
	assert.Equal(t, 1, len(c.agents))
	assert.Equal(t, "Deluge 2.0.3", c.internAgent("Deluge 2.0.3"))
	assert.Equal(t, 1, len(c.agents))
	for i := range maxAgents + 1 {
		c.internAgent("agent " + strconv.Itoa(i))
	}
	assert.LessOrEqual(t, len(c.agents), maxAgents, "bounded")
}

func TestQueueFull(t *testing.T) {
	p := DefaultParams()
	p.QueueLimit = 10 // peer rows stop at 9
	c := queueConn(p)
	ctx := context.Background()

	// Each new user on a new torrent is 3 rows: user, torrent, peer.
	for uid := uint64(1); uid <= 3; uid++ {
		require.NoError(t, c.RecordAnnounce(ctx, announce(uid, uid, func(d *models.AnnounceDelta) { d.CreditedUp = 1 })))
	}
	assert.Equal(t, 9, c.pendingRows())
	assert.Equal(t, 2, c.level, "past 90%")

	// A fourth: the user row fits (10), the torrent row does not, nor the peer row.
	err := c.RecordAnnounce(ctx, announce(4, 4, func(d *models.AnnounceDelta) { d.CreditedUp = 1 }))
	require.ErrorIs(t, err, ErrQueueFull)
	assert.Equal(t, 10, c.pendingRows())
	assert.Equal(t, 3, c.level)
	assert.Equal(t, 2.0, counterValue(t, c.metrics.dropped))
	assert.Contains(t, c.open.users, uint64(4))
	assert.NotContains(t, c.open.torrents, uint64(4))

	// Full, but rows for queued keys still merge.
	for range 3 {
		require.NoError(t, c.RecordAnnounce(ctx, announce(1, 1, func(d *models.AnnounceDelta) {
			d.CreditedUp, d.UploadedDelta, d.Left = 5, 5, 10
		})))
	}
	assert.Equal(t, int64(16), c.open.users[1].up)
	assert.Equal(t, int64(15), c.open.torrents[1].balance)
	assert.Equal(t, int64(10), c.open.peers[peerKey{uid: 1, tid: 1, peerID: peerA}].remaining)

	// A refused torrent row is written in full once there is room: its memory was forgotten.
	c.open, c.pending, c.level = newBuffers(), 0, 0
	require.NoError(t, c.RecordAnnounce(ctx, announce(4, 4, nil)))
	assert.Contains(t, c.open.torrents, uint64(4))
	assert.True(t, c.open.peers[peerKey{uid: 4, tid: 4, peerID: peerA}].heavy)

	require.ErrorIs(t, queueConnFull(t).RecordReap(ctx, []models.TorrentStats{{ID: 99}}), ErrQueueFull)
}

func queueConnFull(t *testing.T) *Conn {
	p := DefaultParams()
	p.QueueLimit = 1
	c := queueConn(p)
	require.NoError(t, c.RecordReap(context.Background(), []models.TorrentStats{{ID: 1}}))
	return c
}

func TestCheckLevel(t *testing.T) {
	p := DefaultParams()
	p.QueueLimit = 100
	c := queueConn(p)
	steps := []struct {
		pending int
		logs    string // "" for no line
	}{
		{10, ""},
		{49, ""},
		{50, "past 50%"},
		{60, ""},
		{90, "past 90%"},
		{95, ""},
		{100, "full"},
		{100, ""},
		{70, ""},
		{100, "full"},
		{0, "back under 50%"},
		{0, ""},
		{55, "past 50%"},
	}
	for _, s := range steps {
		c.pending = s.pending
		msg := c.checkLevel()
		if s.logs == "" {
			assert.Empty(t, msg, "at %d", s.pending)
		} else {
			assert.Contains(t, msg, s.logs, "at %d", s.pending)
		}
	}
}

// TestRecordConcurrent records from many goroutines while batches are sealed: no row is lost or
// merged twice (run with -race).
func TestRecordConcurrent(t *testing.T) {
	c := queueConn(DefaultParams())
	const goroutines, each = 8, 500
	var (
		wg      sync.WaitGroup
		sealed  []*batch
		stop    = make(chan struct{})
		sealerW sync.WaitGroup
	)
	sealerW.Add(1)
	go func() {
		defer sealerW.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if b, _ := c.nextBatch(); b != nil {
				sealed = append(sealed, b)
				c.mu.Lock()
				c.sealed = nil // as batchDone, keeping the buffers
				c.pending -= b.rows
				c.mu.Unlock()
			}
		}
	}()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				assert.NoError(t, c.RecordAnnounce(context.Background(), announce(uint64(g+1), uint64(i%10+1), func(d *models.AnnounceDelta) {
					d.CreditedUp, d.CreditedDown = 1, 2
					d.Announces = i
				})))
			}
		}()
	}
	wg.Wait()
	close(stop)
	sealerW.Wait()
	if b, _ := c.nextBatch(); b != nil {
		sealed = append(sealed, b)
	}
	var up, down int64
	for _, b := range sealed {
		for _, u := range b.bufs.users {
			up += u.up
			down += u.down
		}
	}
	assert.Equal(t, int64(goroutines*each), up)
	assert.Equal(t, int64(2*goroutines*each), down)
}

func BenchmarkRecordAnnounce(b *testing.B) {
	c := queueConn(DefaultParams())
	ctx := context.Background()
	deltas := make([]*models.AnnounceDelta, 1000)
	for i := range deltas {
		deltas[i] = announce(uint64(i%100+1), uint64(i%37+1), func(d *models.AnnounceDelta) {
			d.PeerID[19] = byte(i)
			d.PeerID[18] = byte(i >> 8)
			d.CreditedUp, d.UploadedDelta, d.Uploaded = 10, 10, 10
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.RecordAnnounce(ctx, deltas[i%len(deltas)]); err != nil {
			b.Fatal(err)
		}
	}
}

func unsafeString(b []byte) string { return unsafe.String(&b[0], len(b)) }

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
