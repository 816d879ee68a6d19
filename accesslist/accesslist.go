// Package accesslist decides which torrents the tracker serves: none refused (mode off), only
// the listed ones (allow), or all but the listed ones (deny). The list is a file of info hashes,
// one per line as 40 hex digits, read at start, again on Reload (SIGHUP, the admin API) and when
// it changes on disk (Watch). A reload builds a new immutable set and swaps it in atomically:
// a request sees the old list or the new one, and lookups never wait for a reload. Edits through
// Add and Remove write the whole file back atomically (a temporary file, fsynced and renamed),
// so a restart keeps them.
package accesslist

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/chihaya/chihaya/tracker/models"
)

// Mode is what the list means.
type Mode uint32

// The modes of access_list_mode.
const (
	Off   Mode = iota // every torrent is served; the file is not read
	Allow             // only the listed torrents are served
	Deny              // the listed torrents are refused
)

// ParseMode reads access_list_mode's value: "off" (or ""), "allow" or "deny".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "off":
		return Off, nil
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	}
	return Off, fmt.Errorf("want \"off\", \"allow\" or \"deny\", got %q", s)
}

func (m Mode) String() string { return [...]string{"off", "allow", "deny"}[m] }

// LineError is one line of the file that is not an info hash.
type LineError struct {
	Line int
	Text string
}

func (e LineError) Error() string {
	return fmt.Sprintf("line %d: not 40 hex digits: %q", e.Line, e.Text)
}

// Report is what one load of the file found.
type Report struct {
	Path    string
	Entries int
	// Bad lists the lines that were skipped (the rest applies); at most maxBadLines of them,
	// BadLines counts them all.
	Bad      []LineError
	BadLines int
	// Refused and Admitted count the hashes whose fate changed: torrents now refused, and torrents
	// served again.
	Refused, Admitted int
}

const maxBadLines = 20

// List is an access list. It is safe for concurrent use; Allowed is lock-free.
type List struct {
	mode atomic.Uint32
	cur  atomic.Pointer[table]
	path string
	// onRefuse is called, outside any lock of the list, with the torrents a change refused.
	onRefuse func([]models.InfoHash)
	// mu serializes loads and edits, so that an edit is never lost to a concurrent reload.
	mu sync.Mutex
}

// New returns the list of mode, read from path (which must exist unless mode is Off).
// onRefuse, when not nil, is called with the torrents that a load, reload or edit refuses
// (in deny mode the first load refuses what it lists; an allow list cannot name what it
// refuses), so that their swarms can be dropped.
func New(mode Mode, path string, onRefuse func([]models.InfoHash)) (*List, Report, error) {
	l := &List{path: path, onRefuse: onRefuse}
	l.mode.Store(uint32(mode))
	l.cur.Store(newTable(nil))
	if mode == Off {
		return l, Report{Path: path}, nil
	}
	if path == "" {
		return nil, Report{}, errors.New("access list: access_list_mode is on but access_list_file is empty")
	}
	r, err := l.Reload()
	if err != nil {
		return nil, r, err
	}
	return l, r, nil
}

// Reconfigure changes the list's mode and file (access_list_mode and access_list_file read
// again) and reads the file, unless the mode is Off. When the file cannot be read, nothing
// changes and the error says why.
func (l *List) Reconfigure(mode Mode, path string) (Report, error) {
	l.mu.Lock()
	oldMode, oldPath := l.Mode(), l.path
	l.mode.Store(uint32(mode))
	l.path = path
	if mode == Off {
		l.mu.Unlock()
		return Report{Path: path}, nil
	}
	r, refused, err := l.reloadLocked()
	if err != nil {
		l.mode.Store(uint32(oldMode))
		l.path = oldPath
	}
	l.mu.Unlock()
	l.refuse(refused)
	return r, err
}

// Mode returns the list's mode.
func (l *List) Mode() Mode { return Mode(l.mode.Load()) }

// Path returns the list's file.
func (l *List) Path() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.path
}

// Allowed reports whether ih may be announced and scraped. It allocates nothing.
func (l *List) Allowed(ih *models.InfoHash) bool {
	switch Mode(l.mode.Load()) {
	case Allow:
		return l.cur.Load().contains(ih)
	case Deny:
		return !l.cur.Load().contains(ih)
	}
	return true
}

// Len returns how many hashes the list holds.
func (l *List) Len() int { return l.cur.Load().len() }

// Hashes returns the listed hashes in order.
func (l *List) Hashes() []models.InfoHash { return l.cur.Load().hashes }

// Reload reads the file again and swaps the new list in. Bad lines are skipped and reported;
// a file that cannot be read leaves the list as it was.
func (l *List) Reload() (Report, error) {
	l.mu.Lock()
	r, refused, err := l.reloadLocked()
	l.mu.Unlock()
	l.refuse(refused)
	return r, err
}

func (l *List) reloadLocked() (Report, []models.InfoHash, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return Report{Path: l.path}, nil, fmt.Errorf("access list: %w", err)
	}
	defer f.Close()
	hs, r, err := parse(f)
	r.Path = l.path
	if err != nil {
		return r, nil, fmt.Errorf("access list %s: %w", l.path, err)
	}
	refused := l.swap(newTable(hs), &r)
	return r, refused, nil
}

