package trackertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// site is a connection that is also a tracker.SiteStore.
type site interface {
	tracker.Conn
	tracker.SiteStore
}

var (
	ann  = models.User{ID: 7, Passkey: "annannannannannannannannannann07", CanLeech: true}
	ben  = models.User{ID: 8, Passkey: "benbenbenbenbenbenbenbenbenben08", CanLeech: true}
	cleo = models.User{ID: 9, Passkey: "cleocleocleocleocleocleocleocl09", Protected: true}
)

// registered returns the site torrent whose info hash is Hash(n) and whose ID is 1000+n.
func registered(n int, fl models.FreeleechType) models.Torrent {
	return models.Torrent{ID: uint64(1000 + n), InfoHash: Hash(n), Freeleech: fl}
}

// runSite runs the tracker.SiteStore part of the suite, when the driver has one.
func runSite(t *testing.T, open func(t *testing.T) tracker.Pool) {
	c := conn(t, open)
	if _, ok := c.(tracker.SiteStore); !ok {
		t.Skip("the driver is no tracker.SiteStore")
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, c site)
	}{
		{"Users", testSiteUsers},
		{"ReplaceUsers", testSiteReplaceUsers},
		{"Whitelist", testSiteWhitelist},
		{"Unregistered", testSiteUnregistered},
		{"TorrentAttributes", testSiteTorrentAttributes},
		{"Tokens", testSiteTokens},
		{"HiddenAndOwnUser", testSiteHiddenAndOwnUser},
		{"RemoveUserHidesPeers", testSiteRemoveUserHidesPeers},
		{"SecondaryCountsNoAnnounce", testSiteSecondary},
		{"Sessions", testSiteSessions},
		{"ReapKeepsRegistered", testSiteReap},
		{"ReplaceTorrents", testSiteReplaceTorrents},
		{"Prune", testSitePrune},
		{"Concurrent", testSiteConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, conn(t, open).(site))
		})
	}
}

func update(tb testing.TB, c site, u models.SiteUpdate) {
	tb.Helper()
	require.NoError(tb, c.UpdateSite(context.Background(), &u))
}

// userPeer is peer n of user u, leeching unless seeder, on a registered torrent.
// updateWants applies u to c and requires wantErr from it (nil: no error).
func updateWants(t *testing.T, c site, u *models.SiteUpdate, wantErr error) {
	t.Helper()
	err := c.UpdateSite(context.Background(), u)
	if wantErr != nil {
		require.ErrorIs(t, err, wantErr)
		return
	}
	require.NoError(t, err)
}

func userPeer(n int, u models.User, f models.Family, seeder bool) tracker.PeerUpdate {
	p := Peer(n, f, seeder)
	p.Key.User = uint32(u.ID)
	p.Create = false
	return p
}

func testSiteUsers(t *testing.T, c site) {
	ctx := context.Background()
	_, err := c.User(ctx, ann.Passkey)
	require.ErrorIs(t, err, models.ErrPasskeyNotFound)
	update(t, c, models.SiteUpdate{Action: models.AddUser, User: ann})
	update(t, c, models.SiteUpdate{Action: models.AddUser, User: ben})

	tests := []struct {
		name    string
		update  *models.SiteUpdate
		wantErr error
		// want maps passkeys to the user they must find, or to nothing for ErrPasskeyNotFound.
		want map[string]*models.User
	}{
		{name: "added", want: map[string]*models.User{ann.Passkey: &ann, ben.Passkey: &ben, cleo.Passkey: nil}},
		{
			name:   "update keeps ID and passkey",
			update: &models.SiteUpdate{Action: models.UpdateUser, User: models.User{ID: 99, Passkey: ann.Passkey, Protected: true}},
			want:   map[string]*models.User{ann.Passkey: {ID: ann.ID, Passkey: ann.Passkey, Protected: true}},
		},
		{
			name:    "update of an unknown passkey",
			update:  &models.SiteUpdate{Action: models.UpdateUser, User: cleo},
			wantErr: models.ErrPasskeyNotFound,
			want:    map[string]*models.User{cleo.Passkey: nil},
		},
		{
			name:   "change passkey",
			update: &models.SiteUpdate{Action: models.ChangePasskey, User: models.User{Passkey: ben.Passkey}, NewPasskey: "newnewnewnewnewnewnewnewnewnew08"},
			want: map[string]*models.User{
				ben.Passkey:                        nil,
				"newnewnewnewnewnewnewnewnewnew08": {ID: ben.ID, Passkey: "newnewnewnewnewnewnewnewnewnew08", CanLeech: true},
			},
		},
		{
			name:    "change an unknown passkey",
			update:  &models.SiteUpdate{Action: models.ChangePasskey, User: models.User{Passkey: ben.Passkey}, NewPasskey: "x"},
			wantErr: models.ErrPasskeyNotFound,
			want:    map[string]*models.User{"x": nil},
		},
		{
			name:   "remove",
			update: &models.SiteUpdate{Action: models.RemoveUser, User: models.User{Passkey: ann.Passkey}},
			want:   map[string]*models.User{ann.Passkey: nil},
		},
		{
			name:   "remove an unknown passkey is no error",
			update: &models.SiteUpdate{Action: models.RemoveUser, User: models.User{Passkey: ann.Passkey}},
			want:   map[string]*models.User{ann.Passkey: nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.update != nil {
				updateWants(t, c, tt.update, tt.wantErr)
			}
			for pk, want := range tt.want {
				got, err := c.User(ctx, pk)
				if want == nil {
					assert.ErrorIs(t, err, models.ErrPasskeyNotFound, "passkey %q", pk)
					continue
				}
				require.NoError(t, err, "passkey %q", pk)
				assert.Equal(t, *want, got)
			}
		})
	}
	assert.Error(t, c.UpdateSite(ctx, &models.SiteUpdate{Action: 200}), "an unknown action")
}

