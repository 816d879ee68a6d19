package tracker_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// reapBackend is a recording backend that also takes the reaper's changed torrents.
type reapBackend struct {
	recBackend
	reaps [][]models.TorrentStats
}

func (b *reapBackend) RecordReap(_ context.Context, ts []models.TorrentStats) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reaps = append(b.reaps, slices.Clone(ts))
	return nil
}

var (
	alice = models.User{ID: 1, Passkey: "alicealicealicealicealicealice01", CanLeech: true}
	bob   = models.User{ID: 2, Passkey: "bobbobbobbobbobbobbobbobbobbob02", CanLeech: true}
	carol = models.User{ID: 3, Passkey: "carolcarolcarolcarolcarolcarol03"} // can_leech=0
	dave  = models.User{ID: 4, Passkey: "davedavedavedavedavedavedaveda04", CanLeech: true, Protected: true}
)

// The site's torrents: info hash hash(n) has the ID 100+n.
const (
	tNormal  = 1
	tFree    = 2
	tNeutral = 3
)

func siteState() *models.SiteState {
	return &models.SiteState{
		Users: []models.User{alice, bob, carol, dave},
		Torrents: []models.Torrent{
			{ID: 100 + tNormal, InfoHash: hash(tNormal), Freeleech: models.Normal},
			{ID: 100 + tFree, InfoHash: hash(tFree), Freeleech: models.Free},
			{ID: 100 + tNeutral, InfoHash: hash(tNeutral), Freeleech: models.Neutral},
		},
	}
}

type privEnv struct {
	*env
	rb *reapBackend
}

// newPrivEnv builds a private-mode tracker on a fresh memory pool loaded with siteState(), a
// recording backend that takes reaps too, and a fake clock at t0.
func newPrivEnv(tb testing.TB, mutate func(*config.Config)) *privEnv {
	tb.Helper()
	cfg := config.Default()
	cfg.PrivateEnabled = true
	cfg.SitePassword = "site-secret"
	cfg.ReportPassword = "report-secret"
	if mutate != nil {
		mutate(&cfg)
	}
	require.NoError(tb, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(tb, err)
	tb.Cleanup(func() { pool.Close() })
	rb := &reapBackend{}
	e := &env{be: &rb.recBackend, now: t0}
	e.tr, err = tracker.New(&cfg, pool, rb, nil)
	require.NoError(tb, err)
	e.tr.Now = func() time.Time { return e.now }
	require.NoError(tb, e.tr.ReplaceSite(context.Background(), siteState()))
	return &privEnv{env: e, rb: rb}
}

func (e *privEnv) site(tb testing.TB, u models.SiteUpdate) {
	tb.Helper()
	require.NoError(tb, e.tr.UpdateSite(context.Background(), &u))
}

// scrape scrapes hashes with dave's passkey (no test removes dave): a private scrape needs a
// user's.
func (e *privEnv) scrape(tb testing.TB, hashes ...models.InfoHash) []models.TorrentStats {
	tb.Helper()
	var w scrapeWriter
	require.NoError(tb, e.tr.HandleScrape(context.Background(), &models.Scrape{Passkey: dave.Passkey, InfoHashes: hashes}, &w))
	return w.files
}

// try runs one announce and returns what was written and the error.
func (e *privEnv) try(a *models.Announce) (*recWriter, error) {
	var w recWriter
	err := e.tr.HandleAnnounce(context.Background(), a, &w)
	return &w, err
}

// pann is a leecher's announce of user u on torrent n.
func pann(u models.User, n int, id models.PeerID, ep string) *models.Announce {
	a := leecher(hash(n), id, ep)
	a.Passkey = u.Passkey
	a.UserAgent = "qBittorrent/4.6.2"
	return a
}

func TestPrivateFailures(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*config.Config)
		site    []models.SiteUpdate
		ann     func() *models.Announce
		wantErr string
	}{
		{
			name: "unknown passkey",
			ann: func() *models.Announce {
				a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
				a.Passkey = "nobodynobodynobodynobodynobody00"
				return a
			},
			wantErr: "Passkey not found",
		},
		{
			name: "no passkey",
			ann: func() *models.Announce {
				a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
				a.Passkey = ""
				return a
			},
			wantErr: "Passkey not found",
		},
		{
			name:    "removed user",
			site:    []models.SiteUpdate{{Action: models.RemoveUser, User: alice}},
			ann:     func() *models.Announce { return pann(alice, tNormal, numPid(1), "192.0.2.1:6881") },
			wantErr: "Passkey not found",
		},
		{
			name:    "old passkey after a change",
			site:    []models.SiteUpdate{{Action: models.ChangePasskey, User: alice, NewPasskey: "alicenewpasskeyalicenewpasskey01"}},
			ann:     func() *models.Announce { return pann(alice, tNormal, numPid(1), "192.0.2.1:6881") },
			wantErr: "Passkey not found",
		},
		{
			name: "new passkey after a change",
			site: []models.SiteUpdate{{Action: models.ChangePasskey, User: alice, NewPasskey: "alicenewpasskeyalicenewpasskey01"}},
			ann: func() *models.Announce {
				a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
				a.Passkey = "alicenewpasskeyalicenewpasskey01"
				return a
			},
		},
		{
			name:    "unregistered torrent",
			ann:     func() *models.Announce { return pann(alice, 99, numPid(1), "192.0.2.1:6881") },
			wantErr: "Unregistered torrent",
		},
		{
			name: "unregistered torrent, stopped",
			ann: func() *models.Announce {
				a := pann(alice, 99, numPid(1), "192.0.2.1:6881")
				a.Event = models.Stopped
				return a
			},
			wantErr: "Unregistered torrent",
		},
		{
			name: "unregistered torrent with an other-family endpoint",
			ann: func() *models.Announce {
				a := pann(alice, 99, numPid(1), "192.0.2.1:6881")
				a.Other = netip.MustParseAddrPort("[2001:db8::1]:6881")
				return a
			},
			wantErr: "Unregistered torrent",
		},
		{
			name:   "compact only, non-compact client",
			mutate: func(c *config.Config) { c.CompactOnly = true },
			ann: func() *models.Announce {
				a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
				a.Compact = false
				return a
			},
			wantErr: "Your client does not support compact announces",
		},
		{
			name:   "compact only, no compact parameter",
			mutate: func(c *config.Config) { c.CompactOnly = true },
			ann:    func() *models.Announce { return pann(alice, tNormal, numPid(1), "192.0.2.1:6881") },
			// Compact (the default) but not asked for: Ocelot refuses it like compact=0.
			wantErr: "Your client does not support compact announces",
		},
		{
			name:   "compact only, compact client",
			mutate: func(c *config.Config) { c.CompactOnly = true },
			ann: func() *models.Announce {
				a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
				a.CompactOne = true
				return a
			},
		},
		{
			name: "non-compact client without compact only",
			ann: func() *models.Announce {
				a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
				a.Compact = false
				return a
			},
		},
		{
			name:    "client not on the site whitelist",
			site:    []models.SiteUpdate{{Action: models.AddWhitelist, Prefix: "-TR"}},
			ann:     func() *models.Announce { return pann(alice, tNormal, numPid(1), "192.0.2.1:6881") },
			wantErr: "Your client is not on the whitelist",
		},
		{
			name: "client on the site whitelist",
			site: []models.SiteUpdate{{Action: models.AddWhitelist, Prefix: "-TR"}, {Action: models.AddWhitelist, Prefix: "-qB42"}},
			ann:  func() *models.Announce { return pann(alice, tNormal, numPid(1), "192.0.2.1:6881") },
		},
		{
			name: "client removed from the site whitelist",
			site: []models.SiteUpdate{
				{Action: models.AddWhitelist, Prefix: "-TR"}, {Action: models.AddWhitelist, Prefix: "-qB"},
				{Action: models.RemoveWhitelist, Prefix: "-qB"},
			},
			ann:     func() *models.Announce { return pann(alice, tNormal, numPid(1), "192.0.2.1:6881") },
			wantErr: "Your client is not on the whitelist",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t, tt.mutate)
			for _, u := range tt.site {
				e.site(t, u)
			}
			w, err := e.try(tt.ann())
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.Len(t, w.resps, 1)
				assert.Equal(t, 1, e.be.count())
				return
			}
			require.Error(t, err)
			var ce models.ClientError
			require.ErrorAs(t, err, &ce, "a client error")
			assert.Equal(t, tt.wantErr, err.Error())
			assert.Empty(t, w.resps, "nothing written")
			assert.Zero(t, e.be.count(), "nothing recorded")
			st := e.scrape(t, hash(tNormal))[0]
			assert.Zero(t, st.Seeders+st.Leechers, "no peer stored")
			assert.Empty(t, e.scrape(t, hash(99)), "no torrent made")
		})
	}
}

