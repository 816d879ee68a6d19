package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pctDecode decodes a query value as a tracker must: %XX is one byte, every other byte is
// itself.
func pctDecode(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) {
			return nil, errors.New("short escape")
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("bad escape %q", s[i:i+3])
		}
		out = append(out, byte(v))
		i += 2
	}
	return out, nil
}

// fakeTracker checks every request the generator sends against the workload's definition (the
// hash is in the pool; the peer's port, source address and seeder state are its own; the first
// announce of a peer is "started") and answers as behave says.
type fakeTracker struct {
	torrents int
	numWant  int
	hosts    int    // source addresses the peers are spread over: MaxHosts, or Conns for http-fill
	behave   string // "ok", "failure", "500", "garbage", "close", "short-scrape"
	// fill is set for http-fill, whose peers offset on seed by FillSeeder (instead of
	// IsSeeder) in torrent (i-offset) % torrents; users is its PrivateUsers: announces must
	// come with the peer's user's passkey in the path, scrapes with user 0's.
	fill   bool
	offset int
	users  int

	mu      sync.Mutex
	pool    map[[20]byte]bool
	seen    map[int]bool
	invalid []string
}

func (f *fakeTracker) bad(w http.ResponseWriter, format string, args ...any) {
	f.mu.Lock()
	if len(f.invalid) < 5 {
		f.invalid = append(f.invalid, fmt.Sprintf(format, args...))
	}
	f.mu.Unlock()
	http.Error(w, "bad request", http.StatusBadRequest)
}