func testSiteReplaceUsers(t *testing.T, c site) {
	ctx := context.Background()
	update(t, c, models.SiteUpdate{Action: models.AddUser, User: ann})
	require.NoError(t, c.ReplaceSite(ctx, &models.SiteState{Users: []models.User{ben, cleo}}))
	_, err := c.User(ctx, ann.Passkey)
	assert.ErrorIs(t, err, models.ErrPasskeyNotFound, "a user left out of the load is gone")
	for _, u := range []models.User{ben, cleo} {
		got, err := c.User(ctx, u.Passkey)
		require.NoError(t, err)
		assert.Equal(t, u, got)
	}
	require.NoError(t, c.ReplaceSite(ctx, &models.SiteState{}))
	_, err = c.User(ctx, ben.Passkey)
	assert.ErrorIs(t, err, models.ErrPasskeyNotFound)
}

func testSiteWhitelist(t *testing.T, c site) {
	ctx := context.Background()
	var qb, tr, ts models.PeerID
	copy(qb[:], "-qB4620-abcdefghijkl")
	copy(tr[:], "-TR3000-abcdefghijkl")
	copy(ts[:], "-TS0001-abcdefghijkl")
	tests := []struct {
		name   string
		update *models.SiteUpdate
		state  *models.SiteState
		want   map[models.PeerID]bool
	}{
		{name: "empty allows all", want: map[models.PeerID]bool{qb: true, tr: true, ts: true}},
		{name: "add", update: &models.SiteUpdate{Action: models.AddWhitelist, Prefix: "-qB"}, want: map[models.PeerID]bool{qb: true, tr: false, ts: false}},
		{name: "add another", update: &models.SiteUpdate{Action: models.AddWhitelist, Prefix: "-TR3"}, want: map[models.PeerID]bool{qb: true, tr: true, ts: false}},
		{name: "edit", update: &models.SiteUpdate{Action: models.EditWhitelist, Prefix: "-TR3", NewPrefix: "-TS"}, want: map[models.PeerID]bool{qb: true, tr: false, ts: true}},
		{name: "remove", update: &models.SiteUpdate{Action: models.RemoveWhitelist, Prefix: "-qB"}, want: map[models.PeerID]bool{qb: false, tr: false, ts: true}},
		{name: "remove the last allows all", update: &models.SiteUpdate{Action: models.RemoveWhitelist, Prefix: "-TS"}, want: map[models.PeerID]bool{qb: true, tr: true, ts: true}},
		{name: "replaced by a load", state: &models.SiteState{Whitelist: []string{"-TR"}}, want: map[models.PeerID]bool{qb: false, tr: true, ts: false}},
		{name: "emptied by a load", state: &models.SiteState{}, want: map[models.PeerID]bool{qb: true, tr: true, ts: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.update != nil {
				update(t, c, *tt.update)
			}
			if tt.state != nil {
				require.NoError(t, c.ReplaceSite(ctx, tt.state))
			}
			for id, want := range tt.want {
				got, err := c.Whitelisted(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, want, got, "peer ID %q", id[:8])
			}
		})
	}
}

