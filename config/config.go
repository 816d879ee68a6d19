// Package config holds Chihaya's configuration: plain data with its defaults and its validation
// in one place. Nothing in it reads flags, and nothing else in Chihaya reads files.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in JSON as a Go duration string such as "30m" or "1h30m".
type Duration struct {
	time.Duration
}

// UnmarshalJSON accepts only a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"30m\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.Duration.String())
}

// DriverConfig names a registered driver and carries its own section of the configuration,
// which the driver decodes and validates itself.
type DriverConfig struct {
	Name   string          `json:"driver"`
	Params json.RawMessage `json:"params"`
}

// DefaultGCPercent is gc_percent's default. A tracker's heap is almost all pointer-free swarm
// storage, which the collector marks at no cost, so collecting at half of Go's usual growth
// keeps the process's memory close to its live data for little CPU.
const DefaultGCPercent = 50

// DefaultGCMinGrowthMB is gc_min_growth_mb's default: a small heap (few peers) that serves
// HTTPS, whose handshakes leave about 40 KB of garbage each, would otherwise be collected dozens
// of times a second; at the default gc_percent a heap of 32 MB or more is not affected.
const DefaultGCMinGrowthMB = 16

// DefaultMaxConnectionsPerIP is max_connections_per_ip's default: far more connections than
// the users behind one NAT hold at once (a client holds one for an announce, and keeps it idle
// for at most http_idle_timeout), few enough that one address cannot hold the whole budget of
// a large file limit.
const DefaultMaxConnectionsPerIP = 1024

// DefaultMaxConnections is the connection budget when max_connections is 0, for a process
// allowed fileLimit open files: the limit less a headroom of an eighth of it, and at least 64,
// for the listeners, the runtime, the drivers' and the database's connections and the
// connections being closed; at least half the limit, for tiny limits. 256 gives 192, 4096 gives
// 3584, 65536 gives 57344.
func DefaultMaxConnections(fileLimit uint64) int {
	const maxInt = int(^uint(0) >> 1)
	if fileLimit > uint64(maxInt) {
		fileLimit = uint64(maxInt)
	}
	limit := int(fileLimit)
	n := limit - max(64, limit/8)
	return max(n, limit/2, 1)
}

