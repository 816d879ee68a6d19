package ws_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/config"
)

// requireBrowser returns Debian's chromium, or skips the test (fails it under
// CHIHAYA_REQUIRE_BROWSER=1) when it, WebTorrent's bundle or a default route is missing:
// WebRTC between two pages on one host needs the host to have one.
func requireBrowser(t *testing.T) string {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err == nil {
		_, err = os.Stat(filepath.Join(btclientDir, "node_modules", "webtorrent", "dist", "webtorrent.min.js"))
	}
	if err == nil {
		var routes []byte
		if routes, err = os.ReadFile("/proc/net/route"); err == nil && !hasDefaultRoute(string(routes)) {
			err = os.ErrNotExist
		}
	}
	if err != nil {
		msg := "needs Debian's chromium (apt-get install chromium), WebTorrent's bundle (npm install --prefix ws/testdata/btclient --ignore-scripts --no-save) and a default route: " + err.Error()
		if os.Getenv("CHIHAYA_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg + " (CHIHAYA_REQUIRE_BROWSER=1, so this is a failure)")
		}
		t.Skip(msg)
	}
	return chromium
}

func hasDefaultRoute(table string) bool {
	for _, line := range strings.Split(table, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == "00000000" {
			return true
		}
	}
	return false
}

// pages serves the two pages, the bundle and the file, and collects what the pages post.
type pages struct {
	t      *testing.T
	file   []byte
	mu     sync.Mutex
	magnet string
	result chan map[string]string
}

func (p *pages) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/page.html":
		http.ServeFile(w, r, "testdata/browser/page.html")
	case "/webtorrent.min.js":
		w.Header().Set("Content-Type", "text/javascript")
		http.ServeFile(w, r, filepath.Join(btclientDir, "node_modules", "webtorrent", "dist", "webtorrent.min.js"))
	case "/file":
		_, _ = w.Write(p.file)
	case "/magnet":
		p.mu.Lock()
		defer p.mu.Unlock()
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			p.magnet = string(b)
			return
		}
		if p.magnet == "" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, p.magnet)
	case "/log":
		b, _ := io.ReadAll(r.Body)
		p.t.Logf("page: %s", b)
	case "/result":
		b, _ := io.ReadAll(r.Body)
		var m map[string]string
		if json.Unmarshal(b, &m) != nil {
			m = map[string]string{"error": string(b)}
		}
		select {
		case p.result <- m:
		default:
		}
	default:
		http.NotFound(w, r)
	}
}

// openPage runs a headless chromium on u; the test's end kills its process group.
func openPage(t *testing.T, chromium, u string) {
	t.Helper()
	cmd := exec.Command(chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
		"--user-data-dir="+t.TempDir(), u)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
}

// download seeds a random file from one page on seedTracker and downloads it from another on
// leechTracker, and checks the SHA-256 the downloader computed.
func download(t *testing.T, chromium string, seedTracker, leechTracker *chihaya.Chihaya) {
	p := &pages{t: t, file: make([]byte, 1<<20), result: make(chan map[string]string, 4)}
	_, _ = rand.Read(p.file)
	want := sha256.Sum256(p.file)
	hs := httptest.NewServer(p)
	t.Cleanup(hs.Close)
	page := func(role string, c *chihaya.Chihaya) string {
		return hs.URL + "/page.html?role=" + role + "&tracker=" + url.QueryEscape("ws://"+c.Addr().String()+"/announce")
	}
	openPage(t, chromium, page("seed", seedTracker))
	openPage(t, chromium, page("leech", leechTracker))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	select {
	case m := <-p.result:
		require.Empty(t, m["error"], "%s page failed", m["role"])
		assert.Equal(t, "leech", m["role"])
		assert.Equal(t, hex.EncodeToString(want[:]), m["sha256"])
	case <-ctx.Done():
		t.Fatal("no download within 90 s")
	}
}

// TestBrowserDownload: two headless chromium pages running WebTorrent's browser bundle, one
// seeding a file and one downloading it with Chihaya's ws:// URL as its only tracker.
func TestBrowserDownload(t *testing.T) {
	chromium := requireBrowser(t)
	c := startTracker(t, nil)
	download(t, chromium, c, c)
}

// TestBrowserDownloadTwoInstances: the same with each page on its own instance, the two
// sharing their swarms in Redis.
func TestBrowserDownloadTwoInstances(t *testing.T) {
	chromium := requireBrowser(t)
	params := redisParams(t)
	mod := func(cfg *config.Config) { cfg.Tracker = config.DriverConfig{Name: "redis", Params: params} }
	download(t, chromium, startTracker(t, mod), startTracker(t, mod))
}