func testSiteUnregistered(t *testing.T, c site) {
	ctx := context.Background()
	ih := Hash(30)
	u := userPeer(1, ann, models.IPv4, false)
	sel := All(10)
	var res tracker.AnnounceResult
	require.ErrorIs(t, c.Announce(ctx, ih, &u, &sel, &res), models.ErrTorrentNotFound)
	_, _, ok, err := c.DeletionReason(ctx, ih)
	require.NoError(t, err)
	assert.False(t, ok)

	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(30, models.Normal)})
	res = announce(t, c, ih, u, sel)
	assert.Equal(t, uint64(1030), res.TorrentID)
	assert.Equal(t, 1, res.Leechers)
	assert.Equal(t, models.TorrentStats{InfoHash: ih, ID: 1030, Leechers: 1, Registered: true}, scrape(t, c, ih))

	before := time.Now()
	update(t, c, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: ih}, Reason: "Dupe"})
	after := time.Now()
	require.ErrorIs(t, c.Announce(ctx, ih, &u, &sel, &res), models.ErrTorrentNotFound)
	assert.Equal(t, models.TorrentStats{InfoHash: ih}, scrape(t, c, ih), "deleted with its peers")
	reason, at, ok, err := c.DeletionReason(ctx, ih)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "Dupe", reason)
	assert.False(t, at.Before(before.Truncate(time.Microsecond)) || at.After(after), "deleted at %v, between %v and %v", at, before, after)

	// Registered again: the reason is forgotten and the swarm starts empty.
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(30, models.Free)})
	_, _, ok, err = c.DeletionReason(ctx, ih)
	require.NoError(t, err)
	assert.False(t, ok)
	res = announce(t, c, ih, userPeer(2, ben, models.IPv4, false), sel)
	assert.Equal(t, 1, res.Leechers)
	assert.Equal(t, models.Free, res.Freeleech)

	// A public torrent deleted by the site goes too.
	announce(t, c, Hash(31), Peer(1, models.IPv4, false), All(0))
	update(t, c, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: Hash(31)}})
	assert.False(t, scrape(t, c, Hash(31)).Registered)
}

func testSiteTorrentAttributes(t *testing.T, c site) {
	ctx := context.Background()
	ih := Hash(32)
	// A torrent already known keeps its peers and snatches when the site registers it.
	u := Peer(1, models.IPv4, true)
	u.Completed = true
	announce(t, c, ih, u, All(0))
	tor := registered(32, models.Neutral)
	tor.Snatches = 40 // only for a torrent the store does not know
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: tor})
	assert.Equal(t, models.TorrentStats{InfoHash: ih, ID: 1032, Seeders: 1, Snatches: 1, Registered: true}, scrape(t, c, ih))
	tor = registered(33, models.Normal)
	tor.Snatches = 40
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: tor})
	assert.Equal(t, models.TorrentStats{InfoHash: Hash(33), ID: 1033, Snatches: 40, Registered: true}, scrape(t, c, Hash(33)))

	tests := []struct {
		name    string
		update  *models.SiteUpdate
		wantErr error
		wantFL  models.FreeleechType
	}{
		{name: "as registered", wantFL: models.Neutral},
		{name: "made free", update: &models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: ih, Freeleech: models.Free}}, wantFL: models.Free},
		{name: "made normal", update: &models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: ih, Freeleech: models.Normal}}, wantFL: models.Normal},
		{
			name:   "unknown torrent",
			update: &models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: Hash(34), Freeleech: models.Free}}, wantErr: models.ErrTorrentNotFound, wantFL: models.Normal,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.update != nil {
				err := c.UpdateSite(ctx, tt.update)
				if tt.wantErr != nil {
					require.ErrorIs(t, err, tt.wantErr)
					assert.False(t, scrape(t, c, Hash(34)).Registered)
				} else {
					require.NoError(t, err)
				}
			}
			res := announce(t, c, ih, userPeer(2, ann, models.IPv4, false), All(10))
			assert.Equal(t, tt.wantFL, res.Freeleech)
			assert.Equal(t, uint64(1032), res.TorrentID)
		})
	}
	// A public torrent has no site attributes.
	res := announce(t, c, Hash(35), Peer(1, models.IPv4, false), All(0))
	assert.Zero(t, res.TorrentID)
	assert.Equal(t, models.Normal, res.Freeleech)
	err := c.UpdateSite(ctx, &models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: Hash(35), Freeleech: models.Free}})
	assert.ErrorIs(t, err, models.ErrTorrentNotFound, "a public torrent is not the site's")
}