// Config is the whole configuration of a Chihaya process. The JSON key of each field is in its
// tag; README.md documents every key and its default.
type Config struct {
	// Addr is the plain HTTP listener; "" turns it off (then TLSAddr must be set).
	Addr string `json:"addr"`
	// TLSAddr is the HTTPS listener, serving the same routes as Addr; "" turns it off. The
	// certificate (a PEM chain, served whole) and its key are read from TLSCertFile and
	// TLSKeyFile, and read again on SIGHUP and when either file changes.
	TLSAddr     string       `json:"tls_addr"`
	TLSCertFile string       `json:"tls_cert_file"`
	TLSKeyFile  string       `json:"tls_key_file"`
	Tracker     DriverConfig `json:"tracker"`
	Backend     DriverConfig `json:"backend"`

	PrivateEnabled        bool `json:"private_enabled"`
	FreeleechEnabled      bool `json:"freeleech_enabled"`
	PurgeInactiveTorrents bool `json:"purge_inactive_torrents"`

	Announce            Duration `json:"announce"`
	MinAnnounce         Duration `json:"min_announce"`
	RequestTimeout      Duration `json:"request_timeout"`
	DefaultNumWant      int      `json:"default_num_want"`
	MaxNumWant          int      `json:"max_num_want"`
	MaxScrapeInfoHashes int      `json:"max_scrape_infohashes"`
	ReapInterval        Duration `json:"reap_interval"`
	PeerTimeout         Duration `json:"peer_timeout"`

	AllowIPSpoofing     bool     `json:"allow_ip_spoofing"`
	DualStackedPeers    bool     `json:"dual_stacked_peers"`
	RealIPHeader        string   `json:"real_ip_header"`
	TrustedProxies      []string `json:"trusted_proxies"`
	PreferredSubnet     bool     `json:"preferred_subnet"`
	PreferredIPv4Subnet int      `json:"preferred_ipv4_subnet"`
	PreferredIPv6Subnet int      `json:"preferred_ipv6_subnet"`

	HTTPReadHeaderTimeout Duration `json:"http_read_header_timeout"`
	HTTPWriteTimeout      Duration `json:"http_write_timeout"`
	HTTPIdleTimeout       Duration `json:"http_idle_timeout"`
	HTTPKeepAlive         bool     `json:"http_keep_alive"`
	ShutdownTimeout       Duration `json:"shutdown_timeout"`

	// MaxConnections is the HTTP frontend's connection budget; 0 derives it from the open files
	// limit (DefaultMaxConnections). MaxConnectionsPerIP caps one IPv4 address's or IPv6 /64's
	// share of it; 0 is no cap.
	MaxConnections      int `json:"max_connections"`
	MaxConnectionsPerIP int `json:"max_connections_per_ip"`

	// GCPercent is the Go garbage collector's target (GOGC) while the tracker runs; the GOGC
	// environment variable, when set, wins.
	GCPercent int `json:"gc_percent"`
	// GCMinGrowthMB is the least the heap may grow between two collections, in MiB: a heap
	// whose GCPercent share is less collects later (gc_min_growth_mb); 0 leaves GCPercent
	// alone. The GOGC environment variable, when set, turns it off.
	GCMinGrowthMB int `json:"gc_min_growth_mb"`
	// MemoryTrimInterval is how often the process looks for memory to hand back to the
	// operating system once the heap has settled; 0 turns it off.
	MemoryTrimInterval Duration `json:"memory_trim_interval"`

	// UDP frontend (BEP 15); off when UDPAddr is empty.
	UDPAddr      string `json:"udp_addr"`
	UDPReaders   int    `json:"udp_readers"`
	UDPBatchSize int    `json:"udp_batch_size"`

	// WebSocket (WebTorrent) tracker on the HTTP listener; off when WSEnabled is false.
	WSEnabled         bool     `json:"ws_enabled"`
	WSMaxMessageBytes int      `json:"ws_max_message_bytes"`
	WSMaxOffers       int      `json:"ws_max_offers"`
	WSSendQueue       int      `json:"ws_send_queue"`
	WSIdleTimeout     Duration `json:"ws_idle_timeout"`
	WSPingInterval    Duration `json:"ws_ping_interval"`

	StatsEnabled     bool     `json:"stats_enabled"`
	StatsAddr        string   `json:"stats_addr"`
	PprofEnabled     bool     `json:"pprof_enabled"`
	StatsBufferSize  int      `json:"stats_buffer_size"`
	IncludeMemStats  bool     `json:"include_mem_stats"`
	VerboseMemStats  bool     `json:"verbose_mem_stats"`
	MemStatsInterval Duration `json:"mem_stats_interval"`

	// RateLimit bounds the announces and scrapes of one address prefix; off by default.
	RateLimit RateLimit `json:"rate_limit"`

	// AccessListMode is "off", "allow" (only the torrents of AccessListFile are served) or
	// "deny" (the torrents of AccessListFile are refused).
	AccessListMode string `json:"access_list_mode"`
	AccessListFile string `json:"access_list_file"`
	// FullScrapeEnabled answers a scrape without info_hash with every torrent, from a body
	// built at most once per FullScrapeInterval (public mode only).
	FullScrapeEnabled  bool     `json:"full_scrape_enabled"`
	FullScrapeInterval Duration `json:"full_scrape_interval"`

	// LogVerbosity, when set, is glog's -v level (0: no per-request lines; 1: reaper and
	// memory; 2: every failed request); it may change on a reload. Unset leaves -v as it is.
	LogVerbosity *int `json:"log_verbosity"`

	// AdminToken, when set, serves the admin API to requests that carry it as a bearer token.
	AdminToken string `json:"admin_token"`

	ClientWhitelistEnabled bool     `json:"client_whitelist_enabled"`
	ClientWhitelist        []string `json:"client_whitelist"`

	// Private mode (Gazelle).
	SitePassword           string            `json:"site_password"`
	ReportPassword         string            `json:"report_password"`
	ReportFormat           string            `json:"report_format"`
	CompactOnly            bool              `json:"compact_only"`
	AnnounceJitter         Duration          `json:"announce_jitter"`
	DeletionReasonLifetime Duration          `json:"deletion_reason_lifetime"`
	BaselineLifetime       Duration          `json:"baseline_lifetime"`
	DeletionReasons        map[string]string `json:"deletion_reasons"`
}

