package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	nethttp "net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
)

var (
	siteSecret   = strings.Repeat("s", 32)
	reportSecret = strings.Repeat("r", 32)
)

// fakeStore is a tracker driver that only records the site updates it is given and answers
// site and swarm questions from its fields.
type fakeStore struct {
	mu      sync.Mutex
	updates []models.SiteUpdate
	// fail, when set, answers the update of that action with the error.
	fail   map[models.SiteAction]error
	users  map[string]models.User
	peers  map[uint64][2]int // user ID → leeching, seeding
	counts models.SwarmCounts
}

var (
	_ tracker.SiteStore    = (*fakeStore)(nil)
	_ tracker.SwarmCounter = (*fakeStore)(nil)
)

func (f *fakeStore) Get() (tracker.Conn, error) { return f, nil }
func (f *fakeStore) Close() error               { return nil }

func (f *fakeStore) Announce(context.Context, models.InfoHash, *tracker.PeerUpdate, *tracker.Selection, *tracker.AnnounceResult) error {
	return models.ErrTorrentNotFound
}
func (f *fakeStore) Scrape(context.Context, []models.TorrentStats) error { return nil }
func (f *fakeStore) Reap(context.Context, time.Time, bool) (tracker.ReapResult, error) {
	return tracker.ReapResult{}, nil
}

func (f *fakeStore) User(_ context.Context, passkey string) (models.User, error) {
	u, ok := f.users[passkey]
	if !ok {
		return u, models.ErrPasskeyNotFound
	}
	return u, nil
}
func (f *fakeStore) Whitelisted(context.Context, models.PeerID) (bool, error) { return true, nil }
func (f *fakeStore) DeletionReason(context.Context, models.InfoHash) (string, time.Time, bool, error) {
	return "", time.Time{}, false, nil
}
func (f *fakeStore) ReplaceSite(context.Context, *models.SiteState) error { return nil }
func (f *fakeStore) UpdateSite(_ context.Context, u *models.SiteUpdate) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[u.Action]; err != nil {
		return err
	}
	f.updates = append(f.updates, *u)
	return nil
}
func (f *fakeStore) UserPeers(_ context.Context, id uint64) (int, int, error) {
	p := f.peers[id]
	return p[0], p[1], nil
}
func (f *fakeStore) Prune(context.Context, time.Time, time.Time) error { return nil }
func (f *fakeStore) SwarmCounts(context.Context) (models.SwarmCounts, error) {
	return f.counts, nil
}

func (f *fakeStore) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = nil
}

func (f *fakeStore) recorded() []models.SiteUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]models.SiteUpdate(nil), f.updates...)
}

// privateConfig is config.Default() in private mode with the test secrets, changed by mod.
func privateConfig(mod func(*config.Config)) *config.Config {
	cfg := config.Default()
	cfg.PrivateEnabled = true
	cfg.SitePassword = siteSecret
	cfg.ReportPassword = reportSecret
	if mod != nil {
		mod(&cfg)
	}
	return &cfg
}

func newPrivateServer(t *testing.T, cfg *config.Config, pool tracker.Pool, opts ...Option) (*Server, *tracker.Tracker) {
	t.Helper()
	require.NoError(t, cfg.Validate())
	tkr, err := tracker.New(cfg, pool, noop.Conn{}, nil)
	require.NoError(t, err)
	s, err := NewServer(cfg, tkr, opts...)
	require.NoError(t, err)
	return s, tkr
}

// rawurlencode escapes b as PHP's rawurlencode does: A-Z a-z 0-9 - _ . ~ stay, everything
// else becomes %XX in upper case.
func rawurlencode(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			sb.WriteByte(c)
		default:
			sb.WriteString("%" + strings.ToUpper(strconv.FormatInt(int64(c)>>4, 16)+strconv.FormatInt(int64(c)&15, 16)))
		}
	}
	return sb.String()
}

// A hash with bytes that rawurlencode keeps, "+" (which must not become a space) and high bytes.
var (
	gazelleHash = models.InfoHash([]byte("\x12\x34Vx\x9a\xbc+~ab\x00\xff-_.AZ09\x20"))
	hashB       = ihOf(0xb0)
	hashC       = ihOf(0xc0)
)

// assertSuccess checks the exact answer of an update.
func assertSuccess(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	assert.Equal(t, nethttp.StatusOK, rec.Code)
	assert.Equal(t, "success", rec.Body.String())
	assert.Equal(t, []string{"text/plain"}, rec.Result().Header.Values("Content-Type"))
	assert.Equal(t, []string{"7"}, rec.Result().Header.Values("Content-Length"))
	assert.Empty(t, rec.Result().TransferEncoding)
}

func update(t *testing.T, s *Server, query string) *httptest.ResponseRecorder {
	t.Helper()
	return serve(t, s.Handler(), req{path: "/" + siteSecret + "/update", query: query})
}

