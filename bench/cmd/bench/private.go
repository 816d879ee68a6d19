package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/chihaya/chihaya/bench/loadgen"
)

// The private workload's Gazelle secrets: any 32 characters do.
const (
	benchSitePassword   = "00000000000000000000000benchsite"
	benchReportPassword = "000000000000000000000benchreport"
)

// privateDB is the Gazelle database of the private workload: a database of its own on a MariaDB
// server, either one given (-mysql-dsn, or CHIHAYA_MYSQL_DSN) or a throwaway one started with
// .ci/mariadb.sh and stopped at the end.
type privateDB struct {
	dsn     string // names the database
	cleanup []func()
}

// close drops the database and stops the server the bench started, if it did.
func (d *privateDB) close() {
	for i := len(d.cleanup) - 1; i >= 0; i-- {
		d.cleanup[i]()
	}
}

// mariadbMissing says what the private workload lacks when no server is given, or "".
func mariadbMissing(o options) string {
	if o.mysqlDSN != "" {
		return ""
	}
	for _, name := range []string{"mariadbd", "mysqld"} {
		if _, err := exec.LookPath(name); err == nil {
			return ""
		}
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if fileExists(filepath.Join(dir, name)) {
				return ""
			}
		}
	}
	return "MariaDB (for memory-private): apt-get install -y mariadb-server mariadb-client, or -mysql-dsn 'user:password@tcp(127.0.0.1:3306)/' of a server the bench may create a database on"
}

// openPrivateDB creates the private workload's database with Gazelle's tables
// (backend/gazelle/testdata/schema_opsnet.sql), users users and torrents torrents: user u has
// passkey loadgen.Passkey(u) and may leech, torrent t has info hash loadgen.InfoHash(t).
func (e *env) openPrivateDB(ctx context.Context, users, torrents int) (*privateDB, error) {
	d := &privateDB{}
	base := e.o.mysqlDSN
	if base == "" {
		envFile := filepath.Join(e.dir, "mariadb.env")
		fmt.Fprintln(os.Stderr, "bench: starting a throwaway MariaDB with .ci/mariadb.sh")
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(e.root, ".ci", "mariadb.sh"), envFile)
		cmd.Dir = e.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("start MariaDB: %w\n%s", err, out)
		}
		env, err := readEnvFile(envFile)
		if err != nil {
			return nil, err
		}
		base = env["CHIHAYA_MYSQL_DSN"]
		dir := env["CHIHAYA_MYSQL_DIR"]
		if base == "" || dir == "" {
			return nil, fmt.Errorf("%s: no CHIHAYA_MYSQL_DSN or CHIHAYA_MYSQL_DIR", envFile)
		}
		d.cleanup = append(d.cleanup, func() {
			stop := exec.Command("bash", filepath.Join(e.root, ".ci", "mariadb.sh"), "stop", dir)
			if out, err := stop.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "bench: stop MariaDB: %v\n%s", err, out)
			}
		})
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("-mysql-dsn: %w", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := "chihaya_bench_" + hex.EncodeToString(rnd[:])
	cfg.DBName = ""
	cfg.MultiStatements = true
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		d.close()
		return nil, fmt.Errorf("open MariaDB: %w", err)
	}
	d.cleanup = append(d.cleanup, func() { _ = admin.Close() })
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		d.close()
		return nil, fmt.Errorf("create database: %w", err)
	}
	d.cleanup = append(d.cleanup, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE "+name)
	})
	cfg.DBName = name
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		d.close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	schema, err := os.ReadFile(filepath.Join(e.root, "backend", "gazelle", "testdata", "schema_opsnet.sql"))
	if err != nil {
		d.close()
		return nil, fmt.Errorf("read Gazelle's schema: %w", err)
	}
	if _, err := db.ExecContext(ctx, string(schema)); err != nil {
		d.close()
		return nil, fmt.Errorf("create Gazelle's tables: %w", err)
	}
	err = insertRows(ctx, db, "INSERT INTO users_main (ID, Username, Enabled, can_leech, torrent_pass) VALUES ", "(?,?,'1',1,?)", users,
		func(i int) []any { k := loadgen.Passkey(i); return []any{i + 1, fmt.Sprintf("u%d", i+1), string(k[:])} })
	if err == nil {
		err = insertRows(ctx, db, "INSERT INTO users_leech_stats (UserID) VALUES ", "(?)", users,
			func(i int) []any { return []any{i + 1} })
	}
	if err == nil {
		err = insertRows(ctx, db, "INSERT INTO torrents (ID, GroupID, info_hash) VALUES ", "(?,1,?)", torrents,
			func(i int) []any { h := loadgen.InfoHash(i); return []any{i + 1, h[:]} })
	}
	if err == nil {
		err = insertRows(ctx, db, "INSERT INTO torrents_leech_stats (TorrentID) VALUES ", "(?)", torrents,
			func(i int) []any { return []any{i + 1} })
	}
	if err != nil {
		d.close()
		return nil, fmt.Errorf("fill Gazelle's tables: %w", err)
	}
	cfg.MultiStatements = false
	d.dsn = cfg.FormatDSN()
	return d, nil
}

// insertRows inserts n rows, 1000 a statement: head then n times row, row i's values being
// args(i).
func insertRows(ctx context.Context, db *sql.DB, head, row string, n int, args func(i int) []any) error {
	const batch = 1000
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		var b strings.Builder
		b.WriteString(head)
		vals := make([]any, 0, 3*(hi-lo))
		for i := lo; i < hi; i++ {
			if i > lo {
				b.WriteByte(',')
			}
			b.WriteString(row)
			vals = append(vals, args(i)...)
		}
		if _, err := db.ExecContext(ctx, b.String(), vals...); err != nil {
			return fmt.Errorf("%s...: %w", head, err)
		}
	}
	return nil
}

// readEnvFile reads the export NAME='VALUE' lines .ci/mariadb.sh writes.
func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[k] = strings.ReplaceAll(strings.Trim(v, "'"), `'\''`, "'")
	}
	return out, nil
}

// privateUsers is the number of users of the private workload for peers peers.
func (e *env) privateUsers(peers int) int {
	if e.o.privateUsers > 0 {
		return e.o.privateUsers
	}
	return max(1, peers/10)
}

// privateKeys are the config keys of Chihaya in private mode on the database at dsn: the
// gazelle backend with its defaults.
func privateKeys(dsn string) map[string]any {
	return map[string]any{
		"private_enabled": true,
		"site_password":   benchSitePassword,
		"report_password": benchReportPassword,
		"backend": map[string]any{
			"driver": "gazelle",
			"params": map[string]any{"dsn": dsn, "schema": "opsnet"},
		},
	}
}

// startPrivate starts Chihaya in private mode on the private database, and waits until it
// answers an announce with user 0's passkey to torrent 0 (the site is loaded).
func (e *env) startPrivate(ctx context.Context) (*proc, string, error) {
	if e.private == nil {
		return nil, "", errors.New("no private database")
	}
	return e.startChihaya(ctx, chihaya, privateKeys(e.private.dsn))
}
