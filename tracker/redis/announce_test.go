package redis

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/tracker/trackertest"
)

// reply builds an announce script reply as announceLua does.
func reply(h [13]int64, prev, siteID, session string, members ...string) string {
	var b []byte
	for _, n := range h {
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	for _, s := range []string{prev, siteID, session} {
		b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	}
	b = append(b, prev+siteID+session...)
	for _, m := range members {
		b = append(b, m...)
	}
	return string(b)
}

// packedMember returns the stored member of u, as the script stores it.
func packedMember(u *tracker.PeerUpdate) string {
	c := new(announceCall)
	c.build(&Pool{prefix: "chihaya:"}, models.InfoHash{}, u, &tracker.Selection{})
	return c.strs[nTorrentKeys+argMember]
}

func TestBuildLayout(t *testing.T) {
	now := time.Unix(1700000000, 0)
	u4 := tracker.PeerUpdate{
		Key:      models.PeerKey{ID: trackertest.PID(7), Family: models.IPv4, User: 0x01020304},
		AddrPort: netip.MustParseAddrPort("10.1.2.3:6881"), Seeder: true, Hidden: true,
		Uploaded: 5, Downloaded: 6, Corrupt: 7, Time: now,
	}
	u6 := u4
	u6.Key.Family = models.IPv6
	u6.AddrPort = netip.MustParseAddrPort("[2001:db8::1]:443")
	u6.Seeder, u6.Hidden = false, false

	pool := &Pool{prefix: "chihaya:", index: "chihaya:torrents", counts: "chihaya:counts", sessions: "chihaya:sessions"}
	for _, tt := range []struct {
		name   string
		u      tracker.PeerUpdate
		suffix string
		flag   byte
		twin   models.Family
	}{
		{"ipv4", u4, "1\x1a\xe1\x0a\x01\x02\x03", '1', models.IPv6},
		{"ipv6", u6, "0\x01\xbb\x20\x01\x0d\xb8" + string(make([]byte, 11)) + "\x01", '0', models.IPv4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := new(announceCall)
			args := c.build(pool, trackertest.Hash(1), &tt.u, &tracker.Selection{Want: 50, IPv4: true})
			require.Len(t, args, 3+nAllKeys+announceArgs)
			arg := func(i int) string { return c.strs[nTorrentKeys+i] }
			key := string(tt.u.Key.ID[:]) + string([]byte{byte(tt.u.Key.Family), 1, 2, 3, 4})
			assert.Equal(t, key, arg(argKey))
			assert.Equal(t, key+tt.suffix, arg(argMember))
			assert.Equal(t, tt.suffix+string(tt.flag)+"1700000000:5:6", arg(argValue))
			assert.Equal(t, "0"+string(tt.flag)+"000100"+"1"+string(tt.suffix[0])+"0", arg(argFlags))
			assert.Equal(t, "50", arg(argWant))
			assert.Equal(t, "5:6:7", arg(argCounters))
			assert.Equal(t, strconv.Itoa(0x01020304), arg(argUser))
			assert.Equal(t, "-1", arg(argPreferBits))
			twin := []byte(key)
			twin[20] = byte(tt.twin)
			assert.Equal(t, string(twin), arg(argTwin))
			for i := range nTorrentKeys {
				assert.Equal(t, pool.torrentKeys(trackertest.Hash(1))[i], *args[3+i].(*string))
			}
		})
	}
}

