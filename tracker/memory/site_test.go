package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// sitePeer builds the private-mode update of peer n of user in family f: it never creates a
// torrent.
func sitePeer(n int, user uint32, f models.Family, seeder bool, up, down int64, at time.Time) tracker.PeerUpdate {
	u := peer(n, f, seeder)
	u.Key.User = user
	u.Create = false
	u.Uploaded, u.Downloaded = up, down
	u.Time = at
	return u
}

func privSel(want int, seeder bool) tracker.Selection {
	return tracker.Selection{Want: want, Seeder: seeder, IPv4: true, IPv6: true, SkipOwnUser: true}
}

func tryAnnounce(p *Pool, ih models.InfoHash, u tracker.PeerUpdate, sel tracker.Selection) (tracker.AnnounceResult, error) {
	var res tracker.AnnounceResult
	err := p.Announce(context.Background(), ih, &u, &sel, &res)
	return res, err
}

func siteUpdate(tb testing.TB, p *Pool, u models.SiteUpdate) {
	tb.Helper()
	require.NoError(tb, p.UpdateSite(context.Background(), &u))
}

func addTorrent(tb testing.TB, p *Pool, id uint64, ih models.InfoHash, fl models.FreeleechType) {
	tb.Helper()
	siteUpdate(tb, p, models.SiteUpdate{Action: models.AddTorrent, Torrent: models.Torrent{ID: id, InfoHash: ih, Freeleech: fl}})
}

// userKey is a handed-out peer with the user that owns it, which handed() cannot tell.
type userKey struct {
	id   models.PeerID
	fam  models.Family
	user uint32
}

// users returns, for every peer res hands out, which user it belongs to, by looking the entry
// up in the torrent.
func users(tb testing.TB, p *Pool, ih models.InfoHash, res *tracker.AnnounceResult) map[userKey]bool {
	tb.Helper()
	s := p.shardFor(ih)
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.get(ih)
	require.NotNil(tb, t)
	out := map[userKey]bool{}
	for _, pr := range append(append([]models.Peer(nil), res.IPv4Peers...), res.IPv6Peers...) {
		fam := models.FamilyOf(pr.AddrPort.Addr())
		found := false
		for i := range t.ents() {
			if t.ents()[i].family() == fam && t.addrPort(i) == pr.AddrPort {
				k := userKey{id: peerIDOf(tb, p, t.ents()[i].id), fam: fam, user: t.user(i)}
				assert.False(tb, out[k], "peer handed out twice")
				out[k] = true
				found = true
			}
		}
		assert.True(tb, found, "handed out %v, which is not in the swarm", pr)
	}
	return out
}

func TestSiteUsers(t *testing.T) {
	alice := models.User{ID: 1, Passkey: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", CanLeech: true}
	bob := models.User{ID: 2, Passkey: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", CanLeech: true, Protected: true}
	tests := []struct {
		name    string
		updates []models.SiteUpdate
		wantErr error // of the last update
		want    map[string]*models.User
	}{
		{
			name:    "add",
			updates: []models.SiteUpdate{{Action: models.AddUser, User: alice}},
			want:    map[string]*models.User{alice.Passkey: &alice, bob.Passkey: nil},
		},
		{
			name: "add twice replaces",
			updates: []models.SiteUpdate{
				{Action: models.AddUser, User: alice},
				{Action: models.AddUser, User: models.User{ID: 9, Passkey: alice.Passkey}},
			},
			want: map[string]*models.User{alice.Passkey: {ID: 9, Passkey: alice.Passkey}},
		},
		{
			name: "update changes can_leech and protected, not the ID",
			updates: []models.SiteUpdate{
				{Action: models.AddUser, User: alice},
				{Action: models.UpdateUser, User: models.User{ID: 77, Passkey: alice.Passkey, CanLeech: false, Protected: true}},
			},
			want: map[string]*models.User{alice.Passkey: {ID: 1, Passkey: alice.Passkey, Protected: true}},
		},
		{
			name:    "update of an unknown passkey",
			updates: []models.SiteUpdate{{Action: models.UpdateUser, User: alice}},
			wantErr: models.ErrPasskeyNotFound,
			want:    map[string]*models.User{alice.Passkey: nil},
		},
		{
			name: "remove",
			updates: []models.SiteUpdate{
				{Action: models.AddUser, User: alice},
				{Action: models.AddUser, User: bob},
				{Action: models.RemoveUser, User: models.User{Passkey: alice.Passkey}},
			},
			want: map[string]*models.User{alice.Passkey: nil, bob.Passkey: &bob},
		},
		{
			name:    "remove of an unknown passkey is no error",
			updates: []models.SiteUpdate{{Action: models.RemoveUser, User: alice}},
			want:    map[string]*models.User{alice.Passkey: nil},
		},
		{
			name: "change passkey",
			updates: []models.SiteUpdate{
				{Action: models.AddUser, User: alice},
				{Action: models.ChangePasskey, User: models.User{Passkey: alice.Passkey}, NewPasskey: "cccccccccccccccccccccccccccccccc"},
			},
			want: map[string]*models.User{
				alice.Passkey:                      nil,
				"cccccccccccccccccccccccccccccccc": {ID: 1, Passkey: "cccccccccccccccccccccccccccccccc", CanLeech: true},
			},
		},
		{
			name:    "change of an unknown passkey",
			updates: []models.SiteUpdate{{Action: models.ChangePasskey, User: alice, NewPasskey: "x"}},
			wantErr: models.ErrPasskeyNotFound,
			want:    map[string]*models.User{alice.Passkey: nil, "x": nil},
		},
		{
			name:    "unknown action",
			updates: []models.SiteUpdate{{Action: 200}},
			wantErr: errors.New("any"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(4)
			ctx := context.Background()
			for i, u := range tt.updates {
				err := p.UpdateSite(ctx, &u)
				if i < len(tt.updates)-1 || tt.wantErr == nil {
					require.NoError(t, err)
					continue
				}
				require.Error(t, err)
				if ce, ok := tt.wantErr.(models.ClientError); ok {
					assert.ErrorIs(t, err, ce)
				}
			}
			for passkey, want := range tt.want {
				got, err := p.User(ctx, passkey)
				if want == nil {
					assert.ErrorIs(t, err, models.ErrPasskeyNotFound, "passkey %q", passkey)
					continue
				}
				require.NoError(t, err, "passkey %q", passkey)
				assert.Equal(t, *want, got)
			}
		})
	}
}

func TestSiteAddTorrent(t *testing.T) {
	ctx := context.Background()
	ih := hash(1)
	t.Run("unregistered torrents are not found, registered ones are", func(t *testing.T) {
		p := NewPool(4)
		_, err := tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, 0, 0, t0), privSel(50, false))
		require.ErrorIs(t, err, models.ErrTorrentNotFound)
		assert.False(t, scrape(t, p, ih).Registered)

		addTorrent(t, p, 42, ih, models.Free)
		assert.Equal(t, models.TorrentStats{InfoHash: ih, ID: 42, Registered: true}, scrape(t, p, ih))
		res, err := tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, 0, 0, t0), privSel(50, false))
		require.NoError(t, err)
		assert.Equal(t, uint64(42), res.TorrentID)
		assert.Equal(t, models.Free, res.Freeleech)
		assert.False(t, res.Token)
		assert.Equal(t, 1, res.Leechers)
		assert.False(t, res.Prev.Found || res.Prev.Restored)
	})

	tests := []struct {
		name        string
		deleteFirst bool
		wantPeers   int
		wantSnatch  int
		wantToken   bool
		wantPrev    tracker.PrevPeer // of peer 1's next announce
	}{
		{
			name:      "re-adding a registered torrent keeps peers, sessions and tokens",
			wantPeers: 2, wantSnatch: 1, wantToken: true,
			wantPrev: tracker.PrevPeer{Found: true, Seeder: true, Uploaded: 10, Downloaded: 20, Announces: 2},
		},
		{
			name:        "deleted then re-added starts empty: no peers, sessions, tokens or snatches",
			deleteFirst: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(4)
			addTorrent(t, p, 42, ih, models.Normal)
			siteUpdate(t, p, models.SiteUpdate{Action: models.AddToken, User: models.User{ID: 1}, Torrent: models.Torrent{InfoHash: ih}})
			_, err := tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, 0, 0, t0), privSel(0, false))
			require.NoError(t, err)
			done := sitePeer(1, 1, models.IPv4, true, 10, 20, t0.Add(time.Minute))
			done.Completed = true
			res, err := tryAnnounce(p, ih, done, privSel(0, true))
			require.NoError(t, err)
			require.True(t, res.Snatched)
			_, err = tryAnnounce(p, ih, sitePeer(2, 2, models.IPv6, false, 0, 0, t0), privSel(0, false))
			require.NoError(t, err)

			if tt.deleteFirst {
				siteUpdate(t, p, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: ih}, Reason: "Dupe"})
			}
			addTorrent(t, p, 43, ih, models.Neutral)
			assert.Equal(t, models.TorrentStats{InfoHash: ih, Seeders: min(tt.wantPeers, 1), Leechers: min(tt.wantPeers, 1), Snatches: tt.wantSnatch, Registered: true}, scrapeCounts(t, p, ih))
			_, _, ok, err := p.DeletionReason(ctx, ih)
			require.NoError(t, err)
			assert.False(t, ok, "AddTorrent clears the deletion reason")

			res, err = tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, true, 10, 20, t0.Add(2*time.Minute)), privSel(0, true))
			require.NoError(t, err)
			assert.Equal(t, uint64(43), res.TorrentID, "the new ID")
			assert.Equal(t, models.Neutral, res.Freeleech, "the new freeleech type")
			assert.Equal(t, tt.wantToken, res.Token)
			assert.Equal(t, tt.wantPrev.Found, res.Prev.Found)
			assert.Equal(t, tt.wantPrev.Restored, res.Prev.Restored)
			assert.Equal(t, tt.wantPrev.Seeder, res.Prev.Seeder)
			assert.Equal(t, tt.wantPrev.Uploaded, res.Prev.Uploaded)
			assert.Equal(t, tt.wantPrev.Downloaded, res.Prev.Downloaded)
			assert.Equal(t, tt.wantPrev.Announces, res.Prev.Announces)
			checkInvariants(t, p)
		})
	}
}

