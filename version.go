package chihaya

import (
	"runtime/debug"
	"strings"
)

// modulePath is this module's path: a custom binary that calls Boot has its own main module,
// and then -version also names the Chihaya it was built with.
const modulePath = "github.com/chihaya/chihaya"

// versionLine formats what `chihaya -version` prints, on one line, from a binary's build info:
// the main module's version, Chihaya's own when the main module is another, the VCS revision
// and commit time (with "+modified" when the tree had uncommitted changes), the Go version,
// and the target. What bi lacks is said to be unknown; a nil bi (a binary without build info)
// gives a line that says so.
func versionLine(bi *debug.BuildInfo) string {
	if bi == nil {
		return "chihaya (no build info in this binary)"
	}
	var b strings.Builder
	b.WriteString("chihaya ")
	b.WriteString(orUnknown(bi.Main.Version))
	if bi.Main.Path != "" && bi.Main.Path != modulePath {
		b.WriteString(" (" + bi.Main.Path)
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				v := d.Version
				if d.Replace != nil {
					v += " => " + d.Replace.Path + " " + d.Replace.Version
				}
				b.WriteString(" with " + modulePath + " " + strings.TrimSpace(v))
				break
			}
		}
		b.WriteString(")")
	}
	set := make(map[string]string, len(bi.Settings))
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	b.WriteString(", revision " + orUnknown(set["vcs.revision"]))
	if set["vcs.modified"] == "true" {
		b.WriteString("+modified")
	}
	b.WriteString(", committed " + orUnknown(set["vcs.time"]))
	b.WriteString(", built with " + orUnknown(bi.GoVersion))
	if goos, goarch := set["GOOS"], set["GOARCH"]; goos != "" && goarch != "" {
		b.WriteString(" for " + goos + "/" + goarch)
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// buildInfo returns the running binary's build info, or nil when it has none.
func buildInfo() *debug.BuildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return bi
}