func TestPrivateDeletionReason(t *testing.T) {
	tests := []struct {
		name    string
		reason  string
		after   time.Duration // the tracker's clock after the deletion
		reap    bool          // reap (which prunes) at that time, then look again at the deletion time
		readd   bool
		wantErr string
	}{
		{name: "just deleted", reason: "Dupe", wantErr: "Unregistered torrent: Dupe"},
		{name: "within the lifetime", reason: "Trump", after: 23 * time.Hour, wantErr: "Unregistered torrent: Trump"},
		{name: "after the lifetime", reason: "Dupe", after: 25 * time.Hour, wantErr: "Unregistered torrent"},
		{name: "no reason", wantErr: "Unregistered torrent"},
		{name: "pruned by the reaper", reason: "Dupe", after: 25 * time.Hour, reap: true, wantErr: "Unregistered torrent"},
		{name: "kept by the reaper within the lifetime", reason: "Dupe", after: time.Hour, reap: true, wantErr: "Unregistered torrent: Dupe"},
		{name: "re-added", reason: "Dupe", readd: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t, nil)
			// The store stamps deletions with the wall clock, so the fake clock starts there.
			base := time.Now()
			e.now = base
			e.announce(t, pann(bob, tNormal, numPid(2), "192.0.2.2:6881"))
			e.site(t, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: hash(tNormal)}, Reason: tt.reason})
			if tt.readd {
				e.site(t, models.SiteUpdate{Action: models.AddTorrent, Torrent: models.Torrent{ID: 500, InfoHash: hash(tNormal)}})
			}
			e.now = base.Add(tt.after)
			if tt.reap {
				_, err := e.tr.Reap(context.Background())
				require.NoError(t, err)
				e.now = base
			}
			w, err := e.try(pann(alice, tNormal, numPid(1), "192.0.2.1:6881"))
			if tt.wantErr == "" {
				require.NoError(t, err)
				resp := w.last(t)
				assert.Equal(t, 1, resp.Incomplete, "bob's peer went with the deletion")
				assert.Empty(t, resp.IPv4Peers)
				assert.Equal(t, uint64(500), e.be.last(t).TorrentID)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.wantErr, err.Error())
			assert.Empty(t, w.resps)
			assert.Equal(t, 1, e.be.count(), "only bob's announce before the deletion was recorded")
		})
	}
}

