package gazelle

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

const skipNoMySQL = "MariaDB not available: run `bash .ci/run`, or `eval \"$(bash .ci/mariadb.sh)\"` " +
	"and set CHIHAYA_MYSQL_DSN"

// testDB makes a database of its own on the server CHIHAYA_MYSQL_DSN points at, loads
// testdata/schema_<layout>.sql and seed_<layout>.sql into it, drops it when the test ends, and
// returns a DSN for it. Without CHIHAYA_MYSQL_DSN the test is skipped, or fails when
// CHIHAYA_REQUIRE_MYSQL=1 (as in CI).
func testDB(t *testing.T, layout Schema) string {
	t.Helper()
	return testDBOn(t, serverDSN(t), layout)
}

// serverDSN returns CHIHAYA_MYSQL_DSN, or skips the test without it (fails it when
// CHIHAYA_REQUIRE_MYSQL=1, as in CI).
func serverDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("CHIHAYA_MYSQL_DSN")
	if dsn == "" {
		if os.Getenv("CHIHAYA_REQUIRE_MYSQL") == "1" {
			t.Fatal("CHIHAYA_REQUIRE_MYSQL=1 but CHIHAYA_MYSQL_DSN is unset; " + skipNoMySQL)
		}
		t.Skip(skipNoMySQL)
	}
	return dsn
}

// testDBOn is testDB on the server that dsn (with no database) points at.
func testDBOn(t *testing.T, dsn string, layout Schema) string {
	t.Helper()
	base, err := mysql.ParseDSN(dsn)
	require.NoError(t, err, "CHIHAYA_MYSQL_DSN")

	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	name := "chihaya_test_" + hex.EncodeToString(suffix[:])

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	server := base.Clone()
	server.DBName = ""
	admin, err := sql.Open("mysql", server.FormatDSN())
	require.NoError(t, err)
	_, err = admin.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4")
	if err != nil {
		_ = admin.Close()
		require.NoError(t, err, "create database %s", name)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		_ = admin.Close()
	})

	load := base.Clone()
	load.DBName = name
	load.MultiStatements = true
	db, err := sql.Open("mysql", load.FormatDSN())
	require.NoError(t, err)
	defer db.Close()
	for _, file := range []string{"schema_" + string(layout) + ".sql", "seed_" + string(layout) + ".sql"} {
		script, err := os.ReadFile(filepath.Join("testdata", file))
		require.NoError(t, err)
		_, err = db.ExecContext(ctx, string(script))
		require.NoError(t, err, "load testdata/%s", file)
	}

	out := base.Clone()
	out.DBName = name
	return out.FormatDSN()
}

// openTest opens a Conn on a fresh seeded database of the layout and closes it when the test
// ends.
func openTest(t *testing.T, layout Schema) (*Conn, string) {
	t.Helper()
	dsn := testDB(t, layout)
	p := DefaultParams()
	p.DSN = dsn
	p.Schema = layout
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, c.Close(ctx))
	})
	return c, dsn
}

func hash(t *testing.T, h string) models.InfoHash {
	t.Helper()
	var ih models.InfoHash
	b, err := hex.DecodeString(h)
	require.NoError(t, err)
	require.Len(t, b, len(ih))
	copy(ih[:], b)
	return ih
}

