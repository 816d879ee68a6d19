package accesslist

import (
	"context"
	"fmt"

	"github.com/chihaya/chihaya/filewatch"
)

// Watch reloads the list whenever its file changes on disk, until ctx ends, and tells done of
// each reload. It follows a file replaced by a rename too (see package filewatch). It returns
// an error only when the watch cannot be set up. It watches the file the list has when it is
// called; after Reconfigure names another, call it again (and end the old watch's ctx).
func (l *List) Watch(ctx context.Context, done func(Report, error)) error {
	path := l.Path()
	if l.Mode() == Off || path == "" {
		return nil
	}
	err := filewatch.Watch(ctx, []string{path}, filewatch.Settle,
		func() { done(l.Reload()) },
		func(err error) { done(Report{Path: path}, fmt.Errorf("access list: %w", err)) })
	if err != nil {
		return fmt.Errorf("access list: %w", err)
	}
	return nil
}
