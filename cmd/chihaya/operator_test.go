//go:build linux

package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	udptracker "github.com/anacrolix/torrent/tracker/udp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const operatorTimeout = 90 * time.Second

// do sends one request to the tracker and returns the status and body.
func do(ctx context.Context, t *testing.T, method, u, token string) (int, string) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, method, u, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func jsonOf(t *testing.T, body string) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &v), "%q", body)
	return v
}

// waitLog waits until the process's log holds want.
func waitLog(ctx context.Context, s *swarm, p *proc, want string) {
	s.t.Helper()
	s.waitFor(ctx, fmt.Sprintf("%q in %s's log", want, p.name), func() (bool, string, error) {
		b, err := os.ReadFile(p.log)
		return err == nil && strings.Contains(string(b), want), "", nil
	})
}

// TestOperatorAccessList runs the real binary with a deny list and the admin API: the list is
// read at start (a bad line reported by number, the rest applied), refuses over HTTP and UDP,
// is edited through the API (written back to the file, the refused torrent's swarm dropped),
// and is read again when the file changes, on SIGHUP and on POST /admin/reload; the API
// answers nothing without the token; /healthz and /readyz answer.
func TestOperatorAccessList(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	ctx, cancel := boundedContext(t, operatorTimeout+buildTimeout)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	s := &swarm{t: t, root: t.TempDir()}
	ihA, ihB, ihC := []byte("torrent-a-for-listing"[:20]), []byte("torrent-b-for-listing"[:20]), []byte("torrent-c-for-listing"[:20])
	hexA, hexB, hexC := hex.EncodeToString(ihA), hex.EncodeToString(ihB), hex.EncodeToString(ihC)
	list := filepath.Join(s.root, "access.list")
	require.NoError(t, os.WriteFile(list, []byte("# takedowns\n"+strings.ToUpper(hexA)+"\nnot-a-hash\n"), 0o644))
	const token = "operator-test-token-0123456789"
	tr := startConfigured(ctx, s, bin, "tracker", map[string]any{
		"access_list_mode": "deny",
		"access_list_file": list,
		"admin_token":      token,
	})
	waitLog(ctx, s, tr.proc, "line 3: not 40 hex digits")

	refused := "Requested download is not authorized for use with this tracker."
	announce := func(ih []byte, peer string) string {
		_, body := do(ctx, t, http.MethodGet, fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=7000&uploaded=0&downloaded=0&left=10",
			tr.http, pct(ih), pct([]byte(peer))), "")
		return body
	}
	uc := udpClient(t, tr.udp)
	udpAnnounce := func(ih []byte) error {
		_, _, err := uc.Announce(ctx, udptracker.AnnounceRequest{InfoHash: [20]byte(ih), PeerId: [20]byte([]byte("-XX0001-udp-peer-001")), Left: 10, Port: 7001, NumWant: -1}, udptracker.Options{})
		return err
	}
	body := announce(ihA, "-XX0001-peer-0000001")
	assert.Contains(t, body, "14:failure reason63:"+refused)
	assert.Contains(t, body, "8:intervali1800e")
	assert.ErrorContains(t, udpAnnounce(ihA), refused)
	assert.Contains(t, announce(ihB, "-XX0001-peer-0000001"), "8:completei0e")
	require.NoError(t, udpAnnounce(ihB))
	_, scrape := do(ctx, t, http.MethodGet, tr.http+"/scrape?info_hash="+pct(ihA), "")
	assert.Contains(t, scrape, refused, "a refused torrent's counts are not scraped either")

	// Without the token, or with a wrong one, every admin path answers the same 401.
	for _, tc := range []struct{ method, path, token string }{
		{http.MethodGet, "/admin/access-list", ""},
		{http.MethodPut, "/admin/access-list/" + hexB, ""},
		{http.MethodDelete, "/admin/torrents/" + hexB, "wrong-token-0123456789"},
		{http.MethodPost, "/admin/reload", token + "x"},
		{http.MethodGet, "/admin/no-such-call", ""},
	} {
		code, body := do(ctx, t, tc.method, tr.http+tc.path, tc.token)
		assert.Equal(t, http.StatusUnauthorized, code, "%s %s", tc.method, tc.path)
		assert.JSONEq(t, `{"error":"unauthorized"}`, body)
	}

	code, body := do(ctx, t, http.MethodGet, tr.http+"/admin/access-list", token)
	require.Equal(t, http.StatusOK, code, body)
	got := jsonOf(t, body)
	assert.Equal(t, "deny", got["mode"])
	assert.Equal(t, []any{hexA}, got["info_hashes"])

	// The swarm of B, which the API then denies: its peers go at once.
	code, body = do(ctx, t, http.MethodGet, tr.http+"/admin/torrents/"+hexB, token)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, map[string]any{"ipv4": 2.0, "ipv6": 0.0}, jsonOf(t, body)["leechers"])
	code, body = do(ctx, t, http.MethodPut, tr.http+"/admin/access-list/"+strings.ToUpper(hexB), token)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, true, jsonOf(t, body)["changed"])
	assert.Contains(t, announce(ihB, "-XX0001-peer-0000002"), refused)
	code, body = do(ctx, t, http.MethodGet, tr.http+"/admin/torrents/"+hexB, token)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, false, jsonOf(t, body)["exists"], "the denied torrent's swarm is dropped")
	data, err := os.ReadFile(list)
	require.NoError(t, err)
	assert.Contains(t, string(data), hexA)
	assert.Contains(t, string(data), hexB, "the edit is written back to the file")
	code, body = do(ctx, t, http.MethodDelete, tr.http+"/admin/access-list/"+hexA, token)
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, announce(ihA, "-XX0001-peer-0000003"), "8:completei0e")
	code, body = do(ctx, t, http.MethodPut, tr.http+"/admin/access-list/xyz", token)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, jsonOf(t, body)["error"], "40 hex digits")

	// One torrent's swarm dropped through the API.
	code, body = do(ctx, t, http.MethodDelete, tr.http+"/admin/torrents/"+hexA, token)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, 1.0, jsonOf(t, body)["peers_dropped"])

	// The file changed on disk: read again by the watcher.
	require.NoError(t, os.WriteFile(list, []byte(hexC+"\n"), 0o644))
	s.waitFor(ctx, "the watcher to refuse C", func() (bool, string, error) {
		return strings.Contains(announce(ihC, "-XX0001-peer-0000004"), refused), "", nil
	})
	assert.Contains(t, announce(ihB, "-XX0001-peer-0000005"), "8:completei", "B is served again")
	waitLog(ctx, s, tr.proc, "changed on disk")

	// SIGHUP and POST /admin/reload read it again too.
	require.NoError(t, tr.proc.cmd.Process.Signal(syscall.SIGHUP))
	waitLog(ctx, s, tr.proc, "access.list reloaded: 1 info hashes")
	code, body = do(ctx, t, http.MethodPost, tr.http+"/admin/reload", token)
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, true, jsonOf(t, body)["reloaded"])

	for _, probe := range []string{"/healthz", "/readyz"} {
		code, body := do(ctx, t, http.MethodGet, tr.http+probe, "")
		assert.Equal(t, http.StatusOK, code, "%s: %s", probe, body)
	}
	tr.proc.stop()
	assert.NoError(t, tr.proc.err, "clean exit on SIGTERM")
}

