// Command bench runs Chihaya and opentracker side by side on loopback and prints a markdown
// table of what each did per workload, with ratios. It installs nothing: it checks for what it
// needs, says how to get what is missing, and stops. See bench/README.md.
//
//	go run ./bench/cmd/bench            # or: bash bench/run
//	go run ./bench/cmd/bench -rounds 5 -duration 10s -workloads udp,memory
//
// Each tracker runs pinned to one CPU (-tracker-cpu) and the load generator to another
// (-gen-cpu). Every measurement starts a fresh tracker process and stops it afterwards, and the
// trackers take turns within each round, in the opposite order in the next round.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chihaya/chihaya/bench/loadgen"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTick = 100

type options struct {
	rounds        int
	duration      time.Duration
	warmup        time.Duration
	workloads     string
	trackerCPU    string
	genCPU        string
	httpConns     int
	udpConns      int
	memPeers      int
	memTorrents   int
	opentracker   string
	keep          bool
	scrapePool    int
	scrapePrefill int
	// chihayaKeys is a JSON object of config keys laid over example_config.json for Chihaya.
	chihayaKeys string
	// The issue 19 workloads.
	memShapes    string        // memory-shapes: PEERS/TORRENTS,...
	churnTimeout time.Duration // memory-churn: Chihaya's peer_timeout
	openRate     float64       // udp-open: offered rate; 0: half of opentracker's saturated udp rate
	privateUsers int           // memory-private: users; 0: one per 10 peers
	mysqlDSN     string        // memory-private: a MariaDB server to create the database on
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per workload; the table shows the median round")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured window of each round")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before each window")
	flag.StringVar(&o.workloads, "workloads", strings.Join(defaultWorkloads, ","),
		"comma-separated workloads to run, of: "+strings.Join(allWorkloads, ", "))
	flag.StringVar(&o.trackerCPU, "tracker-cpu", "1", "CPU the trackers are pinned to (taskset -c)")
	flag.StringVar(&o.genCPU, "gen-cpu", "0", "CPU the load generator is pinned to (taskset -c)")
	flag.IntVar(&o.httpConns, "http-conns", 64, "HTTP connections (concurrent requests)")
	flag.IntVar(&o.udpConns, "udp-conns", 128, "UDP requests in flight")
	flag.IntVar(&o.memPeers, "mem-peers", 1_000_000, "memory workload: peers")
	flag.IntVar(&o.memTorrents, "mem-torrents", 100_000, "memory workload: torrents")
	flag.IntVar(&o.scrapePool, "scrape-torrents", 50_000, "scrape workloads: torrents scraped (all prefilled)")
	flag.IntVar(&o.scrapePrefill, "scrape-prefill", 100_000, "scrape workloads: peers announced (UDP) before the warm-up")
	flag.StringVar(&o.opentracker, "opentracker", "opentracker", "opentracker binary")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (binaries, configs, logs)")
	flag.StringVar(&o.chihayaKeys, "chihaya-config", "", `config keys laid over example_config.json for Chihaya, as a JSON object, e.g. '{"rate_limit": {"announce_rate": 1e9}}'`)
	flag.StringVar(&o.memShapes, "mem-shapes", "1M/1M,1M/1", "memory-shapes: swarm shapes PEERS/TORRENTS, comma-separated (k and M suffixes); add 10M/1M for ten million peers")
	flag.DurationVar(&o.churnTimeout, "churn-timeout", 2*time.Minute, "memory-churn: Chihaya's peer_timeout (the fill and the replacements must take less)")
	flag.Float64Var(&o.openRate, "open-rate", 0, "udp-open: requests offered per second (default: half of opentracker's saturated udp rate in this run)")
	flag.IntVar(&o.privateUsers, "private-users", 0, "memory-private: site users, each peer announcing as user (i/10) mod this (default: one per 10 peers)")
	flag.StringVar(&o.mysqlDSN, "mysql-dsn", os.Getenv("CHIHAYA_MYSQL_DSN"), "memory-private: MariaDB server to create a throwaway database on, user:password@tcp(host:port)/ (default $CHIHAYA_MYSQL_DSN; empty: start one with .ci/mariadb.sh)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := 0
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		code = 1
	}
	procs.killAll()
	os.Exit(code)
}

