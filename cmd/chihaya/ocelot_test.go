//go:build linux

package main

// Ocelot parity (issue 14): what a Gazelle site sees of the tracker, checked end to end against
// the binary and a real MariaDB, each case with its own database and tracker process.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startOcelot starts the tracker in private mode on dsn, flushing every 100 ms, with the
// settings of startPrivate changed by extra, and waits until it has loaded the site (alice's
// passkey scrapes).
func startOcelot(ctx context.Context, t *testing.T, bin, dsn string, extra map[string]any) *privateTracker {
	t.Helper()
	return launchPrivate(ctx, t, bin, dsn, "100ms", extra, "/"+alicePasskey+"/scrape?info_hash="+pct(normalTorrent),
		func(status int) bool { return status == http.StatusOK })
}

// bdict decodes a bencoded dictionary answer.
func bdict(t *testing.T, body string) map[string]any {
	t.Helper()
	v, n, err := bdecode([]byte(body), 0)
	require.NoError(t, err, "%q", body)
	require.Equal(t, len(body), n, "trailing bytes after the answer %q", body)
	d, ok := v.(map[string]any)
	require.True(t, ok, "not a dictionary: %q", body)
	return d
}

// scrapeFiles scrapes with passkey and returns the decoded answer.
func (p *privateTracker) scrape(t *testing.T, passkey string, hashes ...[]byte) map[string]any {
	t.Helper()
	q := ""
	for i, h := range hashes {
		if i > 0 {
			q += "&"
		}
		q += "info_hash=" + pct(h)
	}
	return bdict(t, get(t, p.url+"/"+passkey+"/scrape?"+q))
}

// update calls the site's update API and requires Ocelot's "success".
func (p *privateTracker) update(t *testing.T, query string) {
	t.Helper()
	require.Equal(t, "success", get(t, p.url+"/"+sitePassword+"/update?"+query))
}

// announceTo announces a on port with the extra query parameters (compact=1 unless extra has a
// compact) and returns the decoded answer.
func (p *privateTracker) announceTo(t *testing.T, a ann, port int, extra string) map[string]any {
	t.Helper()
	return bdict(t, get(t, p.url+"/"+a.passkey+"/announce?"+announceQuery(a, port, extra)))
}

func announceQuery(a ann, port int, extra string) string {
	peerID := fmt.Sprintf("%-20s", "-qB4250-"+a.peer)[:20]
	q := "info_hash=" + pct(a.ih) + "&peer_id=" + pct([]byte(peerID)) +
		fmt.Sprintf("&port=%d&uploaded=%d&downloaded=%d&left=%d", port, a.up, a.down, a.left)
	if a.event != "" {
		q += "&event=" + a.event
	}
	if !strings.Contains(extra, "compact=") {
		q += "&compact=1"
	}
	if extra != "" {
		q += "&" + extra
	}
	return q
}

// peerPorts returns the ports of an answer's compact IPv4 peers, sorted.
func peerPorts(t *testing.T, d map[string]any) []int {
	t.Helper()
	require.NotContains(t, d, "failure reason")
	s, ok := d["peers"].(string)
	require.True(t, ok, "compact peers: %v", d)
	require.Zero(t, len(s)%6)
	ports := []int{}
	for i := 0; i < len(s); i += 6 {
		ports = append(ports, int(s[i+4])<<8|int(s[i+5]))
	}
	sort.Ints(ports)
	return ports
}