func TestParseAnnounce(t *testing.T) {
	p4 := tracker.PeerUpdate{Key: models.PeerKey{ID: trackertest.PID(1)}, AddrPort: netip.MustParseAddrPort("10.0.0.1:1000")}
	p6 := tracker.PeerUpdate{Key: models.PeerKey{ID: trackertest.PID(2), Family: models.IPv6}, AddrPort: netip.MustParseAddrPort("[2001:db8::2]:2000")}
	m4, m6 := packedMember(&p4), packedMember(&p6)
	head := [13]int64{1, 3, 4, 9, int64(models.Free), 1, 1, 1, 0, 0, 1, 0, 1700000000}

	var res tracker.AnnounceResult
	g := global{index: indexKeep, sessionAt: -1}
	require.NoError(t, parseAnnounce(reply(head, "01699999990:10:20", "42", "1:2:3:1600000000:1699999990:8", m4, m6, m4), &res, &g))
	assert.Equal(t, tracker.AnnounceResult{
		Prev: tracker.PrevPeer{
			Found: true, Uploaded: 1, Downloaded: 2, Corrupt: 3, Time: time.Unix(1699999990, 0),
			FirstSeen: time.Unix(1600000000, 0), Announces: 8,
		},
		Snatched: true, TorrentID: 42, Freeleech: models.Free, Token: true,
		Seeders: 3, Leechers: 4, Snatches: 9,
		IPv4Peers: []models.Peer{{ID: p4.Key.ID, AddrPort: p4.AddrPort}, {ID: p4.Key.ID, AddrPort: p4.AddrPort}},
		IPv6Peers: []models.Peer{{ID: p6.Key.ID, AddrPort: p6.AddrPort}},
	}, res)
	assert.Equal(t, global{index: 1700000000, indexLT: true, sessionAt: 0, counts: [5]int64{1, 0, 0, 1, 0}}, g)

	// A public torrent: no site ID, no session; the previous entry alone.
	res = tracker.AnnounceResult{}
	g = global{index: indexKeep, sessionAt: -1}
	require.NoError(t, parseAnnounce(reply([13]int64{12: -1}, "11699999990:10:20", "", ""), &res, &g))
	assert.Equal(t, tracker.PrevPeer{Found: true, Seeder: true, Uploaded: 10, Downloaded: 20, Time: time.Unix(1699999990, 0)}, res.Prev)
	assert.False(t, g.changes())

	for _, tt := range []struct {
		name, reply string
	}{
		{"empty", ""},
		{"short header", reply(head, "", "", "")[:100]},
		{"string past the end", reply(head, "01:2:3", "", "")[:announceHeader+3]},
		{"truncated peer", reply(head, "", "", "", m6[:30])},
		{"bad family", reply(head, "", "", "", m4[:20]+"\x07"+m4[21:])},
		{"bad previous value", reply(head, "1x:1:2", "", "")},
		{"short previous value", reply(head, "1", "", "")},
		{"bad session", reply(head, "", "", "1:2:3")},
		{"bad site ID", reply(head, "", "-1", "")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var res tracker.AnnounceResult
			g := global{index: indexKeep, sessionAt: -1}
			assert.Error(t, parseAnnounce(tt.reply, &res, &g))
		})
	}
}

