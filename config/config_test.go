package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../example_config.json")
	require.NoError(t, err)
	cfg, err := Parse(data, "example_config.json")
	require.NoError(t, err)

	assert.Equal(t, ":6881", cfg.Addr)
	assert.Equal(t, "memory", cfg.Tracker.Name)
	assert.JSONEq(t, `{"shards": 1024}`, string(cfg.Tracker.Params))
	assert.Equal(t, "noop", cfg.Backend.Name)
	assert.False(t, cfg.PrivateEnabled)
	assert.True(t, cfg.PurgeInactiveTorrents)
	assert.Equal(t, 30*time.Minute, cfg.Announce.Duration)
	assert.Equal(t, 15*time.Minute, cfg.MinAnnounce.Duration)
	assert.Equal(t, 45*time.Minute, cfg.PeerTimeout.Duration)
	assert.Equal(t, time.Minute, cfg.ReapInterval.Duration)
	assert.Equal(t, 50, cfg.DefaultNumWant)
	assert.Equal(t, 200, cfg.MaxNumWant)
	assert.Equal(t, 74, cfg.MaxScrapeInfoHashes)
	assert.True(t, cfg.DualStackedPeers)
	assert.Equal(t, 24, cfg.PreferredIPv4Subnet)
	assert.Equal(t, 48, cfg.PreferredIPv6Subnet)
	assert.Empty(t, cfg.TrustedProxies)
	assert.Empty(t, cfg.ClientWhitelist)
	assert.Equal(t, 0, cfg.MaxConnections, "derived from the open files limit")
	assert.Equal(t, DefaultMaxConnectionsPerIP, cfg.MaxConnectionsPerIP)

	// Load reads the same file to the same result.
	loaded, err := Load("../example_config.json")
	require.NoError(t, err)
	assert.Equal(t, cfg, loaded)
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.json")
	_, err := Load(path)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "nope.json")
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chihaya.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"announce": "abc"}`), 0o600))
	_, err := Load(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), `"announce"`)
}

func TestParseHTTPSOnly(t *testing.T) {
	cfg, err := Parse([]byte(`{"addr": "", "tls_addr": ":443", "tls_cert_file": "/c.pem", "tls_key_file": "/k.pem"}`), "test")
	require.NoError(t, err)
	assert.Equal(t, "", cfg.Addr)
	assert.Equal(t, ":443", cfg.TLSAddr)
	assert.Equal(t, "/c.pem", cfg.TLSCertFile)
	assert.Equal(t, "/k.pem", cfg.TLSKeyFile)
}

func TestDefaultIsValid(t *testing.T) {
	cfg := Default()
	require.NoError(t, cfg.Validate())
}

func TestParseDefaults(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  func(*Config)
	}{
		{name: "empty object", input: `{}`, want: func(*Config) {}},
		{name: "whitespace around", input: " \n{}\n\t", want: func(*Config) {}},
		{
			name:  "one key set",
			input: `{"announce": "20m"}`,
			want:  func(c *Config) { c.Announce.Duration = 20 * time.Minute },
		},
		{
			name:  "durations in compound form",
			input: `{"announce": "1h30m", "min_announce": "90s", "peer_timeout": "2h"}`,
			want: func(c *Config) {
				c.Announce.Duration = 90 * time.Minute
				c.MinAnnounce.Duration = 90 * time.Second
				c.PeerTimeout.Duration = 2 * time.Hour
			},
		},
		{
			name:  "nested section keeps its other defaults",
			input: `{"tracker": {"params": {"shards": 8}}, "backend": {}}`,
			want: func(c *Config) {
				c.Tracker.Params = json.RawMessage(`{"shards": 8}`)
			},
		},
		{
			name:  "lists and flags",
			input: `{"trusted_proxies": ["10.0.0.0/8", "::1"], "real_ip_header": "X-Real-IP", "client_whitelist_enabled": true, "client_whitelist": ["-qB", "-TR"], "dual_stacked_peers": false}`,
			want: func(c *Config) {
				c.TrustedProxies = []string{"10.0.0.0/8", "::1"}
				c.RealIPHeader = "X-Real-IP"
				c.ClientWhitelistEnabled = true
				c.ClientWhitelist = []string{"-qB", "-TR"}
				c.DualStackedPeers = false
			},
		},
		{
			name:  "zero values are kept, not replaced by defaults",
			input: `{"default_num_want": 0, "purge_inactive_torrents": false, "preferred_ipv4_subnet": 0, "stats_buffer_size": 0}`,
			want: func(c *Config) {
				c.DefaultNumWant = 0
				c.PurgeInactiveTorrents = false
				c.PreferredIPv4Subnet = 0
				c.StatsBufferSize = 0
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.input), "test.json")
			require.NoError(t, err)
			want := Default()
			tt.want(&want)
			assert.Equal(t, &want, cfg)
		})
	}
}

func TestTrackerParamsKeptRaw(t *testing.T) {
	tests := []struct {
		name   string
		params string
	}{
		{name: "object with unknown keys", params: `{"shards": 8, "anything": [1, {"x": null}]}`},
		{name: "whitespace preserved", params: "{\n  \"shards\" :   8\n}"},
		{name: "not an object", params: `[1, 2, 3]`},
		{name: "string", params: `"redis://localhost"`},
		{name: "null", params: `null`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := `{"tracker": {"driver": "memory", "params": ` + tt.params + `}, "backend": {"driver": "noop", "params": ` + tt.params + `}}`
			cfg, err := Parse([]byte(input), "test.json")
			require.NoError(t, err)
			assert.Equal(t, tt.params, string(cfg.Tracker.Params))
			assert.Equal(t, tt.params, string(cfg.Backend.Params))
		})
	}

	// The params are a copy: changing the input afterwards does not change them.
	input := []byte(`{"tracker": {"params": {"shards": 8}}}`)
	cfg, err := Parse(input, "test.json")
	require.NoError(t, err)
	copy(input, strings.Repeat("x", len(input)))
	assert.Equal(t, `{"shards": 8}`, string(cfg.Tracker.Params))
}

func TestParseBadKeys(t *testing.T) {
	tests := []struct {
		name  string
		input string
		key   string
	}{
		{name: "unknown top-level key", input: `{"foo": 1}`, key: "foo"},
		{name: "misspelt key", input: `{"anounce": "30m"}`, key: "anounce"},
		{name: "unknown nested key", input: `{"tracker": {"driver": "memory", "foo": 1}}`, key: "tracker.foo"},
		{name: "unknown nested backend key", input: `{"backend": {"bar": true}}`, key: "backend.bar"},
		{name: "section not an object", input: `{"tracker": "memory"}`, key: "tracker"},
		{name: "string for int", input: `{"max_num_want": "200"}`, key: "max_num_want"},
		{name: "float for int", input: `{"default_num_want": 2.5}`, key: "default_num_want"},
		{name: "string for bool", input: `{"dual_stacked_peers": "yes"}`, key: "dual_stacked_peers"},
		{name: "string for list", input: `{"trusted_proxies": "10.0.0.1"}`, key: "trusted_proxies"},
		{name: "number for string", input: `{"addr": 6881}`, key: "addr"},
		{name: "number for driver name", input: `{"tracker": {"driver": 1}}`, key: "tracker.driver"},
		{name: "bad duration string", input: `{"announce": "abc"}`, key: "announce"},
		{name: "duration as number", input: `{"announce": 5}`, key: "announce"},
		{name: "duration without unit", input: `{"reap_interval": "60"}`, key: "reap_interval"},
		{name: "negative duration", input: `{"request_timeout": "-1s"}`, key: "request_timeout"},
		{name: "zero duration", input: `{"shutdown_timeout": "0s"}`, key: "shutdown_timeout"},
		{name: "negative optional timeout", input: `{"http_write_timeout": "-1s"}`, key: "http_write_timeout"},
		{name: "min_announce above announce", input: `{"min_announce": "31m"}`, key: "min_announce"},
		{name: "peer_timeout equal to announce", input: `{"peer_timeout": "30m"}`, key: "peer_timeout"},
		{name: "ws message too small", input: `{"ws_max_message_bytes": 100}`, key: "ws_max_message_bytes"},
		{name: "ws message too large", input: `{"ws_max_message_bytes": 1000000000}`, key: "ws_max_message_bytes"},
		{name: "ws negative offers", input: `{"ws_max_offers": -1}`, key: "ws_max_offers"},
		{name: "ws zero send queue", input: `{"ws_send_queue": 0}`, key: "ws_send_queue"},
		{name: "ws idle timeout too short", input: `{"ws_idle_timeout": "10ms"}`, key: "ws_idle_timeout"},
		{name: "ws ping not below idle", input: `{"ws_idle_timeout": "1m", "ws_ping_interval": "1m"}`, key: "ws_ping_interval"},
		{name: "peer_timeout below announce", input: `{"announce": "1h", "min_announce": "1m", "peer_timeout": "45m"}`, key: "peer_timeout"},
		{name: "default_num_want above max_num_want", input: `{"default_num_want": 201}`, key: "default_num_want"},
		{name: "negative default_num_want", input: `{"default_num_want": -1}`, key: "default_num_want"},
		{name: "max_num_want zero", input: `{"max_num_want": 0, "default_num_want": 0}`, key: "max_num_want"},
		{name: "max_scrape_infohashes zero", input: `{"max_scrape_infohashes": 0}`, key: "max_scrape_infohashes"},
		{name: "preferred_ipv4_subnet 33", input: `{"preferred_ipv4_subnet": 33}`, key: "preferred_ipv4_subnet"},
		{name: "preferred_ipv4_subnet negative", input: `{"preferred_ipv4_subnet": -1}`, key: "preferred_ipv4_subnet"},
		{name: "preferred_ipv6_subnet 129", input: `{"preferred_ipv6_subnet": 129}`, key: "preferred_ipv6_subnet"},
		{name: "trusted_proxies bad entry", input: `{"trusted_proxies": ["not-an-ip"]}`, key: "trusted_proxies[0]"},
		{name: "trusted_proxies bad second entry", input: `{"trusted_proxies": ["10.0.0.0/8", "10.0.0.0/33"]}`, key: "trusted_proxies[1]"},
		{name: "real_ip_header without trusted_proxies", input: `{"real_ip_header": "X-Forwarded-For"}`, key: "real_ip_header"},
		{name: "client_whitelist empty string", input: `{"client_whitelist": [""]}`, key: "client_whitelist[0]"},
		{name: "client_whitelist empty second string", input: `{"client_whitelist_enabled": true, "client_whitelist": ["-qB", ""]}`, key: "client_whitelist[1]"},
		{name: "addr without port", input: `{"addr": "localhost"}`, key: "addr"},
		{name: "no listener at all", input: `{"addr": ""}`, key: "addr"},
		{name: "tls_addr without port", input: `{"tls_addr": "localhost", "tls_cert_file": "c", "tls_key_file": "k"}`, key: "tls_addr"},
		{name: "tls_addr without cert", input: `{"tls_addr": ":443", "tls_key_file": "k"}`, key: "tls_cert_file"},
		{name: "tls_addr without key", input: `{"addr": "", "tls_addr": ":443", "tls_cert_file": "c"}`, key: "tls_key_file"},
		{name: "addr empty", input: `{"addr": ""}`, key: "addr"},
		{name: "empty tracker driver", input: `{"tracker": {"driver": ""}}`, key: "tracker.driver"},
		{name: "empty backend driver", input: `{"backend": {"driver": ""}}`, key: "backend.driver"},
		{name: "negative stats_buffer_size", input: `{"stats_buffer_size": -1}`, key: "stats_buffer_size"},
		{name: "gc_percent too low", input: `{"gc_percent": 0}`, key: "gc_percent"},
		{name: "gc_percent too high", input: `{"gc_percent": 5000}`, key: "gc_percent"},
		{name: "gc_min_growth_mb negative", input: `{"gc_min_growth_mb": -1}`, key: "gc_min_growth_mb"},
		{name: "gc_min_growth_mb too high", input: `{"gc_min_growth_mb": 100000}`, key: "gc_min_growth_mb"},
		{name: "negative memory_trim_interval", input: `{"memory_trim_interval": "-1s"}`, key: "memory_trim_interval"},
		{name: "negative announce rate", input: `{"rate_limit": {"announce_rate": -1}}`, key: "rate_limit.announce_rate"},
		{name: "negative scrape burst", input: `{"rate_limit": {"scrape_rate": 1, "scrape_burst": -1}}`, key: "rate_limit.scrape_burst"},
		{name: "rate limit IPv4 prefix 33", input: `{"rate_limit": {"ipv4_prefix": 33}}`, key: "rate_limit.ipv4_prefix"},
		{name: "rate limit IPv6 prefix 8", input: `{"rate_limit": {"ipv6_prefix": 8}}`, key: "rate_limit.ipv6_prefix"},
		{name: "rate limit table of 0", input: `{"rate_limit": {"table_size": 0}}`, key: "rate_limit.table_size"},
		{name: "unknown rate limit key", input: `{"rate_limit": {"announces": 1}}`, key: "rate_limit.announces"},
		{name: "unknown access list mode", input: `{"access_list_mode": "block"}`, key: "access_list_mode"},
		{name: "deny list without a file", input: `{"access_list_mode": "deny"}`, key: "access_list_file"},
		{name: "short admin token", input: `{"admin_token": "secret"}`, key: "admin_token"},
		{name: "negative max_connections", input: `{"max_connections": -1}`, key: "max_connections"},
		{name: "negative max_connections_per_ip", input: `{"max_connections_per_ip": -5}`, key: "max_connections_per_ip"},
		{name: "max_connections not a number", input: `{"max_connections": "lots"}`, key: "max_connections"},
		{name: "full scrape in private mode", input: `{"private_enabled": true, "full_scrape_enabled": true}`, key: "full_scrape_enabled"},
		{name: "full scrape every millisecond", input: `{"full_scrape_enabled": true, "full_scrape_interval": "1ms"}`, key: "full_scrape_interval"},
		{name: "mem stats without interval", input: `{"include_mem_stats": true, "mem_stats_interval": "0s"}`, key: "mem_stats_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.input), "bad.json")
			require.Error(t, err)
			assert.Nil(t, cfg)
			msg := err.Error()
			assert.Contains(t, msg, "bad.json", "the error names the file")
			assert.Contains(t, msg, `"`+tt.key+`"`, "the error names the exact key")
			var ke *KeyError
			require.True(t, errors.As(err, &ke), "error %q is not a *KeyError", msg)
			assert.Equal(t, tt.key, ke.Key)
			assert.NotNil(t, ke.Unwrap())
		})
	}
}

func TestParseBadDocuments(t *testing.T) {
	tests := []struct {
		name  string
		input string
	}{
		{name: "empty", input: ``},
		{name: "not JSON", input: `announce = 30m`},
		{name: "array", input: `[]`},
		{name: "string", input: `"config"`},
		{name: "truncated", input: `{"announce": "30m"`},
		{name: "trailing object", input: `{} {}`},
		{name: "trailing value", input: `{"announce": "30m"} 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.input), "doc.json")
			require.Error(t, err)
			assert.Nil(t, cfg)
			assert.Contains(t, err.Error(), "doc.json")
		})
	}
}

