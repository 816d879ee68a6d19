package dist

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/backend/gazelle"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/redis"
)

const dashboardPath = "grafana/chihaya.json"

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Definition string          `json:"definition"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource json.RawMessage          `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	return &d
}

// query is one PromQL expression of the dashboard and where it is.
type query struct{ where, expr string }

// queries returns every PromQL expression of the dashboard: the panels' targets and the
// template variables' label_values selectors.
func (d *dashboard) queries(t *testing.T) []query {
	t.Helper()
	var out []query
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		require.NotNil(t, m, "variable %s: a label_values(SELECTOR, LABEL) query, got %q", v.Name, v.Definition)
		out = append(out, query{"variable " + v.Name, m[1]})
	}
	return out
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promBraces   = regexp.MustCompile(`\{[^}]*\}`)
	promBrackets = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promSelector = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	promMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	promKeywords = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"bool": true, "offset": true, "and": true, "or": true, "unless": true, "atan2": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true,
	}
)

// metricNames returns the metric names a PromQL expression selects: identifiers that are
// neither functions nor aggregations (followed by "("), keywords, label names (inside braces or
// a grouping clause), durations (inside brackets), numbers nor strings.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	s = promBraces.ReplaceAllString(s, "{}")
	s = promBrackets.ReplaceAllString(s, "[]")
	s = promGrouping.ReplaceAllString(s, "")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		if loc[0] > 0 {
			if c := s[loc[0]-1]; c == '.' || c == '$' || (c >= '0' && c <= '9') {
				continue // part of a number (1e3, 0.5) or a variable
			}
		}
		id := s[loc[0]:loc[1]]
		if promKeywords[id] || strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue
		}
		if !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	return names
}

// selectorLabels returns, for each metric selected with matchers, the label names matched.
func selectorLabels(expr string) map[string][]string {
	out := map[string][]string{}
	for _, m := range promSelector.FindAllStringSubmatch(expr, -1) {
		inner := promString.ReplaceAllString(m[2], `""`)
		for _, lm := range promMatcher.FindAllStringSubmatch(inner, -1) {
			out[m[1]] = append(out[m[1]], lm[1])
		}
	}
	return out
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`chihaya_torrents`, []string{"chihaya_torrents"}},
		{`sum by (transport, action) (rate(chihaya_requests_total{instance=~"$instance"}[$__rate_interval]))`, []string{"chihaya_requests_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="b{c}"}[5m:1m])))`, []string{"x_bucket"}},
		{`sum(rate(a_total[1m])) / on (instance) group_left (family) b > bool 1e3 offset 5m`, []string{"a_total", "b"}},
		{`time() - chihaya_start_time_seconds{job='x', instance!~"y"}`, []string{"chihaya_start_time_seconds"}},
		{`max without (quantile) (s{quantile=~"0.5|0.9"}) or vector(0) and nan`, []string{"s"}},
		{`{__name__="x"}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			assert.Equal(t, tt.want, metricNames(tt.expr))
		})
	}
	assert.Equal(t, map[string][]string{"m": {"instance", "kind"}, "n": {"op"}},
		selectorLabels(`sum(m{instance=~"a,b=c", kind!="x"}) + n{op="announce"}`))
}

// exposition is what a /metrics page exports: each sample name with the label names it has.
type exposition map[string]map[string]bool

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s`)

func (e exposition) add(t *testing.T, text string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		require.NotNil(t, m, "not a sample line: %q", line)
		if e[m[1]] == nil {
			e[m[1]] = map[string]bool{}
		}
		for _, lm := range promMatcher.FindAllStringSubmatch(promString.ReplaceAllString(m[2], `""`), -1) {
			e[m[1]][lm[1]] = true
		}
		n++
	}
	require.Positive(t, n, "no sample in:\n%s", text)
}

// addCollectors adds what a registry holding cs would export on /metrics.
func (e exposition) addCollectors(t *testing.T, cs []prometheus.Collector) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		require.NoError(t, reg.Register(c))
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	e.add(t, rec.Body.String())
}

