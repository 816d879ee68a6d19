package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// median returns the round with the median responses per second (the lower middle of an even
// count), so that every figure of a table row comes from one and the same round.
func median(rs []row) row {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b row) int {
		switch {
		case a.res.PerSecond < b.res.PerSecond:
			return -1
		case a.res.PerSecond > b.res.PerSecond:
			return 1
		}
		return 0
	})
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

// printTables prints the results as markdown: median rounds, ratios, memory and targets.
func printTables(w io.Writer, o options, rows []row, mem []memRow, took time.Duration) {
	fmt.Fprintf(w, "\n## Chihaya vs opentracker, loopback, tracker on CPU %s, generator on CPU %s\n\n", o.trackerCPU, o.genCPU)
	fmt.Fprintf(w, "%d rounds of %s (after %s warm-up) per tracker and workload; each row is the median round by responses/s; spread is (max-min)/median of responses/s over the rounds. Took %s.\n\n",
		o.rounds, o.duration, o.warmup, took.Round(time.Second))
	type key = medKey
	med := map[key]row{}
	if len(rows) > 0 {
		med = printRows(w, rows)
	}
	if len(mem) > 0 {
		printMemory(w, o, mem)
	}
	printTargets(w, o, med, mem)
}

// printRows prints the table of median rounds and the ratio table, and returns the median rows.
func printRows(w io.Writer, rows []row) map[medKey]row {
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
	med := map[key]row{}
	for _, k := range order {
		rs := groups[k]
		m := median(rs)
		med[k] = m
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
	return med
}

// printMemory prints the memory workloads' table.
func printMemory(w io.Writer, o options, mem []memRow) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Memory: a fresh tracker, RSS before; %d peers announced once each (event started, numwant 0, IPv4, public); 2 s; RSS after; then a UDP scrape of a sample of torrents counts what was stored.\n\n", o.memPeers)
	fmt.Fprintln(w, "| tracker | loaded over | peers | torrents | RSS before | RSS after | bytes/peer | fill announces/s | fill errors | stored (scrape sample) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, m := range mem {
		st := fmt.Sprintf("%d/%d over %d torrents", m.verify.Got, m.verify.Want, m.verify.Torrents)
		if m.verify.Mismatches > 0 {
			st = fmt.Sprintf("**%s, %d torrents differ**", st, m.verify.Mismatches)
		}
		fe := fmt.Sprint(m.fill.Errors)
		if m.fill.Errors > 0 {
			fe = fmt.Sprintf("%d, resent (%s)", m.fill.Errors, m.fill.FirstError)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %.1f MB | %.1f MB | %.1f | %.0f | %s | %s |\n", m.tracker, m.proto, m.peers, o.memTorrents,
			float64(m.rss0)/1024, float64(m.rss1)/1024, m.perPeer(), m.fill.PerSecond, fe, st)
	}
}

// medKey names a table row: a workload and a tracker.
type medKey struct{ w, t string }

// printTargets checks the figures against issue 6's targets.
func printTargets(w io.Writer, o options, med map[medKey]row, mem []memRow) {
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
	for _, m := range mem {
		if m.tracker == chihaya {
			fmt.Fprintf(w, "| memory <= 48 bytes/peer (%d peers, %d torrents, loaded over %s) | %.1f bytes/peer | %s |\n",
				m.peers, o.memTorrents, m.proto, m.perPeer(), verdict(m.perPeer() <= 48 && m.verify.Mismatches == 0))
		}
	}
}

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