// The workloads, in the order they run. The memory workloads after memory are left out by
// default: memory-http because opentracker closes every connection, so loading 1M peers into it
// over HTTP takes minutes; memory-shapes, memory-churn and memory-private because they take
// minutes too (and memory-private a MariaDB server).
var (
	allWorkloads = []string{"http-keepalive", "http-close", "http-scrape-1", "http-scrape-10", "udp",
		"https-keepalive", "https-close", "https-resume", "udp-open", "memory",
		"memory-http", "memory-shapes", "memory-churn", "memory-private"}
	defaultWorkloads = allWorkloads[:slices.Index(allWorkloads, "memory")+1]
	httpsWorkloads   = []string{"https-keepalive", "https-close", "https-resume"}
)

// Tracker names.
const (
	chihaya     = "chihaya"
	opentracker = "opentracker"
	trivial     = "trivial"
)

// workload is one row group of the table.
type workload struct {
	name     string
	trackers []string
	args     []string // loadgen flags
	prefill  bool     // announce scrape-prefill peers before the warm-up
	tls      string   // loadgen -tls for the trackers measured over HTTPS (isTLS)
}

func workloads(o options) []workload {
	c := strconv.Itoa
	return []workload{
		{name: "http-keepalive", trackers: []string{chihaya, opentracker, trivial},
			args: []string{"-mode", "http-announce", "-keepalive", "-conns", c(o.httpConns)}},
		{name: "http-close", trackers: []string{chihaya, opentracker, trivial},
			args: []string{"-mode", "http-announce", "-conns", c(o.httpConns)}},
		{name: "http-scrape-1", trackers: []string{chihaya, opentracker}, prefill: true,
			args: []string{"-mode", "http-scrape", "-keepalive", "-scrape-hashes", "1", "-torrents", c(o.scrapePool), "-conns", c(o.httpConns)}},
		{name: "http-scrape-10", trackers: []string{chihaya, opentracker}, prefill: true,
			args: []string{"-mode", "http-scrape", "-keepalive", "-scrape-hashes", "10", "-torrents", c(o.scrapePool), "-conns", c(o.httpConns)}},
		{name: "udp", trackers: []string{chihaya, opentracker},
			args: []string{"-mode", "udp", "-conns", c(o.udpConns)}},
		// Plain Chihaya runs beside the HTTPS trackers in https-keepalive: what TLS costs.
		{name: "https-keepalive", trackers: []string{chihaya, chihayaTLS, nginxOT}, tls: "full",
			args: []string{"-mode", "http-announce", "-keepalive", "-conns", c(o.httpConns)}},
		{name: "https-close", trackers: []string{chihayaTLS, nginxOT}, tls: "full",
			args: []string{"-mode", "http-announce", "-conns", c(o.httpConns)}},
		{name: "https-resume", trackers: []string{chihayaTLS, nginxOT}, tls: "resume",
			args: []string{"-mode", "http-announce", "-conns", c(o.httpConns)}},
	}
}

// env is the prepared work directory.
type env struct {
	o         options
	dir       string
	root      string
	whitelist string
	exampleCf map[string]any
	starts    int
	// private is the Gazelle database of memory-private.
	private *privateDB
	// certFile and keyFile are the HTTPS workloads' self-signed certificate.
	certFile, keyFile string
}

