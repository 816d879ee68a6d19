package stats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/config"
)

const e2eWait = 15 * time.Second

// eventually polls cond on the test goroutine (so that cond may use require) until it holds,
// and fails the test when it still does not after e2eWait.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %s", what, e2eWait)
		}
		<-tick.C
	}
}

// newConfig is the embedded default configuration on a loopback port, edited by edit and
// validated again.
func newConfig(t *testing.T, edit func(*config.Config)) *config.Config {
	t.Helper()
	cfg, err := config.Parse(chihaya.DefaultConfig, "x")
	require.NoError(t, err)
	cfg.Addr = "127.0.0.1:0"
	cfg.UDPAddr = "127.0.0.1:0"
	if edit != nil {
		edit(cfg)
	}
	require.NoError(t, cfg.Validate())
	return cfg
}

func start(t *testing.T, cfg *config.Config) *chihaya.Chihaya {
	t.Helper()
	c, err := chihaya.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
		defer cancel()
		assert.NoError(t, c.Shutdown(ctx))
	})
	return c
}

// newClient returns an HTTP client that never uses a proxy, closed with the test.
func newClient(t *testing.T) *nethttp.Client {
	tr := &nethttp.Transport{Proxy: nil, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &nethttp.Client{Transport: tr, Timeout: e2eWait}
}

func get(t *testing.T, client *nethttp.Client, u string) (int, []byte) {
	t.Helper()
	resp, err := client.Get(u)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	return resp.StatusCode, body
}

// flatStats fetches /stats?flatten.
func flatStats(t *testing.T, client *nethttp.Client, base string) map[string]any {
	t.Helper()
	status, body := get(t, client, base+"/stats?flatten")
	require.Equal(t, nethttp.StatusOK, status, string(body))
	var doc map[string]any
	require.NoError(t, json.Unmarshal(body, &doc))
	return doc
}

// pick returns the values of doc under the keys of want, and every key with one of prefixes.
func pick(doc map[string]any, want map[string]float64, prefixes ...string) map[string]float64 {
	out := make(map[string]float64, len(want))
	for k, v := range doc {
		f, isNum := v.(float64)
		if !isNum {
			continue
		}
		if _, ok := want[k]; ok {
			out[k] = f
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				out[k] = f
			}
		}
	}
	return out
}

// waitStats polls /stats until the values under the keys of want (and exactly the keys with one
// of prefixes) are those of want, and fails with the difference at the deadline.
func waitStats(t *testing.T, client *nethttp.Client, base string, want map[string]float64, prefixes ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		doc := flatStats(t, client, base)
		got := pick(doc, want, prefixes...)
		if assert.ObjectsAreEqual(want, got) {
			return doc
		}
		if time.Now().After(deadline) {
			require.Equal(t, want, got, "/stats after %s", e2eWait)
		}
		<-tick.C
	}
}

func metrics(t *testing.T, client *nethttp.Client, base string) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := get(t, client, base+"/metrics")
	require.Equal(t, nethttp.StatusOK, status, string(body))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	require.NoError(t, err)
	return fams
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sample sums the counter and gauge values of the series of name whose labels include want;
// ok is false when there is no such series.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, ok bool) {
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, want) {
			ok = true
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return v, ok
}

func assertSample(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string, expected float64) {
	t.Helper()
	v, ok := sample(fams, name, want)
	if assert.Truef(t, ok, "no series %s%v", name, want) {
		assert.Equalf(t, expected, v, "%s%v", name, want)
	}
}

// escape percent-encodes every byte but letters and digits, as BitTorrent clients do.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func announceQuery(infoHash, peerID string, left int, event string) string {
	q := "info_hash=" + escape(infoHash) + "&peer_id=" + escape(peerID) +
		"&port=6881&uploaded=0&downloaded=0&left=" + strconv.Itoa(left) + "&compact=1"
	if event != "" {
		q += "&event=" + event
	}
	return q
}

// hasIPv6Loopback reports whether ::1 can be listened on.
func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

const (
	ihA = "AAAAAAAAAAAAAAAAAAAA"
	ihB = "BBBBBBBBBBBBBBBBBBBB"
	ihC = "CC\x00\x01\xfe\xff CCCCCCCCCCCCC" // binary bytes, escaped on the wire
)

func peer(n int) string { return fmt.Sprintf("-TE0001-%012d", n) }