func TestUpdateActions(t *testing.T) {
	pk1, pk2, pk3 := strings.Repeat("a", 32), strings.Repeat("b", 32), strings.Repeat("c", 32)
	hashes := func(ihs ...models.InfoHash) string {
		var b []byte
		for _, ih := range ihs {
			b = append(b, ih[:]...)
		}
		return rawurlencode(b)
	}
	ih := rawurlencode(gazelleHash[:])
	for _, tc := range []struct {
		name  string
		query string
		mod   func(*config.Config)
		want  []models.SiteUpdate
	}{
		{name: "change_passkey", query: "action=change_passkey&oldpasskey=" + pk1 + "&newpasskey=" + pk2,
			want: []models.SiteUpdate{{Action: models.ChangePasskey, User: models.User{Passkey: pk1}, NewPasskey: pk2}}},
		{name: "add_torrent", query: "action=add_torrent&info_hash=" + ih + "&id=123&freetorrent=0",
			want: []models.SiteUpdate{{Action: models.AddTorrent, Torrent: models.Torrent{ID: 123, InfoHash: gazelleHash, Freeleech: models.Normal}}}},
		{name: "add_torrent lower-case escapes", query: "action=add_torrent&info_hash=" + strings.ToLower(escapeBytes(hashB[:])) + "&id=7&freetorrent=1",
			want: []models.SiteUpdate{{Action: models.AddTorrent, Torrent: models.Torrent{ID: 7, InfoHash: hashB, Freeleech: models.Free}}}},
		{name: "add_torrent neutral", query: "action=add_torrent&info_hash=" + ih + "&id=1&freetorrent=2",
			want: []models.SiteUpdate{{Action: models.AddTorrent, Torrent: models.Torrent{ID: 1, InfoHash: gazelleHash, Freeleech: models.Neutral}}}},
		{name: "update_torrent normal", query: "action=update_torrent&info_hash=" + ih + "&freetorrent=0",
			want: []models.SiteUpdate{{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: gazelleHash, Freeleech: models.Normal}}}},
		{name: "update_torrent free", query: "action=update_torrent&info_hash=" + ih + "&freetorrent=1",
			want: []models.SiteUpdate{{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: gazelleHash, Freeleech: models.Free}}}},
		{name: "update_torrent neutral", query: "action=update_torrent&info_hash=" + ih + "&freetorrent=2",
			want: []models.SiteUpdate{{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: gazelleHash, Freeleech: models.Neutral}}}},
		{name: "update_torrent missing freetorrent is neutral", query: "action=update_torrent&info_hash=" + ih,
			want: []models.SiteUpdate{{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: gazelleHash, Freeleech: models.Neutral}}}},
		{name: "update_torrent unknown freetorrent is neutral", query: "action=update_torrent&info_hash=" + ih + "&freetorrent=01",
			want: []models.SiteUpdate{{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: gazelleHash, Freeleech: models.Neutral}}}},
		{name: "update_torrents", query: "action=update_torrents&info_hashes=" + hashes(gazelleHash, hashB, hashC) + "&freetorrent=1",
			want: []models.SiteUpdate{
				{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: gazelleHash, Freeleech: models.Free}},
				{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: hashB, Freeleech: models.Free}},
				{Action: models.UpdateTorrent, Torrent: models.Torrent{InfoHash: hashC, Freeleech: models.Free}},
			}},
		{name: "add_token", query: "action=add_token&info_hash=" + ih + "&userid=42",
			want: []models.SiteUpdate{{Action: models.AddToken, Torrent: models.Torrent{InfoHash: gazelleHash}, User: models.User{ID: 42}}}},
		{name: "remove_token", query: "action=remove_token&info_hash=" + ih + "&userid=42",
			want: []models.SiteUpdate{{Action: models.RemoveToken, Torrent: models.Torrent{InfoHash: gazelleHash}, User: models.User{ID: 42}}}},
		{name: "delete_torrent with reason", query: "action=delete_torrent&id=5&info_hash=" + ih + "&reason=0",
			want: []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}, Reason: "Dupe"}}},
		{name: "delete_torrent last code", query: "action=delete_torrent&id=5&info_hash=" + ih + "&reason=22",
			want: []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}, Reason: "Audience Recording"}}},
		{name: "delete_torrent reason -1", query: "action=delete_torrent&id=5&info_hash=" + ih + "&reason=-1",
			want: []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}}}},
		{name: "delete_torrent no reason", query: "action=delete_torrent&id=5&info_hash=" + ih,
			want: []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}}}},
		{name: "delete_torrent unknown code", query: "action=delete_torrent&info_hash=" + ih + "&reason=23",
			want: []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}}}},
		{name: "delete_torrent non-numeric code", query: "action=delete_torrent&info_hash=" + ih + "&reason=Dupe",
			want: []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}}}},
		{name: "delete_torrent with the site's own table",
			mod:   func(c *config.Config) { c.DeletionReasons = map[string]string{"0": "Duplicate", "7": "Bad video"} },
			query: "action=delete_torrent&info_hash=" + ih + "&reason=7",
			want:  []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}, Reason: "Bad video"}}},
		{name: "delete_torrent code missing from the site's table",
			mod:   func(c *config.Config) { c.DeletionReasons = map[string]string{"0": "Duplicate"} },
			query: "action=delete_torrent&info_hash=" + ih + "&reason=1",
			want:  []models.SiteUpdate{{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: gazelleHash}}}},
		{name: "add_user visible", query: "action=add_user&passkey=" + pk1 + "&id=9&visible=1",
			want: []models.SiteUpdate{{Action: models.AddUser, User: models.User{ID: 9, Passkey: pk1, CanLeech: true}}}},
		{name: "add_user hidden", query: "action=add_user&passkey=" + pk1 + "&id=9&visible=0",
			want: []models.SiteUpdate{{Action: models.AddUser, User: models.User{ID: 9, Passkey: pk1, CanLeech: true, Protected: true}}}},
		{name: "add_user legacy without visible", query: "action=add_user&passkey=" + pk1 + "&id=9",
			want: []models.SiteUpdate{{Action: models.AddUser, User: models.User{ID: 9, Passkey: pk1, CanLeech: true}}}},
		{name: "update_user may leech, visible", query: "action=update_user&passkey=" + pk1 + "&can_leech=1&visible=1",
			want: []models.SiteUpdate{{Action: models.UpdateUser, User: models.User{Passkey: pk1, CanLeech: true}}}},
		{name: "update_user may not leech, hidden", query: "action=update_user&passkey=" + pk1 + "&can_leech=0&visible=0",
			want: []models.SiteUpdate{{Action: models.UpdateUser, User: models.User{Passkey: pk1, Protected: true}}}},
		{name: "update_user without flags", query: "action=update_user&passkey=" + pk1,
			want: []models.SiteUpdate{{Action: models.UpdateUser, User: models.User{Passkey: pk1, CanLeech: true}}}},
		{name: "remove_user", query: "action=remove_user&passkey=" + pk1,
			want: []models.SiteUpdate{{Action: models.RemoveUser, User: models.User{Passkey: pk1}}}},
		{name: "remove_users", query: "action=remove_users&passkeys=" + pk1 + pk2 + pk3,
			want: []models.SiteUpdate{
				{Action: models.RemoveUser, User: models.User{Passkey: pk1}},
				{Action: models.RemoveUser, User: models.User{Passkey: pk2}},
				{Action: models.RemoveUser, User: models.User{Passkey: pk3}},
			}},
		{name: "add_whitelist", query: "action=add_whitelist&peer_id=-qB42",
			want: []models.SiteUpdate{{Action: models.AddWhitelist, Prefix: "-qB42"}}},
		{name: "edit_whitelist", query: "action=edit_whitelist&old_peer_id=-qB42&new_peer_id=-qB43",
			want: []models.SiteUpdate{{Action: models.EditWhitelist, Prefix: "-qB42", NewPrefix: "-qB43"}}},
		{name: "remove_whitelist", query: "action=remove_whitelist&peer_id=-TR30",
			want: []models.SiteUpdate{{Action: models.RemoveWhitelist, Prefix: "-TR30"}}},
		{name: "the last of duplicates wins", query: "action=remove_user&passkey=" + pk1 + "&passkey=" + pk2,
			want: []models.SiteUpdate{{Action: models.RemoveUser, User: models.User{Passkey: pk2}}}},
		{name: "info_torrent", query: "action=info_torrent&info_hash=" + ih},
		{name: "trace_user", query: "action=trace_user&passkey=" + pk1 + "&trace=1"},
		{name: "unknown action", query: "action=reload_everything&passkey=" + pk1},
		{name: "no action", query: "passkey=" + pk1},
		{name: "empty action", query: "action="},

		// Malformed: nothing changes, and the answer is still success.
		{name: "info_hash too short", query: "action=update_torrent&info_hash=" + rawurlencode(gazelleHash[:19]) + "&freetorrent=1"},
		{name: "info_hash too long", query: "action=add_token&info_hash=" + ih + "%00&userid=1"},
		{name: "info_hash missing", query: "action=delete_torrent&reason=0"},
		{name: "bad escape", query: "action=add_torrent&info_hash=%G1" + ih[3:] + "&id=1&freetorrent=0"},
		{name: "non-numeric id", query: "action=add_torrent&info_hash=" + ih + "&id=12a&freetorrent=0"},
		{name: "zero id", query: "action=add_user&passkey=" + pk1 + "&id=0"},
		{name: "missing userid", query: "action=add_token&info_hash=" + ih},
		{name: "info_hashes not whole hashes", query: "action=update_torrents&info_hashes=" + hashes(hashB, hashC)[3:] + "&freetorrent=1"},
		{name: "info_hashes empty", query: "action=update_torrents&info_hashes=&freetorrent=1"},
		{name: "passkeys not whole passkeys", query: "action=remove_users&passkeys=" + pk1 + "x"},
		{name: "missing new passkey", query: "action=change_passkey&oldpasskey=" + pk1},
		{name: "empty passkey", query: "action=remove_user&passkey="},
		{name: "empty prefix", query: "action=add_whitelist&peer_id="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &fakeStore{}
			s, _ := newPrivateServer(t, privateConfig(tc.mod), store)
			assertSuccess(t, update(t, s, tc.query))
			assert.Equal(t, tc.want, store.recorded())
		})
	}
}