// RateLimit is the rate_limit section: a token bucket per address prefix and request kind,
// over HTTP and UDP together. A rate of 0 turns that kind's limit off.
type RateLimit struct {
	// AnnounceRate is the announces a second one prefix may make on average, AnnounceBurst how
	// many at once after a quiet spell (default: 10 seconds' worth, at least 1).
	AnnounceRate  float64 `json:"announce_rate"`
	AnnounceBurst int     `json:"announce_burst"`
	// ScrapeRate and ScrapeBurst are the same for scrapes.
	ScrapeRate  float64 `json:"scrape_rate"`
	ScrapeBurst int     `json:"scrape_burst"`
	// IPv4Prefix and IPv6Prefix are the prefix lengths that share a bucket: 32 and 64 (an IPv4
	// address, an IPv6 /64) by default; 24 and 48 are coarser choices.
	IPv4Prefix int `json:"ipv4_prefix"`
	IPv6Prefix int `json:"ipv6_prefix"`
	// TableSize is how many buckets are kept; past it the longest-idle bucket is reused.
	TableSize int `json:"table_size"`
}

// Burst returns the burst of a kind with the given rate and configured burst: burst when set,
// else 10 seconds' worth of rate, at least 1.
func (RateLimit) Burst(rate float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return max(1, int(rate*10))
}

// MinAdminToken is the shortest admin_token accepted.
const MinAdminToken = 16

// MaxRateLimitTable bounds rate_limit.table_size (64 M buckets, 512 MB).
const MaxRateLimitTable = 1 << 26

// OcelotDeletionReasons are the texts Ocelot shows for Gazelle's deletion reason codes, in
// "Unregistered torrent: <text>". They are a music site's; deletion_reasons replaces them.
var OcelotDeletionReasons = map[string]string{
	"0": "Dupe", "1": "Trump", "2": "Bad File Names", "3": "Bad Folder Names", "4": "Bad Tags",
	"5": "Disallowed Format", "6": "Discs Missing", "7": "Discography", "8": "Edited Log",
	"9": "Inaccurate Bitrate", "10": "Low Bitrate", "11": "Mutt Rip", "12": "Disallowed Source",
	"13": "Encode Errors", "14": "Specifically Banned", "15": "Tracks Missing", "16": "Transcode",
	"17": "Unapproved Cassette", "18": "Unsplit Album", "19": "User Compilation",
	"20": "Wrong Format", "21": "Wrong Media", "22": "Audience Recording",
}

