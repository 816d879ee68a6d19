package tracker_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

var t0 = time.Unix(1_700_000_000, 0)

// recWriter keeps a deep copy of every response it is given.
type recWriter struct {
	resps []models.AnnounceResponse
	err   error
}

func (w *recWriter) WriteAnnounce(r *models.AnnounceResponse) error {
	c := *r
	c.IPv4Peers = slices.Clone(r.IPv4Peers)
	c.IPv6Peers = slices.Clone(r.IPv6Peers)
	w.resps = append(w.resps, c)
	return w.err
}

func (w *recWriter) last(tb testing.TB) models.AnnounceResponse {
	tb.Helper()
	require.NotEmpty(tb, w.resps, "no response written")
	return w.resps[len(w.resps)-1]
}

type scrapeWriter struct{ files []models.TorrentStats }

func (w *scrapeWriter) WriteScrape(r *models.ScrapeResponse) error {
	w.files = slices.Clone(r.Files)
	return nil
}

// recBackend keeps a copy of every delta: the core reuses the one it passes.
type recBackend struct {
	mu     sync.Mutex
	deltas []models.AnnounceDelta
	err    error
}

func (b *recBackend) RecordAnnounce(_ context.Context, d *models.AnnounceDelta) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deltas = append(b.deltas, *d)
	return b.err
}

func (b *recBackend) last(tb testing.TB) models.AnnounceDelta {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	require.NotEmpty(tb, b.deltas, "no delta recorded")
	return b.deltas[len(b.deltas)-1]
}

func (b *recBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.deltas)
}

type env struct {
	tr  *tracker.Tracker
	be  *recBackend
	now time.Time
	// ids maps the endpoints announced to their peer IDs: the memory driver hands out peers
	// without IDs (it keeps a hash), and idOf names them again.
	ids map[netip.AddrPort]models.PeerID
}

// newEnv builds a tracker on a fresh memory pool with config.Default() changed by mutate, and a
// clock that tests move by setting e.now.
func newEnv(tb testing.TB, mutate func(*config.Config)) *env {
	tb.Helper()
	cfg := config.Default()
	if mutate != nil {
		mutate(&cfg)
	}
	require.NoError(tb, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(tb, err)
	tb.Cleanup(func() { pool.Close() })
	e := &env{be: &recBackend{}, now: t0, ids: make(map[netip.AddrPort]models.PeerID)}
	e.tr, err = tracker.New(&cfg, pool, e.be, nil)
	require.NoError(tb, err)
	e.tr.Now = func() time.Time { return e.now }
	return e
}

func (e *env) announce(tb testing.TB, a *models.Announce) models.AnnounceResponse {
	tb.Helper()
	var w recWriter
	require.NoError(tb, e.tr.HandleAnnounce(context.Background(), a, &w))
	require.Len(tb, w.resps, 1)
	if e.ids == nil {
		e.ids = make(map[netip.AddrPort]models.PeerID)
	}
	for _, ep := range []netip.AddrPort{a.Endpoint, a.Other} {
		if ep.IsValid() {
			e.ids[netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port())] = a.PeerID
		}
	}
	return w.resps[0]
}

// idOf returns the peer ID that announced p's endpoint.
func (e *env) idOf(tb testing.TB, p models.Peer) models.PeerID {
	tb.Helper()
	id, ok := e.ids[p.AddrPort]
	require.True(tb, ok, "handed-out %v was never announced", p.AddrPort)
	return id
}

func (e *env) scrape(tb testing.TB, hashes ...models.InfoHash) []models.TorrentStats {
	tb.Helper()
	var w scrapeWriter
	require.NoError(tb, e.tr.HandleScrape(context.Background(), &models.Scrape{InfoHashes: hashes}, &w))
	return w.files
}

func hash(n int) models.InfoHash {
	var h models.InfoHash
	binary.BigEndian.PutUint32(h[:4], uint32(n)*2654435761)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
	return h
}

func pid(s string) models.PeerID {
	var id models.PeerID
	copy(id[:], s)
	return id
}

func numPid(n int) models.PeerID { return pid(fmt.Sprintf("-qB4250-%012d", n)) }

func ipv4(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 6881)
}

// leecher returns a regular announce of a leecher with left bytes still to download.
func leecher(ih models.InfoHash, id models.PeerID, ep string) *models.Announce {
	ap := netip.MustParseAddrPort(ep)
	return &models.Announce{
		InfoHash: ih,
		PeerID:   id,
		Endpoint: ap,
		Remote:   ap.Addr(),
		Left:     100,
		NumWant:  -1,
		Compact:  true,
	}
}