// TestParseAnnounceAllocs checks that reading a reply into buffers of enough capacity does not
// allocate.
func TestParseAnnounceAllocs(t *testing.T) {
	var members []string
	for i := range 50 {
		u := tracker.PeerUpdate{Key: models.PeerKey{ID: trackertest.PID(i), Family: models.Family(i % 2)}, AddrPort: netip.MustParseAddrPort("10.0.0.1:1000")}
		if u.Key.Family == models.IPv6 {
			u.AddrPort = netip.MustParseAddrPort("[2001:db8::2]:2000")
		}
		members = append(members, packedMember(&u))
	}
	r := reply([13]int64{0, 10, 40, 3, 12: -1}, "01699999990:10:20", "", "", members...)
	res := tracker.AnnounceResult{IPv4Peers: make([]models.Peer, 0, 50), IPv6Peers: make([]models.Peer, 0, 50)}
	allocs := testing.AllocsPerRun(100, func() {
		res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
		g := global{index: indexKeep, sessionAt: -1}
		if err := parseAnnounce(r, &res, &g); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
	assert.Len(t, res.IPv4Peers, 25)
	assert.Len(t, res.IPv6Peers, 25)
}

func FuzzParseAnnounce(f *testing.F) {
	u := tracker.PeerUpdate{Key: models.PeerKey{ID: trackertest.PID(1)}, AddrPort: netip.MustParseAddrPort("10.0.0.1:1000")}
	f.Add(reply([13]int64{12: -1}, "", "", "", packedMember(&u)))
	f.Add(reply([13]int64{1, 2, 3}, "01:2:3", "7", "1:2:3:4:5:6"))
	f.Add("N")
	f.Fuzz(func(t *testing.T, r string) {
		var res tracker.AnnounceResult
		g := global{index: indexKeep, sessionAt: -1}
		if parseAnnounce(r, &res, &g) == nil {
			if n := len(res.IPv4Peers)*member4Len + len(res.IPv6Peers)*member6Len; n > len(r) {
				t.Fatalf("%d peers from %d bytes", len(res.IPv4Peers)+len(res.IPv6Peers), len(r))
			}
		}
	})
}

// TestHiddenCount checks the count of hidden entries that lets an announce skip looking into
// members: it follows entries that become hidden or visible, stop and are reaped, and a hidden
// peer is never handed out, whatever the count says about the others.
func TestHiddenCount(t *testing.T) {
	pool := openTest(t).(*Pool)
	c, err := pool.Get()
	require.NoError(t, err)
	ctx := context.Background()
	ih := trackertest.Hash(3)
	now := time.Unix(1700000000, 0)
	peer := func(i int, hidden bool, at time.Time) *tracker.PeerUpdate {
		return &tracker.PeerUpdate{
			Key:      models.PeerKey{ID: trackertest.PID(i)},
			AddrPort: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 6881),
			Hidden:   hidden, Create: true, Time: at,
		}
	}
	handed := func(requester int) []models.PeerID {
		t.Helper()
		res := tracker.AnnounceResult{}
		require.NoError(t, c.Announce(ctx, ih, peer(requester, false, now), &tracker.Selection{Want: 50, IPv4: true, IPv6: true}, &res))
		var ids []models.PeerID
		for _, p := range res.IPv4Peers {
			ids = append(ids, p.ID)
		}
		return ids
	}
	hiddenCount := func() int {
		t.Helper()
		n, err := pool.client.HGet(ctx, pool.torrentKeys(ih)[keyTorrent], "h").Int()
		if err != nil {
			return 0
		}
		return n
	}
	announce := func(u *tracker.PeerUpdate) {
		t.Helper()
		var res tracker.AnnounceResult
		require.NoError(t, c.Announce(ctx, ih, u, &tracker.Selection{}, &res))
	}

	announce(peer(1, true, now.Add(-time.Hour))) // hidden, and old
	announce(peer(2, false, now))
	assert.Equal(t, 1, hiddenCount())
	assert.ElementsMatch(t, []models.PeerID{trackertest.PID(2)}, handed(3))

	announce(peer(1, true, now.Add(-time.Hour))) // again: no change
	assert.Equal(t, 1, hiddenCount())
	announce(peer(1, false, now.Add(-time.Hour))) // visible
	assert.Equal(t, 0, hiddenCount())
	assert.ElementsMatch(t, []models.PeerID{trackertest.PID(1), trackertest.PID(2)}, handed(3))
	announce(peer(1, true, now.Add(-time.Hour))) // hidden again
	assert.Equal(t, 1, hiddenCount())

	stop := peer(2, true, now)
	announce(stop)
	stop.Remove = true
	announce(stop)
	assert.Equal(t, 1, hiddenCount(), "a hidden peer that stops")

	r, err := c.Reap(ctx, now.Add(-time.Minute), false)
	require.NoError(t, err)
	assert.Equal(t, 1, r.Peers)
	assert.Equal(t, 0, hiddenCount(), "the hidden peer reaped")
	assert.ElementsMatch(t, []models.PeerID{trackertest.PID(3)}, handed(4))
}
