package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Errors of the bencode walker. They are values so that a failed validation allocates nothing.
var (
	errBencode      = errors.New("malformed bencode")
	errBencodeDepth = errors.New("bencode nested too deep")
	errNotDict      = errors.New("answer is not a bencoded dictionary")
	errTrailing     = errors.New("bytes after the bencoded answer")
)

// maxDepth bounds nesting so that a hostile answer cannot exhaust the stack.
const maxDepth = 16

// topKeys walks a bencoded dictionary that must make up all of b and calls fn with each of its
// top-level keys and the raw bytes of the value. It checks the grammar (lengths, integer syntax,
// nesting, no trailing bytes) but not key order: the generator judges a tracker by whether a
// client can read its answer, not by how it sorts.
func topKeys(b []byte, fn func(key, val []byte)) error {
	if len(b) == 0 || b[0] != 'd' {
		return errNotDict
	}
	i := 1
	for {
		if i >= len(b) {
			return errBencode
		}
		if b[i] == 'e' {
			i++
			break
		}
		ks, ke, err := bstring(b, i)
		if err != nil {
			return err
		}
		vs := ke
		ve, err := skipValue(b, vs, 1)
		if err != nil {
			return err
		}
		if fn != nil {
			fn(b[ks:ke], b[vs:ve])
		}
		i = ve
	}
	if i != len(b) {
		return errTrailing
	}
	return nil
}

// bstring parses the byte string at b[i:] and returns the bounds of its contents.
func bstring(b []byte, i int) (start, end int, err error) {
	n := 0
	j := i
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		if j-i >= 9 { // over 999,999,999 bytes: not an answer we sent for
			return 0, 0, errBencode
		}
		n = n*10 + int(b[j]-'0')
	}
	if j == i || j >= len(b) || b[j] != ':' || (b[i] == '0' && j-i > 1) {
		return 0, 0, errBencode
	}
	j++
	if n > len(b)-j {
		return 0, 0, errBencode
	}
	return j, j + n, nil
}

// skipValue returns the index just past the bencoded value at b[i:].
func skipValue(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, errBencodeDepth
	}
	if i >= len(b) {
		return 0, errBencode
	}
	switch c := b[i]; {
	case c == 'i':
		j := i + 1
		if j < len(b) && b[j] == '-' {
			j++
		}
		d := j
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		}
		if j == d || j >= len(b) || b[j] != 'e' {
			return 0, errBencode
		}
		if (b[d] == '0' && j-d > 1) || (b[d] == '0' && d > i+1) { // i03e, i-0e
			return 0, errBencode
		}
		return j + 1, nil
	case c >= '0' && c <= '9':
		_, e, err := bstring(b, i)
		return e, err
	case c == 'l' || c == 'd':
		j := i + 1
		for {
			if j >= len(b) {
				return 0, errBencode
			}
			if b[j] == 'e' {
				return j + 1, nil
			}
			if c == 'd' {
				_, ke, err := bstring(b, j)
				if err != nil {
					return 0, err
				}
				j = ke
			}
			var err error
			if j, err = skipValue(b, j, depth+1); err != nil {
				return 0, err
			}
		}
	default:
		return 0, errBencode
	}
}

// Verdict is what the generator makes of one answer.
type Verdict uint8

// The verdicts. Only OK counts as a response; the rest are errors.
const (
	OK             Verdict = iota
	Failure                // a well-formed answer with "failure reason" (or a UDP error packet)
	Malformed              // not an answer a client could read
	Unexpected             // a UDP answer to no request in flight (wrong transaction ID or action)
	Timeout                // no answer within the timeout
	TransportError         // connect, write or read failed
	numVerdicts
)

// String names the verdict for reports.
func (v Verdict) String() string {
	switch v {
	case OK:
		return "ok"
	case Failure:
		return "failure"
	case Malformed:
		return "malformed"
	case Unexpected:
		return "unexpected"
	case Timeout:
		return "timeout"
	case TransportError:
		return "transport"
	}
	return "unknown"
}