func TestAnnounceStateMachine(t *testing.T) {
	type step struct {
		peer          string // "A" or "B"
		event         models.Event
		left, up, dn  int64
		complete      int
		incomplete    int
		downloaded    int
		peers         int
		created       bool
		snatched      bool
		removed       bool
		dUp, dDown    int64
		advanceMinute bool
	}
	const (
		A = "A"
		B = "B"
	)
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "started, none, completed, none, stopped, stopped",
			steps: []step{
				{peer: A, event: models.Started, left: 100, incomplete: 1, created: true},
				{peer: A, event: models.None, left: 60, up: 5, dn: 40, incomplete: 1, dUp: 5, dDown: 40},
				{peer: A, event: models.Completed, left: 0, up: 10, dn: 100, complete: 1, downloaded: 1, snatched: true, dUp: 5, dDown: 60},
				{peer: A, event: models.None, left: 0, up: 30, dn: 100, complete: 1, downloaded: 1, dUp: 20},
				{peer: A, event: models.Stopped, left: 0, up: 35, dn: 100, downloaded: 1, removed: true, dUp: 5},
				// A second stop finds nothing: no credit, nothing created, and the peer is
				// reported removed (its row inactive) all the same.
				{peer: A, event: models.Stopped, left: 0, up: 40, dn: 100, downloaded: 1, removed: true},
			},
		},
		{
			name: "first announce without started sets the baseline",
			steps: []step{
				{peer: A, event: models.None, left: 50, up: 1000, dn: 2000, incomplete: 1, created: true},
				{peer: A, event: models.None, left: 40, up: 1500, dn: 2600, incomplete: 1, dUp: 500, dDown: 600},
			},
		},
		{
			name: "started on a known peer resets the baseline",
			steps: []step{
				{peer: A, event: models.Started, left: 50, up: 100, dn: 100, incomplete: 1, created: true},
				{peer: A, event: models.None, left: 50, up: 150, dn: 120, incomplete: 1, dUp: 50, dDown: 20},
				{peer: A, event: models.Started, left: 50, up: 400, dn: 500, incomplete: 1},
				{peer: A, event: models.None, left: 50, up: 450, dn: 510, incomplete: 1, dUp: 50, dDown: 10},
			},
		},
		{
			name: "counters going down set a new baseline",
			steps: []step{
				{peer: A, event: models.Started, left: 50, up: 100, dn: 100, incomplete: 1, created: true},
				{peer: A, event: models.None, left: 50, up: 50, dn: 200, incomplete: 1},
				{peer: A, event: models.None, left: 50, up: 80, dn: 250, incomplete: 1, dUp: 30, dDown: 50},
				{peer: A, event: models.None, left: 50, up: 90, dn: 10, incomplete: 1},
				{peer: A, event: models.None, left: 50, up: 90, dn: 15, incomplete: 1, dDown: 5},
			},
		},
		{
			name: "stop credits the transfer since the last announce",
			steps: []step{
				{peer: A, event: models.Started, left: 50, incomplete: 1, created: true},
				{peer: A, event: models.Stopped, left: 20, up: 7, dn: 30, removed: true, dUp: 7, dDown: 30},
			},
		},
		{
			name: "completed twice counts one snatch",
			steps: []step{
				{peer: A, event: models.Started, left: 10, incomplete: 1, created: true},
				{peer: A, event: models.Completed, left: 0, dn: 10, complete: 1, downloaded: 1, snatched: true, dDown: 10},
				{peer: A, event: models.Completed, left: 0, dn: 10, complete: 1, downloaded: 1},
			},
		},
		{
			name: "seeder started then completed does not snatch",
			steps: []step{
				{peer: A, event: models.Started, left: 0, complete: 1, created: true},
				{peer: A, event: models.Completed, left: 0, complete: 1},
			},
		},
		{
			name: "two peers: leecher sees seeder, seeder sees leecher, seeders see no seeders",
			steps: []step{
				{peer: A, event: models.Started, left: 100, incomplete: 1, created: true},
				{peer: B, event: models.Started, left: 0, complete: 1, incomplete: 1, peers: 1, created: true},
				{peer: A, event: models.None, left: 50, dn: 50, complete: 1, incomplete: 1, peers: 1, dDown: 50},
				{peer: B, event: models.Completed, left: 0, up: 50, complete: 1, incomplete: 1, peers: 1, dUp: 50},
				{peer: A, event: models.Completed, left: 0, dn: 100, complete: 2, downloaded: 1, peers: 0, snatched: true, dDown: 50},
				{peer: B, event: models.Stopped, left: 0, up: 60, complete: 1, downloaded: 1, removed: true, dUp: 10},
				{peer: A, event: models.None, left: 0, dn: 100, complete: 1, downloaded: 1},
			},
		},
		{
			name: "stopped on an unknown torrent",
			steps: []step{
				{peer: A, event: models.Stopped, left: 10, removed: true},
			},
		},
		{
			name: "seeder goes back to leeching",
			steps: []step{
				{peer: A, event: models.Started, left: 0, complete: 1, created: true},
				{peer: A, event: models.None, left: 30, complete: 0, incomplete: 1},
				{peer: A, event: models.Completed, left: 0, complete: 1, downloaded: 1, snatched: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			ih := hash(1)
			eps := map[string]string{A: "192.0.2.1:6881", B: "[2001:db8::b]:51413"}
			for i, st := range tt.steps {
				e.now = e.now.Add(time.Minute)
				a := leecher(ih, pid("-qB4250-peer-"+st.peer), eps[st.peer])
				a.Event, a.Left, a.Uploaded, a.Downloaded = st.event, st.left, st.up, st.dn
				a.Passkey, a.Corrupt = "pk-"+st.peer, int64(i)
				before := e.be.count()
				resp := e.announce(t, a)

				msg := fmt.Sprintf("step %d (%s %s)", i, st.peer, st.event)
				assert.Equal(t, st.complete, resp.Complete, "%s complete", msg)
				assert.Equal(t, st.incomplete, resp.Incomplete, "%s incomplete", msg)
				assert.Equal(t, st.downloaded, resp.Downloaded, "%s downloaded", msg)
				assert.Equal(t, st.peers, len(resp.IPv4Peers)+len(resp.IPv6Peers), "%s peers", msg)
				assert.Equal(t, 30*time.Minute, resp.Interval, msg)
				assert.Equal(t, 15*time.Minute, resp.MinInterval, msg)
				assert.Equal(t, a.Remote, resp.ExternalIP, msg)
				assert.True(t, resp.Compact, msg)

				require.Equal(t, before+1, e.be.count(), "%s: one delta per announce", msg)
				d := e.be.last(t)
				assert.Equal(t, models.AnnounceDelta{
					InfoHash:        ih,
					PeerID:          a.PeerID,
					Passkey:         "pk-" + st.peer,
					Endpoint:        a.Endpoint,
					Event:           st.event,
					Created:         st.created,
					Snatched:        st.snatched,
					Removed:         st.removed,
					Seeder:          st.left == 0,
					Left:            st.left,
					Uploaded:        st.up,
					Downloaded:      st.dn,
					Corrupt:         int64(i),
					UploadedDelta:   st.dUp,
					DownloadedDelta: st.dDown,
					CreditedUp:      st.dUp,
					CreditedDown:    st.dDown,
					UpSpeed:         st.dUp / 60,
					DownSpeed:       st.dDown / 60,
					Seeders:         resp.Complete,
					Leechers:        resp.Incomplete,
					Snatches:        resp.Downloaded,
					FirstSeen:       e.now,
					Announces:       1,
					Time:            e.now,
				}, d, msg)
			}
		})
	}
}