func TestUpdateIntervals(t *testing.T) {
	store := &fakeStore{}
	s, tkr := newPrivateServer(t, privateConfig(nil), store)
	interval := func() time.Duration {
		d, _ := tkr.Intervals()
		return d
	}
	require.Equal(t, 30*time.Minute, interval())

	assertSuccess(t, update(t, s, "action=update_announce_interval&new_announce_interval=2400"))
	assert.Equal(t, 40*time.Minute, interval())

	for _, bad := range []string{"", "abc", "0", "-5", "1e3", "99999999999"} {
		assertSuccess(t, update(t, s, "action=update_announce_interval&new_announce_interval="+bad))
		assert.Equal(t, 40*time.Minute, interval(), "after %q", bad)
	}

	assertSuccess(t, update(t, s, "action=update_announce_jitter&new_announce_jitter=120"))
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 500 {
		d := interval()
		lo, hi = min(lo, d), max(hi, d)
	}
	assert.GreaterOrEqual(t, lo, 40*time.Minute)
	assert.LessOrEqual(t, hi, 42*time.Minute)
	assert.Greater(t, hi, lo, "a jitter of 120 s varies the interval")

	assertSuccess(t, update(t, s, "action=update_announce_jitter&new_announce_jitter=x"))
	assert.LessOrEqual(t, interval(), 42*time.Minute)
	assertSuccess(t, update(t, s, "action=update_announce_jitter&new_announce_jitter=0"))
	for range 50 {
		require.Equal(t, 40*time.Minute, interval())
	}
	assert.Empty(t, store.recorded(), "intervals are not site updates")
}

