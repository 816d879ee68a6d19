package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	nethttp "net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/models"
)

const waitFor = 10 * time.Second

// eventually polls cond on the test goroutine (so that cond may use require) until it holds,
// and fails the test when it still does not after waitFor.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %s", what, waitFor)
		}
		<-tick.C
	}
}

// testConfig is the default configuration with memory sampling off, edited by edit.
func testConfig(edit func(*config.Config)) *config.Config {
	c := config.Default()
	c.IncludeMemStats = false
	if edit != nil {
		edit(&c)
	}
	return &c
}

// startRun runs s.Run until the returned stop is called or the test ends. stop cancels Run's
// context and waits for Run to return, so every event recorded before stop has been applied
// when it returns.
func startRun(t *testing.T, s *Stats) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitFor):
				t.Errorf("Run did not return within %s of its context ending", waitFor)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func gather(t *testing.T, s *Stats) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := s.Registry().Gather()
	require.NoError(t, err)
	out := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
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

// value sums the counter, gauge or untyped values of the series of name whose labels include
// want; ok is false when there is no such series.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, ok bool) {
	for _, m := range fams[name].GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, ok
}

func requireValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string, expected float64) {
	t.Helper()
	v, ok := value(fams, name, want)
	require.Truef(t, ok, "no series %s%v", name, want)
	assert.Equalf(t, expected, v, "%s%v", name, want)
}

func requestsTotal(t *testing.T, s *Stats) float64 {
	v, _ := value(gather(t, s), "chihaya_requests_total", nil)
	return v
}

func announce(f models.Family, e models.Event) Request {
	return Request{Transport: HTTP, Action: Announce, Family: f, Event: e, Duration: 100 * time.Microsecond}
}

func TestRecordDropsWhenBufferFull(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		buffer                int
		records, reaps        int // recorded in this order, one peer per reap
		keptRecords, keptReap int
		wantDropped           uint64
	}{
		{name: "unbuffered", buffer: 0, records: 5, reaps: 2, wantDropped: 7},
		{name: "one slot", buffer: 1, records: 5, reaps: 2, keptRecords: 1, wantDropped: 6},
		{name: "room for the records only", buffer: 5, records: 5, reaps: 3, keptRecords: 5, wantDropped: 3},
		{name: "room for all", buffer: 16, records: 5, reaps: 3, keptRecords: 5, keptReap: 3, wantDropped: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(testConfig(func(c *config.Config) { c.StatsBufferSize = tc.buffer }), nil)
			// Run is not running: nothing reads the buffer, and Record must still return.
			for i := 0; i < tc.records; i++ {
				s.Record(announce(models.IPv4, models.Started))
			}
			for i := 0; i < tc.reaps; i++ {
				s.ObserveReap(tracker.ReapResult{Peers: 1})
			}
			assert.Equal(t, tc.wantDropped, s.Dropped())
			assert.Len(t, s.events, tc.keptRecords+tc.keptReap)

			fams := gather(t, s)
			requireValue(t, fams, "chihaya_stats_events_dropped_total", nil, float64(tc.wantDropped))
			assert.Equal(t, dto.MetricType_COUNTER, fams["chihaya_stats_events_dropped_total"].GetType())
			doc, err := s.Snapshot(context.Background())
			require.NoError(t, err)
			assert.Equal(t, tc.wantDropped, doc["stats_events_dropped"])

			// What was buffered is not lost: Run applies it.
			stop := startRun(t, s)
			stop()
			fams = gather(t, s)
			requireValue(t, fams, "chihaya_requests_total", nil, float64(tc.keptRecords))
			requireValue(t, fams, "chihaya_peers_reaped_total", nil, float64(tc.keptReap))
			assert.Equal(t, tc.wantDropped, s.Dropped(), "applying buffered events drops nothing more")
		})
	}
}