func TestAnnounceSwarmAfterStop(t *testing.T) {
	e := newEnv(t, nil)
	ih := hash(2)
	a := leecher(ih, pid("-qB4250-aaaaaaaaaaaa"), "192.0.2.1:6881")
	b := leecher(ih, pid("-qB4250-bbbbbbbbbbbb"), "192.0.2.2:6881")
	e.announce(t, a)
	resp := e.announce(t, b)
	require.Len(t, resp.IPv4Peers, 1)
	assert.Equal(t, models.Peer{AddrPort: a.Endpoint}, resp.IPv4Peers[0], "the memory driver hands out no peer IDs")

	a.Event = models.Stopped
	a.NumWant = 50
	resp = e.announce(t, a)
	assert.Empty(t, resp.IPv4Peers, "a stopping peer is handed no peers")
	assert.Equal(t, 1, resp.Incomplete)

	b.Event = models.None
	resp = e.announce(t, b)
	assert.Empty(t, resp.IPv4Peers, "a stopped peer is no longer handed out")
	assert.Equal(t, []models.TorrentStats{{InfoHash: ih, Leechers: 1, Registered: true}}, e.scrape(t, ih))
}

func TestNumWant(t *testing.T) {
	mutate := func(c *config.Config) { c.DefaultNumWant, c.MaxNumWant = 3, 5 }
	e := newEnv(t, mutate)

	direct := []struct {
		n    int
		ev   models.Event
		want int
	}{
		{-1, models.None, 3},
		{-100, models.Started, 3},
		{0, models.None, 0},
		{2, models.None, 2},
		{5, models.Completed, 5},
		{6, models.None, 5},
		{1 << 30, models.None, 5},
		{-1, models.Stopped, 0},
		{4, models.Stopped, 0},
	}
	for _, tt := range direct {
		assert.Equal(t, tt.want, e.tr.NumWant(tt.n, tt.ev), "NumWant(%d, %q)", tt.n, tt.ev)
	}

	ih := hash(3)
	for i := 0; i < 10; i++ {
		e.announce(t, leecher(ih, numPid(i), ipv4(i).String()))
	}
	tests := []struct {
		name    string
		numWant int
		event   models.Event
		want    int
	}{
		{name: "-1 gets default_num_want", numWant: -1, want: 3},
		{name: "zero", numWant: 0, want: 0},
		{name: "below max", numWant: 4, want: 4},
		{name: "max", numWant: 5, want: 5},
		{name: "above max gets max_num_want", numWant: 6, want: 5},
		{name: "far above max", numWant: 10_000, want: 5},
		{name: "stopped gets none", numWant: 50, event: models.Stopped, want: 0},
		{name: "stopped default gets none", numWant: -1, event: models.Stopped, want: 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := leecher(ih, numPid(100+i), ipv4(100+i).String())
			a.NumWant, a.Event = tt.numWant, tt.event
			resp := e.announce(t, a)
			assert.Len(t, resp.IPv4Peers, tt.want)
			assert.Empty(t, resp.IPv6Peers)
		})
	}
}