func TestSiteUpdateTorrent(t *testing.T) {
	p := NewPool(4)
	ih := hash(2)
	addTorrent(t, p, 5, ih, models.Normal)
	tests := []struct {
		name string
		fl   models.FreeleechType
	}{
		{name: "free", fl: models.Free},
		{name: "neutral", fl: models.Neutral},
		{name: "back to normal", fl: models.Normal},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			siteUpdate(t, p, models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: ih, Freeleech: tt.fl}})
			res, err := tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, int64(i), 0, t0), privSel(0, false))
			require.NoError(t, err)
			assert.Equal(t, tt.fl, res.Freeleech)
			assert.Equal(t, uint64(5), res.TorrentID, "the ID is untouched")
		})
	}
	t.Run("unknown torrent", func(t *testing.T) {
		err := p.UpdateSite(context.Background(), &models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: hash(3), Freeleech: models.Free}})
		require.ErrorIs(t, err, models.ErrTorrentNotFound)
		assert.False(t, scrapeCounts(t, p, hash(3)).Registered, "not created")
	})
}

func TestSiteDeleteTorrent(t *testing.T) {
	tests := []struct {
		name     string
		register bool
		reason   string
	}{
		{name: "registered, with reason", register: true, reason: "Trump"},
		{name: "registered, no reason", register: true},
		{name: "unknown torrent still remembers the reason", reason: "Dupe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(4)
			ctx := context.Background()
			ih, other := hash(1), hash(2)
			addTorrent(t, p, 2, other, models.Normal)
			_, err := tryAnnounce(p, other, sitePeer(3, 3, models.IPv4, false, 0, 0, t0), privSel(0, false))
			require.NoError(t, err)
			if tt.register {
				addTorrent(t, p, 1, ih, models.Normal)
				for n := 1; n <= 2; n++ {
					_, err := tryAnnounce(p, ih, sitePeer(n, uint32(n), models.Family(n%2), n == 1, 0, 0, t0), privSel(0, false))
					require.NoError(t, err)
				}
				assert.Equal(t, 2, scrapeCounts(t, p, ih).Seeders+scrapeCounts(t, p, ih).Leechers)
			}
			_, _, ok, err := p.DeletionReason(ctx, ih)
			require.NoError(t, err)
			require.False(t, ok)

			before := time.Now()
			siteUpdate(t, p, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: ih}, Reason: tt.reason})
			after := time.Now()

			assert.Equal(t, models.TorrentStats{InfoHash: ih}, scrapeCounts(t, p, ih), "peers gone")
			_, err = tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, true, 0, 0, t0), privSel(50, true))
			require.ErrorIs(t, err, models.ErrTorrentNotFound)
			assert.False(t, scrape(t, p, ih).Registered, "an announce does not bring it back")
			leech, seed, err := p.UserPeers(ctx, 1)
			require.NoError(t, err)
			assert.Zero(t, leech+seed)

			text, at, ok, err := p.DeletionReason(ctx, ih)
			require.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, tt.reason, text)
			assert.False(t, at.Before(before.Truncate(time.Second)) || at.After(after), "deleted at %v, between %v and %v", at, before, after)

			// The other torrent is untouched.
			assert.Equal(t, models.TorrentStats{InfoHash: other, Leechers: 1, Registered: true}, scrapeCounts(t, p, other))
			_, _, ok, _ = p.DeletionReason(ctx, other)
			assert.False(t, ok)
			checkInvariants(t, p)
		})
	}
}

