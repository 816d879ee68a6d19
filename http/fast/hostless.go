package fast

import (
	"bytes"
	"errors"
	"net"
	"sync"
)

// hostLine is what a Host-less HTTP/1.1 request head gets. Nothing in the tracker reads the
// Host; it only has to be there for net/http.
const hostLine = "Host: localhost\r\n"

// Legacy Gazelle (WhatCD) writes its update and report requests as
// "GET /<secret>/update?… HTTP/1.1\r\nConnection: Close\r\n\r\n", without the Host header
// HTTP/1.1 requires, which net/http refuses with 400 "missing required Host header"
// (protocol.md §4). With Config.AddHost, a connection handed over to net/http is read through
// a hostlessConn, which gives every HTTP/1.1 request head without a Host header the line
// "Host: localhost" after its request line. The fast path needs none: it reads no Host.
//
// Each connection is read as a sequence of request heads, each followed by a body of its
// Content-Length. A head with a Transfer-Encoding or a malformed Content-Length, or one longer
// than MaxHeadBytes, is passed on untouched, and so is everything after it on that connection:
// net/http then answers it as it answers any such request. A connection holds no buffer while
// it waits between requests.

// newHostlessConn returns c read with Host lines added where they are missing.
func newHostlessConn(c net.Conn) *hostlessConn {
	return &hostlessConn{Conn: c, limit: MaxHeadBytes, contentLength: -1}
}

// headBufs holds the buffers of heads being read, so that idle connections hold none.
var headBufs = sync.Pool{New: func() any {
	b := make([]byte, 4096)
	return &b
}}

// hostlessConn rewrites request heads as they are read. Read is used by one goroutine at a time,
// as net/http does; Write and the rest pass through.
//
// buf[start:ready] is processed input waiting for the reader, buf[ready:end] input not yet
// processed: the start of a head whose end has not arrived.
type hostlessConn struct {
	net.Conn
	limit int

	bufp              *[]byte
	buf               []byte
	start, ready, end int

	// body is how many bytes of the current request's body are still to pass through.
	body int64
	// pass passes everything through untouched from ready on.
	pass bool

	// The head being scanned: where its current line starts, how far it was searched for a
	// newline, where its request line ends, and what it said so far.
	line, scanned, hostAt int
	http11, hasHost, bad  bool
	contentLength         int64
}

// Read returns the connection's bytes with Host headers added where they are missing.
func (c *hostlessConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.start < c.ready {
			n := copy(p, c.buf[c.start:c.ready])
			c.start += n
			c.release()
			return n, nil
		}
		if c.start == c.end {
			// Nothing buffered: bodies and untouched connections are read straight into p.
			switch {
			case c.pass:
				return c.Conn.Read(p)
			case c.body > 0:
				if int64(len(p)) > c.body {
					p = p[:c.body]
				}
				n, err := c.Conn.Read(p)
				c.body -= int64(n)
				return n, err
			}
		}
		if c.advance() {
			continue
		}
		if err := c.fill(p); err != nil {
			return 0, err
		}
	}
}

// fill reads more of a head. With nothing buffered it reads into p first, so that a connection
// waiting for its next request holds no buffer.
func (c *hostlessConn) fill(p []byte) error {
	if c.buf == nil {
		n, err := c.Conn.Read(p)
		if n == 0 {
			return err
		}
		c.bufp = headBufs.Get().(*[]byte)
		c.buf = (*c.bufp)[:cap(*c.bufp)]
		c.grow(n)
		c.end = copy(c.buf, p[:n])
		return nil
	}
	if c.start > 0 {
		// Move the unread bytes to the front; every index is past start.
		copy(c.buf, c.buf[c.start:c.end])
		c.ready -= c.start
		c.end -= c.start
		c.line -= c.start
		c.scanned -= c.start
		c.hostAt -= c.start
		c.start = 0
	}
	if c.end == len(c.buf) {
		c.grow(len(c.buf))
	}
	n, err := c.Conn.Read(c.buf[c.end:])
	c.end += n
	if n == 0 && err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			// The head will never be finished (EOF, reset): hand over what came, as it came, so
			// that net/http answers or drops it as it would have; the next Read returns the error
			// again from the connection.
			c.pass = true
			if c.ready < c.end {
				return nil
			}
		}
		// A timeout may be net/http interrupting its background read: keep the partial head
		// for the next Read.
		return err
	}
	return nil
}