func TestDualStackOther(t *testing.T) {
	tests := []struct {
		name        string
		dual        bool
		endpoint    string
		other       string
		wantEntries int // entries the announcing peer owns afterwards
		wantV4      string
		wantV6      string
	}{
		{
			name: "IPv4 endpoint with IPv6 other", dual: true,
			endpoint: "198.51.100.1:6881", other: "[2001:db8::a]:6882",
			wantEntries: 2, wantV4: "198.51.100.1:6881", wantV6: "[2001:db8::a]:6882",
		},
		{
			name: "IPv6 endpoint with IPv4 other", dual: true,
			endpoint: "[2001:db8::a]:6881", other: "198.51.100.1:6882",
			wantEntries: 2, wantV4: "198.51.100.1:6882", wantV6: "[2001:db8::a]:6881",
		},
		{
			name: "IPv6 endpoint with IPv4-mapped other", dual: true,
			endpoint: "[2001:db8::a]:6881", other: "[::ffff:198.51.100.1]:6882",
			wantEntries: 2, wantV4: "198.51.100.1:6882", wantV6: "[2001:db8::a]:6881",
		},
		{
			name: "other in the same family is ignored", dual: true,
			endpoint: "198.51.100.1:6881", other: "198.51.100.9:6882",
			wantEntries: 1, wantV4: "198.51.100.1:6881",
		},
		{
			name: "mapped other in the same family is ignored", dual: true,
			endpoint: "198.51.100.1:6881", other: "[::ffff:198.51.100.9]:6882",
			wantEntries: 1, wantV4: "198.51.100.1:6881",
		},
		{
			name: "no other", dual: true,
			endpoint:    "198.51.100.1:6881",
			wantEntries: 1, wantV4: "198.51.100.1:6881",
		},
		{
			name: "not dual stacked: an IPv4 requester sees only IPv4", dual: false,
			endpoint: "198.51.100.1:6881", other: "[2001:db8::a]:6882",
			wantEntries: 2, wantV4: "198.51.100.1:6881",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) { c.DualStackedPeers = tt.dual })
			ih := hash(4)
			a := leecher(ih, pid("-TR2940-dualdualdual"), tt.endpoint)
			if tt.other != "" {
				a.Other = netip.MustParseAddrPort(tt.other)
			}
			a.Event = models.Started
			resp := e.announce(t, a)
			assert.Equal(t, tt.wantEntries, resp.Incomplete, "the response counts both entries")
			d := e.be.last(t)
			assert.True(t, d.Created)
			assert.Equal(t, 1, e.be.count(), "one delta per announce")
			assert.Equal(t, []models.TorrentStats{{InfoHash: ih, Leechers: tt.wantEntries, Registered: true}}, e.scrape(t, ih))

			// An IPv4 requester sees the entries its families allow.
			b := leecher(ih, pid("-TR2940-viewerviewer"), "203.0.113.7:6881")
			b.NumWant = 50
			resp = e.announce(t, b)
			var gotV4, gotV6 string
			for _, p := range resp.IPv4Peers {
				assert.Equal(t, a.PeerID, e.idOf(t, p))
				gotV4 = p.AddrPort.String()
			}
			for _, p := range resp.IPv6Peers {
				assert.Equal(t, a.PeerID, e.idOf(t, p))
				gotV6 = p.AddrPort.String()
			}
			assert.LessOrEqual(t, len(resp.IPv4Peers), 1)
			assert.LessOrEqual(t, len(resp.IPv6Peers), 1)
			assert.Equal(t, tt.wantV4, gotV4)
			assert.Equal(t, tt.wantV6, gotV6)

			// Completing counts one snatch, however many entries the peer has.
			a.Event, a.Left = models.Completed, 0
			resp = e.announce(t, a)
			assert.Equal(t, 1, resp.Downloaded)
			assert.Equal(t, tt.wantEntries, resp.Complete)
			assert.Equal(t, 1, resp.Incomplete, "only the viewer still leeches")

			// Stopping removes every entry the announce names.
			a.Event = models.Stopped
			resp = e.announce(t, a)
			assert.True(t, e.be.last(t).Removed)
			assert.Equal(t, 0, resp.Complete)
			assert.Equal(t, 1, resp.Incomplete)
			assert.Equal(t, []models.TorrentStats{{InfoHash: ih, Leechers: 1, Snatches: 1, Registered: true}}, e.scrape(t, ih))
		})
	}
}

