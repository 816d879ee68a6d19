package query

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// refParse is a deliberately naive reference decoder of protocol.md §1.3, written independently
// of Parse: split on "&", drop empty parts, split on the first "=", turn "%XX" into a byte and
// keep every other byte.
func refParse(raw string) ([]kv, error) {
	out := []kv{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		if len(out) == MaxPairs {
			return nil, ErrTooManyPairs
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := refUnescape(k)
		if err != nil {
			return nil, err
		}
		dv, err := refUnescape(v)
		if err != nil {
			return nil, err
		}
		out = append(out, kv{dk, dv})
	}
	return out, nil
}

func refUnescape(s string) (string, error) {
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if len(s)-i < 3 {
			return "", ErrBadEscape
		}
		hi := strings.IndexByte(hex, lower(s[i+1]))
		lo := strings.IndexByte(hex, lower(s[i+2]))
		if hi < 0 || lo < 0 {
			return "", ErrBadEscape
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), nil
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// escapeAll writes every byte of s as %XX, alternating the hex case.
func escapeAll(s string, upper bool) string {
	digits := "0123456789abcdef"
	if upper {
		digits = "0123456789ABCDEF"
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte('%')
		b.WriteByte(digits[s[i]>>4])
		b.WriteByte(digits[s[i]&15])
	}
	return b.String()
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"a=b",
		"info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A&peer_id=-TR3000-abcdefghijkl&port=6881",
		"x=a+b&&y&=z&=",
		"x=%7b%e7%5e%96%1b%96~%d45a",
		"x=%G1", "x=%1", "x=%", "%%%",
		"x=\xff\x00\x80",
		announceQuery,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var p Params
		err := p.Parse(raw)
		want, refErr := refParse(raw)
		if refErr != nil {
			if !errors.Is(err, refErr) {
				t.Fatalf("Parse(%q) = %v, reference says %v", raw, err, refErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("Parse(%q) = %v, reference decodes %q", raw, err, want)
		}
		got := pairs(&p)
		if len(got) != len(want) {
			t.Fatalf("Parse(%q): %d pairs, reference %d", raw, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("Parse(%q) pair %d = %q, reference %q", raw, i, got[i], want[i])
			}
		}
		if p.Len() > MaxPairs {
			t.Fatalf("Parse(%q): %d pairs, more than MaxPairs", raw, p.Len())
		}

		// Get returns the first pair of a key and Count counts them.
		for _, pr := range got {
			v, ok := p.Get(pr.k)
			first := -1
			n := 0
			for j := range got {
				if got[j].k == pr.k {
					if first < 0 {
						first = j
					}
					n++
				}
			}
			if !ok || string(v) != got[first].v {
				t.Fatalf("Get(%q) = %q, %v; want %q", pr.k, v, ok, got[first].v)
			}
			if c := p.Count(pr.k); c != n {
				t.Fatalf("Count(%q) = %d, want %d", pr.k, c, n)
			}
		}

		// Escaping every byte of every key and value and parsing again gives the same pairs.
		for _, upper := range []bool{false, true} {
			parts := make([]string, len(got))
			for i, pr := range got {
				parts[i] = escapeAll(pr.k, upper) + "=" + escapeAll(pr.v, upper)
			}
			var q Params
			if err := q.Parse(strings.Join(parts, "&")); err != nil {
				t.Fatalf("re-parse of escaped %q: %v", raw, err)
			}
			if q.Len() != p.Len() {
				t.Fatalf("re-parse of escaped %q: %d pairs, want %d", raw, q.Len(), p.Len())
			}
			for i := 0; i < p.Len(); i++ {
				k1, v1 := p.Pair(i)
				k2, v2 := q.Pair(i)
				if !bytes.Equal(k1, k2) || !bytes.Equal(v1, v2) {
					t.Fatalf("re-parse of escaped %q: pair %d = %q=%q, want %q=%q", raw, i, k2, v2, k1, v1)
				}
			}
		}
	})
}
