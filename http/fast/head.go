package fast

import "bytes"

// MaxHeadBytes bounds a request's line and headers. A scrape of 74 fully escaped hashes is
// about 5 KiB.
const MaxHeadBytes = 16 << 10

// Route is what the fast path makes of a request line.
type Route uint8

// The fast path's routes.
const (
	RouteNone     Route = iota // not the fast path's: hand the connection to net/http
	RouteAnnounce              // GET /announce or GET /:passkey/announce
	RouteScrape                // GET /scrape or GET /:passkey/scrape
)

// Verdict is what ParseHead decided about the bytes it was given.
type Verdict uint8

// ParseHead's verdicts.
const (
	HeadIncomplete Verdict = iota // more bytes are needed
	HeadOK                        // h holds a complete request for the fast path
	HeadHandoff                   // net/http must answer this request and the rest of the connection
	HeadTooLarge                  // a fast-path head longer than the limit: answer 431 and close
)

// Head is one parsed request head of the fast path: the request the tracker answers (route,
// passkey, raw query, user agent, real-IP header value) and what the connection needs to know
// (protocol version, whether to close). Its byte slices alias the connection's read buffer and
// are valid until the buffer is compacted or refilled.
type Head struct {
	Route   Route
	Passkey []byte // the first path segment of /:passkey/announce, or nil
	Query   []byte // the raw query string, without the "?"
	HTTP10  bool
	// Close is set when the client asked for the connection to close after this request
	// (HTTP/1.1 "Connection: close", or HTTP/1.0 without "Connection: keep-alive").
	Close     bool
	UserAgent []byte
	// RealIP is the value of the last real_ip_header line; HasRealIP tells an empty one from none.
	RealIP    []byte
	HasRealIP bool
}

// ParseHead reads the request head at the start of b. It answers HeadOK with the length of the
// head when b holds a complete head the fast path serves: a GET of one of its routes, in
// HTTP/1.0 or 1.1, without a body, whose every header line it could read. Everything else is
// HeadHandoff, decided as early as possible (a request line that is not the fast path's is
// handed over before its headers arrive), so that net/http answers it exactly as it answers any
// request. A fast-path head that does not end within limit bytes is HeadTooLarge; a request line
// that does not end within limit bytes is handed over, for net/http to refuse.
//
// realIPHeader is the configured real_ip_header, or "" for none. ParseHead does not allocate.
func ParseHead(b []byte, limit int, realIPHeader string, h *Head) (int, Verdict) {
	if len(b) > limit {
		b = b[:limit+1] // one byte more than allowed tells "too long" from "incomplete"
	}
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		if len(b) > limit {
			return 0, HeadHandoff
		}
		// A request line is "GET /": anything that cannot become one is net/http's at once.
		if !couldBeGet(b) {
			return 0, HeadHandoff
		}
		return 0, HeadIncomplete
	}
	if !parseRequestLine(trimCR(b[:eol]), h) {
		return 0, HeadHandoff
	}
	h.UserAgent, h.RealIP, h.HasRealIP = nil, nil, false
	closeTok, keepAliveTok := false, false
	for pos := eol + 1; ; {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 0 {
			if len(b) > limit {
				return 0, HeadTooLarge
			}
			return 0, HeadIncomplete
		}
		line := trimCR(b[pos : pos+i])
		pos += i + 1
		if pos > limit {
			return 0, HeadTooLarge
		}
		if len(line) == 0 {
			// HTTP/1.0 keeps the connection only when asked to (RFC 9112 §9.3).
			h.Close = closeTok || (h.HTTP10 && !keepAliveTok)
			return pos, HeadOK
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validName(line[:colon]) {
			// Folded lines, lines without a name: net/http decides what they mean.
			return 0, HeadHandoff
		}
		name, value := line[:colon], trimSpace(line[colon+1:])
		switch {
		case equalFold(name, "connection"):
			c, ka, ok := connectionTokens(value)
			if !ok {
				return 0, HeadHandoff
			}
			closeTok, keepAliveTok = closeTok || c, keepAliveTok || ka
		case equalFold(name, "user-agent"):
			h.UserAgent = value
		case equalFold(name, "content-length"):
			if len(value) != 1 || value[0] != '0' {
				return 0, HeadHandoff
			}
		case equalFold(name, "transfer-encoding"), equalFold(name, "expect"), equalFold(name, "upgrade"):
			return 0, HeadHandoff
		}
		if realIPHeader != "" && equalFold(name, realIPHeader) {
			h.RealIP, h.HasRealIP = value, true
		}
	}
}