func run(ctx context.Context, o options) error {
	if err := checkDeps(o); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, w := range strings.Split(o.workloads, ",") {
		w = strings.TrimSpace(w)
		if !slices.Contains(allWorkloads, w) {
			return fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(allWorkloads, ", "))
		}
		want[w] = true
	}
	for _, w := range httpsWorkloads {
		if _, err := exec.LookPath("nginx"); want[w] && err != nil {
			return fmt.Errorf("missing:\n  - nginx (for %s): apt-get install -y nginx-light, or leave the https workloads out (-workloads)\nnothing was installed", w)
		}
	}
	if want["memory-private"] {
		if m := mariadbMissing(o); m != "" {
			return fmt.Errorf("missing:\n  - %s\nnothing was installed", m)
		}
	}
	shapes, err := parseShapes(o.memShapes)
	if err != nil {
		return err
	}
	if o.memTorrents < 1 || o.memPeers < o.memTorrents {
		return fmt.Errorf("-mem-peers %d over -mem-torrents %d: want at least one peer per torrent", o.memPeers, o.memTorrents)
	}
	if want["memory-churn"] && o.churnTimeout < 4*time.Second {
		return fmt.Errorf("-churn-timeout %s: want at least 4s", o.churnTimeout)
	}
	pool := max(1_000_000, o.memTorrents)
	if want["memory-shapes"] {
		for _, sh := range shapes {
			pool = max(pool, sh.torrents)
		}
	}
	e, err := prepare(ctx, o, pool)
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(e.dir)
	} else {
		fmt.Fprintf(os.Stderr, "work directory: %s\n", e.dir)
	}

	per := o.warmup + o.duration + 2*time.Second
	var n int
	for _, w := range workloads(o) {
		if want[w.name] {
			n += len(w.trackers) * o.rounds
		}
	}
	if want["udp-open"] {
		n += 2 * o.rounds
	}
	total := time.Duration(n) * per
	// Rough fill rates: ~100,000 UDP announces/s, ~3,000/s into opentracker over HTTP.
	fillTime := func(peers int) time.Duration { return time.Duration(peers/100_000+15) * time.Second }
	if want["memory"] {
		total += 2 * fillTime(o.memPeers)
	}
	if want["memory-http"] {
		total += time.Duration(o.memPeers/3000+60) * time.Second
	}
	if want["memory-shapes"] {
		for _, sh := range shapes {
			total += 2 * fillTime(sh.peers)
		}
	}
	if want["memory-churn"] {
		total += 2*fillTime(o.memPeers) + o.churnTimeout
	}
	if want["memory-private"] {
		total += time.Duration(o.memPeers/20_000+60) * time.Second
	}
	fmt.Fprintf(os.Stderr, "bench: %d measurements of ~%s each, plus the memory workloads; about %s in all\n",
		n, per.Round(time.Second), total.Round(10*time.Second))

	start := time.Now()
	var res results
	for _, w := range workloads(o) {
		if !want[w.name] {
			continue
		}
		for r := 0; r < o.rounds; r++ {
			order := slices.Clone(w.trackers)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, t := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				m, err := e.measure(ctx, w, t)
				if err != nil {
					return fmt.Errorf("%s, %s, round %d: %w", w.name, t, r+1, err)
				}
				m.round = r + 1
				fmt.Fprintf(os.Stderr, "  %-15s %-12s round %d: %9.0f resp/s  %.4f CPU s/1000  tracker CPU %3.0f%%  generator CPU %3.0f%%  errors %d\n",
					w.name, t, r+1, m.res.PerSecond, m.cpuPer1000(), 100*m.trackerUtil(), 100*m.genUtil(), m.res.Errors)
				res.rows = append(res.rows, m)
			}
		}
	}
	res.med = medians(res.rows)
	if want["udp-open"] {
		if err := e.runOpen(ctx, &res); err != nil {
			return err
		}
	}
	var specs []memSpec
	for _, name := range []string{"memory", "memory-http"} {
		if !want[name] {
			continue
		}
		for _, t := range []string{chihaya, opentracker} {
			proto := strings.TrimPrefix(name, "memory-")
			if name == "memory" {
				proto = "udp"
			}
			specs = append(specs, memSpec{workload: name, tracker: t, proto: proto, shape: shape{o.memPeers, o.memTorrents}})
		}
	}
	if want["memory-shapes"] {
		for _, sh := range shapes {
			for _, t := range []string{chihaya, opentracker} {
				specs = append(specs, memSpec{workload: "memory-shapes", tracker: t, proto: "udp", shape: sh})
			}
		}
	}
	for _, s := range specs {
		m, err := e.memory(ctx, s)
		if err != nil {
			return fmt.Errorf("%s %s, %s: %w", s.workload, s.shape, s.tracker, err)
		}
		fmt.Fprintf(os.Stderr, "  %-15s %-12s %s: %.1f bytes/peer, verify %d/%d peers, %d torrents differ\n",
			s.workload, s.tracker, s.shape, m.perPeer(), m.verify.Got, m.verify.Want, m.verify.Mismatches)
		res.mem = append(res.mem, m)
	}
	if want["memory-churn"] {
		c, err := e.churn(ctx)
		if err != nil {
			return fmt.Errorf("memory-churn, chihaya: %w", err)
		}
		fmt.Fprintf(os.Stderr, "  %-15s %-12s RSS %.1f MB after the fill, %.1f MB at the peak, %.1f MB after the reaper: %.2fx\n",
			"memory-churn", chihaya, mb(c.before), mb(c.peak), mb(c.after), c.ratio())
		res.churn = &c
	}
	if want["memory-private"] {
		m, err := e.runPrivate(ctx)
		if err != nil {
			return fmt.Errorf("memory-private, chihaya: %w", err)
		}
		fmt.Fprintf(os.Stderr, "  %-15s %-12s %.1f bytes/peer, verify %d/%d peers\n", "memory-private", chihaya, m.perPeer(), m.verify.Got, m.verify.Want)
		res.mem = append(res.mem, m)
	}
	res.took = time.Since(start)
	printTables(os.Stdout, o, &res)
	return nil
}

