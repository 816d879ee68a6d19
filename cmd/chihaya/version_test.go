//go:build linux

package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVersionFlag builds the binary as an operator would (VCS stamping on when the source is a
// git checkout, whatever GOFLAGS say), runs `chihaya -version`, and checks its one line against
// what `go version -m` reads from the same binary: the module version, the VCS revision and
// time, and the Go version. It also checks that -version starts no tracker: the process exits 0 by itself.
func TestVersionFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the tracker binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	goTool, err := exec.LookPath("go")
	require.NoError(t, err, "the go tool builds the binary")
	bin := filepath.Join(t.TempDir(), "chihaya")
	out, err := exec.CommandContext(ctx, goTool, "build", "-buildvcs=auto", "-o", bin, ".").CombinedOutput()
	if err != nil && strings.Contains(string(out), "VCS") {
		// Not a git checkout, or git refuses it (another owner): build without stamping.
		t.Logf("go build with VCS stamping failed, building without it: %s", out)
		out, err = exec.CommandContext(ctx, goTool, "build", "-buildvcs=false", "-o", bin, ".").CombinedOutput()
	}
	require.NoError(t, err, "go build: %s", out)

	meta, err := exec.CommandContext(ctx, goTool, "version", "-m", bin).Output()
	require.NoError(t, err, "go version -m")
	info := parseGoVersionM(t, string(meta))

	runCtx, cancelRun := context.WithTimeout(ctx, 10*time.Second)
	defer cancelRun()
	cmd := exec.CommandContext(runCtx, bin, "-version")
	start := time.Now()
	stdout, err := cmd.Output()
	require.NoError(t, err, "chihaya -version must exit 0 by itself (took %v)", time.Since(start))
	line := string(stdout)
	require.True(t, strings.HasSuffix(line, "\n"), "ends with a newline: %q", line)
	line = strings.TrimSuffix(line, "\n")
	assert.NotContains(t, line, "\n", "one line")
	t.Logf("chihaya -version: %s", line)

	assert.True(t, strings.HasPrefix(line, "chihaya "+info.version+","), "module version %q first in %q", info.version, line)
	assert.Contains(t, line, "built with "+info.goVersion+" for "+info.settings["GOOS"]+"/"+info.settings["GOARCH"])
	if rev := info.settings["vcs.revision"]; rev != "" {
		want := "revision " + rev
		if info.settings["vcs.modified"] == "true" {
			want += "+modified"
		}
		assert.Contains(t, line, want+",")
		assert.Contains(t, line, "committed "+info.settings["vcs.time"]+",")
	} else {
		assert.Contains(t, line, "revision unknown, committed unknown")
	}
}

type goVersionM struct {
	goVersion, version string
	settings           map[string]string
}

// parseGoVersionM reads `go version -m BIN`: "BIN: goX", then tab-separated lines such as
// "mod PATH VERSION SUM" and "build KEY=VALUE".
func parseGoVersionM(t *testing.T, text string) goVersionM {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	require.NotEmpty(t, lines)
	_, gv, ok := strings.Cut(lines[0], ": ")
	require.True(t, ok, "first line of go version -m: %q", lines[0])
	info := goVersionM{goVersion: strings.TrimSpace(gv), settings: map[string]string{}}
	for _, l := range lines[1:] {
		f := strings.Split(strings.TrimSpace(l), "\t")
		switch {
		case len(f) >= 3 && f[0] == "mod":
			info.version = f[2]
		case len(f) == 2 && f[0] == "build":
			if k, v, ok := strings.Cut(f[1], "="); ok {
				info.settings[k] = v
			}
		}
	}
	require.NotEmpty(t, info.version, "no mod line in go version -m:\n%s", text)
	return info
}
