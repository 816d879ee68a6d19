// Package query decodes the raw query string of a tracker request the way BitTorrent clients
// encode it (protocol.md §1.3): "&" separates pairs, the first "=" separates key from value,
// "%XX" in either case is one byte, and every other byte, "+" included, stands for itself.
// net/url is not used because it turns "+" into a space and drops pairs with bad escapes, which
// corrupts binary info hashes.
package query

import (
	"errors"
	"strings"
)

// MaxPairs is the most key=value pairs one query may hold.
const MaxPairs = 256

// Errors returned by Parse.
var (
	ErrBadEscape    = errors.New("query: malformed percent escape")
	ErrTooManyPairs = errors.New("query: too many parameters")
)

type span struct{ start, end int32 }

type pair struct{ key, value span }

// Params holds one decoded query. Its zero value is ready to use, and Parse reuses its buffers,
// so a Params kept per goroutine or in a sync.Pool decodes without allocating once warm. Byte
// slices returned by its methods alias its buffer and are valid until the next Parse.
type Params struct {
	buf   []byte
	pairs []pair
}

// Parse decodes raw, the part of a URL after "?", replacing what p held before. Empty pairs
// ("a&&b") are skipped; a pair without "=" has an empty value.
func (p *Params) Parse(raw string) error {
	p.buf = p.buf[:0]
	p.pairs = p.pairs[:0]
	for len(raw) > 0 {
		var part string
		if i := strings.IndexByte(raw, '&'); i >= 0 {
			part, raw = raw[:i], raw[i+1:]
		} else {
			part, raw = raw, ""
		}
		if part == "" {
			continue
		}
		if len(p.pairs) == MaxPairs {
			return ErrTooManyPairs
		}
		k, v := part, ""
		if i := strings.IndexByte(part, '='); i >= 0 {
			k, v = part[:i], part[i+1:]
		}
		var pr pair
		var err error
		if pr.key, err = p.decode(k); err != nil {
			return err
		}
		if pr.value, err = p.decode(v); err != nil {
			return err
		}
		p.pairs = append(p.pairs, pr)
	}
	return nil
}

func (p *Params) decode(s string) (span, error) {
	start := len(p.buf)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			p.buf = append(p.buf, c)
			continue
		}
		if i+2 >= len(s) {
			return span{}, ErrBadEscape
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return span{}, ErrBadEscape
		}
		p.buf = append(p.buf, hi<<4|lo)
		i += 2
	}
	return span{int32(start), int32(len(p.buf))}, nil
}

func (p *Params) bytes(s span) []byte { return p.buf[s.start:s.end:s.end] }

// Len returns the number of pairs.
func (p *Params) Len() int { return len(p.pairs) }

// Pair returns the i-th pair's decoded key and value.
func (p *Params) Pair(i int) (key, value []byte) {
	return p.bytes(p.pairs[i].key), p.bytes(p.pairs[i].value)
}

// Get returns the value of the first pair whose key is key.
func (p *Params) Get(key string) (value []byte, ok bool) {
	for _, pr := range p.pairs {
		if string(p.bytes(pr.key)) == key {
			return p.bytes(pr.value), true
		}
	}
	return nil, false
}

// Count returns how many pairs have the key key.
func (p *Params) Count(key string) int {
	n := 0
	for _, pr := range p.pairs {
		if string(p.bytes(pr.key)) == key {
			n++
		}
	}
	return n
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