// results is everything one run measured.
type results struct {
	rows []row
	med  map[medKey]row
	// open are the udp-open rounds, at openRate requests/s (openSource says where the rate
	// came from).
	open       []openRow
	openRate   float64
	openSource string
	mem        []memRow
	churn      *churnRow
	took       time.Duration
}

// runOpen runs the udp-open rounds, the trackers alternating as in the other workloads.
func (e *env) runOpen(ctx context.Context, res *results) error {
	rate, source, err := e.openRate(ctx, res.med)
	if err != nil {
		return err
	}
	res.openRate, res.openSource = rate, source
	for r := 0; r < e.o.rounds; r++ {
		order := []string{chihaya, opentracker}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			m, err := e.measureOpen(ctx, t, rate)
			if err != nil {
				return fmt.Errorf("udp-open, %s, round %d: %w", t, r+1, err)
			}
			m.round = r + 1
			fmt.Fprintf(os.Stderr, "  %-15s %-12s round %d: %9.0f of %.0f resp/s  p50 %s  p99 %s  p99.9 %s  lost %d (kernel drops %d)  tracker CPU %3.0f%%  generator lag p99 %s\n",
				"udp-open", t, r+1, m.res.PerSecond, rate, us(m.res.P50us), us(m.res.P99us), us(m.res.P999us), m.res.Open.Lost, m.drops,
				100*m.trackerUtil(), us(m.res.Open.LagP99us))
			res.open = append(res.open, m)
		}
	}
	return nil
}

// runPrivate makes the private database, measures Chihaya's private mode on it and drops it.
func (e *env) runPrivate(ctx context.Context) (memRow, error) {
	users := e.privateUsers(e.o.memPeers)
	db, err := e.openPrivateDB(ctx, users, e.o.memTorrents)
	if err != nil {
		return memRow{}, err
	}
	defer db.close()
	e.private = db
	defer func() { e.private = nil }()
	return e.memory(ctx, memSpec{workload: "memory-private", tracker: chihaya, proto: "http", shape: shape{e.o.memPeers, e.o.memTorrents}, private: true})
}

// mb converts kB to MB.
func mb(kb uint64) float64 { return float64(kb) / 1024 }