func TestFamiliesHandedOut(t *testing.T) {
	tests := []struct {
		name      string
		dual      bool
		requester string
		wantV4    int
		wantV6    int
	}{
		{name: "dual stacked, IPv4 requester", dual: true, requester: "198.51.100.50:6881", wantV4: 2, wantV6: 3},
		{name: "dual stacked, IPv6 requester", dual: true, requester: "[2001:db8::50]:6881", wantV4: 2, wantV6: 3},
		{name: "single stack, IPv4 requester", dual: false, requester: "198.51.100.50:6881", wantV4: 2},
		{name: "single stack, IPv6 requester", dual: false, requester: "[2001:db8::50]:6881", wantV6: 3},
		{name: "single stack, mapped requester is IPv4", dual: false, requester: "[::ffff:198.51.100.50]:6881", wantV4: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) { c.DualStackedPeers = tt.dual })
			ih := hash(30)
			for i := 0; i < 2; i++ {
				e.announce(t, leecher(ih, numPid(i), fmt.Sprintf("192.0.2.%d:6881", i+1)))
			}
			for i := 10; i < 13; i++ {
				e.announce(t, leecher(ih, numPid(i), fmt.Sprintf("[2001:db8::%d]:6881", i)))
			}
			resp := e.announce(t, leecher(ih, numPid(99), tt.requester))
			assert.Len(t, resp.IPv4Peers, tt.wantV4)
			assert.Len(t, resp.IPv6Peers, tt.wantV6)
			assert.Equal(t, 6, resp.Incomplete, "counts cover both families whatever is handed out")
		})
	}
}

func TestIPv4MappedStoredAsIPv4(t *testing.T) {
	for _, dual := range []bool{true, false} {
		t.Run(fmt.Sprintf("dual=%v", dual), func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) {
				c.DualStackedPeers = dual
				c.PreferredSubnet = true
			})
			ih := hash(5)
			mapped := leecher(ih, pid("-qB4250-mappedmapped"), "[::ffff:203.0.113.5]:6881")
			e.announce(t, mapped)
			d := e.be.last(t)
			assert.Equal(t, netip.MustParseAddrPort("203.0.113.5:6881"), d.Endpoint)
			assert.True(t, d.Endpoint.Addr().Is4())

			// Announcing again over plain IPv4 updates the same entry.
			plain := leecher(ih, mapped.PeerID, "203.0.113.5:6881")
			resp := e.announce(t, plain)
			assert.False(t, e.be.last(t).Created, "the mapped announce was stored under the IPv4 key")
			assert.Equal(t, 1, resp.Incomplete)

			// An IPv4-only requester is handed it as plain IPv4.
			v := leecher(ih, pid("-qB4250-viewerviewer"), "198.51.100.3:6881")
			resp = e.announce(t, v)
			require.Len(t, resp.IPv4Peers, 1)
			assert.Empty(t, resp.IPv6Peers)
			assert.Equal(t, netip.MustParseAddrPort("203.0.113.5:6881"), resp.IPv4Peers[0].AddrPort)
		})
	}
}