// TestReadyzRedis runs the tracker on a Redis of its own: /readyz answers 200 while Redis
// does, and 503 naming the driver once Redis is stopped, while /healthz stays 200.
func TestReadyzRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	server, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found: apt-get install redis-server, or run `bash .ci/run`"
		if os.Getenv("CHIHAYA_REQUIRE_REDIS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx, cancel := boundedContext(t, operatorTimeout+buildTimeout)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	s := &swarm{t: t, root: t.TempDir()}
	port := freePort(t)
	redis := s.start(ctx, "redis", s.root, nil, server, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--dir", s.root)
	tr := startConfigured(ctx, s, bin, "tracker", map[string]any{
		"tracker": map[string]any{"driver": "redis", "params": map[string]any{"addr": "127.0.0.1:" + strconv.Itoa(port)}},
	})
	s.waitFor(ctx, "/readyz to answer 200", func() (bool, string, error) {
		code, body := do(ctx, t, http.MethodGet, tr.http+"/readyz", "")
		return code == http.StatusOK, body, nil
	})
	redis.stop()
	s.procs = s.procs[1:] // redis exited on purpose; waitFor must not count it as a failure
	code, body := do(ctx, t, http.MethodGet, tr.http+"/readyz", "")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	failed, _ := jsonOf(t, body)["failed"].(map[string]any)
	assert.Contains(t, failed, "tracker.redis", body)
	code, _ = do(ctx, t, http.MethodGet, tr.http+"/healthz", "")
	assert.Equal(t, http.StatusOK, code)
}

// TestReloadConfig changes the config file of a running tracker and sends SIGHUP: the keys
// that can change live apply at once, one that needs a restart is named in the log and left
// as it was, and a file that no longer parses is refused whole with its file and key named,
// the running configuration staying.
func TestReloadConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	ctx, cancel := boundedContext(t, operatorTimeout+buildTimeout)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	s := &swarm{t: t, root: t.TempDir()}
	tr := startConfigured(ctx, s, bin, "tracker", map[string]any{"announce": "30m", "min_announce": "15m"})
	cfgPath := filepath.Join(s.root, "tracker.json")
	data, err := os.ReadFile(cfgPath)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(data, &cfg))
	write := func(m map[string]any) {
		b, err := json.Marshal(m)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(cfgPath, b, 0o600))
	}
	announce := func(peer string) string {
		_, body := do(ctx, t, http.MethodGet, fmt.Sprintf("%s/announce?info_hash=%s&peer_id=%s&port=7000&uploaded=0&downloaded=0&left=10",
			tr.http, pct([]byte("reload-test-torrent!")), pct([]byte(peer))), "")
		return body
	}
	hup := func() { require.NoError(t, tr.proc.cmd.Process.Signal(syscall.SIGHUP)) }
	assert.Contains(t, announce("-qB4620-000000000001"), "8:intervali1800e12:min intervali900e")

	cfg["announce"], cfg["min_announce"] = "20m", "10m"
	cfg["client_whitelist_enabled"], cfg["client_whitelist"] = true, []string{"-qB"}
	cfg["rate_limit"] = map[string]any{"announce_rate": 0.001, "announce_burst": 3}
	cfg["max_num_want"], cfg["default_num_want"] = 10, 5
	cfg["peer_timeout"] = "2h" // needs a restart
	write(cfg)
	hup()
	waitLog(ctx, s, tr.proc, "need a restart, left as they were: peer_timeout")
	waitLog(ctx, s, tr.proc, "applied 8 changed keys")
	body := announce("-qB4620-000000000001")
	assert.Contains(t, body, "8:intervali1200e12:min intervali600e", "the new intervals")
	assert.Contains(t, announce("-TR3000-000000000002"), "Your client is not on the whitelist", "the new whitelist")
	// The burst of 3 per address: the first announce and the refused one spent two.
	assert.Contains(t, announce("-qB4620-000000000003"), "8:completei")
	assert.Contains(t, announce("-qB4620-000000000004"), "too many requests from your address")

	// A file that no longer parses is refused whole; the running configuration stays.
	require.NoError(t, os.WriteFile(cfgPath, []byte(`{"announce": "30m", "max_num_want": "many"}`), 0o600))
	hup()
	waitLog(ctx, s, tr.proc, `key "max_num_want"`)
	b, err := os.ReadFile(tr.proc.log)
	require.NoError(t, err)
	assert.Contains(t, string(b), cfgPath, "the error names the file")
	// The broken file has no rate_limit: the running one still refuses this address.
	assert.Contains(t, announce("-qB4620-000000000005"), "too many requests from your address", "the running configuration stays")
	code, body := do(ctx, t, http.MethodGet, tr.http+"/healthz", "")
	assert.Equal(t, http.StatusOK, code, body)
	tr.proc.stop()
	assert.NoError(t, tr.proc.err)
}