func TestEndToEndStatsAndMetrics(t *testing.T) {
	v6 := hasIPv6Loopback()
	cfg := newConfig(t, func(c *config.Config) {
		if v6 {
			// One listener for both families: it binds every interface, but the test talks
			// only to 127.0.0.1 and ::1.
			c.Addr = ":0"
		}
	})
	c := start(t, cfg)
	port := c.Addr().(*net.TCPAddr).Port
	client := newClient(t)
	bases := map[string]string{
		"ipv4": fmt.Sprintf("http://127.0.0.1:%d", port),
		"ipv6": fmt.Sprintf("http://[::1]:%d", port),
	}
	family := func(f string) string {
		if f == "ipv6" && !v6 {
			return "ipv4"
		}
		return f
	}
	if !v6 {
		t.Log("::1 is unavailable: the IPv6 requests go over IPv4")
	}

	announces := []struct {
		family, ih, peer string
		left             int
		event            string
	}{
		{"ipv4", ihA, peer(1), 100, "started"},
		{"ipv4", ihA, peer(2), 0, "started"},
		{"ipv6", ihA, peer(3), 100, "started"},
		{"ipv4", ihA, peer(1), 0, "completed"}, // peer 1 becomes a seeder
		{"ipv4", ihA, peer(4), 50, "started"},
		{"ipv4", ihA, peer(4), 50, "stopped"}, // peer 4 leaves
		{"ipv6", ihB, peer(5), 0, "started"},
		{"ipv6", ihB, peer(6), 10, ""},
		{"ipv6", ihB, peer(6), 10, "paused"},
		{"ipv4", ihB, peer(7), 10, ""},
		{"ipv6", ihB, peer(1), 0, ""}, // peer 1 over the other family is another endpoint
		{"ipv4", ihC, peer(8), 10, "started"},
		{"ipv6", ihC, peer(9), 0, "started"},
		{"ipv4", ihC, peer(8), 10, "stopped"},
		{"ipv4", ihC, peer(10), 5, "empty"},
	}
	failures := []struct {
		family, path, kind string
	}{
		{"ipv4", "/announce?info_hash=tooshort&peer_id=" + escape(peer(20)) + "&port=6881&uploaded=0&downloaded=0&left=1", "invalid_info_hash"},
		{"ipv6", "/announce?info_hash=" + escape(ihA[:19]) + "&peer_id=" + escape(peer(21)) + "&port=6881&uploaded=0&downloaded=0&left=1", "invalid_info_hash"},
		{"ipv6", "/announce?info_hash=" + escape(ihA) + "&peer_id=" + escape(peer(22)) + "&uploaded=0&downloaded=0&left=1", "missing_port"},
		{"ipv4", "/announce?info_hash=" + escape(ihA) + "&peer_id=" + escape(peer(23)) + "&port=6881&uploaded=0&downloaded=0&left=1&event=bogus", "invalid_event"},
		{"ipv4", "/scrape", "missing_info_hash"},
		{"ipv6", "/scrape?info_hash=" + escape(ihB) + "&info_hash=xyz", "invalid_info_hash"},
	}
	scrapes := []struct{ family, query string }{
		{"ipv4", "info_hash=" + escape(ihA)},
		{"ipv4", "info_hash=" + escape(ihA) + "&info_hash=" + escape(ihB)},
		{"ipv6", "info_hash=" + escape(ihC)},
		{"ipv6", "info_hash=" + escape("ZZZZZZZZZZZZZZZZZZZZ")}, // unknown torrent: still answered
		{"ipv4", "info_hash=" + escape(ihB)},
	}

	// What the tracker should hold and count, computed from what is sent.
	type endpoint struct{ ih, peer, family string }
	swarm := map[endpoint]bool{} // endpoint → seeder
	byEvent := map[string]float64{"none": 0, "started": 0, "completed": 0, "stopped": 0, "paused": 0}
	requests := map[string]map[string]float64{"announce": {"ipv4": 0, "ipv6": 0}, "scrape": {"ipv4": 0, "ipv6": 0}}
	failureKinds := map[string]map[string]float64{"announce": {}, "scrape": {}}

	for _, a := range announces {
		fam := family(a.family)
		status, body := get(t, client, bases[fam]+"/announce?"+announceQuery(a.ih, a.peer, a.left, a.event))
		require.Equal(t, nethttp.StatusOK, status)
		require.NotContains(t, string(body), "failure reason", "%+v", a)
		require.True(t, strings.HasPrefix(string(body), "d8:completei"), string(body))
		requests["announce"][fam]++
		ev := a.event
		if ev == "" || ev == "empty" {
			ev = "none"
		}
		byEvent[ev]++
		k := endpoint{a.ih, a.peer, fam}
		if a.event == "stopped" {
			delete(swarm, k)
		} else {
			swarm[k] = a.left == 0
		}
	}
	for _, f := range failures {
		fam := family(f.family)
		status, body := get(t, client, bases[fam]+f.path)
		require.Equal(t, nethttp.StatusOK, status, "failures are answered with 200 and a reason")
		require.Contains(t, string(body), "failure reason", f.path)
		action := "announce"
		if strings.HasPrefix(f.path, "/scrape") {
			action = "scrape"
		}
		requests[action][fam]++
		failureKinds[action][f.kind]++
	}
	for _, s := range scrapes {
		fam := family(s.family)
		status, body := get(t, client, bases[fam]+"/scrape?"+s.query)
		require.Equal(t, nethttp.StatusOK, status)
		require.True(t, strings.HasPrefix(string(body), "d5:filesd"), string(body))
		requests["scrape"][fam]++
	}

	var seeders, leechers = map[string]float64{"ipv4": 0, "ipv6": 0}, map[string]float64{"ipv4": 0, "ipv6": 0}
	torrents := map[string]bool{}
	for k, seeder := range swarm {
		torrents[k.ih] = true
		if seeder {
			seeders[k.family]++
		} else {
			leechers[k.family]++
		}
	}
	// Every torrent keeps a peer, so the count does not depend on when empty torrents go.
	require.Len(t, torrents, 3)
	if v6 {
		// The mix above: A has seeders 1 and 2 (v4) and leecher 3 (v6); B seeders 5 and 1 (v6)
		// and leechers 6 (v6) and 7 (v4); C seeder 9 (v6) and leecher 10 (v4).
		require.Equal(t, map[string]float64{"ipv4": 2, "ipv6": 3}, seeders)
		require.Equal(t, map[string]float64{"ipv4": 2, "ipv6": 2}, leechers)
	}
	sum := func(m map[string]float64) (n float64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	announceTotal := sum(requests["announce"])
	scrapeTotal := sum(requests["scrape"])
	require.Equal(t, float64(len(announces)+4), announceTotal)
	require.Equal(t, float64(len(scrapes)+2), scrapeTotal)

	want := map[string]float64{
		"announces.total":         announceTotal,
		"announces.failures":      sum(failureKinds["announce"]),
		"scrapes.total":           scrapeTotal,
		"scrapes.failures":        sum(failureKinds["scrape"]),
		"requests_by_family.ipv4": requests["announce"]["ipv4"] + requests["scrape"]["ipv4"],
		"requests_by_family.ipv6": requests["announce"]["ipv6"] + requests["scrape"]["ipv6"],
		"swarm.torrents":          float64(len(torrents)),
		"swarm.seeders.ipv4":      seeders["ipv4"],
		"swarm.seeders.ipv6":      seeders["ipv6"],
		"swarm.seeders.total":     sum(seeders),
		"swarm.leechers.ipv4":     leechers["ipv4"],
		"swarm.leechers.ipv6":     leechers["ipv6"],
		"swarm.leechers.total":    sum(leechers),
		"reaped.peers":            0,
		"reaped.torrents":         0,
		"stats_events_dropped":    0,
	}
	for e, n := range byEvent {
		want["announces.by_event."+e] = n
	}
	allKinds := map[string]float64{}
	for _, kinds := range failureKinds {
		for k, n := range kinds {
			allKinds[k] += n
		}
	}
	for k, n := range allKinds {
		want["failures."+k] = n
	}
	// Requests are recorded after their answers are written: poll until the counts are in.
	eventually(t, func() bool {
		doc := flatStats(t, client, bases["ipv4"])
		return doc["announces.total"] == announceTotal && doc["scrapes.total"] == scrapeTotal
	}, "announces.total and scrapes.total to reach what was sent")
	// The other series of the last events may trail their request count by a moment.
	doc := waitStats(t, client, bases["ipv4"], want, "failures.")
	assert.Equal(t, map[string]float64{"invalid_info_hash": 3, "missing_port": 1, "invalid_event": 1, "missing_info_hash": 1}, allKinds)
	assert.Greater(t, doc["memory.rss_bytes"], 0.0, "the default config includes memory stats")
	assert.Greater(t, doc["announces.response_time_seconds.p50"], 0.0)

	// /metrics tells the same.
	fams := metrics(t, client, bases["ipv4"])
	for _, action := range []string{"announce", "scrape"} {
		for _, fam := range []string{"ipv4", "ipv6"} {
			assertSample(t, fams, "chihaya_requests_total",
				map[string]string{"transport": "http", "action": action, "family": fam}, requests[action][fam])
		}
		for kind, n := range failureKinds[action] {
			assertSample(t, fams, "chihaya_failures_total", map[string]string{"action": action, "kind": kind}, n)
		}
		assertSample(t, fams, "chihaya_failures_total", map[string]string{"action": action}, sum(failureKinds[action]))
	}
	assertSample(t, fams, "chihaya_requests_total", nil, announceTotal+scrapeTotal)
	for e, n := range byEvent {
		assertSample(t, fams, "chihaya_announces_total", map[string]string{"event": e}, n)
	}
	assertSample(t, fams, "chihaya_torrents", nil, float64(len(torrents)))
	for _, fam := range []string{"ipv4", "ipv6"} {
		assertSample(t, fams, "chihaya_seeders", map[string]string{"family": fam}, seeders[fam])
		assertSample(t, fams, "chihaya_leechers", map[string]string{"family": fam}, leechers[fam])
	}
	assert.Equal(t, dto.MetricType_COUNTER, fams["chihaya_requests_total"].GetType())
	assert.Equal(t, dto.MetricType_GAUGE, fams["chihaya_seeders"].GetType())

	hist := fams["chihaya_request_duration_seconds"]
	require.NotNil(t, hist)
	require.Equal(t, dto.MetricType_HISTOGRAM, hist.GetType())
	var announceHist *dto.Histogram
	for _, m := range hist.GetMetric() {
		if hasLabels(m, map[string]string{"action": "announce"}) {
			announceHist = m.GetHistogram()
		}
	}
	require.NotNil(t, announceHist)
	assert.Equal(t, uint64(announceTotal), announceHist.GetSampleCount())
	subMs := false
	for _, b := range announceHist.GetBucket() {
		if b.GetUpperBound() <= 0.001 {
			subMs = true
		}
	}
	assert.True(t, subMs, "a bucket resolves sub-millisecond answers")

	summary := fams["chihaya_request_latency_seconds"]
	require.NotNil(t, summary)
	require.Equal(t, dto.MetricType_SUMMARY, summary.GetType())
	for _, m := range summary.GetMetric() {
		if !hasLabels(m, map[string]string{"action": "announce"}) {
			continue
		}
		var qs []float64
		for _, q := range m.GetSummary().GetQuantile() {
			qs = append(qs, q.GetQuantile())
		}
		sort.Float64s(qs)
		assert.Equal(t, []float64{0.5, 0.9, 0.99}, qs)
		assert.Equal(t, uint64(announceTotal), m.GetSummary().GetSampleCount())
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "chihaya_start_time_seconds", "chihaya_stats_events_dropped_total"} {
		assert.Contains(t, fams, name)
	}
	v, _ := sample(fams, "process_resident_memory_bytes", nil)
	assert.Greater(t, v, 0.0)
}

func TestEndToEndStatsAddr(t *testing.T) {
	for _, pprofOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("pprof_enabled=%v", pprofOn), func(t *testing.T) {
			statsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			c := start(t, newConfig(t, func(c *config.Config) {
				c.StatsAddr = statsAddr
				c.PprofEnabled = pprofOn
			}))
			require.NotNil(t, c.StatsAddr())
			require.Equal(t, statsAddr, c.StatsAddr().String())
			client := newClient(t)
			trackerBase := "http://" + c.Addr().String()
			statsBase := "http://" + statsAddr

			status, body := get(t, client, trackerBase+"/announce?"+announceQuery(ihA, peer(1), 0, "started"))
			require.Equal(t, nethttp.StatusOK, status)
			require.NotContains(t, string(body), "failure reason")
			waitStats(t, client, statsBase, map[string]float64{"announces.total": 1, "swarm.seeders.ipv4": 1})

			pprofStatus := nethttp.StatusNotFound
			if pprofOn {
				pprofStatus = nethttp.StatusOK
			}
			for _, tc := range []struct {
				base, path string
				status     int
			}{
				{statsBase, "/stats", nethttp.StatusOK},
				{statsBase, "/stats?pretty", nethttp.StatusOK},
				{statsBase, "/metrics", nethttp.StatusOK},
				{statsBase, "/debug/pprof/", pprofStatus},
				{statsBase, "/debug/pprof/cmdline", pprofStatus},
				{statsBase, "/announce", nethttp.StatusNotFound},
				{trackerBase, "/stats", nethttp.StatusNotFound},
				{trackerBase, "/metrics", nethttp.StatusNotFound},
				{trackerBase, "/debug/pprof/", nethttp.StatusNotFound},
				{trackerBase, "/debug/pprof/cmdline", nethttp.StatusNotFound},
			} {
				status, _ := get(t, client, tc.base+tc.path)
				assert.Equal(t, tc.status, status, "%s%s", tc.base, tc.path)
			}
			fams := metrics(t, client, statsBase)
			assertSample(t, fams, "chihaya_announces_total", map[string]string{"event": "started"}, 1)
		})
	}
}

