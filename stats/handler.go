package stats

import (
	"context"
	"encoding/json"
	"math"
	nethttp "net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// MetricsHandler serves the registry in the Prometheus text format.
func (s *Stats) MetricsHandler() nethttp.Handler {
	h := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: glogAdapter{}})
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		s.Sync(r.Context())
		h.ServeHTTP(w, r)
	})
}

type glogAdapter struct{}

func (glogAdapter) Println(v ...any) { glog.Errorln(append([]any{"stats: metrics:"}, v...)...) }

// JSONHandler serves the /stats document. "?pretty" indents it; "?flatten" turns nested keys
// into dotted ones ("announces.total").
func (s *Stats) JSONHandler() nethttp.Handler {
	return nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		s.Sync(r.Context())
		doc, err := s.Snapshot(r.Context())
		if err != nil {
			glog.Errorf("stats: %v", err)
			nethttp.Error(w, "stats unavailable", nethttp.StatusInternalServerError)
			return
		}
		q := r.URL.Query()
		var out any = doc
		if _, ok := q["flatten"]; ok {
			flat := make(map[string]any)
			flatten("", doc, flat)
			out = flat
		}
		var body []byte
		if _, ok := q["pretty"]; ok {
			body, err = json.MarshalIndent(out, "", "  ")
		} else {
			body, err = json.Marshal(out)
		}
		if err != nil {
			nethttp.Error(w, err.Error(), nethttp.StatusInternalServerError)
			return
		}
		body = append(body, '\n')
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
}

