package chihaya

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"sync/atomic"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/accesslist"
	"github.com/chihaya/chihaya/admin"
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
	if mode == accesslist.Off {
		return nil
	}
	logAccessList("loaded", r, nil)
	c.tkr.SetAccessList(list)
	return nil
}

// dropRefused drops the swarm of a torrent the access list now refuses.
func (c *Chihaya) dropRefused(ih models.InfoHash) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout.Duration)
	defer cancel()
	n, err := c.tkr.DropSwarm(ctx, ih)
	switch {
	case errors.Is(err, nil):
		if n > 0 && glog.V(1) {
			glog.Infof("chihaya: access list: dropped the swarm of %x (%d peers)", ih[:], n)
		}
	case c.dropUnsupported.CompareAndSwap(false, true):
		glog.Warningf("chihaya: access list: the tracker driver cannot drop swarms (%v); refused torrents' peers leave as they time out", err)
	}
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

// ReloadOperator does what SIGHUP and POST /admin/reload do: it reads the access list again.
// It returns what was reloaded, for the admin API's answer.
func (c *Chihaya) ReloadOperator(ctx context.Context) (any, error) {
	out := map[string]any{}
	if c.access != nil && c.access.Mode() != accesslist.Off {
		r, err := c.access.Reload()
		logAccessList("reloaded", r, err)
		if err != nil {
			return nil, err
		}
		out["access_list"] = map[string]any{"entries": r.Entries, "bad_lines": r.BadLines, "refused": r.Refused, "admitted": r.Admitted}
	}
	return out, nil
}

// watchAccessList reloads the list when its file changes, until ctx ends.
func (c *Chihaya) watchAccessList(ctx context.Context) error {
	if c.access == nil {
		return nil
	}
	return c.access.Watch(ctx, func(r accesslist.Report, err error) { logAccessList("changed on disk", r, err) })
}

// operatorHandlers returns the admin API (nil without admin_token) and the health probes.
func (c *Chihaya) operatorHandlers() (api nethttp.Handler, healthz, readyz nethttp.Handler) {
	if c.cfg.AdminToken != "" {
		var list admin.List
		if c.access != nil {
			list = c.access
		}
		api = admin.New(c.cfg.AdminToken, list, c.tkr, c.ReloadOperator)
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
	dropUnsupported atomic.Bool
	siteLoaded      atomic.Bool
}
