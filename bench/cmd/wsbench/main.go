// Command wsbench measures WebSocket trackers side by side on loopback: Chihaya's and the
// reference's (bittorrent-tracker's Server on Node), each pinned to one CPU with taskset.
//
//   - relay: peers in swarms announce again and again with 5 offers of about 500 bytes each, as
//     WebTorrent does; it reports announces answered and offers relayed per second, and per
//     CPU-second of the tracker.
//   - memory: idle sockets, each having announced once; it reports the tracker's RSS per socket.
//
// Run from the repository root: go run ./bench/cmd/wsbench (needs node and
// ws/testdata/btclient installed, see README). The machine's other load makes the figures
// noisy; the tracker and the load generator should each have a CPU of their own.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

type options struct {
	trackers          string
	trackerCPU        string
	genCPU            string
	swarms, perSwarm  int
	duration, warmup  time.Duration
	memConns          string
	offerBytes, offer int
	extraConfig       string
	workloads         string
	settle            time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.trackers, "trackers", "chihaya,reference", "trackers to measure")
	flag.StringVar(&o.trackerCPU, "tracker-cpu", "1", "CPU the tracker is pinned to (taskset -c)")
	flag.StringVar(&o.genCPU, "gen-cpu", "0", "CPU this load generator is pinned to (taskset -c)")
	flag.IntVar(&o.swarms, "swarms", 50, "relay: swarms")
	flag.IntVar(&o.perSwarm, "peers", 20, "relay: peers per swarm (one socket each)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "relay: measured window")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "relay: unmeasured warm-up")
	flag.StringVar(&o.memConns, "mem-conns", "5000,10000", "memory: idle sockets")
	flag.IntVar(&o.offer, "offers", 5, "offers per announce")
	flag.IntVar(&o.offerBytes, "offer-bytes", 500, "bytes of SDP per offer")
	flag.StringVar(&o.workloads, "workloads", "relay,memory", "workloads to run")
	flag.DurationVar(&o.settle, "mem-settle", 3*time.Second, "memory: wait after the last socket announced, before RSS is read")
	flag.StringVar(&o.extraConfig, "chihaya-config", "", "more config keys for Chihaya, as a JSON object (such as {\"stats_addr\": \"127.0.0.1:6880\", \"pprof_enabled\": true} to profile it)")
	flag.Parse()
	if err := pin(os.Getpid(), o.genCPU); err != nil {
		fmt.Fprintln(os.Stderr, "wsbench: pin the generator:", err)
	}
	runRelay := strings.Contains(o.workloads, "relay")
	runMemory := strings.Contains(o.workloads, "memory")
	var rows, mem []string
	for _, name := range strings.Split(o.trackers, ",") {
		if runRelay {
			row, err := relay(o, name)
			if err != nil {
				fmt.Fprintf(os.Stderr, "wsbench: %s relay: %v\n", name, err)
				os.Exit(1)
			}
			fmt.Fprintln(os.Stderr, row)
			rows = append(rows, row)
		}
		for _, n := range strings.Split(o.memConns, ",") {
			if !runMemory {
				break
			}
			conns, _ := strconv.Atoi(n)
			r, err := memory(o, name, conns)
			if err != nil {
				fmt.Fprintf(os.Stderr, "wsbench: %s memory: %v\n", name, err)
				os.Exit(1)
			}
			fmt.Fprintln(os.Stderr, r)
			mem = append(mem, r)
		}
	}
	if runRelay {
		fmt.Println("| tracker | announces/s | offers relayed/s | tracker CPU | announces per CPU-second |")
		fmt.Println("|---|---|---|---|---|")
		for _, r := range rows {
			fmt.Println(r)
		}
		fmt.Println()
	}
	if runMemory {
		fmt.Println("| tracker | idle sockets | RSS before | RSS after | per socket |")
		fmt.Println("|---|---|---|---|---|")
		for _, r := range mem {
			fmt.Println(r)
		}
	}
}

func pin(pid int, cpu string) error {
	return exec.Command("taskset", "-pc", cpu, strconv.Itoa(pid)).Run()
}