// couldBeGet reports whether b may be the start of a fast-path request line.
func couldBeGet(b []byte) bool {
	const prefix = "GET /"
	n := min(len(b), len(prefix))
	if string(b[:n]) != prefix[:n] {
		return false
	}
	for _, c := range b[n:] {
		if c != '\r' && (c < 0x21 || c > 0x7e) && c != ' ' {
			return false
		}
	}
	return true
}

// parseRequestLine reads "GET <path>[?<query>] HTTP/1.x" into h; it reports false for anything
// the fast path does not serve.
func parseRequestLine(line []byte, h *Head) bool {
	const method = "GET "
	if len(line) < len(method) || string(line[:len(method)]) != method {
		return false
	}
	line = line[len(method):]
	sp := bytes.IndexByte(line, ' ')
	if sp < 0 {
		return false
	}
	target, proto := line[:sp], line[sp+1:]
	switch string(proto) {
	case "HTTP/1.1":
		h.HTTP10 = false
	case "HTTP/1.0":
		h.HTTP10 = true
	default:
		return false
	}
	for _, c := range target {
		// '%' in the path would be decoded by net/url before routing; control bytes, spaces and
		// non-ASCII are net/http's to judge. Both go to net/http.
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	path := target
	h.Query = nil
	q := bytes.IndexByte(target, '?')
	if q >= 0 {
		path, h.Query = target[:q], target[q+1:]
	}
	if len(path) == 0 || path[0] != '/' || bytes.IndexByte(path, '%') >= 0 {
		return false
	}
	path = path[1:]
	h.Passkey = nil
	if slash := bytes.IndexByte(path, '/'); slash >= 0 {
		if slash == 0 || q < 0 {
			// A passkey path without a query string is no client's: private mode answers it
			// with a page (package http, Server.serveTwo).
			return false
		}
		h.Passkey, path = path[:slash], path[slash+1:]
	}
	switch string(path) {
	case "announce":
		h.Route = RouteAnnounce
	case "scrape":
		h.Route = RouteScrape
		if len(h.Passkey) == 0 && !bytes.Contains(h.Query, infoHashKey) {
			// A scrape of nothing is a full scrape (full_scrape_enabled), which may be served
			// gzipped: net/http reads Accept-Encoding.
			return false
		}
	default:
		return false
	}
	return true
}

var infoHashKey = []byte("info_hash=")

// connectionTokens reads a Connection header's comma-separated tokens.
func connectionTokens(v []byte) (close, keepAlive, ok bool) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = trimSpace(v[:i]), v[i+1:]
		} else {
			tok, v = trimSpace(v), nil
		}
		switch {
		case equalFold(tok, "close"):
			close = true
		case equalFold(tok, "keep-alive"):
			keepAlive = true
		case len(tok) == 0:
		case !validName(tok):
			return false, false, false
		}
	}
	return close, keepAlive, true
}

// validName reports whether b is an HTTP token (RFC 9110 §5.6.2), as header names must be.
func validName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !isTokenChar[c] {
			return false
		}
	}
	return true
}

var isTokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// equalFold reports whether b equals the lower-case ASCII s, ignoring ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// trimSpace drops the optional whitespace (spaces and tabs) around a header value.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
