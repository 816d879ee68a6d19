package accesslist

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/tracker/models"
)

// ih returns the test hash number n.
func ih(n int) models.InfoHash {
	return sha1.Sum(binary.BigEndian.AppendUint64(nil, uint64(n)))
}

func hexOf(h models.InfoHash) string { return hex.EncodeToString(h[:]) }

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
}

func TestParse(t *testing.T) {
	upper := strings.ToUpper(hexOf(ih(2)))
	for _, tc := range []struct {
		name string
		text string
		want []models.InfoHash
		bad  []int // line numbers reported
	}{
		{"empty", "", nil, nil},
		{"one hash, no newline", hexOf(ih(1)), []models.InfoHash{ih(1)}, nil},
		{"either case", hexOf(ih(1)) + "\n" + upper + "\n", []models.InfoHash{ih(1), ih(2)}, nil},
		{"comments and blanks", "# takedowns\n\n  " + hexOf(ih(1)) + "  # DMCA 123\n\t\n#" + hexOf(ih(3)) + "\n", []models.InfoHash{ih(1)}, nil},
		{"CRLF", hexOf(ih(1)) + "\r\n" + hexOf(ih(2)) + "\r\n", []models.InfoHash{ih(1), ih(2)}, nil},
		{"bad lines skipped, the rest applies", hexOf(ih(1)) + "\nnot a hash\n" + hexOf(ih(2))[:39] + "\n" + hexOf(ih(2)) + "\n" + strings.Repeat("g", 40) + "\n", []models.InfoHash{ih(1), ih(2)}, []int{2, 3, 5}},
		{"two hashes on a line", hexOf(ih(1)) + " " + hexOf(ih(2)) + "\n", nil, []int{1}},
		{"a very long line", strings.Repeat("a", 200000) + "\n" + hexOf(ih(1)) + "\n", []models.InfoHash{ih(1)}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs, r, err := parse(strings.NewReader(tc.text))
			require.NoError(t, err)
			assert.Equal(t, tc.want, hs)
			var lines []int
			for _, b := range r.Bad {
				lines = append(lines, b.Line)
				assert.Contains(t, b.Error(), fmt.Sprintf("line %d", b.Line))
			}
			assert.Equal(t, tc.bad, lines)
			assert.Equal(t, len(tc.bad), r.BadLines)
		})
	}
}

func TestTable(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 100, 4097} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var hs []models.InfoHash
			for i := 0; i < n; i++ {
				hs = append(hs, ih(i))
				if i%7 == 0 {
					hs = append(hs, ih(i)) // duplicates count once
				}
			}
			tb := newTable(hs)
			assert.Equal(t, n, tb.len())
			for i := 0; i < n; i++ {
				h := ih(i)
				require.True(t, tb.contains(&h), "hash %d", i)
			}
			for i := n; i < n+1000; i++ {
				h := ih(i)
				require.False(t, tb.contains(&h), "hash %d is not listed", i)
			}
			for i := 1; i < tb.len(); i++ {
				require.Negative(t, strings.Compare(string(tb.hashes[i-1][:]), string(tb.hashes[i][:])), "sorted")
			}
		})
	}
}

func TestDiff(t *testing.T) {
	old := newTable([]models.InfoHash{ih(1), ih(2), ih(3)})
	cur := newTable([]models.InfoHash{ih(2), ih(3), ih(4), ih(5)})
	gone, added := map[models.InfoHash]bool{}, map[models.InfoHash]bool{}
	cur.diff(old, func(h models.InfoHash) { gone[h] = true }, func(h models.InfoHash) { added[h] = true })
	assert.Equal(t, map[models.InfoHash]bool{ih(1): true}, gone)
	assert.Equal(t, map[models.InfoHash]bool{ih(4): true, ih(5): true}, added)
}

func TestModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list")
	writeFile(t, path, hexOf(ih(1))+"\n")
	listed, other := ih(1), ih(2)
	for _, tc := range []struct {
		mode                    Mode
		listedAllowed, otherAll bool
	}{
		{Off, true, true},
		{Allow, true, false},
		{Deny, false, true},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			l, _, err := New(tc.mode, path, nil)
			require.NoError(t, err)
			assert.Equal(t, tc.listedAllowed, l.Allowed(&listed))
			assert.Equal(t, tc.otherAll, l.Allowed(&other))
		})
	}
	for _, s := range []string{"", "off", "allow", "deny"} {
		_, err := ParseMode(s)
		assert.NoError(t, err, s)
	}
	_, err := ParseMode("block")
	assert.Error(t, err)
}

func TestNewNeedsTheFile(t *testing.T) {
	_, _, err := New(Deny, filepath.Join(t.TempDir(), "missing"), nil)
	assert.ErrorContains(t, err, "missing")
	_, _, err = New(Allow, "", nil)
	assert.ErrorContains(t, err, "access_list_file")
	l, _, err := New(Off, "", nil)
	require.NoError(t, err)
	h := ih(1)
	assert.True(t, l.Allowed(&h))
}

