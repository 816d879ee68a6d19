package ws

import (
	"bytes"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/chihaya/chihaya/tracker/models"
)

// The failures the protocol itself gives, before the core sees a request.
const (
	errNotJSON        = models.ClientError("invalid JSON message")
	errNotUTF8        = models.ClientError("message is not valid UTF-8")
	errBadAction      = models.ClientError("invalid action")
	errBadInfoHash    = models.ClientError("invalid info_hash")
	errBadPeerID      = models.ClientError("invalid peer_id")
	errBadToPeerID    = models.ClientError("invalid `to_peer_id` (required with `answer`)")
	errTooManySwarms  = models.ClientError("too many torrents announced on one connection")
	errTooManyHashes  = models.ClientError("too many info_hash values in one scrape")
	errNoScrapeHashes = models.ClientError("missing info_hash")
)

// action is what a message asks: "announce", "scrape", or "" for null or absence; what
// another string or escapes would make of it is refused as well.
func action(raw []byte) string {
	var buf [16]byte
	a, ok := text(raw, &buf)
	switch {
	case ok && string(a) == "announce":
		return "announce"
	case ok && string(a) == "scrape":
		return "scrape"
	case !present(raw):
		return ""
	}
	return "?"
}

// decodeBinary decodes a JSON string of 20 characters U+0000–U+00FF, a "binary string", into dst. raw
// is the string's raw JSON, its syntax checked.
func decodeBinary(raw []byte, dst *[20]byte) bool {
	if len(raw) < 22 || raw[0] != '"' {
		return false
	}
	body := raw[1 : len(raw)-1]
	n := 0
	for i := 0; i < len(body); {
		if n == len(dst) {
			return false
		}
		c := body[i]
		switch {
		case c < 0x80 && c != '\\':
			dst[n] = c
			i++
		case (c == 0xC2 || c == 0xC3) && i+1 < len(body) && body[i+1]&0xC0 == 0x80:
			// U+0080–U+00FF in UTF-8.
			dst[n] = c<<6 | body[i+1]&0x3F
			i += 2
		case c == '\\' && i+1 < len(body):
			switch e := body[i+1]; e {
			case 'b':
				dst[n] = '\b'
			case 'f':
				dst[n] = '\f'
			case 'n':
				dst[n] = '\n'
			case 'r':
				dst[n] = '\r'
			case 't':
				dst[n] = '\t'
			case 'u':
				if len(body)-i < 6 {
					return false
				}
				r := hexVal(body[i+2 : i+6])
				if r < 0 || r > 0xFF {
					return false
				}
				dst[n] = byte(r)
				i += 4
			case '"', '\\', '/':
				dst[n] = e
			default:
				return false
			}
			i += 2
		default:
			return false // a character above U+00FF, or not UTF-8
		}
		n++
	}
	return n == len(dst)
}

// number reads a JSON number as the reference client sends it (possibly a float, or a string of
// digits); ok is false for anything else, null and absence included.
func number(raw []byte) (int64, bool) {
	if !present(raw) {
		return 0, false
	}
	if raw[0] == '"' {
		if len(raw) < 2 {
			return 0, false
		}
		raw = raw[1 : len(raw)-1]
		if bytes.IndexByte(raw, '\\') >= 0 {
			raw = unquote(raw, make([]byte, 0, len(raw))) // rare: a number in escapes
		}
	}
	// Up to 15 digits, what a float64 holds exactly: the common case, without ParseFloat.
	if len(raw) > 0 && len(raw) <= 15 {
		var v int64
		digits := true
		for _, c := range raw {
			if !isDigit(c) {
				digits = false
				break
			}
			v = v*10 + int64(c-'0')
		}
		if digits {
			return v, true
		}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0, false
	}
	if f >= math.MaxInt64 {
		return math.MaxInt64, true
	}
	return int64(f), true
}

// event reads an announce's event: started, stopped, completed, update, paused, or absent
// (update).
func event(raw []byte) (models.Event, bool) {
	if !present(raw) {
		return models.None, true
	}
	var buf [16]byte
	s, ok := text(raw, &buf)
	if !ok {
		return 0, false
	}
	switch string(s) {
	case "", "update":
		return models.None, true
	case "started":
		return models.Started, true
	case "stopped":
		return models.Stopped, true
	case "completed":
		return models.Completed, true
	case "paused":
		return models.Paused, true
	}
	return 0, false
}

