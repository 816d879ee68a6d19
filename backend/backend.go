// Package backend connects the tracker to the slower, consistent database of a torrent-indexing
// site, such as Gazelle's. After every announce the core hands the backend an AnnounceDelta;
// the backend persists it in its own time. Drivers register themselves with Register from their
// package's init, in the manner of database/sql.
package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// Driver opens connections to one kind of backend.
type Driver interface {
	// New validates params (the driver's own section of the config, possibly empty) and opens a
	// connection. An error names the offending key.
	New(params json.RawMessage) (Conn, error)
}

// Conn is a connection to a backend. It is safe for concurrent use by many goroutines.
type Conn interface {
	// RecordAnnounce takes what one announce changed. It is called on the request path, so it
	// must not wait on slow storage: a driver queues the delta and writes it later. The delta is
	// valid only during the call; a driver copies what it keeps.
	RecordAnnounce(ctx context.Context, delta *models.AnnounceDelta) error
	// Close flushes whatever is queued, waiting no longer than ctx allows, and releases the
	// connection.
	Close(ctx context.Context) error
}

// SiteLoader is an optional capability of a Conn: loading the site's users, torrents, freeleech
// tokens and client whitelist, which private mode serves from memory. It is called at start and
// on SIGUSR1.
type SiteLoader interface {
	Load(ctx context.Context) (*models.SiteState, error)
}

// ReapRecorder is an optional capability of a Conn: being told the counts of the site's torrents
// whose swarms the reaper changed, so that their seeders and leechers stay true on the site. The
// core asserts it as tracker.ReapRecorder, which has the same method.
type ReapRecorder interface {
	RecordReap(ctx context.Context, torrents []models.TorrentStats) error
}

// BaselineKeeper is an optional capability of a Conn that keeps the peers' baselines (the
// SiteState.Baselines its Load returns) itself: being told the tracker's baseline_lifetime, so
// that it forgets a baseline when the tracker does. It is called once, after New and before the
// first Load.
type BaselineKeeper interface {
	KeepBaselines(lifetime time.Duration)
}

var (
	driversMu sync.RWMutex
	drivers   = make(map[string]Driver)
)

// Register makes a backend driver available under name. It panics when driver is nil or name is
// taken: both are programming errors found at init.
func Register(name string, driver Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if driver == nil {
		panic("backend: Register driver is nil")
	}
	if _, dup := drivers[name]; dup {
		panic("backend: Register called twice for driver " + name)
	}
	drivers[name] = driver
}

// Drivers returns the names of the registered drivers, sorted.
func Drivers() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	names := make([]string, 0, len(drivers))
	for name := range drivers {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Open opens a connection with the driver that cfg names, passing it cfg's params.
func Open(cfg config.DriverConfig) (Conn, error) {
	driversMu.RLock()
	driver, ok := drivers[cfg.Name]
	driversMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("backend: unknown driver %q (forgotten import?); registered: %s",
			cfg.Name, strings.Join(Drivers(), ", "))
	}
	conn, err := driver.New(cfg.Params)
	if err != nil {
		return nil, fmt.Errorf("backend: driver %q: %w", cfg.Name, err)
	}
	return conn, nil
}
