//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chihaya/chihaya/http/tlscert/tlscerttest"
)

const (
	// buildTimeout bounds the building of the tracker binary (from the cache that building
	// the test filled, it takes a few seconds).
	buildTimeout = 60 * time.Second
	// swarmTimeout bounds one run of the swarm (one scheme) up to the stopping of its
	// processes; a run takes some 20 s (transmission-cli is the slowest leecher). Stopping
	// them takes at most stopGrace each, so a run stays within two minutes and the whole test
	// within five.
	swarmTimeout = 75 * time.Second
	// stopGrace is how long a process gets between SIGTERM and SIGKILL.
	stopGrace = 5 * time.Second
	// payloadSize is deliberately not a multiple of the piece size, so the last piece is short.
	payloadSize = 4<<20 + 12345
	// payloadName is the payload's file name, and so the torrent's name.
	payloadName = "payload.bin"
	// systemPython is Debian's interpreter, the one python3-libtorrent installs into. The
	// python3 first on PATH may be another (pyenv, a virtualenv) without libtorrent.
	systemPython = "/usr/bin/python3"
	// logTailLines is how much of each log a failure prints.
	logTailLines = 40
)

// installHint tells how to get the clients.
const installHint = "run `bash .ci/run`, or: apt-get install python3-libtorrent aria2 transmission-cli rtorrent mktorrent nodejs npm" +
	" && npm install --ignore-scripts --no-save --prefix cmd/chihaya/testdata/webtorrent"

// clientKind is one BitTorrent client implementation the swarm can run.
type clientKind struct {
	name string
	// tools are the executables it needs.
	tools []string
	// probe, if set, checks more than the tools' presence.
	probe func(ctx context.Context) error
	// command returns the command line that runs c until it is killed: seeding from c.dir if
	// c.seed, else downloading into c.dir and then seeding. It may write config files.
	command func(s *swarm, c *client) ([]string, error)
}