func TestParseParams(t *testing.T) {
	const dsn = "chihaya:s3cret@tcp(db.example:3306)/gazelle"
	tests := []struct {
		name   string
		params string
		want   Params
		// errKey is the key a failure names; errHas is part of its message.
		errKey string
		errHas string
	}{
		{
			name:   "dsn only: defaults for the rest",
			params: `{"dsn": "` + dsn + `"}`,
			want:   Params{DSN: dsn, Schema: OPSnet, FlushInterval: 3 * time.Second, FlushTimeout: 30 * time.Second, QueueLimit: 100000},
		},
		{
			name: "every key",
			params: `{"dsn": "` + dsn + `", "schema": "whatcd", "flush_interval": "500ms", "flush_timeout": "5s",
				"queue_limit": 10, "readonly": true, "site_url": "http://127.0.0.1:8080/", "site_password": "` + sitePassword + `"}`,
			want: Params{DSN: dsn, Schema: WhatCD, FlushInterval: 500 * time.Millisecond, FlushTimeout: 5 * time.Second,
				QueueLimit: 10, ReadOnly: true, SiteURL: "http://127.0.0.1:8080/", SitePassword: sitePassword},
		},
		{name: "no params", params: ``, errKey: "params.dsn", errHas: "missing"},
		{name: "null params", params: `null`, errKey: "params.dsn", errHas: "missing"},
		{name: "empty object", params: `{}`, errKey: "params.dsn", errHas: "missing"},
		{name: "not an object", params: `["dsn"]`, errKey: "params", errHas: "JSON object"},
		{name: "trailing data", params: `{"dsn": "` + dsn + `"} {}`, errKey: "params", errHas: "trailing"},
		{name: "unknown key", params: `{"dsn": "` + dsn + `", "flush_intervall": "3s"}`, errKey: "params.flush_intervall", errHas: "unknown key"},
		{name: "mysql_host is not ours", params: `{"mysql_host": "localhost"}`, errKey: "params.mysql_host", errHas: "unknown key"},
		{name: "empty dsn", params: `{"dsn": ""}`, errKey: "params.dsn", errHas: "empty"},
		{name: "dsn not a string", params: `{"dsn": 5}`, errKey: "params.dsn", errHas: "want a string"},
		{name: "dsn without database", params: `{"dsn": "chihaya:s3cret@tcp(db.example:3306)/"}`, errKey: "params.dsn", errHas: "names no database"},
		{name: "dsn without slash", params: `{"dsn": "chihaya:s3cret@tcp(db.example:3306)"}`, errKey: "params.dsn", errHas: "missing the slash"},
		{name: "dsn with a bad param", params: `{"dsn": "` + dsn + `?parseTime=maybe"}`, errKey: "params.dsn", errHas: "invalid bool value"},
		{name: "unknown schema", params: `{"dsn": "` + dsn + `", "schema": "ops"}`, errKey: "params.schema", errHas: `got "ops"`},
		{name: "schema not a string", params: `{"dsn": "` + dsn + `", "schema": 1}`, errKey: "params.schema", errHas: "want"},
		{name: "flush_interval not a duration", params: `{"dsn": "` + dsn + `", "flush_interval": 3}`, errKey: "params.flush_interval", errHas: "duration"},
		{name: "flush_interval bad string", params: `{"dsn": "` + dsn + `", "flush_interval": "3 seconds"}`, errKey: "params.flush_interval", errHas: "invalid duration"},
		{name: "flush_interval zero", params: `{"dsn": "` + dsn + `", "flush_interval": "0s"}`, errKey: "params.flush_interval", errHas: "positive"},
		{name: "queue_limit zero", params: `{"dsn": "` + dsn + `", "queue_limit": 0}`, errKey: "params.queue_limit", errHas: "positive"},
		{name: "queue_limit negative", params: `{"dsn": "` + dsn + `", "queue_limit": -1}`, errKey: "params.queue_limit", errHas: "positive"},
		{name: "queue_limit not an integer", params: `{"dsn": "` + dsn + `", "queue_limit": 1.5}`, errKey: "params.queue_limit", errHas: "integer"},
		{name: "readonly not a bool", params: `{"dsn": "` + dsn + `", "readonly": "yes"}`, errKey: "params.readonly", errHas: "true or false"},
		{name: "flush_timeout zero", params: `{"dsn": "` + dsn + `", "flush_timeout": "0s"}`, errKey: "params.flush_timeout", errHas: "positive"},
		{name: "site_url without password", params: `{"dsn": "` + dsn + `", "site_url": "http://127.0.0.1"}`, errKey: "params.site_password", errHas: "missing"},
		{name: "site_url not http", params: `{"dsn": "` + dsn + `", "site_url": "ftp://x", "site_password": "p"}`, errKey: "params.site_url", errHas: "http"},
		{name: "site_url without host", params: `{"dsn": "` + dsn + `", "site_url": "http:///x", "site_password": "p"}`, errKey: "params.site_url", errHas: "no host"},
		{name: "site_url with query", params: `{"dsn": "` + dsn + `", "site_url": "http://x/?a=b", "site_password": "p"}`, errKey: "params.site_url", errHas: "without"},
		{name: "site_password not a string", params: `{"dsn": "` + dsn + `", "site_password": 5}`, errKey: "params.site_password", errHas: "want a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseParams(json.RawMessage(tt.params))
			if tt.errKey == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
				return
			}
			require.Error(t, err)
			var ke *config.KeyError
			require.True(t, errors.As(err, &ke), "want a *config.KeyError, got %T: %v", err, err)
			assert.Equal(t, tt.errKey, ke.Key)
			assert.Contains(t, err.Error(), tt.errHas)
			assert.NotContains(t, err.Error(), "s3cret", "an error shows the password")
			assert.NotContains(t, err.Error(), sitePassword, "an error shows the site password")
		})
	}
}