func testSiteTokens(t *testing.T, c site) {
	ctx := context.Background()
	ih := Hash(36)
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(36, models.Normal)})
	tokenOf := func(u models.User) bool {
		t.Helper()
		return announce(t, c, ih, userPeer(int(u.ID), u, models.IPv4, false), All(0)).Token
	}
	tests := []struct {
		name    string
		update  *models.SiteUpdate
		state   *models.SiteState
		wantErr error
		want    map[uint64]bool
	}{
		{name: "none", want: map[uint64]bool{ann.ID: false, ben.ID: false}},
		{name: "add", update: &models.SiteUpdate{Action: models.AddToken, User: ann, Torrent: models.Torrent{InfoHash: ih}}, want: map[uint64]bool{ann.ID: true, ben.ID: false}},
		{name: "add again", update: &models.SiteUpdate{Action: models.AddToken, User: ann, Torrent: models.Torrent{InfoHash: ih}}, want: map[uint64]bool{ann.ID: true, ben.ID: false}},
		{name: "remove", update: &models.SiteUpdate{Action: models.RemoveToken, User: ann, Torrent: models.Torrent{InfoHash: ih}}, want: map[uint64]bool{ann.ID: false, ben.ID: false}},
		{name: "add on an unknown torrent", update: &models.SiteUpdate{Action: models.AddToken, User: ann, Torrent: models.Torrent{InfoHash: Hash(37)}}, wantErr: models.ErrTorrentNotFound, want: map[uint64]bool{ann.ID: false}},
		{name: "remove on an unknown torrent", update: &models.SiteUpdate{Action: models.RemoveToken, User: ann, Torrent: models.Torrent{InfoHash: Hash(37)}}, wantErr: models.ErrTorrentNotFound, want: map[uint64]bool{ann.ID: false}},
		{
			name:  "loaded",
			state: &models.SiteState{Torrents: []models.Torrent{registered(36, models.Normal)}, Tokens: []models.Token{{UserID: ben.ID, TorrentID: 1036}, {UserID: cleo.ID, TorrentID: 999}}},
			want:  map[uint64]bool{ann.ID: false, ben.ID: true, cleo.ID: false},
		},
		{
			name:  "a load replaces them",
			state: &models.SiteState{Torrents: []models.Torrent{registered(36, models.Normal)}, Tokens: []models.Token{{UserID: cleo.ID, TorrentID: 1036}}},
			want:  map[uint64]bool{ann.ID: false, ben.ID: false, cleo.ID: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.update != nil {
				updateWants(t, c, tt.update, tt.wantErr)
			}
			if tt.state != nil {
				require.NoError(t, c.ReplaceSite(ctx, tt.state))
			}
			for uid, want := range tt.want {
				assert.Equal(t, want, tokenOf(models.User{ID: uid}), "user %d", uid)
			}
		})
	}
}

func testSiteHiddenAndOwnUser(t *testing.T, c site) {
	ctx := context.Background()
	ih := Hash(38)
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(38, models.Normal)})
	// cleo may not leech: the core stores her leecher hidden.
	h := userPeer(1, cleo, models.IPv4, false)
	h.Hidden = true
	announce(t, c, ih, h, All(0))
	announce(t, c, ih, userPeer(2, ann, models.IPv4, false), All(0))
	announce(t, c, ih, userPeer(3, ann, models.IPv6, true), All(0))
	announce(t, c, ih, userPeer(4, ben, models.IPv4, true), All(0))

	sel := All(50)
	sel.SkipOwnUser = true
	res := announce(t, c, ih, userPeer(5, ann, models.IPv4, false), sel)
	assert.Equal(t, 2, res.Seeders)
	assert.Equal(t, 3, res.Leechers, "a hidden leecher is counted")
	assert.Equal(t, map[models.PeerKey]bool{Key(4, models.IPv4): true}, keySet(t, handed(t, &res)),
		"neither ann's own peers nor the hidden one")
	res = announce(t, c, ih, userPeer(6, ben, models.IPv4, false), sel)
	assert.Equal(t, map[models.PeerKey]bool{Key(2, models.IPv4): true, Key(3, models.IPv6): true, Key(5, models.IPv4): true},
		keySet(t, handed(t, &res)))

	tests := []struct {
		user              models.User
		leeching, seeding int
	}{
		{ann, 2, 1},
		{ben, 1, 1},
		{cleo, 1, 0},
		{models.User{ID: 77}, 0, 0},
	}
	for _, tt := range tests {
		l, s, err := c.UserPeers(ctx, tt.user.ID)
		require.NoError(t, err)
		assert.Equal(t, tt.leeching, l, "user %d leeching", tt.user.ID)
		assert.Equal(t, tt.seeding, s, "user %d seeding", tt.user.ID)
	}
}

