package chihaya

import (
	"context"
	"encoding/json"
	"io"
	nethttp "net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
)

func loopbackConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse(DefaultConfig, "example_config.json")
	require.NoError(t, err)
	cfg.Addr = "127.0.0.1:0"
	cfg.UDPAddr = "127.0.0.1:0"
	return cfg
}

func TestDefaultConfigIsPublicMemoryNoop(t *testing.T) {
	cfg, err := config.Parse(DefaultConfig, "example_config.json")
	require.NoError(t, err)
	assert.Equal(t, ":6881", cfg.Addr)
	assert.Equal(t, "memory", cfg.Tracker.Name)
	assert.Equal(t, "noop", cfg.Backend.Name)
	assert.False(t, cfg.PrivateEnabled)
	assert.False(t, cfg.AllowIPSpoofing)
}

func TestStartServesAndShutsDown(t *testing.T) {
	c, err := Start(loopbackConfig(t))
	require.NoError(t, err)

	url := "http://" + c.Addr().String() + "/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=6881&uploaded=0&downloaded=0&left=0"
	resp, err := nethttp.Get(url)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	assert.Equal(t, nethttp.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "8:completei1e")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.Shutdown(ctx))
	_, err = nethttp.Get(url)
	assert.Error(t, err, "the listener must be closed after Shutdown")
	require.NoError(t, c.Shutdown(ctx), "a second Shutdown is harmless")
}

func TestStartRefusesBadDrivers(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*config.Config)
		want []string
	}{
		{"unknown tracker driver", func(c *config.Config) { c.Tracker.Name = "nope" }, []string{`unknown driver "nope"`, "memory"}},
		{"unknown backend driver", func(c *config.Config) { c.Backend.Name = "nope" }, []string{`unknown driver "nope"`, "noop"}},
		{"bad tracker params", func(c *config.Config) { c.Tracker.Params = json.RawMessage(`{"shards": 0}`) }, []string{`"shards"`}},
		{"noop takes no params", func(c *config.Config) { c.Backend.Params = json.RawMessage(`{"dsn": "x"}`) }, []string{"noop"}},
		{"private mode without a backend for it", func(c *config.Config) { c.PrivateEnabled = true }, []string{"backend.driver", "gazelle"}},
		{"port in use", nil, []string{"listen on"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loopbackConfig(t)
			if tc.edit != nil {
				tc.edit(cfg)
			} else {
				busy, err := Start(loopbackConfig(t))
				require.NoError(t, err)
				t.Cleanup(func() { _ = busy.Shutdown(context.Background()) })
				cfg.Addr = busy.Addr().String()
			}
			c, err := Start(cfg)
			if c != nil {
				_ = c.Shutdown(context.Background())
			}
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}