func TestPrivateLeechingForbidden(t *testing.T) {
	e := newPrivEnv(t, nil)
	ctx := context.Background()
	aliceSeed := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
	aliceSeed.Left = 0
	e.announce(t, aliceSeed)
	bobLeech := pann(bob, tNormal, numPid(2), "192.0.2.2:6881")
	e.announce(t, bobLeech)

	// Carol may not leech: her announce is recorded and her peer stored, hidden.
	cl := pann(carol, tNormal, numPid(3), "192.0.2.3:6881")
	cl.Event = models.Started
	w, err := e.try(cl)
	require.ErrorIs(t, err, models.ErrLeechingForbidden)
	assert.Equal(t, "Access denied, leeching forbidden", err.Error())
	assert.Empty(t, w.resps, "the failure is the answer")
	d := e.be.last(t)
	assert.Equal(t, carol.ID, d.UserID)
	assert.True(t, d.Created)
	assert.Equal(t, 1, d.Seeders)
	assert.Equal(t, 2, d.Leechers, "carol's peer is stored")
	_, leeching, seeding, err := e.tr.UserPeers(ctx, carol.Passkey)
	require.NoError(t, err)
	assert.Equal(t, [2]int{1, 0}, [2]int{leeching, seeding})

	// Her transfer still counts.
	e.now = t0.Add(time.Minute)
	cl.Event, cl.Uploaded, cl.Downloaded = models.None, 600, 1200
	_, err = e.try(cl)
	require.ErrorIs(t, err, models.ErrLeechingForbidden)
	d = e.be.last(t)
	assert.Equal(t, int64(600), d.CreditedUp)
	assert.Equal(t, int64(1200), d.CreditedDown)
	assert.False(t, d.Created)

	// Nobody is handed carol's peer.
	for i := 0; i < 10; i++ {
		for _, a := range []*models.Announce{aliceSeed, bobLeech} {
			resp := e.announce(t, a)
			for _, p := range append(resp.IPv4Peers, resp.IPv6Peers...) {
				assert.NotEqual(t, numPid(3), e.idOf(t, p), "carol's hidden peer was handed out")
			}
			assert.Equal(t, 2, resp.Incomplete, "but it is counted")
		}
	}

	// Carol may seed, and her seeder is handed out.
	cs := pann(carol, tFree, numPid(4), "192.0.2.4:6881")
	cs.Left = 0
	e.announce(t, cs)
	bl := pann(bob, tFree, numPid(5), "192.0.2.5:6881")
	resp := e.announce(t, bl)
	assert.Equal(t, []models.Peer{{AddrPort: netip.MustParseAddrPort("192.0.2.4:6881")}}, resp.IPv4Peers)

	// Her leecher that finishes becomes a visible seeder.
	cl.Left, cl.Event = 0, models.Completed
	resp = e.announce(t, cl)
	assert.True(t, e.be.last(t).Snatched)
	resp = e.announce(t, bobLeech)
	assert.Contains(t, resp.IPv4Peers, models.Peer{AddrPort: netip.MustParseAddrPort("192.0.2.3:6881")})

	// Once the site lets her leech, her leecher is answered and handed out.
	e.site(t, models.SiteUpdate{Action: models.UpdateUser, User: models.User{Passkey: carol.Passkey, CanLeech: true}})
	cl2 := pann(carol, tNeutral, numPid(6), "192.0.2.6:6881")
	e.announce(t, cl2)
	as := pann(alice, tNeutral, numPid(7), "192.0.2.7:6881")
	as.Left = 0
	resp = e.announce(t, as)
	assert.Equal(t, []models.Peer{{AddrPort: netip.MustParseAddrPort("192.0.2.6:6881")}}, resp.IPv4Peers)
}