// targetLabels are added by Prometheus when it scrapes, not exported by the tracker.
var targetLabels = map[string]bool{"instance": true, "job": true}

// TestGrafanaDashboard checks the dashboard's shape (unique panel IDs and refIds, every query
// on the ${datasource} variable) and that every metric its PromQL selects is one Chihaya's
// /metrics exports, with the labels it matches on: the core, HTTP, UDP and rate limiter names
// from a real tracker started on dist/config/public.json on loopback (after an announce, a
// failed announce and a scrape), the redis driver's from its collectors (no server needed),
// and the gazelle driver's from its collectors on a read-only connection to the MariaDB of
// CHIHAYA_MYSQL_DSN.
func TestGrafanaDashboard(t *testing.T) {
	d := loadDashboard(t)
	require.NotEmpty(t, d.UID)
	require.NotEmpty(t, d.Title)
	require.Positive(t, d.SchemaVersion)
	queries := d.queries(t)
	require.NotEmpty(t, queries)

	t.Run("shape", func(t *testing.T) {
		ids := map[int]string{}
		var walk func(ps []panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				assert.Positive(t, p.ID, "panel %q", p.Title)
				if prev, dup := ids[p.ID]; dup {
					t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
				}
				ids[p.ID] = p.Title
				assert.Positive(t, p.GridPos.W, "panel %q width", p.Title)
				assert.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q fits the 24-column grid", p.Title)
				if p.Type == "row" {
					walk(p.Panels)
					continue
				}
				assert.NotEmpty(t, p.Targets, "panel %q has queries", p.Title)
				assert.Contains(t, string(p.Datasource), "${datasource}", "panel %q uses the datasource variable", p.Title)
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					assert.False(t, refs[tg.RefID], "panel %q: refId %s twice", p.Title, tg.RefID)
					refs[tg.RefID] = true
					assert.NotEmpty(t, metricNames(tg.Expr), "panel %q target %s selects no metric: %q", p.Title, tg.RefID, tg.Expr)
				}
			}
		}
		walk(d.Panels)
	})

	used := map[string][]query{}
	for _, q := range queries {
		for _, name := range metricNames(q.expr) {
			used[name] = append(used[name], q)
		}
	}
	// What an operator looks at first: each must be on the dashboard.
	for _, name := range []string{
		"chihaya_requests_total", "chihaya_failures_total", "chihaya_request_latency_seconds",
		"chihaya_request_duration_seconds_bucket", "chihaya_torrents", "chihaya_seeders", "chihaya_leechers",
		"chihaya_stats_events_dropped_total", "chihaya_ratelimit_limited_total", "chihaya_udp_packets_total",
		"chihaya_redis_errors_total", "chihaya_gazelle_queue_rows", "process_resident_memory_bytes",
	} {
		assert.Contains(t, used, name, "the dashboard shows %s", name)
	}

	exported := exposition{}
	text := trackerMetrics(t)
	exported.add(t, text)
	pool, err := redis.Driver{}.New(json.RawMessage(`{"addr": "127.0.0.1:1"}`))
	require.NoError(t, err, "a redis pool without a server")
	t.Cleanup(func() { _ = pool.Close() })
	exported.addCollectors(t, pool.(*redis.Pool).Collectors())

	check := func(t *testing.T, names []string) {
		for _, name := range names {
			labels, ok := exported[name]
			if !assert.True(t, ok, "%s is not on /metrics; used by %v", name, used[name]) {
				continue
			}
			for _, q := range used[name] {
				for _, l := range selectorLabels(q.expr)[name] {
					assert.True(t, labels[l] || targetLabels[l], "%s: %s matches on label %q, which %s does not have", q.where, q.expr, l, name)
				}
			}
		}
	}
	var core, gz []string
	for name := range used {
		if strings.HasPrefix(name, "chihaya_gazelle_") {
			gz = append(gz, name)
		} else {
			core = append(core, name)
		}
	}
	sort.Strings(core)
	sort.Strings(gz)
	t.Run("tracker and redis metrics", func(t *testing.T) { check(t, core) })
	t.Run("gazelle metrics", func(t *testing.T) {
		exported.addCollectors(t, gazelleCollectors(t))
		check(t, gz)
	})

	var unshown []string
	for name := range exported {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		shown := false
		for _, n := range []string{base, base + "_bucket", base + "_sum", base + "_count"} {
			shown = shown || used[n] != nil
		}
		if strings.HasPrefix(name, "chihaya_") && !shown {
			unshown = append(unshown, name)
		}
	}
	sort.Strings(unshown)
	t.Logf("%d queries, %d metric names checked; exported but not on the dashboard: %v", len(queries), len(used), unshown)
}