func TestSiteTokens(t *testing.T) {
	p := NewPool(4)
	ih := hash(1)
	addTorrent(t, p, 1, ih, models.Normal)
	addTorrent(t, p, 2, hash(2), models.Normal)
	tok := func(action models.SiteAction, user uint64, ih models.InfoHash) {
		siteUpdate(t, p, models.SiteUpdate{Action: action, User: models.User{ID: user}, Torrent: models.Torrent{InfoHash: ih}})
	}
	tests := []struct {
		name  string
		apply func()
		want  map[uint32]bool // user → res.Token on ih
	}{
		{name: "none", apply: func() {}, want: map[uint32]bool{1: false, 2: false}},
		{name: "user 1 gets one", apply: func() { tok(models.AddToken, 1, ih) }, want: map[uint32]bool{1: true, 2: false}},
		{name: "a token on another torrent is not this one's", apply: func() { tok(models.AddToken, 2, hash(2)) }, want: map[uint32]bool{1: true, 2: false}},
		{name: "adding twice is one token", apply: func() { tok(models.AddToken, 1, ih) }, want: map[uint32]bool{1: true, 2: false}},
		{name: "user 2 too", apply: func() { tok(models.AddToken, 2, ih) }, want: map[uint32]bool{1: true, 2: true}},
		{name: "user 1 loses it", apply: func() { tok(models.RemoveToken, 1, ih) }, want: map[uint32]bool{1: false, 2: true}},
		{name: "removing an absent token is no error", apply: func() { tok(models.RemoveToken, 1, ih) }, want: map[uint32]bool{1: false, 2: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.apply()
			for user, want := range tt.want {
				res, err := tryAnnounce(p, ih, sitePeer(int(user), user, models.IPv4, false, 0, 0, t0), privSel(0, false))
				require.NoError(t, err)
				assert.Equal(t, want, res.Token, "user %d", user)
			}
		})
	}
	res, err := tryAnnounce(p, hash(2), sitePeer(1, 1, models.IPv4, false, 0, 0, t0), privSel(0, false))
	require.NoError(t, err)
	assert.False(t, res.Token, "user 1 has no token on torrent 2")
	for _, action := range []models.SiteAction{models.AddToken, models.RemoveToken} {
		err := p.UpdateSite(context.Background(), &models.SiteUpdate{Action: action, User: models.User{ID: 1}, Torrent: models.Torrent{InfoHash: hash(3)}})
		assert.ErrorIs(t, err, models.ErrTorrentNotFound, "action %d on an unknown torrent", action)
	}
}

func TestSiteWhitelist(t *testing.T) {
	peerID := func(s string) models.PeerID {
		var id models.PeerID
		copy(id[:], s)
		return id
	}
	qb := peerID("-qB4250-abcdefghijkl")
	tr := peerID("-TR2940-abcdefghijkl")
	bin := peerID("\xff\x00\x80binary-peer-id..")
	tests := []struct {
		name    string
		updates []models.SiteUpdate
		allowed map[models.PeerID]bool
	}{
		{name: "empty allows all", allowed: map[models.PeerID]bool{qb: true, tr: true, bin: true, {}: true}},
		{
			name:    "one prefix",
			updates: []models.SiteUpdate{{Action: models.AddWhitelist, Prefix: "-qB"}},
			allowed: map[models.PeerID]bool{qb: true, tr: false, bin: false},
		},
		{
			name:    "prefixes are case sensitive bytes",
			updates: []models.SiteUpdate{{Action: models.AddWhitelist, Prefix: "-qb"}},
			allowed: map[models.PeerID]bool{qb: false, tr: false},
		},
		{
			name:    "binary prefix",
			updates: []models.SiteUpdate{{Action: models.AddWhitelist, Prefix: "\xff\x00"}},
			allowed: map[models.PeerID]bool{qb: false, bin: true, peerID("\xff\x01"): false},
		},
		{
			name:    "whole peer ID as prefix",
			updates: []models.SiteUpdate{{Action: models.AddWhitelist, Prefix: string(tr[:])}},
			allowed: map[models.PeerID]bool{tr: true, peerID("-TR2940-abcdefghijkm"): false},
		},
		{
			name: "two prefixes",
			updates: []models.SiteUpdate{
				{Action: models.AddWhitelist, Prefix: "-qB4"},
				{Action: models.AddWhitelist, Prefix: "-TR"},
			},
			allowed: map[models.PeerID]bool{qb: true, tr: true, bin: false, peerID("-qB3"): false},
		},
		{
			name: "edit",
			updates: []models.SiteUpdate{
				{Action: models.AddWhitelist, Prefix: "-qB"},
				{Action: models.AddWhitelist, Prefix: "-DE"},
				{Action: models.EditWhitelist, Prefix: "-qB", NewPrefix: "-TR"},
			},
			allowed: map[models.PeerID]bool{qb: false, tr: true, peerID("-DE13F0-"): true},
		},
		{
			name: "edit of an absent prefix changes nothing",
			updates: []models.SiteUpdate{
				{Action: models.AddWhitelist, Prefix: "-qB"},
				{Action: models.EditWhitelist, Prefix: "-XX", NewPrefix: "-TR"},
			},
			allowed: map[models.PeerID]bool{qb: true, tr: false},
		},
		{
			name: "remove one",
			updates: []models.SiteUpdate{
				{Action: models.AddWhitelist, Prefix: "-qB"},
				{Action: models.AddWhitelist, Prefix: "-TR"},
				{Action: models.RemoveWhitelist, Prefix: "-qB"},
			},
			allowed: map[models.PeerID]bool{qb: false, tr: true},
		},
		{
			name: "removing the last one allows all again",
			updates: []models.SiteUpdate{
				{Action: models.AddWhitelist, Prefix: "-qB"},
				{Action: models.RemoveWhitelist, Prefix: "-qB"},
			},
			allowed: map[models.PeerID]bool{qb: true, tr: true, bin: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(1)
			for _, u := range tt.updates {
				siteUpdate(t, p, u)
			}
			for id, want := range tt.allowed {
				got, err := p.Whitelisted(context.Background(), id)
				require.NoError(t, err)
				assert.Equal(t, want, got, "peer ID %q", id[:])
			}
		})
	}
}

