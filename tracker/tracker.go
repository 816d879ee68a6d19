package tracker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// ErrClientNotWhitelisted is the failure for a peer ID outside the client whitelist.
const ErrClientNotWhitelisted = models.ErrClientNotWhitelisted

// Backend receives what each announce changed. It is the part of a backend.Conn the core uses;
// it must be safe for concurrent use and must not block on slow storage.
type Backend interface {
	RecordAnnounce(ctx context.Context, delta *models.AnnounceDelta) error
}

// DeltaDiscarder is an optional capability of a Backend that keeps nothing of the deltas it is
// sent (backend/noop): the core then does not ask the driver to keep peers' counters, which
// only feed deltas.
type DeltaDiscarder interface {
	DiscardsDeltas() bool
}

// AnnounceWriter writes the core's answer to an announce in the frontend's wire format. The
// response and its slices are valid only during the call.
type AnnounceWriter interface {
	WriteAnnounce(resp *models.AnnounceResponse) error
}

// ScrapeWriter writes the core's answer to a scrape in the frontend's wire format. The response
// is valid only during the call.
type ScrapeWriter interface {
	WriteScrape(resp *models.ScrapeResponse) error
}

// Observer is told of what the core does outside any request, for metrics. Requests are
// observed by the frontends, which see their whole duration and outcome. Its methods must not
// block.
type Observer interface {
	ObserveReap(r ReapResult)
}

// Tracker is the core. It is safe for concurrent use.
type Tracker struct {
	pool     Pool
	backend  Backend
	observer Observer

	// announce and jitter change at run time (Gazelle's update API); minAnnounce does not.
	announce atomic.Int64
	jitter   atomic.Int64
	// minAnnounce, the numwant limits and the whitelist change on a config reload (Apply).
	minAnnounce        atomic.Int64
	defaultNumWant     atomic.Int64
	maxNumWant         atomic.Int64
	maxScrape          int
	dualStacked        bool
	preferV4, preferV6 int
	preferSubnet       bool
	peerTimeout        time.Duration
	reapInterval       time.Duration
	purgeEmpty         bool
	whitelist          atomic.Pointer[[][]byte]
	// access decides which torrents are served; nil serves all.
	access AccessList

	// counters is set when the backend consumes deltas, which need each peer's previous
	// counters: PeerUpdate.Counters.
	counters bool

	// Private mode.
	private        bool
	freeleech      bool
	compactOnly    bool
	reasonLifetime time.Duration
	baselineLife   time.Duration

	backendErrLogged     atomic.Int64 // unix ns of the last backend error logged
	backendErrSuppressed atomic.Int64

	// Now returns the current time; tests replace it.
	Now func() time.Time

	scratch       sync.Pool
	scrapeScratch sync.Pool
}

type announceScratch struct {
	u, ou     PeerUpdate
	sel, none Selection
	res       AnnounceResult
	other     AnnounceResult
	resp      models.AnnounceResponse
	delta     models.AnnounceDelta
}

type scrapeScratch struct {
	resp models.ScrapeResponse
}

// AccessList decides which torrents the tracker serves (access_list_mode); *accesslist.List
// implements it. Allowed is called on every announce and scrape and must not block.
type AccessList interface {
	Allowed(ih *models.InfoHash) bool
}

// SetAccessList has the tracker refuse announces and scrapes of the torrents l does not allow,
// with models.ErrNotAuthorized. Call it before the tracker serves.
func (t *Tracker) SetAccessList(l AccessList) { t.access = l }

// authorized reports whether ih may be served.
func (t *Tracker) authorized(ih *models.InfoHash) bool {
	return t.access == nil || t.access.Allowed(ih)
}

