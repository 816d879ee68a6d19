//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The seed's users and torrents (backend/gazelle/testdata/seed_opsnet.sql).
const (
	alicePasskey = "alicealicealicealicealicealice01" // user 1, may leech
	bobPasskey   = "bobbobbobbobbobbobbobbobbobbob02" // user 2, may not leech
	carolPasskey = "carolcarolcarolcarolcarolcarol03" // user 3, token on torrent 4
	erinPasskey  = "erinerinerinerinerinerinerin0005" // user 5
	sitePassword = "00000000000000000000000000site01"
	reportKey    = "0000000000000000000000000report1"
)

var (
	normalTorrent  = mustHex("0102030405060708090a0b0c0d0e0f1011121314") // 1, normal
	freeTorrent    = mustHex("aabbccddeeff00112233445566778899aabbccdd") // 2, free
	neutralTorrent = mustHex("ffeeddccbbaa99887766554433221100ffee2000") // 3, neutral
	tokenTorrent   = mustHex("2525252525252525252525252525252525252525") // 4, carol's token
	deletedTorrent = mustHex("5555555555555555555555555555555555555555") // 5
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// gazelleDB creates a database with Gazelle's OPSnet schema and seed, dropped at cleanup, and
// returns its DSN.
func gazelleDB(t *testing.T) string {
	t.Helper()
	base := os.Getenv("CHIHAYA_MYSQL_DSN")
	if base == "" {
		if os.Getenv("CHIHAYA_REQUIRE_MYSQL") == "1" {
			t.Fatal("CHIHAYA_REQUIRE_MYSQL=1 but CHIHAYA_MYSQL_DSN is not set")
		}
		t.Skip("MariaDB not available: run `bash .ci/run`, or `eval \"$(bash .ci/mariadb.sh)\"` and set CHIHAYA_MYSQL_DSN")
	}
	cfg, err := mysql.ParseDSN(base)
	require.NoError(t, err)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "chihaya_e2e_" + hex.EncodeToString(rnd[:])
	cfg.MultiStatements = true
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = admin.ExecContext(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE "+name)
	})
	cfg.DBName = name
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	defer db.Close()
	for _, f := range []string{"schema_opsnet.sql", "seed_opsnet.sql"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "backend", "gazelle", "testdata", f))
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, string(data))
		require.NoError(t, err, f)
	}
	cfg.MultiStatements = false
	return cfg.FormatDSN()
}

// privateTracker is a chihaya process in private mode.
type privateTracker struct {
	t    *testing.T
	url  string
	cmd  *exec.Cmd
	done chan error
	log  string
}

// startPrivate starts the tracker in private mode on dsn, flushing every flush, and waits
// until it answers HTTP.
func startPrivate(ctx context.Context, t *testing.T, bin, dsn, flush string) *privateTracker {
	return launchPrivate(ctx, t, bin, dsn, flush, nil, "/", nil)
}

// launchPrivate starts the tracker in private mode on dsn, flushing every flush, with the
// settings changed by extra, and waits until GET readyPath answers (with a status ready
// accepts, when ready is set).
func launchPrivate(ctx context.Context, t *testing.T, bin, dsn, flush string, extra map[string]any, readyPath string, ready func(status int) bool) *privateTracker {
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
			"params": map[string]any{"dsn": dsn, "schema": "opsnet", "flush_interval": flush},
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
	eventually(t, 20*time.Second, "the tracker to answer "+readyPath, func() (bool, string) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("tracker exited: %v\n%s", err, tail(logPath, 30))
		default:
		}
		resp, err := http.Get(p.url + readyPath)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return ready == nil || ready(resp.StatusCode), resp.Status
	})
	return p
}

// stop sends SIGTERM and requires a clean exit within the shutdown deadline.
func (p *privateTracker) stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		require.NoError(p.t, err, "exit after SIGTERM\n%s", tail(p.log, 30))
	case <-time.After(30 * time.Second):
		p.t.Fatalf("tracker did not exit after SIGTERM\n%s", tail(p.log, 30))
	}
}