// checkDeps says what is missing and how to get it; it installs nothing.
func checkDeps(o options) error {
	var missing []string
	if runtime := os.Getenv("GOOS"); runtime != "" && runtime != "linux" {
		missing = append(missing, "Linux (taskset and /proc): run on Linux")
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		missing = append(missing, "/proc (Linux): run on Linux")
	}
	if _, err := exec.LookPath(o.opentracker); err != nil {
		missing = append(missing, "opentracker: apt-get install -y opentracker (Debian/Ubuntu), or -opentracker /path/to/opentracker")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		missing = append(missing, "taskset: apt-get install -y util-linux")
	}
	if _, err := exec.LookPath("go"); err != nil {
		missing = append(missing, "go (1.26 or later) on PATH: export PATH=$PATH:/usr/local/go/bin")
	}
	if n := numCPU(); n < 2 {
		missing = append(missing, fmt.Sprintf("two CPUs (one for the trackers, one for the generator); this machine has %d", n))
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing:\n  - %s\nnothing was installed", strings.Join(missing, "\n  - "))
	}
	return nil
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + btoi(strings.HasPrefix(string(b), "processor"))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// prepare builds the binaries and writes the whitelist.
func prepare(ctx context.Context, o options, pool int) (*env, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "chihaya-bench-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	// opentracker drops its privileges (to nobody, when started as root) before it reads its
	// whitelist: the directory and the file must be readable by anyone.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	e := &env{o: o, dir: dir, root: root, whitelist: filepath.Join(dir, "whitelist.txt")}
	fmt.Fprintf(os.Stderr, "bench: building chihaya, loadgen and trivial into %s\n", dir)
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/chihaya", "./bench/cmd/loadgen", "./bench/cmd/trivial")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, out)
	}
	wl := exec.CommandContext(ctx, filepath.Join(dir, "loadgen"), "-whitelist", e.whitelist, "-torrents", strconv.Itoa(pool))
	if out, err := wl.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("write whitelist: %w\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(root, "example_config.json"))
	if err != nil {
		return nil, fmt.Errorf("read example config: %w", err)
	}
	if err := json.Unmarshal(raw, &e.exampleCf); err != nil {
		return nil, fmt.Errorf("parse example config: %w", err)
	}
	if e.certFile, e.keyFile, err = writeCert(dir); err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if o.chihayaKeys != "" {
		var extra map[string]any
		if err := json.Unmarshal([]byte(o.chihayaKeys), &extra); err != nil {
			return nil, fmt.Errorf("-chihaya-config: want a JSON object: %w", err)
		}
		for k, v := range extra {
			e.exampleCf[k] = v
		}
	}
	return e, nil
}

// repoRoot finds the module root from the working directory.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the chihaya repository")
	}
	return filepath.Dir(mod), nil
}

// freePort returns a port free for both TCP and UDP on 127.0.0.1.
func freePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return p, nil
		}
	}
	return 0, errors.New("free port: none free for both TCP and UDP")
}

// startTracker starts tracker t pinned to the tracker CPU and waits until it answers.
func (e *env) startTracker(ctx context.Context, t string) (*proc, string, error) {
	return e.startChihaya(ctx, t, nil)
}