// New returns a core that keeps swarms in pool and sends deltas to backend. observer may be nil.
func New(cfg *config.Config, pool Pool, backend Backend, observer Observer) (*Tracker, error) {
	t := &Tracker{
		private:        cfg.PrivateEnabled,
		freeleech:      cfg.FreeleechEnabled,
		compactOnly:    cfg.CompactOnly,
		reasonLifetime: cfg.DeletionReasonLifetime.Duration,
		baselineLife:   cfg.BaselineLifetime.Duration,
		pool:           pool,
		backend:        backend,
		observer:       observer,
		maxScrape:      cfg.MaxScrapeInfoHashes,
		dualStacked:    cfg.DualStackedPeers,
		preferSubnet:   cfg.PreferredSubnet,
		preferV4:       cfg.PreferredIPv4Subnet,
		preferV6:       cfg.PreferredIPv6Subnet,
		peerTimeout:    cfg.PeerTimeout.Duration,
		reapInterval:   cfg.ReapInterval.Duration,
		purgeEmpty:     cfg.PurgeInactiveTorrents,
		Now:            time.Now,
	}
	t.counters = backend != nil
	if dd, ok := backend.(DeltaDiscarder); ok && dd.DiscardsDeltas() {
		t.counters = false
	}
	t.Apply(cfg)
	maxWant := cfg.MaxNumWant
	t.scratch.New = func() any {
		s := &announceScratch{}
		s.res.IPv4Peers = make([]models.Peer, 0, maxWant)
		s.res.IPv6Peers = make([]models.Peer, 0, maxWant)
		return s
	}
	return t, nil
}

// Intervals returns the announce interval and minimum interval that answers carry (failures in
// public mode too). The interval includes a random jitter when announce_jitter is set. In
// private mode the minimum interval is the announce interval without its jitter, as in Ocelot,
// so that it follows update_announce_interval; min_announce counts in public mode only.
func (t *Tracker) Intervals() (interval, minInterval time.Duration) {
	base := time.Duration(t.announce.Load())
	interval, minInterval = base, time.Duration(t.minAnnounce.Load())
	if t.private {
		minInterval = base
	}
	if j := t.jitter.Load(); j > 0 {
		interval += time.Duration(rand.Int64N(j + 1)).Truncate(time.Second)
	}
	return interval, minInterval
}

// PrivateFailureInterval is the interval and min interval of every failure answer in private
// mode: Ocelot sends 5400 seconds with each of its failures, so that a refused client (an
// unknown passkey, an unregistered torrent) backs off for an hour and a half rather than
// retrying at the announce interval.
const PrivateFailureInterval = 5400 * time.Second

// FailureIntervals returns the interval and min interval that failure answers carry: in
// private mode PrivateFailureInterval for both, as Ocelot answers, otherwise the announce's.
func (t *Tracker) FailureIntervals() (interval, minInterval time.Duration) {
	if t.private {
		return PrivateFailureInterval, PrivateFailureInterval
	}
	return t.Intervals()
}

// AnnounceInterval returns the base announce interval and the most jitter added to it.
func (t *Tracker) AnnounceInterval() (interval, jitter time.Duration) {
	return time.Duration(t.announce.Load()), time.Duration(t.jitter.Load())
}

// SetAnnounceInterval changes the announce interval (Gazelle's update_announce_interval).
func (t *Tracker) SetAnnounceInterval(d time.Duration) { t.announce.Store(int64(d)) }

// SetAnnounceJitter changes the announce jitter (Gazelle's update_announce_jitter).
func (t *Tracker) SetAnnounceJitter(d time.Duration) { t.jitter.Store(int64(d)) }

// MaxScrapeInfoHashes returns the most info hashes one scrape may ask about.
func (t *Tracker) MaxScrapeInfoHashes() int { return t.maxScrape }

// NumWant returns how many peers an announce asking for n gets: the default for a negative n,
// never more than the configured cap, and none for a stopped peer.
func (t *Tracker) NumWant(n int, e models.Event) int {
	switch {
	case e == models.Stopped:
		return 0
	case n < 0:
		return int(t.defaultNumWant.Load())
	case n > int(t.maxNumWant.Load()):
		return int(t.maxNumWant.Load())
	}
	return n
}

func (t *Tracker) whitelisted(id models.PeerID) bool {
	wl := t.whitelist.Load()
	return wl == nil || id.Admitted(*wl)
}

// Apply takes cfg's settings that may change while the tracker runs: announce, min_announce,
// announce_jitter, default_num_want, max_num_want and the client whitelist (public mode; a
// private site's comes from the site). Each takes effect for the next request. cfg must be
// valid.
func (t *Tracker) Apply(cfg *config.Config) {
	t.announce.Store(int64(cfg.Announce.Duration))
	t.jitter.Store(int64(cfg.AnnounceJitter.Duration))
	t.minAnnounce.Store(int64(cfg.MinAnnounce.Duration))
	t.defaultNumWant.Store(int64(cfg.DefaultNumWant))
	t.maxNumWant.Store(int64(cfg.MaxNumWant))
	var wl [][]byte
	if cfg.ClientWhitelistEnabled {
		for _, p := range cfg.ClientWhitelist {
			wl = append(wl, []byte(p))
		}
	}
	t.whitelist.Store(&wl)
}