func TestReplaceSite(t *testing.T) {
	ctx := context.Background()
	keep, drop, fresh := hash(1), hash(2), hash(3)
	oldAlice := models.User{ID: 1, Passkey: "alice-old-passkey-0000000000000", CanLeech: true}
	bob := models.User{ID: 2, Passkey: "bob-passkey-00000000000000000000", CanLeech: true}
	carol := models.User{ID: 3, Passkey: "carol-passkey-000000000000000000", CanLeech: false}
	newAlice := models.User{ID: 1, Passkey: "alice-new-passkey-0000000000000", CanLeech: true}

	p := NewPool(8)
	siteUpdate(t, p, models.SiteUpdate{Action: models.AddUser, User: oldAlice})
	siteUpdate(t, p, models.SiteUpdate{Action: models.AddUser, User: bob})
	siteUpdate(t, p, models.SiteUpdate{Action: models.AddWhitelist, Prefix: "-qB"})
	addTorrent(t, p, 1, keep, models.Normal)
	addTorrent(t, p, 2, drop, models.Normal)
	siteUpdate(t, p, models.SiteUpdate{Action: models.AddToken, User: models.User{ID: 1}, Torrent: models.Torrent{InfoHash: keep}})
	// Peers: alice (1) and bob (2) on keep, alice on drop. Alice's peer 1 on keep has a session
	// newer than the site's baseline for it.
	for _, u := range []tracker.PeerUpdate{
		sitePeer(1, 1, models.IPv4, false, 500, 600, t0),
		sitePeer(2, 2, models.IPv6, true, 0, 0, t0),
		sitePeer(2, 2, models.IPv4, true, 0, 0, t0),
	} {
		_, err := tryAnnounce(p, keep, u, privSel(0, u.Seeder))
		require.NoError(t, err)
	}
	_, err := tryAnnounce(p, drop, sitePeer(1, 1, models.IPv4, true, 0, 0, t0), privSel(0, true))
	require.NoError(t, err)

	state := &models.SiteState{
		Users: []models.User{newAlice, bob, carol},
		Torrents: []models.Torrent{
			{ID: 1, InfoHash: keep, Freeleech: models.Free, Snatches: 99},
			{ID: 3, InfoHash: fresh, Snatches: 7},
		},
		Tokens:    []models.Token{{UserID: 3, TorrentID: 1}, {UserID: 2, TorrentID: 3}, {UserID: 1, TorrentID: 2}},
		Whitelist: []string{"-TR"},
		Baselines: []models.Baseline{
			// Carol's peer 3 on keep, seen before the restart.
			{UserID: 3, TorrentID: 1, PeerID: pid(3), Uploaded: 1000, Downloaded: 2000, Corrupt: 30,
				FirstSeen: t0.Add(-2 * time.Hour), LastSeen: t0.Add(-time.Hour), Announces: 12},
			// Older than what this process saw of alice's peer 1: ignored.
			{UserID: 1, TorrentID: 1, PeerID: pid(1), Uploaded: 1, Downloaded: 1, LastSeen: t0.Add(-time.Hour), Announces: 1},
			// Bob's peer 4 on the new torrent.
			{UserID: 2, TorrentID: 3, PeerID: pid(4), Uploaded: 40, Downloaded: 50, FirstSeen: t0.Add(-time.Minute), LastSeen: t0.Add(-time.Minute), Announces: 3},
			// A torrent that is not registered: ignored.
			{UserID: 1, TorrentID: 2, PeerID: pid(1), Uploaded: 9, LastSeen: t0},
		},
	}
	require.NoError(t, p.ReplaceSite(ctx, state))
	later := t0.Add(10 * time.Minute)

	t.Run("users replaced", func(t *testing.T) {
		for passkey, want := range map[string]*models.User{
			oldAlice.Passkey: nil, newAlice.Passkey: &newAlice, bob.Passkey: &bob, carol.Passkey: &carol,
		} {
			got, err := p.User(ctx, passkey)
			if want == nil {
				assert.ErrorIs(t, err, models.ErrPasskeyNotFound, "old passkey %q", passkey)
				continue
			}
			require.NoError(t, err)
			assert.Equal(t, *want, got)
		}
	})
	t.Run("whitelist replaced", func(t *testing.T) {
		for id, want := range map[models.PeerID]bool{pid(1): false, {'-', 'q', 'B'}: false, {'-', 'T', 'R', '2'}: true} {
			ok, err := p.Whitelisted(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, want, ok, "%q", id[:])
		}
	})
	t.Run("torrent no longer registered is dropped with its peers", func(t *testing.T) {
		assert.Equal(t, models.TorrentStats{InfoHash: drop}, scrapeCounts(t, p, drop))
		_, err := tryAnnounce(p, drop, sitePeer(1, 1, models.IPv4, true, 0, 0, later), privSel(0, true))
		assert.ErrorIs(t, err, models.ErrTorrentNotFound)
		leech, seed, err := p.UserPeers(ctx, 1)
		require.NoError(t, err)
		assert.Equal(t, [2]int{1, 0}, [2]int{leech, seed}, "alice keeps only her leecher on keep")
	})
	t.Run("torrent still registered keeps its peers and snatches, takes the new attributes", func(t *testing.T) {
		assert.Equal(t, models.TorrentStats{InfoHash: keep, Seeders: 2, Leechers: 1, Registered: true}, scrapeCounts(t, p, keep))
		assert.Equal(t, models.TorrentStats{InfoHash: fresh, Snatches: 7, Registered: true}, scrapeCounts(t, p, fresh))
	})

	tests := []struct {
		name      string
		ih        models.InfoHash
		u         tracker.PeerUpdate
		wantID    uint64
		wantFL    models.FreeleechType
		wantToken bool
		wantPrev  tracker.PrevPeer
	}{
		{
			name: "in-memory session is newer than the baseline", ih: keep,
			u:      sitePeer(1, 1, models.IPv4, false, 700, 800, later),
			wantID: 1, wantFL: models.Free, wantToken: false, // alice's token was not in the new state
			wantPrev: tracker.PrevPeer{Found: true, Uploaded: 500, Downloaded: 600, Time: t0, FirstSeen: t0, Announces: 1},
		},
		{
			name: "baseline becomes a session", ih: keep,
			u:      sitePeer(3, 3, models.IPv4, false, 1500, 2500, later),
			wantID: 1, wantFL: models.Free, wantToken: true,
			wantPrev: tracker.PrevPeer{Restored: true, Uploaded: 1000, Downloaded: 2000, Corrupt: 30,
				Time: t0.Add(-time.Hour), FirstSeen: t0.Add(-2 * time.Hour), Announces: 12},
		},
		{
			name: "baseline on a newly registered torrent", ih: fresh,
			u:      sitePeer(4, 2, models.IPv6, true, 40, 50, later),
			wantID: 3, wantToken: true,
			wantPrev: tracker.PrevPeer{Restored: true, Uploaded: 40, Downloaded: 50,
				Time: t0.Add(-time.Minute), FirstSeen: t0.Add(-time.Minute), Announces: 3},
		},
		{
			name: "baseline of another user is not this user's", ih: keep,
			u:      sitePeer(3, 2, models.IPv4, true, 1500, 2500, later),
			wantID: 1, wantFL: models.Free,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tryAnnounce(p, tt.ih, tt.u, privSel(0, tt.u.Seeder))
			require.NoError(t, err)
			assert.Equal(t, tt.wantID, res.TorrentID)
			assert.Equal(t, tt.wantFL, res.Freeleech)
			assert.Equal(t, tt.wantToken, res.Token)
			assertPrev(t, tt.wantPrev, res.Prev)
		})
	}

	t.Run("a second replace with the same baselines does not rewind sessions", func(t *testing.T) {
		require.NoError(t, p.ReplaceSite(ctx, state))
		res, err := tryAnnounce(p, keep, sitePeer(3, 3, models.IPv4, false, 1600, 2600, later.Add(time.Minute)), privSel(0, false))
		require.NoError(t, err)
		assertPrev(t, tracker.PrevPeer{Found: true, Uploaded: 1500, Downloaded: 2500, Time: later, FirstSeen: t0.Add(-2 * time.Hour), Announces: 13}, res.Prev)
	})
	checkInvariants(t, p)
}