// testSiteRemoveUserHidesPeers: a removed user's peers are handed out no more, at once and in
// both families, to leechers and seeders alike; they stay counted until reaped, and show again
// once the user is added back and announces.
func testSiteRemoveUserHidesPeers(t *testing.T, c site) {
	ih := Hash(39)
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(39, models.Normal)})
	for _, u := range []models.User{ann, ben, cleo} {
		update(t, c, models.SiteUpdate{Action: models.AddUser, User: u})
	}
	announce(t, c, ih, userPeer(1, ann, models.IPv4, false), All(0))
	announce(t, c, ih, userPeer(2, ann, models.IPv6, true), All(0))
	announce(t, c, ih, userPeer(3, cleo, models.IPv4, true), All(0))
	announce(t, c, ih, userPeer(4, ben, models.IPv4, false), All(0))

	update(t, c, models.SiteUpdate{Action: models.RemoveUser, User: models.User{Passkey: ann.Passkey}})
	update(t, c, models.SiteUpdate{Action: models.RemoveUser, User: models.User{Passkey: "nobodynobodynobodynobodynobody00"}})
	_, err := c.User(context.Background(), ann.Passkey)
	require.ErrorIs(t, err, models.ErrPasskeyNotFound)

	sel := All(50)
	sel.SkipOwnUser = true
	res := announce(t, c, ih, userPeer(4, ben, models.IPv4, false), sel)
	assert.Equal(t, map[models.PeerKey]bool{Key(3, models.IPv4): true}, keySet(t, handed(t, &res)),
		"a leecher gets neither of the removed user's peers")
	assert.Equal(t, 2, res.Seeders, "the hidden seeder is still counted")
	assert.Equal(t, 2, res.Leechers, "the hidden leecher is still counted")
	seedSel := sel
	seedSel.Seeder = true
	res = announce(t, c, ih, userPeer(3, cleo, models.IPv4, true), seedSel)
	assert.Equal(t, map[models.PeerKey]bool{Key(4, models.IPv4): true}, keySet(t, handed(t, &res)),
		"a seeder does not get the removed user's leecher")

	// Added back, the user's peer shows again once it announces.
	update(t, c, models.SiteUpdate{Action: models.AddUser, User: ann})
	announce(t, c, ih, userPeer(1, ann, models.IPv4, false), All(0))
	res = announce(t, c, ih, userPeer(4, ben, models.IPv4, false), sel)
	assert.Equal(t, map[models.PeerKey]bool{Key(1, models.IPv4): true, Key(3, models.IPv4): true}, keySet(t, handed(t, &res)))
}

// testSiteSecondary: an announce naming both endpoints is two updates, the first Secondary; the
// session takes the counters of both but counts the announce once.
func testSiteSecondary(t *testing.T, c site) {
	ih := Hash(42)
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(42, models.Normal)})
	for i := range 3 {
		v6 := userPeer(1, ann, models.IPv6, false)
		v6.Secondary, v6.Uploaded, v6.Time = true, int64(10*i), T0.Add(time.Duration(i)*time.Minute)
		res := announce(t, c, ih, v6, All(0))
		assert.Equal(t, i, res.Prev.Announces, "round %d: the secondary update sees the announces so far", i)
		v4 := userPeer(1, ann, models.IPv4, false)
		v4.Uploaded, v4.Time = int64(10*i), T0.Add(time.Duration(i)*time.Minute)
		res = announce(t, c, ih, v4, All(0))
		assert.Equal(t, i, res.Prev.Announces, "round %d: and so does the main one", i)
		assert.Equal(t, int64(10*i), res.Prev.Uploaded, "round %d: the main update finds the secondary's counters", i)
	}
}