var (
	keyInterval = []byte("interval")
	keyFailure  = []byte("failure reason")
	keyFiles    = []byte("files")
)

// CheckAnnounceBody judges the body of an HTTP announce answer: a bencoded dictionary with
// "interval" is OK, one with "failure reason" is a Failure (its text is returned), anything
// else is Malformed.
func CheckAnnounceBody(body []byte) (Verdict, []byte) {
	var interval bool
	var reason []byte
	if err := topKeys(body, func(k, v []byte) {
		switch {
		case bytes.Equal(k, keyInterval):
			interval = len(v) > 0 && v[0] == 'i'
		case bytes.Equal(k, keyFailure):
			reason = v
		}
	}); err != nil {
		return Malformed, nil
	}
	if reason != nil {
		return Failure, failureText(reason)
	}
	if !interval {
		return Malformed, nil
	}
	return OK, nil
}

// failureText returns the text of a "failure reason" value, or the raw value if it is not a
// bencoded string.
func failureText(v []byte) []byte {
	if s, e, err := bstring(v, 0); err == nil {
		return v[s:e]
	}
	return v
}

// CheckScrapeBody judges the body of an HTTP scrape answer: a bencoded dictionary whose "files"
// is a dictionary with exactly want entries is OK; "failure reason" is a Failure.
func CheckScrapeBody(body []byte, want int) (Verdict, []byte) {
	files := -1
	var reason []byte
	if err := topKeys(body, func(k, v []byte) {
		switch {
		case bytes.Equal(k, keyFiles):
			n := 0
			if topKeys(v, func(_, _ []byte) { n++ }) == nil {
				files = n
			}
		case bytes.Equal(k, keyFailure):
			reason = v
		}
	}); err != nil {
		return Malformed, nil
	}
	if reason != nil {
		return Failure, failureText(reason)
	}
	if files != want {
		return Malformed, nil
	}
	return OK, nil
}

var (
	keyComplete   = []byte("complete")
	keyIncomplete = []byte("incomplete")
	// errNoFiles means a scrape answer without a "files" dictionary.
	errNoFiles = errors.New("scrape answer without files")
)

// ScrapeFiles calls fn with the info hash, seeders (complete) and leechers (incomplete) of each
// entry of an HTTP scrape answer's "files" dictionary. A "failure reason", a malformed answer
// or an entry without both counts is an error.
func ScrapeFiles(body []byte, fn func(hash []byte, complete, incomplete int64)) error {
	var files, reason []byte
	if err := topKeys(body, func(k, v []byte) {
		switch {
		case bytes.Equal(k, keyFiles):
			files = v
		case bytes.Equal(k, keyFailure):
			reason = v
		}
	}); err != nil {
		return err
	}
	if reason != nil {
		return fmt.Errorf("scrape failure: %s", failureText(reason))
	}
	if files == nil {
		return errNoFiles
	}
	var entryErr error
	if err := topKeys(files, func(h, entry []byte) {
		complete, incomplete := int64(-1), int64(-1)
		err := topKeys(entry, func(k, v []byte) {
			switch {
			case bytes.Equal(k, keyComplete):
				complete = bint(v)
			case bytes.Equal(k, keyIncomplete):
				incomplete = bint(v)
			}
		})
		if err == nil && (complete < 0 || incomplete < 0) {
			err = errBencode
		}
		if err != nil {
			if entryErr == nil {
				entryErr = err
			}
			return
		}
		fn(h, complete, incomplete)
	}); err != nil {
		return err
	}
	return entryErr
}

// bint returns the value of a bencoded non-negative integer that skipValue accepted, or -1 when
// v is not one (or does not fit).
func bint(v []byte) int64 {
	if len(v) < 3 || v[0] != 'i' || v[len(v)-1] != 'e' {
		return -1
	}
	n, err := strconv.ParseInt(string(v[1:len(v)-1]), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
