// Package gazelle is the "gazelle" backend driver: it connects a private tracker to the MariaDB
// (or MySQL) database of a Gazelle site, in the way Ocelot does, so that Chihaya can replace
// Ocelot without changes to Gazelle. It knows both layouts of that database, OPSnet's (transfer
// totals in users_leech_stats and torrents_leech_stats) and classic WhatCD's (the same columns
// in users_main and torrents); the schema param picks one.
//
// At startup the tracker calls Load for the site's state: enabled users, torrents, unexpired
// freeleech tokens and the client whitelist (protocol.md §3.4, "Startup loads").
//
// Writing the announces' deltas back to the database (users_leech_stats, torrents_leech_stats,
// xbt_files_users, xbt_snatched, users_freeleeches) is not built yet: RecordAnnounce counts each
// delta and discards it.
//
// Import it for its side effect of registering the driver:
//
//	import _ "github.com/chihaya/chihaya/backend/gazelle"
package gazelle

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang/glog"

	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/tracker/models"
)

func init() {
	backend.Register("gazelle", Driver{})
}

// ErrClosed is returned by a Conn's methods after Close.
var ErrClosed = errors.New("gazelle: connection closed")

// Driver opens connections to Gazelle databases.
type Driver struct{}

// New parses and validates params (see Params and ParseParams), opens the database and pings
// it, waiting no longer than the DSN's timeout (10s when it sets none). An unreachable database
// is an error that names its address and user, never its password.
func (Driver) New(params json.RawMessage) (backend.Conn, error) {
	p, err := ParseParams(params)
	if err != nil {
		return nil, err
	}
	return Open(context.Background(), p)
}

// Conn is a connection to a Gazelle database. It is safe for concurrent use.
type Conn struct {
	db      *sql.DB
	params  Params
	queries queries
	// where names the database in errors: network, address, user and database, no password.
	where string

	// received counts the deltas RecordAnnounce accepted (and discarded: see there).
	received atomic.Uint64
	closed   atomic.Bool
}

// Open validates p, opens its database and pings it, waiting no longer than ctx allows nor than
// the DSN's timeout (10s when it sets none). Errors name the database's address and user, never
// its password.
func Open(ctx context.Context, p Params) (*Conn, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	cfg, err := p.mysqlConfig()
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("%s(%s)/%s as user %q", cfg.Net, cfg.Addr, cfg.DBName, cfg.User)
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, fmt.Errorf("gazelle: open %s: %w", where, err)
	}
	// Connections older than a server's usual wait_timeout are retired before the server drops
	// them under a query.
	db.SetConnMaxLifetime(5 * time.Minute)
	db.SetConnMaxIdleTime(time.Minute)

	pingCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("gazelle: connect to %s: %w", where, err)
	}
	return &Conn{db: db, params: p, queries: p.Schema.queries(), where: where}, nil
}

// RecordAnnounce accepts the delta and discards it. Writing deltas back to Gazelle's tables is
// not built yet: nothing is queued and nothing reaches the database, whatever ReadOnly says.
// It never blocks. After Close it returns ErrClosed.
func (c *Conn) RecordAnnounce(_ context.Context, _ *models.AnnounceDelta) error {
	if c.closed.Load() {
		return ErrClosed
	}
	c.received.Add(1)
	return nil
}

// Close releases the database connections. Nothing is queued to flush yet, so it waits only for
// queries in flight (such as a Load), and no longer than ctx allows: when ctx ends first it
// returns ctx's error and the connections are released in the background as those queries end.
// Closing twice is not an error.
func (c *Conn) Close(ctx context.Context) error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if n := c.received.Load(); n > 0 && glog.V(1) {
		glog.Infof("gazelle: closing; %d announce deltas were received and discarded (write-back is not built yet)", n)
	}
	done := make(chan error, 1)
	go func() { done <- c.db.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("gazelle: close %s: %w", c.where, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gazelle: close %s: %w", c.where, ctx.Err())
	}
}

// mysqlLogger sends the MySQL driver's own messages (dropped connections and the like) to glog
// instead of the standard logger.
type mysqlLogger struct{}

// Print logs the driver's message as a warning.
func (mysqlLogger) Print(v ...any) {
	glog.WarningDepth(1, append([]any{"gazelle: mysql: "}, v...)...)
}

var _ mysql.Logger = mysqlLogger{}