// clientKinds are the implementations, by name.
var clientKinds = map[string]*clientKind{
	"libtorrent": {
		name:  "libtorrent",
		tools: []string{systemPython},
		probe: func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, systemPython, "-c", "import libtorrent; print(libtorrent.__version__)")
			cmd.Env = pythonEnv()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s cannot import libtorrent (apt-get install python3-libtorrent): %v: %s", systemPython, err, bytes.TrimSpace(out))
			}
			return nil
		},
		command: func(s *swarm, c *client) ([]string, error) {
			script, err := filepath.Abs(filepath.Join("testdata", "ltclient.py"))
			if err != nil {
				return nil, err
			}
			argv := []string{systemPython, "-u", script,
				"--torrent", s.torrent, "--save", c.dir, "--port", strconv.Itoa(c.port)}
			if c.seed {
				argv = append(argv, "--seed")
			}
			return argv, nil
		},
	},
	"aria2": {
		name:  "aria2",
		tools: []string{"aria2c"},
		command: func(s *swarm, c *client) ([]string, error) {
			argv := []string{"aria2c",
				"--no-conf=true",
				"--dir=" + c.dir,
				"--listen-port=" + strconv.Itoa(c.port),
				"--interface=127.0.0.1",
				"--disable-ipv6=true",
				"--enable-dht6=false",
				"--bt-enable-lpd=false",
				"--enable-peer-exchange=false",
				"--seed-ratio=0.0", // seed until killed
				"--bt-save-metadata=false",
				"--file-allocation=none",
				"--auto-save-interval=0",
				"--check-integrity=" + strconv.FormatBool(c.seed),
				"--stop-with-process=" + strconv.Itoa(os.Getpid()),
				"--summary-interval=0",
				"--show-console-readout=false",
				"--console-log-level=warn",
				"--log=-",
				"--log-level=info",
			}
			if s.scheme == "udp" {
				// aria2 announces to UDP trackers from its DHT socket, which only DHT opens;
				// the torrent is private, so DHT is not used to find its peers.
				argv = append(argv, "--enable-dht=true", "--dht-listen-port="+strconv.Itoa(c.udpPort),
					"--dht-file-path="+filepath.Join(c.home, "dht.dat"))
			} else {
				argv = append(argv, "--enable-dht=false")
			}
			if s.caFile != "" {
				argv = append(argv, "--ca-certificate="+s.caFile)
			}
			return append(argv, s.torrent), nil
		},
	},
	"transmission": {
		name:  "transmission",
		tools: []string{"transmission-cli"},
		// transmission-cli 3.00 keeps one peer per IP address and drops further connections
		// from that address, so on loopback it trades with one peer at a time; it completes,
		// only more slowly than the others (some 15 s for 4 MiB).
		command: func(s *swarm, c *client) ([]string, error) {
			cfgDir := filepath.Join(c.home, "transmission")
			if err := os.MkdirAll(cfgDir, 0o755); err != nil {
				return nil, err
			}
			settings := map[string]any{
				"bind-address-ipv4":          "127.0.0.1",
				"bind-address-ipv6":          "::1",
				"dht-enabled":                false,
				"lpd-enabled":                false,
				"pex-enabled":                false,
				"utp-enabled":                false,
				"port-forwarding-enabled":    false,
				"rpc-enabled":                false,
				"blocklist-enabled":          false,
				"peer-port":                  c.port,
				"peer-port-random-on-start":  false,
				"download-dir":               c.dir,
				"incomplete-dir-enabled":     false,
				"ratio-limit-enabled":        false,
				"idle-seeding-limit-enabled": false,
				"speed-limit-up-enabled":     false,
				"speed-limit-down-enabled":   false,
				"download-queue-enabled":     false,
				"seed-queue-enabled":         false,
				"message-level":              3, // announces and peers, without wire-level noise
			}
			data, err := json.MarshalIndent(settings, "", "  ")
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(cfgDir, "settings.json"), data, 0o644); err != nil {
				return nil, err
			}
			return []string{"transmission-cli", "--config-dir", cfgDir, "--download-dir", c.dir,
				"--port", strconv.Itoa(c.port), "--no-portmap", "--no-uplimit", "--no-downlimit", s.torrent}, nil
		},
	},
	"rtorrent": {
		name:  "rtorrent",
		tools: []string{"rtorrent"},
		command: func(s *swarm, c *client) ([]string, error) {
			session := filepath.Join(c.home, "session")
			if err := os.MkdirAll(session, 0o755); err != nil {
				return nil, err
			}
			logFile := filepath.Join(c.home, "rtorrent.log")
			c.logs = append(c.logs, logFile)
			// rtorrent reads $HOME/.rtorrent.rc (HOME is c.home), then loads and starts the
			// torrent given on its command line.
			rc := strings.Join([]string{
				"system.daemon.set = true", // no terminal UI; runs in the foreground until SIGTERM
				"session.path.set = " + strconv.Quote(session),
				"directory.default.set = " + strconv.Quote(c.dir),
				"network.bind_address.set = 127.0.0.1",
				"network.port_range.set = " + strconv.Itoa(c.port) + "-" + strconv.Itoa(c.port),
				"network.port_random.set = no",
				// Only the tracker may introduce peers (rtorrent has no LSD or UPnP).
				"dht.mode.set = disable",
				"protocol.pex.set = no",
				"trackers.use_udp.set = yes",
				// Without this, rtorrent checks the whole file again when the last piece
				// arrives and announces left=0 without a completed event.
				"pieces.hash.on_completion.set = no",
				"log.open_file = main, " + strconv.Quote(logFile),
				"log.add_output = info, main",
				"log.add_output = tracker_debug, main",
			}, "\n") + "\n"
			if s.caFile != "" {
				rc += "network.http.cacert.set = " + strconv.Quote(s.caFile) + "\n"
			}
			if err := os.WriteFile(filepath.Join(c.home, ".rtorrent.rc"), []byte(rc), 0o644); err != nil {
				return nil, err
			}
			return []string{"rtorrent", s.torrent}, nil
		},
	},
	"webtorrent": {
		name:  "webtorrent",
		tools: []string{"node"},
		probe: func(ctx context.Context) error {
			script, err := filepath.Abs(filepath.Join("testdata", "webtorrent", "wtclient.mjs"))
			if err != nil {
				return err
			}
			out, err := exec.CommandContext(ctx, "node", script, "--version").CombinedOutput()
			if err != nil {
				return fmt.Errorf("webtorrent-cli (node testdata/webtorrent/wtclient.mjs --version: %v: %s)", err, lastLine(out))
			}
			return nil
		},
		// webtorrent-cli has no flags that turn DHT, LSD, PEX and UPnP/NAT-PMP off, so
		// testdata/webtorrent/wtclient.mjs runs its WebTorrent library with them off.
		command: func(s *swarm, c *client) ([]string, error) {
			script, err := filepath.Abs(filepath.Join("testdata", "webtorrent", "wtclient.mjs"))
			if err != nil {
				return nil, err
			}
			if c.seed {
				return nil, errors.New("wtclient.mjs only leeches")
			}
			return []string{"node", script, "--torrent", s.torrent, "--save", c.dir, "--port", strconv.Itoa(c.port)}, nil
		},
	},
}