func TestRunAggregatesRequests(t *testing.T) {
	const d = 250 * time.Microsecond
	mk := func(transport Transport, a Action, f models.Family, e models.Event, err error) Request {
		return Request{Transport: transport, Action: a, Family: f, Event: e, Err: err, Duration: d}
	}
	recorded := []struct {
		req Request
		n   int
	}{
		{mk(HTTP, Announce, models.IPv4, models.Started, nil), 3},
		{mk(HTTP, Announce, models.IPv6, models.None, nil), 2},
		{mk(HTTP, Announce, models.IPv4, models.Completed, nil), 4},
		{mk(HTTP, Announce, models.IPv6, models.Stopped, nil), 5},
		{mk(HTTP, Announce, models.IPv4, models.Paused, nil), 1},
		// A failed announce counts as a request and a failure, never under its event.
		{mk(HTTP, Announce, models.IPv4, models.Started, models.ErrInvalidInfoHash), 6},
		// The zero Transport is HTTP; a non-client error is "internal".
		{mk(HTTP, Announce, models.IPv6, models.None, errors.New("disk on fire")), 2},
		{mk(UDP, Announce, models.IPv4, models.None, nil), 7},
		{mk(HTTP, Scrape, models.IPv4, models.None, nil), 8},
		{mk(HTTP, Scrape, models.IPv6, models.None, nil), 9},
		{mk(HTTP, Scrape, models.IPv6, models.None, models.ErrTooManyInfoHashes), 1},
		{mk(WebSocket, Announce, models.IPv4, models.Started, nil), 11},
		{mk(WebSocket, Scrape, models.IPv6, models.None, nil), 12},
	}
	total := 0
	for _, r := range recorded {
		total += r.n
	}

	s := New(testConfig(nil), nil)
	stop := startRun(t, s)
	var wg sync.WaitGroup
	for _, r := range recorded {
		for i := 0; i < r.n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.Record(r.req)
			}()
		}
	}
	wg.Wait()
	eventually(t, func() bool { return requestsTotal(t, s) == float64(total) }, "every request applied")
	stop() // every event is applied once Run has returned
	require.Zero(t, s.Dropped())

	fams := gather(t, s)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"chihaya_requests_total", map[string]string{"transport": "http", "action": "announce", "family": "ipv4"}, 3 + 4 + 1 + 6},
		{"chihaya_requests_total", map[string]string{"transport": "http", "action": "announce", "family": "ipv6"}, 2 + 5 + 2},
		{"chihaya_requests_total", map[string]string{"transport": "udp", "action": "announce", "family": "ipv4"}, 7},
		{"chihaya_requests_total", map[string]string{"transport": "http", "action": "scrape", "family": "ipv4"}, 8},
		{"chihaya_requests_total", map[string]string{"transport": "http", "action": "scrape", "family": "ipv6"}, 9 + 1},
		{"chihaya_requests_total", map[string]string{"transport": "ws", "action": "announce", "family": "ipv4"}, 11},
		{"chihaya_requests_total", map[string]string{"transport": "ws", "action": "scrape", "family": "ipv6"}, 12},
		{"chihaya_requests_total", nil, float64(total)},
		{"chihaya_announces_total", map[string]string{"event": "started"}, 3 + 11},
		{"chihaya_announces_total", map[string]string{"event": "none"}, 2 + 7},
		{"chihaya_announces_total", map[string]string{"event": "completed"}, 4},
		{"chihaya_announces_total", map[string]string{"event": "stopped"}, 5},
		{"chihaya_announces_total", map[string]string{"event": "paused"}, 1},
		{"chihaya_failures_total", map[string]string{"action": "announce", "kind": "invalid_info_hash"}, 6},
		{"chihaya_failures_total", map[string]string{"action": "announce", "kind": "internal"}, 2},
		{"chihaya_failures_total", map[string]string{"action": "scrape", "kind": "too_many_info_hashes"}, 1},
		{"chihaya_failures_total", nil, 9},
	} {
		requireValue(t, fams, tc.name, tc.labels, tc.want)
	}
	assert.Len(t, fams["chihaya_failures_total"].GetMetric(), 3, "one failures series per action and kind seen")
	_, ok := value(fams, "chihaya_requests_total", map[string]string{"transport": "udp", "action": "scrape"})
	assert.False(t, ok, "no udp scrape series without a udp scrape")
	_, ok = value(fams, "chihaya_requests_total", map[string]string{"transport": "ws", "action": "announce", "family": "ipv6"})
	assert.False(t, ok, "no ws series without a ws request")

	// Every request, failures included, is observed once in the histogram and the summary.
	for _, tc := range []struct {
		action string
		n      uint64
	}{{"announce", 3 + 4 + 1 + 6 + 2 + 5 + 2 + 7 + 11}, {"scrape", 8 + 9 + 1 + 12}} {
		var hist *dto.Histogram
		for _, m := range fams["chihaya_request_duration_seconds"].GetMetric() {
			if hasLabels(m, map[string]string{"action": tc.action}) {
				hist = m.GetHistogram()
			}
		}
		require.NotNil(t, hist, tc.action)
		assert.Equal(t, tc.n, hist.GetSampleCount(), tc.action)
		assert.InDelta(t, float64(tc.n)*d.Seconds(), hist.GetSampleSum(), 1e-9, tc.action)
		for _, b := range hist.GetBucket() {
			want := uint64(0)
			if b.GetUpperBound() >= d.Seconds() {
				want = tc.n
			}
			assert.Equal(t, want, b.GetCumulativeCount(), "%s bucket le=%g", tc.action, b.GetUpperBound())
		}
		for _, m := range fams["chihaya_request_latency_seconds"].GetMetric() {
			if hasLabels(m, map[string]string{"action": tc.action}) {
				assert.Equal(t, tc.n, m.GetSummary().GetSampleCount(), tc.action)
			}
		}
	}

	doc, err := s.Snapshot(context.Background())
	require.NoError(t, err)
	ann := doc["announces"].(map[string]any)
	assert.Equal(t, uint64(30+11), ann["total"])
	assert.Equal(t, uint64(8), ann["failures"])
	assert.Equal(t, map[string]any{
		"none": uint64(9), "started": uint64(3 + 11), "completed": uint64(4), "stopped": uint64(5), "paused": uint64(1),
	}, ann["by_event"])
	scr := doc["scrapes"].(map[string]any)
	assert.Equal(t, uint64(18+12), scr["total"])
	assert.Equal(t, uint64(1), scr["failures"])
	assert.NotContains(t, scr, "by_event")
	assert.Equal(t, map[string]any{"ipv4": uint64(14 + 7 + 8 + 11), "ipv6": uint64(9 + 10 + 12)}, doc["requests_by_family"])
	assert.Equal(t, map[string]any{"http": uint64(14 + 9 + 8 + 10), "udp": uint64(7), "ws": uint64(11 + 12)}, doc["requests_by_transport"])
	assert.Equal(t, map[string]any{
		"invalid_info_hash": uint64(6), "internal": uint64(2), "too_many_info_hashes": uint64(1),
	}, doc["failures"])
	assert.NotContains(t, doc, "swarm", "no swarm section without a Swarm")
	assert.NotContains(t, doc, "memory", "no memory section without include_mem_stats")
}

func TestFailureKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"malformed", models.ErrMalformedRequest, "malformed_request"},
		{"missing info_hash", models.ErrMissingInfoHash, "missing_info_hash"},
		{"invalid info_hash", models.ErrInvalidInfoHash, "invalid_info_hash"},
		{"missing peer_id", models.ErrMissingPeerID, "missing_peer_id"},
		{"invalid peer_id", models.ErrInvalidPeerID, "invalid_peer_id"},
		{"missing port", models.ErrMissingPort, "missing_port"},
		{"invalid port", models.ErrInvalidPort, "invalid_port"},
		{"invalid number", models.ErrInvalidNumber, "invalid_number"},
		{"missing uploaded", models.ErrMissingUploaded, "missing_parameter"},
		{"missing downloaded", models.ErrMissingDownloaded, "missing_parameter"},
		{"missing left", models.ErrMissingLeft, "missing_parameter"},
		{"duplicate parameter", models.ErrDuplicateParameter, "duplicate_parameter"},
		{"invalid event", models.ErrInvalidEvent, "invalid_event"},
		{"invalid ip", models.ErrInvalidIP, "invalid_ip"},
		{"too many info hashes", models.ErrTooManyInfoHashes, "too_many_info_hashes"},
		{"torrent not found", models.ErrTorrentNotFound, "torrent_not_found"},
		{"internal client error", models.ErrInternal, "internal"},
		{"unavailable", models.ErrUnavailable, "unavailable"},
		{"not whitelisted", tracker.ErrClientNotWhitelisted, "client_not_whitelisted"},
		{"wrapped client error", fmt.Errorf("tracker: announce: %w", models.ErrInvalidPort), "invalid_port"},
		{"unknown client error", models.ClientError("the moon is in the wrong phase"), "other"},
		{"unlisted ErrNotFound", models.ErrNotFound, "other"},
		{"plain error", errors.New("disk on fire"), "internal"},
		{"wrapped non-client error", fmt.Errorf("tracker: get conn: %w", io.ErrUnexpectedEOF), "internal"},
		{"context deadline", fmt.Errorf("tracker: announce: %w", context.DeadlineExceeded), "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, FailureKind(tc.err))
		})
	}
}

