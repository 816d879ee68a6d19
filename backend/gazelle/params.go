package gazelle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/chihaya/chihaya/config"
)

// Schema names the layout of a Gazelle database: which tables hold the transfer statistics that
// the tracker reads and writes.
type Schema string

// The supported layouts.
const (
	// OPSnet is current OPSnet Gazelle (Ocelot 2.x): user transfer totals in users_leech_stats,
	// torrent swarm counters in torrents_leech_stats.
	OPSnet Schema = "opsnet"
	// WhatCD is classic WhatCD Gazelle (Ocelot 1.0): the same counters as columns of users_main
	// and torrents.
	WhatCD Schema = "whatcd"
)

// Params configure the gazelle driver: the "params" object of the backend section of the
// configuration. The zero value is not valid; start from DefaultParams or use ParseParams.
type Params struct {
	// DSN is the go-sql-driver/mysql data source name of the Gazelle database, such as
	// "gazelle:secret@tcp(127.0.0.1:3306)/gazelle". It must name a database. Required.
	DSN string
	// Schema is the database layout. Default OPSnet.
	Schema Schema
	// FlushInterval is how often queued writes go to the database (Ocelot's
	// schedule_interval). Default 3s.
	FlushInterval time.Duration
	// FlushTimeout bounds each step of a flush (connecting and BEGIN, each statement of up to
	// 1000 rows, COMMIT), so that a database that stops answering fails the flush, which is
	// retried, instead of stalling the queue. Default 30s.
	FlushTimeout time.Duration
	// QueueLimit caps the rows held in memory for the database (summed over its tables,
	// counting the batch being retried): while the database is unreachable, rows for keys
	// already queued keep merging, and rows for new keys beyond the limit are refused (see
	// Conn.RecordAnnounce). It also caps the token expiries waiting for the site. Default
	// 100000.
	QueueLimit int
	// ReadOnly keeps the tracker from writing to the database at all (Ocelot's readonly): for
	// a test instance beside the real tracker. No startup reset, no writes, no token callback.
	ReadOnly bool
	// SiteURL is where the site's tools.php lives, such as "http://127.0.0.1:8080" or
	// "https://site.example/gazelle": the freeleech-token expiry callback (protocol.md §3.9)
	// requests SiteURL + "/tools.php?key=…&type=expiretoken&action=ocelot&tokens=…". Empty
	// (the default) sends no callback; Gazelle then expires used tokens on its own schedule.
	SiteURL string
	// SitePassword is the key of that callback: Gazelle's TRACKER_SECRET (Ocelot's
	// site_password). Required with SiteURL.
	SitePassword string
}

// The JSON keys of Params, as they appear under params.
const (
	keyDSN           = "dsn"
	keySchema        = "schema"
	keyFlushInterval = "flush_interval"
	keyFlushTimeout  = "flush_timeout"
	keyQueueLimit    = "queue_limit"
	keyReadOnly      = "readonly"
	keySiteURL       = "site_url"
	keySitePassword  = "site_password"
)

// DefaultParams returns the value of every optional param left out of a configuration.
func DefaultParams() Params {
	return Params{
		Schema:        OPSnet,
		FlushInterval: 3 * time.Second,
		FlushTimeout:  30 * time.Second,
		QueueLimit:    100000,
	}
}