func TestPrivateAccounting(t *testing.T) {
	type step struct {
		after                 time.Duration // since the previous step
		event                 models.Event
		up, down, corrupt     int64
		dUp, dDown, dCorrupt  int64
		cUp, cDown, tokenDown int64
		upSpeed, downSpeed    int64
		created, removed      bool
	}
	tests := []struct {
		name     string
		torrent  int
		token    bool
		sitewide bool
		steps    []step
	}{
		{
			name: "first announce is a baseline, the next is credited", torrent: tNormal,
			steps: []step{
				{up: 1000, down: 2000, corrupt: 10, created: true},
				{after: time.Minute, up: 1600, down: 2300, corrupt: 15,
					dUp: 600, dDown: 300, dCorrupt: 5, cUp: 600, cDown: 300, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "started sets a new baseline", torrent: tNormal,
			steps: []step{
				{event: models.Started, created: true},
				{after: 10 * time.Second, up: 100, down: 200, dUp: 100, dDown: 200, cUp: 100, cDown: 200, upSpeed: 10, downSpeed: 20},
				{after: 10 * time.Second, event: models.Started, up: 500, down: 500},
				{after: 10 * time.Second, up: 600, down: 550, dUp: 100, dDown: 50, cUp: 100, cDown: 50, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "uploaded going down sets a new baseline", torrent: tNormal,
			steps: []step{
				{event: models.Started, up: 100, down: 100, created: true},
				{after: 10 * time.Second, up: 50, down: 200},
				{after: 10 * time.Second, up: 80, down: 260, dUp: 30, dDown: 60, cUp: 30, cDown: 60, upSpeed: 3, downSpeed: 6},
			},
		},
		{
			name: "downloaded going down sets a new baseline", torrent: tNormal,
			steps: []step{
				{event: models.Started, up: 100, down: 100, created: true},
				{after: 10 * time.Second, up: 200, down: 50},
				{after: 10 * time.Second, up: 210, down: 70, dUp: 10, dDown: 20, cUp: 10, cDown: 20, upSpeed: 1, downSpeed: 2},
			},
		},
		{
			name: "corrupt going down sets a new baseline", torrent: tNormal,
			steps: []step{
				{event: models.Started, corrupt: 50, created: true},
				{after: 10 * time.Second, up: 100, down: 100, corrupt: 10},
				{after: 10 * time.Second, up: 150, down: 100, corrupt: 12, dUp: 50, dCorrupt: 2, cUp: 50, upSpeed: 5},
			},
		},
		{
			name: "stopped is credited", torrent: tNormal,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, event: models.Stopped, up: 1000, down: 500, dUp: 1000, dDown: 500, cUp: 1000, cDown: 500, upSpeed: 10, downSpeed: 5, removed: true},
			},
		},
		{
			// Removed all the same: its row is written inactive, as Ocelot writes it.
			name: "stopped from an unknown peer is a baseline", torrent: tNormal,
			steps: []step{{event: models.Stopped, up: 100, down: 100, removed: true}},
		},
		{
			name: "same second: credited, no speed", torrent: tNormal,
			steps: []step{
				{event: models.Started, created: true},
				{up: 10, down: 20, dUp: 10, dDown: 20, cUp: 10, cDown: 20},
			},
		},
		{
			name: "free torrent credits upload only", torrent: tFree,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, cUp: 1000, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "neutral torrent credits nothing", torrent: tNeutral,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "token makes the download free and reports it", torrent: tNormal, token: true,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, cUp: 1000, tokenDown: 500, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "token on a free torrent still reports the download", torrent: tFree, token: true,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, cUp: 1000, tokenDown: 500, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "neutral wins over a token", torrent: tNeutral, token: true,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "site-wide freeleech", torrent: tNormal, sitewide: true,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, cUp: 1000, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "site-wide freeleech on a neutral torrent", torrent: tNeutral, sitewide: true,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, upSpeed: 10, downSpeed: 5},
			},
		},
		{
			name: "site-wide freeleech with a token", torrent: tNormal, sitewide: true, token: true,
			steps: []step{
				{event: models.Started, created: true},
				{after: 100 * time.Second, up: 1000, down: 500, dUp: 1000, dDown: 500, cUp: 1000, tokenDown: 500, upSpeed: 10, downSpeed: 5},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t, func(c *config.Config) { c.FreeleechEnabled = tt.sitewide })
			if tt.token {
				e.site(t, models.SiteUpdate{Action: models.AddToken, User: alice, Torrent: models.Torrent{InfoHash: hash(tt.torrent)}})
			}
			a := pann(alice, tt.torrent, numPid(1), "192.0.2.1:6881")
			for i, s := range tt.steps {
				e.now = e.now.Add(s.after)
				a.Event, a.Uploaded, a.Downloaded, a.Corrupt = s.event, s.up, s.down, s.corrupt
				e.announce(t, a)
				d := e.be.last(t)
				require.Equal(t, i+1, e.be.count())
				got := step{
					after: s.after, event: s.event, up: s.up, down: s.down, corrupt: s.corrupt,
					dUp: d.UploadedDelta, dDown: d.DownloadedDelta, dCorrupt: d.CorruptDelta,
					cUp: d.CreditedUp, cDown: d.CreditedDown, tokenDown: d.TokenDown,
					upSpeed: d.UpSpeed, downSpeed: d.DownSpeed, created: d.Created, removed: d.Removed,
				}
				assert.Equal(t, s, got, "step %d", i)
				// A token applies unless the torrent is neutral, which wins over it.
				assert.Equal(t, tt.token && tt.torrent != tNeutral, d.Token, "step %d: Token", i)
				assert.Equal(t, uint64(100+tt.torrent), d.TorrentID)
			}
		})
	}
}