func testSiteSessions(t *testing.T, c site) {
	ctx := context.Background()
	ih := Hash(39)
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(39, models.Normal)})
	at := func(u tracker.PeerUpdate, up, down, corrupt int64, when time.Duration) tracker.PeerUpdate {
		u.Uploaded, u.Downloaded, u.Corrupt, u.Time = up, down, corrupt, T0.Add(when)
		return u
	}
	v4p, v6p := userPeer(1, ann, models.IPv4, false), userPeer(1, ann, models.IPv6, false)
	type step struct {
		u      tracker.PeerUpdate
		reap   bool // reap everything before the step
		remove bool
		want   tracker.PrevPeer
	}
	steps := []step{
		{u: at(v4p, 10, 20, 1, 0), want: tracker.PrevPeer{}},
		{u: at(v4p, 30, 40, 2, time.Minute), want: tracker.PrevPeer{
			Found: true, Uploaded: 10, Downloaded: 20, Corrupt: 1, Time: T0, FirstSeen: T0, Announces: 1,
		}},
		// The IPv6 entry of the same client shares the session: it is restored from it.
		{u: at(v6p, 35, 45, 2, 2*time.Minute), want: tracker.PrevPeer{
			Restored: true, Uploaded: 30, Downloaded: 40, Corrupt: 2, Time: T0.Add(time.Minute), FirstSeen: T0, Announces: 2,
		}},
		// A stop keeps the session.
		{u: at(v4p, 50, 50, 2, 3*time.Minute), remove: true, want: tracker.PrevPeer{
			Found: true, Uploaded: 35, Downloaded: 45, Corrupt: 2, Time: T0.Add(2 * time.Minute), FirstSeen: T0, Announces: 3,
		}},
		// So does reaping: the next announce is credited from it.
		{u: at(v4p, 60, 70, 3, time.Hour), reap: true, want: tracker.PrevPeer{
			Restored: true, Uploaded: 50, Downloaded: 50, Corrupt: 2, Time: T0.Add(3 * time.Minute), FirstSeen: T0, Announces: 4,
		}},
	}
	for i, st := range steps {
		if st.reap {
			r, err := c.Reap(ctx, T0.Add(30*time.Minute), true)
			require.NoError(t, err)
			assert.Equal(t, 1, r.Peers, "the IPv6 entry")
			assert.Equal(t, 0, r.Torrents, "a registered torrent is never purged")
			assert.Equal(t, []models.TorrentStats{{InfoHash: ih, ID: 1039, Registered: true}}, r.Changed)
		}
		u := st.u
		u.Remove = st.remove
		res := announce(t, c, ih, u, All(0))
		got := res.Prev
		assert.Equal(t, st.want.Found, got.Found, "step %d Found", i)
		assert.Equal(t, st.want.Restored, got.Restored, "step %d Restored", i)
		assert.Equal(t, st.want.Seeder, got.Seeder, "step %d Seeder", i)
		assert.Equal(t, [3]int64{st.want.Uploaded, st.want.Downloaded, st.want.Corrupt}, [3]int64{got.Uploaded, got.Downloaded, got.Corrupt}, "step %d counters", i)
		assert.Equal(t, st.want.Announces, got.Announces, "step %d Announces", i)
		if st.want.Found || st.want.Restored {
			assert.True(t, st.want.Time.Equal(got.Time), "step %d Time %v, want %v", i, got.Time, st.want.Time)
			assert.True(t, st.want.FirstSeen.Equal(got.FirstSeen), "step %d FirstSeen %v, want %v", i, got.FirstSeen, st.want.FirstSeen)
		}
	}
	// Another user's client with the same peer ID has its own session.
	res := announce(t, c, ih, at(userPeer(1, ben, models.IPv4, false), 1, 1, 0, time.Hour), All(0))
	assert.False(t, res.Prev.Found || res.Prev.Restored)
	assert.Zero(t, res.Prev.Announces)
}

func testSiteReap(t *testing.T, c site) {
	ctx := context.Background()
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(40, models.Normal)})
	update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(41, models.Normal)})
	old := userPeer(1, ann, models.IPv4, true)
	old.Time = T0.Add(-time.Hour)
	announce(t, c, Hash(40), old, All(0))
	announce(t, c, Hash(40), userPeer(2, ben, models.IPv4, false), All(0))
	announce(t, c, Hash(41), userPeer(3, ben, models.IPv4, false), All(0))
	old.Create = true
	announce(t, c, Hash(42), old, All(0)) // public, old, emptied and purged

	r, err := c.Reap(ctx, T0.Add(-time.Minute), true)
	require.NoError(t, err)
	assert.Equal(t, 2, r.Peers)
	assert.Equal(t, 1, r.Torrents)
	assert.Equal(t, []models.TorrentStats{{InfoHash: Hash(40), ID: 1040, Leechers: 1, Registered: true}}, r.Changed,
		"only the registered torrents that lost peers")
	r, err = c.Reap(ctx, T0.Add(time.Minute), true)
	require.NoError(t, err)
	assert.Equal(t, 2, r.Peers)
	assert.Zero(t, r.Torrents, "registered torrents stay however empty")
	assert.ElementsMatch(t, []models.TorrentStats{
		{InfoHash: Hash(40), ID: 1040, Registered: true}, {InfoHash: Hash(41), ID: 1041, Registered: true},
	}, r.Changed)
	assert.Equal(t, models.TorrentStats{InfoHash: Hash(41), ID: 1041, Registered: true}, scrape(t, c, Hash(41)))
	assert.False(t, scrape(t, c, Hash(42)).Registered)
}