func TestPreferredSubnetThroughCore(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.PreferredSubnet = true
		c.PreferredIPv4Subnet = 24
	})
	ih := hash(6)
	for i := 0; i < 3; i++ {
		e.announce(t, leecher(ih, numPid(i), fmt.Sprintf("192.0.2.%d:6881", i+1)))
	}
	for i := 10; i < 40; i++ {
		e.announce(t, leecher(ih, numPid(i), ipv4(i).String()))
	}
	for rep := 0; rep < 20; rep++ {
		a := leecher(ih, numPid(1000), "192.0.2.200:6881")
		a.NumWant = 4
		resp := e.announce(t, a)
		require.Len(t, resp.IPv4Peers, 4)
		for i, p := range resp.IPv4Peers[:3] {
			assert.True(t, netip.MustParsePrefix("192.0.2.0/24").Contains(p.AddrPort.Addr()), "peer %d: %v", i, p.AddrPort)
		}
	}
}

func TestClientWhitelist(t *testing.T) {
	tests := []struct {
		name    string
		enabled bool
		list    []string
		id      string
		wantErr error
	}{
		{name: "disabled, empty list", id: "-UT3500-xxxxxxxxxxxx"},
		{name: "disabled, list ignored", list: []string{"-qB"}, id: "-UT3500-xxxxxxxxxxxx"},
		{name: "enabled, first prefix", enabled: true, list: []string{"-qB", "-TR"}, id: "-qB4250-xxxxxxxxxxxx"},
		{name: "enabled, second prefix", enabled: true, list: []string{"-qB", "-TR"}, id: "-TR2940-xxxxxxxxxxxx"},
		{name: "enabled, full version prefix", enabled: true, list: []string{"-qB4250-"}, id: "-qB4250-xxxxxxxxxxxx"},
		{name: "enabled, other version", enabled: true, list: []string{"-qB4250-"}, id: "-qB4260-xxxxxxxxxxxx", wantErr: tracker.ErrClientNotWhitelisted},
		{name: "enabled, not listed", enabled: true, list: []string{"-qB", "-TR"}, id: "-UT3500-xxxxxxxxxxxx", wantErr: tracker.ErrClientNotWhitelisted},
		{name: "enabled, prefix is case-sensitive", enabled: true, list: []string{"-qB"}, id: "-QB4250-xxxxxxxxxxxx", wantErr: tracker.ErrClientNotWhitelisted},
		{name: "enabled, prefix inside not at start", enabled: true, list: []string{"qB"}, id: "-qB4250-xxxxxxxxxxxx", wantErr: tracker.ErrClientNotWhitelisted},
		{name: "enabled, binary id", enabled: true, list: []string{"M7-"}, id: "M7-1-2--\x00\x01\x02\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) {
				c.ClientWhitelistEnabled = tt.enabled
				c.ClientWhitelist = tt.list
			})
			ih := hash(7)
			a := leecher(ih, pid(tt.id), "192.0.2.1:6881")
			var w recWriter
			err := e.tr.HandleAnnounce(context.Background(), a, &w)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				var ce models.ClientError
				assert.ErrorAs(t, err, &ce, "the failure is for the client to see")
				assert.Empty(t, w.resps)
				assert.Zero(t, e.be.count(), "a refused announce records no delta")
				assert.Equal(t, []models.TorrentStats{{InfoHash: ih}}, e.scrape(t, ih), "a refused announce creates nothing")
				return
			}
			require.NoError(t, err)
			assert.Len(t, w.resps, 1)
			assert.Equal(t, 1, e.be.count())
		})
	}
}

func TestAnnounceInvalidEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	a := leecher(hash(8), numPid(1), "192.0.2.1:6881")
	a.Endpoint = netip.AddrPort{}
	var w recWriter
	err := e.tr.HandleAnnounce(context.Background(), a, &w)
	require.ErrorIs(t, err, models.ErrInvalidIP)
	assert.Empty(t, w.resps)
	assert.Zero(t, e.be.count())
}

func TestAnnounceBackendAndWriterErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.be.err = errors.New("queue full")
	ih := hash(9)
	// A failing backend does not fail the announce: the swarm is already updated.
	resp := e.announce(t, leecher(ih, numPid(1), "192.0.2.1:6881"))
	assert.Equal(t, 1, resp.Incomplete)
	assert.Equal(t, 1, e.be.count())

	// A failing writer's error is returned as is.
	errWrite := errors.New("connection reset")
	w := &recWriter{err: errWrite}
	err := e.tr.HandleAnnounce(context.Background(), leecher(ih, numPid(2), "192.0.2.2:6881"), w)
	assert.ErrorIs(t, err, errWrite)
}

