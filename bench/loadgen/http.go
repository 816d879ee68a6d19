package loadgen

import (
	"bytes"
	"errors"
	"io"
	"strconv"
)

// AnnounceParams is one HTTP announce.
type AnnounceParams struct {
	InfoHash [20]byte
	PeerID   [20]byte
	Port     uint16
	Left     int64
	Event    string // "", "started", "completed" or "stopped"
	NumWant  int
	// Passkey, when set, is sent in the path (/<passkey>/announce), as a private tracker's
	// users announce.
	Passkey []byte
}

const hexUpper = "0123456789ABCDEF"

// appendEscaped percent-escapes every byte of b, as a client that trusts nothing would.
func appendEscaped(dst, b []byte) []byte {
	for _, c := range b {
		dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&15])
	}
	return dst
}

// appendUnreserved appends b, escaping only what is not an unreserved URL character; peer IDs
// are printable, so this is how clients send them.
func appendUnreserved(dst, b []byte) []byte {
	for _, c := range b {
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == '~' {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&15])
	}
	return dst
}

// appendTail ends the request line and writes the headers.
func appendTail(dst []byte, host string, close bool) []byte {
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUser-Agent: chihaya-bench/1\r\nAccept-Encoding: identity\r\n"...)
	if close {
		dst = append(dst, "Connection: close\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// AppendAnnounce appends the bytes of an HTTP/1.1 announce request (compact, no_peer_id) to dst.
// close adds "Connection: close".
func AppendAnnounce(dst []byte, host string, a *AnnounceParams, close bool) []byte {
	dst = append(dst, "GET /"...)
	if len(a.Passkey) > 0 {
		dst = append(dst, a.Passkey...)
		dst = append(dst, '/')
	}
	dst = append(dst, "announce?info_hash="...)
	dst = appendEscaped(dst, a.InfoHash[:])
	dst = append(dst, "&peer_id="...)
	dst = appendUnreserved(dst, a.PeerID[:])
	dst = append(dst, "&port="...)
	dst = strconv.AppendUint(dst, uint64(a.Port), 10)
	dst = append(dst, "&uploaded=0&downloaded=0&left="...)
	dst = strconv.AppendInt(dst, a.Left, 10)
	if a.Event != "" {
		dst = append(dst, "&event="...)
		dst = append(dst, a.Event...)
	}
	dst = append(dst, "&numwant="...)
	dst = strconv.AppendInt(dst, int64(a.NumWant), 10)
	dst = append(dst, "&compact=1&no_peer_id=1"...)
	return appendTail(dst, host, close)
}

// AppendScrape appends the bytes of an HTTP/1.1 scrape request for hashes to dst.
func AppendScrape(dst []byte, host string, hashes [][20]byte, close bool) []byte {
	return AppendScrapeAt(dst, host, nil, hashes, close)
}

// AppendScrapeAt is AppendScrape with passkey in the path (/<passkey>/scrape) when it is set.
func AppendScrapeAt(dst []byte, host string, passkey []byte, hashes [][20]byte, close bool) []byte {
	dst = append(dst, "GET /"...)
	if len(passkey) > 0 {
		dst = append(dst, passkey...)
		dst = append(dst, '/')
	}
	dst = append(dst, "scrape"...)
	for i := range hashes {
		if i == 0 {
			dst = append(dst, "?info_hash="...)
		} else {
			dst = append(dst, "&info_hash="...)
		}
		dst = appendEscaped(dst, hashes[i][:])
	}
	return appendTail(dst, host, close)
}

// Errors of the HTTP response reader.
var (
	errStatusLine    = errors.New("malformed HTTP status line")
	errStatus        = errors.New("HTTP status is not 200")
	errHeaderTooLong = errors.New("HTTP header larger than the read buffer")
	errNoLength      = errors.New("HTTP answer without Content-Length")
	errBodyTooLong   = errors.New("HTTP body larger than the read buffer")
)

// ResponseReader reads HTTP/1.1 responses with a Content-Length from one connection into a
// buffer it owns. It is a minimal client: no chunked encoding, no 1xx answers.
type ResponseReader struct {
	buf  []byte
	r, w int // unread bytes are buf[r:w]
}

// NewResponseReader returns a reader whose buffer holds at most size bytes of one response.
func NewResponseReader(size int) *ResponseReader { return &ResponseReader{buf: make([]byte, size)} }

// Reset forgets buffered bytes; call it when the connection changes.
func (rr *ResponseReader) Reset() { rr.r, rr.w = 0, 0 }

// Buffered reports whether bytes of a later response are already buffered.
func (rr *ResponseReader) Buffered() bool { return rr.w > rr.r }

// Response is one parsed HTTP response. Body aliases the reader's buffer and is valid until the
// next Read.
type Response struct {
	Status int
	Close  bool // the server said "Connection: close" (or answered HTTP/1.0 without keep-alive)
	Body   []byte
}

var (
	crlfcrlf      = []byte("\r\n\r\n")
	hContentLen   = []byte("content-length:")
	hConnection   = []byte("connection:")
	tokClose      = []byte("close")
	tokKeepAlive  = []byte("keep-alive")
	httpVersion10 = []byte("HTTP/1.0")
)

// Read reads one response from src. A connection that ends before the first byte of a response
// returns io.EOF, so that a keep-alive client can tell a server that closed an idle connection
// from one that broke mid-answer (io.ErrUnexpectedEOF).
func (rr *ResponseReader) Read(src io.Reader, resp *Response) error {
	if rr.r == rr.w {
		rr.r, rr.w = 0, 0
	} else if rr.r > 0 {
		rr.w = copy(rr.buf, rr.buf[rr.r:rr.w])
		rr.r = 0
	}
	// Header.
	hend := -1
	for {
		if i := bytes.Index(rr.buf[:rr.w], crlfcrlf); i >= 0 {
			hend = i + 4
			break
		}
		if rr.w == len(rr.buf) {
			return errHeaderTooLong
		}
		n, err := src.Read(rr.buf[rr.w:])
		rr.w += n
		if n == 0 && err != nil {
			if err == io.EOF && rr.w > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	n, err := parseHead(rr.buf[:hend], resp)
	if err != nil {
		return err
	}
	if hend+n > len(rr.buf) {
		return errBodyTooLong
	}
	for rr.w < hend+n {
		m, err := src.Read(rr.buf[rr.w:])
		rr.w += m
		if m == 0 && err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	resp.Body = rr.buf[hend : hend+n]
	rr.r = hend + n
	return nil
}

// parseHead parses the status line and the headers a client needs, fills resp.Status and
// resp.Close, and returns the content length. A status other than 200 is an error, returned
// after the length so that the caller could skip the body.
func parseHead(h []byte, resp *Response) (int, error) {
	line, rest, ok := bytes.Cut(h, []byte("\r\n"))
	if !ok || len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, errStatusLine
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, errStatusLine
		}
		code = code*10 + int(c-'0')
	}
	resp.Status = code
	resp.Close = bytes.Equal(line[:8], httpVersion10)
	length := -1
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(line) == 0 {
			break
		}
		switch {
		case hasPrefixFold(line, hContentLen):
			v := bytes.TrimSpace(line[len(hContentLen):])
			if len(v) == 0 || len(v) > 9 {
				return 0, errNoLength
			}
			n := 0
			for _, c := range v {
				if c < '0' || c > '9' {
					return 0, errNoLength
				}
				n = n*10 + int(c-'0')
			}
			length = n
		case hasPrefixFold(line, hConnection):
			v := bytes.TrimSpace(line[len(hConnection):])
			if bytes.EqualFold(v, tokClose) {
				resp.Close = true
			} else if bytes.EqualFold(v, tokKeepAlive) {
				resp.Close = false
			}
		}
	}
	if length < 0 {
		return 0, errNoLength
	}
	if code != 200 {
		return length, errStatus
	}
	return length, nil
}

// MaxResponse is the largest HTTP response (headers and body) the generator reads.
const MaxResponse = 64 << 10

func hasPrefixFold(s, prefix []byte) bool {
	return len(s) >= len(prefix) && bytes.EqualFold(s[:len(prefix)], prefix)
}