// TestParseRejectsTrailingData checks that nothing may follow the top-level object, not even a
// stray closing bracket (json.Decoder.More reports none before '}' or ']'), and that the top
// level must be an object.
func TestParseRejectsTrailingData(t *testing.T) {
	for _, in := range []string{`{}}`, `{"announce": "30m"}]`, `{} {}`, `null`, `[]`, `{"tracker": null}`} {
		_, err := Parse([]byte(in), "doc.json")
		assert.Error(t, err, "input %s", in)
	}
}

func TestValidateFirstErrorWins(t *testing.T) {
	// Both announce and max_num_want are wrong; the order of Validate decides which is named,
	// and it names only one.
	cfg := Default()
	cfg.Announce.Duration = 0
	cfg.MaxNumWant = 0
	err := cfg.Validate()
	var ke *KeyError
	require.ErrorAs(t, err, &ke)
	assert.Equal(t, "announce", ke.Key)
}

func TestTrustedProxyPrefixes(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantKey string
	}{
		{name: "none", in: nil, want: []string{}},
		{name: "prefixes are masked", in: []string{"10.1.2.3/8", "2001:db8::1/32"}, want: []string{"10.0.0.0/8", "2001:db8::/32"}},
		{name: "single addresses", in: []string{"127.0.0.1", "::1"}, want: []string{"127.0.0.1/32", "::1/128"}},
		{name: "mapped address is unmapped", in: []string{"::ffff:192.0.2.1"}, want: []string{"192.0.2.1/32"}},
		{name: "bad third", in: []string{"::1", "10.0.0.0/8", "example.com"}, wantKey: "trusted_proxies[2]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.TrustedProxies = tt.in
			got, err := c.TrustedProxyPrefixes()
			if tt.wantKey != "" {
				var ke *KeyError
				require.ErrorAs(t, err, &ke)
				assert.Equal(t, tt.wantKey, ke.Key)
				return
			}
			require.NoError(t, err)
			strs := make([]string, 0, len(got))
			for _, p := range got {
				strs = append(strs, p.String())
			}
			assert.Equal(t, tt.want, strs)
		})
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: `"30m"`, want: 30 * time.Minute},
		{in: `"1h2m3s"`, want: time.Hour + 2*time.Minute + 3*time.Second},
		{in: `"250ms"`, want: 250 * time.Millisecond},
		{in: `"abc"`, wantErr: `invalid duration "abc"`},
		{in: `5`, wantErr: "want a duration string"},
		{in: `null`, wantErr: "invalid duration"},
		{in: `true`, wantErr: "want a duration string"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, d.Duration)
			out, err := json.Marshal(d)
			require.NoError(t, err)
			var back Duration
			require.NoError(t, json.Unmarshal(out, &back))
			assert.Equal(t, d, back, "round trip through %s", out)
		})
	}
}