// startChihaya is startTracker with keys laid over Chihaya's config (t is chihaya or
// chihaya-tls; keys must be nil for the other trackers). With "private_enabled", the readiness
// probe announces with user 0's passkey to torrent 0, which the private database registers.
func (e *env) startChihaya(ctx context.Context, t string, keys map[string]any) (*proc, string, error) {
	if keys != nil && t != chihaya && t != chihayaTLS {
		return nil, "", fmt.Errorf("config keys for %s: only Chihaya takes them", t)
	}
	probe := readyProbe{torrent: probeTorrent}
	if keys["private_enabled"] == true {
		k := loadgen.Passkey(0)
		probe = readyProbe{torrent: 0, passkey: k[:]}
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	e.starts++
	base := filepath.Join(e.dir, fmt.Sprintf("%s-%d", t, e.starts))
	var args []string
	var tlsAddr string
	if isTLS(t) {
		tlsPort, err := freePort()
		if err != nil {
			return nil, "", err
		}
		tlsAddr = fmt.Sprintf("127.0.0.1:%d", tlsPort)
	}
	switch t {
	case nginxOT:
		ot, _, err := e.startTracker(ctx, opentracker)
		if err != nil {
			return nil, "", err
		}
		conf := nginxConf(e.dir, base, tlsAddr, ot.target, e.certFile, e.keyFile)
		if err := os.WriteFile(base+".conf", []byte(conf), 0o644); err != nil {
			ot.stop()
			return nil, "", fmt.Errorf("nginx config: %w", err)
		}
		p, err := startPinned(e.o.trackerCPU, base+".log", e.dir, "nginx", "-e", base+".error.log", "-c", base+".conf")
		if err != nil {
			ot.stop()
			return nil, "", err
		}
		p.also = []*proc{ot}
		p.target = tlsAddr
		if err := waitReadyTLS(ctx, p, tlsAddr); err != nil {
			p.stop()
			return nil, "", fmt.Errorf("%w (log: %s)", err, tail(base+".error.log"))
		}
		return p, tlsAddr, nil
	case chihaya, chihayaTLS:
		over := map[string]any{"addr": addr, "udp_addr": addr}
		for k, v := range keys {
			over[k] = v
		}
		if t == chihayaTLS {
			over["tls_addr"], over["tls_cert_file"], over["tls_key_file"] = tlsAddr, e.certFile, e.keyFile
		}
		b, err := chihayaConfig(e.exampleCf, over)
		if err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(base+".json", b, 0o644); err != nil {
			return nil, "", fmt.Errorf("chihaya config: %w", err)
		}
		args = []string{filepath.Join(e.dir, "chihaya"), "-config", base + ".json"}
	case opentracker:
		cf := fmt.Sprintf("listen.tcp %s\nlisten.udp %s\naccess.whitelist %s\n", addr, addr, e.whitelist)
		if err := os.WriteFile(base+".conf", []byte(cf), 0o644); err != nil {
			return nil, "", fmt.Errorf("opentracker config: %w", err)
		}
		args = []string{e.o.opentracker, "-f", base + ".conf"}
	case trivial:
		args = []string{filepath.Join(e.dir, "trivial"), "-addr", addr}
	default:
		return nil, "", fmt.Errorf("unknown tracker %q", t)
	}
	p, err := startPinned(e.o.trackerCPU, base+".log", e.dir, args...)
	if err != nil {
		return nil, "", err
	}
	if err := waitReadyVia(ctx, p, addr, probe, probeHTTP); err != nil {
		p.stop()
		return nil, "", fmt.Errorf("%w (log: %s)", err, tail(base+".log"))
	}
	p.target = addr
	if tlsAddr != "" {
		if err := waitReadyTLS(ctx, p, tlsAddr); err != nil {
			p.stop()
			return nil, "", fmt.Errorf("%w (log: %s)", err, tail(base+".log"))
		}
		p.target = tlsAddr
	}
	return p, p.target, nil
}

// chihayaConfig returns Chihaya's config file: base (example_config.json with -chihaya-config
// laid over it) with the top-level keys of over replacing its own.
func chihayaConfig(base, over map[string]any) ([]byte, error) {
	cf := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		cf[k] = v
	}
	for k, v := range over {
		cf[k] = v
	}
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("chihaya config: %w", err)
	}
	return b, nil
}

// probeTorrent is the pool torrent the readiness probe announces to: the last of the whitelist,
// which the workloads' popularity all but never draws.
const probeTorrent = 999_999

// readyProbe is the announce of the readiness probe: to the pool's torrent, with passkey in the
// path when it is set (private mode).
type readyProbe struct {
	torrent int
	passkey []byte
}

// waitReadyTLS is waitReadyVia over TLS, with the public probe.
func waitReadyTLS(ctx context.Context, p *proc, addr string) error {
	return waitReadyVia(ctx, p, addr, readyProbe{torrent: probeTorrent}, probeTLS)
}

