package admin

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/accesslist"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

const token = "a-token-of-some-length"

// swarms is a fake Swarms holding counts by torrent.
type swarms struct {
	counts map[models.InfoHash]models.SwarmCounts
	err    error
}

func (s *swarms) TorrentCounts(_ context.Context, ih models.InfoHash) (models.SwarmCounts, error) {
	return s.counts[ih], s.err
}

func (s *swarms) DropSwarm(_ context.Context, ih models.InfoHash) (int, error) {
	c := s.counts[ih]
	delete(s.counts, ih)
	return c.Seeders[0] + c.Seeders[1] + c.Leechers[0] + c.Leechers[1], s.err
}

func TestAPI(t *testing.T) {
	ih := models.InfoHash{1, 2, 3}
	h := hex.EncodeToString(ih[:])
	path := filepath.Join(t.TempDir(), "list")
	require.NoError(t, writeEmpty(path))
	list, _, err := accesslist.New(accesslist.Deny, path, nil)
	require.NoError(t, err)
	sw := &swarms{counts: map[models.InfoHash]models.SwarmCounts{ih: {Torrents: 1, Seeders: [2]int{2, 1}, Leechers: [2]int{3, 0}}}}
	api := New(token, list, sw, func(context.Context) (any, error) { return "fine", nil })
	type step struct {
		name, method, path, auth string
		code                     int
		want                     map[string]any
	}
	steps := []step{
		{"no token", "GET", "/admin/access-list", "", 401, map[string]any{"error": "unauthorized"}},
		{"wrong token", "GET", "/admin/access-list", "Bearer nope", 401, map[string]any{"error": "unauthorized"}},
		{"token as basic", "GET", "/admin/access-list", "Basic " + token, 401, map[string]any{"error": "unauthorized"}},
		{"token prefix", "GET", "/admin/access-list", "Bearer " + token[:10], 401, map[string]any{"error": "unauthorized"}},
		{"unknown path without token", "GET", "/admin/secret", "", 401, map[string]any{"error": "unauthorized"}},
		{"unknown path", "GET", "/admin/secret", "bearer " + token, 404, nil},
		{"list", "GET", "/admin/access-list", "Bearer " + token, 200, map[string]any{"mode": "deny", "file": path, "count": 0.0, "info_hashes": []any{}}},
		{"list by POST", "POST", "/admin/access-list", "Bearer " + token, 405, nil},
		{"add", "PUT", "/admin/access-list/" + h, "Bearer " + token, 200, map[string]any{"info_hash": h, "listed": true, "changed": true, "mode": "deny"}},
		{"add again", "PUT", "/admin/access-list/" + h, "Bearer " + token, 200, map[string]any{"info_hash": h, "listed": true, "changed": false, "mode": "deny"}},
		{"listed now", "GET", "/admin/access-list", "Bearer " + token, 200, map[string]any{"mode": "deny", "file": path, "count": 1.0, "info_hashes": []any{h}}},
		{"bad hash", "PUT", "/admin/access-list/12", "Bearer " + token, 400, nil},
		{"remove", "DELETE", "/admin/access-list/" + h, "Bearer " + token, 200, map[string]any{"info_hash": h, "listed": false, "changed": true, "mode": "deny"}},
		{"counts", "GET", "/admin/torrents/" + h, "Bearer " + token, 200, map[string]any{"info_hash": h, "exists": true,
			"seeders": map[string]any{"ipv4": 2.0, "ipv6": 1.0}, "leechers": map[string]any{"ipv4": 3.0, "ipv6": 0.0}}},
		{"drop", "DELETE", "/admin/torrents/" + h, "Bearer " + token, 200, map[string]any{"info_hash": h, "peers_dropped": 6.0}},
		{"gone", "GET", "/admin/torrents/" + h, "Bearer " + token, 200, map[string]any{"info_hash": h, "exists": false,
			"seeders": map[string]any{"ipv4": 0.0, "ipv6": 0.0}, "leechers": map[string]any{"ipv4": 0.0, "ipv6": 0.0}}},
		{"torrents without hash", "GET", "/admin/torrents/", "Bearer " + token, 404, nil},
		{"reload", "POST", "/admin/reload", "Bearer " + token, 200, map[string]any{"reloaded": true, "result": "fine"}},
		{"reload by GET", "GET", "/admin/reload", "Bearer " + token, 405, nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			req := httptest.NewRequest(st.method, st.path, nil)
			if st.auth != "" {
				req.Header.Set("Authorization", st.auth)
			}
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			assert.Equal(t, st.code, rec.Code, rec.Body.String())
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			var got map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got), rec.Body.String())
			if st.want != nil {
				assert.Equal(t, st.want, got)
			} else {
				assert.NotEmpty(t, got["error"], "errors carry a message")
			}
		})
	}
}

func writeEmpty(path string) error { return os.WriteFile(path, nil, 0o644) }

func TestAPIOffAndDriverErrors(t *testing.T) {
	off := accesslist.FromHashes(accesslist.Off, nil)
	sw := &swarms{err: tracker.ErrNotSupported}
	api := New(token, off, sw, func(context.Context) (any, error) { return nil, errors.New("config broken: key \"x\"") })
	for _, tc := range []struct {
		method, path string
		code         int
		errHas       string
	}{
		{"PUT", "/admin/access-list/" + hex.EncodeToString(make([]byte, 20)), 409, "access_list_mode is off"},
		{"GET", "/admin/torrents/" + hex.EncodeToString(make([]byte, 20)), 501, "cannot"},
		{"POST", "/admin/reload", 500, "config broken"},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		assert.Equal(t, tc.code, rec.Code, "%s %s", tc.method, tc.path)
		assert.Contains(t, rec.Body.String(), tc.errHas)
	}
}

func TestReadyz(t *testing.T) {
	ok := Check{Name: "good", Run: func(context.Context) error { return nil }}
	bad := Check{Name: "tracker.redis", Run: func(context.Context) error { return errors.New("connection refused") }}
	slow := Check{Name: "slow", Run: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	for _, tc := range []struct {
		name   string
		checks []Check
		code   int
		failed []string
	}{
		{"no checks", nil, 200, nil},
		{"all pass", []Check{ok}, 200, nil},
		{"one fails", []Check{ok, bad}, 503, []string{"tracker.redis"}},
		{"one times out", []Check{slow, ok}, 503, []string{"slow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Readyz(50*time.Millisecond, tc.checks...).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			assert.Equal(t, tc.code, rec.Code)
			var got struct {
				Failed map[string]string `json:"failed"`
			}
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
			var names []string
			for n := range got.Failed {
				names = append(names, n)
			}
			assert.ElementsMatch(t, tc.failed, names)
		})
	}
	rec := httptest.NewRecorder()
	Healthz().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	assert.Equal(t, 200, rec.Code)
}