// grow makes room for n more bytes after end.
func (c *hostlessConn) grow(n int) {
	if c.end+n <= len(c.buf) {
		return
	}
	nb := make([]byte, max(2*len(c.buf), c.end+n))
	copy(nb, c.buf[:c.end])
	c.buf = nb
	*c.bufp = nb
}

// release gives the buffer back once everything in it was read.
func (c *hostlessConn) release() {
	if c.start < c.end || c.buf == nil {
		return
	}
	headBufs.Put(c.bufp)
	c.bufp, c.buf = nil, nil
	c.start, c.ready, c.end = 0, 0, 0
	c.line, c.scanned, c.hostAt = 0, 0, 0
}

// advance processes buffered input; it reports whether anything became ready.
func (c *hostlessConn) advance() bool {
	if c.ready == c.end {
		return false
	}
	if c.pass {
		c.ready = c.end
		return true
	}
	if c.body > 0 {
		n := min(c.body, int64(c.end-c.ready))
		c.ready += int(n)
		c.body -= n
		// The next head starts after the body.
		c.line, c.scanned = c.ready, c.ready
		return true
	}
	for {
		i := bytes.IndexByte(c.buf[c.scanned:c.end], '\n')
		if i < 0 {
			c.scanned = c.end
			if c.end-c.ready > c.limit {
				c.passHead()
				return true
			}
			return false
		}
		nl := c.scanned + i
		c.scanned = nl + 1
		if nl+1-c.ready > c.limit {
			c.passHead()
			return true
		}
		line := bytes.TrimSuffix(c.buf[c.line:nl], []byte{'\r'})
		switch {
		case c.line == c.ready:
			// The request line.
			c.http11 = bytes.HasSuffix(line, []byte(" HTTP/1.1"))
			c.hostAt = nl + 1
		case len(line) == 0:
			c.endHead(nl + 1)
			return true
		default:
			c.header(line)
		}
		c.line = nl + 1
	}
}

// passHead gives up on the current head: it and the rest of the connection pass untouched.
func (c *hostlessConn) passHead() {
	c.pass = true
	c.ready = c.end
}

func (c *hostlessConn) header(line []byte) {
	switch {
	case hasPrefixFold(line, "host:"):
		c.hasHost = true
	case hasPrefixFold(line, "content-length:"):
		n, ok := parseLength(bytes.TrimSpace(line[len("content-length:"):]))
		if !ok || (c.contentLength >= 0 && c.contentLength != n) {
			c.bad = true
		}
		c.contentLength = n
	case hasPrefixFold(line, "transfer-encoding:"):
		c.bad = true
	}
}

// endHead finishes the head that ends at end: it inserts the Host line if one is missing and
// makes the head ready.
func (c *hostlessConn) endHead(end int) {
	if c.http11 && !c.hasHost {
		n := len(hostLine)
		c.grow(n)
		copy(c.buf[c.hostAt+n:c.end+n], c.buf[c.hostAt:c.end])
		copy(c.buf[c.hostAt:], hostLine)
		c.end += n
		end += n
	}
	c.ready = end
	if c.bad {
		c.pass = true
	} else if c.contentLength > 0 {
		c.body = c.contentLength
	}
	c.line, c.scanned, c.hostAt = end, end, 0
	c.http11, c.hasHost, c.bad = false, false, false
	c.contentLength = -1
}

func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length: decimal digits only, as net/http requires.
func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// CloseWrite shuts down the writing side when the connection can, as a *net.TCPConn does.
func (c *hostlessConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