// swarmClients is the swarm: one seeder and leechers of every kind. The seeder starts first and
// announces alone; the leechers start together.
var swarmClients = []struct {
	kind string
	seed bool
}{
	{"libtorrent", true},
	{"libtorrent", false},
	{"aria2", false},
	{"transmission", false},
	{"rtorrent", false},
	{"webtorrent", false},
}

// swarm is the state of one run.
type swarm struct {
	t      *testing.T
	root   string // temp dir for everything
	scheme string // the announce URL's: "http", "https" or "udp"
	// caFile is the throwaway CA every client trusts (https only): libtorrent through
	// OpenSSL's SSL_CERT_FILE, transmission through CURL_CA_BUNDLE, aria2 with
	// --ca-certificate, rtorrent with network.http.cacert.set, WebTorrent through
	// NODE_EXTRA_CA_CERTS.
	caFile  string
	tracker string // http://127.0.0.1:PORT, for scrapes and metrics
	// announce is the announce URL in the torrent: http://127.0.0.1:PORT/announce,
	// https://127.0.0.1:TLSPORT/announce or udp://127.0.0.1:UDPPORT/announce.
	announce    string
	torrent     string // path of the .torrent
	trackerProc *proc  // the tracker's process
	hash        [20]byte
	payload     [32]byte // SHA-256 of the payload
	procs       []*proc
}

// client is one BitTorrent client of the swarm.
type client struct {
	kind *clientKind
	name string // e.g. "leecher-2-aria2"
	seed bool
	dir  string // holds the payload, or will; nothing else
	home string // HOME, working directory and config files
	port int    // peer port on 127.0.0.1
	// udpPort is a free UDP port for clients that need one of their own to reach a UDP
	// tracker (aria2 sends UDP announces from its DHT socket).
	udpPort int
	// logs are log files the client writes besides its standard output, shown on failure.
	logs []string
	proc *proc
}

// file is where the client keeps the payload.
func (c *client) file() string { return filepath.Join(c.dir, payloadName) }

// TestSwarm runs the real tracker binary with real BitTorrent clients on loopback: one seeder
// and leechers of five implementations (swarmClients: libtorrent, aria2, transmission-cli,
// rtorrent and webtorrent-cli's WebTorrent), which can find each other only through the
// tracker (the torrent is private; DHT, local service discovery, peer exchange and
// UPnP/NAT-PMP are off in every client). It passes when every leecher holds the payload byte for byte, a scrape
// counts every client as a seeder (complete = all clients, incomplete = 0), the tracker's
// metrics show that the clients announced over the torrent's scheme only, and the tracker then
// shuts down cleanly on SIGTERM without having logged an error. It runs three times: with an
// http:// announce URL, with an https:// one (a throwaway CA every client trusts), and with a
// udp:// one (BEP 15).
//
// The clients come from Debian packages and, for webtorrent-cli, from npm into
// testdata/webtorrent; `bash .ci/run` installs them (see installHint). Without them the test
// is skipped, unless CHIHAYA_REQUIRE_SWARM=1, which CI sets, makes their absence a failure.
// -short skips it too.
func TestSwarm(t *testing.T) {
	if testing.Short() {
		t.Skip("swarm test runs real BitTorrent clients; skipped in -short mode")
	}
	ctx, cancel := boundedContext(t, buildTimeout)
	defer cancel()
	requireTools(ctx, t)
	start := time.Now()
	bin := buildTracker(ctx, t, t.TempDir())
	t.Logf("built tracker (race detector: %v) in %v", raceEnabled(), time.Since(start).Round(time.Millisecond))
	cancel()

	for _, scheme := range []string{"http", "https", "udp"} {
		t.Run(scheme, func(t *testing.T) { runSwarm(t, bin, scheme) })
	}
}

// boundedContext returns a context that ends after d, or 30 s before the test's deadline.
func boundedContext(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	if dl, ok := t.Deadline(); ok && time.Until(dl) < d+30*time.Second {
		inner, cancelInner := context.WithDeadline(ctx, dl.Add(-30*time.Second))
		return inner, func() { cancelInner(); cancel() }
	}
	return ctx, cancel
}