func (f *fakeTracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	params := map[string][]string{}
	for _, kv := range strings.Split(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		params[k] = append(params[k], v)
	}
	var hashes [][]byte
	for _, v := range params["info_hash"] {
		h, err := pctDecode(v)
		if err != nil || len(h) != 20 || !f.pool[[20]byte(h)] {
			f.bad(w, "info_hash %q not in the pool", v)
			return
		}
		hashes = append(hashes, h)
	}
	one := func(k string) string {
		if len(params[k]) != 1 {
			return ""
		}
		return params[k][0]
	}
	path := r.URL.Path
	if f.users > 0 {
		key, rest, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
		if !ok || len(key) != PasskeyLen {
			f.bad(w, "path %s without a passkey", path)
			return
		}
		path = "/" + rest
		if path == "/scrape" && key != string(ptr(Passkey(0))[:]) {
			f.bad(w, "scrape with passkey %s", key)
			return
		}
		r.Header.Set("X-Passkey", key)
	}
	switch path {
	case "/announce":
		if len(hashes) != 1 {
			f.bad(w, "%d info_hash", len(hashes))
			return
		}
		id, err := pctDecode(one("peer_id"))
		if err != nil || len(id) != 20 || !bytes.HasPrefix(id, []byte("-BN0001-")) {
			f.bad(w, "peer_id %q", one("peer_id"))
			return
		}
		i64, err := strconv.ParseInt(string(id[8:]), 16, 64)
		i := int(i64)
		if err != nil || PeerID(i) != [20]byte(id) {
			f.bad(w, "peer_id %q", id)
			return
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ip := HostIP(PeerHost(i, f.hosts))
		if host != net.IP(ip[:]).String() {
			f.bad(w, "peer %d from %s, want %v", i, host, net.IP(ip[:]))
			return
		}
		wantLeft := "1000"
		if (!f.fill && IsSeeder(i)) || (f.fill && FillSeeder(i-f.offset, f.torrents)) {
			wantLeft = "0"
		}
		if f.fill && InfoHash((i-f.offset)%f.torrents) != [20]byte(hashes[0]) {
			f.bad(w, "peer %d sent to the wrong torrent", i)
			return
		}
		if f.users > 0 && r.Header.Get("X-Passkey") != string(ptr(Passkey(PeerUser(i, f.users)))[:]) {
			f.bad(w, "peer %d with passkey %s", i, r.Header.Get("X-Passkey"))
			return
		}
		if one("port") != strconv.Itoa(int(PeerPort(i, f.hosts))) || one("left") != wantLeft ||
			one("numwant") != strconv.Itoa(f.numWant) || one("compact") != "1" {
			f.bad(w, "peer %d: query %s", i, r.URL.RawQuery)
			return
		}
		f.mu.Lock()
		first := !f.seen[i]
		f.seen[i] = true
		f.mu.Unlock()
		if (one("event") == "started") != first {
			f.bad(w, "peer %d: event %q on first=%v", i, one("event"), first)
			return
		}
	case "/scrape":
		if len(hashes) == 0 {
			f.bad(w, "scrape without info_hash")
			return
		}
	default:
		f.bad(w, "path %s", path)
		return
	}
	var body []byte
	switch f.behave {
	case "failure":
		body = []byte("d14:failure reason9:go away !8:intervali60ee")
	case "500":
		http.Error(w, "oops", http.StatusInternalServerError)
		return
	case "garbage":
		body = []byte("<html>not bencode</html>")
	default:
		if path == "/scrape" {
			n := len(hashes)
			if f.behave == "short-scrape" {
				n--
			}
			body = []byte("d5:filesd")
			for _, h := range hashes[:n] {
				body = append(body, "20:"...)
				body = append(body, h...)
				body = append(body, "d8:completei1e10:downloadedi0e10:incompletei2ee"...)
			}
			body = append(body, "ee"...)
		} else {
			body = []byte("d8:completei1e10:incompletei2e8:intervali1800e5:peers6:\x7f\x00\x00\x01\x1a\xe1e")
		}
	}
	if f.behave == "close" {
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// TestHTTPAgainstFake runs the HTTP workloads against a fake tracker that checks what the
// generator sends and answers well or badly, and checks what the generator makes of it.
func TestHTTPAgainstFake(t *testing.T) {
	tests := []struct {
		name      string
		mode      string
		keepAlive bool
		hashes    int
		behave    string
		verdict   string // the only verdict expected
		reconnect bool   // keep-alive connections must have been redialled
	}{
		{"announce keep-alive", ModeHTTPAnnounce, true, 0, "ok", "ok", false},
		{"announce per request", ModeHTTPAnnounce, false, 0, "ok", "ok", false},
		{"announce server closes", ModeHTTPAnnounce, true, 0, "close", "ok", true},
		{"announce failure", ModeHTTPAnnounce, true, 0, "failure", "failure", false},
		{"announce 500", ModeHTTPAnnounce, false, 0, "500", "malformed", false},
		{"announce garbage", ModeHTTPAnnounce, true, 0, "garbage", "malformed", false},
		{"scrape 1", ModeHTTPScrape, true, 1, "ok", "ok", false},
		{"scrape 10", ModeHTTPScrape, false, 10, "ok", "ok", false},
		{"scrape 10 short answer", ModeHTTPScrape, true, 10, "short-scrape", "malformed", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeTracker{torrents: 100, numWant: 30, hosts: MaxHosts, behave: tt.behave, pool: map[[20]byte]bool{}, seen: map[int]bool{}}
			for i := range f.torrents {
				f.pool[InfoHash(i)] = true
			}
			srv := httptest.NewServer(f)
			defer srv.Close()
			res, err := Run(context.Background(), Config{
				Mode: tt.mode, Target: srv.Listener.Addr().String(), KeepAlive: tt.keepAlive,
				Conns: 4, Torrents: f.torrents, Peers: 1000, NumWant: f.numWant, ScrapeHashes: tt.hashes,
				Duration: 300 * time.Millisecond, Timeout: 2 * time.Second,
			}, nil)
			require.NoError(t, err)
			f.mu.Lock()
			assert.Empty(t, f.invalid, "requests the fake refused")
			f.mu.Unlock()
			require.Len(t, res.ByVerdict, 1, "verdicts: %v, first error: %s", res.ByVerdict, res.FirstError)
			assert.Positive(t, res.ByVerdict[tt.verdict], "verdicts: %v", res.ByVerdict)
			if tt.verdict == "ok" {
				assert.Zero(t, res.Errors)
				assert.Equal(t, res.Responses, res.ByVerdict["ok"])
			} else {
				assert.Zero(t, res.Responses)
				assert.NotEmpty(t, res.FirstError)
			}
			if tt.behave == "failure" {
				assert.Contains(t, res.FirstError, "go away !")
			}
			assert.Equal(t, tt.reconnect, res.Reconnects > 0, "reconnects: %d", res.Reconnects)
		})
	}
}

// ptr returns a pointer to a copy of v, so that an array result can be sliced.
func ptr[T any](v T) *T { return &v }

// TestHTTPFillAgainstFake checks that an HTTP fill announces every peer exactly once, from its
// own address, to its torrent, in its role and with its passkey, also when the server closes
// the connection after every answer, and that http-verify reads the scrape counts back.
func TestHTTPFillAgainstFake(t *testing.T) {
	tests := []struct {
		behave        string
		offset, users int
	}{
		{"ok", 0, 0},
		{"close", 0, 0},
		{"ok", 400, 0}, // the churn's replacements
		{"ok", 0, 7},   // private mode
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s offset %d users %d", tt.behave, tt.offset, tt.users), func(t *testing.T) {
			const conns, peers, torrents = 4, 400, 40
			f := &fakeTracker{torrents: torrents, numWant: 0, hosts: conns, behave: tt.behave, fill: true,
				offset: tt.offset, users: tt.users, pool: map[[20]byte]bool{}, seen: map[int]bool{}}
			for i := range torrents {
				f.pool[InfoHash(i)] = true
			}
			srv := httptest.NewServer(f)
			defer srv.Close()
			cfg := Config{
				Mode: ModeHTTPFill, Target: srv.Listener.Addr().String(), Conns: conns,
				FillPeers: peers, FillTorrents: torrents, FillOffset: tt.offset, PrivateUsers: tt.users,
				Timeout: 2 * time.Second,
			}
			res, err := Run(context.Background(), cfg, nil)
			require.NoError(t, err)
			f.mu.Lock()
			assert.Empty(t, f.invalid, "requests the fake refused")
			assert.Len(t, f.seen, peers)
			for i := range f.seen {
				assert.True(t, i >= tt.offset && i < tt.offset+peers, "peer %d out of the fill", i)
			}
			f.mu.Unlock()
			assert.Zero(t, res.Errors, "first error: %s", res.FirstError)
			assert.Equal(t, uint64(peers), res.Kinds["announce"])
			assert.Equal(t, tt.behave == "close", res.Reconnects > 0)

			// The fake answers every scrape with 1 seeder and 2 leechers; the fill sent 5 and 5.
			cfg.Mode, cfg.VerifySample = ModeHTTPVerify, 20
			res, err = Run(context.Background(), cfg, nil)
			require.NoError(t, err)
			require.NotNil(t, res.Verify)
			f.mu.Lock()
			assert.Empty(t, f.invalid, "scrapes the fake refused")
			f.mu.Unlock()
			assert.Equal(t, VerifyResult{Torrents: 20, Mismatches: 20, Want: 200, Got: 60,
				WantSeeders: 100, GotSeeders: 20, WantLeechers: 100, GotLeechers: 40}, *res.Verify)
		})
	}
}