func assertPrev(tb testing.TB, want, got tracker.PrevPeer) {
	tb.Helper()
	assert.Equal(tb, want.Found, got.Found, "Found")
	assert.Equal(tb, want.Restored, got.Restored, "Restored")
	assert.Equal(tb, want.Seeder, got.Seeder, "Seeder")
	assert.Equal(tb, want.Uploaded, got.Uploaded, "Uploaded")
	assert.Equal(tb, want.Downloaded, got.Downloaded, "Downloaded")
	assert.Equal(tb, want.Corrupt, got.Corrupt, "Corrupt")
	assert.Equal(tb, want.Announces, got.Announces, "Announces")
	if !want.Time.IsZero() {
		assert.True(tb, want.Time.Equal(got.Time), "Time %v, want %v", got.Time, want.Time)
	}
	if !want.FirstSeen.IsZero() {
		assert.True(tb, want.FirstSeen.Equal(got.FirstSeen), "FirstSeen %v, want %v", got.FirstSeen, want.FirstSeen)
	}
}

func TestSessionsSharedByFamilies(t *testing.T) {
	type step struct {
		n        int
		user     uint32
		fam      models.Family
		up, down int64
		want     tracker.PrevPeer
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "IPv4 then IPv6 of one peer ID and user share a session",
			steps: []step{
				{n: 1, user: 1, fam: models.IPv4, up: 100, down: 200},
				{n: 1, user: 1, fam: models.IPv6, up: 100, down: 200,
					want: tracker.PrevPeer{Restored: true, Uploaded: 100, Downloaded: 200, Announces: 1}},
				{n: 1, user: 1, fam: models.IPv4, up: 150, down: 260,
					want: tracker.PrevPeer{Found: true, Uploaded: 100, Downloaded: 200, Announces: 2}},
				{n: 1, user: 1, fam: models.IPv6, up: 150, down: 260,
					want: tracker.PrevPeer{Found: true, Uploaded: 150, Downloaded: 260, Announces: 3}},
			},
		},
		{
			name: "the same peer ID under two users is two sessions",
			steps: []step{
				{n: 1, user: 1, fam: models.IPv4, up: 100},
				{n: 1, user: 2, fam: models.IPv4, up: 7},
				{n: 1, user: 2, fam: models.IPv6, up: 8, want: tracker.PrevPeer{Restored: true, Uploaded: 7, Announces: 1}},
				{n: 1, user: 1, fam: models.IPv6, up: 110, want: tracker.PrevPeer{Restored: true, Uploaded: 100, Announces: 1}},
			},
		},
		{
			name: "two peer IDs of one user are two sessions",
			steps: []step{
				{n: 1, user: 1, fam: models.IPv4, up: 100},
				{n: 2, user: 1, fam: models.IPv4, up: 5},
				{n: 2, user: 1, fam: models.IPv6, up: 6, want: tracker.PrevPeer{Restored: true, Uploaded: 5, Announces: 1}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(4)
			ih := hash(1)
			addTorrent(t, p, 1, ih, models.Normal)
			for i, s := range tt.steps {
				res, err := tryAnnounce(p, ih, sitePeer(s.n, s.user, s.fam, false, s.up, s.down, t0.Add(time.Duration(i)*time.Minute)), privSel(0, false))
				require.NoError(t, err)
				assertPrev(t, s.want, res.Prev)
			}
			checkInvariants(t, p)
		})
	}
}