func TestUpdateStoreErrors(t *testing.T) {
	pk1, pk2 := strings.Repeat("a", 32), strings.Repeat("b", 32)
	ih := rawurlencode(gazelleHash[:])
	for _, tc := range []struct {
		name     string
		fail     map[models.SiteAction]error
		query    string
		status   int
		recorded int
	}{
		{name: "unknown torrent is success, as in Ocelot",
			fail:  map[models.SiteAction]error{models.UpdateTorrent: errors.Join(errors.New("memory: update torrent"), models.ErrTorrentNotFound)},
			query: "action=update_torrent&info_hash=" + ih + "&freetorrent=1", status: nethttp.StatusOK},
		{name: "unknown passkey is success",
			fail:  map[models.SiteAction]error{models.ChangePasskey: models.ErrPasskeyNotFound},
			query: "action=change_passkey&oldpasskey=" + pk1 + "&newpasskey=" + pk2, status: nethttp.StatusOK},
		{name: "a storage failure is a 500, so that Gazelle retries",
			fail:  map[models.SiteAction]error{models.AddToken: errors.New("storage is on fire")},
			query: "action=add_token&info_hash=" + ih + "&userid=1", status: nethttp.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &fakeStore{fail: tc.fail}
			s, _ := newPrivateServer(t, privateConfig(nil), store)
			rec := update(t, s, tc.query)
			if tc.status == nethttp.StatusOK {
				assertSuccess(t, rec)
				return
			}
			assert.Equal(t, tc.status, rec.Code)
			assert.Equal(t, string(models.ErrInternal), rec.Body.String())
			assert.Equal(t, strconv.Itoa(rec.Body.Len()), rec.Header().Get("Content-Length"))
			assert.False(t, strings.HasSuffix(rec.Body.String(), "success"))
		})
	}

	t.Run("a batch stops at a storage failure", func(t *testing.T) {
		store := &fakeStore{}
		s, _ := newPrivateServer(t, privateConfig(nil), store)
		assertSuccess(t, update(t, s, "action=remove_users&passkeys="+pk1+pk2))
		require.Len(t, store.recorded(), 2)
		store.fail = map[models.SiteAction]error{models.RemoveUser: errors.New("storage is on fire")}
		assert.Equal(t, nethttp.StatusInternalServerError, update(t, s, "action=remove_users&passkeys="+pk1+pk2).Code)
		assert.Len(t, store.recorded(), 2)
	})

	t.Run("a driver without a site store is a 500", func(t *testing.T) {
		s, _ := newPrivateServer(t, privateConfig(nil), failingSitePool{})
		rec := update(t, s, "action=remove_user&passkey="+pk1)
		assert.Equal(t, nethttp.StatusInternalServerError, rec.Code)
	})
}

// failingSitePool is a driver without the site store capability.
type failingSitePool struct{ fakeConn }

type fakeConn struct{}

func (fakeConn) Announce(context.Context, models.InfoHash, *tracker.PeerUpdate, *tracker.Selection, *tracker.AnnounceResult) error {
	return nil
}
func (fakeConn) Scrape(context.Context, []models.TorrentStats) error { return nil }
func (fakeConn) Reap(context.Context, time.Time, bool) (tracker.ReapResult, error) {
	return tracker.ReapResult{}, nil
}
func (fakeConn) Close() error { return nil }

func (p failingSitePool) Get() (tracker.Conn, error) { return p.fakeConn, nil }
func (failingSitePool) Close() error                 { return nil }

// authFailure is the exact bencoded answer to a wrong secret, with the 5400 s intervals of every
// private-mode failure (Ocelot's).
const authFailure = "d14:failure reason22:Authentication failure8:intervali5400e12:min intervali5400ee"