func TestObserveReapCounts(t *testing.T) {
	s := New(testConfig(nil), nil)
	stop := startRun(t, s)
	for _, r := range []tracker.ReapResult{{Peers: 3, Torrents: 1}, {Peers: 0, Torrents: 0}, {Peers: 9, Torrents: 4}} {
		s.ObserveReap(r)
	}
	eventually(t, func() bool {
		v, _ := value(gather(t, s), "chihaya_torrents_reaped_total", nil)
		return v == 5
	}, "every reap applied")
	stop()

	fams := gather(t, s)
	requireValue(t, fams, "chihaya_peers_reaped_total", nil, 12)
	requireValue(t, fams, "chihaya_torrents_reaped_total", nil, 5)
	requireValue(t, fams, "chihaya_requests_total", nil, 0)
	doc, err := s.Snapshot(context.Background())
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"peers": uint64(12), "torrents": uint64(5)}, doc["reaped"])
}

func TestNilStatsRecordIsNoop(t *testing.T) {
	var s *Stats
	assert.NotPanics(t, func() { s.Record(announce(models.IPv4, models.Started)) })
}

func TestRunDrainsBufferedEventsWhenContextEnds(t *testing.T) {
	s := New(testConfig(func(c *config.Config) { c.StatsBufferSize = 32 }), nil)
	for i := 0; i < 20; i++ {
		s.Record(announce(models.IPv6, models.Completed))
	}
	s.ObserveReap(tracker.ReapResult{Peers: 2, Torrents: 1})
	require.Len(t, s.events, 21)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run starts with its context already over: it must still apply the buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Run did not return after its context ended")
	}
	assert.Empty(t, s.events)
	fams := gather(t, s)
	requireValue(t, fams, "chihaya_requests_total", map[string]string{"family": "ipv6", "action": "announce"}, 20)
	requireValue(t, fams, "chihaya_announces_total", map[string]string{"event": "completed"}, 20)
	requireValue(t, fams, "chihaya_peers_reaped_total", nil, 2)
	requireValue(t, fams, "chihaya_torrents_reaped_total", nil, 1)
}

type fakeSwarm struct {
	counts models.SwarmCounts
	err    error
}

func (f fakeSwarm) SwarmCounts(ctx context.Context) (models.SwarmCounts, error) {
	if ctx == nil {
		return models.SwarmCounts{}, errors.New("nil context")
	}
	return f.counts, f.err
}