func TestSessionsSurviveReapAndStop(t *testing.T) {
	tests := []struct {
		name        string
		stop        bool // the peer stops instead of being reaped
		prune       bool
		pruneAt     time.Duration // Prune's baselinesBefore, after the last announce at t0
		wantRestore bool
	}{
		{name: "reaped", wantRestore: true},
		{name: "stopped", stop: true, wantRestore: true},
		{name: "reaped, prune before the last announce keeps the session", prune: true, pruneAt: -time.Second, wantRestore: true},
		{name: "reaped, prune at the last announce keeps the session", prune: true, wantRestore: true},
		{name: "reaped, prune after the last announce forgets it", prune: true, pruneAt: time.Second},
		{name: "stopped, pruned", stop: true, prune: true, pruneAt: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(4)
			ctx := context.Background()
			ih := hash(1)
			addTorrent(t, p, 9, ih, models.Normal)
			_, err := tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, 10, 20, t0.Add(-time.Minute)), privSel(0, false))
			require.NoError(t, err)
			_, err = tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, 100, 200, t0), privSel(0, false))
			require.NoError(t, err)
			announces := 2
			if tt.stop {
				u := sitePeer(1, 1, models.IPv4, false, 100, 200, t0)
				u.Remove = true
				res, err := tryAnnounce(p, ih, u, privSel(0, false))
				require.NoError(t, err)
				assert.True(t, res.Prev.Found)
				announces++
			} else {
				r, err := p.Reap(ctx, t0.Add(time.Second), true)
				require.NoError(t, err)
				assert.Equal(t, 1, r.Peers)
				assert.Equal(t, []models.TorrentStats{{InfoHash: ih, ID: 9, Registered: true}}, r.Changed)
			}
			assert.Equal(t, models.TorrentStats{InfoHash: ih, Registered: true}, scrapeCounts(t, p, ih), "the peer is gone, the torrent stays")
			if tt.prune {
				require.NoError(t, p.Prune(ctx, time.Time{}, t0.Add(tt.pruneAt)))
			}

			res, err := tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, 150, 260, t0.Add(time.Hour)), privSel(0, false))
			require.NoError(t, err)
			if !tt.wantRestore {
				assertPrev(t, tracker.PrevPeer{}, res.Prev)
				return
			}
			assertPrev(t, tracker.PrevPeer{Restored: true, Uploaded: 100, Downloaded: 200, Time: t0, FirstSeen: t0.Add(-time.Minute), Announces: announces}, res.Prev)
			// The session goes on from the new announce.
			res, err = tryAnnounce(p, ih, sitePeer(1, 1, models.IPv4, false, 160, 260, t0.Add(2*time.Hour)), privSel(0, false))
			require.NoError(t, err)
			assertPrev(t, tracker.PrevPeer{Found: true, Uploaded: 150, Downloaded: 260, Time: t0.Add(time.Hour), FirstSeen: t0.Add(-time.Minute), Announces: announces + 1}, res.Prev)
		})
	}
}

func TestPruneReasons(t *testing.T) {
	tests := []struct {
		name     string
		cutoff   time.Duration // after the deletion
		wantKept bool
	}{
		{name: "cutoff before the deletion keeps it", cutoff: -time.Minute, wantKept: true},
		{name: "cutoff after the deletion forgets it", cutoff: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(2)
			ctx := context.Background()
			siteUpdate(t, p, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: hash(1)}, Reason: "Dupe"})
			_, at, ok, err := p.DeletionReason(ctx, hash(1))
			require.NoError(t, err)
			require.True(t, ok)
			require.NoError(t, p.Prune(ctx, at.Add(tt.cutoff), time.Time{}))
			text, _, ok, err := p.DeletionReason(ctx, hash(1))
			require.NoError(t, err)
			assert.Equal(t, tt.wantKept, ok)
			if tt.wantKept {
				assert.Equal(t, "Dupe", text)
			}
		})
	}
}

func TestReapRegistered(t *testing.T) {
	for _, purge := range []bool{true, false} {
		t.Run(fmt.Sprintf("purgeEmpty=%v", purge), func(t *testing.T) {
			p := NewPool(8)
			ctx := context.Background()
			emptied, partly, untouched, public := hash(1), hash(2), hash(3), hash(4)
			addTorrent(t, p, 11, emptied, models.Normal)
			addTorrent(t, p, 12, partly, models.Normal)
			addTorrent(t, p, 13, untouched, models.Normal)
			old, fresh := t0.Add(-time.Hour), t0
			for _, a := range []struct {
				ih models.InfoHash
				u  tracker.PeerUpdate
			}{
				{emptied, sitePeer(1, 1, models.IPv4, true, 0, 0, old)},
				{emptied, sitePeer(2, 2, models.IPv6, false, 0, 0, old)},
				{partly, sitePeer(1, 1, models.IPv4, true, 0, 0, old)},
				{partly, sitePeer(2, 2, models.IPv4, false, 0, 0, fresh)},
				{partly, sitePeer(3, 3, models.IPv4, true, 0, 0, fresh)},
				{untouched, sitePeer(1, 1, models.IPv4, false, 0, 0, fresh)},
			} {
				_, err := tryAnnounce(p, a.ih, a.u, privSel(0, a.u.Seeder))
				require.NoError(t, err)
			}
			// An unregistered (public) torrent in the same pool.
			u := peer(5, models.IPv4, false)
			u.Time = old
			announce(t, p, public, u, all(0))

			r, err := p.Reap(ctx, t0.Add(-time.Minute), purge)
			require.NoError(t, err)
			assert.Equal(t, 4, r.Peers)
			assert.Equal(t, map[bool]int{true: 1, false: 0}[purge], r.Torrents, "only the public torrent may be purged")
			assert.ElementsMatch(t, []models.TorrentStats{
				{InfoHash: emptied, ID: 11, Registered: true},
				{InfoHash: partly, ID: 12, Seeders: 1, Leechers: 1, Registered: true},
			}, r.Changed)

			assert.Equal(t, models.TorrentStats{InfoHash: emptied, Registered: true}, scrapeCounts(t, p, emptied))
			assert.Equal(t, models.TorrentStats{InfoHash: untouched, Leechers: 1, Registered: true}, scrapeCounts(t, p, untouched))
			assert.Equal(t, !purge, scrapeCounts(t, p, public).Registered)
			// The emptied torrent is still announceable.
			_, err = tryAnnounce(p, emptied, sitePeer(1, 1, models.IPv4, true, 0, 0, t0), privSel(0, true))
			require.NoError(t, err)

			r, err = p.Reap(ctx, t0.Add(-time.Minute), purge)
			require.NoError(t, err)
			assert.Empty(t, r.Changed, "nothing more to report")
			checkInvariants(t, p)
		})
	}
}