// Default returns the configuration used for every key a file leaves out.
func Default() Config {
	return Config{
		Addr:                   ":6881",
		Tracker:                DriverConfig{Name: "memory"},
		Backend:                DriverConfig{Name: "noop"},
		PurgeInactiveTorrents:  true,
		Announce:               Duration{30 * time.Minute},
		MinAnnounce:            Duration{15 * time.Minute},
		RequestTimeout:         Duration{10 * time.Second},
		DefaultNumWant:         50,
		MaxNumWant:             200,
		MaxScrapeInfoHashes:    74,
		ReapInterval:           Duration{time.Minute},
		PeerTimeout:            Duration{45 * time.Minute},
		DualStackedPeers:       true,
		PreferredIPv4Subnet:    24,
		PreferredIPv6Subnet:    48,
		HTTPReadHeaderTimeout:  Duration{5 * time.Second},
		HTTPWriteTimeout:       Duration{10 * time.Second},
		HTTPIdleTimeout:        Duration{2 * time.Minute},
		HTTPKeepAlive:          true,
		ShutdownTimeout:        Duration{15 * time.Second},
		MaxConnectionsPerIP:    DefaultMaxConnectionsPerIP,
		GCPercent:              DefaultGCPercent,
		GCMinGrowthMB:          DefaultGCMinGrowthMB,
		MemoryTrimInterval:     Duration{time.Second},
		UDPBatchSize:           32,
		WSEnabled:              true,
		WSMaxMessageBytes:      DefaultWSMaxMessageBytes,
		WSMaxOffers:            DefaultWSMaxOffers,
		WSSendQueue:            64,
		WSIdleTimeout:          Duration{5 * time.Minute},
		WSPingInterval:         Duration{time.Minute},
		RateLimit:              RateLimit{IPv4Prefix: 32, IPv6Prefix: 64, TableSize: 1 << 16},
		AccessListMode:         "off",
		FullScrapeInterval:     Duration{5 * time.Minute},
		StatsEnabled:           true,
		StatsBufferSize:        16384,
		MemStatsInterval:       Duration{5 * time.Second},
		ReportFormat:           "json",
		DeletionReasonLifetime: Duration{24 * time.Hour},
		BaselineLifetime:       Duration{14 * 24 * time.Hour},
	}
}

// Load reads, decodes and validates the configuration file at path. Errors name the file and
// the key.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates a configuration. name is the file it came from, used in errors.
// Keys the file leaves out keep their defaults; an unknown key is an error.
func Parse(data []byte, name string) (*Config, error) {
	cfg := Default()
	if err := decodeStrict(data, reflect.ValueOf(&cfg).Elem(), ""); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	return &cfg, nil
}

// The bounds of udp_readers and udp_batch_size.
const (
	MaxUDPReaders   = 1024
	MaxUDPBatchSize = 1024
)

// KeyError reports a configuration key whose value is wrong or unknown.
type KeyError struct {
	Key string
	Err error
}

// Error names the key and says what is wrong with it.
func (e *KeyError) Error() string { return fmt.Sprintf("key %q: %v", e.Key, e.Err) }

// Unwrap returns the underlying error.
func (e *KeyError) Unwrap() error { return e.Err }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, args...)}
}

var rawMessageType = reflect.TypeOf(json.RawMessage(nil))

// DecodeParams decodes a driver's params (a JSON object; empty or null leaves dst as it is)
// into dst, a pointer to a struct with json tags holding the defaults, as strictly as the
// configuration itself: an unknown key or a bad value is a *KeyError naming the key, and an
// unknown key's error lists the known ones. Drivers call it from their New.
func DecodeParams(raw json.RawMessage, dst any) error {
	if t := bytes.TrimSpace(raw); len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil
	}
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("params: decode into %T, not a pointer to a struct", dst)
	}
	err := decodeStrict(raw, v.Elem(), "")
	var ke *KeyError
	if errors.As(err, &ke) && ke.Err.Error() == "unknown key" {
		ke.Err = fmt.Errorf("unknown key (known keys: %s)", knownKeys(v.Elem().Type()))
	}
	if err != nil {
		return fmt.Errorf("params: %w", err)
	}
	return nil
}

// knownKeys lists the json keys of a struct type, quoted, in field order.
func knownKeys(t reflect.Type) string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if tag := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]; tag != "" && tag != "-" {
			keys = append(keys, strconv.Quote(tag))
		}
	}
	return strings.Join(keys, ", ")
}

