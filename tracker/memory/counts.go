package memory

import (
	"context"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

var _ tracker.SwarmCounter = (*Pool)(nil)

// SwarmCounts counts torrents and peers by reading every shard under its read lock, one shard
// at a time. It costs about a nanosecond per peer, which is fine for a metrics scrape every few
// seconds and keeps no counter on the announce path that could drift.
func (p *Pool) SwarmCounts(ctx context.Context) (models.SwarmCounts, error) {
	var c models.SwarmCounts
	for i := range p.shards {
		if err := ctx.Err(); err != nil {
			return c, err
		}
		s := &p.shards[i]
		s.mu.RLock()
		c.Torrents += s.n
		for ti := range s.recs {
			t := &s.recs[ti]
			if !t.used {
				continue
			}
			for j, e := range t.ents() {
				if j < t.seeders() {
					c.Seeders[e.family()]++
				} else {
					c.Leechers[e.family()]++
				}
			}
		}
		s.mu.RUnlock()
	}
	return c, nil
}

var (
	_ tracker.TorrentCounter = (*Pool)(nil)
	_ tracker.SwarmDropper   = (*Pool)(nil)
)

// TorrentCounts counts one swarm's peers by family under its shard's read lock.
func (p *Pool) TorrentCounts(_ context.Context, ih models.InfoHash) (models.SwarmCounts, error) {
	var c models.SwarmCounts
	s := p.shardFor(ih)
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.get(ih)
	if t == nil {
		return c, nil
	}
	c.Torrents = 1
	for j, e := range t.ents() {
		if j < t.seeders() {
			c.Seeders[e.family()]++
		} else {
			c.Leechers[e.family()]++
		}
	}
	return c, nil
}

// DropSwarm removes ih's peers. A public torrent goes with them; a site's torrent stays
// registered, with its snatch count, and the site is not told of the peers (the reaper would
// have dropped them silently too).
func (p *Pool) DropSwarm(_ context.Context, ih models.InfoHash) (int, error) {
	s := p.shardFor(ih)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.get(ih)
	if t == nil {
		return 0, nil
	}
	n := int(t.n)
	if t.x != nil && t.x.site != nil {
		for i := n - 1; i >= 0; i-- {
			t.remove(i)
		}
		s.usage.addPeers(-n)
		return n, nil
	}
	s.drop(ih)
	return n, nil
}

var _ tracker.FullScraper = (*Pool)(nil)

// ScrapeAll reads every torrent's counts, a shard at a time under its read lock, and hands
// each shard's to fn after letting go of the lock.
func (p *Pool) ScrapeAll(ctx context.Context, fn func(batch []models.TorrentStats) error) error {
	var batch []models.TorrentStats
	for i := range p.shards {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := &p.shards[i]
		batch = batch[:0]
		s.mu.RLock()
		for ti := range s.recs {
			t := &s.recs[ti]
			if !t.used {
				continue
			}
			f := models.TorrentStats{InfoHash: t.ih, Seeders: t.seeders(), Leechers: t.leechers(), Snatches: int(t.snatches), Registered: true}
			if t.x != nil && t.x.site != nil {
				f.ID = t.x.site.id
			}
			batch = append(batch, f)
		}
		s.mu.RUnlock()
		if len(batch) > 0 {
			if err := fn(batch); err != nil {
				return err
			}
		}
	}
	return nil
}