func TestHiddenNeverHandedOut(t *testing.T) {
	tests := []struct {
		name      string
		hidden    []int // peers stored hidden (all leechers, user = peer number)
		visible   []int // visible leechers
		seeders   []int
		requester int
		seeder    bool
		want      []int
	}{
		{name: "leecher sees visible leechers and seeders", hidden: []int{1, 2}, visible: []int{3}, seeders: []int{4}, requester: 10, want: []int{3, 4}},
		{name: "seeder sees visible leechers only", hidden: []int{1, 2}, visible: []int{3}, seeders: []int{4}, requester: 10, seeder: true, want: []int{3}},
		{name: "only hidden peers", hidden: []int{1, 2, 3}, requester: 10},
		{name: "a hidden leecher sees nothing of itself", hidden: []int{1}, seeders: []int{4}, requester: 1, want: []int{4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(2)
			ih := hash(1)
			addTorrent(t, p, 1, ih, models.Normal)
			for _, n := range tt.hidden {
				u := sitePeer(n, uint32(n), models.Family(n%2), false, 0, 0, t0)
				u.Hidden = true
				_, err := tryAnnounce(p, ih, u, privSel(0, false))
				require.NoError(t, err)
			}
			for _, n := range tt.visible {
				_, err := tryAnnounce(p, ih, sitePeer(n, uint32(n), models.Family(n%2), false, 0, 0, t0), privSel(0, false))
				require.NoError(t, err)
			}
			for _, n := range tt.seeders {
				_, err := tryAnnounce(p, ih, sitePeer(n, uint32(n), models.Family(n%2), true, 0, 0, t0), privSel(0, true))
				require.NoError(t, err)
			}
			st := scrapeCounts(t, p, ih)
			assert.Equal(t, len(tt.hidden)+len(tt.visible), st.Leechers, "hidden peers are counted")

			u := sitePeer(tt.requester, uint32(tt.requester), models.Family(tt.requester%2), tt.seeder, 0, 0, t0)
			u.Hidden = tt.requester <= len(tt.hidden) && tt.requester > 0
			u.Remove = tt.requester >= 10 // outsiders look without joining
			for round := 0; round < 20; round++ {
				res, err := tryAnnounce(p, ih, u, privSel(200, tt.seeder))
				require.NoError(t, err)
				var got []int
				for k := range users(t, p, ih, &res) {
					got = append(got, int(k.user))
				}
				assert.ElementsMatch(t, tt.want, got)
			}
		})
	}

	t.Run("a hidden peer that announces visible is handed out again", func(t *testing.T) {
		p := NewPool(2)
		ih := hash(1)
		addTorrent(t, p, 1, ih, models.Normal)
		u := sitePeer(1, 1, models.IPv4, false, 0, 0, t0)
		u.Hidden = true
		_, err := tryAnnounce(p, ih, u, privSel(0, false))
		require.NoError(t, err)
		look := sitePeer(2, 2, models.IPv4, true, 0, 0, t0)
		res, err := tryAnnounce(p, ih, look, privSel(50, true))
		require.NoError(t, err)
		assert.Empty(t, res.IPv4Peers)
		u.Hidden = false
		_, err = tryAnnounce(p, ih, u, privSel(0, false))
		require.NoError(t, err)
		res, err = tryAnnounce(p, ih, look, privSel(50, true))
		require.NoError(t, err)
		assert.Equal(t, []models.Peer{{AddrPort: v4(1)}}, res.IPv4Peers)
	})
}

func TestSkipOwnUser(t *testing.T) {
	// Swarm: user 1 owns peers 1 (both families) and 2, user 2 owns peer 3, user 3 owns peer 4
	// (a seeder).
	type pe struct {
		n      int
		user   uint32
		fam    models.Family
		seeder bool
	}
	swarm := []pe{{1, 1, models.IPv4, false}, {1, 1, models.IPv6, false}, {2, 1, models.IPv4, false}, {3, 2, models.IPv6, false}, {4, 3, models.IPv4, true}}
	tests := []struct {
		name string
		req  pe
		skip bool
		want map[userKey]bool
	}{
		{
			name: "user 1's peer 1 sees the other users' peers only", req: pe{1, 1, models.IPv4, false}, skip: true,
			want: map[userKey]bool{{pid(3), models.IPv6, 2}: true, {pid(4), models.IPv4, 3}: true},
		},
		{
			name: "user 1's new peer 5 neither", req: pe{5, 1, models.IPv6, false}, skip: true,
			want: map[userKey]bool{{pid(3), models.IPv6, 2}: true, {pid(4), models.IPv4, 3}: true},
		},
		{
			name: "user 2 sees user 1's peers", req: pe{3, 2, models.IPv6, false}, skip: true,
			want: map[userKey]bool{{pid(1), models.IPv4, 1}: true, {pid(1), models.IPv6, 1}: true, {pid(2), models.IPv4, 1}: true, {pid(4), models.IPv4, 3}: true},
		},
		{
			name: "a seeder of user 3 sees all leechers", req: pe{4, 3, models.IPv4, true}, skip: true,
			want: map[userKey]bool{{pid(1), models.IPv4, 1}: true, {pid(1), models.IPv6, 1}: true, {pid(2), models.IPv4, 1}: true, {pid(3), models.IPv6, 2}: true},
		},
		{
			name: "without SkipOwnUser only its own peer ID is skipped", req: pe{1, 1, models.IPv4, false}, skip: false,
			want: map[userKey]bool{{pid(2), models.IPv4, 1}: true, {pid(3), models.IPv6, 2}: true, {pid(4), models.IPv4, 3}: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool(2)
			ih := hash(1)
			addTorrent(t, p, 1, ih, models.Normal)
			for _, s := range swarm {
				_, err := tryAnnounce(p, ih, sitePeer(s.n, s.user, s.fam, s.seeder, 0, 0, t0), privSel(0, s.seeder))
				require.NoError(t, err)
			}
			sel := privSel(200, tt.req.seeder)
			sel.SkipOwnUser = tt.skip
			res, err := tryAnnounce(p, ih, sitePeer(tt.req.n, tt.req.user, tt.req.fam, tt.req.seeder, 0, 0, t0), sel)
			require.NoError(t, err)
			assert.Equal(t, tt.want, users(t, p, ih, &res))
		})
	}
}