func TestPrivateSnatchAndToken(t *testing.T) {
	tests := []struct {
		name  string
		token bool
	}{
		{name: "without token"},
		{name: "with token", token: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t, nil)
			if tt.token {
				e.site(t, models.SiteUpdate{Action: models.AddToken, User: alice, Torrent: models.Torrent{InfoHash: hash(tNormal)}})
				// Bob's token on the same torrent is his own.
				e.site(t, models.SiteUpdate{Action: models.AddToken, User: bob, Torrent: models.Torrent{InfoHash: hash(tNormal)}})
			}
			a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
			a.Event = models.Started
			e.announce(t, a)
			assert.Equal(t, tt.token, e.be.last(t).Token)

			e.now = e.now.Add(time.Minute)
			a.Event, a.Left, a.Downloaded = models.Completed, 0, 100
			resp := e.announce(t, a)
			d := e.be.last(t)
			assert.True(t, d.Snatched)
			assert.Equal(t, 1, d.Snatches)
			assert.Equal(t, 1, resp.Downloaded)
			assert.Equal(t, 1, resp.Complete)
			assert.True(t, d.Seeder)
			assert.Equal(t, tt.token, d.Token, "the completing announce still holds the token")
			if tt.token {
				assert.Equal(t, int64(100), d.TokenDown)
				assert.Zero(t, d.CreditedDown)
			} else {
				assert.Equal(t, int64(100), d.CreditedDown)
			}

			// The token is gone after the snatch: the next download is charged.
			e.now = e.now.Add(time.Minute)
			a.Event, a.Downloaded = models.None, 150
			resp = e.announce(t, a)
			d = e.be.last(t)
			assert.False(t, d.Token, "the token was used up")
			assert.False(t, d.Snatched, "a seeder's announce is no snatch")
			assert.Equal(t, int64(50), d.CreditedDown)
			assert.Zero(t, d.TokenDown)
			assert.Equal(t, 1, resp.Downloaded)

			// Completing again is not another snatch.
			a.Event = models.Completed
			e.announce(t, a)
			assert.False(t, e.be.last(t).Snatched)

			// Bob keeps his.
			b := pann(bob, tNormal, numPid(2), "192.0.2.2:6881")
			e.announce(t, b)
			assert.Equal(t, tt.token, e.be.last(t).Token)
		})
	}
}

func TestPrivateDeltaFields(t *testing.T) {
	e := newPrivEnv(t, nil)
	tests := []struct {
		name          string
		user          models.User
		torrent       int
		after         time.Duration
		event         models.Event
		left          int64
		wantFirstSeen time.Time
		wantAnnounces int
		wantCreated   bool
	}{
		{name: "first", user: alice, torrent: tNormal, event: models.Started, left: 10, wantFirstSeen: t0, wantAnnounces: 1, wantCreated: true},
		{name: "second", user: alice, torrent: tNormal, after: time.Minute, left: 10, wantFirstSeen: t0, wantAnnounces: 2},
		{name: "third", user: alice, torrent: tNormal, after: time.Minute, left: 0, event: models.Completed, wantFirstSeen: t0, wantAnnounces: 3},
		{name: "protected user", user: dave, torrent: tFree, after: time.Minute, left: 5, wantFirstSeen: t0.Add(3 * time.Minute), wantAnnounces: 1, wantCreated: true},
		{name: "protected user again", user: dave, torrent: tFree, after: time.Minute, left: 5, wantFirstSeen: t0.Add(3 * time.Minute), wantAnnounces: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.now = e.now.Add(tt.after)
			a := pann(tt.user, tt.torrent, numPid(int(tt.user.ID)), "192.0.2.9:6881")
			a.Event, a.Left = tt.event, tt.left
			a.UserAgent = "Transmission/4.0.5 " + tt.user.Passkey[:4]
			e.announce(t, a)
			d := e.be.last(t)
			assert.Equal(t, tt.user.ID, d.UserID)
			assert.Equal(t, uint64(100+tt.torrent), d.TorrentID)
			assert.Equal(t, tt.user.Protected, d.Protected)
			assert.Equal(t, a.UserAgent, d.UserAgent)
			assert.Equal(t, tt.user.Passkey, d.Passkey)
			assert.Equal(t, hash(tt.torrent), d.InfoHash)
			assert.Equal(t, a.PeerID, d.PeerID)
			assert.Equal(t, netip.MustParseAddrPort("192.0.2.9:6881"), d.Endpoint)
			assert.Equal(t, tt.event, d.Event)
			assert.Equal(t, tt.left, d.Left)
			assert.Equal(t, tt.left == 0, d.Seeder)
			assert.True(t, tt.wantFirstSeen.Equal(d.FirstSeen), "FirstSeen %v, want %v", d.FirstSeen, tt.wantFirstSeen)
			assert.True(t, e.now.Equal(d.Time))
			assert.Equal(t, tt.wantAnnounces, d.Announces)
			assert.Equal(t, tt.wantCreated, d.Created)
		})
	}
}

