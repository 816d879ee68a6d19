package dist

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// buildTimeout bounds the build of the binary the Dockerfile's command makes. With a cold
// cache (CGO_ENABLED=0 and -trimpath share no compiled package with the race builds) it takes
// a minute or two on two cores.
const buildTimeout = 8 * time.Minute

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

// TestMain removes the binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// repoRoot is the repository's root: the Dockerfile's build context.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "go.mod"))
	return root
}

// staticBinary builds the tracker once per test run with the Dockerfile's own build command
// (its build stage's RUN that writes binaryInImage, run from the repository's root with the
// output moved to a temporary directory) and returns the binary's path.
func staticBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the tracker binary with the Dockerfile's command")
	}
	root := repoRoot(t)
	buildOnce.Do(func() {
		df, err := parseDockerfile(filepath.Join(root, "dist", "Dockerfile"))
		if err != nil {
			buildErr = err
			return
		}
		run, err := df.buildCommand()
		if err != nil {
			buildErr = err
			return
		}
		if buildDir, err = os.MkdirTemp("", "chihaya-dist-"); err != nil {
			buildErr = err
			return
		}
		bin := filepath.Join(buildDir, "chihaya")
		cmdline := strings.ReplaceAll(run, binaryInImage, bin)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", cmdline)
		cmd.Dir = root
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = &buildError{cmdline: cmdline, out: string(out), err: err}
			return
		}
		t.Logf("built %s in %v: %s", bin, time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
		builtBin = bin
	})
	require.NoError(t, buildErr)
	return builtBin
}

type buildError struct {
	cmdline, out string
	err          error
}

func (e *buildError) Error() string {
	return "the Dockerfile's build command `" + e.cmdline + "`: " + e.err.Error() + "\n" + e.out
}

func (e *buildError) Unwrap() error { return e.err }

// isStatic reports whether the ELF file at path asks for no dynamic loader and no shared
// library: it runs on a base without libc.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return false, err
	}
	return len(libs) == 0, nil
}