func TestControlSecrets(t *testing.T) {
	pk := strings.Repeat("a", 32)
	addUser := "action=add_user&passkey=" + pk + "&id=1&visible=1"
	for _, tc := range []struct {
		name    string
		path    string
		query   string
		want    string
		applied bool
	}{
		{name: "site secret on update", path: "/" + siteSecret + "/update", query: addUser, want: "success", applied: true},
		{name: "report secret on report", path: "/" + reportSecret + "/report", query: "get=user&key=" + pk, want: `{"id":1,"leeching":0,"seeding":0,"deleted":0,"protected":0,"can_leech":1}` + "\n"},
		{name: "report secret on update", path: "/" + reportSecret + "/update", query: addUser, want: authFailure},
		{name: "site secret on report", path: "/" + siteSecret + "/report", query: "get=stats", want: authFailure},
		{name: "wrong secret of the same length", path: "/" + strings.Repeat("s", 31) + "t/update", query: addUser, want: authFailure},
		{name: "secret one byte short", path: "/" + siteSecret[:31] + "/update", query: addUser, want: authFailure},
		{name: "secret one byte long", path: "/" + siteSecret + "s/update", query: addUser, want: authFailure},
		{name: "a user's passkey", path: "/" + pk + "/update", query: addUser, want: authFailure},
		{name: "a user's passkey on report", path: "/" + pk + "/report", query: "get=stats", want: authFailure},
		{name: "secret in another case", path: "/" + strings.ToUpper(siteSecret) + "/update", query: addUser, want: authFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &fakeStore{users: map[string]models.User{pk: {ID: 1, Passkey: pk, CanLeech: true}}}
			s, _ := newPrivateServer(t, privateConfig(nil), store)
			rec := serve(t, s.Handler(), req{path: tc.path, query: tc.query})
			assert.Equal(t, nethttp.StatusOK, rec.Code)
			assert.Equal(t, tc.want, rec.Body.String())
			assert.Equal(t, strconv.Itoa(rec.Body.Len()), rec.Header().Get("Content-Length"))
			if tc.applied {
				assert.Len(t, store.recorded(), 1)
			} else {
				assert.Empty(t, store.recorded())
			}
		})
	}
}

func TestControlNotRoutedInPublicMode(t *testing.T) {
	cfg := config.Default()
	cfg.SitePassword, cfg.ReportPassword = siteSecret, reportSecret
	store := &fakeStore{}
	tkr, err := tracker.New(&cfg, store, noop.Conn{}, nil)
	require.NoError(t, err)
	s, err := NewServer(&cfg, tkr)
	require.NoError(t, err)
	for _, path := range []string{"/" + siteSecret + "/update", "/" + reportSecret + "/report"} {
		rec := serve(t, s.Handler(), req{path: path, query: "action=remove_user&passkey=x&get=stats"})
		assert.Equal(t, nethttp.StatusNotFound, rec.Code, path)
	}
	assert.Empty(t, store.recorded())
}

// fakeStats are request counts as *stats.Stats reports them.
type fakeStats stats.RequestCounts

func (f fakeStats) Requests() stats.RequestCounts { return stats.RequestCounts(f) }

// fakeQueues are a backend's queue sizes.
type fakeQueues [5]int

func (q fakeQueues) QueueSizes() (users, torrents, peers, snatches, tokens int) {
	return q[0], q[1], q[2], q[3], q[4]
}

func report(t *testing.T, s *Server, query string) *httptest.ResponseRecorder {
	t.Helper()
	rec := serve(t, s.Handler(), req{path: "/" + reportSecret + "/report", query: query})
	assert.Equal(t, nethttp.StatusOK, rec.Code)
	assert.Equal(t, "text/plain", rec.Header().Get("Content-Type"))
	assert.Equal(t, strconv.Itoa(rec.Body.Len()), rec.Header().Get("Content-Length"))
	return rec
}

// reportServer serves reports in format over a store that knows two users.
func reportServer(t *testing.T, format string, opts ...Option) *Server {
	t.Helper()
	store := &fakeStore{
		users: map[string]models.User{
			"alice": {ID: 7, Passkey: "alice", CanLeech: true},
			"bob":   {ID: 8, Passkey: "bob", Protected: true},
		},
		peers:  map[uint64][2]int{7: {2, 5}},
		counts: models.SwarmCounts{Torrents: 9, Seeders: [2]int{3, 1}, Leechers: [2]int{5, 2}},
	}
	s, _ := newPrivateServer(t, privateConfig(func(c *config.Config) {
		c.ReportFormat = format
		c.AnnounceJitter = config.Duration{Duration: 4 * time.Minute}
	}), store, opts...)
	start := time.Unix(1_700_000_000, 0)
	s.ctl.start = start
	s.ctl.now = func() time.Time { return start.Add(26*time.Hour + 3*time.Minute + 4*time.Second) }
	return s
}

var testStatsDoc = fakeStats{Announces: 10, AnnounceFailures: 3, Scrapes: 4, PerSecond: 1.75}