// waitReadyVia polls addr with an HTTP announce of a probe peer on a whitelisted torrent until
// the answer is a valid announce answer, then removes the probe peer with a stopped announce.
// opentracker refuses every torrent until it has read its whitelist (but answers stopped
// announces regardless, so the probe must be a regular one); Chihaya in private mode refuses
// every passkey until it has loaded the site.
func waitReadyVia(ctx context.Context, p *proc, addr string, rp readyProbe, probe func(string, []byte, *loadgen.ResponseReader) error) error {
	a := loadgen.AnnounceParams{InfoHash: loadgen.InfoHash(rp.torrent), PeerID: [20]byte{'-', 'P', 'R', 'O', 'B', 'E', '-'}, Port: 1, Passkey: rp.passkey}
	req := loadgen.AppendAnnounce(nil, addr, &a, true)
	rr := loadgen.NewResponseReader(loadgen.MaxResponse)
	var last error
	end := time.Now().Add(30 * time.Second)
	for time.Now().Before(end) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p.exited() {
			return errors.New("tracker exited at start")
		}
		last = probe(addr, req, rr)
		if last == nil {
			a.Event = "stopped"
			if err := probe(addr, loadgen.AppendAnnounce(nil, addr, &a, true), rr); err != nil {
				return fmt.Errorf("remove the probe peer: %w", err)
			}
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 30 s: %w", last)
}

// probeHTTP sends one announce over a new plain HTTP connection and checks the answer.
func probeHTTP(addr string, req []byte, rr *loadgen.ResponseReader) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return probeOn(c, req, rr)
}

// probeOn sends one announce on c, checks the answer and closes c.
func probeOn(c net.Conn, req []byte, rr *loadgen.ResponseReader) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	rr.Reset()
	var resp loadgen.Response
	if err := rr.Read(c, &resp); err != nil {
		return err
	}
	if v, reason := loadgen.CheckAnnounceBody(resp.Body); v != loadgen.OK {
		return fmt.Errorf("probe answer %s: %s", v, reason)
	}
	return nil
}

// row is one measurement.
type row struct {
	workload, tracker string
	round             int
	res               loadgen.Result
	cpuTicks          uint64 // tracker utime+stime over the window (all its processes)
	firstTicks        uint64 // the same, of its first process only (nginx in front of opentracker)
	genTicks          uint64 // generator utime+stime over the window
	rssKB             uint64 // tracker VmRSS at the end of the window
}

func (m row) cpuPer1000() float64 {
	if m.res.Responses == 0 {
		return 0
	}
	return float64(m.cpuTicks) / clockTick / float64(m.res.Responses) * 1000
}

func (m row) trackerUtil() float64 { return float64(m.cpuTicks) / clockTick / m.res.Seconds }
func (m row) genUtil() float64     { return float64(m.genTicks) / clockTick / m.res.Seconds }

// measure runs one round of workload w against a fresh tracker t.
func (e *env) measure(ctx context.Context, w workload, t string) (row, error) {
	p, addr, err := e.startTracker(ctx, t)
	if err != nil {
		return row{}, err
	}
	defer p.stop()
	if w.prefill {
		res, err := e.loadgen(ctx, nil, "-mode", "udp-fill", "-target", addr, "-fill-peers", strconv.Itoa(e.o.scrapePrefill),
			"-fill-torrents", strconv.Itoa(e.o.scrapePool), "-conns", strconv.Itoa(e.o.udpConns))
		if err != nil {
			return row{}, fmt.Errorf("prefill: %w", err)
		}
		if res.Errors > 0 {
			return row{}, fmt.Errorf("prefill: %d errors, first: %s", res.Errors, res.FirstError)
		}
	}
	m := row{workload: w.name, tracker: t}
	var c0, f0, g0 uint64
	args := append(slices.Clone(w.args), "-target", addr, "-marks",
		"-warmup", e.o.warmup.String(), "-duration", e.o.duration.String())
	if isTLS(t) && w.tls != "" {
		args = append(args, "-tls", w.tls)
	}
	res, err := e.loadgen(ctx, func(ev string, gen int) {
		switch ev {
		case "start":
			c0, f0, g0 = p.cpuTicks(), cpuTicks(p.pid()), cpuTicks(gen)
		case "end":
			m.cpuTicks, m.firstTicks, m.genTicks = p.cpuTicks()-c0, cpuTicks(p.pid())-f0, cpuTicks(gen)-g0
			m.rssKB = p.rssKB()
		}
	}, args...)
	if err != nil {
		return row{}, err
	}
	if p.exited() || slices.ContainsFunc(p.also, (*proc).exited) {
		return row{}, fmt.Errorf("tracker exited during the run (log: %s)", tail(p.log))
	}
	m.res = *res
	return m, nil
}