// decodeStrict decodes a JSON object into the struct v key by key, so that an unknown key or a
// bad value is reported with its dotted name.
func decodeStrict(data []byte, v reflect.Value, prefix string) error {
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&fields)
	if err == nil && fields == nil {
		err = errors.New("null")
	}
	if err != nil {
		if prefix == "" {
			return fmt.Errorf("not a JSON object: %w", err)
		}
		return keyErr(strings.TrimSuffix(prefix, "."), "want a JSON object: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	byTag := make(map[string]reflect.Value, v.NumField())
	for i := 0; i < v.NumField(); i++ {
		tag := strings.Split(v.Type().Field(i).Tag.Get("json"), ",")[0]
		if tag != "" && tag != "-" {
			byTag[tag] = v.Field(i)
		}
	}
	for key, raw := range fields {
		field, ok := byTag[key]
		if !ok {
			return keyErr(prefix+key, "unknown key")
		}
		if field.Kind() == reflect.Struct && field.Type() != reflect.TypeOf(Duration{}) {
			if err := decodeStrict(raw, field, prefix+key+"."); err != nil {
				return err
			}
			continue
		}
		if field.Type() == rawMessageType {
			field.SetBytes(append([]byte(nil), raw...))
			continue
		}
		if err := json.Unmarshal(raw, field.Addr().Interface()); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return keyErr(prefix+key, "want %s, got JSON %s", te.Type, te.Value)
			}
			return keyErr(prefix+key, "%v", err)
		}
	}
	return nil
}