func TestReportText(t *testing.T) {
	s := reportServer(t, "text", WithReportStats(testStatsDoc))
	for _, tc := range []struct {
		name, query, want string
	}{
		{name: "stats", query: "get=stats", want: "Uptime: 1 days, 02:03:04\n" +
			"0 connections opened\n" +
			"0 open connections\n" +
			"0 connections/s\n" +
			"15 requests handled\n" + // 14 announces and scrapes, and this report
			"1 requests/s\n" +
			"7 successful announcements\n" +
			"3 failed announcements\n" +
			"4 scrapes\n" +
			"7 leechers tracked\n" +
			"4 seeders tracked\n" +
			"0 bytes read\n" +
			"0 bytes written\n" +
			"1800 announce interval\n" +
			"240 announce jitter\n" +
			"success"},
		{name: "user", query: "get=user&key=alice", want: "2 leeching\n5 seeding\nsuccess"},
		{name: "user without peers", query: "get=user&key=bob", want: "0 leeching\n0 seeding\nsuccess"},
		{name: "unknown user", query: "get=user&key=carol", want: "success"},
		{name: "user without key", query: "get=user", want: "Invalid action\nsuccess"},
		{name: "user with empty key", query: "get=user&key=", want: "Invalid action\nsuccess"},
		{name: "unknown report", query: "get=jemalloc", want: "Invalid action\nsuccess"},
		{name: "no get", query: "get=", want: "Invalid action\nsuccess"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, report(t, s, tc.query).Body.String())
		})
	}

	t.Run("intervals follow the update API", func(t *testing.T) {
		assertSuccess(t, update(t, s, "action=update_announce_interval&new_announce_interval=2700"))
		assertSuccess(t, update(t, s, "action=update_announce_jitter&new_announce_jitter=0"))
		body := report(t, s, "get=stats").Body.String()
		assert.Contains(t, body, "\n2700 announce interval\n0 announce jitter\nsuccess")
	})

	t.Run("without stats the counters are zero", func(t *testing.T) {
		s := reportServer(t, "text")
		body := report(t, s, "get=stats").Body.String()
		assert.Contains(t, body, "\n1 requests handled\n0 requests/s\n0 successful announcements\n0 failed announcements\n0 scrapes\n7 leechers tracked\n")
	})
}

// ocelotLabels are the labels of OPSnet Ocelot 2.1.3's stats report, in its order, with their
// types.
var ocelotLabels = []struct{ label, typ string }{
	{"version", "string"}, {"jemalloc version", "string"},
	{"connections opened", "number"}, {"open connections", "number"}, {"peak connections", "number"},
	{"connections/s", "number"}, {"requests handled", "number"}, {"requests/s", "number"},
	{"successful announcements", "number"}, {"failed announcements", "number"}, {"scrapes", "number"},
	{"leechers tracked", "number"}, {"seeders tracked", "number"},
	{"items in user queue", "number"}, {"items in torrent queue", "number"}, {"items in peer queue", "number"},
	{"items in snatch queue", "number"}, {"items in token queue", "number"},
	{"max client request length", "byte"}, {"bytes read", "byte"}, {"bytes written", "byte"},
	{"bad tracker secret received", "number"}, {"bad report secret received", "number"},
	{"bad announce key received", "number"}, {"bad client configuration", "number"}, {"bad http request", "number"},
	{"announce interval", "number"}, {"announce jitter", "number"}, {"uptime", "elapsed"},
	{"user time", "elapsed"}, {"system time", "elapsed"}, {"maximum resident set size", "byte"},
	{"minor page faults", "number"}, {"major page faults", "number"}, {"blocks in", "number"}, {"blocks out", "number"},
	{"voluntary context switches", "number"}, {"involuntary context switches", "number"},
}