// loadgen runs the generator pinned to the generator CPU and returns its result. mark is called
// on each MARK line with the generator's pid.
func (e *env) loadgen(ctx context.Context, mark func(ev string, pid int), args ...string) (*loadgen.Result, error) {
	e.starts++
	logf := filepath.Join(e.dir, fmt.Sprintf("loadgen-%d.log", e.starts))
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", e.o.genCPU, filepath.Join(e.dir, "loadgen")}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	lf, err := os.Create(logf)
	if err != nil {
		return nil, fmt.Errorf("loadgen log: %w", err)
	}
	defer lf.Close()
	cmd.Stderr = lf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	p := procs.add(cmd, logf)
	defer procs.remove(p)
	var res *loadgen.Result
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if ev, ok := strings.CutPrefix(line, "MARK "); ok {
			if mark != nil {
				mark(ev, cmd.Process.Pid)
			}
			continue
		}
		var r loadgen.Result
		if err := json.Unmarshal([]byte(line), &r); err == nil {
			res = &r
		}
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("loadgen %s: %w (log: %s)", strings.Join(args, " "), err, tail(logf))
	}
	if res == nil {
		return nil, fmt.Errorf("loadgen printed no result (log: %s)", tail(logf))
	}
	return res, nil
}

// cpuTicks returns utime+stime of pid (all threads), in clock ticks, or 0 if it is gone.
func cpuTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st
}

// rssKB returns VmRSS of pid in kB, or 0 if it is gone.
func rssKB(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// proc is a process the bench started.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	once sync.Once
	// also are the processes that serve with it (opentracker behind nginx): measured with it,
	// stopped after it.
	also []*proc
	// target is the address the generator loads.
	target string
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// cpuTicks is the utime+stime of p and its companions.
func (p *proc) cpuTicks() uint64 {
	n := cpuTicks(p.pid())
	for _, a := range p.also {
		n += cpuTicks(a.pid())
	}
	return n
}

// rssKB is the VmRSS of p and its companions.
func (p *proc) rssKB() uint64 {
	n := rssKB(p.pid())
	for _, a := range p.also {
		n += rssKB(a.pid())
	}
	return n
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to 15 s, then SIGKILL.
func (p *proc) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		procs.remove(p)
		for _, a := range p.also {
			a.stop()
		}
	})
}

// registry holds every process started, so that an interrupt stops them all.
type registry struct {
	mu sync.Mutex
	ps map[*proc]bool
}

var procs = &registry{ps: map[*proc]bool{}}

func (r *registry) add(cmd *exec.Cmd, log string) *proc {
	p := &proc{cmd: cmd, log: log, done: make(chan struct{})}
	r.mu.Lock()
	r.ps[p] = true
	r.mu.Unlock()
	return p
}

func (r *registry) remove(p *proc) {
	r.mu.Lock()
	delete(r.ps, p)
	r.mu.Unlock()
}

func (r *registry) killAll() {
	r.mu.Lock()
	ps := make([]*proc, 0, len(r.ps))
	for p := range r.ps {
		ps = append(ps, p)
	}
	r.mu.Unlock()
	for _, p := range ps {
		_ = p.cmd.Process.Kill()
	}
}

// startPinned starts args under taskset -c cpu (taskset execs, so the pid is the program's),
// logging to logPath. The child is killed if the bench dies.
func startPinned(cpu, logPath, dir string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	cmd := exec.Command("taskset", append([]string{"-c", cpu}, args...)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	p := procs.add(cmd, logPath)
	go func() {
		_ = cmd.Wait()
		_ = lf.Close()
		close(p.done)
	}()
	return p, nil
}

// tail returns the last lines of a log file.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return path
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return path + ": " + strings.Join(lines, " | ")
}