func TestPrivateDualStackCreditedOnce(t *testing.T) {
	const v4, v6 = "198.51.100.1:6881", "[2001:db8::1]:6881"
	type req struct {
		ep, other string
	}
	tests := []struct {
		name string
		reqs []req // each round of the client's announces
	}{
		{name: "one announce naming both endpoints (IPv4 socket)", reqs: []req{{ep: v4, other: v6}}},
		{name: "one announce naming both endpoints (IPv6 socket)", reqs: []req{{ep: v6, other: v4}}},
		{name: "separate announces over IPv4 and IPv6", reqs: []req{{ep: v4}, {ep: v6}}},
		{name: "separate announces over IPv6 and IPv4", reqs: []req{{ep: v6}, {ep: v4}}},
		{name: "single stack", reqs: []req{{ep: v4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t, func(c *config.Config) { c.AllowIPSpoofing = true })
			requests := 0
			round := func(ev models.Event, up, down int64) (credUp, credDown int64) {
				for _, r := range tt.reqs {
					requests++
					a := pann(alice, tNormal, numPid(1), r.ep)
					if r.other != "" {
						a.Other = netip.MustParseAddrPort(r.other)
					}
					a.Event, a.Uploaded, a.Downloaded = ev, up, down
					before := e.be.count()
					e.announce(t, a)
					require.Equal(t, before+1, e.be.count(), "one delta per announce")
					d := e.be.last(t)
					assert.True(t, t0.Equal(d.FirstSeen), "one session: FirstSeen %v", d.FirstSeen)
					// The row counts announces, one per request whatever endpoints it names, and
					// shows the IPv4 endpoint when the request named one.
					assert.Equal(t, requests, d.Announces, "announced")
					wantEP := netip.MustParseAddrPort(r.ep)
					if r.other != "" && !wantEP.Addr().Is4() {
						wantEP = netip.MustParseAddrPort(r.other)
					}
					assert.Equal(t, wantEP, d.Endpoint, "the row's endpoint")
					credUp += d.CreditedUp
					credDown += d.CreditedDown
				}
				return credUp, credDown
			}
			up, down := round(models.Started, 0, 0)
			assert.Zero(t, up+down, "the start is a baseline")
			wantEntries := 1
			if len(tt.reqs) > 1 || tt.reqs[0].other != "" {
				wantEntries = 2
			}
			assert.Equal(t, wantEntries, e.scrape(t, hash(tNormal))[0].Leechers)

			e.now = e.now.Add(time.Minute)
			up, down = round(models.None, 1000, 600)
			assert.Equal(t, [2]int64{1000, 600}, [2]int64{up, down}, "credited once")
			e.now = e.now.Add(time.Minute)
			up, down = round(models.None, 1500, 600)
			assert.Equal(t, [2]int64{500, 0}, [2]int64{up, down}, "credited once")
			e.now = e.now.Add(time.Minute)
			up, down = round(models.Stopped, 1700, 700)
			assert.Equal(t, [2]int64{200, 100}, [2]int64{up, down}, "credited once")
			assert.Zero(t, e.scrape(t, hash(tNormal))[0].Leechers)
		})
	}
}

func TestPrivateCreditSurvivesReap(t *testing.T) {
	tests := []struct {
		name        string
		event       models.Event
		up, down    int64
		wantCredit  [2]int64
		wantCreated bool
	}{
		{name: "regular announce is credited from the old counters", up: 300, down: 700, wantCredit: [2]int64{200, 500}, wantCreated: true},
		{name: "stopped is credited from the old counters", event: models.Stopped, up: 300, down: 700, wantCredit: [2]int64{200, 500}},
		{name: "completed is credited from the old counters", event: models.Completed, up: 300, down: 700, wantCredit: [2]int64{200, 500}, wantCreated: true},
		{name: "started is a new baseline", event: models.Started, up: 300, down: 700, wantCreated: true},
		{name: "counters that went down are a new baseline", up: 50, down: 700, wantCreated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t, nil)
			a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
			a.Event = models.Started
			e.announce(t, a)
			e.now = t0.Add(30 * time.Minute)
			a.Event, a.Uploaded, a.Downloaded = models.None, 100, 200
			e.announce(t, a)
			other := pann(bob, tNormal, numPid(2), "192.0.2.2:6881")
			other.Left = 0
			e.now = t0.Add(60 * time.Minute)
			e.announce(t, other)

			// Alice's peer times out (45 minutes); bob's does not.
			e.now = t0.Add(80 * time.Minute)
			r, err := e.tr.Reap(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 1, r.Peers)
			assert.Zero(t, r.Torrents, "a registered torrent is never purged")
			want := []models.TorrentStats{{InfoHash: hash(tNormal), ID: 100 + tNormal, Seeders: 1, Registered: true}}
			assert.Equal(t, want, r.Changed)
			assert.Equal(t, [][]models.TorrentStats{want}, e.rb.reaps, "the backend is told")
			st := e.scrape(t, hash(tNormal))[0]
			st.ID = want[0].ID // a scrape does not report the site's ID
			assert.Equal(t, want[0], st)

			e.now = t0.Add(90 * time.Minute)
			a.Event, a.Uploaded, a.Downloaded = tt.event, tt.up, tt.down
			if tt.event == models.Completed {
				a.Left = 0
			}
			e.announce(t, a)
			d := e.be.last(t)
			assert.Equal(t, tt.wantCredit, [2]int64{d.CreditedUp, d.CreditedDown})
			assert.Equal(t, tt.wantCreated, d.Created)
			if tt.wantCredit != [2]int64{} {
				assert.Equal(t, tt.wantCredit[0]/3600, d.UpSpeed, "over the hour since the last announce")
				assert.True(t, t0.Equal(d.FirstSeen), "the session goes on")
				assert.Equal(t, 3, d.Announces)
			}
		})
	}

	t.Run("reaping nothing tells the backend nothing", func(t *testing.T) {
		e := newPrivEnv(t, nil)
		e.announce(t, pann(alice, tNormal, numPid(1), "192.0.2.1:6881"))
		r, err := e.tr.Reap(context.Background())
		require.NoError(t, err)
		assert.Equal(t, tracker.ReapResult{}, r)
		assert.Empty(t, e.rb.reaps)
		// An empty registered torrent stays announceable after any number of reaps.
		e.now = t0.Add(10 * time.Hour)
		r, err = e.tr.Reap(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 1, r.Peers)
		assert.Len(t, e.rb.reaps, 1)
		_, err = e.tr.Reap(context.Background())
		require.NoError(t, err)
		assert.Len(t, e.rb.reaps, 1)
		assert.Equal(t, []models.TorrentStats{{InfoHash: hash(tNormal), ID: 100 + tNormal, Registered: true}}, e.scrape(t, hash(tNormal)))
		e.announce(t, pann(alice, tNormal, numPid(1), "192.0.2.1:6881"))
	})

	t.Run("sessions older than baseline_lifetime are pruned by the reaper", func(t *testing.T) {
		e := newPrivEnv(t, func(c *config.Config) { c.BaselineLifetime.Duration = 2 * time.Hour })
		a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
		a.Uploaded = 100
		e.announce(t, a)
		e.now = t0.Add(3 * time.Hour)
		_, err := e.tr.Reap(context.Background())
		require.NoError(t, err)
		a.Uploaded = 300
		e.announce(t, a)
		d := e.be.last(t)
		assert.Zero(t, d.CreditedUp, "the session was forgotten: a new baseline")
		assert.Equal(t, 1, d.Announces)
	})
}

