package http

// The site's control endpoints of private mode, as Ocelot serves them to Gazelle (protocol.md
// §3.6 and §3.10):
//
//	GET /<site_password>/update?action=…     changes to users, torrents, tokens, whitelist, intervals
//	GET /<report_password>/report?get=…      global and per-user counts
//
// Edge cases, chosen to keep Gazelle working the way it works against Ocelot:
//
//   - A wrong secret is the bencoded failure "Authentication failure". Secrets are compared as
//     SHA-256 digests in constant time, so neither their bytes nor their lengths leak by timing.
//   - Every update answers exactly "success" (HTTP 200, text/plain, explicit Content-Length),
//     unknown and missing actions included, as Ocelot does.
//   - A malformed update (a query with a bad escape, an info_hash that does not decode to 20
//     bytes, a non-numeric or zero id, info_hashes or passkeys not a whole number of hashes or
//     passkeys, an empty passkey or prefix, a non-numeric interval) changes nothing, is logged
//     with glog.Errorf naming the action, and still answers "success": the same bytes would fail
//     the same way on every retry, so a failure would only page the staff channel, and Ocelot
//     answers success too.
//   - A change to a user or torrent the tracker does not hold (any models.ClientError from the
//     store, such as "Passkey not found") is logged and answered "success", as Ocelot does.
//   - Any other store error (the storage failed, or the driver has no site store) is answered
//     HTTP 500 with a plain-text body, so that both Gazelle generations retry and then alert;
//     in a batch, the updates before the failing one stay applied.
//   - A parameter given twice counts with its last value, as in Ocelot.
//   - info_torrent answers "success": the site store has no lookup of a torrent's ID and
//     freeleech type by info hash. trace_user is accepted and forgotten.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	nethttp "net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/query"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker/models"
)

// ReportStats supplies the request counts of the report endpoint; *stats.Stats implements it.
// Requests is called once per report, never on the announce path.
type ReportStats interface {
	Requests() stats.RequestCounts
}

// WithReportStats has the report endpoint of private mode read request counts from st. Without
// it the report says 0 for them.
func WithReportStats(st ReportStats) Option {
	return func(s *Server) { s.reportStats = st }
}

// QueueReporter supplies the rows waiting for the site's database, table by table (Ocelot's
// "items in … queue" labels); the gazelle backend's *Conn implements it.
type QueueReporter interface {
	QueueSizes() (users, torrents, peers, snatches, tokens int)
}

// WithQueues has the stats report read the backend's queue sizes from q. Without it the report
// says 0 for them.
func WithQueues(q QueueReporter) Option {
	return func(s *Server) { s.queues = q }
}

// control is what the update and report endpoints need beyond the tracker.
type control struct {
	sitePassword   [sha256.Size]byte
	reportPassword [sha256.Size]byte
	jsonReport     bool
	reasons        map[string]string
	version        string
	start          time.Time
	now            func() time.Time
}

func newControl(cfg *config.Config) *control {
	c := &control{
		sitePassword:   sha256.Sum256([]byte(cfg.SitePassword)),
		reportPassword: sha256.Sum256([]byte(cfg.ReportPassword)),
		jsonReport:     cfg.ReportFormat != "text",
		reasons:        cfg.DeletionReasons,
		version:        "chihaya",
		start:          time.Now(),
		now:            time.Now,
	}
	if c.reasons == nil {
		c.reasons = config.OcelotDeletionReasons
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		c.version += " " + bi.Main.Version
	}
	return c
}

