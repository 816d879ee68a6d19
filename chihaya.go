// Package chihaya wires Chihaya together: it loads the configuration, opens the registered
// tracker and backend drivers, and runs the HTTP and UDP frontends, the reaper and the stats
// goroutine until it is told to stop. A custom binary imports its own drivers and calls Boot:
//
//	package main
//
//	import (
//		"github.com/chihaya/chihaya"
//		_ "github.com/yourname/chihaya-mybackend" // registers "mybackend"
//	)
//
//	func main() { chihaya.Boot() }
package chihaya

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"net"
	nethttp "net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/golang/glog"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/admin"
	"github.com/chihaya/chihaya/backend"
	_ "github.com/chihaya/chihaya/backend/gazelle" // the Gazelle backend driver (private mode)
	_ "github.com/chihaya/chihaya/backend/noop"    // the default backend driver
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http"
	"github.com/chihaya/chihaya/http/tlscert"
	"github.com/chihaya/chihaya/ratelimit"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/tracker/memory"  // the default tracker driver
	_ "github.com/chihaya/chihaya/tracker/redis" // swarms shared by several instances
	"github.com/chihaya/chihaya/udp"
	"github.com/chihaya/chihaya/ws"
)

// DefaultConfig is example_config.json, embedded: the configuration Boot uses when -config is
// not given. It runs a public tracker on :6881 with the memory and noop drivers.
//
//go:embed example_config.json
var DefaultConfig []byte

// Boot is the whole main of a Chihaya binary. It parses the command line (-config PATH,
// -pidfile PATH and glog's flags; logs go to standard error unless -logtostderr=false), starts
// the tracker, and on SIGINT or SIGTERM shuts it down gracefully. On SIGUSR2 it hands the
// listening sockets and the swarms to a new process started from the binary's path with the
// same arguments, and exits once that one serves (see upgrade.go). It exits the process with
// status 1 on error. With -version it prints the binary's version on one line and exits 0.
func Boot() {
	configPath := flag.String("config", "", "path to a JSON configuration file (default: the embedded example_config.json)")
	pidFile := flag.String("pidfile", "", "write the PID of the serving process to this file once it is ready, and again after each upgrade (SIGUSR2)")
	showVersion := flag.Bool("version", false, "print the version (module, VCS revision and time, Go version) and exit")
	_ = flag.Set("logtostderr", "true")
	flag.Parse()
	if *showVersion {
		fmt.Println(versionLine(buildInfo()))
		os.Exit(0)
	}
	defer glog.Flush()

	if err := boot(*configPath, *pidFile); err != nil {
		glog.Errorf("chihaya: %v", err)
		glog.Flush()
		os.Exit(1)
	}
}