func TestNilBackend(t *testing.T) {
	cfg := config.Default()
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err)
	tr, err := tracker.New(&cfg, pool, nil, nil)
	require.NoError(t, err)
	var w recWriter
	require.NoError(t, tr.HandleAnnounce(context.Background(), leecher(hash(1), numPid(1), "192.0.2.1:6881"), &w))
	assert.Equal(t, 1, w.last(t).Incomplete)
}

func TestHandleScrape(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.MaxScrapeInfoHashes = 3 })
	assert.Equal(t, 3, e.tr.MaxScrapeInfoHashes())
	known := hash(10)
	e.announce(t, leecher(known, numPid(1), "192.0.2.1:6881"))
	s := leecher(known, numPid(2), "192.0.2.2:6881")
	s.Left, s.Event = 0, models.Completed
	e.announce(t, s)
	e.announce(t, leecher(known, numPid(3), "[2001:db8::3]:6881"))
	knownStats := models.TorrentStats{InfoHash: known, Seeders: 1, Leechers: 2, Snatches: 1, Registered: true}

	tests := []struct {
		name    string
		hashes  []models.InfoHash
		wantErr error
		want    []models.TorrentStats
	}{
		{name: "nil", hashes: nil, wantErr: models.ErrMissingInfoHash},
		{name: "empty", hashes: []models.InfoHash{}, wantErr: models.ErrMissingInfoHash},
		{name: "over the limit", hashes: []models.InfoHash{hash(1), hash(2), hash(3), hash(4)}, wantErr: models.ErrTooManyInfoHashes},
		{name: "unknown gives zeros", hashes: []models.InfoHash{hash(11)}, want: []models.TorrentStats{{InfoHash: hash(11)}}},
		{name: "known", hashes: []models.InfoHash{known}, want: []models.TorrentStats{knownStats}},
		{
			name:   "at the limit, request order kept",
			hashes: []models.InfoHash{hash(12), known, hash(13)},
			want:   []models.TorrentStats{{InfoHash: hash(12)}, knownStats, {InfoHash: hash(13)}},
		},
		{
			name:   "duplicates answered each time",
			hashes: []models.InfoHash{known, known},
			want:   []models.TorrentStats{knownStats, knownStats},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &scrapeWriter{}
			err := e.tr.HandleScrape(context.Background(), &models.Scrape{InfoHashes: tt.hashes}, w)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Nil(t, w.files, "nothing written on failure")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, w.files)
		})
	}
	// Scraping an unknown torrent does not create it.
	assert.Equal(t, []models.TorrentStats{{InfoHash: hash(11)}}, e.scrape(t, hash(11)))
}

func TestReapWithClock(t *testing.T) {
	tests := []struct {
		name  string
		purge bool
	}{
		{name: "purge inactive torrents", purge: true},
		{name: "keep inactive torrents", purge: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) { c.PurgeInactiveTorrents = tt.purge })
			one, two := hash(20), hash(21)

			e.now = t0
			e.announce(t, leecher(one, numPid(1), "192.0.2.1:6881"))
			e.announce(t, leecher(two, numPid(3), "192.0.2.3:6881"))
			e.now = t0.Add(30 * time.Minute)
			e.announce(t, leecher(one, numPid(2), "192.0.2.2:6881"))

			// Exactly peer_timeout after the first announces: nothing is older than the cutoff.
			e.now = t0.Add(45 * time.Minute)
			r, err := e.tr.Reap(context.Background())
			require.NoError(t, err)
			assert.Equal(t, tracker.ReapResult{}, r)

			// A minute later the peers announced at t0 are gone.
			e.now = t0.Add(46 * time.Minute)
			r, err = e.tr.Reap(context.Background())
			require.NoError(t, err)
			wantTorrents := 0
			if tt.purge {
				wantTorrents = 1
			}
			assert.Equal(t, tracker.ReapResult{Peers: 2, Torrents: wantTorrents}, r)
			st := e.scrape(t, one, two)
			assert.Equal(t, models.TorrentStats{InfoHash: one, Leechers: 1, Registered: true}, st[0])
			assert.Equal(t, models.TorrentStats{InfoHash: two, Registered: !tt.purge}, st[1])

			// The survivor is still handed out.
			resp := e.announce(t, leecher(one, numPid(4), "192.0.2.4:6881"))
			require.Len(t, resp.IPv4Peers, 1)
			assert.Equal(t, numPid(2), e.idOf(t, resp.IPv4Peers[0]))

			// Much later everyone is gone.
			e.now = t0.Add(3 * time.Hour)
			r, err = e.tr.Reap(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 2, r.Peers)
			st = e.scrape(t, one)
			assert.Equal(t, models.TorrentStats{InfoHash: one, Registered: !tt.purge}, st[0])
		})
	}
}

