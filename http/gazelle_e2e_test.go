package http_test

// Legacy Gazelle's exact bytes over TCP to a whole private-mode tracker started with
// chihaya.Start: its Host-less update and report requests reach net/http with a Host line
// (fast.Config.AddHost, on in private mode; package fast tests the rewriting itself).

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	nethttp "net/http"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/backend"
	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/http/fast"
	"github.com/chihaya/chihaya/tracker/models"
)

// siteBackend is a backend driver whose site holds what the test put in site.
type siteBackend struct{ site *models.SiteState }

func (b siteBackend) New(json.RawMessage) (backend.Conn, error) { return b, nil }
func (siteBackend) RecordAnnounce(context.Context, *models.AnnounceDelta) error {
	return nil
}
func (siteBackend) Close(context.Context) error { return nil }
func (b siteBackend) Load(context.Context) (*models.SiteState, error) {
	st := *b.site
	return &st, nil
}

var (
	siteSecret   = strings.Repeat("s", 32)
	reportSecret = strings.Repeat("r", 32)
	alice        = strings.Repeat("a", 32)
	bob          = strings.Repeat("b", 32)
	siteHash     = models.InfoHash([]byte("\x12\x34Vx\x9a\xbc+~ab\x00\xff-_.AZ09\x20"))
)

func init() {
	backend.Register("hostless-test-site", siteBackend{site: &models.SiteState{
		Users:    []models.User{{ID: 1, Passkey: alice, CanLeech: true}},
		Torrents: []models.Torrent{{ID: 10, InfoHash: siteHash}},
	}})
}

// startPrivate runs a whole private-mode tracker on loopback and returns its address.
func startPrivate(t *testing.T, format string) string {
	t.Helper()
	c, _ := startTracker(t, "127.0.0.1:0", func(cfg *config.Config) {
		cfg.PrivateEnabled = true
		cfg.Backend = config.DriverConfig{Name: "hostless-test-site"}
		cfg.SitePassword, cfg.ReportPassword = siteSecret, reportSecret
		cfg.ReportFormat = format
	})
	return c.Addr().String()
}

// rawExchange writes each of writes to a fresh connection to addr and reads until EOF, as
// Gazelle's fsockopen client does.
func rawExchange(t *testing.T, addr string, writes ...string) string {
	t.Helper()
	resp, err := rawTry(addr, writes...)
	require.NoError(t, err)
	return resp
}

func rawTry(addr string, writes ...string) (string, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return "", err
	}
	for _, w := range writes {
		if _, err := io.WriteString(conn, w); err != nil {
			return "", err
		}
	}
	resp, err := io.ReadAll(conn)
	return string(resp), err
}

// assertGazelleSuccess checks a raw answer the way both Gazelle generations do, and more.
func assertGazelleSuccess(t *testing.T, resp string) {
	t.Helper()
	require.True(t, strings.HasPrefix(resp, "HTTP/1.1 200 OK\r\n"), "status line of %q", resp)
	head, body, ok := strings.Cut(resp, "\r\n\r\n")
	require.True(t, ok, "no end of head in %q", resp)
	assert.Contains(t, head, "\r\nContent-Length: 7\r\n")
	assert.NotContains(t, strings.ToLower(head), "transfer-encoding")
	assert.Equal(t, "success", body)
	// Legacy Gazelle: the text after the last "\n" of the raw response.
	assert.Equal(t, "success", resp[strings.LastIndexByte(resp, '\n')+1:])
}

func legacyUpdate(query string) string {
	return "GET /" + siteSecret + "/update?" + query + " HTTP/1.1\r\nConnection: Close\r\n\r\n"
}

func legacyReport(query string) string {
	return "GET /" + reportSecret + "/report?" + query + " HTTP/1.1\r\nConnection: Close\r\n\r\n"
}

// userReport returns the text report of a user's peers.
func userReport(t *testing.T, addr, passkey string) string {
	t.Helper()
	resp := rawExchange(t, addr, legacyReport("get=user&key="+passkey))
	require.True(t, strings.HasPrefix(resp, "HTTP/1.1 200 OK\r\n"), resp)
	_, body, _ := strings.Cut(resp, "\r\n\r\n")
	return body
}

// announceHash has the user with passkey announce siteHash as a seeder over HTTP.
func announceHash(t *testing.T, addr, passkey string, peer byte) map[string]any {
	t.Helper()
	q := "info_hash=" + escapeAll(siteHash[:]) + "&peer_id=" + strings.Repeat(string(rune(peer)), 20) +
		"&port=6881&uploaded=0&downloaded=0&left=0&compact=1"
	resp, err := nethttp.Get("http://" + addr + "/" + passkey + "/announce?" + q)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var d map[string]any
	require.NoError(t, bencode.Unmarshal(b, &d), "%q", b)
	return d
}

