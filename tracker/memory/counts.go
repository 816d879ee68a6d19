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