func TestSnapshotSwarmAndQuantiles(t *testing.T) {
	swarm := fakeSwarm{counts: models.SwarmCounts{Torrents: 7, Seeders: [2]int{3, 4}, Leechers: [2]int{5, 6}}}
	s := New(testConfig(nil), swarm)

	doc, err := s.Snapshot(context.Background())
	require.NoError(t, err)
	ann := doc["announces"].(map[string]any)
	assert.Equal(t, map[string]any{"p50": 0.0, "p90": 0.0, "p99": 0.0}, ann["response_time_seconds"],
		"quantiles without observations read 0, not NaN")

	stop := startRun(t, s)
	for i := 1; i <= 100; i++ {
		r := announce(models.IPv4, models.None)
		r.Duration = time.Duration(i) * time.Millisecond
		s.Record(r)
	}
	eventually(t, func() bool { return requestsTotal(t, s) == 100 }, "every request applied")
	stop()

	doc, err = s.Snapshot(context.Background())
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"torrents": 7,
		"seeders":  map[string]any{"ipv4": 3, "ipv6": 4, "total": 7},
		"leechers": map[string]any{"ipv4": 5, "ipv6": 6, "total": 11},
	}, doc["swarm"])

	q := doc["announces"].(map[string]any)["response_time_seconds"].(map[string]any)
	p50, p90, p99 := q["p50"].(float64), q["p90"].(float64), q["p99"].(float64)
	assert.Greater(t, p50, 0.0)
	assert.Greater(t, p90, 0.0)
	assert.Greater(t, p99, 0.0)
	assert.LessOrEqual(t, p50, p90)
	assert.LessOrEqual(t, p90, p99)
	assert.LessOrEqual(t, p99, 0.1)
	assert.InDelta(t, 0.050, p50, 0.002, "observations are 1ms..100ms")
	assert.InDelta(t, 0.090, p90, 0.002)
	assert.Equal(t, map[string]any{"p50": 0.0, "p90": 0.0, "p99": 0.0},
		doc["scrapes"].(map[string]any)["response_time_seconds"], "no scrapes observed")

	_, err = json.Marshal(doc)
	require.NoError(t, err, "the document is JSON-encodable")

	fams := gather(t, s)
	requireValue(t, fams, "chihaya_torrents", nil, 7)
	requireValue(t, fams, "chihaya_seeders", map[string]string{"family": "ipv4"}, 3)
	requireValue(t, fams, "chihaya_seeders", map[string]string{"family": "ipv6"}, 4)
	requireValue(t, fams, "chihaya_leechers", map[string]string{"family": "ipv4"}, 5)
	requireValue(t, fams, "chihaya_leechers", map[string]string{"family": "ipv6"}, 6)
	assert.Equal(t, dto.MetricType_GAUGE, fams["chihaya_seeders"].GetType())
}

func TestSnapshotSwarmError(t *testing.T) {
	s := New(testConfig(nil), fakeSwarm{err: tracker.ErrNotSupported})
	doc, err := s.Snapshot(context.Background())
	require.NoError(t, err, "a swarm that cannot count does not break /stats")
	assert.Equal(t, map[string]any{"error": tracker.ErrNotSupported.Error()}, doc["swarm"])
	fams := gather(t, s)
	for _, name := range []string{"chihaya_torrents", "chihaya_seeders", "chihaya_leechers"} {
		assert.NotContains(t, fams, name, "no gauge rather than a wrong 0")
	}

	s = New(testConfig(nil), nil)
	s.SetSwarm(fakeSwarm{counts: models.SwarmCounts{Torrents: 2}})
	doc, err = s.Snapshot(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, doc["swarm"].(map[string]any)["torrents"], "SetSwarm takes effect")
}