// TestOcelotParity runs the cases of issue 14, each on a fresh database and tracker.
func TestOcelotParity(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tracker binary")
	}
	gazelleDB(t) // skips without MariaDB before the build
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bin := buildTracker(ctx, t, t.TempDir())
	// open starts a tracker on a fresh database.
	open := func(t *testing.T, extra map[string]any) (*privateTracker, *sql.DB) {
		dsn := gazelleDB(t)
		db, err := sql.Open("mysql", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		return startOcelot(ctx, t, bin, dsn, extra), db
	}

	// Item 1: a private scrape answers only a user's passkey.
	t.Run("scrape needs a passkey", func(t *testing.T) {
		p, _ := open(t, nil)
		require.NotContains(t, p.announce(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}), "failure reason")
		files := p.scrape(t, erinPasskey, normalTorrent)["files"].(map[string]any)
		assert.Equal(t, map[string]any{"complete": int64(0), "downloaded": int64(3), "incomplete": int64(1)}, files[string(normalTorrent)], "a user scrapes")
		for _, passkey := range []string{"nobodynobodynobodynobodynobody00", "davedavedavedavedavedavedavede04"} {
			d := p.scrape(t, passkey, normalTorrent)
			assert.Equal(t, "Passkey not found", d["failure reason"], passkey)
			assert.NotContains(t, d, "files", passkey)
		}
		d := bdict(t, get(t, p.url+"/scrape?info_hash="+pct(normalTorrent)))
		assert.Equal(t, "Passkey not found", d["failure reason"], "no passkey")

		p.update(t, "action=remove_user&passkey="+erinPasskey)
		d = p.scrape(t, erinPasskey, normalTorrent)
		assert.Equal(t, "Passkey not found", d["failure reason"], "a removed user")
		assert.NotContains(t, d, "files")
	})

	// Item 2: a removed user's peers are handed out no more, at once, to leechers and seeders.
	t.Run("removed user's peers hidden", func(t *testing.T) {
		p, _ := open(t, nil)
		alice := ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}
		carol := ann{passkey: carolPasskey, ih: normalTorrent, peer: "c1", event: "started"}
		erin := ann{passkey: erinPasskey, ih: normalTorrent, peer: "e1", event: "started", left: 10}
		assert.Equal(t, []int{}, peerPorts(t, p.announceTo(t, alice, 7001, "")))
		assert.Equal(t, []int{7001}, peerPorts(t, p.announceTo(t, carol, 7002, "")))
		assert.Equal(t, []int{7001, 7002}, peerPorts(t, p.announceTo(t, erin, 7003, "")))

		p.update(t, "action=remove_user&passkey="+alicePasskey)
		erin.event, carol.event = "", ""
		d := p.announceTo(t, erin, 7003, "")
		assert.Equal(t, []int{7002}, peerPorts(t, d), "a leecher no longer gets the removed user's leecher")
		assert.Equal(t, int64(2), d["incomplete"], "counted until reaped, as in Ocelot")
		assert.Equal(t, []int{7003}, peerPorts(t, p.announceTo(t, carol, 7002, "")), "nor does a seeder")
		assert.Equal(t, "Passkey not found", p.announceTo(t, alice, 7001, "")["failure reason"])
	})

	// Item 3: a stop from a peer never seen writes its row inactive, and credits nothing.
	t.Run("stop from an unknown peer", func(t *testing.T) {
		p, db := open(t, nil)
		d := p.announceTo(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a9", event: "stopped", up: 100, down: 50, left: 10}, 7009, "")
		assert.Equal(t, int64(0), d["incomplete"])
		var active, announced int
		var up, down, remaining int64
		eventually(t, 10*time.Second, "alice's row", func() (bool, string) {
			err := db.QueryRow("SELECT active, announced, uploaded, downloaded, remaining FROM xbt_files_users WHERE uid = 1 AND fid = 1").
				Scan(&active, &announced, &up, &down, &remaining)
			return err == nil, fmt.Sprint(err)
		})
		assert.Equal(t, []any{0, 1, int64(100), int64(50), int64(10)}, []any{active, announced, up, down, remaining}, "active, announced, uploaded, downloaded, remaining")
		u, dn := userStats(t, db, 1)
		assert.Equal(t, []int64{1000, 500}, []int64{u, dn}, "a baseline credits nothing")
	})

	// Item 4: every failure carries Ocelot's 5400 s interval and min interval.
	t.Run("failure intervals", func(t *testing.T) {
		p, _ := open(t, nil)
		for _, tc := range []struct{ url, reason string }{
			{p.url + "/" + strings.Repeat("x", 32) + "/announce?" + announceQuery(ann{ih: normalTorrent, peer: "x", left: 1}, 6881, ""), "Passkey not found"},
			{p.url + "/" + alicePasskey + "/announce?" + announceQuery(ann{ih: mustHex("9999999999999999999999999999999999999999"), peer: "a", left: 1}, 6881, ""), "Unregistered torrent"},
			{p.url + "/" + bobPasskey + "/announce?" + announceQuery(ann{ih: normalTorrent, peer: "b", left: 1}, 6881, ""), "Access denied, leeching forbidden"},
			{p.url + "/" + strings.Repeat("x", 32) + "/scrape?info_hash=" + pct(normalTorrent), "Passkey not found"},
			{p.url + "/" + strings.Repeat("x", 32) + "/update?action=remove_user&passkey=" + alicePasskey, "Authentication failure"},
			{p.url + "/" + reportKey + "/report?get=user&key=nobody", "Announce key not found"},
		} {
			want := "d14:failure reason" + strconv.Itoa(len(tc.reason)) + ":" + tc.reason + "8:intervali5400e12:min intervali5400ee"
			assert.Equal(t, want, get(t, tc.url), tc.url)
		}
		d := p.announceTo(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 1}, 6881, "")
		assert.Equal(t, int64(1800), d["interval"], "a success keeps the announce interval")
	})

	// Item 5: compact_only refuses every announce that does not say compact=1.
	t.Run("compact only", func(t *testing.T) {
		p, _ := open(t, map[string]any{"compact_only": true})
		a := ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}
		const refused = "Your client does not support compact announces"
		noCompact := strings.Replace(announceQuery(a, 6881, ""), "&compact=1", "", 1)
		require.NotContains(t, noCompact, "compact")
		assert.Equal(t, refused, bdict(t, get(t, p.url+"/"+alicePasskey+"/announce?"+noCompact))["failure reason"], "no compact parameter")
		for _, c := range []string{"compact=0", "compact=", "compact=2"} {
			assert.Equal(t, refused, p.announceTo(t, a, 6881, c)["failure reason"], c)
		}
		assert.NotContains(t, p.announceTo(t, a, 6881, "compact=1"), "failure reason")
	})

	// Item 6: a scrape leaves out unknown and deleted torrents; one of no torrent is empty.
	t.Run("scrape files", func(t *testing.T) {
		p, _ := open(t, nil)
		require.NotContains(t, p.announceTo(t, ann{passkey: alicePasskey, ih: freeTorrent, peer: "a2", event: "started", left: 10}, 6881, ""), "failure reason")
		p.update(t, "action=delete_torrent&id=5&reason=0&info_hash="+pct(deletedTorrent))
		unknown := mustHex("9999999999999999999999999999999999999999")
		body := get(t, p.url+"/"+alicePasskey+"/scrape?info_hash="+pct(unknown)+"&info_hash="+pct(freeTorrent)+"&info_hash="+pct(deletedTorrent)+"&info_hash=short")
		assert.Equal(t, "d5:filesd20:"+string(freeTorrent)+"d8:completei0e10:downloadedi0e10:incompletei1eeee", body)
		for _, q := range []string{"foo=bar", "info_hash=", "info_hash=" + pct(unknown)} {
			assert.Equal(t, "d5:filesdee", get(t, p.url+"/"+alicePasskey+"/scrape?"+q), q)
		}
	})

	// Item 7: a malformed numwant reads as 0: no peers, and the announce counts.
	t.Run("malformed numwant", func(t *testing.T) {
		p, db := open(t, nil)
		require.NotContains(t, p.announceTo(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}, 7001, ""), "failure reason")
		erin := ann{passkey: erinPasskey, ih: normalTorrent, peer: "e1", event: "started", left: 10}
		for _, nw := range []string{"numwant=abc", "numwant="} {
			d := p.announceTo(t, erin, 7003, nw)
			assert.Equal(t, []int{}, peerPorts(t, d), nw)
			assert.Equal(t, int64(2), d["incomplete"], "%s: erin is in the swarm", nw)
			erin.event = ""
		}
		assert.Equal(t, []int{7001}, peerPorts(t, p.announceTo(t, erin, 7003, "numwant=5x")), "a leading number counts")
		eventually(t, 10*time.Second, "erin's row to count her three announces", func() (bool, string) {
			var announced int
			err := db.QueryRow("SELECT announced FROM xbt_files_users WHERE uid = 5 AND fid = 1 AND active = 1").Scan(&announced)
			return err == nil && announced == 3, fmt.Sprint(announced, err)
		})
	})

	// Item 8: a passkey path without a query string gets Ocelot's plain page.
	t.Run("nothing to see here", func(t *testing.T) {
		p, _ := open(t, nil)
		const page = `<html><head><meta name="robots" content="noindex, nofollow" /></head><body>Nothing to see here</body></html>`
		for _, path := range []string{"/" + alicePasskey + "/announce", "/" + strings.Repeat("x", 32) + "/scrape", "/" + sitePassword + "/update", "/" + reportKey + "/report"} {
			resp, err := http.Get(p.url + path)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, resp.StatusCode, path)
			assert.Equal(t, "text/html", resp.Header.Get("Content-Type"), path)
			assert.Equal(t, page, string(body), path)
		}
		// On one keep-alive connection, after an announce the fast path answered.
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
		require.NoError(t, err)
		defer conn.Close()
		_, err = fmt.Fprintf(conn, "GET /%s/scrape?info_hash=%s HTTP/1.1\r\n\r\nGET /%s/announce HTTP/1.1\r\nConnection: close\r\n\r\n", alicePasskey, pct(normalTorrent), alicePasskey)
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		all, err := io.ReadAll(conn)
		require.NoError(t, err)
		assert.Equal(t, 2, strings.Count(string(all), "HTTP/1.1 200 OK\r\n"), "%s", all)
		assert.Contains(t, string(all), "d5:filesd20:")
		assert.True(t, strings.HasSuffix(string(all), "\r\n\r\n"+page), "%s", all)
	})

	// Item 9: the JSON user report is Ocelot's bytes, flags as 0 and 1.
	t.Run("user report", func(t *testing.T) {
		p, _ := open(t, nil)
		require.NotContains(t, p.announceTo(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}, 7001, ""), "failure reason")
		require.NotContains(t, p.announceTo(t, ann{passkey: alicePasskey, ih: freeTorrent, peer: "a1", event: "started"}, 7001, ""), "failure reason")
		for _, tc := range []struct{ passkey, want string }{
			{alicePasskey, `{"id":1,"leeching":1,"seeding":1,"deleted":0,"protected":0,"can_leech":1}` + "\n"},
			{bobPasskey, `{"id":2,"leeching":0,"seeding":0,"deleted":0,"protected":0,"can_leech":0}` + "\n"},
			{carolPasskey, `{"id":3,"leeching":0,"seeding":0,"deleted":0,"protected":1,"can_leech":1}` + "\n"},
		} {
			assert.Equal(t, tc.want, get(t, p.url+"/"+reportKey+"/report?get=user&key="+tc.passkey))
		}
	})

	// Item 11: the min interval follows the announce interval, also after an update.
	t.Run("min interval follows", func(t *testing.T) {
		p, _ := open(t, nil)
		a := ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}
		d := p.announceTo(t, a, 7001, "")
		assert.Equal(t, []any{int64(1800), int64(1800)}, []any{d["interval"], d["min interval"]}, "min_announce 15m counts in public mode only")
		p.update(t, "action=update_announce_interval&new_announce_interval=2400")
		a.event = ""
		d = p.announceTo(t, a, 7001, "")
		assert.Equal(t, []any{int64(2400), int64(2400)}, []any{d["interval"], d["min interval"]})
		var doc map[string]struct {
			Type  string
			Value any
		}
		require.NoError(t, json.Unmarshal([]byte(get(t, p.url+"/"+reportKey+"/report?get=stats")), &doc))
		assert.Equal(t, float64(2400), doc["announce interval"].Value)
	})

	// Item 10: the stats report serves every label of Ocelot's, with the tracker's own figures.
	t.Run("stats report", func(t *testing.T) {
		p, _ := open(t, nil)
		require.NotContains(t, p.announceTo(t, ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 10}, 7001, ""), "failure reason")
		assert.Equal(t, "Passkey not found", p.announceTo(t, ann{passkey: strings.Repeat("x", 32), ih: normalTorrent, peer: "x", left: 1}, 7002, "")["failure reason"])
		assert.Contains(t, get(t, p.url+"/"+alicePasskey+"/announce?info_hash="+pct(normalTorrent)+"&peer_id=-XX0001-aaaaaaaaaaaa&port=1&uploaded=0&downloaded=0&left=1"), "Your client is not on the whitelist")
		assert.Contains(t, get(t, p.url+"/"+alicePasskey+"/announce?info_hash=short"), "failure reason")
		assert.Contains(t, get(t, p.url+"/"+strings.Repeat("x", 32)+"/update?action=x"), "Authentication failure")
		assert.Contains(t, get(t, p.url+"/"+strings.Repeat("x", 32)+"/report?get=stats"), "Authentication failure")
		type item struct {
			Type  string
			Value any
		}
		var doc map[string]item
		// The request counts come from the stats aggregator, which applies events in batches.
		eventually(t, 10*time.Second, "the report to count the announces", func() (bool, string) {
			doc = nil
			body := get(t, p.url+"/"+reportKey+"/report?get=stats")
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				return false, err.Error()
			}
			return doc["successful announcements"].Value == float64(1) && doc["failed announcements"].Value == float64(3), body
		})
		for _, l := range []struct{ label, typ string }{
			{"version", "string"}, {"jemalloc version", "string"}, {"connections opened", "number"},
			{"open connections", "number"}, {"peak connections", "number"}, {"connections/s", "number"},
			{"requests handled", "number"}, {"requests/s", "number"}, {"successful announcements", "number"},
			{"failed announcements", "number"}, {"scrapes", "number"}, {"leechers tracked", "number"},
			{"seeders tracked", "number"}, {"items in user queue", "number"}, {"items in torrent queue", "number"},
			{"items in peer queue", "number"}, {"items in snatch queue", "number"}, {"items in token queue", "number"},
			{"max client request length", "byte"}, {"bytes read", "byte"}, {"bytes written", "byte"},
			{"bad tracker secret received", "number"}, {"bad report secret received", "number"},
			{"bad announce key received", "number"}, {"bad client configuration", "number"}, {"bad http request", "number"},
			{"announce interval", "number"}, {"announce jitter", "number"}, {"uptime", "elapsed"},
			{"user time", "elapsed"}, {"system time", "elapsed"}, {"maximum resident set size", "byte"},
			{"minor page faults", "number"}, {"major page faults", "number"}, {"blocks in", "number"},
			{"blocks out", "number"}, {"voluntary context switches", "number"}, {"involuntary context switches", "number"},
		} {
			if assert.Contains(t, doc, l.label) {
				assert.Equal(t, l.typ, doc[l.label].Type, l.label)
			}
		}
		assert.Len(t, doc, 38)
		for label, want := range map[string]float64{
			"bad tracker secret received": 1, "bad report secret received": 1, "bad announce key received": 1,
			"bad client configuration": 1, "bad http request": 1, "leechers tracked": 1, "announce interval": 1800,
		} {
			assert.Equal(t, want, doc[label].Value, label)
		}
		for _, label := range []string{"connections opened", "peak connections", "requests handled", "bytes read", "bytes written",
			"max client request length", "maximum resident set size"} {
			assert.Greater(t, doc[label].Value, float64(0), label)
		}
		assert.GreaterOrEqual(t, doc["requests handled"].Value, float64(4+3), "announces and control requests")
	})

	// Dual stack: an announce naming both endpoints counts once in announced, is credited once,
	// and its row shows the IPv4 address.
	t.Run("dual-stacked client's row", func(t *testing.T) {
		p, db := open(t, map[string]any{"allow_ip_spoofing": true})
		a := ann{passkey: alicePasskey, ih: normalTorrent, peer: "a1", event: "started", left: 1000}
		for i, step := range []struct{ up, down int64 }{{0, 0}, {300, 200}, {500, 300}} {
			a.up, a.down = step.up, step.down
			d := p.announceTo(t, a, 7001, "ipv6=2001:db8::1")
			require.NotContains(t, d, "failure reason")
			assert.Equal(t, int64(2), d["incomplete"], "two entries, one per family")
			a.event = ""
			want := fmt.Sprint(i+1, " ", step.up, " ", step.down, " 127.0.0.1 ", 1000+step.up, " ", 500+step.down)
			eventually(t, 10*time.Second, "alice's row and credit", func() (bool, string) {
				var announced int
				var up, down int64
				var ip string
				err := db.QueryRow("SELECT announced, uploaded, downloaded, ip FROM xbt_files_users WHERE uid = 1 AND fid = 1").Scan(&announced, &up, &down, &ip)
				if err != nil {
					return false, err.Error()
				}
				cu, cd := userStats(t, db, 1)
				got := fmt.Sprint(announced, " ", up, " ", down, " ", ip, " ", cu, " ", cd)
				return got == want, got + ", want " + want
			})
		}
	})
}