// TestReloadRefuses: a reload tells which torrents it refuses, in each mode, and a file that
// cannot be read leaves the list as it was.
func TestReloadRefuses(t *testing.T) {
	for _, tc := range []struct {
		mode        Mode
		before, now []int
		refused     []int
	}{
		{Deny, []int{1}, []int{1, 2, 3}, []int{2, 3}},
		{Allow, []int{1, 2, 3}, []int{2}, []int{1, 3}},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "list")
			lines := func(ns []int) string {
				var b strings.Builder
				for _, n := range ns {
					b.WriteString(hexOf(ih(n)) + "\n")
				}
				return b.String()
			}
			writeFile(t, path, lines(tc.before))
			var refused []models.InfoHash
			l, _, err := New(tc.mode, path, func(hs []models.InfoHash) { refused = append(refused, hs...) })
			require.NoError(t, err)
			if tc.mode == Deny {
				// The first load refuses what it lists: a driver that kept swarms across the
				// restart (Redis) drops theirs.
				assert.Len(t, refused, len(tc.before))
			} else {
				assert.Empty(t, refused, "an allow list cannot name what it refuses")
			}
			refused = nil
			writeFile(t, path, lines(tc.now))
			r, err := l.Reload()
			require.NoError(t, err)
			assert.Equal(t, len(tc.now), r.Entries)
			var want []models.InfoHash
			for _, n := range tc.refused {
				want = append(want, ih(n))
			}
			assert.ElementsMatch(t, want, refused)
			assert.Equal(t, len(tc.refused), r.Refused)

			require.NoError(t, os.Remove(path))
			_, err = l.Reload()
			assert.Error(t, err)
			assert.Equal(t, len(tc.now), l.Len(), "the old list stays")
		})
	}
}

func TestEditWritesBack(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "list")
	writeFile(t, path, "# mine\n"+hexOf(ih(1))+"\n")
	require.NoError(t, os.Chmod(path, 0o640))
	var refused []models.InfoHash
	l, _, err := New(Deny, path, func(hs []models.InfoHash) { refused = append(refused, hs...) })
	require.NoError(t, err)
	refused = nil

	changed, err := l.Add(ih(2))
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, []models.InfoHash{ih(2)}, refused, "denying a torrent refuses it")
	changed, err = l.Add(ih(2))
	require.NoError(t, err)
	assert.False(t, changed, "already listed")
	changed, err = l.Remove(ih(1))
	require.NoError(t, err)
	assert.True(t, changed)
	h1, h2 := ih(1), ih(2)
	assert.True(t, l.Allowed(&h1))
	assert.False(t, l.Allowed(&h2))

	// A restart reads what the edits wrote, with the file's mode kept and no temporary left.
	again, _, err := New(Deny, path, nil)
	require.NoError(t, err)
	assert.Equal(t, []models.InfoHash{ih(2)}, again.Hashes())
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), st.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1)
}

// TestConcurrentReloads: lookups while lists are swapped see the old list or the new one,
// never a mix (checked under -race too).
func TestConcurrentReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list")
	a := hexOf(ih(1)) + "\n" + hexOf(ih(2)) + "\n"
	b := hexOf(ih(3)) + "\n" + hexOf(ih(4)) + "\n"
	writeFile(t, path, a)
	l, _, err := New(Allow, path, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			writeFile(t, path, []string{a, b}[i%2])
			_, err := l.Reload()
			assert.NoError(t, err)
		}
	}()
	h1, h3 := ih(1), ih(3)
	for ctx.Err() == nil {
		tb := l.cur.Load()
		one, three := tb.contains(&h1), tb.contains(&h3)
		require.True(t, one != three, "a table is one list or the other")
		_ = l.Allowed(&h1)
	}
	wg.Wait()
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "list")
	writeFile(t, path, "")
	l, _, err := New(Deny, path, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloads := make(chan Report, 16)
	require.NoError(t, l.Watch(ctx, func(r Report, err error) {
		assert.NoError(t, err)
		reloads <- r
	}))
	h := ih(7)
	// Written in place.
	writeFile(t, path, hexOf(h)+"\n")
	waitReload(t, reloads, 1)
	assert.False(t, l.Allowed(&h))
	// Replaced by a rename, as editors and deployment tools do, with a bad line.
	tmp := filepath.Join(dir, "list.new")
	writeFile(t, tmp, "oops\n")
	require.NoError(t, os.Rename(tmp, path))
	r := waitReload(t, reloads, 0)
	assert.Equal(t, 1, r.BadLines)
	assert.True(t, l.Allowed(&h))
}

func waitReload(t *testing.T, reloads chan Report, entries int) Report {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-reloads:
			if r.Entries == entries {
				return r
			}
		case <-deadline:
			t.Fatalf("no reload to %d entries", entries)
		}
	}
}

// BenchmarkAllowed is one lookup in a list of 1 million hashes, half of them listed.
func BenchmarkAllowed(b *testing.B) {
	const n = 1_000_000
	hs := make([]models.InfoHash, n)
	for i := range hs {
		hs[i] = ih(i)
	}
	l := &List{}
	l.mode.Store(uint32(Deny))
	l.cur.Store(newTable(hs))
	probe := make([]models.InfoHash, 4096)
	for i := range probe {
		probe[i] = ih(i * 500) // every other one is beyond n
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.Allowed(&probe[i&4095])
	}
}

// BenchmarkBuild10M builds a list of 10 million hashes and reports its heap, in bytes an entry
// and in all.
func BenchmarkBuild10M(b *testing.B) {
	const n = 10_000_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		hs := make([]models.InfoHash, n)
		for j := range hs {
			hs[j] = ih(j)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		tb := newTable(hs)
		b.StopTimer()
		hs = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc)/float64(n), "heapB/entry")
		b.ReportMetric(float64(after.HeapAlloc)/(1<<20), "heapMB")
		runtime.KeepAlive(tb)
		_ = before
	}
}
