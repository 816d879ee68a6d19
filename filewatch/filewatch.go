// Package filewatch tells when files change on disk. It watches the files' directories rather
// than the files, so that a file replaced by a rename (editors, deployment tools, the tracker's
// own atomic writes) or a symbolic link switched over (certbot's live/ directory) is followed,
// and it waits for the files to be quiet before it tells, since a change often comes in
// several writes.
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Settle is how long files must be quiet after a change before Watch tells of it.
const Settle = 200 * time.Millisecond

// Watch calls changed once a write, creation or rename of any of paths has been followed by
// settle of quiet, and failed with any error of the watch, until ctx ends. It returns an error
// only when the watch cannot be set up; the goroutine it starts ends with ctx.
func Watch(ctx context.Context, paths []string, settle time.Duration, changed func(), failed func(error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	names := map[string]bool{}
	for _, p := range paths {
		dir := filepath.Dir(p)
		names[filepath.Join(dir, filepath.Base(p))] = true
		if err := w.Add(dir); err != nil && !errors.Is(err, fsnotify.ErrNonExistentWatch) {
			_ = w.Close()
			return fmt.Errorf("watch %s: %w", dir, err)
		}
	}
	go func() {
		defer w.Close()
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if names[filepath.Clean(ev.Name)] && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
					timer.Reset(settle)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				failed(fmt.Errorf("watch: %w", err))
			case <-timer.C:
				changed()
			}
		}
	}()
	return nil
}
