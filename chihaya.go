// Package chihaya wires Chihaya together: it loads the configuration, opens the registered
// tracker and backend drivers, and runs the HTTP frontend, the reaper and the stats goroutine
// until it is told to stop. A custom binary imports its own drivers and calls Boot:
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
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/backend"
	_ "github.com/chihaya/chihaya/backend/noop" // the default backend driver
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http"
	"github.com/chihaya/chihaya/stats"
	"github.com/chihaya/chihaya/tracker"
	_ "github.com/chihaya/chihaya/tracker/memory" // the default tracker driver
)

// DefaultConfig is example_config.json, embedded: the configuration Boot uses when -config is
// not given. It runs a public tracker on :6881 with the memory and noop drivers.
//
//go:embed example_config.json
var DefaultConfig []byte

// Boot is the whole main of a Chihaya binary. It parses the command line (-config PATH and
// glog's flags; logs go to standard error unless -logtostderr=false), starts the tracker, and
// on SIGINT or SIGTERM shuts it down gracefully. It exits the process with status 1 on error.
func Boot() {
	configPath := flag.String("config", "", "path to a JSON configuration file (default: the embedded example_config.json)")
	_ = flag.Set("logtostderr", "true")
	flag.Parse()
	defer glog.Flush()

	if err := boot(*configPath); err != nil {
		glog.Errorf("chihaya: %v", err)
		glog.Flush()
		os.Exit(1)
	}
}

func boot(configPath string) error {
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

	c, err := Start(cfg)
	if err != nil {
		return err
	}
	glog.Infof("chihaya: serving on %s (tracker %q, backend %q)", c.Addr(), cfg.Tracker.Name, cfg.Backend.Name)
	select {
	case <-ctx.Done():
		glog.Infof("chihaya: shutting down")
	case err := <-c.errc:
		glog.Errorf("chihaya: frontend stopped: %v", err)
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

// Chihaya is a running tracker.
type Chihaya struct {
	cfg     *config.Config
	ln      net.Listener
	pool    tracker.Pool
	backend backend.Conn
	http    *http.Server
	stats   *stats.Stats
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errc    chan error
	once    sync.Once
}

// Start opens the drivers that cfg names, listens on cfg.Addr and serves until Shutdown.
func Start(cfg *config.Config) (*Chihaya, error) {
	pool, err := tracker.Open(cfg.Tracker)
	if err != nil {
		return nil, err
	}
	be, err := backend.Open(cfg.Backend)
	if err != nil {
		pool.Close()
		return nil, err
	}
	st := stats.New(cfg)
	tkr, err := tracker.New(cfg, pool, be, st)
	if err == nil {
		var srv *http.Server
		if srv, err = http.NewServer(cfg, tkr); err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", cfg.Addr); err == nil {
				return run(cfg, ln, pool, be, st, tkr, srv), nil
			}
			err = fmt.Errorf("listen on %s: %w", cfg.Addr, err)
		}
	}
	_ = be.Close(context.Background())
	_ = pool.Close()
	return nil, err
}

func run(cfg *config.Config, ln net.Listener, pool tracker.Pool, be backend.Conn, st *stats.Stats, tkr *tracker.Tracker, srv *http.Server) *Chihaya {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Chihaya{cfg: cfg, ln: ln, pool: pool, backend: be, http: srv, stats: st, cancel: cancel, errc: make(chan error, 1)}
	c.wg.Add(3)
	go func() { defer c.wg.Done(); st.Run(ctx) }()
	go func() { defer c.wg.Done(); tkr.RunReaper(ctx) }()
	go func() {
		defer c.wg.Done()
		if err := srv.Serve(ln); err != nil {
			c.errc <- err
		}
	}()
	return c
}

// Addr returns the address the HTTP frontend listens on.
func (c *Chihaya) Addr() net.Addr { return c.ln.Addr() }

// Stats returns the running aggregator.
func (c *Chihaya) Stats() *stats.Stats { return c.stats }

// Shutdown stops accepting requests, waits for those in flight, stops the reaper and the stats
// goroutine, and closes the drivers so that a backend can flush, all within ctx.
func (c *Chihaya) Shutdown(ctx context.Context) error {
	var errs []error
	c.once.Do(func() {
		if err := c.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		c.cancel()
		c.wg.Wait()
		if err := c.pool.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close tracker driver: %w", err))
		}
		if err := c.backend.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close backend driver: %w", err))
		}
	})
	return errors.Join(errs...)
}