func boot(configPath, pidFile string) error {
	var (
		cfg *config.Config
		err error
	)
	if configPath == "" {
		cfg, err = config.Parse(DefaultConfig, "example_config.json (embedded)")
	} else {
		cfg, err = config.Load(configPath)
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	before, limit, err := raiseFileLimit()
	switch {
	case err != nil:
		glog.Warningf("chihaya: %v", err)
	case before.soft != limit.soft:
		glog.Infof("chihaya: open files limit: soft %d (raised from %d), hard %d", limit.soft, before.soft, limit.hard)
	default:
		glog.Infof("chihaya: open files limit: soft %d, hard %d", limit.soft, limit.hard)
	}

	// The upgrader hands the listening sockets to the process SIGUSR2 starts, and takes them
	// from the process this one replaces.
	upg, err := tableflip.New(tableflip.Options{PIDFile: pidFile, UpgradeTimeout: upgradeTimeout})
	if err != nil {
		return fmt.Errorf("upgrader: %w", err)
	}
	defer upg.Stop()
	if upg.HasParent() {
		glog.Infof("chihaya: started by an upgrade (SIGUSR2) of the process %d: taking over its sockets", os.Getppid())
	}
	c, err := start(cfg, listeners{upg: upg})
	if err != nil {
		return err
	}
	if err := upg.Ready(); err != nil {
		_ = c.Shutdown(context.Background())
		return err
	}
	if err := notifyReady(); err != nil {
		glog.Warningf("chihaya: %v", err)
	}
	c.reloadMu.Lock()
	c.configPath = configPath // read again on SIGHUP
	c.reloadMu.Unlock()
	maxConns, perIP := c.http.ConnectionLimits()
	how := "configured"
	if cfg.MaxConnections == 0 {
		how = "derived from the open files limit"
	}
	glog.Infof("chihaya: max_connections %d (%s), max_connections_per_ip %d", maxConns, how, perIP)
	if cfg.MaxConnections > 0 && limit.soft > 0 && uint64(maxConns)+64 > limit.soft {
		glog.Warningf("chihaya: max_connections %d leaves less than 64 of the open files limit %d for listeners, drivers and closing connections: the tracker may run out of descriptors before the budget is reached", maxConns, limit.soft)
	}
	glog.Infof("chihaya: serving %s (tracker %q, backend %q)", c.listening(), cfg.Tracker.Name, cfg.Backend.Name)
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGUSR1)
	defer signal.Stop(reload)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	upgraded := make(chan error, 1)
	upgrading := false
wait:
	for {
		select {
		case <-usr2:
			if upgrading {
				glog.Infof("chihaya: SIGUSR2 ignored: an upgrade is under way")
				continue
			}
			upgrading = true
			glog.Infof("chihaya: SIGUSR2: upgrading: starting a new process from %s", os.Args[0])
			go func() { upgraded <- c.upgrade(ctx, upg) }()
		case err := <-upgraded:
			upgrading = false
			if err != nil {
				c.upgrades.WithLabelValues("failed").Inc()
				glog.Errorf("chihaya: upgrade failed, this process (%d) goes on serving: %v", os.Getpid(), err)
				continue
			}
			c.upgrades.WithLabelValues("succeeded").Inc()
			c.handedOver.Store(true)
			glog.Infof("chihaya: upgrade: the new process is ready; this one (%d) stops accepting, answers what it holds and exits", os.Getpid())
			break wait
		case <-ctx.Done():
			glog.Infof("chihaya: shutting down")
			break wait
		case err := <-c.errc:
			glog.Errorf("chihaya: frontend stopped: %v", err)
			break wait
		case <-hup:
			if _, err := c.ReloadOperator(ctx); err != nil {
				glog.Errorf("chihaya: SIGHUP: %v", err)
			}
		case <-reload:
			if !cfg.PrivateEnabled {
				glog.Infof("chihaya: SIGUSR1 ignored: public mode has no site to reload")
				continue
			}
			if err := c.Reload(ctx); err != nil {
				glog.Errorf("chihaya: reload: %v", err)
			}
		}
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	if err := c.Shutdown(sctx); err != nil {
		return err
	}
	glog.Infof("chihaya: stopped")
	return nil
}

// metricsCollector is an optional capability of a tracker or backend driver: metrics of its
// own, served with the tracker's.
type metricsCollector interface {
	Collectors() []prometheus.Collector
}

type multiCollector []prometheus.Collector

func (m multiCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m {
		c.Describe(ch)
	}
}

func (m multiCollector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m {
		c.Collect(ch)
	}
}

// Reload loads the site's users, torrents, tokens and whitelist from the backend into the
// tracker driver (private mode; also on SIGUSR1). Announces are answered throughout.
func (c *Chihaya) Reload(ctx context.Context) error {
	loader, ok := c.backend.(backend.SiteLoader)
	if !ok {
		return &config.KeyError{Key: "backend.driver", Err: fmt.Errorf("%q cannot load a site's users and torrents, which private mode needs (use \"gazelle\")", c.cfg.Backend.Name)}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	st, err := loader.Load(ctx)
	if err != nil {
		return fmt.Errorf("load site: %w", err)
	}
	if err := c.tkr.ReplaceSite(ctx, st); err != nil {
		return err
	}
	c.siteLoaded.Store(true)
	glog.Infof("chihaya: loaded %d users, %d torrents, %d tokens, %d whitelist prefixes and %d baselines in %s",
		len(st.Users), len(st.Torrents), len(st.Tokens), len(st.Whitelist), len(st.Baselines), time.Since(start).Round(time.Millisecond))
	return nil
}

// redisPool is the redis driver's pool as the WebSocket tracker's relay needs it.
type redisPool interface {
	Client() goredis.UniversalClient
	KeyPrefix() string
}

// Chihaya is a running tracker.
type Chihaya struct {
	tkr       *tracker.Tracker
	cfg       *config.Config
	ln        net.Listener
	tlsLn     net.Listener
	certs     *tlscert.Store
	statsLn   net.Listener
	pool      tracker.Pool
	backend   backend.Conn
	http      *http.Server
	udp       *udp.Server
	ws        *ws.Server
	udpConn   *net.UDPConn
	statsHTTP *nethttp.Server
	stats     *stats.Stats
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	errc      chan error
	once      sync.Once
	handedOver
	deltaOut *deltaPipe // the pipe the new process reads the swarms' last changes from, after an upgrade
	upgrades *prometheus.CounterVec
	operatorState
}

// Start opens the drivers that cfg names, listens on cfg.Addr (and cfg.UDPAddr and
// cfg.StatsAddr, when set) and serves until Shutdown.
func Start(cfg *config.Config) (*Chihaya, error) {
	return start(cfg, listeners{})
}

func start(cfg *config.Config, lis listeners) (_ *Chihaya, err error) {
	c := &Chihaya{cfg: cfg, errc: make(chan error, 4), upgrades: newUpgradeCounter()}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	defer func() {
		if err != nil {
			c.closeAll()
		}
	}()
	if err := c.openCerts(); err != nil {
		return nil, err
	}
	if c.pool, err = tracker.Open(cfg.Tracker); err != nil {
		return nil, err
	}
	if c.backend, err = backend.Open(cfg.Backend); err != nil {
		return nil, err
	}
	if bk, ok := c.backend.(backend.BaselineKeeper); ok {
		bk.KeepBaselines(cfg.BaselineLifetime.Duration)
	}
	var observer tracker.Observer
	var opts []http.Option
	if limit, err := readFileLimit(); err == nil {
		opts = append(opts, http.WithFileLimit(limit.soft))
	}
	var udpOpts []udp.Option
	if q, ok := c.backend.(http.QueueReporter); ok {
		opts = append(opts, http.WithQueues(q))
	}
	if cfg.StatsEnabled {
		c.stats = stats.New(cfg, nil)
		observer = c.stats
		opts = append(opts, http.WithRecorder(c.stats), http.WithReportStats(c.stats))
		udpOpts = append(udpOpts, udp.WithRecorder(c.stats))
	}
	tkr, err := tracker.New(cfg, c.pool, c.backend, observer)
	if err != nil {
		return nil, err
	}
	// One limiter for both frontends: an address's budget is the same over HTTP and UDP.
	var reg prometheus.Registerer
	if c.stats != nil {
		reg = c.stats.Registry()
	}
	rl := cfg.RateLimit
	announceRate, scrapeRate := limiterRates(&rl)
	limiter, err := ratelimit.New(ratelimit.Config{
		Announce:   announceRate,
		Scrape:     scrapeRate,
		IPv4Prefix: rl.IPv4Prefix,
		IPv6Prefix: rl.IPv6Prefix,
		Slots:      rl.TableSize,
	}, reg)
	if err != nil {
		return nil, fmt.Errorf("rate limiter: %w", err)
	}
	c.limiter = limiter
	applyVerbosity(cfg.LogVerbosity)
	opts = append(opts, http.WithLimiter(limiter))
	udpOpts = append(udpOpts, udp.WithLimiter(limiter))
	c.tkr = tkr
	if cfg.WSEnabled {
		wsOpts := []ws.Option{ws.WithLimiter(limiter)}
		if c.stats != nil {
			wsOpts = append(wsOpts, ws.WithRecorder(c.stats))
		}
		if rp, ok := c.pool.(redisPool); ok {
			// Instances that share swarms in Redis relay offers and answers through it.
			wsOpts = append(wsOpts, ws.WithRedis(rp.Client(), rp.KeyPrefix()))
		}
		if c.ws, err = ws.New(cfg, tkr, wsOpts...); err != nil {
			return nil, err
		}
		opts = append(opts, http.WithWebSocket(c.ws))
	}
	if c.http, err = http.NewServer(cfg, tkr, opts...); err != nil {
		return nil, err
	}
	if cfg.UDPAddr != "" {
		key, ok, err := lis.connIDKey()
		if err != nil {
			return nil, err
		}
		if ok {
			udpOpts = append(udpOpts, udp.WithConnectionIDKey(key))
		}
		if c.udp, err = udp.NewServer(cfg, tkr, udpOpts...); err != nil {
			return nil, err
		}
	}
	if cfg.PrivateEnabled {
		if err := c.Reload(context.Background()); err != nil {
			return nil, err
		}
	}
	deltaIn, err := c.expectDelta(lis)
	if err != nil {
		return nil, err
	}
	c.restoreSnapshot()
	// After the restore, so that the list's first load drops the swarms it refuses.
	if err := c.openAccessList(); err != nil {
		return nil, err
	}
	if c.stats != nil {
		c.stats.SetSwarm(tkr)
		if mc, ok := c.backend.(metricsCollector); ok {
			if err := c.stats.Registry().Register(multiCollector(mc.Collectors())); err != nil {
				return nil, fmt.Errorf("register backend metrics: %w", err)
			}
		}
		if mc, ok := c.pool.(metricsCollector); ok {
			if err := c.stats.Registry().Register(multiCollector(mc.Collectors())); err != nil {
				return nil, fmt.Errorf("register tracker driver metrics: %w", err)
			}
		}
		if err := c.stats.Registry().Register(c.upgrades); err != nil {
			return nil, fmt.Errorf("register upgrade metrics: %w", err)
		}
		if err := c.stats.Registry().Register(multiCollector(c.http.Collectors())); err != nil {
			return nil, fmt.Errorf("register http metrics: %w", err)
		}
		if c.udp != nil {
			if err := c.stats.Registry().Register(multiCollector(c.udp.Collectors())); err != nil {
				return nil, fmt.Errorf("register udp metrics: %w", err)
			}
		}
		if c.ws != nil {
			if err := c.stats.Registry().Register(multiCollector(c.ws.Collectors())); err != nil {
				return nil, fmt.Errorf("register websocket metrics: %w", err)
			}
		}
	}
	api, healthz, readyz := c.operatorHandlers()
	c.http.Handle("healthz", healthz)
	c.http.Handle("readyz", readyz)
	if c.stats != nil {
		if cfg.StatsAddr == "" {
			c.http.Handle("stats", c.stats.JSONHandler())
			c.http.Handle("metrics", c.stats.MetricsHandler())
		} else {
			mux := nethttp.NewServeMux()
			mux.Handle("/", c.stats.Mux(cfg.PprofEnabled))
			mux.Handle("/healthz", healthz)
			mux.Handle("/readyz", readyz)
			if api != nil {
				mux.Handle(admin.Prefix, api)
				api = nil // served here, not on addr
			}
			c.statsHTTP = &nethttp.Server{
				Handler:           mux,
				ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout.Duration,
				IdleTimeout:       cfg.HTTPIdleTimeout.Duration,
			}
			if c.statsLn, err = lis.tcp(cfg.StatsAddr); err != nil {
				return nil, fmt.Errorf("listen on stats_addr %s: %w", cfg.StatsAddr, err)
			}
		}
	}
	if api != nil {
		c.http.HandlePrefix(admin.Prefix, api)
	}
	if cfg.Addr != "" {
		if c.ln, err = lis.tcp(cfg.Addr); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
		}
	}
	if err := c.listenTLS(lis); err != nil {
		return nil, err
	}
	if c.udp != nil {
		if c.udpConn, err = lis.udp(cfg.UDPAddr); err != nil {
			return nil, fmt.Errorf("listen on udp_addr %s: %w", cfg.UDPAddr, err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if c.stats != nil {
		c.goRun(func() { c.stats.Run(ctx) })
	}
	c.goRun(func() { tkr.RunReaper(ctx) })
	if sn, ok := c.pool.(snapshotter); ok {
		c.goRun(func() { sn.RunSnapshots(ctx) })
	}
	if deltaIn != nil {
		c.goRun(func() { c.mergeDelta(ctx, deltaIn) })
	}
	if err := c.watchAccessList(ctx); err != nil {
		glog.Warningf("chihaya: %v; the list is read again only on SIGHUP and POST /admin/reload", err)
	}
	if d := cfg.MemoryTrimInterval.Duration; d > 0 {
		c.goRun(func() { trimMemory(ctx, d) })
	}
	if mb := cfg.GCMinGrowthMB; mb > 0 && os.Getenv("GOGC") == "" {
		c.goRun(func() { paceGC(ctx, cfg.GCPercent, uint64(mb)<<20, time.Second) })
	}
	c.watchCerts(ctx)
	if c.ln != nil {
		c.goRun(func() {
			if err := c.http.Serve(c.ln); err != nil {
				c.errc <- err
			}
		})
	}
	c.serveTLS()
	if c.udp != nil {
		c.goRun(func() {
			if err := c.udp.Serve(c.udpConn); err != nil {
				c.errc <- err
			}
		})
	}
	if c.statsHTTP != nil {
		c.goRun(func() {
			if err := c.statsHTTP.Serve(c.statsLn); err != nil && !errors.Is(err, nethttp.ErrServerClosed) {
				c.errc <- fmt.Errorf("stats listener: %w", err)
			}
		})
	}
	return c, nil
}

func (c *Chihaya) goRun(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// closeAll releases what a failed Start had opened.
func (c *Chihaya) closeAll() {
	if c.statsLn != nil {
		_ = c.statsLn.Close()
	}
	if c.ln != nil {
		_ = c.ln.Close()
	}
	if c.tlsLn != nil {
		_ = c.tlsLn.Close()
	}
	if c.udpConn != nil {
		_ = c.udpConn.Close()
	}
	if c.backend != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout.Duration)
		defer cancel()
		_ = c.backend.Close(ctx)
	}
	if c.pool != nil {
		_ = c.pool.Close()
	}
}

// Addr returns the address the HTTP frontend listens on, or nil when addr is empty (HTTPS only).
func (c *Chihaya) Addr() net.Addr {
	if c.ln == nil {
		return nil
	}
	return c.ln.Addr()
}

// UDPAddr returns the address the UDP frontend listens on, or nil when udp_addr is empty.
func (c *Chihaya) UDPAddr() net.Addr {
	if c.udpConn == nil {
		return nil
	}
	return c.udpConn.LocalAddr()
}

// StatsAddr returns the address of the separate stats listener, or nil when stats are served on
// the tracker's own listener or not at all.
func (c *Chihaya) StatsAddr() net.Addr {
	if c.statsLn == nil {
		return nil
	}
	return c.statsLn.Addr()
}

// Stats returns the running aggregator, or nil when stats_enabled is off.
func (c *Chihaya) Stats() *stats.Stats { return c.stats }

// Shutdown stops accepting requests, waits for those in flight, stops the reaper and the stats
// goroutine, and closes the drivers so that a backend can flush, all within ctx.
func (c *Chihaya) Shutdown(ctx context.Context) error {
	var errs []error
	c.once.Do(func() {
		if c.udp != nil {
			// Closing the socket stops the readers; each answers the batch it holds.
			if err := c.udp.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("udp shutdown: %w", err))
			}
		}
		if c.ws != nil {
			// net/http's Shutdown leaves hijacked connections alone: the sockets close here,
			// and their peers leave their swarms while the driver is still open.
			if err := c.ws.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("websocket shutdown: %w", err))
			}
		}
		if err := c.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		if c.statsHTTP != nil {
			if err := c.statsHTTP.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stats listener shutdown: %w", err))
			}
		}
		c.cancel()
		c.wg.Wait()
		// Every request has been answered: the final snapshot holds all of them. After an
		// upgrade the new process owns the snapshot.
		if !c.handedOver.Load() {
			if err := c.writeSnapshot(ctx); err != nil {
				errs = append(errs, err)
			}
		} else if err := c.writeDelta(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := c.pool.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close tracker driver: %w", err))
		}
		if err := c.backend.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close backend driver: %w", err))
		}
	})
	return errors.Join(errs...)
}