func TestHostlessLegacyGazelleOverTCP(t *testing.T) {
	addr := startPrivate(t, "text")

	t.Run("legacy Gazelle, no Host", func(t *testing.T) {
		assert.Equal(t, "Passkey not found", announceHash(t, addr, bob, 'b')["failure reason"])
		assertGazelleSuccess(t, rawExchange(t, addr, legacyUpdate("action=add_user&passkey="+bob+"&id=2&visible=1")))
		assert.NotContains(t, announceHash(t, addr, bob, 'b'), "failure reason")
		assert.Equal(t, "0 leeching\n1 seeding\nsuccess", userReport(t, addr, bob))
	})

	t.Run("OPSnet Gazelle, with Host", func(t *testing.T) {
		resp := rawExchange(t, addr, "GET /"+siteSecret+"/update?action=remove_user&passkey="+bob+" HTTP/1.1\r\nHost: tracker.example\r\nConnection: Close\r\n\r\n")
		assertGazelleSuccess(t, resp)
		assert.Equal(t, "Passkey not found", announceHash(t, addr, bob, 'b')["failure reason"])
	})

	t.Run("pipelined", func(t *testing.T) {
		first := "GET /" + siteSecret + "/update?action=add_user&passkey=" + bob + "&id=2 HTTP/1.1\r\n\r\n"
		resp := rawExchange(t, addr, first+legacyUpdate("action=change_passkey&oldpasskey="+bob+"&newpasskey="+strings.Repeat("c", 32)))
		require.Equal(t, 2, strings.Count(resp, "HTTP/1.1 200 OK\r\n"), resp)
		second := strings.Index(resp[1:], "HTTP/1.1 200 OK") + 1
		assertGazelleSuccess(t, resp[:second])
		assertGazelleSuccess(t, resp[second:])
		assert.Equal(t, "success", userReport(t, addr, bob), "bob's passkey was changed")
		// The same user (ID 2) under the new passkey: its peer from before is still in the swarm.
		assert.Equal(t, "0 leeching\n1 seeding\nsuccess", userReport(t, addr, strings.Repeat("c", 32)))
	})

	t.Run("one byte per write", func(t *testing.T) {
		req := legacyUpdate("action=remove_user&passkey=" + strings.Repeat("c", 32))
		assertGazelleSuccess(t, rawExchange(t, addr, strings.Split(req, "")...))
		assert.Equal(t, "success", userReport(t, addr, strings.Repeat("c", 32)))
	})

	t.Run("a wrong secret", func(t *testing.T) {
		resp := rawExchange(t, addr, "GET /"+strings.Repeat("x", 32)+"/update?action=remove_user&passkey="+alice+" HTTP/1.1\r\nConnection: Close\r\n\r\n")
		assert.True(t, strings.HasSuffix(resp, "\r\n\r\nd14:failure reason22:Authentication failure8:intervali5400e12:min intervali5400ee"), resp)
		assert.NotContains(t, announceHash(t, addr, alice, 'a'), "failure reason")
	})

	t.Run("stats", func(t *testing.T) {
		resp := rawExchange(t, addr, legacyReport("get=stats"))
		require.True(t, strings.HasPrefix(resp, "HTTP/1.1 200 OK\r\n"), resp)
		assert.Regexp(t, `\r\n\r\nUptime: 0 days, 00:00:\d\d\n\d+ connections opened\n\d+ open connections\n\d+ connections/s\n\d+ requests handled\n`, resp)
		assert.Regexp(t, `\n\d+ seeders tracked\n[1-9]\d* bytes read\n[1-9]\d* bytes written\n1800 announce interval\n0 announce jitter\nsuccess$`, resp)
	})

	for _, tc := range []struct {
		name string
		in   string
	}{
		{name: "garbage", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"},
		{name: "no request line", in: "\r\n\r\n"},
		{name: "a header without a colon", in: "GET / HTTP/1.1\r\nnonsense\r\n\r\n"},
		{name: "a head over the limit", in: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 2*fast.MaxHeadBytes) + "\r\n\r\n"},
		{name: "half a head, then close", in: "GET /" + siteSecret + "/upd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
			_, err = io.WriteString(conn, tc.in)
			require.NoError(t, err)
			require.NoError(t, conn.(*net.TCPConn).CloseWrite())
			// The server answers 4xx and closes, or just closes (a reset included).
			resp, err := io.ReadAll(conn)
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the connection open")
			if len(resp) > 0 {
				assert.True(t, strings.HasPrefix(string(resp), "HTTP/1.1 4"), "answer %q", resp)
			}
		})
	}

	// The tracker still serves after all that.
	assertGazelleSuccess(t, rawExchange(t, addr, legacyUpdate("action=trace_user&passkey="+alice+"&trace=1")))
}

func TestHostlessReportJSONOverTCP(t *testing.T) {
	addr := startPrivate(t, "json")
	require.NotContains(t, announceHash(t, addr, alice, 'a'), "failure reason")
	resp := rawExchange(t, addr, "GET /"+reportSecret+"/report?get=user&key="+alice+" HTTP/1.1\r\nHost: tracker.example\r\nConnection: Close\r\n\r\n")
	_, body, _ := strings.Cut(resp, "\r\n\r\n")
	assert.JSONEq(t, `{"id":1,"leeching":0,"seeding":1,"deleted":0,"protected":0,"can_leech":1}`, body)

	// The stats come from the running aggregator, which applies requests in batches.
	var doc map[string]struct {
		Type  string `json:"type"`
		Value any    `json:"value"`
	}
	assert.Eventually(t, func() bool {
		doc = nil
		resp, err := rawTry(addr, legacyReport("get=stats"))
		if err != nil {
			return false
		}
		_, body, _ := strings.Cut(resp, "\r\n\r\n")
		if json.Unmarshal([]byte(body), &doc) != nil {
			return false
		}
		return doc["successful announcements"].Value == float64(1)
	}, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, float64(1), doc["successful announcements"].Value)
	assert.Equal(t, float64(1), doc["seeders tracked"].Value)
	assert.Equal(t, "number", doc["announce interval"].Type)
	assert.Equal(t, float64(1800), doc["announce interval"].Value)
}