func testSiteReplaceTorrents(t *testing.T, c site) {
	ctx := context.Background()
	load := func(ns ...int) *models.SiteState {
		st := &models.SiteState{}
		for _, n := range ns {
			st.Torrents = append(st.Torrents, registered(n, models.Normal))
		}
		return st
	}
	require.NoError(t, c.ReplaceSite(ctx, load(50, 51)))
	announce(t, c, Hash(50), userPeer(1, ann, models.IPv4, false), All(0))
	announce(t, c, Hash(51), userPeer(1, ann, models.IPv4, false), All(0))
	announce(t, c, Hash(52), Peer(1, models.IPv4, false), All(0)) // public

	st := load(50, 53)
	st.Torrents[0].Freeleech = models.Free
	st.Baselines = []models.Baseline{
		// ann's session on 50 exists already: what this store saw is newer and wins.
		{UserID: ann.ID, TorrentID: 1050, PeerID: PID(1), Uploaded: 999, FirstSeen: T0.Add(-time.Hour), LastSeen: T0.Add(-time.Hour), Announces: 9},
		{UserID: ben.ID, TorrentID: 1053, PeerID: PID(2), Uploaded: 5, Downloaded: 6, Corrupt: 7, FirstSeen: T0.Add(-2 * time.Hour), LastSeen: T0.Add(-time.Hour), Announces: 3},
	}
	require.NoError(t, c.ReplaceSite(ctx, st))
	assert.Equal(t, models.TorrentStats{InfoHash: Hash(50), ID: 1050, Leechers: 1, Registered: true}, scrape(t, c, Hash(50)), "kept with its peers")
	assert.False(t, scrape(t, c, Hash(51)).Registered, "no longer registered: dropped with its peers")
	assert.Equal(t, models.TorrentStats{InfoHash: Hash(52), Leechers: 1, Registered: true}, scrape(t, c, Hash(52)), "a public torrent is not the site's")
	assert.Equal(t, models.TorrentStats{InfoHash: Hash(53), ID: 1053, Registered: true}, scrape(t, c, Hash(53)))

	res := announce(t, c, Hash(50), userPeer(1, ann, models.IPv4, false), All(0))
	assert.Equal(t, models.Free, res.Freeleech)
	assert.True(t, res.Prev.Found)
	assert.Zero(t, res.Prev.Uploaded, "the baseline does not replace a known session")
	assert.Equal(t, 1, res.Prev.Announces)

	u := userPeer(2, ben, models.IPv4, false)
	u.Time = T0
	res = announce(t, c, Hash(53), u, All(0))
	assert.True(t, res.Prev.Restored)
	assert.False(t, res.Prev.Found)
	assert.Equal(t, [3]int64{5, 6, 7}, [3]int64{res.Prev.Uploaded, res.Prev.Downloaded, res.Prev.Corrupt})
	assert.Equal(t, 3, res.Prev.Announces)
	assert.True(t, T0.Add(-2*time.Hour).Equal(res.Prev.FirstSeen), "FirstSeen %v", res.Prev.FirstSeen)
	assert.True(t, T0.Add(-time.Hour).Equal(res.Prev.Time), "Time %v", res.Prev.Time)

	// Unregistered and registered again, a torrent starts without its old sessions.
	require.NoError(t, c.ReplaceSite(ctx, load(50)))
	require.NoError(t, c.ReplaceSite(ctx, load(50, 53)))
	res = announce(t, c, Hash(53), u, All(0))
	assert.False(t, res.Prev.Restored || res.Prev.Found)
}

