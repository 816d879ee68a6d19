package chihaya

import (
	"context"
	"errors"
	"flag"
	"fmt"
	nethttp "net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/accesslist"
	"github.com/chihaya/chihaya/admin"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

// The operator's side of a running tracker: the access list, the admin API, health probes and
// reloading (SIGHUP).

// pinger is an optional capability of a tracker or backend driver: telling whether its
// server answers, for /readyz.
type pinger interface {
	Ping(ctx context.Context) error
}

// openAccessList reads the access list of the config and has the tracker refuse what it
// refuses; a torrent it comes to refuse later loses its swarm at once.
func (c *Chihaya) openAccessList() error {
	mode, err := accesslist.ParseMode(c.cfg.AccessListMode)
	if err != nil {
		return err
	}
	list, r, err := accesslist.New(mode, c.cfg.AccessListFile, c.dropRefused)
	if err != nil {
		return fmt.Errorf("access_list_file: %w", err)
	}
	c.access = list
	// Set even when off: a reload may turn it on.
	c.tkr.SetAccessList(list)
	if mode != accesslist.Off {
		logAccessList("loaded", r, nil)
	}
	if mode == accesslist.Allow {
		c.dropUnlisted()
	}
	return nil
}

// dropUnlisted drops the swarms an allow list does not name, which it cannot list as refused:
// those a snapshot restored, or a reload that turned the list on found. It needs a driver that
// can list its torrents; with another, they leave as their peers time out.
func (c *Chihaya) dropUnlisted() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []models.InfoHash
	// The tracker's ScrapeAll leaves out what the list refuses: read the driver's own.
	conn, err := c.pool.Get()
	if err != nil {
		return
	}
	defer conn.Close()
	fs, ok := conn.(tracker.FullScraper)
	if !ok {
		return
	}
	_ = fs.ScrapeAll(ctx, func(batch []models.TorrentStats) error {
		for i := range batch {
			if !c.access.Allowed(&batch[i].InfoHash) {
				out = append(out, batch[i].InfoHash)
			}
		}
		return nil
	})
	c.dropRefused(out)
}

// dropBatch is how many swarms dropRefused drops within one request timeout.
const dropBatch = 1024

// dropRefused drops the swarms of torrents the access list now refuses, dropBatch of them
// within each request timeout (a deny list of millions makes a context per thousand, not
// garbage per hash).
func (c *Chihaya) dropRefused(hs []models.InfoHash) {
	dropped, peers := 0, 0
	for len(hs) > 0 {
		n := min(len(hs), dropBatch)
		d, p, ok := c.dropChunk(hs[:n])
		dropped, peers = dropped+d, peers+p
		if !ok {
			break
		}
		hs = hs[n:]
	}
	if dropped > 0 {
		glog.Infof("chihaya: access list: dropped %d refused swarms (%d peers)", dropped, peers)
	}
}

// dropChunk drops the swarms of hs within one request timeout; ok is false when the driver
// cannot drop swarms at all.
func (c *Chihaya) dropChunk(hs []models.InfoHash) (dropped, peers int, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout.Duration)
	defer cancel()
	for _, ih := range hs {
		n, err := c.tkr.DropSwarm(ctx, ih)
		if errors.Is(err, tracker.ErrNotSupported) {
			if c.dropUnsupported.CompareAndSwap(false, true) {
				glog.Warningf("chihaya: access list: the tracker driver cannot drop swarms; refused torrents' peers leave as they time out")
			}
			return dropped, peers, false
		}
		if err != nil {
			glog.Errorf("chihaya: access list: drop the swarm of %x: %v", ih[:], err)
			continue
		}
		if n > 0 {
			dropped++
			peers += n
		}
	}
	return dropped, peers, true
}