// snapshotter is an optional capability of a tracker driver: swarms saved to a file and read
// back at start (the memory driver's snapshot_path).
type snapshotter interface {
	SnapshotPath() string
	Restore(ctx context.Context, cutoff time.Time, registeredOnly bool) (memory.RestoreResult, error)
	RunSnapshots(ctx context.Context)
	WriteSnapshot(ctx context.Context) (int64, error)
}

// restoreSnapshot loads the driver's snapshot, if it keeps one, before anything is served. A
// bad file is logged and moved aside by the driver, and the tracker starts empty.
func (c *Chihaya) restoreSnapshot() {
	sn, ok := c.pool.(snapshotter)
	if !ok || sn.SnapshotPath() == "" {
		return
	}
	start := time.Now()
	cutoff := start.Add(-c.cfg.PeerTimeout.Duration)
	r, err := sn.Restore(context.Background(), cutoff, c.cfg.PrivateEnabled)
	if err != nil {
		glog.Errorf("chihaya: %v", err)
		return
	}
	if r.Taken.IsZero() {
		glog.Infof("chihaya: no snapshot at %s: starting empty", sn.SnapshotPath())
		return
	}
	glog.Infof("chihaya: restored %d peers of %d torrents from snapshot %s (%d bytes, written %s ago) in %s; dropped %d stale, %d skipped",
		r.Peers, r.Torrents, sn.SnapshotPath(), r.Bytes, start.Sub(r.Taken).Round(time.Second), time.Since(start).Round(time.Millisecond), r.Stale, r.Skipped)
}

// writeSnapshot writes the driver's snapshot now, if it keeps one.
func (c *Chihaya) writeSnapshot(ctx context.Context) error {
	sn, ok := c.pool.(snapshotter)
	if !ok || sn.SnapshotPath() == "" {
		return nil
	}
	start := time.Now()
	n, err := sn.WriteSnapshot(ctx)
	if err != nil {
		return fmt.Errorf("final snapshot: %w", err)
	}
	glog.Infof("chihaya: snapshot %s written: %d bytes in %s", sn.SnapshotPath(), n, time.Since(start).Round(time.Millisecond))
	return nil
}