const sitePassword = "00000000000000000000000000000000"

// TestParseParamsWithholdsPassword feeds DSNs whose password makes the MySQL driver's parse
// error quote part of it.
func TestParseParamsWithholdsPassword(t *testing.T) {
	for _, dsn := range []string{
		"chihaya:hunt/er2%ZZ@tcp(127.0.0.1:3306)",
		"chihaya:hu/nter2@tcp(127.0.0.1:3306)",
	} {
		t.Run(dsn, func(t *testing.T) {
			raw, err := json.Marshal(map[string]string{"dsn": dsn})
			require.NoError(t, err)
			_, err = ParseParams(raw)
			require.Error(t, err)
			assert.Contains(t, err.Error(), `"params.dsn"`)
			assert.Contains(t, err.Error(), "withheld")
			for _, part := range []string{"hunt", "er2", "nter2"} {
				assert.NotContains(t, err.Error(), part)
			}
		})
	}
}

func TestRegistered(t *testing.T) {
	assert.Contains(t, backend.Drivers(), "gazelle")

	_, err := backend.Open(config.DriverConfig{Name: "gazelle", Params: json.RawMessage(`{"dns": "x"}`)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `driver "gazelle"`)
	assert.Contains(t, err.Error(), `"params.dns"`)
}

// TestRegisteredOpens opens a real database through the registry, as chihaya.Boot does.
func TestRegisteredOpens(t *testing.T) {
	dsn := testDB(t, WhatCD)
	raw, err := json.Marshal(map[string]any{"dsn": dsn, "schema": "whatcd", "readonly": true})
	require.NoError(t, err)
	conn, err := backend.Open(config.DriverConfig{Name: "gazelle", Params: raw})
	require.NoError(t, err)
	c, ok := conn.(*Conn)
	require.True(t, ok, "gazelle's Conn is a %T", conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Load(ctx)
	require.NoError(t, err)
	assert.Len(t, s.Torrents, 5)
	require.NoError(t, conn.Close(ctx))
}

// freePort returns a loopback port that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// silentServer accepts TCP connections and never answers, like a database host whose server
// hangs. It returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func TestOpenUnreachable(t *testing.T) {
	const password = "Sup3r-Secret-Passw0rd"
	refused := "127.0.0.1:" + strconv.Itoa(freePort(t))
	silent := silentServer(t)
	tests := []struct {
		name string
		addr string
		opts string
	}{
		{name: "connection refused", addr: refused},
		{name: "server never answers", addr: silent, opts: "?timeout=300ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := json.Marshal(map[string]string{"dsn": "chihaya:" + password + "@tcp(" + tt.addr + ")/gazelle" + tt.opts})
			require.NoError(t, err)
			start := time.Now()
			conn, err := Driver{}.New(raw)
			elapsed := time.Since(start)
			require.Error(t, err)
			t.Logf("error: %v", err)
			assert.Nil(t, conn)
			assert.Less(t, elapsed, 5*time.Second, "an unreachable database must fail the start quickly")
			assert.Contains(t, err.Error(), tt.addr, "the error names the host")
			assert.Contains(t, err.Error(), `"chihaya"`, "the error names the user")
			assert.NotContains(t, err.Error(), password)
			assert.NotContains(t, err.Error(), "Sup3r")
		})
	}

	t.Run("context ends first", func(t *testing.T) {
		p := DefaultParams()
		p.DSN = "chihaya:" + password + "@tcp(" + silent + ")/gazelle"
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Open(ctx, p)
		require.Error(t, err)
		assert.Less(t, time.Since(start), 5*time.Second)
		assert.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
		assert.NotContains(t, err.Error(), password)
	})
}