func TestReportJSON(t *testing.T) {
	s := reportServer(t, "json", WithReportStats(testStatsDoc), WithQueues(fakeQueues{1, 2, 3, 4, 5}))

	t.Run("stats", func(t *testing.T) {
		// One wrong secret of each kind and an unknown report key, counted before the report.
		serve(t, s.Handler(), req{path: "/" + strings.Repeat("x", 32) + "/update", query: "action=x"})
		serve(t, s.Handler(), req{path: "/" + strings.Repeat("x", 32) + "/report", query: "get=stats"})
		report(t, s, "get=user&key=nobody")
		var doc map[string]struct {
			Type  string `json:"type"`
			Value any    `json:"value"`
		}
		body := report(t, s, "get=stats").Body.Bytes()
		require.NoError(t, json.Unmarshal(body, &doc), "%s", body)
		assert.True(t, bytes.HasSuffix(body, []byte("}\n")), "ends in a newline, as Ocelot's")
		// Every label of Ocelot's, in its order, with its type, and no other.
		last := -1
		for _, l := range ocelotLabels {
			require.Contains(t, doc, l.label)
			assert.Equal(t, l.typ, doc[l.label].Type, l.label)
			at := bytes.Index(body, []byte(`"`+l.label+`":{`))
			assert.Greater(t, at, last, "%s in Ocelot's order", l.label)
			last = at
		}
		assert.Len(t, doc, len(ocelotLabels))
		want := map[string]any{
			"uptime":                      float64(26*3600 + 3*60 + 4),
			"requests handled":            float64(14 + 4), // and the four control requests
			"requests/s":                  1.75,
			"successful announcements":    float64(7),
			"failed announcements":        float64(3),
			"scrapes":                     float64(4),
			"leechers tracked":            float64(7),
			"seeders tracked":             float64(4),
			"items in user queue":         float64(1),
			"items in torrent queue":      float64(2),
			"items in peer queue":         float64(3),
			"items in snatch queue":       float64(4),
			"items in token queue":        float64(5),
			"bad tracker secret received": float64(1),
			"bad report secret received":  float64(1),
			"bad announce key received":   float64(1),
			"bad client configuration":    float64(0),
			"bad http request":            float64(0),
			"announce interval":           float64(1800),
			"announce jitter":             float64(240),
		}
		for label, v := range want {
			assert.Equal(t, v, doc[label].Value, label)
		}
		assert.True(t, strings.HasPrefix(doc["version"].Value.(string), "chihaya"))
		assert.Equal(t, runtime.Version(), doc["jemalloc version"].Value)
		assert.Greater(t, doc["maximum resident set size"].Value, float64(1<<20))
		assert.Greater(t, doc["user time"].Value.(float64)+doc["system time"].Value.(float64), 0.0)
		assert.Regexp(t, `"user time":\{"type":"elapsed","value":\d+\.\d{6}\}`, string(body))
	})

	for _, tc := range []struct {
		name, query, want string
	}{
		{name: "user", query: "get=user&key=alice", want: `{"id":7,"leeching":2,"seeding":5,"deleted":0,"protected":0,"can_leech":1}` + "\n"},
		{name: "protected user who may not leech", query: "get=user&key=bob", want: `{"id":8,"leeching":0,"seeding":0,"deleted":0,"protected":1,"can_leech":0}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := report(t, s, tc.query).Body.String()
			assert.Equal(t, tc.want, body)
			assert.JSONEq(t, tc.want, body)
		})
	}

	for _, tc := range []struct {
		name, query, want string
	}{
		{name: "unknown user", query: "get=user&key=carol", want: "Announce key not found"},
		{name: "user without key", query: "get=user", want: "Announce key missing"},
		{name: "user with empty key", query: "get=user&key=", want: "Announce key missing"},
		{name: "unknown report", query: "get=jemalloc", want: "unrecognized report query"},
		{name: "no get", query: "get=", want: "unrecognized report query"},
		{name: "bad escape", query: "get=stats&x=%zz", want: "unrecognized report query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Ocelot's 5400 s for every failure, without the configured jitter.
			rec := report(t, s, tc.query)
			assert.Equal(t, "d14:failure reason"+strconv.Itoa(len(tc.want))+":"+tc.want+"8:intervali5400e12:min intervali5400ee", rec.Body.String())
		})
	}
}

// TestReportReadsRealStats checks the report against the document *stats.Stats really writes.
func TestReportReadsRealStats(t *testing.T) {
	cfg := privateConfig(nil)
	st := stats.New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	for range 5 {
		st.Record(stats.Request{Action: stats.Announce})
	}
	st.Record(stats.Request{Action: stats.Announce, Err: models.ErrPasskeyNotFound})
	for range 2 {
		st.Record(stats.Request{Action: stats.Scrape})
	}

	s := reportServer(t, "json", WithReportStats(st))
	var doc map[string]struct {
		Value any `json:"value"`
	}
	// The aggregator applies events while the report reads them: wait for all of them.
	reports := 0
	assert.Eventually(t, func() bool {
		doc = nil
		reports++
		if json.Unmarshal(report(t, s, "get=stats").Body.Bytes(), &doc) != nil {
			return false
		}
		return doc["successful announcements"].Value == float64(5) && doc["failed announcements"].Value == float64(1) &&
			doc["scrapes"].Value == float64(2)
	}, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, float64(8+reports), doc["requests handled"].Value, "announces, scrapes and the reports")
	assert.Equal(t, float64(5), doc["successful announcements"].Value)
	assert.Equal(t, float64(1), doc["failed announcements"].Value)
	assert.Equal(t, float64(2), doc["scrapes"].Value)
}

func TestReportStoreErrors(t *testing.T) {
	s, _ := newPrivateServer(t, privateConfig(nil), failingSitePool{})
	d := bencoded(t, serve(t, s.Handler(), req{path: "/" + reportSecret + "/report", query: "get=user&key=alice"}))
	assert.Equal(t, string(models.ErrInternal), d["failure reason"])

	// Swarm counts the driver cannot give are zero.
	rec := report(t, s, "get=stats")
	assert.Contains(t, rec.Body.String(), `"leechers tracked":{"type":"number","value":0}`)
}

// TestControlThroughMemoryDriver drives the memory driver's site store through Gazelle's
// requests and checks what announces and reports see.
func TestControlThroughMemoryDriver(t *testing.T) {
	s, _ := newPrivateServer(t, privateConfig(func(c *config.Config) { c.ReportFormat = "text" }), memory.NewPool(8))
	h := s.Handler()
	alice, bob := strings.Repeat("a", 32), strings.Repeat("b", 32)
	ih := rawurlencode(gazelleHash[:])
	announce := func(passkey string, peer byte, left int, remote string) map[string]any {
		t.Helper()
		return bencoded(t, serve(t, h, req{path: "/" + passkey + "/announce", query: announceQ(gazelleHash, peer, 6881, left, "compact=1"), remote: remote}))
	}

	// Unknown users and torrents are refused until the site adds them.
	assert.Equal(t, "Passkey not found", announce(alice, 'a', 0, "192.0.2.1:1")["failure reason"])
	assertSuccess(t, update(t, s, "action=add_user&passkey="+alice+"&id=1&visible=1"))
	assertSuccess(t, update(t, s, "action=add_user&passkey="+bob+"&id=2"))
	assert.Equal(t, "Unregistered torrent", announce(alice, 'a', 0, "192.0.2.1:1")["failure reason"])
	assertSuccess(t, update(t, s, "action=add_torrent&info_hash="+ih+"&id=10&freetorrent=0"))

	d := announce(alice, 'a', 0, "192.0.2.1:1")
	assert.NotContains(t, d, "failure reason")
	assert.Equal(t, int64(1), d["complete"])
	d = announce(bob, 'b', 100, "192.0.2.2:1")
	assert.Equal(t, int64(1), d["incomplete"])
	assert.Equal(t, "0 leeching\n1 seeding\nsuccess", report(t, s, "get=user&key="+alice).Body.String())
	assert.Equal(t, "1 leeching\n0 seeding\nsuccess", report(t, s, "get=user&key="+bob).Body.String())

	// Leech rights.
	assertSuccess(t, update(t, s, "action=update_user&passkey="+bob+"&can_leech=0&visible=1"))
	assert.Equal(t, "Access denied, leeching forbidden", announce(bob, 'b', 100, "192.0.2.2:1")["failure reason"])
	assertSuccess(t, update(t, s, "action=update_user&passkey="+bob+"&can_leech=1&visible=1"))
	assert.NotContains(t, announce(bob, 'b', 100, "192.0.2.2:1"), "failure reason")

	// A new passkey replaces the old one.
	carol := strings.Repeat("c", 32)
	assertSuccess(t, update(t, s, "action=change_passkey&oldpasskey="+bob+"&newpasskey="+carol))
	assert.Equal(t, "Passkey not found", announce(bob, 'b', 100, "192.0.2.2:1")["failure reason"])
	assert.NotContains(t, announce(carol, 'b', 100, "192.0.2.2:1"), "failure reason")

	// The whitelist.
	assertSuccess(t, update(t, s, "action=add_whitelist&peer_id=-qB"))
	assert.Equal(t, "Your client is not on the whitelist", announce(alice, 'a', 0, "192.0.2.1:1")["failure reason"])
	assertSuccess(t, update(t, s, "action=edit_whitelist&old_peer_id=-qB&new_peer_id=aaaa"))
	assert.NotContains(t, announce(alice, 'a', 0, "192.0.2.1:1"), "failure reason")
	assertSuccess(t, update(t, s, "action=remove_whitelist&peer_id=aaaa"))

	// Updates about things the tracker does not hold still answer success.
	assertSuccess(t, update(t, s, "action=update_torrent&info_hash="+rawurlencode(hashB[:])+"&freetorrent=1"))
	assertSuccess(t, update(t, s, "action=update_user&passkey="+bob+"&can_leech=1"))
	assertSuccess(t, update(t, s, "action=add_token&info_hash="+rawurlencode(hashB[:])+"&userid=1"))

	// Deletion, with Ocelot's reason.
	assertSuccess(t, update(t, s, "action=delete_torrent&id=10&info_hash="+ih+"&reason=0"))
	assert.Equal(t, "Unregistered torrent: Dupe", announce(alice, 'a', 0, "192.0.2.1:1")["failure reason"])

	// Removed users are gone, singly and in batches.
	assertSuccess(t, update(t, s, "action=remove_users&passkeys="+alice+carol))
	assert.Equal(t, "Passkey not found", announce(alice, 'a', 0, "192.0.2.1:1")["failure reason"])
	assert.Equal(t, "Passkey not found", announce(carol, 'b', 0, "192.0.2.2:1")["failure reason"])
	assert.Equal(t, "success", report(t, s, "get=user&key="+alice).Body.String())
}

// TestNothingToSee: in private mode a passkey path without a query string is answered with
// Ocelot's plain page, whatever the passkey and whether or not it is a secret; with a query,
// even an empty one, it is a request as usual. Public mode answers a bencoded failure.
func TestNothingToSee(t *testing.T) {
	pk := strings.Repeat("a", 32)
	store := &fakeStore{users: map[string]models.User{pk: {ID: 1, Passkey: pk, CanLeech: true}}}
	s, _ := newPrivateServer(t, privateConfig(nil), store)
	for _, path := range []string{"/" + pk + "/announce", "/" + pk + "/scrape", "/" + strings.Repeat("x", 32) + "/announce",
		"/" + siteSecret + "/update", "/" + reportSecret + "/report", "/x/scrape"} {
		rec := serve(t, s.Handler(), req{path: path})
		assert.Equal(t, nethttp.StatusOK, rec.Code, path)
		assert.Equal(t, nothingToSeePage, rec.Body.String(), path)
		assert.Equal(t, "text/html", rec.Header().Get("Content-Type"), path)
		assert.Equal(t, strconv.Itoa(len(nothingToSeePage)), rec.Header().Get("Content-Length"), path)
	}
	assert.Empty(t, store.recorded(), "nothing applied")

	// With a '?', an empty query is a request: a scrape of no torrent, an update of no action.
	hr := httptest.NewRequest(nethttp.MethodGet, "/"+pk+"/scrape?", nil)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, hr)
	assert.Equal(t, "d5:filesdee", rec.Body.String())
	hr = httptest.NewRequest(nethttp.MethodGet, "/"+siteSecret+"/update?", nil)
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, hr)
	assert.Equal(t, "success", rec.Body.String())

	pub, err := NewServer(func() *config.Config { c := config.Default(); return &c }(), s.tkr)
	require.NoError(t, err)
	rec = serve(t, pub.Handler(), req{path: "/" + pk + "/announce"})
	assert.Contains(t, rec.Body.String(), "failure reason", "public mode")
}
