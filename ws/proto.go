package ws

import (
	"bytes"
	"encoding/json"
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

// request is one message from a client, as JSON has it. Offers, answers and offer IDs are kept
// as raw JSON and relayed as they came: the tracker reads none of them.
type request struct {
	Action     string          `json:"action"`
	InfoHash   json.RawMessage `json:"info_hash"`
	PeerID     json.RawMessage `json:"peer_id"`
	ToPeerID   json.RawMessage `json:"to_peer_id"`
	OfferID    json.RawMessage `json:"offer_id"`
	Event      json.RawMessage `json:"event"`
	Uploaded   json.RawMessage `json:"uploaded"`
	Downloaded json.RawMessage `json:"downloaded"`
	Left       json.RawMessage `json:"left"`
	Offers     []offer         `json:"offers"`
	Answer     json.RawMessage `json:"answer"`
}

// offer is one entry of an announce's offers.
type offer struct {
	Offer   json.RawMessage `json:"offer"`
	OfferID json.RawMessage `json:"offer_id"`
}

// reset clears r for the next message, keeping nothing of the last but the offers' room.
func (r *request) reset() {
	offers := r.Offers
	clear(offers)
	*r = request{Offers: offers[:0]}
}

// present reports whether a raw field was sent with a value other than null.
func present(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null"
}

// parse decodes msg into r. The whole message must be valid UTF-8, so that whatever is relayed
// of it is too: a browser closes a socket that receives a text frame that is not.
func (r *request) parse(msg []byte) error {
	if !utf8.Valid(msg) {
		return errNotUTF8
	}
	r.reset()
	if err := json.Unmarshal(msg, r); err != nil {
		r.reset()
		return errNotJSON
	}
	return nil
}

// binary decodes a JSON string of 20 characters U+0000–U+00FF, a "binary string", into dst.
func binary(raw json.RawMessage, dst *[20]byte) bool {
	if len(raw) < 22 || raw[0] != '"' {
		return false
	}
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		// The common case: no escapes, decode the UTF-8 in place.
		n := 0
		for len(body) > 0 {
			c, size := utf8.DecodeRune(body)
			if c > 0xFF || n == len(dst) || c == utf8.RuneError && size <= 1 {
				return false
			}
			dst[n] = byte(c)
			n++
			body = body[size:]
		}
		return n == len(dst)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return false
	}
	n := 0
	for _, c := range s {
		if c > 0xFF || n == len(dst) {
			return false
		}
		dst[n] = byte(c)
		n++
	}
	return n == len(dst)
}

// number reads a JSON number as the reference client sends it (possibly a float, or a string of
// digits); ok is false for anything else, null and absence included.
func number(raw json.RawMessage) (int64, bool) {
	if !present(raw) {
		return 0, false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		raw = []byte(s)
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
func event(raw json.RawMessage) (models.Event, bool) {
	if !present(raw) {
		return models.None, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return 0, false
	}
	switch s {
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

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s)
	return append(dst, b...)
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
func appendRelay(dst []byte, ih *models.InfoHash, from *models.PeerID, kind string, body, offerID json.RawMessage) []byte {
	dst = append(dst, `{"action":"announce","info_hash":`...)
	dst = appendBinary(dst, ih[:])
	dst = append(dst, `,"peer_id":`...)
	dst = appendBinary(dst, from[:])
	dst = append(dst, ',', '"')
	dst = append(dst, kind...)
	dst = append(dst, '"', ':')
	if len(body) == 0 {
		body = json.RawMessage("null") // an offer without one, relayed as the reference does
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
