package ws_test

import (
	"context"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend/noop"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory"
	"github.com/chihaya/chihaya/tracker/models"
	"github.com/chihaya/chihaya/ws"
)

// TestSlowPeerDropped: a peer that reads nothing fills its send queue and is dropped, and
// counted; the sender and the swarm go on.
func TestSlowPeerDropped(t *testing.T) {
	c := startTracker(t, func(cfg *config.Config) {
		cfg.WSSendQueue = 2
		cfg.WSMaxMessageBytes = 1 << 20
	})
	ih := bin("slow", 1)
	slow := dial(t, c, "/announce")
	slow.send(announce(ih, bin("slow", 1), "started", 10))
	slow.read()
	sender := dial(t, c, "/announce")
	sdp := strings.Repeat("s", 512<<10)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; metric(t, c, "chihaya_ws_slow_peers_dropped_total") == 0; i++ {
		require.True(t, time.Now().Before(deadline) && i < 500, "the slow peer was never dropped after %d offers", i)
		msg := announce(ih, bin("sender", 1), "", 10)
		msg["offers"] = []map[string]any{{"offer": map[string]any{"type": "offer", "sdp": sdp}, "offer_id": bin("o", byte(i))}}
		sender.send(msg)
		require.Equal(t, "announce", sender.read()["action"])
	}
	// The slow peer left its swarm; the sender is still served.
	for sender.barrier(ih)["incomplete"] != float64(1) {
		require.True(t, time.Now().Before(deadline), "the dropped peer is still counted")
	}
}

// TestConnectionBudget: WebSockets count in the HTTP connection budget while they are open.
func TestConnectionBudget(t *testing.T) {
	c := startTracker(t, nil)
	base := metric(t, c, "chihaya_http_connections_open")
	var cls []*client
	for range 3 {
		cls = append(cls, dial(t, c, "/announce"))
	}
	waitFor := func(http, ws float64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for metric(t, c, "chihaya_http_connections_open") != http || metric(t, c, "chihaya_ws_connections_open") != ws {
			require.True(t, time.Now().Before(deadline), "want %v HTTP connections open and %v WebSockets, have %v and %v", http, ws,
				metric(t, c, "chihaya_http_connections_open"), metric(t, c, "chihaya_ws_connections_open"))
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(base+3, 3)
	for _, cl := range cls {
		require.NoError(t, cl.ws.Close())
	}
	waitFor(base, 0)
}

func TestAccessList(t *testing.T) {
	denied := bin("denied", 1)
	list := filepath.Join(t.TempDir(), "deny.list")
	require.NoError(t, os.WriteFile(list, []byte(hex.EncodeToString([]byte(latin1(denied)))+"\n"), 0o644))
	c := startTracker(t, func(cfg *config.Config) { cfg.AccessListMode, cfg.AccessListFile = "deny", list })
	cl := dial(t, c, "/announce")
	cl.send(announce(denied, bin("p", 1), "started", 10))
	m := cl.read()
	assert.Equal(t, string(models.ErrNotAuthorized), m["failure reason"])
	assert.Equal(t, denied, m["info_hash"])
	cl.send(map[string]any{"action": "scrape", "info_hash": denied})
	assert.Equal(t, string(models.ErrNotAuthorized), cl.read()["failure reason"])
}

// latin1 turns a binary string back into its bytes.
func latin1(s string) string {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r))
	}
	return string(b)
}

// TestPrivate: the passkey of /<passkey>/announce must name a user, and the torrent must be
// registered, as over HTTP and UDP.
func TestPrivate(t *testing.T) {
	cfg := config.Default()
	cfg.PrivateEnabled = true
	cfg.SitePassword, cfg.ReportPassword = "site", "report"
	require.NoError(t, cfg.Validate())
	pool, err := tracker.Open(cfg.Tracker)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pool.Close() })
	tkr, err := tracker.New(&cfg, pool, noop.Conn{}, nil)
	require.NoError(t, err)
	ctx := context.Background()
	const passkey = "0123456789abcdef0123456789abcdef"
	ih := bin("private", 1)
	require.NoError(t, tkr.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddUser, User: models.User{ID: 1, Passkey: passkey, CanLeech: true}}))
	require.NoError(t, tkr.UpdateSite(ctx, &models.SiteUpdate{Action: models.AddTorrent, Torrent: models.Torrent{ID: 1, InfoHash: models.InfoHash([]byte(latin1(ih)))}}))
	srv, err := ws.New(&cfg, tkr)
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, srv.Close(cctx))
		hs.Close()
	})
	open := func(path string) *client {
		conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+path, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return &client{t: t, ws: conn}
	}
	tests := []struct {
		path, ih, want string
	}{
		{"/" + passkey + "/announce", ih, ""},
		{"/" + passkey + "/announce", bin("unregistered", 1), string(models.ErrTorrentNotFound)},
		{"/ffffffffffffffffffffffffffffffff/announce", ih, string(models.ErrPasskeyNotFound)},
		{"/announce", ih, string(models.ErrPasskeyNotFound)},
	}
	for _, tt := range tests {
		cl := open(tt.path)
		cl.send(announce(tt.ih, bin("pp", 1), "started", 10))
		m := cl.read()
		if tt.want == "" {
			assert.Equal(t, float64(1), m["incomplete"], "%s", tt.path)
		} else {
			assert.Equal(t, tt.want, m["failure reason"], "%s", tt.path)
		}
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/a/b/announce", nil)
	require.Error(t, err)
	assert.Equal(t, 404, resp.StatusCode)
}