type ann struct {
	passkey  string
	ih       []byte
	peer     string // appended to "-qB4250-" and padded to 20 bytes
	event    string
	up, down int64
	left     int64
}

// get returns the body of an HTTP GET.
func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", u, body)
	return string(body)
}

func (p *privateTracker) announce(t *testing.T, a ann) string {
	t.Helper()
	peerID := fmt.Sprintf("%-20s", "-qB4250-"+a.peer)[:20]
	q := "info_hash=" + pct(a.ih) + "&peer_id=" + pct([]byte(peerID)) +
		fmt.Sprintf("&port=6881&uploaded=%d&downloaded=%d&left=%d&compact=1", a.up, a.down, a.left)
	if a.event != "" {
		q += "&event=" + a.event
	}
	return get(t, p.url+"/"+a.passkey+"/announce?"+q)
}

// pct percent-escapes every byte but letters and digits, as BitTorrent clients do with binary
// values (url.QueryEscape would write a space as "+", which a tracker reads as a literal "+").
func pct(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, status := cond()
		if ok {
			return
		}
		last = status
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %s", what, last)
}

func userStats(t *testing.T, db *sql.DB, id int) (up, down int64) {
	t.Helper()
	require.NoError(t, db.QueryRow("SELECT Uploaded, Downloaded FROM users_leech_stats WHERE UserID = ?", id).Scan(&up, &down))
	return up, down
}

