package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/chihaya/chihaya/bench/loadgen"
)

// median returns the round with the median responses per second (the lower middle of an even
// count), so that every figure of a table row comes from one and the same round.
func median(rs []row) row { return medianBy(rs, func(r row) float64 { return r.res.PerSecond }) }

// medianBy returns the round whose key is the median (the lower middle of an even count).
func medianBy[T any](rs []T, key func(T) float64) T {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return s[(len(s)-1)/2]
}

// spread is (max-min)/median of responses per second over the rounds, in percent.
func spread(rs []row) float64 {
	lo, hi := rs[0].res.PerSecond, rs[0].res.PerSecond
	for _, r := range rs {
		lo, hi = min(lo, r.res.PerSecond), max(hi, r.res.PerSecond)
	}
	m := median(rs).res.PerSecond
	if m == 0 {
		return 0
	}
	return 100 * (hi - lo) / m
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// printTables prints the results as markdown: median rounds, ratios, open-loop latency, memory
// and targets.
func printTables(w io.Writer, o options, res *results) {
	fmt.Fprintf(w, "\n## Chihaya vs opentracker, loopback, tracker on CPU %s, generator on CPU %s\n\n", o.trackerCPU, o.genCPU)
	if len(res.rows) > 0 {
		fmt.Fprintf(w, "%d rounds of %s (after %s warm-up) per tracker and workload; each row is the median round by responses/s; spread is (max-min)/median of responses/s over the rounds. ",
			o.rounds, o.duration, o.warmup)
	}
	fmt.Fprintf(w, "Took %s.\n\n", res.took.Round(time.Second))
	if len(res.rows) > 0 {
		printRows(w, res.rows, res.med)
	}
	if len(res.open) > 0 {
		printOpen(w, o, res)
	}
	if len(res.mem) > 0 {
		printMemory(w, res.mem)
	}
	if res.churn != nil {
		printChurn(w, res.churn)
	}
	printTargets(w, res)
}

// medians returns the median round of each workload and tracker.
func medians(rows []row) map[medKey]row {
	groups := map[medKey][]row{}
	for _, r := range rows {
		k := medKey{r.workload, r.tracker}
		groups[k] = append(groups[k], r)
	}
	med := map[medKey]row{}
	for k, rs := range groups {
		med[k] = median(rs)
	}
	return med
}

// printRows prints the table of median rounds and the ratio table.
func printRows(w io.Writer, rows []row, med map[medKey]row) {
	type key = medKey
	fmt.Fprintln(w, "| workload | tracker | responses/s | CPU s/1000 req | tracker CPU | generator CPU | p50 | p99 | RSS | errors | spread |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	groups := map[key][]row{}
	var order []key
	for _, r := range rows {
		k := key{r.workload, r.tracker}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		rs := groups[k]
		m := med[k]
		var errs uint64
		for _, r := range rs {
			errs += r.res.Errors
		}
		e := fmt.Sprint(errs)
		if errs > 0 {
			e = fmt.Sprintf("**%d** (%s)", errs, m.res.FirstError)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.4f | %.0f%% | %.0f%% | %s | %s | %.1f MB | %s | %.0f%% |\n",
			k.w, k.t, m.res.PerSecond, m.cpuPer1000(), 100*m.trackerUtil(), 100*m.genUtil(),
			us(m.res.P50us), us(m.res.P99us), float64(m.rssKB)/1024, e, spread(rs))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| ratio (median rounds) | workload | responses/s | CPU s/1000 req | p50 | p99 | RSS |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	seen := map[string]bool{}
	for _, k := range order {
		if seen[k.w] {
			continue
		}
		seen[k.w] = true
		for _, pair := range [][2]string{{chihaya, opentracker}, {chihaya, trivial}, {chihayaTLS, nginxOT}, {chihayaTLS, chihaya}} {
			c, ok := med[key{k.w, pair[0]}]
			if !ok {
				continue
			}
			b, ok := med[key{k.w, pair[1]}]
			if !ok {
				continue
			}
			fmt.Fprintf(w, "| %s/%s | %s | %s | %s | %s | %s | %s |\n", pair[0], pair[1], k.w,
				ratio(c.res.PerSecond, b.res.PerSecond), ratio(c.cpuPer1000(), b.cpuPer1000()),
				ratio(c.res.P50us, b.res.P50us), ratio(c.res.P99us, b.res.P99us),
				ratio(float64(c.rssKB), float64(b.rssKB)))
		}
	}
}

// openMedians returns the median udp-open round of each tracker, and the spread of p99 over
// the rounds, in percent.
func openMedians(open []openRow) (map[string]openRow, map[string]float64) {
	groups := map[string][]openRow{}
	for _, r := range open {
		groups[r.tracker] = append(groups[r.tracker], r)
	}
	med, spr := map[string]openRow{}, map[string]float64{}
	for t, rs := range groups {
		m := medianOpen(rs)
		med[t] = m
		lo, hi := rs[0].res.P99us, rs[0].res.P99us
		for _, r := range rs {
			lo, hi = min(lo, r.res.P99us), max(hi, r.res.P99us)
		}
		if m.res.P99us > 0 {
			spr[t] = 100 * (hi - lo) / m.res.P99us
		}
	}
	return med, spr
}

// printOpen prints the open-loop latency table.
func printOpen(w io.Writer, o options, res *results) {
	med, spr := openMedians(res.open)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Open-loop UDP latency (udp-open): the udp workload's mix offered at a fixed %.0f requests/s (%s), each request sent on a fixed schedule whatever became of the others, its latency counted from when it was due. %d rounds of %s per tracker; each row is the median round by p99; spread is (max-min)/median of p99.\n\n",
		res.openRate, res.openSource, o.rounds, o.duration)
	fmt.Fprintln(w, "| tracker | offered/s | achieved/s | p50 | p99 | p99.9 | lost | kernel drops | generator lag p99 | tracker CPU | CPU s/1000 req | RSS | collector (GCs, pauses, longest) | errors | spread |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
	for _, t := range []string{chihaya, opentracker} {
		m, ok := med[t]
		if !ok {
			continue
		}
		var errs uint64
		for _, r := range res.open {
			if r.tracker == t {
				errs += r.res.Errors
			}
		}
		e := fmt.Sprint(errs)
		if errs > 0 {
			e = fmt.Sprintf("**%d** (%s)", errs, m.res.FirstError)
		}
		gc := "n/a"
		if m.gc.ok {
			gc = fmt.Sprintf("%.0f, %s, %s", m.gc.count, dur(m.gc.total), dur(m.gc.maxPause))
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %s | %s | %s | %d | %d | %s | %.0f%% | %.4f | %.1f MB | %s | %s | %.0f%% |\n",
			t, m.res.Open.Offered, m.res.PerSecond, us(m.res.P50us), us(m.res.P99us), us(m.res.P999us), m.res.Open.Lost,
			m.drops, us(m.res.Open.LagP99us), 100*m.trackerUtil(), m.cpuPer1000(), float64(m.rssKB)/1024, gc, e, spr[t])
	}
	if c, ok := med[chihaya]; ok {
		if ot, ok := med[opentracker]; ok {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| ratio (median rounds) | workload | p50 | p99 | p99.9 | CPU s/1000 req |")
			fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
			fmt.Fprintf(w, "| chihaya/opentracker | udp-open | %s | %s | %s | %s |\n", ratio(c.res.P50us, ot.res.P50us),
				ratio(c.res.P99us, ot.res.P99us), ratio(c.res.P999us, ot.res.P999us), ratio(c.cpuPer1000(), ot.cpuPer1000()))
		}
	}
}

// printMemory prints the memory workloads' table and Chihaya's bytes per peer against
// opentracker's per workload and shape.
func printMemory(w io.Writer, mem []memRow) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Memory: a fresh tracker, RSS before; the peers announced once each (event started, numwant 0, IPv4; the j-th peer to torrent j mod torrents, half of each torrent's peers seeding); RSS after, once settled; then a scrape of a sample of torrents counts the seeders and leechers stored.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| workload | tracker | loaded over | peers | torrents | RSS before | RSS after | bytes/peer | fill announces/s | fill errors | stored: seeders, leechers (scrape sample) |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, m := range mem {
		fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %.1f MB | %.1f MB | %.1f | %.0f | %s | %s |\n", m.workload, m.tracker, loadedOver(m),
			m.peers, m.torrents, mb(m.rss0), mb(m.rss1), m.perPeer(), m.fill.PerSecond, fillErrors(m.fill), stored(m.verify))
	}
	for _, m := range mem {
		if m.workload == "memory-private" {
			fmt.Fprintf(w, "\nmemory-private: Chihaya in private mode with the gazelle backend on MariaDB, %d users (each with 10 peers in turn) and %d torrents loaded from the database at start (in RSS before); RSS after was read once the backend's queues had drained (%s after the fill; %.0f rows dropped for a full queue).\n",
				m.users, m.torrents, m.drain.Round(100*time.Millisecond), m.dropped)
		}
	}
	type key struct {
		workload string
		shape    shape
	}
	var order []key
	per := map[key]map[string]float64{}
	for _, m := range mem {
		k := key{m.workload, m.shape()}
		if per[k] == nil {
			per[k] = map[string]float64{}
			order = append(order, k)
		}
		per[k][m.tracker] = m.perPeer()
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| memory | peers/torrents | chihaya bytes/peer | opentracker bytes/peer | chihaya/opentracker |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|")
	for _, k := range order {
		c, okc := per[k][chihaya]
		ot, oko := per[k][opentracker]
		cs, ots, r := "n/a", "n/a", "n/a"
		if okc {
			cs = fmt.Sprintf("%.1f", c)
		}
		if oko {
			ots = fmt.Sprintf("%.1f", ot)
		}
		if okc && oko {
			r = ratio(c, ot)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", k.workload, k.shape, cs, ots, r)
	}
}

func loadedOver(m memRow) string {
	if m.workload == "memory-private" {
		return m.proto + ", private"
	}
	return m.proto
}

func fillErrors(r loadgen.Result) string {
	if r.Errors > 0 {
		return fmt.Sprintf("%d, resent (%s)", r.Errors, r.FirstError)
	}
	return "0"
}

// stored formats what a scrape sample found against what was sent, in bold when they differ.
func stored(v loadgen.VerifyResult) string {
	st := fmt.Sprintf("%d/%d, %d/%d over %d torrents", v.GotSeeders, v.WantSeeders, v.GotLeechers, v.WantLeechers, v.Torrents)
	if v.Mismatches > 0 {
		st = fmt.Sprintf("**%s, %d torrents differ**", st, v.Mismatches)
	}
	return st
}

// printChurn prints the churn workload's table.
func printChurn(w io.Writer, c *churnRow) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Churn (memory-churn): a fresh Chihaya with peer_timeout %s and reap_interval 1s; %d peers over %d torrents announced once (RSS before); then every peer replaced once by a new one (new peer ID and port, same torrent and role; the first never announce again; RSS at the peak, both generations stored); then the reaper removes the first generation (RSS after, once a scrape sample counts the replacements only and RSS has settled).\n\n",
		c.timeout, c.peers, c.torrents)
	fmt.Fprintln(w, "| tracker | RSS fresh | RSS before | RSS at the peak | RSS after | after/before | bytes/peer before | bytes/peer after | stored at the peak | stored after | reaper done |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
	per := func(kb uint64) float64 { return (float64(kb) - float64(c.rss0)) * 1024 / float64(c.peers) }
	fmt.Fprintf(w, "| %s | %.1f MB | %.1f MB | %.1f MB | %.1f MB | %.2fx | %.1f | %.1f | %s | %s | %s after the replacements |\n",
		c.tracker, mb(c.rss0), mb(c.before), mb(c.peak), mb(c.after), c.ratio(), per(c.before), per(c.after),
		stored(c.peakStored), stored(c.afterStored), c.reapWait.Round(time.Second))
	fmt.Fprintln(w, "| opentracker | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a: its peers expire 40 to 45 min after their last announce (9 pools of 5 min, fixed at compile time); not waited for |")
}

// medKey names a table row: a workload and a tracker.
type medKey struct{ w, t string }

// printTargets checks the figures against issue 6's and issue 19's targets.
func printTargets(w io.Writer, res *results) {
	med := res.med
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	if c, ok := med[medKey{"udp", chihaya}]; ok {
		if o, ok := med[medKey{"udp", opentracker}]; ok {
			ca, oa := float64(c.res.Kinds["announce"])/c.res.Seconds, float64(o.res.Kinds["announce"])/o.res.Seconds
			fmt.Fprintf(w, "| UDP announces/s >= 1.0x opentracker | %.0f vs %.0f = %s | %s |\n", ca, oa, ratio(ca, oa), verdict(ca >= oa))
		}
	}
	if c, ok := med[medKey{"http-close", chihaya}]; ok {
		if o, ok := med[medKey{"http-close", opentracker}]; ok {
			fmt.Fprintf(w, "| HTTP new connection per request: tracker CPU/req <= opentracker | %.4f vs %.4f CPU s/1000 = %s | %s |\n",
				c.cpuPer1000(), o.cpuPer1000(), ratio(c.cpuPer1000(), o.cpuPer1000()), verdict(c.cpuPer1000() <= o.cpuPer1000()))
		}
	}
	if c, ok := med[medKey{"http-keepalive", chihaya}]; ok {
		if t, ok := med[medKey{"http-keepalive", trivial}]; ok {
			fmt.Fprintf(w, "| HTTP keep-alive >= 0.8x trivial net/http | %.0f vs %.0f resp/s = %s | %s |\n",
				c.res.PerSecond, t.res.PerSecond, ratio(c.res.PerSecond, t.res.PerSecond), verdict(c.res.PerSecond >= 0.8*t.res.PerSecond))
		}
	}
	printTLSTargets(w, med, verdict)
	for _, m := range res.mem {
		if m.tracker == chihaya && (m.workload == "memory" || m.workload == "memory-http") {
			fmt.Fprintf(w, "| memory <= 48 bytes/peer (%d peers, %d torrents, loaded over %s) | %.1f bytes/peer | %s |\n",
				m.peers, m.torrents, m.proto, m.perPeer(), verdict(m.perPeer() <= 48 && m.verify.Mismatches == 0))
		}
	}
	for _, c := range res.mem {
		if c.tracker != chihaya {
			continue
		}
		for _, o := range res.mem {
			if o.tracker == opentracker && o.workload == c.workload && o.shape() == c.shape() {
				ok := c.perPeer() <= o.perPeer() && c.verify.Mismatches == 0
				fmt.Fprintf(w, "| %s %s (loaded over %s): bytes/peer <= opentracker (issue 19) | %.1f vs %.1f = %s | %s |\n",
					c.workload, c.shape(), c.proto, c.perPeer(), o.perPeer(), ratio(c.perPeer(), o.perPeer()), verdict(ok))
			}
		}
	}
	if c := res.churn; c != nil {
		fmt.Fprintf(w, "| memory-churn: RSS after churn and reaping <= 1.25x before (issue 19) | %.1f vs %.1f MB = %.2fx | %s |\n",
			mb(c.after), mb(c.before), c.ratio(), verdict(c.ratio() <= 1.25 && c.afterStored.Mismatches == 0))
	}
	if len(res.open) > 0 {
		om, _ := openMedians(res.open)
		c, ok1 := om[chihaya]
		o, ok2 := om[opentracker]
		if ok1 && ok2 {
			ok := c.res.P99us <= o.res.P99us && c.res.Errors == 0
			fmt.Fprintf(w, "| udp-open at %.0f/s: p99 <= opentracker's (issue 19) | %s vs %s = %s | %s |\n",
				res.openRate, us(c.res.P99us), us(o.res.P99us), ratio(c.res.P99us, o.res.P99us), verdict(ok))
		}
	}
}

// dur formats a duration in ms or µs.
func dur(d time.Duration) string { return us(float64(d) / 1e3) }

// us formats microseconds.
func us(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2f ms", v/1000)
	}
	return fmt.Sprintf("%.0f µs", v)
}

// printTLSTargets checks the HTTPS figures against issue 18's targets.
func printTLSTargets(w io.Writer, med map[medKey]row, verdict func(bool) string) {
	if t, ok := med[medKey{"https-keepalive", chihayaTLS}]; ok {
		if c, ok := med[medKey{"https-keepalive", chihaya}]; ok {
			fmt.Fprintf(w, "| HTTPS keep-alive >= 0.8x Chihaya's plain keep-alive (issue 18) | %.0f vs %.0f resp/s = %s | %s |\n",
				t.res.PerSecond, c.res.PerSecond, ratio(t.res.PerSecond, c.res.PerSecond), verdict(t.res.PerSecond >= 0.8*c.res.PerSecond))
		}
	}
	for _, wl := range []string{"https-keepalive", "https-close", "https-resume"} {
		t, ok1 := med[medKey{wl, chihayaTLS}]
		n, ok2 := med[medKey{wl, nginxOT}]
		if !ok1 || !ok2 {
			continue
		}
		fmt.Fprintf(w, "| %s: CPU/announce <= 0.5x nginx+opentracker (issue 18) | %.4f vs %.4f CPU s/1000 = %s | %s |\n",
			wl, t.cpuPer1000(), n.cpuPer1000(), ratio(t.cpuPer1000(), n.cpuPer1000()), verdict(t.cpuPer1000() <= 0.5*n.cpuPer1000()))
		if wl == "https-close" && n.res.Responses > 0 {
			nginxOnly := float64(n.firstTicks) / clockTick / float64(n.res.Responses) * 1000
			fmt.Fprintf(w, "| https-close: a full handshake and its announce cost <= nginx's handshake and proxying alone (issue 18) | %.4f vs %.4f CPU s/1000 = %s | %s |\n",
				t.cpuPer1000(), nginxOnly, ratio(t.cpuPer1000(), nginxOnly), verdict(t.cpuPer1000() <= nginxOnly))
		}
	}
}
