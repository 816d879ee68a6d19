package ws

import (
	"unicode/utf16"
	"unicode/utf8"
)

// The parser of the messages clients send. It reads a message in one pass, checks all of it as
// JSON (RFC 8259, what encoding/json accepts, nesting included), and keeps of the fields the
// tracker knows the raw JSON text of their values: slices of the message, copied nowhere. It
// allocates nothing once the request's room for offers has grown.

// maxDepth is the deepest nesting of arrays and objects a message may have: encoding/json's.
const maxDepth = 10000

// request is one message from a client, as it came: each field is the raw JSON text of a value
// (nil when the key is absent), a slice of the message and valid only while the message is.
// Offers, answers and offer IDs are relayed as they came: the tracker reads none of them. When a
// key comes twice, the last one counts, as for JSON.parse.
type request struct {
	Action     []byte
	InfoHash   []byte
	PeerID     []byte
	ToPeerID   []byte
	OfferID    []byte
	Event      []byte
	Uploaded   []byte
	Downloaded []byte
	Left       []byte
	Answer     []byte
	// Offers holds the first offers of the list, up to the limit parse was given; NumOffers
	// counts them all.
	Offers    []offer
	NumOffers int
}

// offer is one entry of an announce's offers: the raw JSON of its offer and offer_id, nil when
// absent.
type offer struct {
	Offer   []byte
	OfferID []byte
}

// reset clears r for the next message, keeping nothing of the last but the offers' room.
func (r *request) reset() {
	offers := r.Offers
	clear(offers[:cap(offers)])
	*r = request{Offers: offers[:0]}
}

// present reports whether a raw field was sent with a value other than null.
func present(raw []byte) bool {
	return len(raw) > 0 && string(raw) != "null"
}

// parse reads msg into r, keeping up to maxOffers offers. The whole message must be valid UTF-8,
// so that whatever is relayed of it is too (a browser closes a socket that receives a text frame
// that is not), and valid JSON: an object, or null (which has no action). Besides, action must
// be a string or null, and offers a list (or null) of objects (or nulls).
func (r *request) parse(msg []byte, maxOffers int) error {
	r.reset()
	if !utf8.Valid(msg) {
		return errNotUTF8
	}
	p := parser{b: msg}
	p.space()
	ok := false
	switch {
	case p.literal("null"):
		ok = true
	case p.peek() == '{':
		ok = p.message(r, maxOffers)
	}
	if ok {
		p.space()
		ok = p.i == len(p.b)
	}
	if !ok {
		r.reset()
		return errNotJSON
	}
	return nil
}

// parser reads one message: b from i on.
type parser struct {
	b []byte
	i int
}

// peek returns the next byte, or 0 at the end.
func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// space skips JSON's whitespace.
func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// literal skips lit if it is next.
func (p *parser) literal(lit string) bool {
	if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
		p.i += len(lit)
		return true
	}
	return false
}

// The keys of a message, and of an offer.
const (
	keyOther = iota
	keyAction
	keyInfoHash
	keyPeerID
	keyToPeerID
	keyOfferID
	keyEvent
	keyUploaded
	keyDownloaded
	keyLeft
	keyAnswer
	keyOffers
	keyOffer
)

// keyOf returns which key the raw JSON string raw (quotes included) is.
func keyOf(raw []byte) int {
	var buf [16]byte
	k, ok := text(raw, &buf)
	if !ok {
		return keyOther
	}
	switch string(k) {
	case "action":
		return keyAction
	case "info_hash":
		return keyInfoHash
	case "peer_id":
		return keyPeerID
	case "to_peer_id":
		return keyToPeerID
	case "offer_id":
		return keyOfferID
	case "event":
		return keyEvent
	case "uploaded":
		return keyUploaded
	case "downloaded":
		return keyDownloaded
	case "left":
		return keyLeft
	case "answer":
		return keyAnswer
	case "offers":
		return keyOffers
	case "offer":
		return keyOffer
	}
	return keyOther
}

