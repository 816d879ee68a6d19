package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWatch: a file written in place, replaced by a rename, and a burst of writes each come
// through once things are quiet; another file of the directory does not.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "watched")
	require.NoError(t, os.WriteFile(path, []byte("a"), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan struct{}, 16)
	require.NoError(t, Watch(ctx, []string{path}, 50*time.Millisecond, func() { changes <- struct{}{} }, func(err error) { t.Error(err) }))
	wait := func(what string) {
		t.Helper()
		select {
		case <-changes:
		case <-time.After(5 * time.Second):
			t.Fatalf("no change told after %s", what)
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case <-changes:
			t.Fatalf("a change told after %s", what)
		case <-time.After(300 * time.Millisecond):
		}
	}
	require.NoError(t, os.WriteFile(path, []byte("b"), 0o644))
	wait("a write in place")
	tmp := filepath.Join(dir, "watched.new")
	require.NoError(t, os.WriteFile(tmp, []byte("c"), 0o644))
	require.NoError(t, os.Rename(tmp, path))
	wait("a rename over it")
	for i := 0; i < 5; i++ {
		require.NoError(t, os.WriteFile(path, []byte{byte(i)}, 0o644))
	}
	wait("a burst of writes")
	quiet("the burst, told once")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o644))
	quiet("a write to another file")
}