func TestPrivateRestartBaseline(t *testing.T) {
	first, last := t0.Add(-5*time.Hour), t0.Add(-20*time.Minute)
	tests := []struct {
		name          string
		event         models.Event
		up, down      int64
		baselineUser  uint64
		wantCredit    [2]int64
		wantAnnounces int
		wantFirstSeen time.Time
	}{
		{name: "first announce is credited from the baseline", up: 1500, down: 2100, baselineUser: alice.ID,
			wantCredit: [2]int64{500, 100}, wantAnnounces: 6, wantFirstSeen: first},
		{name: "stopped is credited from the baseline", event: models.Stopped, up: 1500, down: 2100, baselineUser: alice.ID,
			wantCredit: [2]int64{500, 100}, wantAnnounces: 6, wantFirstSeen: first},
		{name: "started is a new baseline", event: models.Started, up: 1500, down: 2100, baselineUser: alice.ID,
			wantAnnounces: 6, wantFirstSeen: first},
		{name: "counters below the baseline are a new baseline", up: 10, down: 2100, baselineUser: alice.ID,
			wantAnnounces: 6, wantFirstSeen: first},
		{name: "another user's baseline is not alice's", up: 1500, down: 2100, baselineUser: bob.ID,
			wantAnnounces: 1, wantFirstSeen: t0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t, nil)
			st := siteState()
			st.Baselines = []models.Baseline{{
				UserID: tt.baselineUser, TorrentID: 100 + tNormal, PeerID: numPid(1),
				Uploaded: 1000, Downloaded: 2000, FirstSeen: first, LastSeen: last, Announces: 5,
			}}
			require.NoError(t, e.tr.ReplaceSite(context.Background(), st))
			a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
			a.Event, a.Uploaded, a.Downloaded = tt.event, tt.up, tt.down
			e.announce(t, a)
			d := e.be.last(t)
			assert.Equal(t, tt.wantCredit, [2]int64{d.CreditedUp, d.CreditedDown})
			assert.Equal(t, tt.wantAnnounces, d.Announces)
			assert.True(t, tt.wantFirstSeen.Equal(d.FirstSeen), "FirstSeen %v, want %v", d.FirstSeen, tt.wantFirstSeen)
			assert.Equal(t, tt.event != models.Stopped, d.Created)
			if tt.wantCredit[0] > 0 {
				assert.Equal(t, tt.wantCredit[0]/int64(t0.Sub(last)/time.Second), d.UpSpeed)
			}
		})
	}
}

func TestPrivateOwnPeersNotHandedOut(t *testing.T) {
	e := newPrivEnv(t, nil)
	// Alice runs a leecher and a seeder on two machines; bob a seeder; dave a leecher.
	aliceLeech := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
	aliceSeed := pann(alice, tNormal, numPid(2), "192.0.2.2:6881")
	aliceSeed.Left = 0
	bobSeed := pann(bob, tNormal, numPid(3), "192.0.2.3:6881")
	bobSeed.Left = 0
	daveLeech := pann(dave, tNormal, numPid(4), "[2001:db8::4]:6881")
	for _, a := range []*models.Announce{aliceLeech, aliceSeed, bobSeed, daveLeech} {
		e.announce(t, a)
	}
	ids := func(r models.AnnounceResponse) []models.PeerID {
		var out []models.PeerID
		for _, p := range append(r.IPv4Peers, r.IPv6Peers...) {
			out = append(out, e.idOf(t, p))
		}
		return out
	}
	tests := []struct {
		name string
		a    *models.Announce
		want []models.PeerID
	}{
		{name: "alice's leecher gets bob's seeder and dave, not her own seeder", a: aliceLeech, want: []models.PeerID{numPid(3), numPid(4)}},
		{name: "alice's seeder gets dave, not her own leecher", a: aliceSeed, want: []models.PeerID{numPid(4)}},
		{name: "bob's seeder gets both leechers", a: bobSeed, want: []models.PeerID{numPid(1), numPid(4)}},
		{name: "dave gets all others, protected or not", a: daveLeech, want: []models.PeerID{numPid(1), numPid(2), numPid(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i < 5; i++ {
				assert.ElementsMatch(t, tt.want, ids(e.announce(t, tt.a)))
			}
		})
	}
	// A protected user is still handed out (to bob's seeder, above) and counted.
	_, l, s, err := e.tr.UserPeers(context.Background(), dave.Passkey)
	require.NoError(t, err)
	assert.Equal(t, [2]int{1, 0}, [2]int{l, s})
	_, l, s, err = e.tr.UserPeers(context.Background(), alice.Passkey)
	require.NoError(t, err)
	assert.Equal(t, [2]int{1, 1}, [2]int{l, s})
	_, _, _, err = e.tr.UserPeers(context.Background(), "nobody")
	assert.ErrorIs(t, err, models.ErrPasskeyNotFound)
}

func TestPrivateFreeleechUpdate(t *testing.T) {
	e := newPrivEnv(t, nil)
	a := pann(alice, tNormal, numPid(1), "192.0.2.1:6881")
	a.Event = models.Started
	e.announce(t, a)
	tests := []struct {
		name  string
		fl    models.FreeleechType
		cDown int64
		cUp   int64
	}{
		{name: "made free", fl: models.Free, cUp: 10},
		{name: "made neutral", fl: models.Neutral},
		{name: "back to normal", fl: models.Normal, cUp: 10, cDown: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.site(t, models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: hash(tNormal), Freeleech: tt.fl}})
			e.now = e.now.Add(time.Minute)
			a.Event = models.None
			a.Uploaded += 10
			a.Downloaded += 10
			e.announce(t, a)
			d := e.be.last(t)
			assert.Equal(t, [2]int64{tt.cUp, tt.cDown}, [2]int64{d.CreditedUp, d.CreditedDown})
		})
	}
}