type tracker struct {
	cmd    *exec.Cmd
	url    string
	work   string
	exited <-chan struct{} // closed once cmd has exited (and been waited for)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs the tracker pinned to o.trackerCPU and waits until it accepts.
func start(o options, name string) (*tracker, error) {
	port := freePort()
	work, err := os.MkdirTemp("", "wsbench")
	if err != nil {
		return nil, err
	}
	t := &tracker{work: work}
	switch name {
	case "chihaya":
		bin := filepath.Join(work, "chihaya")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/chihaya").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build: %v: %s", err, out)
		}
		keys := map[string]any{"addr": fmt.Sprintf("127.0.0.1:%d", port),
			"max_connections_per_ip": 0, "stats_enabled": false, "ws_send_queue": 1024}
		if o.extraConfig != "" {
			if err := json.Unmarshal([]byte(o.extraConfig), &keys); err != nil {
				return nil, fmt.Errorf("-chihaya-config: %w", err)
			}
		}
		cfg, _ := json.Marshal(keys)
		cfgPath := filepath.Join(work, "config.json")
		if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
			return nil, err
		}
		t.cmd = exec.Command("taskset", "-c", o.trackerCPU, bin, "-config", cfgPath)
		t.url = fmt.Sprintf("ws://127.0.0.1:%d/announce", port)
	case "reference":
		t.cmd = exec.Command("taskset", "-c", o.trackerCPU, "node", "--import", "./register.mjs", "refserver.mjs", strconv.Itoa(port))
		t.cmd.Dir = "ws/testdata/btclient"
		t.url = fmt.Sprintf("ws://127.0.0.1:%d", port)
	default:
		return nil, fmt.Errorf("unknown tracker %q", name)
	}
	logf, err := os.Create(filepath.Join(work, "log"))
	if err != nil {
		return nil, err
	}
	t.cmd.Stdout, t.cmd.Stderr = logf, logf
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = t.cmd.Wait(); close(exited) }()
	t.exited = exited
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return t, nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.stop()
			return nil, fmt.Errorf("%s exited before it listened: %s", name, bytes.TrimSpace(log))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.stop()
			return nil, fmt.Errorf("%s did not listen: %s", name, bytes.TrimSpace(log))
		}
	}
}

func (t *tracker) stop() {
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
	case <-time.After(5 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.exited
	}
	_ = os.RemoveAll(t.work)
}

// cpuTicks is the process's user and system time, in clock ticks.
func cpuTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

func rssKB(pid int) uint64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// bin makes a 20-character binary string from two numbers.
func bin(kind byte, a, b int) string {
	r := []rune("xxxxxxxxxxxxxxxxxxxx")
	r[0], r[1], r[2], r[3], r[4] = rune(kind), rune(a>>8&0xff), rune(a&0xff), rune(b>>8&0xff), rune(b&0xff)
	return string(r)
}

// pid of the tracker itself: taskset execs it, so the child is the tracker.
func (t *tracker) pid() int { return t.cmd.Process.Pid }

type peer struct {
	c      *websocket.Conn
	ih, id string
	// regular is the peer's announce after the first, which it sends again each time it is
	// answered, from its reader (no goroutine hand-off or timer per announce: the generator,
	// on its one CPU, is the bottleneck otherwise).
	regular []byte
	stop    *atomic.Bool
	mu      sync.Mutex // writes: the reader's, and a retry's after a failure
}

// announce sends msg, unless the run is over.
func (p *peer) announce(msg []byte) {
	if p.stop.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.c.WriteMessage(websocket.TextMessage, msg)
}

// The keys that tell the messages a peer gets apart, in the tracker's text (neither tracker
// escapes them, and the SDP the generator sends holds none of them).
var (
	keyFailure  = []byte(`"failure reason"`)
	keyOffer    = []byte(`"offer":`)
	keyComplete = []byte(`"complete":`)
)

// read counts what the peer gets: offers relayed to it, and the answers to its announces, each
// of which lets it announce again. It reads every message into the same buffer and tells them
// apart by their keys, without decoding them: the generator, on its one CPU, is otherwise the
// bottleneck.
func (p *peer) read(announces, offers *atomic.Int64) {
	buf := make([]byte, 0, 16<<10)
	for {
		_, r, err := p.c.NextReader()
		if err != nil {
			return
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
		}
		switch {
		case bytes.Contains(buf, keyFailure):
			fmt.Fprintf(os.Stderr, "failure: %s\n", buf)
			time.AfterFunc(10*time.Second, func() { p.announce(p.regular) })
		case bytes.Contains(buf, keyOffer):
			offers.Add(1)
		case bytes.Contains(buf, keyComplete):
			announces.Add(1)
			p.announce(p.regular)
		}
	}
}