// appendBinary appends b as a JSON binary string: each byte one character U+0000–U+00FF, in
// UTF-8, with the characters JSON requires escaped.
func appendBinary(dst []byte, b []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range b {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		case c < 0x80:
			dst = append(dst, c)
		default:
			dst = append(dst, 0xC0|c>>6, 0x80|c&0x3F)
		}
	}
	return append(dst, '"')
}

// appendString appends s as a JSON string, as encoding/json writes it: the characters JSON
// requires, <, > and &, U+2028 and U+2029 escaped, and invalid UTF-8 as U+FFFD.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c == '\b':
				dst = append(dst, '\\', 'b')
			case c == '\f':
				dst = append(dst, '\\', 'f')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// appendFailure appends a failure message. action and ih are left out when empty or nil.
func appendFailure(dst []byte, action string, ih *models.InfoHash, reason string) []byte {
	dst = append(dst, '{')
	if action != "" {
		dst = append(dst, `"action":`...)
		dst = appendString(dst, action)
		dst = append(dst, ',')
	}
	dst = append(dst, `"failure reason":`...)
	dst = appendString(dst, reason)
	if ih != nil {
		dst = append(dst, `,"info_hash":`...)
		dst = appendBinary(dst, ih[:])
	}
	return append(dst, '}')
}

// appendAnnounceReply appends the announcer's answer: counts and interval, no peers.
func appendAnnounceReply(dst []byte, ih *models.InfoHash, interval, complete, incomplete int) []byte {
	dst = append(dst, `{"action":"announce","interval":`...)
	dst = strconv.AppendInt(dst, int64(interval), 10)
	dst = append(dst, `,"info_hash":`...)
	dst = appendBinary(dst, ih[:])
	dst = append(dst, `,"complete":`...)
	dst = strconv.AppendInt(dst, int64(complete), 10)
	dst = append(dst, `,"incomplete":`...)
	dst = strconv.AppendInt(dst, int64(incomplete), 10)
	return append(dst, '}')
}

// appendRelay appends a relayed offer or answer: kind is "offer" or "answer", body and offerID
// the raw JSON the sender sent, from the sender's peer ID.
func appendRelay(dst []byte, ih *models.InfoHash, from *models.PeerID, kind string, body, offerID []byte) []byte {
	dst = append(dst, `{"action":"announce","info_hash":`...)
	dst = appendBinary(dst, ih[:])
	dst = append(dst, `,"peer_id":`...)
	dst = appendBinary(dst, from[:])
	dst = append(dst, ',', '"')
	dst = append(dst, kind...)
	dst = append(dst, '"', ':')
	if len(body) == 0 {
		body = []byte("null") // an offer without one, relayed as the reference does
	}
	dst = append(dst, body...)
	if len(offerID) > 0 {
		dst = append(dst, `,"offer_id":`...)
		dst = append(dst, offerID...)
	}
	return append(dst, '}')
}

// appendScrape appends a scrape's answer.
func appendScrape(dst []byte, files []models.TorrentStats, minInterval int) []byte {
	dst = append(dst, `{"action":"scrape","files":{`...)
	for i := range files {
		if i > 0 {
			dst = append(dst, ',')
		}
		f := &files[i]
		dst = appendBinary(dst, f.InfoHash[:])
		dst = append(dst, `:{"complete":`...)
		dst = strconv.AppendInt(dst, int64(f.Seeders), 10)
		dst = append(dst, `,"incomplete":`...)
		dst = strconv.AppendInt(dst, int64(f.Leechers), 10)
		dst = append(dst, `,"downloaded":`...)
		dst = strconv.AppendInt(dst, int64(f.Snatches), 10)
		dst = append(dst, '}')
	}
	dst = append(dst, `},"flags":{"min_request_interval":`...)
	dst = strconv.AppendInt(dst, int64(minInterval), 10)
	return append(dst, `}}`...)
}
