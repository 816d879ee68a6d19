package chihaya

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestVersionLine(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{
			name: "release build from a clean tree",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.8",
				Path:      "github.com/chihaya/chihaya/cmd/chihaya",
				Main:      debug.Module{Path: "github.com/chihaya/chihaya", Version: "v1.4.0"},
				Settings: settings("GOOS", "linux", "GOARCH", "amd64",
					"vcs", "git", "vcs.revision", "2f58786c0ffee", "vcs.time", "2026-01-02T03:04:05Z", "vcs.modified", "false"),
			},
			want: "chihaya v1.4.0, revision 2f58786c0ffee, committed 2026-01-02T03:04:05Z, built with go1.26.8 for linux/amd64",
		},
		{
			name: "development build with uncommitted changes",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.8",
				Main:      debug.Module{Path: "github.com/chihaya/chihaya", Version: "v0.0.0-20260102030405-2f58786c0ffe+dirty"},
				Settings: settings("GOOS", "linux", "GOARCH", "arm64",
					"vcs.revision", "2f58786c0ffee", "vcs.time", "2026-01-02T03:04:05Z", "vcs.modified", "true"),
			},
			want: "chihaya v0.0.0-20260102030405-2f58786c0ffe+dirty, revision 2f58786c0ffee+modified, committed 2026-01-02T03:04:05Z, built with go1.26.8 for linux/arm64",
		},
		{
			name: "built without VCS stamping (-buildvcs=false)",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.8",
				Main:      debug.Module{Path: "github.com/chihaya/chihaya", Version: "(devel)"},
				Settings:  settings("GOOS", "linux", "GOARCH", "amd64"),
			},
			want: "chihaya (devel), revision unknown, committed unknown, built with go1.26.8 for linux/amd64",
		},
		{
			name: "custom binary that imports chihaya",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.8",
				Main:      debug.Module{Path: "example.com/mytracker", Version: "v0.2.0"},
				Deps:      []*debug.Module{{Path: "github.com/redis/go-redis/v9", Version: "v9.23.0"}, {Path: "github.com/chihaya/chihaya", Version: "v1.4.0"}},
				Settings:  settings("vcs.revision", "abc123", "vcs.time", "2026-03-04T05:06:07Z"),
			},
			want: "chihaya v0.2.0 (example.com/mytracker with github.com/chihaya/chihaya v1.4.0), revision abc123, committed 2026-03-04T05:06:07Z, built with go1.26.8",
		},
		{
			name: "custom binary with chihaya replaced by a local copy",
			bi: &debug.BuildInfo{
				GoVersion: "go1.26.8",
				Main:      debug.Module{Path: "example.com/mytracker", Version: "(devel)"},
				Deps: []*debug.Module{{Path: "github.com/chihaya/chihaya", Version: "v1.4.0",
					Replace: &debug.Module{Path: "../chihaya", Version: ""}}},
			},
			want: "chihaya (devel) (example.com/mytracker with github.com/chihaya/chihaya v1.4.0 => ../chihaya), revision unknown, committed unknown, built with go1.26.8",
		},
		{
			name: "no build info",
			bi:   nil,
			want: "chihaya (no build info in this binary)",
		},
		{
			name: "empty build info",
			bi:   &debug.BuildInfo{},
			want: "chihaya unknown, revision unknown, committed unknown, built with unknown",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := versionLine(tt.bi)
			assert.Equal(t, tt.want, got)
			assert.NotContains(t, got, "\n", "one line")
		})
	}
}

// TestVersionLineOfThisBinary formats the test binary's own build info: whatever it holds,
// the line names the Go version that built it.
func TestVersionLineOfThisBinary(t *testing.T) {
	bi := buildInfo()
	if bi == nil {
		t.Skip("this test binary has no build info")
	}
	got := versionLine(bi)
	assert.True(t, strings.HasPrefix(got, "chihaya "), got)
	assert.Contains(t, got, "built with "+bi.GoVersion)
}