// message reads the message's object, at depth 1.
func (p *parser) message(r *request, maxOffers int) bool {
	p.i++ // {
	p.space()
	if p.peek() == '}' {
		p.i++
		return true
	}
	for {
		k, ok := p.key()
		if !ok {
			return false
		}
		var dst *[]byte
		switch k {
		case keyOffers:
			if !p.offers(r, maxOffers) {
				return false
			}
		case keyAction:
			if c := p.peek(); c != '"' && c != 'n' {
				return false // encoding/json refused anything but a string or null here
			}
			dst = &r.Action
		case keyInfoHash:
			dst = &r.InfoHash
		case keyPeerID:
			dst = &r.PeerID
		case keyToPeerID:
			dst = &r.ToPeerID
		case keyOfferID:
			dst = &r.OfferID
		case keyEvent:
			dst = &r.Event
		case keyUploaded:
			dst = &r.Uploaded
		case keyDownloaded:
			dst = &r.Downloaded
		case keyLeft:
			dst = &r.Left
		case keyAnswer:
			dst = &r.Answer
		}
		if k != keyOffers {
			start := p.i
			if !p.value(1) {
				return false
			}
			if dst != nil {
				*dst = p.b[start:p.i]
			}
		}
		if more, ok := p.next('}'); !more {
			return ok
		}
	}
}

// key reads an object's key, the colon and the space after it.
func (p *parser) key() (int, bool) {
	start := p.i
	if !p.str() {
		return 0, false
	}
	k := keyOf(p.b[start:p.i])
	p.space()
	if p.peek() != ':' {
		return 0, false
	}
	p.i++
	p.space()
	return k, true
}

// next reads what follows a member of a list or an object: a comma and the space after it
// (more), or the closing bracket (ok and not more).
func (p *parser) next(closing byte) (more, ok bool) {
	p.space()
	switch p.peek() {
	case ',':
		p.i++
		p.space()
		return true, true
	case closing:
		p.i++
		return false, true
	}
	return false, false
}

// offers reads an announce's list of offers, at depth 2: null, or a list of objects or nulls.
// The list replaces any other of the message.
func (p *parser) offers(r *request, maxOffers int) bool {
	clear(r.Offers)
	r.Offers, r.NumOffers = r.Offers[:0], 0
	if p.literal("null") {
		return true
	}
	if p.peek() != '[' {
		return false
	}
	p.i++
	p.space()
	if p.peek() == ']' {
		p.i++
		return true
	}
	for {
		var o offer
		switch {
		case p.literal("null"):
		case p.peek() == '{':
			if !p.offer(&o) {
				return false
			}
		default:
			return false
		}
		if r.NumOffers < maxOffers {
			r.Offers = append(r.Offers, o)
		}
		r.NumOffers++
		if more, ok := p.next(']'); !more {
			return ok
		}
	}
}

// offer reads one offer, an object at depth 3.
func (p *parser) offer(o *offer) bool {
	p.i++ // {
	p.space()
	if p.peek() == '}' {
		p.i++
		return true
	}
	for {
		k, ok := p.key()
		if !ok {
			return false
		}
		start := p.i
		if !p.value(3) {
			return false
		}
		switch k {
		case keyOffer:
			o.Offer = p.b[start:p.i]
		case keyOfferID:
			o.OfferID = p.b[start:p.i]
		}
		if more, ok := p.next('}'); !more {
			return ok
		}
	}
}

// value checks the JSON value at i, inside depth containers, and moves past it. It works
// without recursion, so that a deeply nested message costs no stack: the kinds of the open
// containers are bits (1 for an object), in a word while they fit.
func (p *parser) value(depth int) bool {
	var kinds uint64
	var deep []uint64 // past 64 levels: only ever for hostile messages
	open := 0
	push := func(object bool) bool {
		if depth+open == maxDepth {
			return false
		}
		var bit uint64
		if object {
			bit = 1
		}
		if open < 64 {
			kinds |= bit << open
		} else {
			w := (open - 64) / 64
			if w == len(deep) {
				deep = append(deep, 0)
			}
			deep[w] = deep[w]&^(1<<((open-64)%64)) | bit<<((open-64)%64)
		}
		open++
		return true
	}
	isObject := func() bool {
		o := open - 1
		if o < 64 {
			return kinds>>o&1 == 1
		}
		return deep[(o-64)/64]>>((o-64)%64)&1 == 1
	}
	for {
		// A value.
		switch c := p.peek(); {
		case c == '{' || c == '[':
			p.i++
			if !push(c == '{') {
				return false
			}
			p.space()
			if p.peek() == c+2 { // } or ]
				p.i++
				open--
				break
			}
			if c == '{' {
				if !p.str() {
					return false
				}
				p.space()
				if p.peek() != ':' {
					return false
				}
				p.i++
				p.space()
			}
			continue
		case c == '"':
			if !p.str() {
				return false
			}
		case c == 't':
			if !p.literal("true") {
				return false
			}
		case c == 'f':
			if !p.literal("false") {
				return false
			}
		case c == 'n':
			if !p.literal("null") {
				return false
			}
		default:
			if !p.number() {
				return false
			}
		}
		// After a value: close containers until one has more.
		for {
			if open == 0 {
				return true
			}
			p.space()
			object := isObject()
			c := p.peek()
			if object && c == '}' || !object && c == ']' {
				p.i++
				open--
				continue
			}
			if c != ',' {
				return false
			}
			p.i++
			p.space()
			if object {
				if !p.str() {
					return false
				}
				p.space()
				if p.peek() != ':' {
					return false
				}
				p.i++
				p.space()
			}
			break
		}
	}
}