// HandleAnnounce updates the swarm for a, sends the delta to the backend and writes the answer
// to w. A models.ClientError is for the client to see; any other error is the tracker's own.
//
// In private mode the passkey must name a user and the torrent must be registered by the site;
// the user's peers are keyed by user as well as peer ID, never handed to each other, and a
// leecher whose user may not leech is recorded (its transfer still counts) but hidden, and told
// "Access denied, leeching forbidden".
//
// An announce goes through four steps, each below: admit (is it served at all), update (the
// swarm, in the driver), account (the delta for the backend) and answer (the response).
func (t *Tracker) HandleAnnounce(ctx context.Context, a *models.Announce, w AnnounceWriter) error {
	if !a.Endpoint.IsValid() {
		return models.ErrInvalidIP
	}
	if !t.authorized(&a.InfoHash) {
		return models.ErrNotAuthorized
	}
	conn, err := t.pool.Get()
	if err != nil {
		return fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	ad, err := t.admit(ctx, conn, a)
	if err != nil {
		return err
	}

	s := t.scratch.Get().(*announceScratch)
	defer t.scratch.Put(s)
	now := t.Now()
	prev, err := t.update(ctx, conn, a, &ad, s, now)
	if err != nil {
		return err
	}
	t.record(ctx, a, &ad, s, prev, now)
	if ad.forbidden {
		return models.ErrLeechingForbidden
	}
	return t.answer(a, s, w)
}

// admitted is what admit learned of an announce it lets through.
type admitted struct {
	user  models.User
	store SiteStore // private mode's; nil in public mode
	// forbidden: a leecher whose user may not leech, recorded but hidden and refused.
	forbidden bool
}

// admit refuses what the tracker does not serve: in private mode an unknown passkey, a
// non-compact announce under compact_only and a client off the site's whitelist; in public
// mode a client off client_whitelist.
func (t *Tracker) admit(ctx context.Context, conn Conn, a *models.Announce) (admitted, error) {
	var ad admitted
	if !t.private {
		if !t.whitelisted(a.PeerID) {
			return ad, ErrClientNotWhitelisted
		}
		return ad, nil
	}
	var ok bool
	if ad.store, ok = conn.(SiteStore); !ok {
		return ad, ErrNoSiteStore
	}
	var err error
	if ad.user, err = ad.store.User(ctx, a.Passkey); err != nil {
		return ad, annErr(err)
	}
	if t.compactOnly && !a.CompactOne {
		return ad, models.ErrCompactOnly
	}
	if ok, err := ad.store.Whitelisted(ctx, a.PeerID); err != nil {
		return ad, annErr(err)
	} else if !ok {
		return ad, ErrClientNotWhitelisted
	}
	ad.forbidden = !ad.user.CanLeech && !a.Seeder()
	return ad, nil
}

// update applies the announce to the swarm: the peer's endpoint in the other family first
// (which only a spoofing-enabled config lets a client name; it hands out no peers), then the
// main entry, which picks the peers to hand out into s.res. It returns the previous state to
// credit from.
func (t *Tracker) update(ctx context.Context, conn Conn, a *models.Announce, ad *admitted, s *announceScratch, now time.Time) (*PrevPeer, error) {
	seeder := a.Seeder()
	u := &s.u
	*u = PeerUpdate{
		Remove:     a.Event == models.Stopped,
		Seeder:     seeder,
		Completed:  a.Event == models.Completed,
		Create:     !t.private,
		Hidden:     ad.forbidden || a.WebRTC,
		Counters:   t.counters,
		Uploaded:   a.Uploaded,
		Downloaded: a.Downloaded,
		Corrupt:    a.Corrupt,
		Time:       now,
	}
	uid := uint32(ad.user.ID)

	// The main update then reports counts that include the other entry.
	prev := &s.res.Prev
	if a.Other.IsValid() && models.FamilyOf(a.Other.Addr()) != models.FamilyOf(a.Endpoint.Addr()) {
		ou := &s.ou
		*ou = *u
		ou.Key = models.PeerKey{ID: a.PeerID, Family: models.FamilyOf(a.Other.Addr()), User: uid}
		ou.AddrPort = canonical(a.Other)
		ou.Completed = false
		ou.Secondary = true
		s.none = Selection{}
		s.other.IPv4Peers, s.other.IPv6Peers = s.other.IPv4Peers[:0], s.other.IPv6Peers[:0]
		if err := conn.Announce(ctx, a.InfoHash, ou, &s.none, &s.other); err != nil {
			return nil, t.unregistered(ctx, ad.store, a.InfoHash, err)
		}
		if t.private {
			// Both entries share one session, which this update has already moved on to the
			// announce's counters: its Prev is the session as it was, to credit from.
			prev = &s.other.Prev
		}
	}

	u.Key = models.PeerKey{ID: a.PeerID, Family: models.FamilyOf(a.Endpoint.Addr()), User: uid}
	u.AddrPort = canonical(a.Endpoint)
	sel := &s.sel
	*sel = Selection{
		Want:        t.NumWant(a.NumWant, a.Event),
		Seeder:      seeder,
		IPv4:        t.dualStacked || u.Key.Family == models.IPv4,
		IPv6:        t.dualStacked || u.Key.Family == models.IPv6,
		SkipOwnUser: t.private,
	}
	if ad.forbidden || a.WebRTC {
		sel.Want = 0
	}
	if t.preferSubnet {
		bits := t.preferV4
		if u.Key.Family == models.IPv6 {
			bits = t.preferV6
		}
		sel.Prefer, _ = u.AddrPort.Addr().Prefix(bits)
	}
	res := &s.res
	res.IPv4Peers, res.IPv6Peers = res.IPv4Peers[:0], res.IPv6Peers[:0]
	if err := conn.Announce(ctx, a.InfoHash, u, sel, res); err != nil {
		return nil, t.unregistered(ctx, ad.store, a.InfoHash, err)
	}
	return prev, nil
}

// record builds the announce's delta, credits it (private mode) and hands it to the backend;
// a freeleech token that did its work is forgotten. Nothing here fails the announce: the swarm
// is already updated, and a backend keeps its own queue.
func (t *Tracker) record(ctx context.Context, a *models.Announce, ad *admitted, s *announceScratch, prev *PrevPeer, now time.Time) {
	u, res := &s.u, &s.res
	d := &s.delta
	*d = models.AnnounceDelta{
		InfoHash:   a.InfoHash,
		PeerID:     a.PeerID,
		Passkey:    a.Passkey,
		UserID:     ad.user.ID,
		TorrentID:  res.TorrentID,
		Endpoint:   rowEndpoint(u.AddrPort, a.Other),
		Protected:  ad.user.Protected,
		UserAgent:  a.UserAgent,
		Event:      a.Event,
		Created:    !res.Prev.Found && !u.Remove,
		Snatched:   res.Snatched,
		Removed:    u.Remove,
		Seeder:     u.Seeder,
		Token:      res.Token && res.Freeleech != models.Neutral,
		Left:       a.Left,
		Uploaded:   a.Uploaded,
		Downloaded: a.Downloaded,
		Corrupt:    a.Corrupt,
		Seeders:    res.Seeders,
		Leechers:   res.Leechers,
		Snatches:   res.Snatches,
		FirstSeen:  now,
		Announces:  prev.Announces + 1,
		Time:       now,
	}
	if !prev.FirstSeen.IsZero() {
		d.FirstSeen = prev.FirstSeen
	}
	t.account(a, prev, res.Freeleech, res.Token, d)
	if t.backend != nil {
		if err := t.backend.RecordAnnounce(ctx, d); err != nil {
			// The client's answer does not depend on the backend, which counts what it drops.
			t.logBackendError(now, err)
		}
	}
	if d.Token && d.Snatched && ad.store != nil {
		// The token did its work: like Ocelot, forget it; the backend tells the site.
		rm := models.SiteUpdate{Action: models.RemoveToken, User: models.User{ID: ad.user.ID}, Torrent: models.Torrent{InfoHash: a.InfoHash}}
		if err := ad.store.UpdateSite(ctx, &rm); err != nil {
			glog.Errorf("tracker: drop used token: %v", err)
		}
	}
}

// answer writes the response: the swarm's counts after the update, the intervals and the
// peers update picked.
func (t *Tracker) answer(a *models.Announce, s *announceScratch, w AnnounceWriter) error {
	res := &s.res
	resp := &s.resp
	interval, minInterval := t.Intervals()
	*resp = models.AnnounceResponse{
		Interval:    interval,
		Complete:    res.Seeders,
		Incomplete:  res.Leechers,
		Downloaded:  res.Snatches,
		MinInterval: minInterval,
		IPv4Peers:   res.IPv4Peers,
		IPv6Peers:   res.IPv6Peers,
		ExternalIP:  a.Remote,
		Compact:     a.Compact,
		NoPeerID:    a.NoPeerID || res.NoPeerIDs,
	}
	return w.WriteAnnounce(resp)
}

// backendErrorEvery bounds how often backend errors are logged: during a database outage every
// announce may fail the same way.
const backendErrorEvery = 10 * time.Second

// logBackendError logs err, or counts it when a backend error was logged less than
// backendErrorEvery ago; the next line says how many were not logged.
func (t *Tracker) logBackendError(now time.Time, err error) {
	last := t.backendErrLogged.Load()
	if now.UnixNano()-last < int64(backendErrorEvery) || !t.backendErrLogged.CompareAndSwap(last, now.UnixNano()) {
		t.backendErrSuppressed.Add(1)
		return
	}
	glog.Errorf("tracker: backend record announce: %v (%d more since the last such line)", err, t.backendErrSuppressed.Swap(0))
}

// unregistered turns the driver's ErrTorrentNotFound into Ocelot's "Unregistered torrent",
// with the site's deletion reason while it is remembered.
func (t *Tracker) unregistered(ctx context.Context, store SiteStore, ih models.InfoHash, err error) error {
	if !errors.Is(err, models.ErrTorrentNotFound) || store == nil {
		return annErr(err)
	}
	text, at, ok, rerr := store.DeletionReason(ctx, ih)
	if rerr != nil || !ok || text == "" || t.Now().Sub(at) > t.reasonLifetime {
		return models.ErrTorrentNotFound
	}
	return models.ClientError(string(models.ErrTorrentNotFound) + ": " + text)
}

// account fills d's deltas, credits and speeds from the announce and the peer's previous
// counters (Ocelot's rules, protocol.md §3.3). A peer's first announce, a started event and a
// counter that went down (the client restarted) set a new baseline and credit nothing.
// Freeleech: neutral credits nothing, a token or a free torrent (or site-wide freeleech) credits
// upload only, and a token's download is reported as TokenDown.
func (t *Tracker) account(a *models.Announce, prev *PrevPeer, fl models.FreeleechType, token bool, d *models.AnnounceDelta) {
	if !(prev.Found || prev.Restored) || a.Event == models.Started ||
		a.Uploaded < prev.Uploaded || a.Downloaded < prev.Downloaded ||
		(t.private && a.Corrupt < prev.Corrupt) {
		return
	}
	d.UploadedDelta = a.Uploaded - prev.Uploaded
	d.DownloadedDelta = a.Downloaded - prev.Downloaded
	if t.private {
		// Only private mode keeps corrupt counters (and sessions) per peer.
		d.CorruptDelta = a.Corrupt - prev.Corrupt
	}
	if secs := int64(d.Time.Sub(prev.Time) / time.Second); secs > 0 {
		d.UpSpeed, d.DownSpeed = d.UploadedDelta/secs, d.DownloadedDelta/secs
	}
	d.CreditedUp, d.CreditedDown = d.UploadedDelta, d.DownloadedDelta
	switch {
	case fl == models.Neutral:
		d.CreditedUp, d.CreditedDown = 0, 0
	case token:
		d.CreditedDown, d.TokenDown = 0, d.DownloadedDelta
	case fl == models.Free || t.freeleech:
		d.CreditedDown = 0
	}
}

// rowEndpoint is the endpoint an announce reports to the backend for the peer's row: the IPv4
// one when the announce named one in either family (Gazelle's ip columns hold IPv4 only, and
// Ocelot knew no other), else its own.
func rowEndpoint(main, other netip.AddrPort) netip.AddrPort {
	if !main.Addr().Is4() && other.IsValid() && other.Addr().Unmap().Is4() {
		return canonical(other)
	}
	return main
}

// canonical unmaps IPv4-mapped IPv6 addresses, so a peer reached over a dual-stack socket is
// stored and handed out as the IPv4 peer it is.
func canonical(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

func annErr(err error) error {
	var ce models.ClientError
	if errors.As(err, &ce) {
		return ce
	}
	return fmt.Errorf("tracker: announce: %w", err)
}

// HandleScrape reads the counts of each requested torrent and writes them to w in request order.
//
// In private mode the passkey must name a user, as for an announce ("Passkey not found"
// otherwise, a removed user's included): a private site's swarms are not for whoever learns an
// info hash. There, as in Ocelot, the answer leaves out the torrents the site has not
// registered (or has deleted), and a scrape of no torrent is answered with no files rather
// than refused.
func (t *Tracker) HandleScrape(ctx context.Context, sc *models.Scrape, w ScrapeWriter) error {
	if len(sc.InfoHashes) > t.maxScrape {
		return models.ErrTooManyInfoHashes
	}
	// A scrape naming a refused torrent is refused whole, so that the list cannot be probed
	// for the counts of what it refuses.
	for i := range sc.InfoHashes {
		if !t.authorized(&sc.InfoHashes[i]) {
			return models.ErrNotAuthorized
		}
	}
	conn, err := t.pool.Get()
	if err != nil {
		return fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	if t.private {
		store, ok := conn.(SiteStore)
		if !ok {
			return ErrNoSiteStore
		}
		if _, err := store.User(ctx, sc.Passkey); err != nil {
			var ce models.ClientError
			if errors.As(err, &ce) {
				return ce
			}
			return fmt.Errorf("tracker: scrape: user: %w", err)
		}
	}
	if len(sc.InfoHashes) == 0 && !t.private {
		return models.ErrMissingInfoHash
	}

	s, _ := t.scrapeScratch.Get().(*scrapeScratch)
	if s == nil {
		s = &scrapeScratch{}
	}
	defer t.scrapeScratch.Put(s)
	files := s.resp.Files[:0]
	for _, ih := range sc.InfoHashes {
		files = append(files, models.TorrentStats{InfoHash: ih})
	}
	if len(files) > 0 {
		if err := conn.Scrape(ctx, files); err != nil {
			return fmt.Errorf("tracker: scrape: %w", err)
		}
	}
	if t.private {
		// As Ocelot: torrents the site has not registered (or deleted) are left out.
		files = slices.DeleteFunc(files, func(f models.TorrentStats) bool { return !f.Registered })
	}
	s.resp.Files = files
	return w.WriteScrape(&s.resp)
}

// Reap removes peers that have not announced within the peer timeout, and empty torrents when
// purge_inactive_torrents is on.
func (t *Tracker) Reap(ctx context.Context) (ReapResult, error) {
	conn, err := t.pool.Get()
	if err != nil {
		return ReapResult{}, fmt.Errorf("tracker: get conn: %w", err)
	}
	defer conn.Close()
	now := t.Now()
	r, err := conn.Reap(ctx, now.Add(-t.peerTimeout), t.purgeEmpty)
	if err != nil {
		return r, fmt.Errorf("tracker: reap: %w", err)
	}
	if t.observer != nil {
		t.observer.ObserveReap(r)
	}
	if rr, ok := t.backend.(ReapRecorder); ok && len(r.Changed) > 0 {
		if err := rr.RecordReap(ctx, r.Changed); err != nil {
			return r, fmt.Errorf("tracker: record reap: %w", err)
		}
	}
	if store, ok := conn.(SiteStore); ok && t.private {
		if err := store.Prune(ctx, now.Add(-t.reasonLifetime), now.Add(-t.baselineLife)); err != nil {
			return r, fmt.Errorf("tracker: prune site state: %w", err)
		}
	}
	return r, nil
}

// ReapRecorder is an optional capability of a Backend (backend.ReapRecorder): being told the
// new counts of the site's torrents the reaper changed.
type ReapRecorder interface {
	RecordReap(ctx context.Context, torrents []models.TorrentStats) error
}

// RunReaper reaps every reap_interval until ctx ends.
func (t *Tracker) RunReaper(ctx context.Context) {
	tick := time.NewTicker(t.reapInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r, err := t.Reap(ctx)
			if err != nil && ctx.Err() == nil {
				glog.Errorf("%v", err)
				continue
			}
			if glog.V(1) {
				glog.Infof("tracker: reaped %d peers and %d torrents", r.Peers, r.Torrents)
			}
		}
	}
}