// trackerMetrics starts the tracker in this process on dist/config/public.json with every
// listener on loopback, makes it answer an announce, a failed announce and a scrape over HTTP,
// and returns its /metrics page once that counts them.
func trackerMetrics(t *testing.T) string {
	t.Helper()
	cfg, err := config.Load("config/public.json")
	require.NoError(t, err)
	cfg.Addr, cfg.UDPAddr, cfg.StatsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	c, err := chihaya.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		assert.NoError(t, c.Shutdown(ctx))
	})
	require.NotNil(t, c.StatsAddr(), "public.json serves metrics on a listener of their own")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(u string) string {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", u, b)
		return string(b)
	}
	base := "http://" + c.Addr().String()
	ih := url.QueryEscape("dist-dashboard-hash!")
	ann := get(base + "/announce?info_hash=" + ih + "&peer_id=" + url.QueryEscape("-qB4250-dist-test-00") +
		"&port=6881&uploaded=0&downloaded=0&left=0&compact=1&event=started")
	require.NotContains(t, ann, "failure reason", "a valid announce")
	bad := get(base + "/announce?info_hash=short&peer_id=" + url.QueryEscape("-qB4250-dist-test-00") + "&port=6881&left=0")
	require.Contains(t, bad, "failure reason", "an announce with a short info_hash fails")
	get(base + "/scrape?info_hash=" + ih)

	metricsURL := "http://" + c.StatsAddr().String() + "/metrics"
	var text string
	for {
		text = get(metricsURL)
		if strings.Contains(text, "\nchihaya_failures_total{") && strings.Contains(text, `chihaya_announces_total{event="started"} 1`) {
			return text
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/metrics never counted the announce and the failure:\n%s", text)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// gazelleCollectors opens the gazelle backend read-only (it then only pings) on the server
// CHIHAYA_MYSQL_DSN points at and returns its collectors; without it the test is skipped, or
// fails when CHIHAYA_REQUIRE_MYSQL=1 (as in CI).
func gazelleCollectors(t *testing.T) []prometheus.Collector {
	t.Helper()
	dsn := os.Getenv("CHIHAYA_MYSQL_DSN")
	if dsn == "" {
		const hint = "CHIHAYA_MYSQL_DSN is unset: the gazelle driver's metrics need a MariaDB to open it on; run `bash .ci/run`, or `bash .ci/mariadb.sh /tmp/env && source /tmp/env`"
		if os.Getenv("CHIHAYA_REQUIRE_MYSQL") == "1" {
			t.Fatal("CHIHAYA_REQUIRE_MYSQL=1 but " + hint)
		}
		t.Skip(hint)
	}
	// Read-only, it only pings: any database the user may open will do, and every user may
	// open information_schema.
	mc, err := mysql.ParseDSN(dsn)
	require.NoError(t, err, "CHIHAYA_MYSQL_DSN")
	mc.DBName = "information_schema"
	p := gazelle.DefaultParams()
	p.DSN = mc.FormatDSN()
	p.ReadOnly = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := gazelle.Open(ctx, p)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, conn.Close(ctx))
	})
	return conn.Collectors()
}