func TestEndToEndStatsDisabled(t *testing.T) {
	c := start(t, newConfig(t, func(c *config.Config) { c.StatsEnabled = false }))
	assert.Nil(t, c.Stats())
	assert.Nil(t, c.StatsAddr())
	client := newClient(t)
	base := "http://" + c.Addr().String()
	status, body := get(t, client, base+"/announce?"+announceQuery(ihA, peer(1), 0, "started"))
	require.Equal(t, nethttp.StatusOK, status)
	require.NotContains(t, string(body), "failure reason", "the tracker works without stats")
	for _, path := range []string{"/stats", "/stats?pretty", "/metrics", "/debug/pprof/"} {
		status, _ := get(t, client, base+path)
		assert.Equal(t, nethttp.StatusNotFound, status, path)
	}
}

func TestEndToEndReapingEmptiesTheGauges(t *testing.T) {
	c := start(t, newConfig(t, func(c *config.Config) {
		c.Announce = config.Duration{Duration: time.Second}
		c.MinAnnounce = config.Duration{Duration: time.Second}
		c.PeerTimeout = config.Duration{Duration: 2 * time.Second}
		c.ReapInterval = config.Duration{Duration: 500 * time.Millisecond}
	}))
	client := newClient(t)
	base := "http://" + c.Addr().String()
	sent := []struct {
		ih   string
		peer int
		left int
	}{
		{ihA, 1, 0}, {ihA, 2, 10}, {ihA, 3, 10}, {ihB, 4, 0}, {ihB, 5, 0},
	}
	for _, a := range sent {
		status, body := get(t, client, base+"/announce?"+announceQuery(a.ih, peer(a.peer), a.left, "started"))
		require.Equal(t, nethttp.StatusOK, status)
		require.NotContains(t, string(body), "failure reason")
	}
	// The swarm as announced. A peer is reaped no sooner than peer_timeout (2s) after its
	// announce, which leaves this read ample time.
	fams := metrics(t, client, base)
	assertSample(t, fams, "chihaya_torrents", nil, 2)
	assertSample(t, fams, "chihaya_seeders", map[string]string{"family": "ipv4"}, 3)
	assertSample(t, fams, "chihaya_leechers", map[string]string{"family": "ipv4"}, 2)

	// After peer_timeout the reaper removes every peer and both torrents.
	waitStats(t, client, base, map[string]float64{
		"announces.total":      float64(len(sent)),
		"swarm.torrents":       0,
		"swarm.seeders.total":  0,
		"swarm.leechers.total": 0,
		"reaped.peers":         float64(len(sent)),
		"reaped.torrents":      2,
	})
	fams = metrics(t, client, base)
	assertSample(t, fams, "chihaya_torrents", nil, 0)
	for _, fam := range []string{"ipv4", "ipv6"} {
		assertSample(t, fams, "chihaya_seeders", map[string]string{"family": fam}, 0)
		assertSample(t, fams, "chihaya_leechers", map[string]string{"family": fam}, 0)
	}
	assertSample(t, fams, "chihaya_peers_reaped_total", nil, float64(len(sent)))
	assertSample(t, fams, "chihaya_torrents_reaped_total", nil, 2)
}

// TestEndToEndMetricsIncludeEveryAnsweredRequest: /metrics and /stats asked for right after a
// burst count every request of the burst, with no polling: they drain what is pending before
// they answer, rather than miss the last drain interval's requests.
func TestEndToEndMetricsIncludeEveryAnsweredRequest(t *testing.T) {
	c := start(t, newConfig(t, nil))
	client := newClient(t)
	base := "http://" + c.Addr().String()
	for round := 1; round <= 5; round++ {
		for i := 0; i < 40; i++ {
			status, _ := get(t, client, base+"/announce?"+announceQuery("burst-of-announces-x", peer(i), 10, ""))
			require.Equal(t, nethttp.StatusOK, status)
		}
		assertSample(t, metrics(t, client, base), "chihaya_requests_total",
			map[string]string{"action": "announce", "transport": "http"}, float64(80*round-40))
		for i := 0; i < 40; i++ {
			get(t, client, base+"/announce?"+announceQuery("burst-of-announces-x", peer(i), 10, ""))
		}
		assert.Equal(t, float64(80*round), flatStats(t, client, base)["announces.total"], "round %d", round)
	}
}