func TestOpenWrongPassword(t *testing.T) {
	dsn := testDB(t, OPSnet)
	cfg, err := mysql.ParseDSN(dsn)
	require.NoError(t, err)
	const wrong = "not-the-Passw0rd"
	cfg.Passwd = wrong
	p := DefaultParams()
	p.DSN = cfg.FormatDSN()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Open(ctx, p)
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.Contains(t, err.Error(), "Access denied")
	assert.Contains(t, err.Error(), cfg.Addr)
	assert.NotContains(t, err.Error(), wrong)
}

func TestLoad(t *testing.T) {
	// Both seeds hold the same rows, so both layouts load the same state.
	want := &models.SiteState{
		Users: []models.User{
			{ID: 1, Passkey: "alicealicealicealicealicealice01", CanLeech: true},
			{ID: 2, Passkey: "bobbobbobbobbobbobbobbobbobbob02", CanLeech: false},
			{ID: 3, Passkey: "carolcarolcarolcarolcarolcarol03", CanLeech: true, Protected: true},
			{ID: 5, Passkey: "erinerinerinerinerinerinerin0005", CanLeech: true, Protected: true},
		},
		Torrents: []models.Torrent{
			{ID: 1, InfoHash: hash(t, "0102030405060708090a0b0c0d0e0f1011121314"), Freeleech: models.Normal, Snatches: 3},
			{ID: 2, InfoHash: hash(t, "aabbccddeeff00112233445566778899aabbccdd"), Freeleech: models.Free, Snatches: 0},
			{ID: 3, InfoHash: hash(t, "ffeeddccbbaa99887766554433221100ffee2000"), Freeleech: models.Neutral, Snatches: 12},
			{ID: 4, InfoHash: hash(t, "2525252525252525252525252525252525252525"), Freeleech: models.Normal, Snatches: 0},
			{ID: 5, InfoHash: hash(t, "5555555555555555555555555555555555555555"), Freeleech: models.Normal, Snatches: 1},
		},
		Tokens:    []models.Token{{UserID: 1, TorrentID: 2}, {UserID: 3, TorrentID: 4}, {UserID: 5, TorrentID: 3}},
		Whitelist: []string{"-qB42", "-TR30", "-DE2", "M"},
	}
	for _, layout := range []Schema{OPSnet, WhatCD} {
		t.Run(string(layout), func(t *testing.T) {
			t.Parallel()
			c, dsn := openTest(t, layout)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			got, err := c.Load(ctx)
			require.NoError(t, err)
			assert.Equal(t, want, got)

			t.Run("reload sees changes", func(t *testing.T) {
				cfg, err := mysql.ParseDSN(dsn)
				require.NoError(t, err)
				cfg.MultiStatements = true
				db, err := sql.Open("mysql", cfg.FormatDSN())
				require.NoError(t, err)
				defer db.Close()
				_, err = db.ExecContext(ctx, `UPDATE users_main SET Enabled = '2' WHERE ID = 2;
					UPDATE torrents SET freetorrent = '1' WHERE ID = 1;
					UPDATE users_freeleeches SET Expired = 1 WHERE UserID = 5;
					DELETE FROM xbt_client_whitelist`)
				require.NoError(t, err)

				got, err := c.Load(ctx)
				require.NoError(t, err)
				assert.Equal(t, []uint64{1, 3, 5}, userIDs(got.Users))
				assert.Equal(t, models.Free, got.Torrents[0].Freeleech)
				assert.Equal(t, []models.Token{{UserID: 1, TorrentID: 2}, {UserID: 3, TorrentID: 4}}, got.Tokens)
				assert.Empty(t, got.Whitelist, "an empty table disables the whitelist")
			})

			t.Run("malformed info_hash is left out", func(t *testing.T) {
				cfg, err := mysql.ParseDSN(dsn)
				require.NoError(t, err)
				cfg.MultiStatements = true
				db, err := sql.Open("mysql", cfg.FormatDSN())
				require.NoError(t, err)
				defer db.Close()
				_, err = db.ExecContext(ctx, `ALTER TABLE torrents MODIFY info_hash varbinary(40) NOT NULL;
					INSERT INTO torrents (ID, GroupID, info_hash, freetorrent) VALUES (6, 14, UNHEX('0102'), '0')`)
				require.NoError(t, err)

				got, err := c.Load(ctx)
				require.NoError(t, err)
				require.Len(t, got.Torrents, 5)
				assert.Equal(t, uint64(5), got.Torrents[4].ID)
			})
		})
	}
}