func TestFlatten(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want map[string]any
	}{
		{"empty", map[string]any{}, map[string]any{}},
		{"flat", map[string]any{"a": 1, "b": "x"}, map[string]any{"a": 1, "b": "x"}},
		{"nested", map[string]any{
			"announces": map[string]any{"total": uint64(3), "by_event": map[string]any{"started": uint64(2)}},
			"uptime":    1.5,
		}, map[string]any{"announces.total": uint64(3), "announces.by_event.started": uint64(2), "uptime": 1.5}},
		{"empty nested map leaves nothing", map[string]any{"a": map[string]any{}, "b": 1}, map[string]any{"b": 1}},
		{"non-map leaves are kept as they are", map[string]any{"list": []int{1, 2}}, map[string]any{"list": []int{1, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := map[string]any{}
			flatten("", tc.in, out)
			assert.Equal(t, tc.want, out)
		})
	}
}

func TestJSONHandlerPrettyAndFlatten(t *testing.T) {
	s := New(testConfig(nil), fakeSwarm{counts: models.SwarmCounts{Torrents: 1, Seeders: [2]int{1, 0}}})
	stop := startRun(t, s)
	s.Record(announce(models.IPv4, models.Started))
	s.Record(announce(models.IPv6, models.Stopped))
	eventually(t, func() bool { return requestsTotal(t, s) == 2 }, "every request applied")
	stop()

	h := s.JSONHandler()
	for _, tc := range []struct {
		query        string
		pretty, flat bool
	}{
		{"", false, false},
		{"?pretty", true, false},
		{"?flatten", false, true},
		{"?pretty&flatten", true, true},
		{"?flatten=1&pretty=yes", true, true},
		{"?other", false, false},
	} {
		t.Run(tc.query, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(nethttp.MethodGet, "/stats"+tc.query, nil))
			require.Equal(t, nethttp.StatusOK, rec.Code)
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			body := rec.Body.String()
			assert.Equal(t, strconv.Itoa(len(body)), rec.Header().Get("Content-Length"))
			require.True(t, strings.HasSuffix(body, "}\n"))
			if tc.pretty {
				assert.Contains(t, body, "{\n  \"")
			} else {
				assert.Equal(t, 1, strings.Count(body, "\n"), "compact: one line")
			}

			var doc map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &doc))
			if tc.flat {
				assert.Equal(t, 2.0, doc["announces.total"])
				assert.Equal(t, 1.0, doc["announces.by_event.started"])
				assert.Equal(t, 1.0, doc["announces.by_event.stopped"])
				assert.Equal(t, 1.0, doc["swarm.seeders.ipv4"])
				assert.Equal(t, 1.0, doc["requests_by_family.ipv6"])
				assert.Contains(t, doc, "announces.response_time_seconds.p99")
				assert.NotContains(t, doc, "announces")
				for k, v := range doc {
					_, isMap := v.(map[string]any)
					assert.False(t, isMap, "flattened key %q holds a map", k)
				}
			} else {
				ann, ok := doc["announces"].(map[string]any)
				require.True(t, ok)
				assert.Equal(t, 2.0, ann["total"])
				assert.Equal(t, 1.0, ann["by_event"].(map[string]any)["started"])
				assert.NotContains(t, doc, "announces.total")
			}
		})
	}
}

func TestMuxServesPprofOnlyWhenEnabled(t *testing.T) {
	s := New(testConfig(nil), nil)
	for _, pprofOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("pprof=%v", pprofOn), func(t *testing.T) {
			srv := httptest.NewServer(s.Mux(pprofOn))
			t.Cleanup(srv.Close)
			pprofStatus := nethttp.StatusNotFound
			if pprofOn {
				pprofStatus = nethttp.StatusOK
			}
			for _, tc := range []struct {
				path     string
				status   int
				contains string
			}{
				{"/stats", nethttp.StatusOK, `"announces"`},
				{"/metrics", nethttp.StatusOK, "chihaya_requests_total"},
				{"/debug/pprof/", pprofStatus, ""},
				{"/debug/pprof/cmdline", pprofStatus, ""},
				{"/debug/pprof/goroutine?debug=1", pprofStatus, ""},
				{"/announce", nethttp.StatusNotFound, ""},
			} {
				resp, err := srv.Client().Get(srv.URL + tc.path)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				require.NoError(t, resp.Body.Close())
				require.NoError(t, err)
				assert.Equal(t, tc.status, resp.StatusCode, tc.path)
				assert.Contains(t, string(body), tc.contains, tc.path)
				if tc.path == "/debug/pprof/" && pprofOn {
					assert.Contains(t, string(body), "goroutine")
				}
			}
		})
	}
}