func TestDefaultMaxConnections(t *testing.T) {
	tests := []struct {
		name  string
		limit uint64
		want  int
	}{
		{name: "tiny limit keeps half", limit: 100, want: 50},
		{name: "limit of one", limit: 1, want: 1},
		{name: "scaled-down test limit", limit: 256, want: 192},
		{name: "usual soft default", limit: 1024, want: 896},
		{name: "an eighth once above 512", limit: 4096, want: 3584},
		{name: "large limit", limit: 1 << 20, want: 917504},
		{name: "unlimited does not overflow", limit: ^uint64(0), want: int(^uint(0)>>1) - int(^uint(0)>>1)/8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DefaultMaxConnections(tt.limit)
			assert.Equal(t, tt.want, got)
			assert.Positive(t, got)
			assert.LessOrEqual(t, uint64(got), tt.limit, "the budget fits in the limit")
		})
	}
}

func TestChanged(t *testing.T) {
	base := func() *Config {
		c, err := Parse([]byte(`{"tracker": {"driver": "memory", "params": {"shards": 8}}}`), "x")
		require.NoError(t, err)
		return c
	}
	v := 2
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"live keys", func(c *Config) {
			c.Announce.Duration = time.Hour
			c.MaxNumWant = 100
			c.ClientWhitelist = []string{"-qB"}
			c.LogVerbosity = &v
		}, []string{"announce", "client_whitelist", "log_verbosity", "max_num_want"}},
		{"a section's key", func(c *Config) { c.RateLimit.ScrapeRate = 3 }, []string{"rate_limit.scrape_rate"}},
		{"driver params, same JSON", func(c *Config) { c.Tracker.Params = []byte(`{ "shards" : 8 }`) }, nil},
		{"driver params", func(c *Config) { c.Tracker.Params = []byte(`{"shards": 16}`) }, []string{"tracker"}},
		{"restart keys", func(c *Config) { c.Addr = ":7000"; c.UDPAddr = ":6881" }, []string{"addr", "udp_addr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := base(), base()
			tc.edit(b)
			assert.Equal(t, tc.want, Changed(a, b))
		})
	}
}

