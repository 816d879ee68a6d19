// Package bencode appends bencoded values (BEP 3) to byte slices. It is a writer only: the
// tracker never decodes bencode. Callers write dictionary keys in raw-byte sorted order
// themselves, which for the fixed keys of tracker answers is known when the code is written;
// Sorted reports whether a sequence of keys is in that order, for tests.
package bencode

import (
	"bytes"
	"strconv"
)

// AppendString appends s as a bencoded byte string.
func AppendString(dst []byte, s string) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

// AppendBytes appends b as a bencoded byte string.
func AppendBytes(dst, b []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, ':')
	return append(dst, b...)
}

// AppendStringHeader appends the length prefix of a byte string of n bytes; the caller appends
// the n bytes next. It lets a caller write a compact peer string without building it first.
func AppendStringHeader(dst []byte, n int) []byte {
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, ':')
}

// AppendInt appends n as a bencoded integer.
func AppendInt(dst []byte, n int64) []byte {
	dst = append(dst, 'i')
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, 'e')
}

// AppendDictStart, AppendListStart and AppendEnd open and close containers.
func AppendDictStart(dst []byte) []byte { return append(dst, 'd') }

// AppendListStart opens a list.
func AppendListStart(dst []byte) []byte { return append(dst, 'l') }

// AppendEnd closes the innermost dictionary or list.
func AppendEnd(dst []byte) []byte { return append(dst, 'e') }

// Sorted reports whether keys are strictly increasing as raw bytes, as bencode requires of the
// keys of one dictionary.
func Sorted(keys ...[]byte) bool {
	for i := 1; i < len(keys); i++ {
		if bytes.Compare(keys[i-1], keys[i]) >= 0 {
			return false
		}
	}
	return true
}