func TestMemorySection(t *testing.T) {
	for _, tc := range []struct {
		include, verbose bool
	}{
		{false, false},
		{false, true},
		{true, false},
		{true, true},
	} {
		t.Run(fmt.Sprintf("include=%v,verbose=%v", tc.include, tc.verbose), func(t *testing.T) {
			s := New(testConfig(func(c *config.Config) {
				c.IncludeMemStats = tc.include
				c.VerboseMemStats = tc.verbose
				c.MemStatsInterval = config.Duration{Duration: time.Hour}
			}), nil)
			startRun(t, s)
			// Once Run has applied an event its loop is running, and it samples memory before
			// the loop starts.
			s.Record(announce(models.IPv4, models.None))
			eventually(t, func() bool { return requestsTotal(t, s) == 1 }, "every request applied")

			doc, err := s.Snapshot(context.Background())
			require.NoError(t, err)
			if !tc.include {
				assert.NotContains(t, doc, "memory")
				return
			}
			mem, ok := doc["memory"].(map[string]any)
			require.True(t, ok, "memory section with include_mem_stats")
			assert.Greater(t, mem["heap_alloc_bytes"], uint64(0))
			assert.Greater(t, mem["sys_bytes"], uint64(0))
			assert.Greater(t, mem["rss_bytes"], uint64(0), "RSS from /proc/self/statm")
			assert.Greater(t, mem["goroutines"], 0)
			assert.Contains(t, mem, "gc_pause_last_seconds")
			_, err = time.Parse(time.RFC3339Nano, mem["sampled_at"].(string))
			assert.NoError(t, err)
			if !tc.verbose {
				assert.NotContains(t, mem, "runtime")
				return
			}
			rt, ok := mem["runtime"].(map[string]any)
			require.True(t, ok, "runtime subsection with verbose_mem_stats")
			for _, k := range []string{"alloc", "total_alloc", "mallocs", "frees", "heap_objects", "num_gc", "next_gc"} {
				assert.Contains(t, rt, k)
			}
			assert.Greater(t, rt["total_alloc"], uint64(0))
		})
	}
}

func TestPerSecondRates(t *testing.T) {
	s := New(testConfig(nil), nil)
	for i := 0; i < 10; i++ {
		s.Record(announce(models.IPv4, models.None))
	}
	for i := 0; i < 4; i++ {
		s.Record(Request{Action: Scrape, Family: models.IPv4})
	}
	startRun(t, s)
	rates := func() (float64, float64) {
		doc, err := s.Snapshot(context.Background())
		require.NoError(t, err)
		return doc["announces"].(map[string]any)["per_second"].(float64),
			doc["scrapes"].(map[string]any)["per_second"].(float64)
	}
	// The first rate appears after Run's first one-second tick.
	eventually(t, func() bool {
		a, sc := rates()
		return a > 0 && sc > 0
	}, "the first per-second rates")
	a, sc := rates()
	// The mean over the k seconds seen so far, and all the events fell in the first: 10/k and
	// 4/k.
	for _, r := range []struct {
		rate, events float64
	}{{a, 10}, {sc, 4}} {
		assert.LessOrEqual(t, r.rate, r.events)
		k := r.events / r.rate
		assert.InDelta(t, math.Round(k), k, 1e-9, "rate %g is %g events over a whole number of seconds", r.rate, r.events)
	}
}
