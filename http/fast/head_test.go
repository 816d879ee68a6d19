package fast

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseHead(t *testing.T) {
	const q = "info_hash=%00a&peer_id=x&port=1"
	for _, tc := range []struct {
		name      string
		in        string
		realIP    string
		limit     int
		want      Verdict
		route     Route
		passkey   string
		query     string
		close     bool
		http10    bool
		userAgent string
		realIPVal string
		hasRealIP bool
	}{
		{name: "announce", in: "GET /announce?" + q + " HTTP/1.1\r\nHost: x\r\n\r\n", want: HeadOK, route: RouteAnnounce, query: q},
		{name: "scrape", in: "GET /scrape?info_hash=a HTTP/1.1\r\n\r\n", want: HeadOK, route: RouteScrape, query: "info_hash=a"},
		{name: "passkey", in: "GET /0123abc/announce?a=b HTTP/1.1\r\n\r\n", want: HeadOK, route: RouteAnnounce, passkey: "0123abc", query: "a=b"},
		{name: "passkey scrape", in: "GET /k/scrape?a HTTP/1.1\r\n\r\n", want: HeadOK, route: RouteScrape, passkey: "k", query: "a"},
		{name: "passkey scrape, empty query", in: "GET /k/scrape? HTTP/1.1\r\n\r\n", want: HeadOK, route: RouteScrape, passkey: "k"},
		{name: "passkey path without a query", in: "GET /k/announce HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "WebSocket upgrade goes to net/http", in: "GET /announce HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n", want: HeadHandoff},
		{name: "scrape of nothing (a full scrape) goes to net/http", in: "GET /scrape HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "scrape without info_hash goes to net/http", in: "GET /scrape?x=1 HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n", want: HeadHandoff},
		{name: "no query", in: "GET /announce HTTP/1.1\r\n\r\n", want: HeadOK, route: RouteAnnounce},
		{name: "bare LF", in: "GET /announce?a HTTP/1.1\nHost: x\n\n", want: HeadOK, route: RouteAnnounce, query: "a"},
		{name: "connection close", in: "GET /announce HTTP/1.1\r\nConnection: Close\r\n\r\n", want: HeadOK, route: RouteAnnounce, close: true},
		{name: "connection tokens", in: "GET /announce HTTP/1.1\r\nconnection: foo, close\r\n\r\n", want: HeadOK, route: RouteAnnounce, close: true},
		{name: "HTTP/1.0 closes", in: "GET /announce HTTP/1.0\r\n\r\n", want: HeadOK, route: RouteAnnounce, close: true, http10: true},
		{name: "HTTP/1.0 keep-alive", in: "GET /announce HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", want: HeadOK, route: RouteAnnounce, http10: true},
		{name: "HTTP/1.0 keep-alive and close", in: "GET /announce HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", want: HeadOK, route: RouteAnnounce, close: true, http10: true},
		{name: "user agent", in: "GET /announce HTTP/1.1\r\nUSER-AGENT:  qBittorrent/4.6.3 \r\n\r\n", want: HeadOK, route: RouteAnnounce, userAgent: "qBittorrent/4.6.3"},
		{name: "real ip, last line", in: "GET /announce HTTP/1.1\r\nX-Real-IP: 1.1.1.1\r\nx-real-ip: 2.2.2.2, 3.3.3.3\r\n\r\n", realIP: "X-Real-IP", want: HeadOK, route: RouteAnnounce, realIPVal: "2.2.2.2, 3.3.3.3", hasRealIP: true},
		{name: "real ip not configured", in: "GET /announce HTTP/1.1\r\nX-Real-IP: 1.1.1.1\r\n\r\n", want: HeadOK, route: RouteAnnounce},
		{name: "content-length 0", in: "GET /announce HTTP/1.1\r\nContent-Length: 0\r\n\r\n", want: HeadOK, route: RouteAnnounce},

		{name: "incomplete line", in: "GET /annou", want: HeadIncomplete},
		{name: "incomplete method", in: "GE", want: HeadIncomplete},
		{name: "incomplete head", in: "GET /announce HTTP/1.1\r\nHost: x\r\n", want: HeadIncomplete},

		{name: "other method", in: "POST /announce HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "other method early", in: "HEAD /anno", want: HeadHandoff},
		{name: "stats", in: "GET /stats HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "root", in: "GET / HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "three segments", in: "GET /a/b/announce HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "empty passkey", in: "GET //announce HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "trailing slash", in: "GET /announce/ HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "escaped path", in: "GET /%61nnounce HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "absolute form", in: "GET http://x/announce HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "HTTP/2", in: "GET /announce HTTP/2.0\r\n\r\n", want: HeadHandoff},
		{name: "no protocol", in: "GET /announce\r\n\r\n", want: HeadHandoff},
		{name: "control byte in target", in: "GET /announce?\x01 HTTP/1.1\r\n\r\n", want: HeadHandoff},
		{name: "body", in: "GET /announce HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", want: HeadHandoff},
		{name: "chunked", in: "GET /announce HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", want: HeadHandoff},
		{name: "expect", in: "GET /announce HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", want: HeadHandoff},
		{name: "no colon", in: "GET /announce HTTP/1.1\r\nHost\r\n\r\n", want: HeadHandoff},
		{name: "folded", in: "GET /announce HTTP/1.1\r\nA: b\r\n c\r\n\r\n", want: HeadHandoff},
		{name: "bad name", in: "GET /announce HTTP/1.1\r\nA B: c\r\n\r\n", want: HeadHandoff},

		{name: "head too large", in: "GET /announce HTTP/1.1\r\nA: " + strings.Repeat("b", 100) + "\r\n\r\n", limit: 64, want: HeadTooLarge},
		{name: "head too large incomplete", in: "GET /announce HTTP/1.1\r\nA: " + strings.Repeat("b", 100), limit: 64, want: HeadTooLarge},
		{name: "line too long", in: "GET /announce?" + strings.Repeat("a", 100), limit: 64, want: HeadHandoff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := tc.limit
			if limit == 0 {
				limit = MaxHeadBytes
			}
			var h Head
			n, v := ParseHead([]byte(tc.in), limit, tc.realIP, &h)
			require.Equal(t, tc.want, v)
			if v != HeadOK {
				assert.Zero(t, n)
				return
			}
			assert.Equal(t, len(tc.in), n, "the whole head and nothing else")
			assert.Equal(t, tc.route, h.Route)
			assert.Equal(t, tc.passkey, string(h.Passkey))
			assert.Equal(t, tc.query, string(h.Query))
			assert.Equal(t, tc.close, h.Close, "close")
			assert.Equal(t, tc.http10, h.HTTP10, "http10")
			assert.Equal(t, tc.userAgent, string(h.UserAgent))
			assert.Equal(t, tc.realIPVal, string(h.RealIP))
			assert.Equal(t, tc.hasRealIP, h.HasRealIP)
		})
	}
}

// TestParseHeadPipelined checks that a head is measured exactly, so that the next one follows.
func TestParseHeadPipelined(t *testing.T) {
	first := "GET /announce?a=1 HTTP/1.1\r\nUser-Agent: one\r\n\r\n"
	second := "GET /k/scrape?info_hash=2 HTTP/1.1\r\nConnection: close\r\n\r\n"
	b := []byte(first + second + "GET /sta")
	var h Head
	n, v := ParseHead(b, MaxHeadBytes, "", &h)
	require.Equal(t, HeadOK, v)
	require.Equal(t, len(first), n)
	assert.Equal(t, "one", string(h.UserAgent))
	assert.False(t, h.Close)

	m, v := ParseHead(b[n:], MaxHeadBytes, "", &h)
	require.Equal(t, HeadOK, v)
	require.Equal(t, len(second), m)
	assert.Equal(t, RouteScrape, h.Route)
	assert.Equal(t, "k", string(h.Passkey))
	assert.Empty(t, h.UserAgent, "a header of the previous head must not leak")
	assert.True(t, h.Close)

	_, v = ParseHead(b[n+m:], MaxHeadBytes, "", &h)
	assert.Equal(t, HeadIncomplete, v, "GET /sta may still become a fast route")
}

func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET /announce?info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&port=1 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /k/scrape?info_hash=a HTTP/1.0\r\nConnection: keep-alive\r\nX-Real-IP: 1.2.3.4\r\n\r\nGET /announce HTTP/1.1\r\n\r\n",
		"GET /announce HTTP/1.1\nA: b\n c\n\n",
		"POST /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Head
		n, v := ParseHead(b, 512, "X-Real-IP", &h)
		if v != HeadOK {
			if n != 0 {
				t.Fatalf("Verdict %v with n=%d", v, n)
			}
			return
		}
		if n <= 0 || n > len(b) || n > 512 {
			t.Fatalf("n=%d for %d bytes", n, len(b))
		}
		if !bytes.HasSuffix(b[:n], []byte("\n\n")) && !bytes.HasSuffix(b[:n], []byte("\n\r\n")) {
			t.Fatalf("head %q does not end with an empty line", b[:n])
		}
		if h.Route != RouteAnnounce && h.Route != RouteScrape {
			t.Fatalf("route %v", h.Route)
		}
		if !bytes.HasPrefix(b, []byte("GET /")) {
			t.Fatalf("served %q", b[:n])
		}
		// The head alone parses the same: nothing after it counted.
		var h2 Head
		n2, v2 := ParseHead(b[:n], 512, "X-Real-IP", &h2)
		if v2 != HeadOK || n2 != n || h2.Close != h.Close || !bytes.Equal(h2.Query, h.Query) ||
			!bytes.Equal(h2.Passkey, h.Passkey) || !bytes.Equal(h2.RealIP, h.RealIP) {
			t.Fatalf("head %q parses differently on its own", b[:n])
		}
		for _, sub := range [][]byte{h.Query, h.Passkey, h.UserAgent, h.RealIP} {
			if len(sub) > 0 && !bytes.Contains(b[:n], sub) {
				t.Fatalf("%q is not from the head", sub)
			}
		}
	})
}