// TestGazelleEndToEnd runs the tracker binary in private mode against a real MariaDB with
// Gazelle's schema: Ocelot's failures, accounting (normal, free, neutral, token), snatches,
// xbt_files_users, the update and report APIs, and a restart whose SIGTERM flush and baselines
// lose no credit.
func TestGazelleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	dsn := gazelleDB(t)
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())

	p := startPrivate(ctx, t, bin, dsn, "200ms")

	// Failures, word for word.
	assert.Contains(t, p.announce(t, ann{passkey: strings.Repeat("x", 32), ih: normalTorrent, peer: "x", left: 1}), "14:failure reason17:Passkey not found")
	assert.Contains(t, p.announce(t, ann{passkey: alicePasskey, ih: mustHex("9999999999999999999999999999999999999999"), peer: "a", left: 1}), "failure reason20:Unregistered torrent")
	assert.Contains(t, p.announce(t, ann{passkey: bobPasskey, ih: normalTorrent, peer: "b", event: "started", left: 5}), "Access denied, leeching forbidden")
	body := get(t, p.url+"/"+alicePasskey+"/announce?info_hash="+pct(normalTorrent)+"&peer_id=-XX0001-aaaaaaaaaaaa&port=1&uploaded=0&downloaded=0&left=1")
	assert.Contains(t, body, "Your client is not on the whitelist")

	// Accounting: a baseline, then credit by the torrent's freeleech type and the user's tokens.
	seq := []ann{
		{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 1000},
		{passkey: alicePasskey, ih: normalTorrent, peer: "a1", up: 500, down: 300, left: 700},
		{passkey: alicePasskey, ih: neutralTorrent, peer: "a3", event: "started", left: 1000},
		{passkey: alicePasskey, ih: neutralTorrent, peer: "a3", up: 100, down: 100, left: 900},
		{passkey: carolPasskey, ih: tokenTorrent, peer: "c4", event: "started", left: 9000},
		{passkey: carolPasskey, ih: tokenTorrent, peer: "c4", up: 40, down: 4000, left: 5000},
		{passkey: carolPasskey, ih: freeTorrent, peer: "c2", event: "started", left: 100},
		{passkey: carolPasskey, ih: freeTorrent, peer: "c2", up: 10, down: 20, left: 80},
		{passkey: erinPasskey, ih: normalTorrent, peer: "e1", event: "started", left: 100},
		{passkey: erinPasskey, ih: normalTorrent, peer: "e1", event: "completed", down: 100, left: 0},
	}
	for _, a := range seq {
		assert.NotContains(t, p.announce(t, a), "failure reason", "%+v", a)
	}
	eventually(t, 20*time.Second, "the flush of user credit", func() (bool, string) {
		a1, a2 := userStats(t, db, 1)
		c1, c2 := userStats(t, db, 3)
		e1, e2 := userStats(t, db, 5)
		got := fmt.Sprint(a1, a2, c1, c2, e1, e2)
		// alice 1000/500 + 500/300 (neutral credits nothing); carol 42/0 + 40 (token: no
		// download) + 10 (free: no download); erin 0/0 + 0/100.
		return got == fmt.Sprint(1500, 800, 92, 0, 0, 100), got
	})
	var tokenDown int64
	require.NoError(t, db.QueryRow("SELECT Downloaded FROM users_freeleeches WHERE UserID = 3 AND TorrentID = 4").Scan(&tokenDown))
	assert.EqualValues(t, 99+4000, tokenDown, "the token's download")
	eventually(t, 10*time.Second, "torrent 1's counts", func() (bool, string) {
		var seeders, leechers, snatched int
		if err := db.QueryRow("SELECT Seeders, Leechers, Snatched FROM torrents_leech_stats WHERE TorrentID = 1").Scan(&seeders, &leechers, &snatched); err != nil {
			return false, err.Error()
		}
		got := fmt.Sprint(seeders, leechers, snatched)
		return got == "1 2 4", got // erin seeds; alice and bob (hidden) leech; 3 snatches + erin's
	})
	var snatches int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM xbt_snatched WHERE uid = 5 AND fid = 1").Scan(&snatches))
	assert.Equal(t, 1, snatches)
	var xfuUp, xfuDown int64
	require.NoError(t, db.QueryRow("SELECT uploaded, downloaded FROM xbt_files_users WHERE uid = 1 AND fid = 1").Scan(&xfuUp, &xfuDown))
	assert.EqualValues(t, 500, xfuUp, "xbt_files_users holds session totals")
	assert.EqualValues(t, 300, xfuDown)

	// The update API: a deleted torrent is refused with its reason.
	assert.Equal(t, "success", get(t, p.url+"/"+sitePassword+"/update?action=delete_torrent&id=5&reason=0&info_hash="+pct(deletedTorrent)))
	assert.Contains(t, p.announce(t, ann{passkey: alicePasskey, ih: deletedTorrent, peer: "a5", left: 1}), "Unregistered torrent: Dupe")
	assert.Contains(t, get(t, p.url+"/"+reportKey+"/report?get=user&key="+alicePasskey), `"leeching":2`)

	// SIGUSR1 reloads users from the database while announces keep being answered.
	const heidiPasskey = "heidiheidiheidiheidiheidiheidi08"
	assert.Contains(t, p.announce(t, ann{passkey: heidiPasskey, ih: normalTorrent, peer: "h1", left: 1}), "Passkey not found")
	_, err = db.Exec("INSERT INTO users_main (ID, Username, Enabled, Visible, IP, can_leech, torrent_pass) VALUES (8, 'heidi', '1', '1', '203.0.113.20', 1, ?)", heidiPasskey)
	require.NoError(t, err)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGUSR1))
	eventually(t, 20*time.Second, "the reload to know heidi", func() (bool, string) {
		body := p.announce(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", up: 500, down: 300, left: 700})
		if strings.Contains(body, "failure reason") {
			return false, "alice refused during the reload: " + body
		}
		body = p.announce(t, ann{passkey: heidiPasskey, ih: normalTorrent, peer: "h1", event: "started", left: 1})
		return !strings.Contains(body, "failure reason"), body
	})

	// Stop: everything is flushed. Start again with a flush interval too long to matter, so
	// only the SIGTERM flush can write, and announce where alice left off: her baseline comes
	// back from xbt_files_users and the 200 new bytes are credited, not lost.
	p.stop()
	p = startPrivate(ctx, t, bin, dsn, "1h")
	assert.NotContains(t, p.announce(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", up: 700, down: 300, left: 700}), "failure reason")
	p.stop()
	up, down := userStats(t, db, 1)
	assert.EqualValues(t, 1700, up, "credit across a restart, written by the SIGTERM flush")
	assert.EqualValues(t, 800, down)
}