// Validate checks every value and reports the first wrong one by its key.
func (c *Config) Validate() error {
	if c.Addr == "" && c.TLSAddr == "" {
		return keyErr("addr", "both addr and tls_addr are empty: set at least one, such as \":6881\"")
	}
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return keyErr("addr", "want host:port such as \":6881\", or \"\" for HTTPS only: %v", err)
		}
	}
	if c.TLSAddr != "" {
		if _, _, err := net.SplitHostPort(c.TLSAddr); err != nil {
			return keyErr("tls_addr", "want host:port such as \":443\", or \"\" for no HTTPS: %v", err)
		}
		if c.TLSCertFile == "" {
			return keyErr("tls_cert_file", "tls_addr is set: want the path of a PEM certificate (chain)")
		}
		if c.TLSKeyFile == "" {
			return keyErr("tls_key_file", "tls_addr is set: want the path of the certificate's PEM private key")
		}
	}
	if c.UDPAddr != "" {
		if _, _, err := net.SplitHostPort(c.UDPAddr); err != nil {
			return keyErr("udp_addr", "want host:port such as \":6881\", or \"\" for no UDP frontend: %v", err)
		}
	}
	if c.UDPReaders < 0 || c.UDPReaders > MaxUDPReaders {
		return keyErr("udp_readers", "must be from 0 (one per CPU) to %d, got %d", MaxUDPReaders, c.UDPReaders)
	}
	if c.UDPBatchSize < 1 || c.UDPBatchSize > MaxUDPBatchSize {
		return keyErr("udp_batch_size", "must be from 1 (no batching) to %d, got %d", MaxUDPBatchSize, c.UDPBatchSize)
	}
	if err := c.validateWS(); err != nil {
		return err
	}
	if c.Tracker.Name == "" {
		return keyErr("tracker.driver", "must name a tracker driver, such as \"memory\"")
	}
	if c.Backend.Name == "" {
		return keyErr("backend.driver", "must name a backend driver, such as \"noop\"")
	}
	positive := []struct {
		key string
		d   Duration
	}{
		{"announce", c.Announce},
		{"min_announce", c.MinAnnounce},
		{"request_timeout", c.RequestTimeout},
		{"reap_interval", c.ReapInterval},
		{"peer_timeout", c.PeerTimeout},
		{"shutdown_timeout", c.ShutdownTimeout},
	}
	for _, p := range positive {
		if p.d.Duration <= 0 {
			return keyErr(p.key, "must be a positive duration, got %s", p.d.Duration)
		}
	}
	for _, p := range []struct {
		key string
		d   Duration
	}{
		{"http_read_header_timeout", c.HTTPReadHeaderTimeout},
		{"http_write_timeout", c.HTTPWriteTimeout},
		{"http_idle_timeout", c.HTTPIdleTimeout},
		{"mem_stats_interval", c.MemStatsInterval},
	} {
		if p.d.Duration < 0 {
			return keyErr(p.key, "must not be negative, got %s", p.d.Duration)
		}
	}
	if c.MaxConnections < 0 {
		return keyErr("max_connections", "must be 0 (derived from the open files limit) or positive, got %d", c.MaxConnections)
	}
	if c.MaxConnectionsPerIP < 0 {
		return keyErr("max_connections_per_ip", "must be 0 (no cap) or positive, got %d", c.MaxConnectionsPerIP)
	}
	if c.MinAnnounce.Duration > c.Announce.Duration {
		return keyErr("min_announce", "%s is longer than announce (%s)", c.MinAnnounce.Duration, c.Announce.Duration)
	}
	if c.PeerTimeout.Duration <= c.Announce.Duration {
		return keyErr("peer_timeout", "%s must be longer than announce (%s), or every peer is reaped between two announces",
			c.PeerTimeout.Duration, c.Announce.Duration)
	}
	if err := c.RateLimit.validate(); err != nil {
		return err
	}
	if c.FullScrapeEnabled {
		if c.PrivateEnabled {
			return keyErr("full_scrape_enabled", "a full scrape would show every swarm of a private site: public mode only")
		}
		if c.FullScrapeInterval.Duration < time.Second {
			return keyErr("full_scrape_interval", "must be at least 1s, got %s", c.FullScrapeInterval.Duration)
		}
	}
	if c.LogVerbosity != nil && (*c.LogVerbosity < 0 || *c.LogVerbosity > 10) {
		return keyErr("log_verbosity", "must be from 0 to 10, got %d", *c.LogVerbosity)
	}
	switch c.AccessListMode {
	case "", "off":
	case "allow", "deny":
		if c.AccessListFile == "" {
			return keyErr("access_list_file", "must name the list's file when access_list_mode is %q", c.AccessListMode)
		}
	default:
		return keyErr("access_list_mode", "want \"off\", \"allow\" or \"deny\", got %q", c.AccessListMode)
	}
	if c.AdminToken != "" && len(c.AdminToken) < MinAdminToken {
		return keyErr("admin_token", "must be at least %d characters (a long random string), got %d", MinAdminToken, len(c.AdminToken))
	}
	if c.MaxNumWant < 1 {
		return keyErr("max_num_want", "must be at least 1, got %d", c.MaxNumWant)
	}
	if c.DefaultNumWant < 0 || c.DefaultNumWant > c.MaxNumWant {
		return keyErr("default_num_want", "must be between 0 and max_num_want (%d), got %d", c.MaxNumWant, c.DefaultNumWant)
	}
	if c.MaxScrapeInfoHashes < 1 {
		return keyErr("max_scrape_infohashes", "must be at least 1, got %d", c.MaxScrapeInfoHashes)
	}
	if c.PreferredIPv4Subnet < 0 || c.PreferredIPv4Subnet > 32 {
		return keyErr("preferred_ipv4_subnet", "must be a prefix length from 0 to 32, got %d", c.PreferredIPv4Subnet)
	}
	if c.PreferredIPv6Subnet < 0 || c.PreferredIPv6Subnet > 128 {
		return keyErr("preferred_ipv6_subnet", "must be a prefix length from 0 to 128, got %d", c.PreferredIPv6Subnet)
	}
	if _, err := c.TrustedProxyPrefixes(); err != nil {
		return err
	}
	if c.RealIPHeader != "" && len(c.TrustedProxies) == 0 {
		return keyErr("real_ip_header", "is set but trusted_proxies is empty, so the header would never be honoured")
	}
	if c.StatsAddr != "" {
		if _, _, err := net.SplitHostPort(c.StatsAddr); err != nil {
			return keyErr("stats_addr", "want host:port such as \"127.0.0.1:6880\": %v", err)
		}
	}
	if c.PprofEnabled && (c.StatsAddr == "" || !c.StatsEnabled) {
		return keyErr("pprof_enabled", "needs stats_enabled and a stats_addr of its own, so that profiles are never served on the public tracker port")
	}
	if c.GCPercent < 10 || c.GCPercent > 1000 {
		return keyErr("gc_percent", "must be between 10 and 1000, got %d", c.GCPercent)
	}
	if c.GCMinGrowthMB < 0 || c.GCMinGrowthMB > 65536 {
		return keyErr("gc_min_growth_mb", "must be between 0 and 65536, got %d", c.GCMinGrowthMB)
	}
	if c.MemoryTrimInterval.Duration < 0 {
		return keyErr("memory_trim_interval", "must not be negative, got %s", c.MemoryTrimInterval.Duration)
	}
	if c.StatsBufferSize < 0 {
		return keyErr("stats_buffer_size", "must not be negative, got %d", c.StatsBufferSize)
	}
	if c.IncludeMemStats && c.MemStatsInterval.Duration == 0 {
		return keyErr("mem_stats_interval", "must be positive when include_mem_stats is on")
	}
	switch c.ReportFormat {
	case "json", "text":
	default:
		return keyErr("report_format", "must be \"json\" (OPSnet Ocelot 2.x) or \"text\" (WhatCD Ocelot 1.0), got %q", c.ReportFormat)
	}
	if c.PrivateEnabled {
		if c.SitePassword == "" {
			return keyErr("site_password", "must be set in private mode: it is Gazelle's TRACKER_SECRET")
		}
		if c.ReportPassword == "" {
			return keyErr("report_password", "must be set in private mode: it is Gazelle's TRACKER_REPORTKEY")
		}
	}
	for _, p := range []struct {
		key string
		d   Duration
	}{
		{"announce_jitter", c.AnnounceJitter},
		{"deletion_reason_lifetime", c.DeletionReasonLifetime},
		{"baseline_lifetime", c.BaselineLifetime},
	} {
		if p.d.Duration < 0 {
			return keyErr(p.key, "must not be negative, got %s", p.d.Duration)
		}
	}
	for i, prefix := range c.ClientWhitelist {
		if prefix == "" {
			return keyErr(fmt.Sprintf("client_whitelist[%d]", i), "empty peer_id prefix")
		}
	}
	return nil
}