// authorized reports whether given is the secret whose digest is want. Comparing digests in
// constant time hides both the secret's bytes and its length.
func authorized(given string, want *[sha256.Size]byte) bool {
	sum := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// serveControl serves /<secret>/update and /<secret>/report in private mode. It reports false,
// having written nothing, for any other action or in public mode.
func (s *Server) serveControl(w nethttp.ResponseWriter, r *nethttp.Request, secret, action string) bool {
	if s.ctl == nil {
		return false
	}
	switch action {
	case "update":
		s.counters.control.Add(1)
		if !authorized(secret, &s.ctl.sitePassword) {
			s.counters.badSecret.Add(1)
			s.denied(w, r)
			return true
		}
		s.serveUpdate(w, r)
	case "report":
		s.counters.control.Add(1)
		if !authorized(secret, &s.ctl.reportPassword) {
			s.counters.badReportSecret.Add(1)
			s.denied(w, r)
			return true
		}
		s.serveReport(w, r)
	default:
		return false
	}
	return true
}

func (s *Server) denied(w nethttp.ResponseWriter, r *nethttp.Request) {
	if glog.V(1) {
		glog.Infof("http: %s %s: wrong secret", r.RemoteAddr, r.URL.Path)
	}
	s.failHTTP(w, &request{fromText: r.RemoteAddr, path: r.URL.Path}, models.ErrAuthentication)
}

// writeText answers body with status as plain text with an explicit length, never chunked.
func writeText(w nethttp.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Cache-Control"] = noCache
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

var success = []byte("success")

// lastValue returns the value of the last pair whose key is key: like Ocelot, the last of
// duplicates wins.
func lastValue(q *query.Params, key string) ([]byte, bool) {
	for i := q.Len() - 1; i >= 0; i-- {
		if k, v := q.Pair(i); string(k) == key {
			return v, true
		}
	}
	return nil, false
}

// malformed is an update whose parameters cannot be applied; it is logged and changes nothing.
type malformed string

func (m malformed) Error() string { return string(m) }

func (s *Server) serveUpdate(w nethttp.ResponseWriter, r *nethttp.Request) {
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	q := &sc.q
	if err := q.Parse(r.URL.RawQuery); err != nil {
		glog.Errorf("http: update from %s: %v; nothing changed", r.RemoteAddr, err)
		writeText(w, nethttp.StatusOK, success)
		return
	}
	action, _ := lastValue(q, "action")
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	if err := s.update(ctx, string(action), q); err != nil {
		var m malformed
		if errors.As(err, &m) {
			glog.Errorf("http: update action %q from %s: %v; nothing changed", action, r.RemoteAddr, err)
		} else {
			glog.Errorf("http: update action %q from %s: %v", action, r.RemoteAddr, err)
			writeText(w, nethttp.StatusInternalServerError, []byte(models.ErrInternal))
			return
		}
	}
	writeText(w, nethttp.StatusOK, success)
}

// update applies one update action. A malformed error means nothing was changed.
func (s *Server) update(ctx context.Context, action string, q *query.Params) error {
	switch action {
	case "update_announce_interval":
		n, err := seconds(q, "new_announce_interval", 1)
		if err != nil {
			return err
		}
		s.tkr.SetAnnounceInterval(time.Duration(n) * time.Second)
		return nil
	case "update_announce_jitter":
		n, err := seconds(q, "new_announce_jitter", 0)
		if err != nil {
			return err
		}
		s.tkr.SetAnnounceJitter(time.Duration(n) * time.Second)
		return nil
	case "info_torrent":
		if glog.V(1) {
			glog.Infof("http: update action info_torrent is not supported; answered success")
		}
		return nil
	case "trace_user":
		if glog.V(1) {
			v, _ := lastValue(q, "trace")
			glog.Infof("http: update action trace_user (trace=%q) accepted and ignored", v)
		}
		return nil
	}
	updates, err := s.ctl.siteUpdates(action, q)
	if err != nil {
		return err
	}
	if len(updates) == 0 && glog.V(1) {
		glog.Infof("http: unknown update action %q answered success", action)
	}
	for i := range updates {
		err := s.tkr.UpdateSite(ctx, &updates[i])
		var ce models.ClientError
		switch {
		case err == nil:
		case errors.As(err, &ce):
			// The site asked about a user or torrent the tracker does not hold: Ocelot logs
			// and answers success.
			if glog.V(1) {
				glog.Infof("http: update action %s: %v", action, err)
			}
		default:
			return err
		}
	}
	return nil
}

// seconds parses a whole number of seconds of at least min.
func seconds(q *query.Params, key string, min int64) (int64, error) {
	v, _ := lastValue(q, key)
	n, err := strconv.ParseUint(string(v), 10, 31)
	if err != nil || int64(n) < min {
		return 0, malformed(key + " " + strconv.Quote(string(v)) + " is not a number of seconds")
	}
	return int64(n), nil
}

// siteUpdates translates a Gazelle update action into the changes it makes to the site state.
// An unknown action makes none.
func (c *control) siteUpdates(action string, q *query.Params) ([]models.SiteUpdate, error) {
	var p params
	p.q = q
	var out []models.SiteUpdate
	switch action {
	case "change_passkey":
		old, nw := p.passkey("oldpasskey"), p.passkey("newpasskey")
		out = append(out, models.SiteUpdate{Action: models.ChangePasskey, User: models.User{Passkey: old}, NewPasskey: nw})
	case "add_torrent":
		out = append(out, models.SiteUpdate{Action: models.AddTorrent, Torrent: models.Torrent{
			ID: p.id("id"), InfoHash: p.infoHash("info_hash"), Freeleech: p.freeleech(),
		}})
	case "update_torrent":
		out = append(out, models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{
			InfoHash: p.infoHash("info_hash"), Freeleech: p.freeleech(),
		}})
	case "update_torrents":
		v, _ := lastValue(q, "info_hashes")
		if len(v) == 0 || len(v)%len(models.InfoHash{}) != 0 {
			return nil, malformed("info_hashes of " + strconv.Itoa(len(v)) + " bytes is not a list of 20-byte hashes")
		}
		fl := p.freeleech()
		for ; len(v) > 0; v = v[20:] {
			out = append(out, models.SiteUpdate{Action: models.UpdateTorrent, Torrent: models.Torrent{
				InfoHash: models.InfoHash(v[:20]), Freeleech: fl,
			}})
		}
	case "add_token", "remove_token":
		a := models.AddToken
		if action == "remove_token" {
			a = models.RemoveToken
		}
		out = append(out, models.SiteUpdate{Action: a, Torrent: models.Torrent{InfoHash: p.infoHash("info_hash")}, User: models.User{ID: p.id("userid")}})
	case "delete_torrent":
		out = append(out, models.SiteUpdate{Action: models.DeleteTorrent, Torrent: models.Torrent{InfoHash: p.infoHash("info_hash")}, Reason: c.reason(q)})
	case "add_user":
		visible, _ := lastValue(q, "visible")
		out = append(out, models.SiteUpdate{Action: models.AddUser, User: models.User{
			ID: p.id("id"), Passkey: p.passkey("passkey"), CanLeech: true, Protected: string(visible) == "0",
		}})
	case "update_user":
		canLeech, _ := lastValue(q, "can_leech")
		visible, _ := lastValue(q, "visible")
		// Ocelot: only "0" forbids leeching, only "0" protects the address.
		out = append(out, models.SiteUpdate{Action: models.UpdateUser, User: models.User{
			Passkey: p.passkey("passkey"), CanLeech: string(canLeech) != "0", Protected: string(visible) == "0",
		}})
	case "remove_user":
		out = append(out, models.SiteUpdate{Action: models.RemoveUser, User: models.User{Passkey: p.passkey("passkey")}})
	case "remove_users":
		const passkeyLen = 32
		v, _ := lastValue(q, "passkeys")
		if len(v) == 0 || len(v)%passkeyLen != 0 {
			return nil, malformed("passkeys of " + strconv.Itoa(len(v)) + " bytes is not a list of 32-character passkeys")
		}
		for ; len(v) > 0; v = v[passkeyLen:] {
			out = append(out, models.SiteUpdate{Action: models.RemoveUser, User: models.User{Passkey: string(v[:passkeyLen])}})
		}
	case "add_whitelist", "remove_whitelist":
		a := models.AddWhitelist
		if action == "remove_whitelist" {
			a = models.RemoveWhitelist
		}
		out = append(out, models.SiteUpdate{Action: a, Prefix: p.prefix("peer_id")})
	case "edit_whitelist":
		out = append(out, models.SiteUpdate{Action: models.EditWhitelist, Prefix: p.prefix("old_peer_id"), NewPrefix: p.prefix("new_peer_id")})
	}
	if p.err != nil {
		return nil, p.err
	}
	return out, nil
}

// reason turns delete_torrent's reason code into its text: "" for -1, a missing or non-numeric
// code, or one the table does not have.
func (c *control) reason(q *query.Params) string {
	v, ok := lastValue(q, "reason")
	if !ok {
		return ""
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return ""
	}
	return c.reasons[strconv.Itoa(n)]
}

// params reads an update's parameters, remembering the first malformed one.
type params struct {
	q   *query.Params
	err error
}

func (p *params) bad(key string, v []byte, what string) {
	if p.err == nil {
		p.err = malformed(key + " " + strconv.Quote(string(v)) + " " + what)
	}
}

func (p *params) infoHash(key string) (ih models.InfoHash) {
	v, _ := lastValue(p.q, key)
	if len(v) != len(ih) {
		p.bad(key, v, "is not a 20-byte info hash")
		return ih
	}
	return models.InfoHash(v)
}

func (p *params) id(key string) uint64 {
	v, _ := lastValue(p.q, key)
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil || n == 0 {
		p.bad(key, v, "is not a site ID")
		return 0
	}
	return n
}

func (p *params) passkey(key string) string {
	v, _ := lastValue(p.q, key)
	if len(v) == 0 {
		p.bad(key, v, "is empty")
	}
	return string(v)
}

func (p *params) prefix(key string) string {
	v, _ := lastValue(p.q, key)
	if len(v) == 0 {
		p.bad(key, v, "is empty")
	}
	return string(v)
}

// freeleech reads freetorrent as Ocelot does: "0" is normal, "1" free, anything else (missing
// included) neutral.
func (p *params) freeleech() models.FreeleechType {
	v, _ := lastValue(p.q, "freetorrent")
	switch string(v) {
	case "0":
		return models.Normal
	case "1":
		return models.Free
	}
	return models.Neutral
}

func (s *Server) serveReport(w nethttp.ResponseWriter, r *nethttp.Request) {
	var q query.Params
	if err := q.Parse(r.URL.RawQuery); err != nil {
		s.reportFailure(w, r, models.ErrUnknownReport)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	get, _ := lastValue(&q, "get")
	switch string(get) {
	case "stats":
		body := s.statsReport(ctx)
		writeText(w, nethttp.StatusOK, body)
	case "user":
		key, _ := lastValue(&q, "key")
		if len(key) == 0 {
			s.reportFailure(w, r, models.ErrAnnounceKeyMissing)
			return
		}
		u, leeching, seeding, err := s.tkr.UserPeers(ctx, string(key))
		switch {
		case errors.Is(err, models.ErrPasskeyNotFound):
			s.reportFailure(w, r, models.ErrAnnounceKeyNotFound)
			return
		case err != nil:
			s.failHTTP(w, &request{fromText: r.RemoteAddr, path: r.URL.Path}, err)
			return
		}
		writeText(w, nethttp.StatusOK, s.ctl.userReport(u, leeching, seeding))
	default:
		s.reportFailure(w, r, models.ErrUnknownReport)
	}
}

// reportFailure answers a report that asks for nothing the tracker knows: a bencoded failure in
// the 2.x format; in the 1.0 format "Invalid action" and "success" lines, except that an unknown
// user is a bare "success", as WhatCD's Ocelot answers.
func (s *Server) reportFailure(w nethttp.ResponseWriter, r *nethttp.Request, err models.ClientError) {
	s.counters.failure(err)
	if s.ctl.jsonReport {
		s.failHTTP(w, &request{fromText: r.RemoteAddr, path: r.URL.Path}, err)
		return
	}
	body := success
	if err != models.ErrAnnounceKeyNotFound {
		body = []byte("Invalid action\nsuccess")
	}
	writeText(w, nethttp.StatusOK, body)
}

func (c *control) userReport(u models.User, leeching, seeding int) []byte {
	var b []byte
	if !c.jsonReport {
		b = strconv.AppendInt(b, int64(leeching), 10)
		b = append(b, " leeching\n"...)
		b = strconv.AppendInt(b, int64(seeding), 10)
		b = append(b, " seeding\nsuccess"...)
		return b
	}
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, u.ID, 10)
	b = append(b, `,"leeching":`...)
	b = strconv.AppendInt(b, int64(leeching), 10)
	b = append(b, `,"seeding":`...)
	b = strconv.AppendInt(b, int64(seeding), 10)
	// Ocelot writes its flags as 0 and 1, ends the document with a newline and has no other
	// fields; a user the tracker holds is never deleted (removal forgets the passkey).
	b = append(b, `,"deleted":0,"protected":`...)
	b = appendFlag(b, u.Protected)
	b = append(b, `,"can_leech":`...)
	b = appendFlag(b, u.CanLeech)
	return append(b, "}\n"...)
}

func appendFlag(b []byte, v bool) []byte {
	if v {
		return append(b, '1')
	}
	return append(b, '0')
}

// reportCounts are the numbers of a stats report, Ocelot's labels.
type reportCounts struct {
	uptime                    time.Duration
	connsOpened, connsOpen    int64
	connsPeak                 int64
	connsPerSecond            float64
	requests                  uint64
	perSecond                 float64
	announces, failedAnnounce uint64
	scrapes                   uint64
	leechers, seeders         int
	queues                    [5]int // users, torrents, peers, snatches, tokens
	maxHead                   int64
	bytesRead, bytesWritten   uint64
	badSecret, badReport      uint64
	badKey, badClient         uint64
	badHTTP                   uint64
	interval, jitter          int64
	usage                     rusage
	haveUsage                 bool
}

func (s *Server) statsReport(ctx context.Context) []byte {
	interval, jitter := s.tkr.AnnounceInterval()
	c := &s.counters
	fc := s.conns.Counts()
	rc := reportCounts{
		uptime:       s.ctl.now().Sub(s.ctl.start),
		connsOpened:  fc.Opened,
		connsOpen:    fc.Open,
		connsPeak:    fc.Peak,
		requests:     c.control.Load(),
		maxHead:      fc.MaxHead,
		bytesRead:    fc.BytesRead,
		bytesWritten: fc.BytesWritten,
		badSecret:    c.badSecret.Load(),
		badReport:    c.badReportSecret.Load(),
		badKey:       c.badKey.Load(),
		badClient:    c.badClient.Load(),
		badHTTP:      c.badHTTP.Load(),
		interval:     int64(interval / time.Second),
		jitter:       int64(jitter / time.Second),
	}
	if secs := rc.uptime.Seconds(); secs >= 1 {
		rc.connsPerSecond = float64(rc.connsOpened) / secs
	}
	if s.reportStats != nil {
		rq := s.reportStats.Requests()
		rc.announces, rc.failedAnnounce, rc.scrapes = rq.Announces, rq.AnnounceFailures, rq.Scrapes
		rc.requests += rq.Announces + rq.Scrapes
		rc.perSecond = rq.PerSecond
	}
	if s.queues != nil {
		q := &rc.queues
		q[0], q[1], q[2], q[3], q[4] = s.queues.QueueSizes()
	}
	if sc, err := s.tkr.SwarmCounts(ctx); err != nil {
		glog.Errorf("http: report: %v", err)
	} else {
		rc.leechers = sc.Leechers[0] + sc.Leechers[1]
		rc.seeders = sc.Seeders[0] + sc.Seeders[1]
	}
	rc.usage, rc.haveUsage = readRusage()
	if s.ctl.jsonReport {
		return s.ctl.jsonStats(&rc)
	}
	return textStats(&rc)
}

// textStats writes WhatCD Ocelot 1.0's "<value> <label>" lines, ending in "success", in its
// order; the announce interval and jitter lines, which that Ocelot did not have, come last.
// Legacy Gazelle reads the labels it wants by name.
func textStats(rc *reportCounts) []byte {
	up := int64(rc.uptime / time.Second)
	b := append([]byte(nil), "Uptime: "...)
	b = strconv.AppendInt(b, up/86400, 10)
	b = append(b, " days, "...)
	b = twoDigits(b, up/3600%24)
	b = append(b, ':')
	b = twoDigits(b, up/60%60)
	b = append(b, ':')
	b = twoDigits(b, up%60)
	b = append(b, '\n')
	line := func(v uint64, label string) {
		b = strconv.AppendUint(b, v, 10)
		b = append(b, ' ')
		b = append(b, label...)
		b = append(b, '\n')
	}
	line(uint64(rc.connsOpened), "connections opened")
	line(uint64(rc.connsOpen), "open connections")
	line(uint64(rc.connsPerSecond), "connections/s")
	line(rc.requests, "requests handled")
	line(uint64(rc.perSecond), "requests/s")
	line(rc.announces-min(rc.failedAnnounce, rc.announces), "successful announcements")
	line(rc.failedAnnounce, "failed announcements")
	line(rc.scrapes, "scrapes")
	line(uint64(rc.leechers), "leechers tracked")
	line(uint64(rc.seeders), "seeders tracked")
	line(rc.bytesRead, "bytes read")
	line(rc.bytesWritten, "bytes written")
	line(uint64(rc.interval), "announce interval")
	line(uint64(rc.jitter), "announce jitter")
	return append(b, success...)
}

func twoDigits(b []byte, n int64) []byte {
	if n < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, n, 10)
}

