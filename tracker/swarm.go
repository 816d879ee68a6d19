package tracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/chihaya/chihaya/tracker/models"
)

// SwarmCounter is an optional capability of a Conn: reporting the sizes of all swarms, for
// metrics. Sizes read from storage stay true across reaping and restarts, where sizes counted
// from events would drift.
type SwarmCounter interface {
	SwarmCounts(ctx context.Context) (models.SwarmCounts, error)
}

// ErrNotSupported is returned for an optional capability the driver lacks.
var ErrNotSupported = errors.New("tracker: not supported by the driver")

// SwarmCounts returns the sizes of all swarms, or ErrNotSupported when the driver cannot tell.
func (t *Tracker) SwarmCounts(ctx context.Context) (models.SwarmCounts, error) {
	conn, err := t.pool.Get()
	if err != nil {
		return models.SwarmCounts{}, fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	sc, ok := conn.(SwarmCounter)
	if !ok {
		return models.SwarmCounts{}, ErrNotSupported
	}
	counts, err := sc.SwarmCounts(ctx)
	if err != nil {
		return counts, fmt.Errorf("tracker: swarm counts: %w", err)
	}
	return counts, nil
}

// TorrentCounter is an optional capability of a Conn: the size of one swarm, by family
// (Torrents is 1 when the torrent exists, else 0 and every count is 0).
type TorrentCounter interface {
	TorrentCounts(ctx context.Context, ih models.InfoHash) (models.SwarmCounts, error)
}

// SwarmDropper is an optional capability of a Conn: removing one swarm at once, for a torrent
// the operator refuses. It returns how many peers went. A torrent registered by a private site
// keeps its registration; only its peers go.
type SwarmDropper interface {
	DropSwarm(ctx context.Context, ih models.InfoHash) (int, error)
}

// TorrentCounts returns the size of ih's swarm by family, or ErrNotSupported.
func (t *Tracker) TorrentCounts(ctx context.Context, ih models.InfoHash) (models.SwarmCounts, error) {
	conn, err := t.pool.Get()
	if err != nil {
		return models.SwarmCounts{}, fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	tc, ok := conn.(TorrentCounter)
	if !ok {
		return models.SwarmCounts{}, ErrNotSupported
	}
	c, err := tc.TorrentCounts(ctx, ih)
	if err != nil {
		return c, fmt.Errorf("tracker: torrent counts %x: %w", ih[:], err)
	}
	return c, nil
}

// DropSwarm removes ih's swarm now, or returns ErrNotSupported; see SwarmDropper.
func (t *Tracker) DropSwarm(ctx context.Context, ih models.InfoHash) (int, error) {
	conn, err := t.pool.Get()
	if err != nil {
		return 0, fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	d, ok := conn.(SwarmDropper)
	if !ok {
		return 0, ErrNotSupported
	}
	n, err := d.DropSwarm(ctx, ih)
	if err != nil {
		return n, fmt.Errorf("tracker: drop swarm %x: %w", ih[:], err)
	}
	return n, nil
}

// FullScraper is an optional capability of a Conn: reading the counts of every torrent, for a
// full scrape. It calls fn with batches (a shard's torrents, say) that fn may keep only during
// the call.
type FullScraper interface {
	ScrapeAll(ctx context.Context, fn func(batch []models.TorrentStats) error) error
}

// ScrapeAll reads the counts of every torrent the access list serves, in batches, or returns
// ErrNotSupported.
func (t *Tracker) ScrapeAll(ctx context.Context, fn func(batch []models.TorrentStats) error) error {
	conn, err := t.pool.Get()
	if err != nil {
		return fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	fs, ok := conn.(FullScraper)
	if !ok {
		return ErrNotSupported
	}
	var kept []models.TorrentStats
	err = fs.ScrapeAll(ctx, func(batch []models.TorrentStats) error {
		if t.access == nil {
			return fn(batch)
		}
		kept = kept[:0]
		for i := range batch {
			if t.authorized(&batch[i].InfoHash) {
				kept = append(kept, batch[i])
			}
		}
		return fn(kept)
	})
	if err != nil {
		return fmt.Errorf("tracker: full scrape: %w", err)
	}
	return nil
}

// AllTorrents returns the counts of every torrent the access list serves, in the order of
// their info hashes: what a full scrape answers, over HTTP and WebSocket alike.
func (t *Tracker) AllTorrents(ctx context.Context) ([]models.TorrentStats, error) {
	var all []models.TorrentStats
	err := t.ScrapeAll(ctx, func(batch []models.TorrentStats) error {
		all = append(all, batch...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(x, y models.TorrentStats) int { return bytes.Compare(x.InfoHash[:], y.InfoHash[:]) })
	return all, nil
}