// TrustedProxyPrefixes parses trusted_proxies: each entry is a CIDR prefix or a single address.
func (c *Config) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for i, s := range c.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, keyErr(fmt.Sprintf("trusted_proxies[%d]", i), "want an address or a CIDR prefix, got %q", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (r *RateLimit) validate() error {
	for _, f := range []struct {
		key   string
		rate  float64
		burst int
	}{
		{"announce", r.AnnounceRate, r.AnnounceBurst},
		{"scrape", r.ScrapeRate, r.ScrapeBurst},
	} {
		if f.rate < 0 || f.rate > 1e9 || f.rate != f.rate {
			return keyErr("rate_limit."+f.key+"_rate", "must be from 0 (no limit) to 1e9 requests a second, got %v", f.rate)
		}
		if f.burst < 0 || f.burst > 1e9 {
			return keyErr("rate_limit."+f.key+"_burst", "must be from 0 (10 seconds' worth) to 1e9, got %d", f.burst)
		}
	}
	if r.IPv4Prefix < 8 || r.IPv4Prefix > 32 {
		return keyErr("rate_limit.ipv4_prefix", "must be from 8 to 32, got %d", r.IPv4Prefix)
	}
	if r.IPv6Prefix < 16 || r.IPv6Prefix > 128 {
		return keyErr("rate_limit.ipv6_prefix", "must be from 16 to 128, got %d", r.IPv6Prefix)
	}
	if r.TableSize < 4 || r.TableSize > MaxRateLimitTable {
		return keyErr("rate_limit.table_size", "must be from 4 to %d, got %d", MaxRateLimitTable, r.TableSize)
	}
	return nil
}

// LiveKeys are the keys whose new values a running tracker takes on a reload (SIGHUP); a
// change to any other key needs a restart. A section's name stands for all its keys.
var LiveKeys = []string{
	"announce", "min_announce", "announce_jitter", "default_num_want", "max_num_want",
	"client_whitelist_enabled", "client_whitelist", "access_list_mode", "access_list_file",
	"rate_limit.announce_rate", "rate_limit.announce_burst", "rate_limit.scrape_rate",
	"rate_limit.scrape_burst", "log_verbosity",
}

// Changed returns the keys whose values differ between a and b, sorted, with the keys of a
// section such as rate_limit by their dotted names.
func Changed(a, b *Config) []string {
	var out []string
	diffValues(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "", &out)
	sort.Strings(out)
	return out
}

func diffValues(a, b reflect.Value, prefix string, out *[]string) {
	for i := 0; i < a.NumField(); i++ {
		tag := strings.Split(a.Type().Field(i).Tag.Get("json"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct && fa.Type() != reflect.TypeOf(Duration{}) && fa.Type() != reflect.TypeOf(DriverConfig{}) {
			diffValues(fa, fb, prefix+tag+".", out)
			continue
		}
		if !equalValues(fa, fb) {
			*out = append(*out, prefix+tag)
		}
	}
}

// equalValues compares two fields; a driver's params compare as JSON text without spaces.
func equalValues(a, b reflect.Value) bool {
	if a.Type() == reflect.TypeOf(DriverConfig{}) {
		x, y := a.Interface().(DriverConfig), b.Interface().(DriverConfig)
		var cx, cy bytes.Buffer
		_ = json.Compact(&cx, x.Params)
		_ = json.Compact(&cy, y.Params)
		return x.Name == y.Name && bytes.Equal(cx.Bytes(), cy.Bytes())
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// The WebSocket tracker's defaults and bounds. WebTorrent sends at most 5 offers of a few KB of
// SDP each; the reference tracker relays at most 82 offers per announce.
const (
	DefaultWSMaxMessageBytes = 64 << 10
	MaxWSMaxMessageBytes     = 16 << 20
	DefaultWSMaxOffers       = 82
	MaxWSMaxOffers           = 1000
	MaxWSSendQueue           = 1 << 16
)

func (c *Config) validateWS() error {
	if c.WSMaxMessageBytes < 1024 || c.WSMaxMessageBytes > MaxWSMaxMessageBytes {
		return keyErr("ws_max_message_bytes", "must be from 1024 to %d, got %d", MaxWSMaxMessageBytes, c.WSMaxMessageBytes)
	}
	if c.WSMaxOffers < 0 || c.WSMaxOffers > MaxWSMaxOffers {
		return keyErr("ws_max_offers", "must be from 0 (relay none) to %d, got %d", MaxWSMaxOffers, c.WSMaxOffers)
	}
	if c.WSSendQueue < 1 || c.WSSendQueue > MaxWSSendQueue {
		return keyErr("ws_send_queue", "must be from 1 to %d messages, got %d", MaxWSSendQueue, c.WSSendQueue)
	}
	if c.WSIdleTimeout.Duration < time.Second {
		return keyErr("ws_idle_timeout", "must be at least 1s, got %s", c.WSIdleTimeout.Duration)
	}
	if c.WSPingInterval.Duration != 0 && (c.WSPingInterval.Duration < time.Second || c.WSPingInterval.Duration >= c.WSIdleTimeout.Duration) {
		return keyErr("ws_ping_interval", "must be 0 (no pings) or from 1s to less than ws_idle_timeout (%s), got %s", c.WSIdleTimeout.Duration, c.WSPingInterval.Duration)
	}
	return nil
}