// jsonStats writes OPSnet Ocelot 2.x's {"<label>":{"type":…,"value":…},…} document with every
// label Ocelot 2.1.3 writes, in its order and with its types, ending in a newline; Gazelle reads
// the values as ['announce interval']['value']. Where Chihaya has no such figure the label still
// comes, with Chihaya's nearest: "jemalloc version" is the Go runtime's (Chihaya's allocator).
func (c *control) jsonStats(rc *reportCounts) []byte {
	b := append([]byte(nil), '{')
	entry := func(label, typ string, value []byte) {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, label...)
		b = append(b, `":{"type":"`...)
		b = append(b, typ...)
		b = append(b, `","value":`...)
		b = append(b, value...)
		b = append(b, '}')
	}
	num := func(n uint64) []byte { return strconv.AppendUint(nil, n, 10) }
	inum := func(n int64) []byte { return strconv.AppendInt(nil, max(n, 0), 10) }
	float := func(f float64) []byte { return strconv.AppendFloat(nil, f, 'f', -1, 64) }
	str := func(v string) []byte { j, _ := json.Marshal(v); return j }
	entry("version", "string", str(c.version))
	entry("jemalloc version", "string", str(runtime.Version()))
	entry("connections opened", "number", inum(rc.connsOpened))
	entry("open connections", "number", inum(rc.connsOpen))
	entry("peak connections", "number", inum(rc.connsPeak))
	entry("connections/s", "number", float(rc.connsPerSecond))
	entry("requests handled", "number", num(rc.requests))
	entry("requests/s", "number", float(rc.perSecond))
	entry("successful announcements", "number", num(rc.announces-min(rc.failedAnnounce, rc.announces)))
	entry("failed announcements", "number", num(rc.failedAnnounce))
	entry("scrapes", "number", num(rc.scrapes))
	entry("leechers tracked", "number", num(uint64(rc.leechers)))
	entry("seeders tracked", "number", num(uint64(rc.seeders)))
	for i, label := range [...]string{"items in user queue", "items in torrent queue", "items in peer queue",
		"items in snatch queue", "items in token queue"} {
		entry(label, "number", inum(int64(rc.queues[i])))
	}
	entry("max client request length", "byte", inum(rc.maxHead))
	entry("bytes read", "byte", num(rc.bytesRead))
	entry("bytes written", "byte", num(rc.bytesWritten))
	entry("bad tracker secret received", "number", num(rc.badSecret))
	entry("bad report secret received", "number", num(rc.badReport))
	entry("bad announce key received", "number", num(rc.badKey))
	entry("bad client configuration", "number", num(rc.badClient))
	entry("bad http request", "number", num(rc.badHTTP))
	entry("announce interval", "number", num(uint64(rc.interval)))
	entry("announce jitter", "number", num(uint64(rc.jitter)))
	entry("uptime", "elapsed", num(uint64(rc.uptime/time.Second)))
	if rc.haveUsage {
		u := &rc.usage
		entry("user time", "elapsed", appendSeconds(nil, u.user))
		entry("system time", "elapsed", appendSeconds(nil, u.system))
		entry("maximum resident set size", "byte", inum(u.maxRSS))
		entry("minor page faults", "number", inum(u.minFlt))
		entry("major page faults", "number", inum(u.majFlt))
		entry("blocks in", "number", inum(u.inBlock))
		entry("blocks out", "number", inum(u.outBlock))
		entry("voluntary context switches", "number", inum(u.nvcsw))
		entry("involuntary context switches", "number", inum(u.nivcsw))
	}
	return append(b, "}\n"...)
}

// appendSeconds writes d as Ocelot writes CPU times: seconds, a point and six digits.
func appendSeconds(b []byte, d time.Duration) []byte {
	us := max(int64(d/time.Microsecond), 0)
	b = strconv.AppendInt(b, us/1e6, 10)
	b = append(b, '.')
	frac := strconv.AppendInt(nil, us%1e6, 10)
	for range 6 - len(frac) {
		b = append(b, '0')
	}
	return append(b, frac...)
}
