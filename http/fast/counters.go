package fast

import "sync/atomic"

// counters are the fast server's figures for the site's stats report (Ocelot's labels) and its
// metrics. Each is one atomic add where it happens; nothing allocates.
type counters struct {
	// opened counts connections accepted; open those not closed yet (on the fast path or handed
	// over to net/http); peak is the most open at once.
	opened, open, peak atomic.Int64
	// bytesRead and bytesWritten count the bytes of every connection.
	bytesRead, bytesWritten atomic.Uint64
	// maxHead is the longest request head the fast path read (announces and scrapes).
	maxHead atomic.Int64
	// tlsHandshakeErrors counts TLS handshakes that failed or timed out.
	tlsHandshakeErrors atomic.Uint64
}

func (c *counters) opening() {
	c.opened.Add(1)
	setMax(&c.peak, c.open.Add(1))
}

func (c *counters) closing() { c.open.Add(-1) }

// setMax raises a to v when v is larger.
func setMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// Counts are the server's running figures, for the site's stats report.
type Counts struct {
	// Opened counts the connections accepted; Open those not closed yet, on the fast path or
	// handed over to net/http (never below 0); Peak is the most open at once.
	Opened, Open, Peak int64
	// MaxHead is the longest request head the fast path read.
	MaxHead int64
	// BytesRead and BytesWritten count the HTTP bytes of every connection (on TLS, the
	// plaintext).
	BytesRead, BytesWritten uint64
}

// Counts returns the server's figures so far.
func (s *Server) Counts() Counts {
	c := &s.counters
	return Counts{
		Opened:       c.opened.Load(),
		Open:         max(c.open.Load(), 0),
		Peak:         c.peak.Load(),
		MaxHead:      c.maxHead.Load(),
		BytesRead:    c.bytesRead.Load(),
		BytesWritten: c.bytesWritten.Load(),
	}
}