func TestUserPeers(t *testing.T) {
	p := NewPool(8)
	ctx := context.Background()
	for tn := 1; tn <= 3; tn++ {
		addTorrent(t, p, uint64(tn), hash(tn), models.Normal)
	}
	type pe struct {
		tn     int
		n      int
		user   uint32
		fam    models.Family
		seeder bool
		hidden bool
	}
	for _, s := range []pe{
		{1, 1, 1, models.IPv4, false, false},
		{1, 1, 1, models.IPv6, false, false}, // the other family is another entry
		{2, 2, 1, models.IPv4, true, false},
		{3, 3, 1, models.IPv4, false, true}, // hidden still counts
		{1, 4, 2, models.IPv4, true, false},
		{2, 4, 2, models.IPv4, true, false},
	} {
		u := sitePeer(s.n, s.user, s.fam, s.seeder, 0, 0, t0)
		u.Hidden = s.hidden
		_, err := tryAnnounce(p, hash(s.tn), u, privSel(0, s.seeder))
		require.NoError(t, err)
	}
	tests := []struct {
		user          uint64
		leech, seeder int
	}{
		{user: 1, leech: 3, seeder: 1},
		{user: 2, seeder: 2},
		{user: 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("user %d", tt.user), func(t *testing.T) {
			l, s, err := p.UserPeers(ctx, tt.user)
			require.NoError(t, err)
			assert.Equal(t, tt.leech, l, "leeching")
			assert.Equal(t, tt.seeder, s, "seeding")
		})
	}
	// Deleting a torrent takes its peers out of the counts.
	siteUpdate(t, p, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: hash(2)}})
	l, s, err := p.UserPeers(ctx, 2)
	require.NoError(t, err)
	assert.Equal(t, [2]int{0, 1}, [2]int{l, s})

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err = p.UserPeers(cctx, 1)
	assert.ErrorIs(t, err, context.Canceled)
}

// TestSiteConcurrent runs announces on registered torrents from several goroutines while site
// updates, reloads, reaps and prunes run beside them; -race checks the locking, and the swarms
// must stay consistent.
func TestSiteConcurrent(t *testing.T) {
	const (
		workers  = 6
		ops      = 1500
		torrents = 8
	)
	p := NewPool(4)
	ctx := context.Background()
	state := func(gen int) *models.SiteState {
		st := &models.SiteState{Whitelist: []string{"-TS"}}
		for u := 1; u <= workers; u++ {
			st.Users = append(st.Users, models.User{ID: uint64(u), Passkey: fmt.Sprintf("passkey-%02d", u), CanLeech: true})
		}
		for tn := 0; tn < torrents; tn++ {
			st.Torrents = append(st.Torrents, models.Torrent{ID: uint64(tn + 1), InfoHash: hash(tn), Freeleech: models.FreeleechType(gen % 3)})
			st.Tokens = append(st.Tokens, models.Token{UserID: uint64(gen%workers + 1), TorrentID: uint64(tn + 1)})
			st.Baselines = append(st.Baselines, models.Baseline{UserID: uint64(gen%workers + 1), TorrentID: uint64(tn + 1), PeerID: pid(gen), LastSeen: t0})
		}
		return st
	}
	require.NoError(t, p.ReplaceSite(ctx, state(0)))

	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		missing atomic.Int64
	)
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for w := 1; w <= workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < ops; i++ {
				ih := hash((w + i) % torrents)
				u := sitePeer(w*100+i%5, uint32(w), models.Family(i%2), i%3 == 0, int64(i), int64(i), t0.Add(time.Duration(i)*time.Second))
				u.Remove = i%11 == 0
				u.Hidden = i%7 == 0 && !u.Seeder
				sel := privSel(30, u.Seeder)
				res, err := tryAnnounce(p, ih, u, sel)
				switch {
				case errors.Is(err, models.ErrTorrentNotFound):
					// The editor deletes and re-adds torrent 0.
					if (w+i)%torrents != 0 {
						report(fmt.Errorf("worker %d: torrent %d not found", w, (w+i)%torrents))
					}
					continue
				case err != nil:
					report(err)
					return
				}
				for _, pr := range append(res.IPv4Peers, res.IPv6Peers...) {
					if pr.ID == u.Key.ID {
						report(fmt.Errorf("worker %d handed itself", w))
					}
				}
				if _, err := p.User(ctx, fmt.Sprintf("passkey-%02d", w)); err != nil {
					missing.Add(1)
				}
			}
		}(w)
	}
	var side sync.WaitGroup
	side.Add(1)
	go func() { // the site: updates and reloads
		defer side.Done()
		for gen := 1; !stop.Load(); gen++ {
			var err error
			switch gen % 6 {
			case 0:
				err = p.ReplaceSite(ctx, state(gen))
			case 1:
				err = p.UpdateSite(ctx, &models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: hash(0)}, Reason: "Dupe"})
			case 2:
				err = p.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddTorrent, Torrent: models.Torrent{ID: 1, InfoHash: hash(0)}})
			case 3:
				err = p.UpdateSite(ctx, &models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: hash(gen % torrents), Freeleech: models.Free}})
				if errors.Is(err, models.ErrTorrentNotFound) {
					err = nil
				}
			case 4:
				err = p.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddToken, User: models.User{ID: uint64(gen%workers + 1)}, Torrent: models.Torrent{InfoHash: hash(1 + gen%(torrents-1))}})
				if err == nil {
					err = p.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddWhitelist, Prefix: "-XX"})
				}
			case 5:
				err = p.UpdateSite(ctx, &models.SiteUpdate{Action: models.UpdateUser, User: models.User{Passkey: fmt.Sprintf("passkey-%02d", gen%workers+1), CanLeech: gen%2 == 0}})
			}
			if err != nil {
				report(fmt.Errorf("site gen %d: %w", gen, err))
			}
		}
	}()
	side.Add(1)
	go func() { // the reaper and a report
		defer side.Done()
		for i := 0; !stop.Load(); i++ {
			if _, err := p.Reap(ctx, t0.Add(time.Duration(i)*time.Second), true); err != nil {
				report(err)
			}
			if err := p.Prune(ctx, t0, t0.Add(time.Duration(i)*time.Second)); err != nil {
				report(err)
			}
			if _, _, err := p.UserPeers(ctx, uint64(i%workers+1)); err != nil {
				report(err)
			}
			if _, err := p.Whitelisted(ctx, pid(i)); err != nil {
				report(err)
			}
		}
	}()
	wg.Wait()
	stop.Store(true)
	side.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Zero(t, missing.Load(), "a user present before and after every reload was missing during one")
	checkInvariants(t, p)
	for tn := 0; tn < torrents; tn++ {
		assert.True(t, scrapeCounts(t, p, hash(tn)).Registered || tn == 0, "torrent %d", tn)
	}
}

// scrapeCounts scrapes ih with the site ID left out, for tests about counts; the site ID is
// checked on its own (TestSiteAddTorrent).
func scrapeCounts(t *testing.T, p *Pool, ih models.InfoHash) models.TorrentStats {
	t.Helper()
	st := scrape(t, p, ih)
	st.ID = 0
	return st
}
