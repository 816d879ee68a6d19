package http

import (
	"net/netip"

	"github.com/chihaya/chihaya/http/query"
	"github.com/chihaya/chihaya/tracker/models"
)

// parseAnnounce fills a from the decoded query q. It does not set the endpoints, which depend
// on the connection and the configuration (see Server.resolve).
//
// With lenient set (private mode), numwant is read as Ocelot reads it: its leading number, 0
// when it has none (so numwant=abc, or an empty numwant, asks for no peers rather than being
// refused).
func parseAnnounce(q *query.Params, a *models.Announce, lenient bool) error {
	*a = models.Announce{NumWant: -1, Compact: true}
	var err error
	if err = fixed20(q, "info_hash", (*[20]byte)(&a.InfoHash), models.ErrMissingInfoHash, models.ErrInvalidInfoHash); err != nil {
		return err
	}
	if err = fixed20(q, "peer_id", (*[20]byte)(&a.PeerID), models.ErrMissingPeerID, models.ErrInvalidPeerID); err != nil {
		return err
	}
	port, ok := q.Get("port")
	if !ok {
		return models.ErrMissingPort
	}
	p, ok := parseUint(port, 65535)
	if !ok {
		return models.ErrInvalidPort
	}
	if p == 0 {
		// BitTornado and Azureus in crypto-only mode send port=0 and the real one as cryptoport.
		if cp, found := q.Get("cryptoport"); found {
			p, ok = parseUint(cp, 65535)
			if !ok {
				return models.ErrInvalidPort
			}
		}
	}
	if p == 0 {
		return models.ErrInvalidPort
	}
	a.Endpoint = netip.AddrPortFrom(netip.Addr{}, uint16(p))

	for _, f := range []struct {
		key     string
		dst     *int64
		missing error
	}{
		{"uploaded", &a.Uploaded, models.ErrMissingUploaded},
		{"downloaded", &a.Downloaded, models.ErrMissingDownloaded},
		{"left", &a.Left, models.ErrMissingLeft},
	} {
		v, ok := q.Get(f.key)
		if !ok {
			return f.missing
		}
		n, ok := parseUint(v, 1<<63-1)
		if !ok {
			return models.ErrInvalidNumber
		}
		*f.dst = int64(n)
	}
	if v, ok := q.Get("corrupt"); ok && len(v) > 0 {
		n, ok := parseUint(v, 1<<63-1)
		if !ok {
			return models.ErrInvalidNumber
		}
		a.Corrupt = int64(n)
	}
	if v, ok := q.Get("numwant"); ok && (len(v) > 0 || lenient) {
		n, ok := parseInt(v)
		if !ok && !lenient {
			return models.ErrInvalidNumber
		}
		if !ok {
			n = leadingInt(v)
		}
		if n < 0 {
			n = -1
		}
		if n > 1<<31-1 {
			n = 1<<31 - 1
		}
		a.NumWant = int(n)
	}
	if v, ok := q.Get("compact"); ok {
		a.Compact = string(v) != "0"
		a.CompactOne = string(v) == "1"
	}
	if v, ok := q.Get("no_peer_id"); ok {
		a.NoPeerID = string(v) == "1"
	}
	if v, ok := q.Get("event"); ok {
		switch string(v) {
		case "", "empty":
			a.Event = models.None
		case "started":
			a.Event = models.Started
		case "completed":
			a.Event = models.Completed
		case "stopped":
			a.Event = models.Stopped
		case "paused":
			a.Event = models.Paused
		default:
			return models.ErrInvalidEvent
		}
	}
	return nil
}

// fixed20 reads the single 20-byte value of key into dst.
func fixed20(q *query.Params, key string, dst *[20]byte, missing, invalid error) error {
	switch q.Count(key) {
	case 0:
		return missing
	case 1:
	default:
		return models.ErrDuplicateParameter
	}
	v, _ := q.Get(key)
	if len(v) != 20 {
		return invalid
	}
	copy(dst[:], v)
	return nil
}

// parseScrape appends every info_hash of q to s.InfoHashes, in request order, up to limit.
//
// With lenient set (private mode), it reads a scrape as Ocelot does: an info_hash that is not
// 20 bytes names no torrent and is left out of the answer rather than refused (it still counts
// towards limit), and a scrape without info_hash asks about no torrent; the core then answers
// an empty files dictionary.
func parseScrape(q *query.Params, s *models.Scrape, limit int, lenient bool) error {
	s.InfoHashes = s.InfoHashes[:0]
	n := 0
	for i := 0; i < q.Len(); i++ {
		k, v := q.Pair(i)
		if string(k) != "info_hash" {
			continue
		}
		if len(v) != 20 && !lenient {
			return models.ErrInvalidInfoHash
		}
		if n == limit {
			return models.ErrTooManyInfoHashes
		}
		n++
		if len(v) == 20 {
			s.InfoHashes = append(s.InfoHashes, models.InfoHash(v))
		}
	}
	if len(s.InfoHashes) == 0 && !lenient {
		return models.ErrMissingInfoHash
	}
	return nil
}

// parseUint parses a non-empty run of ASCII digits no greater than max.
func parseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// leadingInt returns the optionally signed decimal at the start of b, 0 when b starts with
// none, as C++'s stream extraction reads a number; values beyond the int64 range are clamped.
func leadingInt(b []byte) int64 {
	i := 0
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		i++
	}
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == i {
		return 0
	}
	digits := b[:j]
	if b[0] == '+' {
		digits = b[1:j]
	}
	n, _ := parseInt(digits)
	return n
}

// parseInt parses an optionally negative decimal; values beyond the int64 range are clamped.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, ok := parseUint(b, 1<<63-1)
	if !ok {
		n = 1<<63 - 1 // all digits, just too large
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}
