//go:build linux

package main

// Ocelot parity (issue 14): what a Gazelle site sees of the tracker, checked end to end against
// the binary and a real MariaDB, each case with its own database and tracker process.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startOcelot starts the tracker in private mode on dsn, flushing every 100 ms, with the
// settings of startPrivate changed by extra.
func startOcelot(ctx context.Context, t *testing.T, bin, dsn string, extra map[string]any) *privateTracker {
	t.Helper()
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	cfg := map[string]any{
		"addr":             addr,
		"private_enabled":  true,
		"site_password":    sitePassword,
		"report_password":  reportKey,
		"announce":         "30m",
		"min_announce":     "15m",
		"shutdown_timeout": "20s",
		"backend": map[string]any{
			"driver": "gazelle",
			"params": map[string]any{"dsn": dsn, "schema": "opsnet", "flush_interval": "100ms"},
		},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	data, err := json.Marshal(cfg)
	require.NoError(t, err)
	cfgPath := filepath.Join(dir, "chihaya.json")
	require.NoError(t, os.WriteFile(cfgPath, data, 0o600))
	logPath := filepath.Join(dir, "chihaya.log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.CommandContext(ctx, bin, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	p := &privateTracker{t: t, url: "http://" + addr, cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	})
	// The tracker answers once it has loaded the site: alice's passkey then scrapes.
	eventually(t, 20*time.Second, "the tracker to load the site", func() (bool, string) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("tracker exited: %v\n%s", err, tail(logPath, 30))
		default:
		}
		resp, err := http.Get(p.url + "/" + alicePasskey + "/scrape?info_hash=" + pct(normalTorrent))
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return p
}

// bdict decodes a bencoded dictionary answer.
func bdict(t *testing.T, body string) map[string]any {
	t.Helper()
	v, n, err := bdecode([]byte(body), 0)
	require.NoError(t, err, "%q", body)
	require.Equal(t, len(body), n, "trailing bytes after the answer %q", body)
	d, ok := v.(map[string]any)
	require.True(t, ok, "not a dictionary: %q", body)
	return d
}

// scrapeFiles scrapes with passkey and returns the decoded answer.
func (p *privateTracker) scrape(t *testing.T, passkey string, hashes ...[]byte) map[string]any {
	t.Helper()
	q := ""
	for i, h := range hashes {
		if i > 0 {
			q += "&"
		}
		q += "info_hash=" + pct(h)
	}
	return bdict(t, get(t, p.url+"/"+passkey+"/scrape?"+q))
}

// update calls the site's update API and requires Ocelot's "success".
func (p *privateTracker) update(t *testing.T, query string) {
	t.Helper()
	require.Equal(t, "success", get(t, p.url+"/"+sitePassword+"/update?"+query))
}

// TestOcelotParity runs the cases of issue 14, each on a fresh database and tracker.
func TestOcelotParity(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	gazelleDB(t) // skips without MariaDB before the build
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	// open starts a tracker on a fresh database.
	open := func(t *testing.T, extra map[string]any) (*privateTracker, *sql.DB) {
		dsn := gazelleDB(t)
		db, err := sql.Open("mysql", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return startOcelot(ctx, t, bin, dsn, extra), db
	}

	// Item 1: a private scrape answers only a user's passkey.
	t.Run("scrape needs a passkey", func(t *testing.T) {
		p, _ := open(t, nil)
		require.NotContains(t, p.announce(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}), "failure reason")
		files := p.scrape(t, erinPasskey, normalTorrent)["files"].(map[string]any)
		assert.Equal(t, map[string]any{"complete": int64(0), "downloaded": int64(3), "incomplete": int64(1)}, files[string(normalTorrent)], "a user scrapes")
		for _, passkey := range []string{"nobodynobodynobodynobodynobody00", "davedavedavedavedavedavedavede04"} {
			d := p.scrape(t, passkey, normalTorrent)
			assert.Equal(t, "Passkey not found", d["failure reason"], passkey)
			assert.NotContains(t, d, "files", passkey)
		}
		d := bdict(t, get(t, p.url+"/scrape?info_hash="+pct(normalTorrent)))
		assert.Equal(t, "Passkey not found", d["failure reason"], "no passkey")

		p.update(t, "action=remove_user&passkey="+erinPasskey)
		d = p.scrape(t, erinPasskey, normalTorrent)
		assert.Equal(t, "Passkey not found", d["failure reason"], "a removed user")
		assert.NotContains(t, d, "files")
	})
}

var _ = fmt.Sprint