// ParseParams decodes the driver's raw params strictly over DefaultParams and validates them.
// An unknown key, a value of the wrong type or a missing required key is a *config.KeyError
// naming the key as "params.<key>". Errors never contain the DSN's password.
func ParseParams(raw json.RawMessage) (Params, error) {
	p := DefaultParams()
	fields, err := decodeObject(raw)
	if err != nil {
		return Params{}, err
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first error reported does not depend on map order
	for _, key := range keys {
		v := fields[key]
		switch key {
		case keyDSN:
			err = decodeValue(key, v, &p.DSN, `a string such as "user:password@tcp(127.0.0.1:3306)/gazelle"`)
		case keySchema:
			err = decodeValue(key, v, (*string)(&p.Schema), `"opsnet" or "whatcd"`)
		case keyFlushInterval:
			var d config.Duration
			if uerr := json.Unmarshal(v, &d); uerr != nil {
				err = keyErr(key, "%v", uerr)
			}
			p.FlushInterval = d.Duration
		case keyFlushTimeout:
			var d config.Duration
			if uerr := json.Unmarshal(v, &d); uerr != nil {
				err = keyErr(key, "%v", uerr)
			}
			p.FlushTimeout = d.Duration
		case keyQueueLimit:
			err = decodeValue(key, v, &p.QueueLimit, "an integer")
		case keyReadOnly:
			err = decodeValue(key, v, &p.ReadOnly, "true or false")
		case keySiteURL:
			err = decodeValue(key, v, &p.SiteURL, `a string such as "http://127.0.0.1:8080"`)
		case keySitePassword:
			// Never echo the value: it is a secret.
			if uerr := json.Unmarshal(v, &p.SitePassword); uerr != nil {
				err = keyErr(key, "want a string")
			}
		default:
			err = keyErr(key, "unknown key; the gazelle driver takes %s, %s, %s, %s, %s, %s, %s and %s",
				keyDSN, keySchema, keyFlushInterval, keyFlushTimeout, keyQueueLimit, keyReadOnly,
				keySiteURL, keySitePassword)
		}
		if err != nil {
			return Params{}, err
		}
	}
	if _, ok := fields[keyDSN]; !ok {
		return Params{}, keyErr(keyDSN, "missing: the gazelle driver needs the DSN of the Gazelle database, "+
			`such as "user:password@tcp(127.0.0.1:3306)/gazelle"`)
	}
	if err := p.Validate(); err != nil {
		return Params{}, err
	}
	return p, nil
}

// Validate checks every param and reports the first wrong one as a *config.KeyError.
func (p Params) Validate() error {
	if _, err := p.mysqlConfig(); err != nil {
		return err
	}
	switch p.Schema {
	case OPSnet, WhatCD:
	default:
		return keyErr(keySchema, "want %q or %q, got %q", OPSnet, WhatCD, string(p.Schema))
	}
	if p.FlushInterval <= 0 {
		return keyErr(keyFlushInterval, "must be a positive duration, got %s", p.FlushInterval)
	}
	if p.FlushTimeout <= 0 {
		return keyErr(keyFlushTimeout, "must be a positive duration, got %s", p.FlushTimeout)
	}
	if p.QueueLimit <= 0 {
		return keyErr(keyQueueLimit, "must be positive, got %d", p.QueueLimit)
	}
	if p.SiteURL != "" {
		if _, err := p.expireURL(); err != nil {
			return err
		}
		if p.SitePassword == "" {
			return keyErr(keySitePassword, "missing: the token expiry callback to %s needs the site's "+
				"TRACKER_SECRET", keySiteURL)
		}
	}
	return nil
}

// expireURL returns the token expiry callback's URL up to the token list:
// SiteURL/tools.php?key=<SitePassword>&type=expiretoken&action=ocelot&tokens=
func (p Params) expireURL() (string, error) {
	u, err := url.Parse(p.SiteURL)
	if err != nil {
		return "", keyErr(keySiteURL, "want a URL such as \"http://127.0.0.1:8080\": %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", keyErr(keySiteURL, "want an http or https URL, got scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return "", keyErr(keySiteURL, "names no host")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", keyErr(keySiteURL, "want the site's base URL, without user, query or fragment")
	}
	base := strings.TrimRight(u.String(), "/")
	return base + "/tools.php?key=" + url.QueryEscape(p.SitePassword) +
		"&type=expiretoken&action=ocelot&tokens=", nil
}

// defaultTimeout bounds dialling the database and the first ping when the DSN sets no
// timeout, so that an unreachable database fails the start quickly instead of hanging it.
const defaultTimeout = 10 * time.Second

// mysqlConfig parses the DSN and sets what the driver relies on: DATETIME columns scanned as
// time.Time, and a dial timeout.
func (p Params) mysqlConfig() (*mysql.Config, error) {
	if p.DSN == "" {
		return nil, keyErr(keyDSN, "must not be empty")
	}
	cfg, err := mysql.ParseDSN(p.DSN)
	if err != nil {
		// A DSN that does not parse may put part of its password anywhere in the driver's
		// message (as the network or the database name), so the message is dropped when it
		// shares a fragment with the part of the DSN before its last '@'.
		msg := err.Error()
		if at := strings.LastIndexByte(p.DSN, '@'); at >= 0 && sharesFragment(msg, p.DSN[:at], 4) {
			msg = "the DSN does not parse (message withheld: it would show the password)"
		}
		return nil, keyErr(keyDSN, `want a DSN such as "user:password@tcp(127.0.0.1:3306)/gazelle": %s`, msg)
	}
	if cfg.DBName == "" {
		return nil, keyErr(keyDSN, "names no database: want .../gazelle after the address")
	}
	cfg.ParseTime = true
	// Placeholders are filled in by the driver (escaped for the session's sql_mode), so that a
	// multi-row write is one round trip, not a prepare, an execute and a close.
	cfg.InterpolateParams = true
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	cfg.Logger = mysqlLogger{}
	return cfg, nil
}

// sharesFragment reports whether msg contains any n-byte substring of secret (or all of a
// shorter secret).
func sharesFragment(msg, secret string, n int) bool {
	if secret == "" {
		return false
	}
	if len(secret) <= n {
		return strings.Contains(msg, secret)
	}
	for i := 0; i+n <= len(secret); i++ {
		if strings.Contains(msg, secret[i:i+n]) {
			return true
		}
	}
	return false
}

func keyErr(key, format string, args ...any) error {
	return &config.KeyError{Key: "params." + key, Err: fmt.Errorf(format, args...)}
}

// decodeObject splits the params into their keys. Absent, empty or null params are an empty
// object, so that they fail on the missing DSN rather than on their shape.
func decodeObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return map[string]json.RawMessage{}, nil
	}
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(&fields); err != nil {
		return nil, &config.KeyError{Key: "params", Err: fmt.Errorf("want a JSON object: %w", err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &config.KeyError{Key: "params", Err: errors.New("trailing data after the JSON object")}
	}
	return fields, nil
}

// decodeValue decodes one param into dst; want says what the key takes, for the error. The
// value is echoed in the error except for the DSN, which may hold a password.
func decodeValue(key string, raw json.RawMessage, dst any, want string) error {
	if err := json.Unmarshal(raw, dst); err != nil {
		if key == keyDSN {
			return keyErr(key, "want %s", want)
		}
		return keyErr(key, "want %s, got JSON %s", want, raw)
	}
	return nil
}
