package redis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// Scrape implements tracker.Conn with one pipelined round trip.
func (p *Pool) Scrape(ctx context.Context, files []models.TorrentStats) error {
	if len(files) == 0 {
		return nil
	}
	type cmds struct {
		t    *goredis.SliceCmd
		s, l *goredis.IntCmd
	}
	cs := make([]cmds, len(files))
	_, err := p.client.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
		for i := range files {
			k := p.torrentKeys(files[i].InfoHash)
			cs[i] = cmds{t: pipe.HMGet(ctx, k[keyTorrent], "n", "id"), s: pipe.ZCard(ctx, k[keySeeders]), l: pipe.ZCard(ctx, k[keyLeechers])}
		}
		return nil
	})
	if err != nil {
		return p.fail(opScrape, fmt.Errorf("redis: scrape: %w", err))
	}
	for i := range files {
		f := &files[i]
		t := cs[i].t.Val()
		if len(t) < 2 || t[0] == nil {
			f.ID, f.Seeders, f.Leechers, f.Snatches, f.Registered = 0, 0, 0, 0, false
			continue
		}
		n, err1 := strconv.Atoi(asString(t[0]))
		var id uint64
		var err2 error
		if t[1] != nil {
			id, err2 = strconv.ParseUint(asString(t[1]), 10, 64)
		}
		if err := errors.Join(err1, err2); err != nil {
			return p.fail(opScrape, fmt.Errorf("redis: scrape %x: %w", f.InfoHash[:], err))
		}
		f.ID, f.Seeders, f.Leechers, f.Snatches, f.Registered = id, int(cs[i].s.Val()), int(cs[i].l.Val()), n, true
	}
	return nil
}

// reapPage is how many index entries one ZRANGEBYSCORE reads.
const reapPage = 1000

// rangeBefore reads the members of the sorted set key scored strictly before limit, a page at
// a time.
func (p *Pool) rangeBefore(ctx context.Context, key, limit string) ([]string, error) {
	var out []string
	for offset := int64(0); ; offset += reapPage {
		page, err := p.client.ZRangeByScore(ctx, key, &goredis.ZRangeBy{
			Min: "-inf", Max: "(" + limit, Offset: offset, Count: reapPage,
		}).Result()
		if err != nil {
			return out, err
		}
		out = append(out, page...)
		if len(page) < reapPage {
			return out, nil
		}
	}
}

