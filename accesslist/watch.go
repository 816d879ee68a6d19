package accesslist

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long the file must be quiet after a change before it is read: an editor or a
// copy may write it in several steps.
const settle = 200 * time.Millisecond

// Watch reloads the list whenever its file changes on disk, until ctx ends, and tells done of
// each reload. It watches the file's directory, so that a file replaced by a rename (editors,
// configuration management, the list's own writes) is followed too. It returns an error only
// when the watch cannot be set up. It watches the file the list has when it is called; after
// Reconfigure names another, call it again (and end the old watch's ctx).
func (l *List) Watch(ctx context.Context, done func(Report, error)) error {
	path := l.Path()
	if l.Mode() == Off || path == "" {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("access list: watch: %w", err)
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	if err := w.Add(dir); err != nil {
		_ = w.Close()
		return fmt.Errorf("access list: watch %s: %w", dir, err)
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
				if filepath.Base(ev.Name) == base && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
					timer.Reset(settle)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				done(Report{Path: path}, fmt.Errorf("access list: watch: %w", err))
			case <-timer.C:
				r, err := l.Reload()
				done(r, err)
			}
		}
	}()
	return nil
}