func TestDecodeParams(t *testing.T) {
	type params struct {
		Shards  int      `json:"shards"`
		Timeout Duration `json:"timeout"`
		Names   []string `json:"names"`
	}
	def := params{Shards: 8, Timeout: Duration{time.Second}}
	for _, tc := range []struct {
		raw    string
		want   params
		errHas string
	}{
		{raw: ``, want: def},
		{raw: ` null `, want: def},
		{raw: `{}`, want: def},
		{raw: `{"shards": 16, "timeout": "2s", "names": ["a"]}`, want: params{Shards: 16, Timeout: Duration{2 * time.Second}, Names: []string{"a"}}},
		{raw: `{"shard": 16}`, errHas: `params: key "shard": unknown key (known keys: "shards", "timeout", "names")`},
		{raw: `{"shards": "many"}`, errHas: `params: key "shards": want int, got JSON string`},
		{raw: `{"timeout": 5}`, errHas: `key "timeout"`},
		{raw: `[1]`, errHas: `not a JSON object`},
		{raw: `{"shards": 1} {}`, errHas: `trailing data`},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			p := def
			err := DecodeParams(json.RawMessage(tc.raw), &p)
			if tc.errHas != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.errHas)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, p)
		})
	}
	assert.Error(t, DecodeParams(json.RawMessage(`{}`), def), "not a pointer")
}