// TestPrivateScrapeNeedsPasskey: a private scrape is answered only to a user's passkey, like an
// announce; an unknown passkey, none, and a removed user's get Ocelot's "Passkey not found".
func TestPrivateScrapeNeedsPasskey(t *testing.T) {
	e := newPrivEnv(t, nil)
	_, err := e.try(pann(alice, tNormal, pid("a1"), "10.0.0.1:6881"))
	require.NoError(t, err)
	e.site(t, models.SiteUpdate{Action: models.RemoveUser, User: models.User{Passkey: bob.Passkey}})
	for _, tt := range []struct {
		name, passkey string
	}{
		{"unknown", "nobodynobodynobodynobodynobody00"},
		{"none", ""},
		{"removed user", bob.Passkey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var w scrapeWriter
			err := e.tr.HandleScrape(context.Background(), &models.Scrape{Passkey: tt.passkey, InfoHashes: []models.InfoHash{hash(tNormal)}}, &w)
			assert.Equal(t, models.ErrPasskeyNotFound, err)
			assert.Empty(t, w.files, "nothing written")
		})
	}
	assert.Equal(t, 1, e.scrape(t, hash(tNormal))[0].Leechers, "a user's passkey scrapes")
}

// TestPrivateScrapeRegisteredOnly: a private scrape answers the registered torrents only, in
// request order, and a scrape of none is an empty answer, as Ocelot's.
func TestPrivateScrapeRegisteredOnly(t *testing.T) {
	e := newPrivEnv(t, nil)
	_, err := e.try(pann(alice, tFree, pid("a1"), "10.0.0.1:6881"))
	require.NoError(t, err)
	e.site(t, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: hash(tNeutral)}})
	got := e.scrape(t, hash(99), hash(tFree), hash(tNeutral), hash(tNormal))
	assert.Equal(t, []models.TorrentStats{
		{InfoHash: hash(tFree), ID: 100 + tFree, Leechers: 1, Registered: true},
		{InfoHash: hash(tNormal), ID: 100 + tNormal, Registered: true},
	}, got, "unknown and deleted torrents left out")
	assert.Empty(t, e.scrape(t), "a scrape of no torrent")
}

// TestPrivateMinIntervalFollows: in private mode the min interval is the announce interval
// (without jitter), before and after update_announce_interval, as Ocelot answers; failures carry
// 5400 s for both. Public mode keeps min_announce.
func TestPrivateMinIntervalFollows(t *testing.T) {
	e := newPrivEnv(t, func(c *config.Config) { c.AnnounceJitter.Duration = 30 * time.Second })
	check := func(want time.Duration) {
		t.Helper()
		w, err := e.try(pann(alice, tNormal, pid("a1"), "10.0.0.1:6881"))
		require.NoError(t, err)
		r := w.resps[len(w.resps)-1]
		assert.Equal(t, want, r.MinInterval)
		assert.GreaterOrEqual(t, r.Interval, want)
		assert.LessOrEqual(t, r.Interval, want+30*time.Second)
	}
	check(30 * time.Minute)
	e.tr.SetAnnounceInterval(40 * time.Minute)
	check(40 * time.Minute)
	i, mi := e.tr.FailureIntervals()
	assert.Equal(t, []time.Duration{tracker.PrivateFailureInterval, tracker.PrivateFailureInterval}, []time.Duration{i, mi})

	pub := newEnv(t, nil)
	pub.tr.SetAnnounceInterval(40 * time.Minute)
	i, mi = pub.tr.Intervals()
	assert.Equal(t, []time.Duration{40 * time.Minute, 15 * time.Minute}, []time.Duration{i, mi}, "public mode keeps min_announce")
	fi, fmi := pub.tr.FailureIntervals()
	assert.Equal(t, []time.Duration{40 * time.Minute, 15 * time.Minute}, []time.Duration{fi, fmi})
}