// Mux returns a handler with /stats and /metrics, and /debug/pprof/ when pprof is set, for a
// listener of its own.
func (s *Stats) Mux(pprofEnabled bool) nethttp.Handler {
	mux := nethttp.NewServeMux()
	mux.Handle("/stats", s.JSONHandler())
	mux.Handle("/metrics", s.MetricsHandler())
	if pprofEnabled {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Snapshot returns the /stats document: the registry's values gathered now, the per-second
// rates and the latest memory sample.
func (s *Stats) Snapshot(ctx context.Context) (map[string]any, error) {
	fams, err := s.reg.Gather()
	if err != nil {
		return nil, err
	}
	g := gathered{}
	for _, f := range fams {
		g[f.GetName()] = f.GetMetric()
	}
	now := time.Now()
	doc := map[string]any{
		"start_time":           s.start.UTC().Format(time.RFC3339),
		"uptime_seconds":       now.Sub(s.start).Seconds(),
		"goroutines":           runtime.NumGoroutine(),
		"stats_events_dropped": s.dropped.Load(),
		"reaped": map[string]any{
			"peers":    g.sum("chihaya_peers_reaped_total", nil),
			"torrents": g.sum("chihaya_torrents_reaped_total", nil),
		},
		"requests_by_family": map[string]any{
			"ipv4": g.sum("chihaya_requests_total", map[string]string{"family": "ipv4"}),
			"ipv6": g.sum("chihaya_requests_total", map[string]string{"family": "ipv6"}),
		},
		"requests_by_transport": map[string]any{
			"http": g.sum("chihaya_requests_total", map[string]string{"transport": HTTP.String()}),
			"udp":  g.sum("chihaya_requests_total", map[string]string{"transport": UDP.String()}),
			"ws":   g.sum("chihaya_requests_total", map[string]string{"transport": WebSocket.String()}),
		},
	}
	for a := Action(0); a < numActions; a++ {
		name := a.String()
		sec := map[string]any{
			"total":      g.sum("chihaya_requests_total", map[string]string{"action": name}),
			"failures":   g.sum("chihaya_failures_total", map[string]string{"action": name}),
			"per_second": math.Float64frombits(s.perSecond[a].Load()),
			"response_time_seconds": g.quantiles("chihaya_request_latency_seconds",
				map[string]string{"action": name}),
		}
		if a == Announce {
			byEvent := map[string]any{}
			for _, e := range []string{"none", "started", "completed", "stopped", "paused"} {
				byEvent[e] = g.sum("chihaya_announces_total", map[string]string{"event": e})
			}
			sec["by_event"] = byEvent
		}
		doc[name+"s"] = sec
	}
	failures := map[string]any{}
	for _, m := range g["chihaya_failures_total"] {
		kind := label(m, "kind")
		prev, _ := failures[kind].(uint64)
		failures[kind] = prev + uint64(m.GetCounter().GetValue())
	}
	doc["failures"] = failures

	if s.swarm != nil {
		sc, err := s.swarm.SwarmCounts(ctx)
		if err != nil {
			doc["swarm"] = map[string]any{"error": err.Error()}
		} else {
			doc["swarm"] = map[string]any{
				"torrents": sc.Torrents,
				"seeders":  map[string]any{"ipv4": sc.Seeders[0], "ipv6": sc.Seeders[1], "total": sc.Seeders[0] + sc.Seeders[1]},
				"leechers": map[string]any{"ipv4": sc.Leechers[0], "ipv6": sc.Leechers[1], "total": sc.Leechers[0] + sc.Leechers[1]},
			}
		}
	}
	if m := s.mem.Load(); m != nil {
		doc["memory"] = m.document(s.verboseMem)
	}
	return doc, nil
}

func (m *memSample) document(verbose bool) map[string]any {
	last := time.Duration(0)
	if m.ms.NumGC > 0 {
		last = time.Duration(m.ms.PauseNs[(m.ms.NumGC+255)%256])
	}
	doc := map[string]any{
		"sampled_at":             m.at.UTC().Format(time.RFC3339Nano),
		"rss_bytes":              m.rss,
		"heap_alloc_bytes":       m.ms.HeapAlloc,
		"heap_inuse_bytes":       m.ms.HeapInuse,
		"heap_sys_bytes":         m.ms.HeapSys,
		"heap_objects":           m.ms.HeapObjects,
		"sys_bytes":              m.ms.Sys,
		"gc_count":               m.ms.NumGC,
		"gc_pause_total_seconds": time.Duration(m.ms.PauseTotalNs).Seconds(),
		"gc_pause_last_seconds":  last.Seconds(),
		"gc_cpu_fraction":        m.ms.GCCPUFraction,
		"goroutines":             m.goroutines,
	}
	if verbose {
		doc["runtime"] = runtimeDoc(&m.ms)
	}
	return doc
}

// runtimeDoc is every scalar field of runtime.MemStats, for verbose_mem_stats.
func runtimeDoc(ms *runtime.MemStats) map[string]any {
	return map[string]any{
		"alloc": ms.Alloc, "total_alloc": ms.TotalAlloc, "sys": ms.Sys, "lookups": ms.Lookups,
		"mallocs": ms.Mallocs, "frees": ms.Frees, "heap_alloc": ms.HeapAlloc, "heap_sys": ms.HeapSys,
		"heap_idle": ms.HeapIdle, "heap_inuse": ms.HeapInuse, "heap_released": ms.HeapReleased,
		"heap_objects": ms.HeapObjects, "stack_inuse": ms.StackInuse, "stack_sys": ms.StackSys,
		"mspan_inuse": ms.MSpanInuse, "mspan_sys": ms.MSpanSys, "mcache_inuse": ms.MCacheInuse,
		"mcache_sys": ms.MCacheSys, "buck_hash_sys": ms.BuckHashSys, "gc_sys": ms.GCSys,
		"other_sys": ms.OtherSys, "next_gc": ms.NextGC, "last_gc": ms.LastGC,
		"pause_total_ns": ms.PauseTotalNs, "num_gc": ms.NumGC, "num_forced_gc": ms.NumForcedGC,
		"gc_cpu_fraction": ms.GCCPUFraction,
	}
}

type gathered map[string][]*dto.Metric

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func matches(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		if label(m, k) != v {
			return false
		}
	}
	return true
}

// sum adds the counter values of the series of name whose labels match want.
func (g gathered) sum(name string, want map[string]string) uint64 {
	var total float64
	for _, m := range g[name] {
		if matches(m, want) {
			total += m.GetCounter().GetValue()
		}
	}
	return uint64(total)
}

// quantiles reads p50, p90 and p99 from the summary series of name whose labels match want.
// A quantile with no observations yet is reported as 0.
func (g gathered) quantiles(name string, want map[string]string) map[string]any {
	out := map[string]any{"p50": 0.0, "p90": 0.0, "p99": 0.0}
	for _, m := range g[name] {
		if !matches(m, want) {
			continue
		}
		for _, q := range m.GetSummary().GetQuantile() {
			v := q.GetValue()
			if math.IsNaN(v) {
				v = 0
			}
			switch q.GetQuantile() {
			case 0.5:
				out["p50"] = v
			case 0.9:
				out["p90"] = v
			case 0.99:
				out["p99"] = v
			}
		}
	}
	return out
}

// flatten writes the leaves of a nested document into out under dotted keys.
func flatten(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if !ok {
		out[prefix] = v
		return
	}
	for k, child := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		flatten(key, child, out)
	}
}

// readRSS returns the resident set size from /proc/self/statm, or 0 where there is none.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}