// swap installs t and returns the torrents it refuses that were served before.
func (l *List) swap(t *table, r *Report) []models.InfoHash {
	old := l.cur.Swap(t)
	r.Entries = t.len()
	var refused []models.InfoHash
	refuse := func(ih models.InfoHash) { refused = append(refused, ih); r.Refused++ }
	admit := func(models.InfoHash) { r.Admitted++ }
	switch l.Mode() {
	case Allow:
		t.diff(old, refuse, admit)
	case Deny:
		t.diff(old, admit, refuse)
	}
	return refused
}

func (l *List) refuse(hs []models.InfoHash) {
	if l.onRefuse != nil && len(hs) > 0 {
		l.onRefuse(hs)
	}
}

// Add lists ih and writes the file back; Remove unlists it. Either reports whether the list
// changed. In deny mode Add refuses the torrent (and drops its swarm); in allow mode Remove does.
func (l *List) Add(ih models.InfoHash) (bool, error) { return l.edit(ih, true) }

// Remove unlists ih; see Add.
func (l *List) Remove(ih models.InfoHash) (bool, error) { return l.edit(ih, false) }

func (l *List) edit(ih models.InfoHash, add bool) (bool, error) {
	l.mu.Lock()
	cur := l.cur.Load()
	if cur.contains(&ih) == add {
		l.mu.Unlock()
		return false, nil
	}
	hs := make([]models.InfoHash, 0, cur.len()+1)
	for _, h := range cur.hashes {
		if h != ih {
			hs = append(hs, h)
		}
	}
	if add {
		hs = append(hs, ih)
	}
	t := newTable(hs)
	if err := l.write(t); err != nil {
		l.mu.Unlock()
		return false, err
	}
	var r Report
	refused := l.swap(t, &r)
	l.mu.Unlock()
	l.refuse(refused)
	return true, nil
}

// write replaces the file with t's hashes, atomically: a temporary file beside it, fsynced,
// then renamed over it.
func (l *List) write(t *table) error {
	if l.path == "" {
		return errors.New("access list: no access_list_file to write")
	}
	dir := filepath.Dir(l.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(l.path)+".*")
	if err != nil {
		return fmt.Errorf("access list: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	w := bufio.NewWriterSize(tmp, 1<<16)
	fmt.Fprintf(w, "# Chihaya access list (%d info hashes), written by the admin API.\n", t.len())
	line := make([]byte, 41)
	line[40] = '\n'
	for i := range t.hashes {
		hex.Encode(line[:40], t.hashes[i][:])
		if _, err := w.Write(line); err != nil {
			break
		}
	}
	err = w.Flush()
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if st, serr := os.Stat(l.path); serr == nil {
			err = os.Chmod(tmp.Name(), st.Mode().Perm())
		}
	}
	if err == nil {
		err = os.Rename(tmp.Name(), l.path)
	}
	if err != nil {
		return fmt.Errorf("access list: write %s: %w", l.path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// parse reads the hashes of a list file: one per line as 40 hex digits (either case), with
// blank lines, whole-line and trailing '#' comments and surrounding spaces allowed.
func parse(rd io.Reader) ([]models.InfoHash, Report, error) {
	var r Report
	var hs []models.InfoHash
	br := bufio.NewReaderSize(rd, 1<<16)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer is no hash: skip the rest of it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			r.bad(n, string(line[:64])+"...")
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, r, err
			}
			continue
		}
		if err != nil && err != io.EOF {
			return nil, r, err
		}
		text := line
		if i := bytes.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = bytes.TrimSpace(text)
		if len(text) > 0 {
			var ih models.InfoHash
			if len(text) != 40 {
				r.bad(n, string(text))
			} else if _, herr := hex.Decode(ih[:], text); herr != nil {
				r.bad(n, string(text))
			} else {
				hs = append(hs, ih)
			}
		}
		if err == io.EOF {
			break
		}
	}
	if len(hs) > maxEntries {
		return nil, r, fmt.Errorf("%d hashes, more than %d", len(hs), maxEntries)
	}
	return hs, r, nil
}

func (r *Report) bad(line int, text string) {
	r.BadLines++
	if len(r.Bad) < maxBadLines {
		r.Bad = append(r.Bad, LineError{Line: line, Text: strings.ToValidUTF8(text, "?")})
	}
}

// ParseHash reads one info hash as 40 hex digits, either case.
func ParseHash(s string) (models.InfoHash, bool) {
	var ih models.InfoHash
	if len(s) != 40 {
		return ih, false
	}
	if _, err := hex.Decode(ih[:], []byte(s)); err != nil {
		return ih, false
	}
	return ih, true
}

// FromHashes returns a list of mode holding hs, with no file behind it (Reload and edits fail):
// for tests, benchmarks and tools.
func FromHashes(mode Mode, hs []models.InfoHash) *List {
	l := &List{}
	l.mode.Store(uint32(mode))
	l.cur.Store(newTable(slices.Clone(hs)))
	return l
}