func logAccessList(what string, r accesslist.Report, err error) {
	if err != nil {
		glog.Errorf("chihaya: access list %s: %v (the previous list stays)", r.Path, err)
		return
	}
	glog.Infof("chihaya: access list %s %s: %d info hashes, %d refused and %d served again by the change, %d bad lines",
		r.Path, what, r.Entries, r.Refused, r.Admitted, r.BadLines)
	for _, b := range r.Bad {
		glog.Warningf("chihaya: access list %s: %v (skipped)", r.Path, b)
	}
	if r.BadLines > len(r.Bad) {
		glog.Warningf("chihaya: access list %s: %d more bad lines not shown", r.Path, r.BadLines-len(r.Bad))
	}
}

// ReloadOperator does what SIGHUP and POST /admin/reload do: it reads the configuration file
// again (when Chihaya was started from one) and applies the keys that can change live, then
// reads the access list and the HTTPS certificate again (a certificate that does not load is
// refused, and the one in service stays). A file that no longer parses or validates is refused whole,
// and the running configuration stays. It returns what was done, for the admin API's answer.
func (c *Chihaya) ReloadOperator(ctx context.Context) (any, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	out := map[string]any{}
	listReloaded := false
	if c.configPath != "" {
		next, err := config.Load(c.configPath)
		if err != nil {
			glog.Errorf("chihaya: reload: %v; the running configuration stays", err)
			return nil, err
		}
		applied, restart, reread, err := c.applyConfig(next)
		if err != nil {
			glog.Errorf("chihaya: reload %s: %v; the running configuration stays", c.configPath, err)
			return nil, err
		}
		if len(restart) > 0 {
			glog.Warningf("chihaya: reload %s: changed keys that need a restart, left as they were: %s",
				c.configPath, strings.Join(restart, ", "))
		}
		glog.Infof("chihaya: reload %s: applied %d changed keys%s", c.configPath, len(applied), listKeys(applied))
		out["config"] = map[string]any{"file": c.configPath, "applied": applied, "need_restart": restart}
		listReloaded = reread
	}
	if !listReloaded && c.access.Mode() != accesslist.Off {
		r, err := c.access.Reload()
		logAccessList("reloaded", r, err)
		if err != nil {
			return nil, err
		}
		out["access_list"] = map[string]any{"entries": r.Entries, "bad_lines": r.BadLines, "refused": r.Refused, "admitted": r.Admitted}
	}
	tls, err := c.reloadCerts()
	if err != nil {
		return nil, err
	}
	if tls != nil {
		out["tls"] = tls
	}
	return out, nil
}

func listKeys(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	return ": " + strings.Join(keys, ", ")
}

// applyConfig takes next's live keys, and returns those it applied and the changed keys that
// need a restart. reread says the access list was read again. Nothing is applied when the
// new access list cannot be read.
func (c *Chihaya) applyConfig(next *config.Config) (applied, restart []string, reread bool, err error) {
	live := map[string]bool{}
	for _, k := range config.LiveKeys {
		live[k] = true
	}
	if c.running == nil {
		running := *c.cfg
		c.running = &running
	}
	cur := *c.running
	for _, k := range config.Changed(&cur, next) {
		if live[k] {
			applied = append(applied, k)
		} else {
			restart = append(restart, k)
		}
	}
	if cur.AccessListMode != next.AccessListMode || cur.AccessListFile != next.AccessListFile {
		mode, err := accesslist.ParseMode(next.AccessListMode)
		if err != nil {
			return nil, nil, false, err
		}
		r, err := c.access.Reconfigure(mode, next.AccessListFile)
		if err != nil {
			return nil, nil, false, err
		}
		if mode != accesslist.Off {
			logAccessList("reconfigured", r, nil)
		}
		if mode == accesslist.Allow {
			c.dropUnlisted()
		}
		c.restartWatch()
		reread = true
	}
	// The live keys of next, on the running configuration.
	cur.Announce, cur.MinAnnounce, cur.AnnounceJitter = next.Announce, next.MinAnnounce, next.AnnounceJitter
	cur.DefaultNumWant, cur.MaxNumWant = next.DefaultNumWant, next.MaxNumWant
	cur.ClientWhitelistEnabled, cur.ClientWhitelist = next.ClientWhitelistEnabled, next.ClientWhitelist
	cur.AccessListMode, cur.AccessListFile = next.AccessListMode, next.AccessListFile
	cur.RateLimit.AnnounceRate, cur.RateLimit.AnnounceBurst = next.RateLimit.AnnounceRate, next.RateLimit.AnnounceBurst
	cur.RateLimit.ScrapeRate, cur.RateLimit.ScrapeBurst = next.RateLimit.ScrapeRate, next.RateLimit.ScrapeBurst
	cur.LogVerbosity = next.LogVerbosity
	if err := cur.Validate(); err != nil {
		// Live keys that are valid alone but not beside the running ones (min_announce
		// against an announce that needs a restart cannot happen: both are live).
		return nil, nil, false, err
	}
	c.tkr.Apply(&cur)
	c.limiter.SetRates(limiterRates(&cur.RateLimit))
	applyVerbosity(cur.LogVerbosity)
	*c.running = cur
	return applied, restart, reread, nil
}

