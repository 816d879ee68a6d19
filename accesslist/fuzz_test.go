package accesslist

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// FuzzParse reads arbitrary list files: it never panics, every hash it returns is written in
// the input (as 40 hex digits, either case), it counts no more bad lines than the input has
// lines, and the list it read, written back one hash a line, reads back the same.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"0123456789abcdef0123456789abcdef01234567\n",
		"# comment\n\n  0123456789ABCDEF0123456789ABCDEF01234567  # takedown\r\nnot a hash\n",
		"0123456789abcdef0123456789abcdef0123456\n0123456789abcdef0123456789abcdef012345678\n",
		strings.Repeat("a", 70000) + "\n0123456789abcdef0123456789abcdef01234567",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		hs, r, err := parse(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("parse of an in-memory file failed: %v", err)
		}
		lower := bytes.ToLower(in)
		var back bytes.Buffer
		for _, h := range hs {
			x := hex.EncodeToString(h[:])
			if !bytes.Contains(lower, []byte(x)) {
				t.Fatalf("hash %s is not in the input", x)
			}
			back.WriteString(x + "\n")
		}
		if lines := bytes.Count(in, []byte("\n")) + 1; r.BadLines > lines {
			t.Fatalf("%d bad lines of %d", r.BadLines, lines)
		}
		again, r2, err := parse(&back)
		if err != nil || r2.BadLines != 0 || len(again) != len(hs) {
			t.Fatalf("written back: %d hashes, %d bad lines, %v; want %d, 0", len(again), r2.BadLines, err, len(hs))
		}
		for i := range hs {
			if again[i] != hs[i] {
				t.Fatalf("hash %d: %x, want %x", i, again[i][:], hs[i][:])
			}
		}
	})
}
