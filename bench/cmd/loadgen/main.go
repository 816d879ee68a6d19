// Command loadgen loads a BitTorrent tracker on loopback over HTTP or UDP and prints what it
// measured as one JSON object on standard output. bench/cmd/bench drives it; see bench/README.md.
//
//	loadgen -mode http-announce -target 127.0.0.1:6881 -keepalive -duration 5s
//	loadgen -mode udp -target 127.0.0.1:6881 -conns 256
//	loadgen -mode udp-open -target 127.0.0.1:6881 -rate 40000
//	loadgen -whitelist /tmp/wl.txt -torrents 1000000
//
// With -marks it prints "MARK start" and "MARK end" lines around the measured window, so that
// a driver can sample the tracker's CPU time right at its edges.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/chihaya/chihaya/bench/loadgen"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	var c loadgen.Config
	flag.StringVar(&c.Mode, "mode", loadgen.ModeHTTPAnnounce, "http-announce, http-scrape, udp, udp-open, udp-fill, http-fill, udp-verify or http-verify")
	flag.StringVar(&c.Target, "target", "127.0.0.1:6881", "tracker address (host:port)")
	flag.BoolVar(&c.KeepAlive, "keepalive", false, "HTTP: keep connections open (default: one connection per request)")
	flag.StringVar(&c.TLS, "tls", "", `HTTP: "full" for HTTPS with a full handshake per connection, "resume" to resume sessions (default: plain HTTP)`)
	flag.IntVar(&c.Conns, "conns", 64, "HTTP: connections; UDP: requests in flight over all sockets")
	flag.IntVar(&c.Sockets, "sockets", 32, "UDP: sockets, one per source address 127.0.0.2...")
	flag.IntVar(&c.Torrents, "torrents", 1_000_000, "torrents in the pool")
	flag.IntVar(&c.Peers, "peers", 2_000_000, "distinct simulated peers")
	flag.IntVar(&c.NumWant, "numwant", 30, "numwant of announces")
	flag.IntVar(&c.ScrapeHashes, "scrape-hashes", 1, "HTTP scrape: hashes per request")
	flag.DurationVar(&c.Warmup, "warmup", 1e9, "unmeasured warm-up")
	flag.DurationVar(&c.Duration, "duration", 5e9, "measured window")
	flag.DurationVar(&c.Timeout, "timeout", 2e9, "per-request timeout")
	flag.IntVar(&c.FillPeers, "fill-peers", 1_000_000, "fills and verifies: peers announced once each")
	flag.IntVar(&c.FillTorrents, "fill-torrents", 100_000, "fills and verifies: the j-th peer goes to torrent j % fill-torrents")
	flag.IntVar(&c.FillOffset, "fill-offset", 0, "fills: the first peer (peer ID, port) announced; a fill at offset N after one of N peers replaces each of them")
	flag.BoolVar(&c.FillPopular, "fill-popular", false, "udp-fill: draw each peer's torrent from the pool's popularity instead")
	flag.IntVar(&c.VerifySample, "verify-sample", 2000, "udp-verify, http-verify: torrents scraped")
	flag.IntVar(&c.PrivateUsers, "private-users", 0, "http-fill, http-verify: announce and scrape with the passkeys of this many users (private mode)")
	flag.Float64Var(&c.Rate, "rate", 0, "udp-open: requests offered per second")
	whitelist := flag.String("whitelist", "", "write the first -torrents hashes of the pool to this file (hex, one a line) and exit")
	marks := flag.Bool("marks", false, "print MARK start / MARK end around the measured window")
	flag.Parse()

	if *whitelist != "" {
		f, err := os.Create(*whitelist)
		if err != nil {
			return fmt.Errorf("whitelist: %w", err)
		}
		if err := loadgen.WriteWhitelist(f, c.Torrents); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("whitelist: %w", err)
		}
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var mark loadgen.Marker
	if *marks {
		mark = func(ev string) { fmt.Printf("MARK %s\n", ev) }
	}
	res, err := loadgen.Run(ctx, c, mark)
	if err != nil {
		return err
	}
	out, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	fmt.Println(string(out))
	return nil
}