// applyVerbosity sets glog's -v when the configuration says.
func applyVerbosity(v *int) {
	if v != nil {
		_ = flag.Set("v", strconv.Itoa(*v))
	}
}

// watchAccessList reloads the list when its file changes, until ctx ends or the watch is
// restarted for another file.
func (c *Chihaya) watchAccessList(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	c.watchCtx, c.watchCancel = ctx, cancel
	return c.access.Watch(wctx, func(r accesslist.Report, err error) { logAccessList("changed on disk", r, err) })
}

// restartWatch watches the access list's file again, after a reload named another.
func (c *Chihaya) restartWatch() {
	if c.watchCancel == nil {
		return
	}
	c.watchCancel()
	if err := c.watchAccessList(c.watchCtx); err != nil {
		glog.Warningf("chihaya: %v; the list is read again only on SIGHUP and POST /admin/reload", err)
	}
}

// operatorHandlers returns the admin API (nil without admin_token) and the health probes.
func (c *Chihaya) operatorHandlers() (api nethttp.Handler, healthz, readyz nethttp.Handler) {
	if c.cfg.AdminToken != "" {
		api = admin.New(c.cfg.AdminToken, c.access, c.tkr, c.ReloadOperator)
	}
	var checks []admin.Check
	if p, ok := c.pool.(pinger); ok {
		checks = append(checks, admin.Check{Name: "tracker." + c.cfg.Tracker.Name, Run: p.Ping})
	}
	if p, ok := c.backend.(pinger); ok {
		checks = append(checks, admin.Check{Name: "backend." + c.cfg.Backend.Name, Run: p.Ping})
	}
	if c.cfg.PrivateEnabled {
		checks = append(checks, admin.Check{Name: "site", Run: func(context.Context) error {
			if !c.siteLoaded.Load() {
				return errors.New("the site's users and torrents are not loaded yet")
			}
			return nil
		}})
	}
	return api, admin.Healthz(), admin.Readyz(5*time.Second, checks...)
}

// operatorState is the part of Chihaya this file owns.
type operatorState struct {
	access          *accesslist.List
	limiter         *ratelimit.Limiter
	dropUnsupported atomic.Bool
	siteLoaded      atomic.Bool
	// configPath is the file Chihaya was started from ("" for the embedded default), read
	// again on a reload; reloadMu serializes reloads.
	configPath string
	reloadMu   sync.Mutex
	// running is the configuration as reloads left it (c.cfg stays as Start was given it,
	// read by the parts that took it); guarded by reloadMu.
	running     *config.Config
	watchCtx    context.Context
	watchCancel context.CancelFunc
}

// limiterRates returns the rate limiter's rates of a rate_limit section.
func limiterRates(rl *config.RateLimit) (announce, scrape ratelimit.Rate) {
	return ratelimit.Rate{PerSecond: rl.AnnounceRate, Burst: rl.Burst(rl.AnnounceRate, rl.AnnounceBurst)},
		ratelimit.Rate{PerSecond: rl.ScrapeRate, Burst: rl.Burst(rl.ScrapeRate, rl.ScrapeBurst)}
}