// Reap implements tracker.Conn: it reads the torrents whose oldest peer is before cutoff from
// the index, then reaps each with one script. The site's torrents are never purged; their new
// counts are reported in Changed when they lost peers.
//
// In cluster mode it first applies the deferred updates of the global keys (see global.go),
// so that this pass sees the torrents they index; and a failure to apply a reaped torrent's
// update of the global keys is deferred too (the torrent is reaped all the same), as is,
// without being tried, every later one of the pass. Such failures are counted under
// op="global" and do not fail the pass.
func (p *Pool) Reap(ctx context.Context, cutoff time.Time, purgeEmpty bool) (tracker.ReapResult, error) {
	var r tracker.ReapResult
	if err := ctx.Err(); err != nil {
		return r, err
	}
	// globalDown: an update of the global keys failed in this pass; defer the rest untried.
	globalDown := false
	if p.cluster {
		globalDown = p.flushPending(ctx) != nil
		if !globalDown {
			p.globalHold.Store(0)
		}
	}
	limit := strconv.FormatInt(cutoff.Unix(), 10)
	hashes, err := p.rangeBefore(ctx, p.index, limit)
	if err != nil {
		return r, p.fail(opReap, fmt.Errorf("redis: reap: index: %w", err))
	}
	for _, h := range hashes {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if len(h) != len(models.InfoHash{}) {
			continue
		}
		if err := p.reapOne(ctx, models.InfoHash([]byte(h)), limit, purgeEmpty, &globalDown, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// reapOne reaps one torrent's peers last seen before limit (unix seconds, decimal) with one
// script, adding what it did to r. globalDown is Reap's: set when an update of the global
// keys failed, after which later ones are deferred untried.
func (p *Pool) reapOne(ctx context.Context, ih models.InfoHash, limit string, purgeEmpty bool, globalDown *bool, r *tracker.ReapResult) error {
	h := string(ih[:])
	v, err := reapScript.Run(ctx, p.client, p.torrentKeys(ih), limit, bit(purgeEmpty), h, bit(!p.cluster), int(models.IPv4)).Slice()
	if err != nil {
		return p.fail(opReap, fmt.Errorf("redis: reap %x: %w", ih[:], err))
	}
	if len(v) < 12 {
		return p.fail(opReap, fmt.Errorf("redis: reap %x: short script reply", ih[:]))
	}
	removed := int(asInt(v[0]))
	r.Peers += removed
	r.Torrents += int(asInt(v[1]))
	if id := asString(v[3]); id != "" && removed > 0 {
		tid, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return p.fail(opReap, fmt.Errorf("redis: reap %x: torrent id %q: %w", ih[:], id, err))
		}
		r.Changed = append(r.Changed, models.TorrentStats{
			InfoHash: ih, ID: tid, Seeders: int(asInt(v[4])), Leechers: int(asInt(v[5])),
			Snatches: int(asInt(v[6])), Registered: true,
		})
	}
	if p.cluster {
		g := global{ih: h, index: asInt(v[2]), sessionAt: -1}
		if g.index < 0 {
			g.index = indexRemove
		}
		deltas(&g, v[7:12])
		if *globalDown {
			p.deferGlobal(&g)
		} else if err := p.applyGlobals(ctx, []global{g}, 0); err != nil {
			*globalDown = true
		}
	}
	return nil
}

var (
	_ tracker.SwarmDropper   = (*Pool)(nil)
	_ tracker.TorrentCounter = (*Pool)(nil)
)

// DropSwarm implements tracker.SwarmDropper: the reaping script run on one torrent with a
// cutoff in the far future, so that the counters and the index stay true. A site's torrent
// keeps its registration and snatch count.
func (p *Pool) DropSwarm(ctx context.Context, ih models.InfoHash) (int, error) {
	var r tracker.ReapResult
	globalDown := false
	if err := p.reapOne(ctx, ih, strconv.FormatInt(math.MaxInt32, 10), true, &globalDown, &r); err != nil {
		return 0, err
	}
	return r.Peers, nil
}

// TorrentCounts implements tracker.TorrentCounter by reading the members of one swarm's two
// sets (ZSCAN, so that a huge swarm is read in steps), telling the families apart by the
// member's family byte.
func (p *Pool) TorrentCounts(ctx context.Context, ih models.InfoHash) (models.SwarmCounts, error) {
	var c models.SwarmCounts
	keys := p.torrentKeys(ih)
	n, err := p.client.Exists(ctx, keys[keyTorrent]).Result()
	if err != nil {
		return c, p.fail(opScrape, fmt.Errorf("redis: torrent counts %x: %w", ih[:], err))
	}
	if n == 0 {
		return c, nil
	}
	c.Torrents = 1
	for i, key := range keys[keySeeders : keyLeechers+1] {
		iter := p.client.ZScan(ctx, key, 0, "", 10000).Iterator()
		for k := 0; iter.Next(ctx); k++ {
			if k%2 == 1 {
				continue // the score
			}
			m := iter.Val()
			if len(m) < 21 {
				continue
			}
			fam := models.Family(m[20])
			if fam > models.IPv6 {
				continue
			}
			if i == keySeeders {
				c.Seeders[fam]++
			} else {
				c.Leechers[fam]++
			}
		}
		if err := iter.Err(); err != nil {
			return c, p.fail(opScrape, fmt.Errorf("redis: torrent counts %x: %w", ih[:], err))
		}
	}
	return c, nil
}

// SwarmCounts implements tracker.SwarmCounter by reading the counters that the scripts keep,
// in one round trip whatever the number of swarms.
func (p *Pool) SwarmCounts(ctx context.Context) (models.SwarmCounts, error) {
	var c models.SwarmCounts
	v, err := p.client.HMGet(ctx, p.counts, countFields[:]...).Result()
	if err != nil {
		return c, p.fail(opCounts, fmt.Errorf("redis: swarm counts: %w", err))
	}
	var n [5]int
	for i := range n {
		if v[i] == nil {
			continue
		}
		if n[i], err = strconv.Atoi(strings.TrimSpace(asString(v[i]))); err != nil {
			return c, p.fail(opCounts, fmt.Errorf("redis: swarm counts: %s: %w", countFields[i], err))
		}
	}
	c.Torrents = n[0]
	c.Seeders[models.IPv4], c.Seeders[models.IPv6] = n[1], n[2]
	c.Leechers[models.IPv4], c.Leechers[models.IPv6] = n[3], n[4]
	return c, nil
}