func testSitePrune(t *testing.T, c site) {
	ctx := context.Background()
	for n := 60; n <= 62; n++ {
		update(t, c, models.SiteUpdate{Action: models.AddTorrent, Torrent: registered(n, models.Normal)})
	}
	session := func(n, id int, when time.Duration) tracker.PeerUpdate {
		u := userPeer(id, ann, models.IPv4, false)
		u.Time, u.Uploaded = T0.Add(when), 100
		return u
	}
	announce(t, c, Hash(60), session(60, 1, -2*time.Hour), All(0))
	announce(t, c, Hash(60), session(60, 2, 0), All(0))
	announce(t, c, Hash(61), session(61, 1, -2*time.Hour), All(0))
	announce(t, c, Hash(62), session(62, 1, -time.Minute), All(0))
	update(t, c, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: Hash(63)}, Reason: "Trumped"})

	// Nothing is due yet.
	require.NoError(t, c.Prune(ctx, time.Now().Add(-time.Hour), T0.Add(-3*time.Hour)))
	_, _, ok, err := c.DeletionReason(ctx, Hash(63))
	require.NoError(t, err)
	assert.True(t, ok)

	// Reap every entry first: only the sessions remember the peers.
	_, err = c.Reap(ctx, T0.Add(time.Hour), true)
	require.NoError(t, err)
	require.NoError(t, c.Prune(ctx, time.Now().Add(time.Second), T0.Add(-time.Hour)))
	_, _, ok, err = c.DeletionReason(ctx, Hash(63))
	require.NoError(t, err)
	assert.False(t, ok, "the deletion reason is forgotten")

	tests := []struct {
		n, id        int
		wantRestored bool
	}{
		{60, 1, false}, // last seen two hours before: forgotten
		{60, 2, true},
		{61, 1, false},
		{62, 1, true},
	}
	for _, tt := range tests {
		res := announce(t, c, Hash(tt.n), session(tt.n, tt.id, time.Hour), All(0))
		assert.Equal(t, tt.wantRestored, res.Prev.Restored, "torrent %d peer %d", tt.n, tt.id)
		if tt.wantRestored {
			assert.Equal(t, int64(100), res.Prev.Uploaded)
		}
	}
	// A second pass finds nothing more to forget.
	require.NoError(t, c.Prune(ctx, time.Now(), T0.Add(-time.Hour)))
	res := announce(t, c, Hash(62), session(62, 1, 2*time.Hour), All(0))
	assert.True(t, res.Prev.Found)
	assert.Equal(t, 2, res.Prev.Announces)
}

// testSiteConcurrent announces on registered torrents from several goroutines while the site
// changes tokens and freeleech, reloads, and the reaper reaps and prunes; afterwards the counts,
// the swarms, the users' peers and the swarm counters agree.
func testSiteConcurrent(t *testing.T, c site) {
	ctx := context.Background()
	const workers, rounds, torrents, peers = 4, 120, 3, 10
	users := []models.User{ann, ben, cleo}
	state := &models.SiteState{Users: users}
	for n := 0; n < torrents; n++ {
		state.Torrents = append(state.Torrents, registered(n, models.Normal))
	}
	require.NoError(t, c.ReplaceSite(ctx, state))

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // the site and the reaper
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ih := Hash(i % torrents)
			switch i % 5 {
			case 0:
				assert.NoError(t, c.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddToken, User: ann, Torrent: models.Torrent{InfoHash: ih}}))
			case 1:
				assert.NoError(t, c.UpdateSite(ctx, &models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: ih, Freeleech: models.FreeleechType(i % 3)}}))
			case 2:
				assert.NoError(t, c.ReplaceSite(ctx, state))
			case 3:
				_, err := c.Reap(ctx, T0.Add(-time.Minute), true)
				assert.NoError(t, err)
			case 4:
				assert.NoError(t, c.Prune(ctx, time.Now(), T0.Add(-time.Minute)))
			}
		}
	}()
	var announcers sync.WaitGroup
	for w := 0; w < workers; w++ {
		announcers.Add(1)
		go func() {
			defer announcers.Done()
			for i := 0; i < rounds; i++ {
				n := (w*rounds + i) % peers
				user := users[n%len(users)]
				f := models.Family(models.IPv4)
				if i%4 == 0 {
					f = models.IPv6
				}
				u := userPeer(n, user, f, (i/peers)%2 == 0)
				u.Completed = u.Seeder
				u.Remove = i%9 == 0
				u.Time = T0.Add(time.Duration(i%3-1) * time.Minute) // some are reaped
				sel := All(20)
				sel.SkipOwnUser = true
				var res tracker.AnnounceResult
				if !assert.NoError(t, c.Announce(ctx, Hash(i%torrents), &u, &sel, &res)) {
					return
				}
				assert.Equal(t, uint64(1000+i%torrents), res.TorrentID)
				for _, got := range append(res.IPv4Peers, res.IPv6Peers...) {
					assert.NotEqual(t, u.Key.ID, PeerIDOf(got), "handed itself")
				}
			}
		}()
	}
	announcers.Wait()
	close(stop)
	wg.Wait()

	total := 0
	for n := 0; n < torrents; n++ {
		st := scrape(t, c, Hash(n))
		require.True(t, st.Registered)
		assert.Equal(t, uint64(1000+n), st.ID)
		assert.Len(t, observe(t, c, Hash(n), false), st.Seeders+st.Leechers, "torrent %d", n)
		total += st.Seeders + st.Leechers
	}
	sum := 0
	for _, u := range users {
		l, s, err := c.UserPeers(ctx, u.ID)
		require.NoError(t, err)
		sum += l + s
	}
	assert.Equal(t, total, sum, "every peer belongs to one user")
	checkSwarmCounts(t, c, torrents)
}