func userIDs(users []models.User) []uint64 {
	ids := make([]uint64, len(users))
	for i, u := range users {
		ids[i] = u.ID
	}
	return ids
}

func TestLoadHonoursContext(t *testing.T) {
	c, _ := openTest(t, OPSnet)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Load(ctx)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.Canceled), "got %v", err)
	assert.True(t, strings.HasPrefix(err.Error(), "gazelle: load"), "got %v", err)
}

func TestLoadMissingTable(t *testing.T) {
	// A whatcd database read as opsnet has no torrents_leech_stats: the error says which load
	// failed and keeps the server's error.
	dsn := testDB(t, WhatCD)
	p := DefaultParams()
	p.DSN = dsn
	p.Schema = OPSnet
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, p)
	require.NoError(t, err)
	defer c.Close(ctx)
	_, err = c.Load(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "gazelle: load torrents:")
	var me *mysql.MySQLError
	require.True(t, errors.As(err, &me), "got %T: %v", err, err)
	assert.Equal(t, uint16(1146), me.Number, "ER_NO_SUCH_TABLE")
}

// TestRecordAnnounceAndClose needs no database: nothing is queued, so Close has nothing to
// write, and closing an unused pool does no I/O.
func TestRecordAnnounceAndClose(t *testing.T) {
	c := offlineConn(t, DefaultParams())
	ctx := context.Background()

	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				// Public-mode deltas (no user or torrent ID) are ignored.
				assert.NoError(t, c.RecordAnnounce(ctx, &models.AnnounceDelta{Uploaded: 1}))
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, c.pendingRows())

	require.NoError(t, c.Close(ctx))
	assert.ErrorIs(t, c.RecordAnnounce(ctx, &models.AnnounceDelta{}), ErrClosed)
	assert.ErrorIs(t, c.RecordAnnounce(ctx, &models.AnnounceDelta{UserID: 1, TorrentID: 1}), ErrClosed)
	assert.ErrorIs(t, c.RecordReap(ctx, []models.TorrentStats{{ID: 1}}), ErrClosed)
	_, err := c.Load(ctx)
	assert.ErrorIs(t, err, ErrClosed)
	assert.NoError(t, c.Close(ctx), "closing twice is not an error")
}

func TestParseFreeleech(t *testing.T) {
	tests := []struct {
		in   string
		want models.FreeleechType
	}{
		{"0", models.Normal},
		{"1", models.Free},
		{"2", models.Neutral},
		{"", models.Normal},
		{"3", models.Normal},
		{"12", models.Normal},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, parseFreeleech([]byte(tt.in)), "freetorrent %q", tt.in)
	}
	assert.Equal(t, models.Normal, parseFreeleech(nil), "NULL")
}

func TestSharesFragment(t *testing.T) {
	tests := []struct {
		msg, secret string
		want        bool
	}{
		{"invalid dbname \"ret%ZZ@tcp\"", "u:sec/ret%ZZ", true},
		{"missing the slash", "u:secret", false},
		{"pw", "pw", true},
		{"anything", "", false},
		{"network 'u:x' unknown", "u:x", true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, sharesFragment(tt.msg, tt.secret, 4), "%q in %q", tt.secret, tt.msg)
	}
}