// runSwarm runs the swarm once, with a torrent that announces over scheme.
func runSwarm(t *testing.T, bin, scheme string) {
	ctx, cancel := boundedContext(t, swarmTimeout)
	defer cancel()
	start := time.Now()
	s := &swarm{t: t, root: t.TempDir(), scheme: scheme}
	s.startTracker(ctx, bin)
	s.makeTorrent(ctx)

	var seeder *client
	var leechers []*client
	for i, sc := range swarmClients {
		c := &client{kind: clientKinds[sc.kind], seed: sc.seed, port: freePort(t), udpPort: freeUDPPort(t)}
		if sc.seed {
			c.name = fmt.Sprintf("seeder-%d-%s", i, sc.kind)
			seeder = c
		} else {
			c.name = fmt.Sprintf("leecher-%d-%s", i, sc.kind)
			leechers = append(leechers, c)
		}
		c.dir = filepath.Join(s.root, c.name, "data")
		c.home = filepath.Join(s.root, c.name, "home")
		for _, d := range []string{c.dir, c.home} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if seeder == nil || len(leechers) == 0 || len(leechers) != len(swarmClients)-1 {
		t.Fatal("swarmClients needs exactly one seeder and at least one leecher")
	}

	// The seeder goes first: the tracker hands a leecher only the peers it already knows.
	s.writePayload(seeder.file())
	s.startClient(ctx, seeder)
	s.waitFor(ctx, "the seeder to announce", func() (bool, string, error) {
		st, err := s.scrape(ctx)
		if err != nil {
			return false, "", err
		}
		return st.complete >= 1, st.String(), nil
	})
	t.Logf("seeder registered after %v", time.Since(start).Round(time.Millisecond))

	for _, c := range leechers {
		s.startClient(ctx, c)
	}
	done := make(map[string]time.Duration)
	leechStart := time.Now()
	s.waitFor(ctx, "every leecher to hold the payload and the scrape to count them all as seeders", func() (bool, string, error) {
		var pending []string
		for _, c := range leechers {
			if _, ok := done[c.name]; ok {
				continue
			}
			if sum, err := fileSHA256(c.file()); err == nil && sum == s.payload {
				done[c.name] = time.Since(leechStart)
				t.Logf("%s holds the payload after %v", c.name, done[c.name].Round(time.Millisecond))
				continue
			}
			pending = append(pending, c.name)
		}
		st, err := s.scrape(ctx)
		if err != nil {
			return false, "", err
		}
		status := fmt.Sprintf("scrape %s; still downloading: %v", st, pending)
		// The tracker counts a download on a completed event (as Ocelot and opentracker do).
		// libtorrent, aria2, webtorrent and rtorrent (with pieces.hash.on_completion off)
		// always send one; when a periodic announce of transmission-cli falls on the moment it
		// finishes, it reports left=0 without the event and never sends one, so its download
		// may go uncounted.
		ok := len(pending) == 0 && st.complete == 1+len(leechers) && st.incomplete == 0 &&
			st.downloaded >= len(leechers)-1
		if ok {
			t.Logf("scrape %s", st)
		}
		return ok, status, nil
	})
	t.Logf("swarm complete in %v (tracker, torrent and clients included)", time.Since(start).Round(time.Millisecond))
	s.checkTransport(ctx)

	// The clients go first, so that the tracker is still there for their last announces; then
	// the tracker must shut down cleanly, and must have logged no error, panic or data race.
	stopStart := time.Now()
	for _, c := range append(leechers, seeder) {
		c.proc.stop()
	}
	s.trackerProc.stop()
	t.Logf("clients and tracker stopped in %v", time.Since(stopStart).Round(time.Millisecond))
	if err := s.trackerProc.err; err != nil {
		t.Errorf("tracker did not exit cleanly on SIGTERM: %v", err)
	}
	if log, err := os.ReadFile(s.trackerProc.log); err != nil {
		t.Error(err)
	} else if m := trackerTrouble.Find(log); m != nil {
		t.Errorf("tracker logged trouble: %q", m)
	}
}

// trackerTrouble matches what the tracker must not log while serving a healthy swarm: a glog
// error line, a panic, or a report of the race detector.
var trackerTrouble = regexp.MustCompile(`(?m)^(E\d{4} .*|.*panic.*|WARNING: DATA RACE)$`)

// requireTools requires the tools of every client kind of the swarm (see requireKinds).
func requireTools(ctx context.Context, t *testing.T) {
	t.Helper()
	var kinds []*clientKind
	for _, sc := range swarmClients {
		k := clientKinds[sc.kind]
		if k == nil {
			t.Fatalf("swarmClients names unknown client kind %q", sc.kind)
		}
		kinds = append(kinds, k)
	}
	requireKinds(ctx, t, kinds...)
}

// requireKinds skips the test, or fails it under CHIHAYA_REQUIRE_SWARM=1, when mktorrent or a
// tool of one of kinds is missing.
func requireKinds(ctx context.Context, t *testing.T, kinds ...*clientKind) {
	t.Helper()
	var missing []string
	seen := map[string]bool{}
	check := func(tool string) {
		if seen[tool] {
			return
		}
		seen[tool] = true
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	check("mktorrent")
	probed := map[*clientKind]bool{}
	for _, k := range kinds {
		for _, tool := range k.tools {
			check(tool)
		}
		if k.probe != nil && !probed[k] {
			probed[k] = true
			if err := k.probe(ctx); err != nil {
				missing = append(missing, err.Error())
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("swarm test needs %s; %s", strings.Join(missing, ", "), installHint)
	if os.Getenv("CHIHAYA_REQUIRE_SWARM") == "1" {
		t.Fatal(msg + " (CHIHAYA_REQUIRE_SWARM=1, so this is a failure)")
	}
	t.Skip(msg)
}

// buildTracker builds this package's binary into dir and returns its path. Under
// `go test -race` the binary gets the race detector too.
func buildTracker(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found to build the tracker: %v", err)
	}
	bin := filepath.Join(dir, "chihaya")
	args := []string{"build", "-buildvcs=false", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, goTool, append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// startTracker writes a config with short intervals, starts the tracker and waits until it
// answers HTTP.
func (s *swarm) startTracker(ctx context.Context, bin string) {
	t := s.t
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	s.tracker = "http://" + addr
	s.announce = s.tracker + "/announce"
	cfg := map[string]any{
		"addr":             addr,
		"announce":         "5s",
		"min_announce":     "1s",
		"peer_timeout":     "1m",
		"reap_interval":    "10s",
		"shutdown_timeout": "3s",
	}
	if s.scheme == "udp" {
		udpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freeUDPPort(t)))
		cfg["udp_addr"] = udpAddr
		s.announce = "udp://" + udpAddr + "/announce"
	}
	if s.scheme == "https" {
		// Scrapes and metrics still go to the plain listener; the torrent announces over TLS.
		dir := filepath.Join(s.root, "tls")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ca := tlscerttest.NewCA(t)
		s.caFile = ca.WriteFile(t, dir)
		certFile, keyFile := ca.IssueFiles(t, dir, 1)
		tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		cfg["tls_addr"], cfg["tls_cert_file"], cfg["tls_key_file"] = tlsAddr, certFile, keyFile
		s.announce = "https://" + tlsAddr + "/announce"
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(s.root, "chihaya.json")
	if err := os.WriteFile(cfgPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	p := s.start(ctx, "tracker", s.root, nil, bin, "-config", cfgPath)
	s.trackerProc = p

	hc := &http.Client{Timeout: 2 * time.Second}
	s.waitFor(ctx, "the tracker to answer on "+addr, func() (bool, string, error) {
		if p.exited() {
			return false, "", fmt.Errorf("tracker exited: %v", p.err)
		}
		resp, err := hc.Get(s.tracker + "/")
		if err != nil {
			return false, err.Error(), nil
		}
		_ = resp.Body.Close()
		return true, "", nil
	})
}

// makeTorrent makes a private torrent of a fresh random payload with mktorrent.
func (s *swarm) makeTorrent(ctx context.Context) {
	t := s.t
	t.Helper()
	src := filepath.Join(s.root, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, payloadSize)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	s.payload = sha256.Sum256(payload)
	path := filepath.Join(src, payloadName)
	if err := os.WriteFile(path, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	s.torrent = filepath.Join(s.root, "payload.torrent")
	// -p: private, so clients keep to the tracker; -l 16: 64 KiB pieces, so the leechers
	// trade pieces among themselves too.
	cmd := exec.CommandContext(ctx, "mktorrent", "-p", "-l", "16", "-a", s.announce, "-o", s.torrent, path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mktorrent: %v\n%s", err, out)
	}
	meta, err := os.ReadFile(s.torrent)
	if err != nil {
		t.Fatal(err)
	}
	if s.hash, err = infoHash(meta); err != nil {
		t.Fatalf("%s: %v", s.torrent, err)
	}
	t.Logf("torrent %x: %d bytes, announce %s", s.hash, payloadSize, s.announce)
}

// writePayload copies the payload made by makeTorrent to dst.
func (s *swarm) writePayload(dst string) {
	data, err := os.ReadFile(filepath.Join(s.root, "src", payloadName))
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// startClient starts c in its own directories.
func (s *swarm) startClient(ctx context.Context, c *client) {
	argv, err := c.kind.command(s, c)
	if err != nil {
		s.t.Fatalf("%s: %v", c.name, err)
	}
	env := []string{"HOME=" + c.home}
	if s.caFile != "" {
		env = append(env, "SSL_CERT_FILE="+s.caFile, "CURL_CA_BUNDLE="+s.caFile, "NODE_EXTRA_CA_CERTS="+s.caFile)
	}
	if argv[0] == systemPython {
		env = append(pythonEnv(), env...)
	}
	c.proc = s.start(ctx, c.name, c.home, env, argv[0], argv[1:]...)
	c.proc.logs = c.logs
	s.t.Logf("started %s on 127.0.0.1:%d", c.name, c.port)
}

// scrapeStats are one torrent's counts in a scrape.
type scrapeStats struct {
	complete, downloaded, incomplete int
}

func (st scrapeStats) String() string {
	return fmt.Sprintf("complete=%d incomplete=%d downloaded=%d", st.complete, st.incomplete, st.downloaded)
}

// scrape asks the tracker for the torrent's counts. A torrent the tracker does not know yet
// counts as all zeros.
func (s *swarm) scrape(ctx context.Context) (scrapeStats, error) {
	var q strings.Builder
	for _, b := range s.hash {
		fmt.Fprintf(&q, "%%%02X", b)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, s.tracker+"/scrape?info_hash="+q.String(), nil)
	if err != nil {
		return scrapeStats{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return scrapeStats{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return scrapeStats{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return scrapeStats{}, fmt.Errorf("scrape: %s: %q", resp.Status, body)
	}
	v, n, err := bdecode(body, 0)
	if err == nil && n != len(body) {
		err = errors.New("trailing data")
	}
	if err != nil {
		return scrapeStats{}, fmt.Errorf("scrape: bad bencode %q: %v", body, err)
	}
	top, _ := v.(map[string]any)
	if reason, ok := top["failure reason"].(string); ok {
		return scrapeStats{}, fmt.Errorf("scrape: failure reason %q", reason)
	}
	files, ok := top["files"].(map[string]any)
	if !ok {
		return scrapeStats{}, fmt.Errorf("scrape: no files dictionary in %q", body)
	}
	f, ok := files[string(s.hash[:])].(map[string]any)
	if !ok {
		if len(files) == 0 {
			return scrapeStats{}, nil
		}
		return scrapeStats{}, fmt.Errorf("scrape: files has no entry for %x: %q", s.hash, body)
	}
	var st scrapeStats
	for key, dst := range map[string]*int{"complete": &st.complete, "downloaded": &st.downloaded, "incomplete": &st.incomplete} {
		n, ok := f[key].(int64)
		if !ok {
			return scrapeStats{}, fmt.Errorf("scrape: %s is not an integer in %q", key, body)
		}
		*dst = int(n)
	}
	return st, nil
}

// waitFor polls cond every 500ms until it reports true, it or a process of the swarm fails,
// or ctx ends. cond's status text is logged every few seconds and on timeout.
func (s *swarm) waitFor(ctx context.Context, what string, cond func() (ok bool, status string, err error)) {
	t := s.t
	t.Helper()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var status string
	lastLog := time.Now()
	for {
		for _, p := range s.procs {
			if p.exited() {
				t.Fatalf("waiting for %s: %s exited early: %v", what, p.name, p.err)
			}
		}
		ok, st, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if st != status || time.Since(lastLog) > 5*time.Second {
			if st != "" {
				t.Logf("waiting for %s: %s", what, st)
			}
			status, lastLog = st, time.Now()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s (last status: %s)", what, status)
		case <-tick.C:
		}
	}
}

// proc is a process the test started, in its own process group.
type proc struct {
	name     string
	cmd      *exec.Cmd
	log      string        // its standard output and error
	logs     []string      // other log files it writes
	done     chan struct{} // closed when it has exited; err is then set
	err      error
	stopOnce sync.Once
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs argv in dir with env added to the test's environment, logging to a file. The
// process and its children get their own process group, which cleanup terminates; on failure,
// cleanup also prints the tail of the log.
func (s *swarm) start(ctx context.Context, name, dir string, env []string, argv0 string, args ...string) *proc {
	t := s.t
	t.Helper()
	p := &proc{name: name, log: filepath.Join(s.root, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.CommandContext(ctx, argv0, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Setpgid: its own group, so that killing -pid reaches its children. Pdeathsig: it dies
	// with the test even if the test binary is killed before cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return killGroup(cmd, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	p.cmd = cmd
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			for _, l := range append([]string{p.log}, p.logs...) {
				t.Logf("--- last %d lines of %s (%s) ---\n%s", logTailLines, name, l, tail(l, logTailLines))
			}
		}
	})
	return p
}

// stop sends the process group SIGTERM, then SIGKILL after stopGrace, and waits for the
// process to exit. Only the first call does anything.
func (p *proc) stop() {
	p.stopOnce.Do(func() {
		if !p.exited() {
			_ = killGroup(p.cmd, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
			}
		}
		// Whatever is left of the group, children included, goes now.
		_ = killGroup(p.cmd, syscall.SIGKILL)
		<-p.done
	})
}

// killGroup signals cmd's whole process group.
func killGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return nil
	}
	err := syscall.Kill(-cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// pythonEnv is the environment for systemPython: the test's, without variables that could
// point it at another interpreter's modules.
func pythonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PYTHONPATH=") || strings.HasPrefix(kv, "PYTHONHOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PYTHONNOUSERSITE=1", "PYTHONUNBUFFERED=1")
}

// freePort returns a port on 127.0.0.1 that was free for TCP and UDP a moment ago, never one
// picked before in this process. It picks below the kernel's ephemeral range (see
// pickablePorts): a port from inside it could be taken, between the probe and the bind, as the
// source port of an outgoing connection, such as a client's to the tracker.
func freePort(t *testing.T) int {
	t.Helper()
	pickedMu.Lock()
	defer pickedMu.Unlock()
	lo, hi := pickablePorts()
	n := hi - lo + 1
	start := mathrand.IntN(n)
	for i := range min(n, 1000) {
		port := lo + (start+i)%n
		if picked[port] || !portFree(port) {
			continue
		}
		picked[port] = true
		return port
	}
	t.Fatalf("no free port in %d-%d after %d tries", lo, hi, min(n, 1000))
	return 0
}

// freeUDPPort is freePort, for a socket that will be UDP.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	return freePort(t)
}

var (
	pickedMu sync.Mutex
	picked   = map[int]bool{}
)

// pickablePorts is the range freePort picks from: the 8192 ports below the kernel's ephemeral
// range (net.ipv4.ip_local_port_range, 32768-60999 by default), or 20000-29999 if the range
// cannot be read or starts too low for that.
func pickablePorts() (lo, hi int) {
	lo, hi = 20000, 29999
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return lo, hi
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first < 1024+8192 {
		return lo, hi
	}
	return first - 8192, first - 1
}

// portFree reports whether port on 127.0.0.1 can be bound for TCP and for UDP.
func portFree(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// transportMetric matches the tracker's announce counters by transport in /metrics.
var transportMetric = regexp.MustCompile(`(?m)^chihaya_requests_total\{action="announce",family="ipv4",transport="(http|udp)"\} (\d+)$`)

// handshakeErrors matches the tracker's count of failed TLS handshakes in /metrics.
var handshakeErrors = regexp.MustCompile(`(?m)^chihaya_http_tls_handshake_errors_total (\d+)$`)

// checkTransport checks in the tracker's /metrics that the clients announced over the
// torrent's scheme, and only over it.
func (s *swarm) checkTransport(ctx context.Context) {
	t := s.t
	t.Helper()
	body := []byte(s.metrics(ctx))
	announces := map[string]int{}
	for _, m := range transportMetric.FindAllSubmatch(body, -1) {
		n, _ := strconv.Atoi(string(m[2]))
		announces[string(m[1])] = n
	}
	t.Logf("announces by transport: %v", announces)
	want := strings.TrimSuffix(s.scheme, "s") // https's announces are counted as http's
	if s.scheme == "https" {
		// The torrent names only the TLS port; the plain one sees scrapes and metrics only.
		if m := handshakeErrors.FindSubmatch(body); m == nil || string(m[1]) != "0" {
			t.Errorf("TLS handshakes failed: %q", m)
		}
	}
	for _, transport := range []string{"http", "udp"} {
		if transport == want && announces[transport] < len(swarmClients) {
			t.Errorf("%d announces over %s, want at least one per client (%d)", announces[transport], transport, len(swarmClients))
		}
		if transport != want && announces[transport] != 0 {
			t.Errorf("%d announces over %s, want none: the torrent announces over %s", announces[transport], transport, s.scheme)
		}
	}
}

// fileSHA256 hashes the file at path.
func fileSHA256(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, err
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// lastLine returns the last non-empty line of out, such as the message of a failed probe.
func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// tail returns the last n lines of the file at path. Carriage returns (progress lines) count
// as line ends, and repeated lines are shown once.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	data = bytes.ReplaceAll(data, []byte("\r"), []byte("\n"))
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimRight(l, " \t")
		if l == "" || (len(lines) > 0 && lines[len(lines)-1] == l) {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// infoHash returns the SHA-1 of the bencoded info dictionary of a .torrent file, as it is.
func infoHash(meta []byte) ([20]byte, error) {
	if len(meta) == 0 || meta[0] != 'd' {
		return [20]byte{}, errors.New("not a bencoded dictionary")
	}
	for i := 1; i < len(meta) && meta[i] != 'e'; {
		key, j, err := bdecode(meta, i)
		if err != nil {
			return [20]byte{}, err
		}
		_, k, err := bdecode(meta, j)
		if err != nil {
			return [20]byte{}, err
		}
		if key == "info" {
			return sha1.Sum(meta[j:k]), nil
		}
		i = k
	}
	return [20]byte{}, errors.New("no info dictionary")
}

// bdecode decodes the bencoded value at b[i:] and returns it with the offset just past it.
// Strings (and dictionary keys) decode to string, integers to int64, lists to []any and
// dictionaries to map[string]any.
func bdecode(b []byte, i int) (any, int, error) {
	if i >= len(b) {
		return nil, i, io.ErrUnexpectedEOF
	}
	switch c := b[i]; {
	case c == 'i':
		end := bytes.IndexByte(b[i:], 'e')
		if end < 0 {
			return nil, i, io.ErrUnexpectedEOF
		}
		n, err := strconv.ParseInt(string(b[i+1:i+end]), 10, 64)
		if err != nil {
			return nil, i, fmt.Errorf("bad integer at %d: %v", i, err)
		}
		return n, i + end + 1, nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(b[i:], ':')
		if colon < 0 {
			return nil, i, io.ErrUnexpectedEOF
		}
		n, err := strconv.Atoi(string(b[i : i+colon]))
		if err != nil || n < 0 {
			return nil, i, fmt.Errorf("bad string length at %d", i)
		}
		start := i + colon + 1
		if n > len(b)-start {
			return nil, i, io.ErrUnexpectedEOF
		}
		return string(b[start : start+n]), start + n, nil
	case c == 'l':
		var list []any
		i++
		for i < len(b) && b[i] != 'e' {
			v, next, err := bdecode(b, i)
			if err != nil {
				return nil, i, err
			}
			list = append(list, v)
			i = next
		}
		if i >= len(b) {
			return nil, i, io.ErrUnexpectedEOF
		}
		return list, i + 1, nil
	case c == 'd':
		dict := map[string]any{}
		i++
		for i < len(b) && b[i] != 'e' {
			k, next, err := bdecode(b, i)
			if err != nil {
				return nil, i, err
			}
			key, ok := k.(string)
			if !ok {
				return nil, i, fmt.Errorf("dictionary key at %d is not a string", i)
			}
			v, after, err := bdecode(b, next)
			if err != nil {
				return nil, next, err
			}
			dict[key] = v
			i = after
		}
		if i >= len(b) {
			return nil, i, io.ErrUnexpectedEOF
		}
		return dict, i + 1, nil
	default:
		return nil, i, fmt.Errorf("unexpected byte %q at %d", c, i)
	}
}