// elements calls f, when not nil, with the raw JSON of each value of the list list (raw JSON,
// its syntax checked), in order, and returns how many there are.
func elements(list []byte, f func([]byte)) int {
	p := parser{b: list, i: 1}
	p.space()
	n := 0
	for more := p.peek() != ']'; more; more, _ = p.next(']') {
		start := p.i
		if !p.value(0) { // checked by parse, depth included
			break
		}
		if f != nil {
			f(p.b[start:p.i])
		}
		n++
	}
	return n
}

// strSafe marks the bytes that may stand for themselves inside a JSON string: all but the
// quote, the backslash and the control characters.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str checks the JSON string at i and moves past it.
func (p *parser) str() bool {
	if p.peek() != '"' {
		return false
	}
	b, i := p.b, p.i+1
	for {
		// Eight bytes at a time while none of them is a quote, a backslash or a control
		// character (SDP bodies are long runs of such bytes).
		for ; len(b)-i >= 8; i += 8 {
			const ones, highs = 0x0101010101010101, 0x8080808080808080
			w := b[i : i+8 : i+8]
			x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
				uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
			quote, backslash := x^(ones*'"'), x^(ones*'\\')
			if ((quote-ones)&^quote|(backslash-ones)&^backslash|(x-ones*0x20)&^x)&highs != 0 {
				break
			}
		}
		for i < len(b) && strSafe[b[i]] {
			i++
		}
		if i == len(b) {
			return false
		}
		switch b[i] {
		case '"':
			p.i = i + 1
			return true
		case '\\':
			if i+1 == len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || hexVal(b[i+2:i+6]) < 0 {
					return false
				}
				i += 6
			default:
				return false
			}
		default:
			return false // a control character
		}
	}
}

// number checks the JSON number at i and moves past it.
func (p *parser) number() bool {
	b, i := p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i == len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	p.i = i
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// hexVal returns the value of 4 hex digits, or -1.
func hexVal(h []byte) rune {
	var v rune
	for _, c := range h[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		v = v<<4 | rune(c)
	}
	return v
}

// maxShortText is the longest raw JSON string text reads: longer ones are none the tracker
// compares (a key, an action, an event: at most 10 characters, 6 bytes each when escaped).
const maxShortText = 64

// text returns the characters of a short JSON string (raw, quotes included, its syntax
// checked) in UTF-8: the bytes between the quotes when there is no escape, else decoded into
// buf. ok is false when raw is not a string, is longer than maxShortText or decodes to more than
// buf holds.
func text(raw []byte, buf *[16]byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || len(raw) > maxShortText {
		return nil, false
	}
	body := raw[1 : len(raw)-1]
	esc := false
	for _, c := range body {
		esc = esc || c == '\\'
	}
	if !esc {
		return body, true
	}
	out := unquote(body, buf[:0])
	if len(out) > len(buf) {
		return nil, false
	}
	return out, true
}

// unquote appends to dst the characters of a JSON string's body (between the quotes, its
// syntax checked) in UTF-8, as encoding/json decodes them: a surrogate pair is one character,
// a lone surrogate U+FFFD.
func unquote(body, dst []byte) []byte {
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		e := body[i+1]
		i += 2
		switch e {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hexVal(body[i : i+4])
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if len(body)-i >= 6 && body[i] == '\\' && body[i+1] == 'u' {
					r2 = hexVal(body[i+2 : i+6])
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default: // " \ /
			dst = append(dst, e)
		}
	}
	return dst
}