func TestIntervals(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Announce.Duration = 20 * time.Minute
		c.MinAnnounce.Duration = 5 * time.Minute
	})
	iv, minIv := e.tr.Intervals()
	assert.Equal(t, 20*time.Minute, iv)
	assert.Equal(t, 5*time.Minute, minIv)
	resp := e.announce(t, leecher(hash(1), numPid(1), "192.0.2.1:6881"))
	assert.Equal(t, 20*time.Minute, resp.Interval)
	assert.Equal(t, 5*time.Minute, resp.MinInterval)
}

type nopWriter struct{}

func (nopWriter) WriteAnnounce(*models.AnnounceResponse) error { return nil }

func BenchmarkHandleAnnounce(b *testing.B) {
	const torrents, peers = 1000, 50
	cfg := config.Default()
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(b, err)
	tr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(b, err)
	ctx := context.Background()
	anns := make([]models.Announce, 0, torrents*peers)
	for tn := 0; tn < torrents; tn++ {
		for i := 0; i < peers; i++ {
			a := leecher(hash(tn), numPid(i), ipv4(i).String())
			if i%5 == 0 {
				a.Left = 0
			}
			require.NoError(b, tr.HandleAnnounce(ctx, a, nopWriter{}))
			a.NumWant = 50
			anns = append(anns, *a)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Spread the announces over torrents and peers: torrent i%1000, peer (i/1000)%50.
		a := &anns[(i%torrents)*peers+(i/torrents)%peers]
		if err := tr.HandleAnnounce(ctx, a, nopWriter{}); err != nil {
			b.Fatal(err)
		}
	}
}

// counterSpy wraps a pool's Conn and remembers the last PeerUpdate.Counters it was sent.
type counterSpy struct {
	tracker.Conn
	counters []bool
}

func (s *counterSpy) Get() (tracker.Conn, error) { return s, nil }
func (s *counterSpy) Close() error               { return nil }

func (s *counterSpy) Announce(ctx context.Context, ih models.InfoHash, u *tracker.PeerUpdate, sel *tracker.Selection, res *tracker.AnnounceResult) error {
	s.counters = append(s.counters, u.Counters)
	return s.Conn.Announce(ctx, ih, u, sel, res)
}

// TestCountersKeptOnlyForDeltas checks that the core asks the driver to keep peers' counters
// only when its backend consumes deltas.
func TestCountersKeptOnlyForDeltas(t *testing.T) {
	tests := []struct {
		name    string
		backend tracker.Backend
		want    bool
	}{
		{name: "no backend", backend: nil, want: false},
		{name: "noop discards deltas", backend: noop.Conn{}, want: false},
		{name: "a recording backend", backend: &recBackend{}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			pool, err := tracker.Open(cfg.Tracker)
			require.NoError(t, err)
			defer pool.Close()
			conn, err := pool.Get()
			require.NoError(t, err)
			spy := &counterSpy{Conn: conn}
			tr, err := tracker.New(&cfg, spy, tt.backend, nil)
			require.NoError(t, err)
			var w recWriter
			require.NoError(t, tr.HandleAnnounce(context.Background(), leecher(hash(1), numPid(1), "10.0.0.1:6881"), &w))
			assert.Equal(t, []bool{tt.want}, spy.counters)
		})
	}
}

// TestAllTorrents: a full scrape's torrents come in the order of their info hashes, each with
// its counts.
func TestAllTorrents(t *testing.T) {
	e := newEnv(t, nil)
	const n = 40
	for i := range n { // hash(i) scatters the hashes: announced out of their order
		e.announce(t, leecher(hash(i), numPid(i), fmt.Sprintf("10.0.0.%d:6881", 1+i)))
	}
	all, err := e.tr.AllTorrents(context.Background())
	require.NoError(t, err)
	require.Len(t, all, n)
	want := make(map[models.InfoHash]bool, n)
	for i := range n {
		want[hash(i)] = true
	}
	for i, ts := range all {
		assert.True(t, want[ts.InfoHash], "torrent %x was never announced", ts.InfoHash[:])
		assert.Equal(t, 1, ts.Leechers, "torrent %x", ts.InfoHash[:])
		if i > 0 {
			assert.Negative(t, bytes.Compare(all[i-1].InfoHash[:], ts.InfoHash[:]), "in the order of their info hashes at %d", i)
		}
	}
}