func dial(url string) (*websocket.Conn, error) {
	d := websocket.Dialer{ReadBufferSize: 4096, WriteBufferSize: 4096, HandshakeTimeout: 10 * time.Second}
	c, _, err := d.Dial(url, nil)
	return c, err
}

func relay(o options, name string) (string, error) {
	t, err := start(o, name)
	if err != nil {
		return "", err
	}
	defer t.stop()
	var peers []*peer
	var announces, offers atomic.Int64
	var stop atomic.Bool
	sdp := strings.Repeat("a", o.offerBytes)
	for s := 0; s < o.swarms; s++ {
		for i := 0; i < o.perSwarm; i++ {
			c, err := dial(t.url)
			if err != nil {
				return "", err
			}
			p := &peer{c: c, ih: bin('h', s, 0), id: bin('p', s, i), stop: &stop}
			peers = append(peers, p)
		}
	}
	defer func() {
		stop.Store(true)
		for _, p := range peers {
			_ = p.c.Close()
		}
	}()
	// Each peer's two announces, encoded once: the first with event started, the next ones with
	// none. The tracker relays offers and offer IDs as they come, so that the same ones every
	// time cost it what new ones would.
	starts := make([][]byte, len(peers))
	for k, p := range peers {
		offs := make([]map[string]any, o.offer)
		for i := range offs {
			offs[i] = map[string]any{"offer": map[string]any{"type": "offer", "sdp": sdp}, "offer_id": bin('o', i, 0)}
		}
		msg := map[string]any{"action": "announce", "info_hash": p.ih, "peer_id": p.id, "numwant": o.offer,
			"uploaded": 0, "downloaded": 0, "left": 100, "offers": offs}
		p.regular, _ = json.Marshal(msg)
		msg["event"] = "started"
		starts[k], _ = json.Marshal(msg)
	}
	var wg sync.WaitGroup
	for k, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.read(&announces, &offers)
		}()
		p.announce(starts[k])
	}
	time.Sleep(o.warmup)
	a0, f0, c0, t0 := announces.Load(), offers.Load(), cpuTicks(t.pid()), time.Now()
	time.Sleep(o.duration)
	a1, f1, c1, t1 := announces.Load(), offers.Load(), cpuTicks(t.pid()), time.Now()
	stop.Store(true)
	for _, p := range peers {
		_ = p.c.Close()
	}
	wg.Wait()
	secs := t1.Sub(t0).Seconds()
	cpu := float64(c1-c0) / 100 // clock ticks of 10 ms
	aps := float64(a1-a0) / secs
	return fmt.Sprintf("| %s | %.0f | %.0f | %.0f%% | %.0f |", name, aps, float64(f1-f0)/secs, 100*cpu/secs,
		float64(a1-a0)/cpu), nil
}

func memory(o options, name string, n int) (string, error) {
	t, err := start(o, name)
	if err != nil {
		return "", err
	}
	defer t.stop()
	time.Sleep(time.Second)
	before := rssKB(t.pid())
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := dial(t.url)
		if err != nil {
			return "", fmt.Errorf("socket %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := c.WriteJSON(map[string]any{"action": "announce", "info_hash": bin('h', i%100, 1), "peer_id": bin('p', i, 1),
			"event": "started", "left": 100, "uploaded": 0, "downloaded": 0, "numwant": 0}); err != nil {
			return "", err
		}
		if _, _, err := c.ReadMessage(); err != nil {
			return "", err
		}
	}
	time.Sleep(o.settle) // let the tracker's collector run
	after := rssKB(t.pid())
	return fmt.Sprintf("| %s | %d | %.1f MB | %.1f MB | %.1f KB |", name, n, float64(before)/1024, float64(after)/1024,
		float64(after-before)/float64(n)), nil
}
