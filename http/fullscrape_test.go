package http_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	nethttp "net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya"
	"github.com/chihaya/chihaya/config"
)

// TestFullScrape runs the tracker with full_scrape_enabled: a scrape without info_hash answers
// every torrent, gzipped to a client that asks for it and plain to one that does not, from a
// body built at most once per interval; without the option it is refused as before.
func TestFullScrape(t *testing.T) {
	start := func(t *testing.T, enabled bool, mods ...func(*config.Config)) string {
		cfg := config.Default()
		cfg.Addr = "127.0.0.1:0"
		cfg.FullScrapeEnabled = enabled
		cfg.FullScrapeInterval.Duration = time.Hour
		for _, m := range mods {
			m(&cfg)
		}
		require.NoError(t, cfg.Validate())
		c, err := chihaya.Start(&cfg)
		require.NoError(t, err)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			assert.NoError(t, c.Shutdown(ctx))
		})
		return "http://" + c.Addr().String()
	}
	// A client of its own, so that Go's transport neither asks for gzip nor inflates by itself.
	get := func(t *testing.T, u string, gz bool) (*nethttp.Response, []byte) {
		req, err := nethttp.NewRequest(nethttp.MethodGet, u, nil)
		require.NoError(t, err)
		if gz {
			req.Header.Set("Accept-Encoding", "gzip, deflate")
		}
		client := &nethttp.Client{Transport: &nethttp.Transport{DisableCompression: true}, Timeout: 5 * time.Second}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, body
	}
	announce := func(t *testing.T, base string, n int, left int) {
		ih := fmt.Sprintf("full-scrape-torr-%03d", n)
		_, body := get(t, base+"/announce?info_hash="+url.QueryEscape(ih)+"&peer_id="+url.QueryEscape(fmt.Sprintf("-XX0001-full-%07d", n))+
			"&port=7000&uploaded=0&downloaded=0&left="+fmt.Sprint(left), false)
		require.Contains(t, string(body), "8:complete", string(body))
	}

	t.Run("enabled", func(t *testing.T) {
		base := start(t, true)
		announce(t, base, 2, 0)
		announce(t, base, 1, 10)
		want := "d5:filesd" +
			"20:full-scrape-torr-001d8:completei0e10:downloadedi0e10:incompletei1ee" +
			"20:full-scrape-torr-002d8:completei1e10:downloadedi0e10:incompletei0ee" +
			"ee"
		resp, body := get(t, base+"/scrape", true)
		assert.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
		zr, err := gzip.NewReader(bytes.NewReader(body))
		require.NoError(t, err)
		plain, err := io.ReadAll(zr)
		require.NoError(t, err)
		assert.Equal(t, want, string(plain), "every torrent, in info hash order")

		resp, body = get(t, base+"/scrape", false)
		assert.Empty(t, resp.Header.Get("Content-Encoding"))
		assert.Equal(t, fmt.Sprint(len(want)), resp.Header.Get("Content-Length"))
		assert.Equal(t, want, string(body))

		// Built once per interval: a torrent announced now shows at the next build, not this one.
		announce(t, base, 3, 10)
		_, body = get(t, base+"/scrape?", false)
		assert.Equal(t, want, string(body), "the kept body")
		assert.NotContains(t, string(body), "torr-003")
		// A scrape with info_hash is not a full scrape.
		_, body = get(t, base+"/scrape?info_hash="+url.QueryEscape("full-scrape-torr-003"), true)
		assert.True(t, strings.HasPrefix(string(body), "d5:filesd20:full-scrape-torr-003"), string(body))
	})
	t.Run("refused torrents are left out", func(t *testing.T) {
		list := filepath.Join(t.TempDir(), "deny.list")
		require.NoError(t, os.WriteFile(list, []byte(hex.EncodeToString([]byte("full-scrape-torr-002"))+"\n"), 0o644))
		base := start(t, true, func(c *config.Config) { c.AccessListMode, c.AccessListFile = "deny", list })
		announce(t, base, 1, 10)
		_, body := get(t, base+"/scrape", false)
		assert.Equal(t, "d5:filesd20:full-scrape-torr-001d8:completei0e10:downloadedi0e10:incompletei1eeee", string(body))
	})
	t.Run("disabled", func(t *testing.T) {
		base := start(t, false)
		_, body := get(t, base+"/scrape", true)
		assert.Contains(t, string(body), "failure reason")
	})
}
